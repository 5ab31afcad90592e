"""Batch indicators (hean.indicators) against TA-Lib, the oracle pinned in the test extra (TA-Lib==0.8.2)."""

from __future__ import annotations

import functools
import gzip
import json

import numpy as np
import pytest
import talib
from conftest import data_file
from numpy.testing import assert_array_equal

from hean import indicators as hi

RTOL = 1e-9


@functools.cache
def btc_trades() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(price, qty, trade time ms) of every btcusdt@trade message in the Binance recording."""
    px, qty, ts = [], [], []
    with gzip.open(data_file("binance-usdm-btcusdt-20240808.gz"), "rt") as f:
        for line in f:
            if '"btcusdt@trade"' not in line:
                continue
            d = json.loads(line.split(" ", 1)[1])["data"]
            px.append(float(d["p"]))
            qty.append(float(d["q"]))
            ts.append(int(d["T"]))
    return np.array(px), np.array(qty), np.array(ts, dtype=np.int64)


@functools.cache
def btc_bars(ms: int = 1000) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(high, low, close, volume) of ``ms`` time bars built here with numpy (independent of hean.stages.bars)."""
    px, qty, ts = btc_trades()
    bucket = ts // ms
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    ends = np.r_[starts[1:], len(px)]
    high = np.maximum.reduceat(px, starts)
    low = np.minimum.reduceat(px, starts)
    close = px[ends - 1]
    volume = np.add.reduceat(qty, starts)
    return high, low, close, volume


def assert_matches(ours: np.ndarray, ref: np.ndarray, rtol: float = RTOL) -> None:
    """Same NaN positions (lookback) and values within ``rtol`` relative from the first output on."""
    assert ours.dtype == np.float64 and ours.shape == ref.shape
    assert_array_equal(np.isnan(ours), np.isnan(ref))
    valid = ~np.isnan(ref)
    np.testing.assert_allclose(ours[valid], ref[valid], rtol=rtol, atol=0)


# name -> (hean function, talib function, number of price inputs: 1 = real, 3 = high/low/close)
INDICATORS = {
    "sma": (hi.sma, talib.SMA, 1),
    "ema": (hi.ema, talib.EMA, 1),
    "rsi": (hi.rsi, talib.RSI, 1),
    "macd": (hi.macd, talib.MACD, 1),
    "atr": (hi.atr, talib.ATR, 3),
    "bbands": (hi.bbands, talib.BBANDS, 1),
}

# (indicator, kwargs): defaults, TA-Lib's extremes of period, and non-default band widths
CASES = [
    ("sma", {}),
    ("sma", {"timeperiod": 1}),
    ("sma", {"timeperiod": 7}),
    ("ema", {}),
    ("ema", {"timeperiod": 1}),
    ("ema", {"timeperiod": 12}),
    ("rsi", {}),
    ("rsi", {"timeperiod": 2}),
    ("rsi", {"timeperiod": 50}),
    ("macd", {}),
    ("macd", {"fastperiod": 5, "slowperiod": 35, "signalperiod": 5}),
    ("macd", {"fastperiod": 2, "slowperiod": 3, "signalperiod": 1}),
    ("macd", {"fastperiod": 26, "slowperiod": 12, "signalperiod": 9}),  # swapped, as TA-Lib does
    ("atr", {}),
    ("atr", {"timeperiod": 1}),
    ("atr", {"timeperiod": 5}),
    ("bbands", {}),
    ("bbands", {"timeperiod": 2}),
    ("bbands", {"timeperiod": 5, "nbdevup": 1.0, "nbdevdn": 1.0}),
    ("bbands", {"timeperiod": 10, "nbdevup": 1.5, "nbdevdn": 2.5}),
]


def run_both(name: str, kwargs: dict, high, low, close) -> list[tuple[np.ndarray, np.ndarray]]:
    ours_fn, ref_fn, n_in = INDICATORS[name]
    args = (high, low, close) if n_in == 3 else (close,)
    ours, ref = ours_fn(*args, **kwargs), ref_fn(*args, **kwargs)
    if not isinstance(ref, tuple):
        ours, ref = (ours,), (ref,)
    return list(zip(ours, ref, strict=True))


def case_id(case) -> str:
    name, kwargs = case
    return name + "".join(f"-{k}={v}" for k, v in kwargs.items())


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_matches_talib_on_binance_trade_ticks(case):
    px, _, _ = btc_trades()
    for ours, ref in run_both(*case, px, px, px):
        assert_matches(ours, ref)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_matches_talib_on_binance_1s_bars(case):
    high, low, close, _ = btc_bars()
    assert len(close) > 200
    for ours, ref in run_both(*case, high, low, close):
        assert_matches(ours, ref)


def synthetic_series() -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(high, low, close) of series chosen for the numerics: random walks at several scales, trends, cycles."""
    rng = np.random.default_rng(20240808)
    n = 3000
    out = {}
    for label, level, step in [("walk", 100.0, 1.0), ("btc_cents", 60000.0, 0.01), ("tiny", 1e-7, 1e-10)]:
        close = level + np.cumsum(rng.standard_normal(n)) * step
        spread = np.abs(rng.standard_normal(n)) * step
        out[label] = (close + spread, close - spread, close)
    t = np.arange(n, dtype=np.float64)
    sine = 50.0 + 10.0 * np.sin(t / 17.0)
    out["sine"] = (sine + 0.5, sine - 0.5, sine)
    trend = 1.0 + 0.001 * t
    out["trend_up"] = (trend * 1.001, trend * 0.999, trend)
    geo = 30.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, n)))
    out["geometric"] = (geo * 1.01, geo * 0.99, geo)
    return out


SYNTH = synthetic_series()


@pytest.mark.parametrize("series", sorted(SYNTH))
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_matches_talib_on_synthetic_series(case, series):
    for ours, ref in run_both(*case, *SYNTH[series]):
        assert_matches(ours, ref)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_flat_series_exactly_as_talib(case):
    """A flat series: RSI reads 0 (not 50), Bollinger bands collapse onto the middle, ATR is 0."""
    x = np.full(120, 61800.3)
    for ours, ref in run_both(*case, x, x, x):
        assert_array_equal(ours, ref)


def test_flat_series_values():
    x = np.full(60, 0.25)
    assert_array_equal(hi.rsi(x)[14:], 0.0)
    upper, middle, lower = hi.bbands(x)
    assert_array_equal(upper[19:], middle[19:])
    assert_array_equal(lower[19:], middle[19:])
    assert_array_equal(hi.atr(x, x, x)[14:], 0.0)
    line, signal, hist = hi.macd(x)
    assert_array_equal(hist[33:], 0.0)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_tiny_prices(case):
    """Prices around 1e-7 (meme coins in quote units): no absolute epsilon may zero anything out."""
    rng = np.random.default_rng(7)
    close = 1e-7 * (1.0 + 0.01 * np.cumsum(rng.standard_normal(400)))
    high, low = close * (1 + 1e-3), close * (1 - 1e-3)
    for ours, ref in run_both(*case, high, low, close):
        assert_matches(ours, ref)
    assert np.nanmax(hi.rsi(close)) > 50.0
    upper, middle, _ = hi.bbands(close)
    assert (upper[19:] > middle[19:]).all()


LOOKBACKS = [
    ("SMA", {}, 29),
    ("EMA", {}, 29),
    ("RSI", {}, 14),
    ("MACD", {}, 33),
    ("ATR", {}, 14),
    ("BBANDS", {}, 19),
    ("MACD", {"fastperiod": 3, "slowperiod": 10, "signalperiod": 4}, 12),
]


@pytest.mark.parametrize(("name", "kwargs", "lookback"), LOOKBACKS)
def test_lookback_is_talibs(name, kwargs, lookback):
    fn = getattr(hi, name.lower())
    x = np.linspace(10.0, 20.0, 60)
    args = (x + 1, x - 1, x) if name == "ATR" else (x,)
    out = fn(*args, **kwargs)
    first = out[0] if isinstance(out, tuple) else out
    assert int(np.argmax(~np.isnan(first))) == lookback
    import talib.abstract as abstract

    f = abstract.Function(name)
    f.set_parameters(kwargs)
    assert f.lookback == lookback


@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("length_delta", [-1, 0, 1])
def test_series_around_the_lookback(case, length_delta):
    """Shorter than the lookback: all NaN; exactly lookback + 1: one output; like TA-Lib."""
    name, kwargs = case
    fn = {"sma": "SMA", "ema": "EMA", "rsi": "RSI", "macd": "MACD", "atr": "ATR", "bbands": "BBANDS"}[name]
    import talib.abstract as abstract

    f = abstract.Function(fn)
    f.set_parameters(kwargs)
    n = f.lookback + 1 + length_delta
    x = 100.0 + np.sin(np.arange(n, dtype=np.float64))
    for ours, ref in run_both(name, kwargs, x + 1, x - 1, x):
        assert_matches(ours, ref)
        assert np.count_nonzero(~np.isnan(ours)) == max(0, length_delta + 1)


def test_empty_input():
    assert hi.sma(np.array([])).shape == (0,)
    assert all(a.shape == (0,) for a in hi.macd(np.array([])))


def test_leading_nans_start_the_series_like_talib():
    px, _, _ = btc_trades()
    x = np.r_[np.full(5, np.nan), px[:500]]
    for case in CASES:
        for ours, ref in run_both(*case, x, x, x):
            assert_matches(ours, ref)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_inside_is_a_missing_sample(bad):
    """TA-Lib poisons everything after an inner NaN; HEAN skips it: out[valid] == talib(x[valid])."""
    px, _, _ = btc_trades()
    x = px[:800].copy()
    holes = np.array([3, 40, 41, 300, 799])
    x[holes] = bad
    valid = np.isfinite(x)
    for case in CASES:
        for (ours, _), (_, ref_packed) in zip(
            run_both(*case, x, x, x), run_both(*case, x[valid], x[valid], x[valid]), strict=True
        ):
            assert np.isnan(ours[holes]).all()
            assert_matches(ours[valid], ref_packed)
    assert not np.isfinite(talib.SMA(x, 5)[41:]).any(), "TA-Lib's own behaviour changed: revisit the docs"


def test_nan_in_one_of_high_low_close_drops_the_bar():
    high, low, close, _ = btc_bars()
    h = high.copy()
    h[50] = np.nan
    ours = hi.atr(h, low, close)
    keep = np.arange(len(close)) != 50
    assert np.isnan(ours[50])
    assert_matches(ours[keep], talib.ATR(high[keep], low[keep], close[keep]))


def test_integer_ticks_are_accepted():
    ticks = np.arange(618000, 618100, dtype=np.int64)
    assert_array_equal(hi.rsi(ticks), hi.rsi(ticks.astype(np.float64)))
    assert_array_equal(hi.sma(list(range(40)), 5), talib.SMA(np.arange(40.0), 5))


def test_non_contiguous_input():
    px, _, _ = btc_trades()
    x = px[:2000:2]
    assert_matches(hi.ema(x, 10), talib.EMA(np.ascontiguousarray(x), 10))


def vwap_reference(price: np.ndarray, volume: np.ndarray, period: int) -> np.ndarray:
    pv = np.convolve(price * volume, np.ones(period), mode="valid")
    v = np.convolve(volume, np.ones(period), mode="valid")
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(v > 0, pv / np.where(v > 0, v, 1.0), np.nan)
    return np.r_[np.full(period - 1, np.nan), out]


@pytest.mark.parametrize("period", [1, 2, 20, 100])
def test_vwap_matches_rolling_sums(period):
    px, qty, _ = btc_trades()
    assert_matches(hi.vwap(px, qty, period), vwap_reference(px, qty, period))


def test_vwap_zero_volume_window_is_nan():
    price = np.array([10.0, 11.0, 12.0, 13.0, 14.0, 15.0])
    volume = np.array([1.0, 0.0, 0.0, 0.0, 2.0, 0.0])
    out = hi.vwap(price, volume, timeperiod=3)
    assert_array_equal(np.isnan(out), [True, True, False, True, False, False])
    assert out[2] == 10.0 and out[4] == 14.0 and out[5] == 14.0


BAD_CALLS = [
    (lambda x: hi.sma(x, 0), ValueError, "timeperiod"),
    (lambda x: hi.ema(x, 100_001), ValueError, "timeperiod"),
    (lambda x: hi.rsi(x, 1), ValueError, "timeperiod"),
    (lambda x: hi.rsi(x, 14.0), TypeError, "integer"),
    (lambda x: hi.rsi(x, True), TypeError, "integer"),
    (lambda x: hi.macd(x, fastperiod=1), ValueError, "fastperiod"),
    (lambda x: hi.macd(x, signalperiod=0), ValueError, "signalperiod"),
    (lambda x: hi.bbands(x, 1), ValueError, "timeperiod"),
    (lambda x: hi.bbands(x, nbdevup=np.nan), ValueError, "nbdevup"),
    (lambda x: hi.bbands(x, matype=1), ValueError, "matype"),
    (lambda x: hi.atr(x, x[:-1], x), ValueError, "same length"),
    (lambda x: hi.vwap(x, -x), ValueError, "volume"),
    (lambda x: hi.sma(x.reshape(2, -1)), ValueError, "1-D"),
    (lambda x: hi.sma(x.astype(str)), TypeError, "real numbers"),
    (lambda x: hi.sma(x.astype(complex)), TypeError, "real numbers"),
]


@pytest.mark.parametrize(("call", "exc", "match"), BAD_CALLS)
def test_bad_input_is_a_clear_error(call, exc, match):
    with pytest.raises(exc, match=match):
        call(np.arange(1.0, 41.0))


BIT_EXACT = [c for c in CASES if c[0] != "bbands"]


@pytest.mark.parametrize("case", BIT_EXACT, ids=case_id)
def test_bit_exact_with_talib_08(case):
    """SMA, EMA, RSI, MACD, ATR round exactly where TA-Lib 0.8 rounds (fused EMA/ATR, reciprocal RSI)."""
    px, _, _ = btc_trades()
    high, low, close, _ = btc_bars()
    walk_h, walk_l, walk_c = SYNTH["walk"]
    for h, lo, c in ((px, px, px), (high, low, close), (walk_h, walk_l, walk_c)):
        for ours, ref in run_both(*case, h, lo, c):
            assert_array_equal(ours, ref)


def test_oracle_runs_with_talib_defaults():
    """The oracle is TA-Lib's default compatibility with no unstable period (the tests rely on it)."""
    assert talib.get_compatibility() == 0
    assert [talib.get_unstable_period(f) for f in ("EMA", "RSI", "ATR")] == [0, 0, 0]
    assert talib.__ta_version__.startswith(b"0.8.")


@pytest.mark.parametrize(("name", "fn", "n_in"), [("RSI", hi.rsi, 1), ("EMA", hi.ema, 1), ("ATR", hi.atr, 3)])
def test_talib_unstable_period_only_hides_leading_outputs(name, fn, n_in):
    """TA-Lib's unstable period k suppresses the first k outputs and changes nothing after them."""
    px, _, _ = btc_trades()
    x = px[:2000]
    args = (x + 1, x - 1, x) if n_in == 3 else (x,)
    talib.set_unstable_period(name, 25)
    try:
        ref = getattr(talib, name)(*args)
    finally:
        talib.set_unstable_period(name, 0)
    ours = fn(*args)
    first = int(np.argmax(~np.isnan(ref)))
    assert first == int(np.argmax(~np.isnan(ours))) + 25
    assert_array_equal(ours[first:], ref[first:])
