"""Positions and PnL, average-cost accounting: one row per case (partial fills, adding, reducing, flips, fees)."""

from __future__ import annotations

import numpy as np
import pytest

from hean.stages.positions import make_positions, pos_equity, pos_fill, pos_mark, position_bytes, position_view

BUY, SELL = 1, -1

# (id, fills [(side, price, qty, fee)], mark, position, avg_px, realized, fees, unrealized); value/tick/lot = 2.0
CASES = [
    ("open_long", [(BUY, 100, 3, 0.0)], 0.0, 3, 100.0, 0.0, 0.0, 0.0),
    ("partial_fills_average", [(BUY, 100, 1, 0.0), (BUY, 103, 2, 0.0)], 0.0, 3, 102.0, 0.0, 0.0, 0.0),
    ("adding_to_short", [(SELL, 100, 2, 0.0), (SELL, 110, 2, 0.0)], 0.0, -4, 105.0, 0.0, 0.0, 0.0),
    ("reducing_long_realizes_keeps_avg", [(BUY, 100, 4, 0.0), (SELL, 110, 1, 0.0)], 0.0, 3, 100.0, 20.0, 0.0, 0.0),
    ("reducing_short_realizes", [(SELL, 100, 4, 0.0), (BUY, 90, 3, 0.0)], 0.0, -1, 100.0, 60.0, 0.0, 0.0),
    ("closing_to_flat", [(BUY, 100, 2, 0.0), (SELL, 95, 2, 0.0)], 0.0, 0, 0.0, -20.0, 0.0, 0.0),
    ("flip_long_to_short", [(BUY, 100, 2, 0.0), (SELL, 104, 5, 0.0)], 0.0, -3, 104.0, 16.0, 0.0, 0.0),
    ("flip_short_to_long", [(SELL, 100, 1, 0.0), (BUY, 97, 4, 0.0)], 0.0, 3, 97.0, 6.0, 0.0, 0.0),
    ("fees_and_rebates", [(BUY, 100, 1, 0.5), (SELL, 100, 1, -0.2)], 0.0, 0, 0.0, 0.0, 0.3, 0.0),
    ("unrealized_long", [(BUY, 100, 3, 0.0)], 102.5, 3, 100.0, 0.0, 0.0, 15.0),
    ("unrealized_short", [(SELL, 100, 3, 0.0)], 102.5, -3, 100.0, 0.0, 0.0, -15.0),
    ("unrealized_after_flip", [(BUY, 100, 1, 0.0), (SELL, 110, 3, 0.0)], 105.0, -2, 110.0, 20.0, 0.0, 20.0),
]


@pytest.mark.parametrize("name,fills,mark,position,avg,realized,fees,unrealized", CASES, ids=[c[0] for c in CASES])
def test_pnl_case(name, fills, mark, position, avg, realized, fees, unrealized):
    pos = make_positions(2, value_per_tick_lot=2.0, capital=1000.0)
    if mark:
        pos_mark(pos, 0, mark)
    total_realized = 0.0
    for side, price, qty, fee in fills:
        total_realized += pos_fill(pos, 0, side, price, qty, fee)
    assert pos.position_lots[0] == position
    assert pos.avg_px[0] == pytest.approx(avg)
    assert pos.realized[0] == pytest.approx(realized) == pytest.approx(total_realized)
    assert pos.fees[0] == pytest.approx(fees)
    assert pos.unrealized[0] == pytest.approx(unrealized)
    assert pos_equity(pos) == pytest.approx(1000.0 + realized - fees + unrealized)
    assert pos.position_lots[1] == 0 and pos.realized[1] == 0.0  # the other symbol is untouched


def test_totals_across_symbols_and_remarks():
    pos = make_positions(3, value_per_tick_lot=np.array([1.0, 0.1, 10.0]), capital=0.0)
    pos_fill(pos, 0, BUY, 100, 2, 0.1)
    pos_fill(pos, 1, SELL, 50, 10, 0.2)
    pos_fill(pos, 2, BUY, 7, 1, 0.3)
    for s, mid in ((0, 101.0), (1, 49.0), (2, 8.0), (0, 99.0)):
        pos_mark(pos, s, mid)
    pos_fill(pos, 1, BUY, 48, 10, 0.0)  # close symbol 1: +2 ticks * 10 * 0.1 = 2.0
    assert pos.totals[0] == pytest.approx(pos.realized.sum()) == pytest.approx(2.0)
    assert pos.totals[1] == pytest.approx(0.6)
    # unrealized: s0 (99-100)*2*1 = -2; s1 flat; s2 (8-7)*1*10 = 10
    assert pos.totals[2] == pytest.approx(pos.unrealized.sum()) == pytest.approx(8.0)
    assert pos_equity(pos) == pytest.approx(2.0 - 0.6 + 8.0)
    assert pos.volume_lots.tolist() == [2, 20, 1]
    pos_mark(pos, 0, 0.0)  # a non-positive mid is ignored
    assert pos.mark[0] == 99.0


def test_make_positions_validates():
    with pytest.raises(ValueError):
        make_positions(0)
    with pytest.raises(ValueError):
        make_positions(2, value_per_tick_lot=-1.0)
    with pytest.raises(ValueError):
        make_positions(2, position_lots=np.zeros(3, dtype=np.int64))


def test_shared_position_words():
    """The segment risk and the strategy share: one int64 per symbol, at least a cache line; fills land there."""
    assert position_bytes(1) == 64 and position_bytes(20) == 160
    words = np.zeros(8, np.int64)
    shared = position_view(words, 3)
    pos = make_positions(3, position_lots=shared)
    pos_fill(pos, 1, -1, 100, 4, 0.0)
    assert words.tolist()[:3] == [0, -4, 0]
    with pytest.raises(ValueError):
        position_view(np.zeros(2, np.int64), 3)
