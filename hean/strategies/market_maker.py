"""Inventory-skewed market-making quoter.

Quotes one bid and one ask around a fair price -- the mid, or the microprice with ``use_microprice = 1`` --
``half_spread`` ticks away, where ``half_spread = max(half_spread_ticks, atr_mult * ATR)`` widens with
volatility. Inventory skews both quotes against the position: ``skew = skew_ticks_per_lot * position`` ticks
is subtracted from both prices, so a long quoter bids lower (buys less) and offers lower (sells more). A
side whose fill would push ``|position|`` past ``max_position`` is not quoted (its resting quote is
cancelled). Quotes are post-only GTC limits and never cross the book (bid <= best ask - 1, ask >= best bid +
1).

It does not spam: a side is re-quoted (``replace``) only when its desired price moved by at least
``requote_ticks`` and its quote is acknowledged; nothing is sent while the desired quotes stand or a quote
is still on its way. When the book is stale or crossed (flagged, or bid >= ask) or a side is empty it cancels
its quotes on the symbol and stays silent until the book is sound again. A filled quote is no longer live:
the next book event quotes that side again, skewed by the new position (its own fills).

A plug-in like any user strategy (:mod:`hean.api`): ``path = "hean.strategies.market_maker:STRATEGY"``,
or ``[strategy] name = "market_maker"`` (the default).

Parameters (``[strategy.params]``; all numbers):

====================  =======  ===================================================================
half_spread_ticks     1        minimum distance of each quote from the fair price, ticks
atr_mult              0        half spread >= atr_mult * ATR (ticks; 0 disables)
skew_ticks_per_lot    0.5      ticks both quotes move against one lot of position
quote_qty             1        lots per quote
max_position          10       |position| cap in lots
requote_ticks         1        re-quote a side only when its price moved this many ticks
use_microprice        0        1: fair price = microprice; 0: mid
one_side_per_event    0        1: act on at most one side per book event, the side not acted on last
                               first (the rhythm of HEAN's former built-in quoter); 0: both sides
====================  =======  ===================================================================
"""

from __future__ import annotations

import math

import numpy as np

from hean.api import (
    BUY,
    CANCEL_PENDING,
    F_CROSSED,
    F_STALE,
    GTC,
    M_N_ACTS,
    OPEN,
    OUT_ATR,
    PENDING,
    POST_ONLY,
    REPLACE_PENDING,
    SELL,
    Strategy,
    callback,
    cancel,
    limit,
    order_state,
    position,
    replace,
)

PARAMS: dict[str, float] = {
    "half_spread_ticks": 1.0,
    "atr_mult": 0.0,
    "skew_ticks_per_lot": 0.5,
    "quote_qty": 1.0,
    "max_position": 10.0,
    "requote_ticks": 1.0,
    "use_microprice": 0.0,
    "one_side_per_event": 0.0,
}

STATE = [
    ("bid_cid", "<i8"),  # client id of the bid quote (0: none yet)
    ("ask_cid", "<i8"),
    ("bid_px", "<i8"),  # its price, ticks
    ("ask_px", "<i8"),
    ("halted", "<i8"),  # 1 after cancelling for a bad book, until the book is sound
    ("last_side", "<i8"),  # the side acted on last (one_side_per_event)
]


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
    if p["one_side_per_event"] not in (0.0, 1.0):
        raise ValueError("market_maker: one_side_per_event must be 0 or 1")


@callback
def desired_quotes(p, atr, b, pos):
    """(bid, ask) prices in ticks the quoter wants now; 0 for a side it must not quote."""
    fair = b.microprice if p.use_microprice == 1.0 else b.mid
    half = p.half_spread_ticks
    if p.atr_mult > 0.0 and not math.isnan(atr):
        half = max(half, p.atr_mult * atr)
    center = fair - p.skew_ticks_per_lot * pos
    bid = min(np.int64(math.floor(center - half)), b.ask_px - 1)
    ask = max(np.int64(math.ceil(center + half)), b.bid_px + 1)
    qty = np.int64(p.quote_qty)
    max_pos = np.int64(p.max_position)
    if pos + qty > max_pos or bid <= 0:
        bid = 0
    if pos - qty < -max_pos:
        ask = 0
    return bid, ask


@callback
def quote_side(ctx, s, side, cid, have, want):
    """Move the quote ``cid`` (at ``have``) to ``want`` (0: none); returns (cid, price) of the side now."""
    p = ctx.params
    state = order_state(ctx, cid)
    if state == CANCEL_PENDING or state == REPLACE_PENDING:
        return cid, have  # a cancel or replace is on its way: wait for its report
    if state != PENDING and state != OPEN:
        have = 0  # no live quote (filled, cancelled, rejected, or none yet)
    if want == have or (want != 0 and have != 0 and abs(want - have) < np.int64(p.requote_ticks)):
        return cid, have
    if want == 0:
        cancel(ctx, cid)
        return cid, 0
    if have == 0:
        new = limit(ctx, s, side, want, np.int64(p.quote_qty), GTC, POST_ONLY)
        return (new, want) if new > 0 else (cid, 0)
    if state == OPEN and replace(ctx, cid, want, np.int64(p.quote_qty)):
        return cid, want
    return cid, have  # not acknowledged yet: replace it once it is


@callback
def on_event(ctx, s):
    """Every book state and trade: keep one post-only quote per side where the quoter wants it."""
    b = ctx.book[s]
    st = ctx.state[s]
    if (b.flags & (F_STALE | F_CROSSED)) != 0 or b.bid_px <= 0 or b.ask_px <= b.bid_px:
        if st.halted == 0:  # once per bad spell: cancel both quotes
            st.halted = 1
            cancel(ctx, st.bid_cid)
            cancel(ctx, st.ask_cid)
        return
    st.halted = 0
    bid, ask = desired_quotes(ctx.params, ctx.ind[s, OUT_ATR], b, position(ctx, s))
    one = ctx.params.one_side_per_event == 1.0
    ask_first = one and st.last_side == BUY
    sent = ctx.meta[M_N_ACTS]
    for k in range(2):
        if (k == 0) == ask_first:
            st.ask_cid, st.ask_px = quote_side(ctx, s, SELL, st.ask_cid, st.ask_px, ask)
            side = SELL
        else:
            st.bid_cid, st.bid_px = quote_side(ctx, s, BUY, st.bid_cid, st.bid_px, bid)
            side = BUY
        if one and ctx.meta[M_N_ACTS] != sent:
            st.last_side = side
            return


STRATEGY = Strategy(
    on_book=on_event,
    on_trade=on_event,
    params=PARAMS,
    state=STATE,
    validate=validate,
    mode="bar",
    description="inventory-skewed two-sided post-only quoter",
)
