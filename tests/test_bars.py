"""Time bars from trades and from mid (hean.stages.bars) against bars built independently with numpy."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_array_equal
from test_indicators import btc_bars, btc_trades

from hean.stages import bars as B


def run_bars(ts_ns, price, qty, interval_ms=1000, n_symbols=1, sym=0):
    bars = B.make_bar_state(n_symbols, B.BarConfig(interval_ms=interval_ms))
    out = np.empty((len(ts_ns), B.N_BAR))
    starts = np.empty(len(ts_ns), dtype=np.int64)
    n = B.build_bars(bars, sym, ts_ns, price, qty, out, starts)
    return bars, out[:n], starts[:n]


def test_one_second_bars_of_the_binance_trades():
    px, qty, ts_ms = btc_trades()
    bars, out, starts = run_bars(ts_ms * 1_000_000, px, qty)
    high, low, close, volume = btc_bars(1000)
    # numpy's bars include the last (still open) bar; ours closes only what a later tick closed
    assert len(out) == len(close) - 1
    assert_array_equal(out[:, B.B_HIGH], high[:-1])
    assert_array_equal(out[:, B.B_LOW], low[:-1])
    assert_array_equal(out[:, B.B_CLOSE], close[:-1])
    np.testing.assert_allclose(out[:, B.B_VOLUME], volume[:-1], rtol=1e-12)
    assert (np.diff(starts) > 0).all() and (starts % 1_000_000_000 == 0).all()
    assert bars.last_i[0, B.J_CLOSED] == len(out)
    assert bars.cur_i[0, B.J_START] == (ts_ms[-1] // 1000) * 1_000_000_000


def test_bar_fields_on_a_crafted_sequence():
    ts = np.array([1_000, 1_500, 1_999, 2_000, 2_100, 5_000], dtype=np.int64) * 1_000_000  # ms -> ns
    px = np.array([10.0, 12.0, 9.0, 11.0, 11.5, 20.0])
    qty = np.array([1.0, 2.0, 1.0, 4.0, 0.0, 1.0])
    _, out, starts = run_bars(ts, px, qty)
    assert_array_equal(starts, [1_000_000_000, 2_000_000_000])
    # open, high, low, close, volume, vwap
    assert_array_equal(out[0], [10.0, 12.0, 9.0, 9.0, 4.0, (10 + 24 + 9) / 4])
    assert_array_equal(out[1], [11.0, 11.5, 11.0, 11.5, 4.0, 11.0])


def test_roll_on_time_alone_closes_the_bar():
    bars = B.make_bar_state(2, B.BarConfig(interval_ms=100))
    B.bar_add(bars, 1, 1_050_000_000, 5.0, 1.0)
    assert B.bar_roll(bars, 1, 1_099_999_999) == 0
    assert B.bar_roll(bars, 1, 1_100_000_000) == 1
    assert B.bar_roll(bars, 1, 1_300_000_000) == 0, "no bar open, nothing to close"
    assert bars.last_i[1, B.J_START] == 1_000_000_000 and bars.last[1, B.B_CLOSE] == 5.0
    assert bars.last_i[0, B.J_CLOSED] == 0 and np.isnan(bars.last[0]).all()


def test_mid_bars_have_no_volume_and_vwap_is_the_close():
    bars = B.make_bar_state(1, B.BarConfig(interval_ms=1000, source="mid"))
    for t, mid in [(0, 100.5), (300, 101.0), (900, 99.5)]:
        B.bar_add(bars, 0, t * 1_000_000, mid, 0.0)
    assert B.bar_roll(bars, 0, 1_000_000_000) == 1
    assert_array_equal(bars.last[0], [100.5, 101.0, 99.5, 99.5, 0.0, 99.5])
    assert bars.params[B.K_SOURCE] == B.SOURCE_MID


def test_gap_produces_no_empty_bars():
    ts = np.array([0, 10_000, 10_500, 30_000], dtype=np.int64) * 1_000_000
    _, out, starts = run_bars(ts, np.array([1.0, 2.0, 3.0, 4.0]), np.ones(4))
    assert_array_equal(starts, [0, 10_000_000_000])


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        ({"interval_ms": 0}, "interval_ms"),
        ({"interval_ms": 1.5}, "interval_ms"),
        ({"source": "book"}, "source"),
        ({"period": 3}, "unknown bar config keys"),
    ],
)
def test_bad_config(cfg, match):
    with pytest.raises(ValueError, match=match):
        B.make_bar_state(1, B.BarConfig.from_mapping(cfg))
