"""The starter strategy ``hean strategy new NAME`` writes: a complete, commented example of :mod:`hean.api`.

Why a template and not a tutorial alone: a newcomer's first strategy should start from code that already
loads, compiles and trades, so every later error is one they introduced and can find. The template is a
small mean-reversion trader that uses each part of the API once -- a declaration, parameters with
``validate``, per-symbol state, an indicator, ``on_book`` / ``on_report`` / ``on_timer``, IOC and reduce-only
orders, client ids -- and explains each where it is used. ``tests/test_cli_strategy_cache.py`` loads,
compiles and drives the rendered text, so it cannot rot silently when the API changes.

Only ``{name}`` is substituted (:func:`render` uses ``str.replace``, not ``str.format``), so the code's own
braces stay as written.
"""

from __future__ import annotations

import keyword

__all__ = ["TEMPLATE", "render"]

TEMPLATE = '''\
"""{name}: buy dips below the moving average, sell when the price is back -- a HEAN strategy.

Written by `hean strategy new {name}` as a starting point: it runs as is; read it top to bottom, then change it.

What it does, per symbol:

* it follows the mid price's simple moving average (SMA) over `sma_period` quotes;
* when the mid falls more than `entry_ticks` below the SMA and the position leaves room (`max_position`),
  it buys `qty` lots with an IOC limit order at the best ask (IOC: fill what you can now, cancel the rest);
* when it is long and the mid is back above the SMA, it sells the whole position with a reduce-only IOC
  limit at the best bid (reduce-only: the order may shrink the position, never flip it short);
* it sends at most one order at a time per symbol, and none within `cooldown_ms` of the previous one.

Units everywhere in HEAN's compiled code: prices are int64 *ticks* and quantities int64 *lots* (the symbol's
tick_size and lot_size in the configuration convert them), times int64 nanoseconds of event time (the
exchange's timestamps, so a replay behaves exactly like the live run did).

The rules of compiled code: the callbacks below are numba functions compiled without reference counting.
Inside them: no allocation (no lists, dicts, strings, np.empty/np.zeros), no exceptions, no Python objects,
no printing; numbers, the `ctx` arrays and the helpers of `hean.api` only. Anything else fails at load with
a message naming this file and line.
"""

from __future__ import annotations

import math

import numpy as np

# Everything a strategy needs comes from hean.api (its docstring is the reference: `python -m pydoc hean.api`).
from hean.api import (
    BUY,  # side +1
    F_CROSSED,  # book flag: best bid >= best ask (the feed is inconsistent)
    F_STALE,  # book flag: the book is out of sync or has not updated for a while
    IOC,  # time in force: immediate or cancel (GTC rests, FOK fills completely or not at all)
    OUT_SMA,  # column of the simple moving average in ctx.ind
    REDUCE_ONLY,  # order flag: may only reduce the position (POST_ONLY: must rest, never take)
    SELL,  # side -1
    X_FILL,  # execution report kinds (r.kind in on_report): the order is completely filled ...
    X_PARTIAL,  # ... or partly filled (more may follow)
    Strategy,
    callback,
    is_live,
    limit,
    now,
    position,
)

# ---------------------------------------------------------------------------------------------------------
# Parameters: name -> default. Callbacks read them as ctx.params.<name>, always float64 (convert quantities
# with np.int64(...)). A configuration overrides them per strategy, unknown names are an error:
#     [strategies.params]
#     entry_ticks = 3
# ---------------------------------------------------------------------------------------------------------
PARAMS = {
    "entry_ticks": 2.0,  # buy when the mid is more than this many ticks below the SMA
    "qty": 1.0,  # lots per buy
    "max_position": 1.0,  # never hold more than this many lots (1: buy only when flat)
    "cooldown_ms": 500.0,  # at least this much event time between two orders of a symbol
}

# ---------------------------------------------------------------------------------------------------------
# State: one record per symbol, numbers only, zeros at start; ctx.state[s].<field> reads and writes it.
# Use int64 for ids, counts, times, prices; float64 for averages. It lives as long as the run.
# ---------------------------------------------------------------------------------------------------------
STATE = [
    ("last_cid", "<i8"),  # client id of the last order sent (0: none yet)
    ("last_order_ns", "<i8"),  # event time it was sent, ns
    ("fills", "<i8"),  # fill reports received (partial and full)
    ("filled_lots", "<i8"),  # lots filled, both sides
]


def validate(params: dict[str, float]) -> None:
    """Called once at load with the effective parameters (plain Python: raise ValueError to refuse them).
    Catch here what would make the strategy misbehave, so a bad configuration fails before anything trades."""
    if params["entry_ticks"] < 0:
        raise ValueError("{name}: entry_ticks must be >= 0")
    if params["qty"] < 1 or params["qty"] != int(params["qty"]):
        raise ValueError("{name}: qty must be a whole number of lots >= 1")
    if params["max_position"] < params["qty"] or params["max_position"] != int(params["max_position"]):
        raise ValueError("{name}: max_position must be a whole number of lots >= qty")
    if params["cooldown_ms"] < 0:
        raise ValueError("{name}: cooldown_ms must be >= 0")


# ---------------------------------------------------------------------------------------------------------
# Callbacks. @callback compiles a function the way the engine calls it (numba, no allocation, no GIL).
# `s` is the strategy's own index of the symbol: 0 .. n-1 in the order of its configured `symbols`.
# Each callback may queue several actions (limit, market, cancel, replace, cancel_all); the engine sends
# them when the callback returns, and pre-trade risk still checks every order.
# ---------------------------------------------------------------------------------------------------------
@callback
def on_book(ctx, s):
    """A new top of book on symbol s: decide whether to buy the dip or take the profit."""
    # ctx.book[s] is the latest BOOK_STATE of the symbol: bid_px, ask_px (int64 ticks, 0 when the side is
    # empty), bid_qty, ask_qty (int64 lots), mid and microprice (float64 ticks), imbalance, last_trade_px,
    # last_trade_qty, flags (F_STALE, F_CROSSED), ts_exch (ns).
    b = ctx.book[s]
    if (b.flags & (F_STALE | F_CROSSED)) != 0 or b.bid_px <= 0 or b.ask_px <= b.bid_px:
        return  # never trade on a book that cannot be trusted

    # ctx.ind[s, OUT_*] are the streaming indicators of the symbol (periods: `indicators` below). They are
    # NaN until enough samples came in (sma_period of them): warm-up, nothing to compare against yet.
    sma = ctx.ind[s, OUT_SMA]
    if math.isnan(sma):
        return

    st = ctx.state[s]  # this symbol's state record (a view: writes stick)
    # limit() returned a client id (> 0) for the last order; is_live() says whether it may still trade
    # (sent and not yet filled, cancelled, rejected or expired). One order in flight at a time keeps this
    # strategy simple and stops it from spamming the venue while it waits for the report.
    if is_live(ctx, st.last_cid):
        return
    p = ctx.params
    t = now(ctx)  # the event time of this book state, ns
    if st.last_cid > 0 and t - st.last_order_ns < np.int64(p.cooldown_ms * 1e6):
        return

    pos = position(ctx, s)  # lots held, from this strategy's own fills (+ long, - short)
    qty = np.int64(p.qty)
    if b.mid < sma - p.entry_ticks and pos + qty <= np.int64(p.max_position):
        # buy qty lots at the best ask; IOC: whatever does not fill at once is cancelled (an EXPIRED report)
        cid = limit(ctx, s, BUY, b.ask_px, qty, IOC)
    elif pos > 0 and b.mid > sma:
        # sell the whole position at the best bid; REDUCE_ONLY guards against selling more than is held
        cid = limit(ctx, s, SELL, b.bid_px, pos, IOC, REDUCE_ONLY)
    else:
        return
    if cid > 0:  # 0: refused before it left (too many actions in this callback, or the order table full)
        st.last_cid = cid
        st.last_order_ns = t


@callback
def on_report(ctx, s, r):
    """An execution report of one of this strategy's orders on symbol s. By the time it is called the
    engine has already updated the order's state (is_live, order_state) and the position (position, pnl)."""
    # r is the EXEC_REPORT record: r.kind (X_ACK, X_PARTIAL, X_FILL, X_CANCELED, X_REJECTED, X_EXPIRED ...),
    # r.client_id (what limit() returned), r.qty (lots of this fill), r.price (ticks of this fill),
    # r.reason (why, for a rejection).
    if r.kind == X_FILL or r.kind == X_PARTIAL:
        st = ctx.state[s]
        st.fills += 1
        st.filled_lots += r.qty


@callback
def on_timer(ctx, now_ns):
    """Called every `timer_ms` of event time, for all symbols at once (there is no `s`): the place for
    periodic work -- cancel orders that rest too long, roll a daily counter, flatten before a deadline."""
    # Nothing to do for this strategy. For example, to cancel every open order of every symbol each period:
    #     cancel_all(ctx, -1)          (import cancel_all from hean.api)
    # or to visit each symbol: for s in range(ctx.symbols.shape[0]): ...
    return


# ---------------------------------------------------------------------------------------------------------
# The declaration: the one object the engine loads (`path = "{name}.py:STRATEGY"`).
# ---------------------------------------------------------------------------------------------------------
STRATEGY = Strategy(
    on_book=on_book,  # also possible: on_trade=... (a trade printed on the symbol)
    on_report=on_report,
    on_timer=on_timer,
    timer_ms=1000,  # on_timer's period in event time (0 with no on_timer)
    params=PARAMS,
    state=STATE,
    validate=validate,
    # the streaming indicators' periods (hean.indicators.streaming.IndicatorConfig keys: sma_period,
    # ema_period, rsi_period, macd_fast/slow/signal, atr_period, bb_period, vwap_period ...); a configuration's
    # [indicators] or [strategies.indicators] table overrides them
    indicators={"sma_period": 5},
    # "tick" mode with tick_source "mid": every sound quote's mid is one indicator sample ("trades": every
    # trade's price). "bar" mode samples once per bar of bar_ms instead.
    mode="tick",
    tick_source="mid",
    description="{name}: buy dips below the SMA with IOC limits, sell back above it",
)

# ---------------------------------------------------------------------------------------------------------
# How to run it: put this in a configuration file (`hean config init CONFIG.toml` writes a starter one;
# the path is relative to the directory you run hean from):
#
#     [[strategies]]
#     path = "{name}.py:STRATEGY"
#     # symbols = ["BTCUSDT"]          (default: every symbol of the configuration)
#     # [strategies.params]
#     # entry_ticks = 3
#
# and run `hean run -c CONFIG.toml`. The first start compiles the strategy (some seconds); later starts load
# it from the cache (`hean cache info` lists it, `hean cache clear` removes it); an edit recompiles it.
# ---------------------------------------------------------------------------------------------------------
'''


def render(name: str) -> str:
    """The template for strategy ``name`` (it names the file ``NAME.py`` and its messages). ``name`` must be a
    Python identifier that is not a keyword: the file is imported as a module, and the name appears in code."""
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        raise ValueError(f"strategy name {name!r} is not a Python identifier (letters, digits, _; not a keyword)")
    return TEMPLATE.replace("{name}", name)
