"""Streaming IndicatorSet: one value at a time equals the batch API (bit for bit) and TA-Lib (to 1e-9)."""

from __future__ import annotations

import numpy as np
import pytest
import talib
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_array_equal
from test_indicators import SYNTH, assert_matches, btc_bars, btc_trades

from hean import indicators as hi
from hean.indicators import streaming as S

CONFIGS = [
    S.IndicatorConfig(),
    S.IndicatorConfig(
        sma_period=1,
        ema_period=2,
        rsi_period=2,
        macd_fast=3,
        macd_slow=7,
        macd_signal=1,
        atr_period=1,
        bb_period=2,
        bb_nbdevup=1.0,
        bb_nbdevdn=3.0,
        vwap_period=1,
    ),
    S.IndicatorConfig(sma_period=7, ema_period=50, rsi_period=21, macd_fast=26, macd_slow=12, bb_period=9),
]


def stream(config, price, high, low, close, volume, n_symbols=2, sym=1):
    st = S.make_indicator_set(n_symbols, config)
    out = np.empty((len(close), S.N_OUT))
    accepted = S.feed_series(st, sym, price, high, low, close, volume, out)
    return st, out, accepted


def batch(config, price, high, low, close, volume) -> dict[int, np.ndarray]:
    c = config.validated()
    m = hi.macd(close, c.macd_fast, c.macd_slow, c.macd_signal)
    b = hi.bbands(close, c.bb_period, c.bb_nbdevup, c.bb_nbdevdn)
    return {
        S.OUT_SMA: hi.sma(close, c.sma_period),
        S.OUT_EMA: hi.ema(close, c.ema_period),
        S.OUT_RSI: hi.rsi(close, c.rsi_period),
        S.OUT_MACD: m[0],
        S.OUT_MACD_SIGNAL: m[1],
        S.OUT_MACD_HIST: m[2],
        S.OUT_ATR: hi.atr(high, low, close, c.atr_period),
        S.OUT_BB_UPPER: b[0],
        S.OUT_BB_MIDDLE: b[1],
        S.OUT_BB_LOWER: b[2],
        S.OUT_VWAP: hi.vwap(price, volume, c.vwap_period),
    }


def talib_ref(config, high, low, close) -> dict[int, np.ndarray]:
    c = config.validated()
    m = talib.MACD(close, c.macd_fast, c.macd_slow, c.macd_signal)
    b = talib.BBANDS(close, c.bb_period, c.bb_nbdevup, c.bb_nbdevdn)
    return {
        S.OUT_SMA: talib.SMA(close, c.sma_period),
        S.OUT_EMA: talib.EMA(close, c.ema_period),
        S.OUT_RSI: talib.RSI(close, c.rsi_period),
        S.OUT_MACD: m[0],
        S.OUT_MACD_SIGNAL: m[1],
        S.OUT_MACD_HIST: m[2],
        S.OUT_ATR: talib.ATR(high, low, close, c.atr_period),
        S.OUT_BB_UPPER: b[0],
        S.OUT_BB_MIDDLE: b[1],
        S.OUT_BB_LOWER: b[2],
    }


def check_stream(config, price, high, low, close, volume):
    st, out, accepted = stream(config, price, high, low, close, volume)
    assert accepted == len(close)
    for col, ref in batch(config, price, high, low, close, volume).items():
        assert_array_equal(out[:, col], ref, err_msg=S.OUTPUT_NAMES[col])
    for col, ref in talib_ref(config, high, low, close).items():
        assert_matches(out[:, col], ref)
    assert np.isnan(st.out[0]).all(), "another symbol's row was touched"
    assert st.istate[1, S.I_COUNT] == len(close)


@pytest.mark.parametrize("config", CONFIGS, ids=["default", "smallest", "custom"])
def test_stream_of_trade_ticks(config):
    px, qty, _ = btc_trades()
    px, qty = px[:6000], qty[:6000]
    check_stream(config, px, px, px, px, qty)


@pytest.mark.parametrize("config", CONFIGS, ids=["default", "smallest", "custom"])
def test_stream_of_1s_bars(config):
    high, low, close, volume = btc_bars()
    check_stream(config, close, high, low, close, volume)


@pytest.mark.parametrize("series", ["walk", "tiny", "geometric", "sine"])
def test_stream_of_synthetic_series(series):
    high, low, close = SYNTH[series]
    check_stream(CONFIGS[0], close, high, low, close, np.ones_like(close))


def test_flat_stream():
    x = np.full(80, 42.5)
    st, out, _ = stream(S.IndicatorConfig(), x, x, x, x, x)
    assert out[-1, S.OUT_RSI] == 0.0
    assert out[-1, S.OUT_BB_UPPER] == out[-1, S.OUT_BB_MIDDLE] == out[-1, S.OUT_BB_LOWER] == 42.5
    assert out[-1, S.OUT_ATR] == 0.0 and out[-1, S.OUT_MACD_HIST] == 0.0


def test_interleaved_symbols_are_independent():
    px, qty, _ = btc_trades()
    a, b = px[:3000], px[3000:6000][::-1].copy()
    st = S.make_indicator_set(3)
    out_a = np.empty((len(a), S.N_OUT))
    out_b = np.empty((len(b), S.N_OUT))
    for t in range(len(a)):  # the Python loop is fine for 3000 samples: this checks isolation, not speed
        S.indicators_update(st, 0, a[t], a[t], a[t], a[t], 1.0)
        out_a[t] = st.out[0]
        S.indicators_update(st, 2, b[t], b[t], b[t], b[t], 1.0)
        out_b[t] = st.out[2]
    _, ref_a, _ = stream(S.IndicatorConfig(), a, a, a, a, np.ones_like(a))
    _, ref_b, _ = stream(S.IndicatorConfig(), b, b, b, b, np.ones_like(b))
    assert_array_equal(out_a, ref_a)
    assert_array_equal(out_b, ref_b)
    assert np.isnan(st.out[1]).all()


BAD_SAMPLES = [
    ("price", (np.nan, 1.0, 1.0, 1.0, 1.0)),
    ("high", (1.0, np.nan, 1.0, 1.0, 1.0)),
    ("low", (1.0, 1.0, np.nan, 1.0, 1.0)),
    ("close", (1.0, 1.0, 1.0, np.nan, 1.0)),
    ("volume", (1.0, 1.0, 1.0, 1.0, np.nan)),
    ("negative volume", (1.0, 1.0, 1.0, 1.0, -1.0)),
    ("inf close", (1.0, 1.0, 1.0, np.inf, 1.0)),
    ("-inf low", (1.0, 1.0, -np.inf, 1.0, 1.0)),
    ("inf volume", (1.0, 1.0, 1.0, 1.0, np.inf)),
]


@pytest.mark.parametrize(("what", "sample"), BAD_SAMPLES, ids=[b[0] for b in BAD_SAMPLES])
def test_nan_sample_is_rejected_and_changes_nothing(what, sample):
    px, _, _ = btc_trades()
    st = S.make_indicator_set(1)
    for p in px[:100]:
        assert S.indicators_update(st, 0, p, p, p, p, 1.0)
    before = [a.copy() for a in st]
    assert not S.indicators_update(st, 0, *sample)
    for name, a, b in zip(S.IndicatorSet._fields, st, before, strict=True):
        if name == "istate":
            b[0, S.I_REJECTED] += 1
        assert_array_equal(a, b, err_msg=name)


def test_stream_with_nans_equals_batch_on_the_valid_samples():
    px, _, _ = btc_trades()
    x = px[:1000].copy()
    x[[0, 10, 11, 500]] = np.nan
    st, out, accepted = stream(S.IndicatorConfig(), x, x, x, x, np.ones_like(x))
    valid = ~np.isnan(x)
    assert accepted == valid.sum() and st.istate[1, S.I_REJECTED] == 4
    assert_array_equal(out[valid, S.OUT_RSI], hi.rsi(x[valid]))
    assert_array_equal(out[11, S.OUT_EMA], out[9, S.OUT_EMA])  # a rejected sample keeps the last value
    assert_matches(out[valid, S.OUT_MACD_HIST], talib.MACD(x[valid])[2])


def test_reset_symbol_starts_a_fresh_series():
    px, _, _ = btc_trades()
    st = S.make_indicator_set(2)
    for p in px[:300]:
        S.indicators_update(st, 0, p, p, p, p, 1.0)
    S.reset_symbol(st, 0)
    assert np.isnan(st.out[0]).all() and st.istate[0, S.I_COUNT] == 0
    out = np.empty((200, S.N_OUT))
    x = px[300:500].copy()
    S.feed_series(st, 0, x, x, x, x, np.ones_like(x), out)
    assert_array_equal(out[:, S.OUT_BB_MIDDLE], hi.bbands(x)[1])


def test_config_roundtrip_and_swap():
    c = S.IndicatorConfig.from_mapping({"macd_fast": 30, "macd_slow": 10, "rsi_period": 9})
    st = S.make_indicator_set(1, c)
    got = S.config_of(st)
    assert (got.macd_fast, got.macd_slow, got.rsi_period) == (10, 30, 9)
    assert st.sma_ring.shape == (1, 30) and st.bb_ring.shape == (1, 20)


BAD_CONFIGS = [
    ({"rsi_period": 1}, ValueError, "rsi_period"),
    ({"bb_period": 1}, ValueError, "bb_period"),
    ({"sma_period": 0}, ValueError, "sma_period"),
    ({"macd_signal": 0}, ValueError, "macd_signal"),
    ({"atr_period": 2.5}, TypeError, "atr_period"),
    ({"bb_nbdevup": float("inf")}, ValueError, "bb_nbdevup"),
    ({"rsi": 14}, ValueError, "unknown indicator config keys"),
]


@pytest.mark.parametrize(("cfg", "exc", "match"), BAD_CONFIGS)
def test_bad_config_is_a_clear_error(cfg, exc, match):
    with pytest.raises(exc, match=match):
        S.make_indicator_set(1, S.IndicatorConfig.from_mapping(cfg))


@pytest.mark.parametrize("n", [0, -1, 2.0, True])
def test_bad_symbol_count(n):
    with pytest.raises(ValueError, match="n_symbols"):
        S.make_indicator_set(n)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 300),
    holes=st.floats(0.0, 0.3),
    periods=st.tuples(st.integers(1, 40), st.integers(2, 40), st.integers(2, 12), st.integers(2, 40)),
)
def test_stream_equals_batch_property(seed, n, holes, periods):
    """Any series, any missing samples, any periods: streaming == batch on the valid samples, bit for bit."""
    rng = np.random.default_rng(seed)
    close = 100.0 + np.cumsum(rng.standard_normal(n))
    close[rng.random(n) < holes] = np.nan
    sma_p, rsi_p, fast, slow = periods
    config = S.IndicatorConfig(sma_period=sma_p, ema_period=sma_p, rsi_period=rsi_p, macd_fast=fast,
                               macd_slow=slow, bb_period=rsi_p, atr_period=sma_p, vwap_period=sma_p)  # fmt: skip
    volume = np.ones(n)
    _, out, accepted = stream(config, close, close, close, close, volume)
    valid = ~np.isnan(close)
    assert accepted == valid.sum()
    ref = batch(config, close[valid], close[valid], close[valid], close[valid], volume[valid])
    for col, values in ref.items():
        assert_array_equal(out[valid, col], values, err_msg=S.OUTPUT_NAMES[col])
