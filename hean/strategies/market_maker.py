"""Inventory-skewed market-making quoter.

Quotes one bid and one ask around a fair price -- the mid, or the microprice with ``use_microprice = 1`` --
``half_spread`` ticks away, where ``half_spread = max(half_spread_ticks, atr_mult * ATR)`` widens with
volatility. Inventory skews both quotes against the position: ``skew = skew_ticks_per_lot * position`` ticks
is subtracted from both prices, so a long quoter bids lower (buys less) and offers lower (sells more). A
side whose fill would push ``|position|`` past ``max_position`` is not quoted (its resting quote is
cancelled). Quotes are post-only GTC limits and never cross the book (bid <= best ask - 1, ask >= best bid +
1).

One intent per book event: the quoter looks at the side it did not act on last, then the other. It does not
spam: a side is re-quoted (REPLACE) only when its desired price moved by at least ``requote_ticks``; nothing
is sent while the desired quotes stand. When the book is stale or crossed (flagged, or bid >= ask) or a side
is empty it sends one CANCEL_ALL for the symbol and stays silent until the book is sound again.

The quoter does not see fills, only the position the risk stage keeps in ``position_lots``; a filled quote
is re-quoted when the position (and so the skew) changes. REPLACE and CANCEL carry ``order_id`` 0: "this
strategy's resting quote on this side" (see :mod:`hean.strategies.intent`).

Parameters (``[strategy.params]``; all numbers):

====================  =======  ===================================================================
half_spread_ticks     1        minimum distance of each quote from the fair price, ticks
atr_mult              0        half spread >= atr_mult * ATR (ticks; 0 disables)
skew_ticks_per_lot    0.5      ticks both quotes move against one lot of position
quote_qty             1        lots per quote
max_position          10       |position| cap in lots
requote_ticks         1        re-quote a side only when its price moved this many ticks
use_microprice        0        1: fair price = microprice; 0: mid
====================  =======  ===================================================================
"""

from __future__ import annotations

import math

import numpy as np

from hean.indicators.streaming import OUT_ATR
from hean.jit import kernel
from hean.records import BUY, F_CROSSED, F_POST_ONLY, F_STALE, SELL
from hean.strategies.intent import CANCEL, CANCEL_ALL, GTC, LIMIT, NEW, REPLACE, intent, no_order

PARAMS: dict[str, float] = {
    "half_spread_ticks": 1.0,
    "atr_mult": 0.0,
    "skew_ticks_per_lot": 0.5,
    "quote_qty": 1.0,
    "max_position": 10.0,
    "requote_ticks": 1.0,
    "use_microprice": 0.0,
}
P_HALF_SPREAD, P_ATR_MULT, P_SKEW, P_QTY, P_MAX_POS, P_REQUOTE, P_MICRO = range(7)

STATE_F = 0
# per-symbol int64 state: i[sym, T_*]
T_BID = 0  # price of the resting bid quote, ticks (0: none)
T_ASK = 1  # price of the resting ask quote, ticks (0: none)
T_HALTED = 2  # 1 after a CANCEL_ALL for a bad book, until the book is sound
T_LAST_SIDE = 3  # side acted on last (BUY/SELL), so the other side goes first next time
STATE_I = 4


def validate(params: dict[str, float]) -> None:
    p = params
    if p["half_spread_ticks"] < 0 or p["atr_mult"] < 0 or p["skew_ticks_per_lot"] < 0:
        raise ValueError("market_maker: half_spread_ticks, atr_mult and skew_ticks_per_lot must be >= 0")
    if p["quote_qty"] < 1 or p["quote_qty"] != int(p["quote_qty"]):
        raise ValueError("market_maker: quote_qty must be a whole number of lots >= 1")
    if p["max_position"] < p["quote_qty"] or p["max_position"] != int(p["max_position"]):
        raise ValueError("market_maker: max_position must be a whole number of lots >= quote_qty")
    if p["requote_ticks"] < 1 or p["requote_ticks"] != int(p["requote_ticks"]):
        raise ValueError("market_maker: requote_ticks must be a whole number >= 1")
    if p["use_microprice"] not in (0.0, 1.0):
        raise ValueError("market_maker: use_microprice must be 0 or 1")


@kernel(inline=True, error_model="numpy")
def desired_quotes(params, ind, sym, bs, position):
    """(bid, ask) prices in ticks the quoter wants now; 0 for a side it must not quote."""
    fair = bs.microprice if params[P_MICRO] == 1.0 else bs.mid
    half = params[P_HALF_SPREAD]
    atr = ind.out[sym, OUT_ATR]
    if params[P_ATR_MULT] > 0.0 and not math.isnan(atr):
        half = max(half, params[P_ATR_MULT] * atr)
    center = fair - params[P_SKEW] * position
    bid = min(np.int64(math.floor(center - half)), bs.ask_px - 1)
    ask = max(np.int64(math.ceil(center + half)), bs.bid_px + 1)
    qty = np.int64(params[P_QTY])
    max_pos = np.int64(params[P_MAX_POS])
    if position + qty > max_pos or bid <= 0:
        bid = 0
    if position - qty < -max_pos:
        ask = 0
    return bid, ask


@kernel(inline=True, error_model="numpy")
def _side_intent(strat, sym, col, side, want, qty, requote):
    """The intent that moves the resting quote in column ``col`` to ``want`` (0 = none); records it."""
    have = strat.i[sym, col]
    if want == have or (want != 0 and have != 0 and abs(want - have) < requote):
        return no_order()
    strat.i[sym, col] = want
    strat.i[sym, T_LAST_SIDE] = side
    if want == 0:
        return intent(CANCEL, side, 0, 0, LIMIT, GTC, 0)
    if have == 0:
        return intent(NEW, side, qty, want, LIMIT, GTC, F_POST_ONLY)
    return intent(REPLACE, side, qty, want, LIMIT, GTC, F_POST_ONLY)


@kernel(inline=True, error_model="numpy")
def decide(strat, params, ind, sym, bs, position, fresh):
    """The strategy function (see :mod:`hean.strategies` for the contract)."""
    i = strat.i
    if (bs.flags & (F_STALE | F_CROSSED)) != 0 or bs.bid_px <= 0 or bs.ask_px <= bs.bid_px:
        if i[sym, T_HALTED] == 0 and (i[sym, T_BID] != 0 or i[sym, T_ASK] != 0):
            i[sym, T_HALTED] = 1
            i[sym, T_BID] = 0
            i[sym, T_ASK] = 0
            return intent(CANCEL_ALL, 0, 0, 0, LIMIT, GTC, 0)
        return no_order()
    i[sym, T_HALTED] = 0
    bid, ask = desired_quotes(params, ind, sym, bs, position)
    qty = np.int64(params[P_QTY])
    requote = np.int64(params[P_REQUOTE])
    if i[sym, T_LAST_SIDE] == BUY:
        first = _side_intent(strat, sym, T_ASK, SELL, ask, qty, requote)
        if first[0] != 0:
            return first
        return _side_intent(strat, sym, T_BID, BUY, bid, qty, requote)
    first = _side_intent(strat, sym, T_BID, BUY, bid, qty, requote)
    if first[0] != 0:
        return first
    return _side_intent(strat, sym, T_ASK, SELL, ask, qty, requote)
