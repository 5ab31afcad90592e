"""RSI-oversold + MACD-histogram-turn: the design note's signal strategy.

Buy when the market is oversold (RSI below ``rsi_oversold``) *and* momentum has just turned up (the MACD
histogram rose after falling); sell when it is overbought (RSI above ``rsi_overbought``) and the histogram has
just turned down. The turn is judged on consecutive indicator values -- bar closes in bar mode, ticks in tick
mode -- so the strategy only decides when the indicators produced a new value (``fresh``).

It does not spam: at most one order per ``cooldown_ms``, never beyond ``max_position`` lots, nothing while
the book is stale or crossed or a side is empty. Without ``allow_short`` a sell only closes a long (reduce
only). Orders are IOC limits at the touch plus ``slippage_ticks`` (or MARKET with ``market_orders = 1``).

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

from hean.indicators.streaming import OUT_MACD_HIST, OUT_RSI
from hean.jit import kernel
from hean.records import BUY, F_CROSSED, F_REDUCE_ONLY, F_STALE, SELL
from hean.strategies.intent import IOC, LIMIT, MARKET, NEW, event_time, intent, no_order

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
P_OVERSOLD, P_OVERBOUGHT, P_QTY, P_MAX_POS, P_COOLDOWN_MS, P_MARKET, P_SLIPPAGE, P_ALLOW_SHORT = range(8)

# per-symbol state: f[sym, S_*] (float64) and i[sym, T_*] (int64)
S_PREV_HIST = 0  # the previous MACD histogram value
S_PREV_DELTA = 1  # its change before that (sign = direction of the histogram)
STATE_F = 2
T_HAS_PREV = 0  # how many histogram values have been seen (0, 1, 2+)
T_LAST_ORDER_NS = 1  # event time of the last order; cooldown runs from here
T_ORDERS = 2  # orders sent
STATE_I = 3


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


@kernel(inline=True, error_model="numpy")
def _track_turn(strat, sym, hist):
    """Record ``hist``; return +1 when the histogram just turned up, -1 when it just turned down, else 0."""
    f = strat.f
    seen = strat.i[sym, T_HAS_PREV]
    turn = 0
    if seen >= 1:
        delta = hist - f[sym, S_PREV_HIST]
        if seen >= 2:
            if f[sym, S_PREV_DELTA] < 0.0 and delta > 0.0:
                turn = 1
            elif f[sym, S_PREV_DELTA] > 0.0 and delta < 0.0:
                turn = -1
        if delta != 0.0:  # a flat step keeps the last direction
            f[sym, S_PREV_DELTA] = delta
        strat.i[sym, T_HAS_PREV] = min(seen + 1, 2)
    else:
        strat.i[sym, T_HAS_PREV] = 1
    f[sym, S_PREV_HIST] = hist
    return turn


@kernel(inline=True, error_model="numpy")
def decide(strat, params, ind, sym, bs, position, fresh):
    """The strategy function (see :mod:`hean.strategies` for the contract)."""
    if not fresh:
        return no_order()
    hist = ind.out[sym, OUT_MACD_HIST]
    rsi = ind.out[sym, OUT_RSI]
    if math.isnan(hist) or math.isnan(rsi):
        return no_order()
    turn = _track_turn(strat, sym, hist)
    if turn == 0:
        return no_order()
    if (bs.flags & (F_STALE | F_CROSSED)) != 0 or bs.bid_px <= 0 or bs.ask_px <= bs.bid_px:
        return no_order()
    now = event_time(bs)
    if strat.i[sym, T_ORDERS] > 0 and now - strat.i[sym, T_LAST_ORDER_NS] < np.int64(params[P_COOLDOWN_MS] * 1e6):
        return no_order()
    qty = np.int64(params[P_QTY])
    max_pos = np.int64(params[P_MAX_POS])
    slip = np.int64(params[P_SLIPPAGE])
    market = params[P_MARKET] == 1.0
    flags = 0
    if turn > 0 and rsi < params[P_OVERSOLD]:
        side = BUY
        qty = min(qty, max_pos - position)
        price = bs.ask_px + slip
    elif turn < 0 and rsi > params[P_OVERBOUGHT]:
        side = SELL
        if params[P_ALLOW_SHORT] == 1.0:
            qty = min(qty, max_pos + position)
        else:
            qty = min(qty, position)
            flags = F_REDUCE_ONLY
        price = bs.bid_px - slip
    else:
        return no_order()
    if qty <= 0:
        return no_order()
    strat.i[sym, T_LAST_ORDER_NS] = now
    strat.i[sym, T_ORDERS] += 1
    if market:
        return intent(NEW, side, qty, 0, MARKET, IOC, flags)
    return intent(NEW, side, qty, price, LIMIT, IOC, flags)
