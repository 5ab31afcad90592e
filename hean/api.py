"""HEAN's strategy API: what a strategy module imports. Everything here is public and stable.

A strategy is a module -- anywhere, a file or an importable package -- holding one :class:`Strategy`
declaration and the compiled callbacks it names. The engine loads it by ``path = "file.py:NAME"`` or
``"package.module:NAME"`` (``[[strategies]]`` in the configuration, ``hean.backtest``). ``docs/strategies.md``
is the tutorial; ``hean strategy new NAME`` writes a commented template.

**Callbacks** (each optional; decorate with :func:`callback`). ``s`` is the strategy's own index of the symbol
(0 .. n-1 in the order of its ``symbols``):

=====================================  =====================================================================
``on_book(ctx, s)``                    a new top of book (or a stale/crossed status change) on symbol ``s``
``on_trade(ctx, s)``                   a trade printed on ``s`` (``ctx.book[s].last_trade_*``, :func:`trade`)
``on_report(ctx, s, r)``               an execution report of one of its orders: ``r`` is the EXEC_REPORT
                                       record (``r.kind``: ACK, PARTIAL_FILL, FILL, CANCELED, REJECTED,
                                       EXPIRED, REPLACED, CANCEL_REJECTED; ``r.client_id``, ``r.qty``,
                                       ``r.price``, ``r.reason``); the order table is already updated
``on_timer(ctx, now)``                 every ``timer_ms`` of event time (the records' exchange time)
=====================================  =====================================================================

**The context** ``ctx`` (:class:`Ctx`, views of the stage's arrays -- no copies):

* ``ctx.params.<name>`` -- the strategy's parameters (float64; declared with defaults, set in the config);
* ``ctx.state[s].<field>`` -- its own per-symbol state, a record of the dtype it declares (zeros at start);
* ``ctx.book[s]`` -- the latest BOOK_STATE of the symbol (``bid_px``, ``ask_px``, ``bid_qty``, ``ask_qty``
  int64 ticks/lots, ``mid``, ``microprice``, ``imbalance``, ``last_trade_px``, ``flags`` ...);
* ``ctx.ind[s, OUT_*]`` -- the streaming indicators (periods per strategy; :mod:`hean.indicators.streaming`),
  ``fresh(ctx, s)`` -- True when they took a new sample on this event;
* :func:`bid_level`, :func:`ask_level` -- the top ``depth`` levels of each side, as they stood with
  ``ctx.book[s]`` (declare ``depth = N``; the raw rows are ``ctx.depth[s, DP_*, i]``);
* :func:`trade` -- the latest trades of a symbol; :func:`position`, :func:`pnl` -- its own position and PnL
  from its own fills; :func:`risk_position` -- the symbol's position over every strategy (what risk checks);
* :func:`order_state`, :func:`order_leaves`, :func:`open_orders` -- its orders, by client id.

**Actions**, several per callback (up to :data:`MAX_ACTIONS`): :func:`limit`, :func:`market` (each returns
the order's *client id*, > 0, or 0 when refused), :func:`cancel`, :func:`replace`, :func:`cancel_all`.
Time in force GTC / IOC / FOK; flags POST_ONLY, REDUCE_ONLY. Pre-trade risk still checks every order.

**Rules of compiled code**: callbacks are numba functions compiled without reference counting, so no
allocation (``np.empty``, lists, strings), no exceptions, no Python objects; prices are int64 ticks,
quantities int64 lots (``hean.symbols`` converts decimals); use int64 for integer arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numba
import numpy as np

from hean.indicators.streaming import (  # noqa: F401  (re-exported: the indicator columns)
    OUT_ATR,
    OUT_BB_LOWER,
    OUT_BB_MIDDLE,
    OUT_BB_UPPER,
    OUT_EMA,
    OUT_MACD,
    OUT_MACD_HIST,
    OUT_MACD_SIGNAL,
    OUT_RSI,
    OUT_SMA,
    OUT_VWAP,
)
from hean.records import (  # noqa: F401  (re-exported: what callbacks compare against)
    A_CANCEL,
    A_NEW,
    A_REPLACE,
    BUY,
    F_CROSSED,
    F_POST_ONLY,
    F_REDUCE_ONLY,
    F_STALE,
    SELL,
    T_LIMIT,
    T_MARKET,
    X_ACK,
    X_CANCEL_REJECTED,
    X_CANCELED,
    X_EXPIRED,
    X_FILL,
    X_PARTIAL,
    X_REJECTED,
    X_REPLACED,
    TimeInForce,
)
from hean.stages.depth import DP_ASK_PX, DP_ASK_QTY, DP_BID_PX, DP_BID_QTY, MAX_DEPTH  # noqa: F401

__all__ = [
    "BUY",
    "SELL",
    "GTC",
    "IOC",
    "FOK",
    "POST_ONLY",
    "REDUCE_ONLY",
    "Ctx",
    "Strategy",
    "callback",
    "limit",
    "market",
    "cancel",
    "replace",
    "cancel_all",
    "position",
    "pnl",
    "risk_position",
    "risk_state",
    "fresh",
    "now",
    "trade",
    "n_trades",
    "bid_level",
    "ask_level",
    "order_state",
    "order_leaves",
    "order_price",
    "open_orders",
    "is_live",
]

GTC = int(TimeInForce.GTC)
IOC = int(TimeInForce.IOC)
FOK = int(TimeInForce.FOK)
POST_ONLY = F_POST_ONLY
REDUCE_ONLY = F_REDUCE_ONLY

# risk_state(ctx, s): hean.stages.risk.TradingState
ACTIVE = 0
REDUCING = 1
HALTED = 2

# order states: order_state(ctx, cid); terminal from FILLED on
NONE = 0  # no such order (never sent, or its row was reused by a later order)
PENDING = 1  # sent, not yet acknowledged
OPEN = 2  # acknowledged and resting (possibly partly filled)
CANCEL_PENDING = 3  # a cancel was sent (or waits for the acknowledgement to be sent)
REPLACE_PENDING = 4
FILLED = 5
CANCELED = 6
REJECTED = 7  # by risk, the router or the venue: the report's reason says why
EXPIRED = 8  # IOC/FOK remainder
TERMINAL = FILLED

# the strategy's order table, ctx.orders[cid & (ORDERS_CAP - 1), OF_*]; action rows use the same columns
OF_CID = 0  # client id (> 0)
OF_SYMBOL = 1  # the strategy's symbol index s
OF_SIDE = 2
OF_PRICE = 3  # ticks (0: market)
OF_QTY = 4  # lots ordered (after a replace: the new quantity)
OF_LEAVES = 5  # open lots
OF_CUM = 6  # filled lots
OF_STATE = 7  # order state (above)
OF_ID = 8  # the router's order id, once a report named it (0 before)
OF_TYPE = 9  # LIMIT / MARKET
OF_TIF = 10
OF_FLAGS = 11
OF_ACTION = 12  # action rows: NEW / CANCEL / REPLACE
OF_DEFERRED = 13  # a cancel asked before the router's id was known: sent with the first report
N_OF = 14
ORDERS_CAP = 1024  # the order table's rows (a power of two): at most this many orders live at once
MAX_ACTIONS = 16  # actions one callback may take

# ctx.info[s, I_*]
I_FRESH = 0  # 1 when the indicators took a sample on this event
I_TRADES = 1  # trades seen on the symbol (the ring holds the latest TRADES_KEPT)
I_EVENTS = 2  # book states seen on the symbol
N_INFO = 4

# ctx.trades[s, i, T_*]: a ring of the latest trades per symbol
T_TS = 0  # event time, ns
T_PX = 1  # ticks
T_QTY = 2  # lots
T_SIDE = 3  # aggressor side (BUY/SELL), 0 when the feed does not say
N_TRADE = 4
TRADES_KEPT = 64

# ctx.meta[M_*]
M_N_ACTS = 0  # action rows the current callback wrote
M_NEXT_CID = 1  # the next client id
M_NOW = 2  # event time of the current callback, ns
M_REFUSED = 3  # actions refused (the action buffer or the order table full, an unknown order)
M_STRATEGY = 4  # the strategy's id (ORDER.strategy)
N_META = 8

# ctx.money[s, Y_*]
Y_CASH = 0  # quote currency paid (<0) and received (>0) for fills, fees excluded
Y_FEES = 1  # fees paid (negative: rebates)
Y_NOTIONAL = 2  # traded notional
N_MONEY = 4


class Ctx(NamedTuple):
    """What a callback sees (see the module docstring); built by the engine, never by a strategy."""

    params: Any  # a record of the strategy's params dtype
    state: np.ndarray  # [n] of the strategy's state dtype
    book: np.ndarray  # BOOK_STATE[n]
    symbols: np.ndarray  # int64[n]: engine symbol ids
    ind: np.ndarray  # float64[n, N_OUT]
    info: np.ndarray  # int64[n, N_INFO]
    trades: np.ndarray  # int64[n, TRADES_KEPT, N_TRADE]
    orders: np.ndarray  # int64[ORDERS_CAP, N_OF]
    acts: np.ndarray  # int64[MAX_ACTIONS, N_OF]
    meta: np.ndarray  # int64[N_META]
    pos: np.ndarray  # int64[n]
    money: np.ndarray  # float64[n, N_MONEY]
    value: np.ndarray  # float64[n]: quote currency per tick x lot
    risk_pos: np.ndarray  # int64[engine symbols]
    risk_state: np.ndarray  # int64[engine symbols]: ACTIVE / REDUCING / HALTED
    depth: np.ndarray  # int64[n, 4, depth]: rows DP_BID_PX, DP_BID_QTY, DP_ASK_PX, DP_ASK_QTY; level 0 = touch


@dataclass(frozen=True)
class Strategy:
    """A strategy's declaration: the one object its module exports (``path = "file.py:NAME"``).

    ``params``: ``{name: default}``, numbers, read as ``ctx.params.<name>`` (float64); the configuration
    overrides them (``[strategies.params]``), unknown names are an error. ``state``: the per-symbol state
    record, a numpy dtype or a list of ``(name, type)`` (``ctx.state[s].<name>``; zeros at start).
    ``validate(params: dict)`` raises ValueError on parameters the strategy cannot trade with.
    ``indicators``: periods of the streaming set (``hean.indicators.streaming.IndicatorConfig`` keys);
    ``mode``: "tick" (every trade, or every sound quote's mid with ``tick_source="mid"``) or "bar"
    (``bar_ms`` bars from trades or the mid: ``bar_source``). ``timer_ms``: ``on_timer``'s period in event time.
    ``depth``: levels per side of each symbol's book the context keeps (:func:`bid_level`; 0 .. MAX_DEPTH).
    """

    on_book: Callable | None = None
    on_trade: Callable | None = None
    on_report: Callable | None = None
    on_timer: Callable | None = None
    params: dict[str, float] = field(default_factory=dict)
    state: Any = ()
    validate: Callable[[dict[str, float]], None] | None = None
    indicators: dict[str, float] = field(default_factory=dict)
    mode: str = "tick"
    tick_source: str = "trades"
    bar_ms: int = 1000
    bar_source: str = "trades"
    timer_ms: int = 0
    depth: int = 0
    description: str = ""

    CALLBACKS = ("on_book", "on_trade", "on_report", "on_timer")


def callback(fn: Callable | None = None, **options: Any):
    """Compile a callback (or a helper it calls) the way the engine needs: numba ``njit`` without reference
    counting (no allocation), numpy's error model (x / 0 is inf/nan, no exception path), no GIL. Not cached
    on its own: the engine caches the strategy as a whole, keyed by its source (:mod:`hean.strategies.plugin`).
    ``boundscheck`` follows ``hean run --debug``."""
    opts = {"error_model": "numpy", "nogil": True, "_nrt": False, "inline": "always"}
    opts.update(options)

    def wrap(f: Callable):
        return numba.njit(**opts)(f)

    return wrap(fn) if fn is not None else wrap


_inline = numba.njit(inline="always", error_model="numpy", _nrt=False)


# ---------------------------------------------------------------------------------------------------------
# reads
# ---------------------------------------------------------------------------------------------------------
@_inline
def now(ctx):
    """The current event time, ns (the record's exchange time when known)."""
    return ctx.meta[M_NOW]


@_inline
def fresh(ctx, s):
    """True when the indicators of ``s`` took a new sample on this event."""
    return ctx.info[s, I_FRESH] != 0


@_inline
def position(ctx, s):
    """This strategy's position on ``s`` in lots, from its own fills."""
    return ctx.pos[s]


@_inline
def risk_position(ctx, s):
    """The position risk holds on ``s`` in lots: every strategy's fills (what the limits check)."""
    return ctx.risk_pos[ctx.symbols[s]]


@_inline
def risk_state(ctx, s):
    """The trading state risk applies to ``s``: ACTIVE, REDUCING (only orders that reduce the position pass)
    or HALTED (nothing passes: kill switch, loss limit, a stale book). Published by risk at its worker's
    heartbeat: it may lag a change by that long."""
    return ctx.risk_state[ctx.symbols[s]]


@_inline
def pnl(ctx, s):
    """This strategy's PnL on ``s`` in quote currency: cash flows of its fills, minus fees, plus the position
    marked to the mid of the latest sound book (0 while there is none)."""
    b = ctx.book[s]
    mark = b.mid if b.bid_px > 0 and b.ask_px > b.bid_px else 0.0
    return ctx.money[s, Y_CASH] - ctx.money[s, Y_FEES] + ctx.pos[s] * mark * ctx.value[s]


@_inline
def n_trades(ctx, s):
    """Trades kept for ``s`` (at most TRADES_KEPT)."""
    return min(ctx.info[s, I_TRADES], TRADES_KEPT)


@_inline
def trade(ctx, s, i):
    """The ``i``-th latest trade of ``s`` (0 = the last): ``(ts_ns, price_ticks, qty_lots, side)``; zeros
    beyond :func:`n_trades`."""
    n = ctx.info[s, I_TRADES]
    if i < 0 or i >= min(n, TRADES_KEPT):
        z = np.int64(0)
        return z, z, z, z
    row = ctx.trades[s, (n - 1 - i) % TRADES_KEPT]
    return row[T_TS], row[T_PX], row[T_QTY], row[T_SIDE]


@_inline
def bid_level(ctx, s, i):
    """Level ``i`` of the bid side of ``s`` (0 = the best bid): ``(price_ticks, qty_lots)``, as the book stood
    with ``ctx.book[s]``; ``(0, 0)`` past the book's last level or the declared ``depth``."""
    if i < 0 or i >= ctx.depth.shape[2]:
        z = np.int64(0)
        return z, z
    return ctx.depth[s, DP_BID_PX, i], ctx.depth[s, DP_BID_QTY, i]


@_inline
def ask_level(ctx, s, i):
    """Level ``i`` of the ask side of ``s`` (0 = the best ask): ``(price_ticks, qty_lots)``; see
    :func:`bid_level`."""
    if i < 0 or i >= ctx.depth.shape[2]:
        z = np.int64(0)
        return z, z
    return ctx.depth[s, DP_ASK_PX, i], ctx.depth[s, DP_ASK_QTY, i]


@_inline
def _row(ctx, cid):
    """The order table row of ``cid``, or -1 when the row holds another order."""
    if cid <= 0:
        return -1
    r = cid & (ORDERS_CAP - 1)
    if ctx.orders[r, OF_CID] != cid:
        return -1
    return r


@_inline
def order_state(ctx, cid):
    """The state of order ``cid`` (PENDING, OPEN, ... FILLED, CANCELED, REJECTED, EXPIRED; NONE if unknown)."""
    r = _row(ctx, cid)
    return np.int64(NONE) if r < 0 else ctx.orders[r, OF_STATE]


@_inline
def order_leaves(ctx, cid):
    """The open quantity of order ``cid`` in lots (0 when it is done or unknown)."""
    r = _row(ctx, cid)
    return np.int64(0) if r < 0 else ctx.orders[r, OF_LEAVES]


@_inline
def order_price(ctx, cid):
    """The limit price of order ``cid`` in ticks (after a replace: the new one, once confirmed); 0 if unknown."""
    r = _row(ctx, cid)
    return np.int64(0) if r < 0 else ctx.orders[r, OF_PRICE]


@_inline
def is_live(ctx, cid):
    """True while order ``cid`` may still trade (PENDING, OPEN, CANCEL_PENDING, REPLACE_PENDING)."""
    st = order_state(ctx, cid)
    return NONE < st < TERMINAL


@_inline
def open_orders(ctx, s):
    """How many of this strategy's orders on ``s`` are live."""
    n = 0
    for r in range(ORDERS_CAP):
        st = ctx.orders[r, OF_STATE]
        if NONE < st < TERMINAL and ctx.orders[r, OF_SYMBOL] == s:
            n += 1
    return n


# ---------------------------------------------------------------------------------------------------------
# actions
# ---------------------------------------------------------------------------------------------------------
@_inline
def _push(ctx, action, r):
    """Queue order row ``r`` as an action; False when this callback already took MAX_ACTIONS."""
    k = ctx.meta[M_N_ACTS]
    if k >= MAX_ACTIONS:
        ctx.meta[M_REFUSED] += 1
        return False
    for c in range(N_OF):
        ctx.acts[k, c] = ctx.orders[r, c]
    ctx.acts[k, OF_ACTION] = action
    ctx.meta[M_N_ACTS] = k + 1
    return True


@_inline
def _new(ctx, s, side, price, qty, otype, tif, flags):
    n = ctx.symbols.shape[0]
    cid = ctx.meta[M_NEXT_CID]
    r = cid & (ORDERS_CAP - 1)
    st = ctx.orders[r, OF_STATE]
    if s < 0 or s >= n or ctx.meta[M_N_ACTS] >= MAX_ACTIONS or (NONE < st < TERMINAL):
        ctx.meta[M_REFUSED] += 1  # a bad symbol index, this callback's actions used up, or the table full
        return np.int64(0)
    ctx.meta[M_NEXT_CID] = cid + 1
    o = ctx.orders[r]
    o[OF_CID] = cid
    o[OF_SYMBOL] = s
    o[OF_SIDE] = side
    o[OF_PRICE] = price
    o[OF_QTY] = qty
    o[OF_LEAVES] = qty
    o[OF_CUM] = 0
    o[OF_STATE] = PENDING
    o[OF_ID] = 0
    o[OF_TYPE] = otype
    o[OF_TIF] = tif
    o[OF_FLAGS] = flags
    o[OF_ACTION] = 0
    o[OF_DEFERRED] = 0
    _push(ctx, A_NEW, r)
    return cid


@_inline
def limit(ctx, s, side, price, qty, tif=GTC, flags=0):
    """Send a limit order: ``side`` BUY/SELL, ``price`` ticks, ``qty`` lots, ``tif`` GTC/IOC/FOK, ``flags``
    POST_ONLY | REDUCE_ONLY. Returns its client id (> 0), or 0 when refused here (bad symbol index, this
    callback's MAX_ACTIONS used, ORDERS_CAP orders live)."""
    return _new(ctx, s, side, price, qty, T_LIMIT, tif, flags)


@_inline
def market(ctx, s, side, qty, flags=0):
    """Send a market order (IOC at whatever the book offers); returns its client id or 0 (see :func:`limit`)."""
    return _new(ctx, s, side, 0, qty, T_MARKET, IOC, flags)


@_inline
def cancel(ctx, cid):
    """Cancel order ``cid``. False when it is not live or a cancel is already on its way. A cancel of an
    order not yet acknowledged goes out with its first report."""
    r = _row(ctx, cid)
    if r < 0:
        return False
    st = ctx.orders[r, OF_STATE]
    if st != PENDING and st != OPEN and st != REPLACE_PENDING:
        return False
    if ctx.meta[M_N_ACTS] >= MAX_ACTIONS:
        ctx.meta[M_REFUSED] += 1
        return False
    ctx.orders[r, OF_STATE] = CANCEL_PENDING
    return _push(ctx, A_CANCEL, r)


@_inline
def replace(ctx, cid, price, qty):
    """Move order ``cid`` to ``price`` ticks with ``qty`` lots open. Only an acknowledged (OPEN) order can be
    replaced: False otherwise (cancel and send a new one instead)."""
    r = _row(ctx, cid)
    if r < 0 or ctx.orders[r, OF_STATE] != OPEN or qty <= 0 or ctx.meta[M_N_ACTS] >= MAX_ACTIONS:
        return False
    o = ctx.orders[r]
    o[OF_STATE] = REPLACE_PENDING
    ok = _push(ctx, A_REPLACE, r)
    k = ctx.meta[M_N_ACTS] - 1
    ctx.acts[k, OF_PRICE] = price
    ctx.acts[k, OF_QTY] = qty
    return ok


@_inline
def cancel_all(ctx, s):
    """Cancel every live order of this strategy on ``s`` (-1: on every symbol); returns how many cancels were
    sent. Other strategies' orders are untouched."""
    n = 0
    for r in range(ORDERS_CAP):
        if s >= 0 and ctx.orders[r, OF_SYMBOL] != s:
            continue
        cid = ctx.orders[r, OF_CID]
        if cid > 0 and cancel(ctx, cid):
            n += 1
    return n
