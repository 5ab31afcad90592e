"""RSI-oversold + MACD-histogram-turn: the design note's signal strategy.

Buy when the market is oversold (RSI below ``rsi_oversold``) *and* momentum has just turned up (the MACD
histogram rose after falling); sell when it is overbought (RSI above ``rsi_overbought``) and the histogram has
just turned down. The turn is judged on consecutive indicator values -- bar closes in bar mode, ticks in tick
mode -- so the strategy only decides when the indicators produced a new value (``fresh``).

It does not spam: at most one order per ``cooldown_ms``, never beyond ``max_position`` lots, nothing while
the book is stale or crossed or a side is empty. Without ``allow_short`` a sell only closes a long (reduce
only). Orders are IOC limits at the touch plus ``slippage_ticks`` (or MARKET with ``market_orders = 1``).

A plug-in like any user strategy (:mod:`hean.api`): ``path = "hean.strategies.rsi_macd:STRATEGY"``, or
``[strategy] name = "rsi_macd"``. Indicators on 1 s bars of trades by default.

Parameters (``[strategy.params]``; all numbers):

=================  =======  ===========================================================================
rsi_oversold       30       buy only below this RSI
rsi_overbought     70       sell only above this RSI
order_qty          1        lots per order
max_position       10       |position| cap in lots
cooldown_ms        1000     minimum time between two orders of a symbol (event time)
market_orders      0        1: MARKET orders; 0: IOC limit at the touch +/- slippage_ticks
slippage_ticks     0        how far through the touch an IOC limit may fill
allow_short        0        1: a sell may open or extend a short (down to -max_position)
=================  =======  ===========================================================================
"""

from __future__ import annotations

import math

import numpy as np

from hean.api import (
    BUY,
    F_CROSSED,
    F_STALE,
    IOC,
    OUT_MACD_HIST,
    OUT_RSI,
    REDUCE_ONLY,
    SELL,
    Strategy,
    callback,
    fresh,
    limit,
    market,
    now,
    position,
)

PARAMS: dict[str, float] = {
    "rsi_oversold": 30.0,
    "rsi_overbought": 70.0,
    "order_qty": 1.0,
    "max_position": 10.0,
    "cooldown_ms": 1000.0,
    "market_orders": 0.0,
    "slippage_ticks": 0.0,
    "allow_short": 0.0,
}

STATE = [
    ("prev_hist", "<f8"),  # the previous MACD histogram value
    ("prev_delta", "<f8"),  # its change before that (sign = direction of the histogram)
    ("seen", "<i8"),  # how many histogram values have been seen (0, 1, 2+)
    ("last_order_ns", "<i8"),  # event time of the last order; the cooldown runs from here
    ("orders", "<i8"),  # orders sent
]


def validate(params: dict[str, float]) -> None:
    """Reject parameter sets the strategy cannot trade sensibly with (a clear error, before anything runs)."""
    p = params
    if not 0.0 <= p["rsi_oversold"] < p["rsi_overbought"] <= 100.0:
        raise ValueError("rsi_macd: need 0 <= rsi_oversold < rsi_overbought <= 100")
    if p["order_qty"] < 1 or p["order_qty"] != int(p["order_qty"]):
        raise ValueError("rsi_macd: order_qty must be a whole number of lots >= 1")
    if p["max_position"] < p["order_qty"] or p["max_position"] != int(p["max_position"]):
        raise ValueError("rsi_macd: max_position must be a whole number of lots >= order_qty")
    if p["cooldown_ms"] < 0 or p["slippage_ticks"] < 0 or p["slippage_ticks"] != int(p["slippage_ticks"]):
        raise ValueError("rsi_macd: cooldown_ms must be >= 0 and slippage_ticks a whole number >= 0")
    for flag in ("market_orders", "allow_short"):
        if p[flag] not in (0.0, 1.0):
            raise ValueError(f"rsi_macd: {flag} must be 0 or 1")


@callback
def track_turn(st, hist):
    """Record ``hist``; return +1 when the histogram just turned up, -1 when it just turned down, else 0."""
    seen = st.seen
    turn = 0
    if seen >= 1:
        delta = hist - st.prev_hist
        if seen >= 2:
            if st.prev_delta < 0.0 and delta > 0.0:
                turn = 1
            elif st.prev_delta > 0.0 and delta < 0.0:
                turn = -1
        if delta != 0.0:  # a flat step keeps the last direction
            st.prev_delta = delta
        st.seen = min(seen + 1, 2)
    else:
        st.seen = 1
    st.prev_hist = hist
    return turn


@callback
def on_event(ctx, s):
    """Every book state and trade: act on a fresh indicator sample that shows a turn at an extreme RSI."""
    if not fresh(ctx, s):
        return
    hist = ctx.ind[s, OUT_MACD_HIST]
    rsi = ctx.ind[s, OUT_RSI]
    if math.isnan(hist) or math.isnan(rsi):
        return
    st = ctx.state[s]
    turn = track_turn(st, hist)
    if turn == 0:
        return
    b = ctx.book[s]
    if (b.flags & (F_STALE | F_CROSSED)) != 0 or b.bid_px <= 0 or b.ask_px <= b.bid_px:
        return
    p = ctx.params
    t = now(ctx)
    if st.orders > 0 and t - st.last_order_ns < np.int64(p.cooldown_ms * 1e6):
        return
    qty = np.int64(p.order_qty)
    max_pos = np.int64(p.max_position)
    slip = np.int64(p.slippage_ticks)
    pos = position(ctx, s)
    flags = 0
    if turn > 0 and rsi < p.rsi_oversold:
        side = BUY
        qty = min(qty, max_pos - pos)
        price = b.ask_px + slip
    elif turn < 0 and rsi > p.rsi_overbought:
        side = SELL
        if p.allow_short == 1.0:
            qty = min(qty, max_pos + pos)
        else:
            qty = min(qty, pos)
            flags = REDUCE_ONLY
        price = b.bid_px - slip
    else:
        return
    if qty <= 0:
        return
    st.last_order_ns = t
    st.orders += 1
    if p.market_orders == 1.0:
        market(ctx, s, side, qty, flags)
    else:
        limit(ctx, s, side, price, qty, IOC, flags)


STRATEGY = Strategy(
    on_book=on_event,
    on_trade=on_event,
    params=PARAMS,
    state=STATE,
    validate=validate,
    mode="bar",
    description="RSI oversold/overbought + MACD histogram turn, IOC orders",
)
