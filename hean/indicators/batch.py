"""Batch indicators over numpy arrays, with TA-Lib's function names, parameter names and defaults.

Each function runs the step functions of :mod:`hean.indicators.kernels` over the whole array -- the same
arithmetic the streaming updates use, with the state held in registers. Outputs are float64 arrays of the
input's length, NaN before the first output (TA-Lib's lookback: ``sma``/``ema`` ``timeperiod - 1``, ``rsi``
and ``atr`` ``timeperiod``, ``macd`` ``slowperiod + signalperiod - 2``, ``bbands`` ``timeperiod - 1``).

NaN (or +-inf) input is a *missing sample*: it does not enter the state and its output is NaN; the
indicator continues over the remaining samples as if it were absent. For leading NaNs this is exactly
TA-Lib (its wrapper starts at the first non-NaN sample). TA-Lib propagates a NaN or an infinity *inside* the
series into every later output (its running sums turn NaN); HEAN deliberately does not -- one bad print must
not blind a live strategy for the rest of the session. ``out[valid] == talib(x[valid])`` holds for any
pattern of missing samples.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from hean.indicators import kernels as K
from hean.jit import entry

__all__ = ["atr", "bbands", "ema", "macd", "rsi", "sma", "vwap"]

MAX_PERIOD = 100_000  # TA-Lib's upper bound for every period here


# ---------------------------------------------------------------------------------------------------------
# compiled loops (contiguous float64 in, preallocated NaN outputs)
# ---------------------------------------------------------------------------------------------------------
@entry(error_model="numpy")
def _sma_loop(x, period, out):
    total = 0.0
    for n in range(x.shape[0]):
        xn = x[n]
        if not math.isfinite(xn):
            return True
        total, out[0, n] = K.sma_step(total, n, xn, x[max(n - period + 1, 0)], period)
    return False


@entry(error_model="numpy")
def _ema_loop(x, period, out):
    k = K.ema_k(period)
    ema = 0.0
    for n in range(x.shape[0]):
        xn = x[n]
        if not math.isfinite(xn):
            return True
        ema, out[0, n] = K.ema_step(ema, n, xn, period, k)
    return False


@entry(error_model="numpy")
def _rsi_loop(x, period, out):
    inv_period = 1.0 / period
    prev = 0.0
    gain = 0.0
    loss = 0.0
    for n in range(x.shape[0]):
        xn = x[n]
        if not math.isfinite(xn):
            return True
        prev, gain, loss, out[0, n] = K.rsi_step(prev, gain, loss, n, xn, period, inv_period)
    return False


@entry(error_model="numpy")
def _macd_loop(x, fastp, slowp, signalp, out):
    kf = K.ema_k(fastp)
    ks = K.ema_k(slowp)
    kg = K.ema_k(signalp)
    fast = 0.0
    slow = 0.0
    sig = 0.0
    for n in range(x.shape[0]):
        xn = x[n]
        if not math.isfinite(xn):
            return True
        fast, slow, sig, out[0, n], out[1, n], out[2, n] = K.macd_step(
            fast, slow, sig, n, xn, fastp, slowp, signalp, kf, ks, kg
        )
    return False


@entry(error_model="numpy")
def _atr_loop(high, low, close, period, out):
    keep = (period - 1.0) / period
    take = 1.0 - keep
    prev_close = 0.0
    atr_ = 0.0
    for n in range(close.shape[0]):
        h = high[n]
        lo = low[n]
        c = close[n]
        if not (math.isfinite(h) and math.isfinite(lo) and math.isfinite(c)):
            return True
        prev_close, atr_, out[0, n] = K.atr_step(prev_close, atr_, n, h, lo, c, period, keep, take)
    return False


@entry(nrt=True, error_model="numpy")
def _bbands_loop(x, period, nbdevup, nbdevdn, out):
    ring = np.empty((1, period), np.float64)
    inv_period = 1.0 / period
    total = 0.0
    anchor = 0.0
    s = 0.0
    s2 = 0.0
    run = 0
    prev = 0.0
    pos = 0
    for n in range(x.shape[0]):
        xn = x[n]
        if not math.isfinite(xn):
            return True
        total, anchor, s, s2, run, out[0, n], out[1, n], out[2, n] = K.bbands_step(
            total, anchor, s, s2, run, prev, n, xn, ring, 0, pos, period, inv_period, nbdevup, nbdevdn
        )
        prev = xn
        pos += 1
        if pos == period:
            pos = 0
    return False


@entry(nrt=True, error_model="numpy")
def _vwap_loop(price, volume, period, out):
    pv_ring = np.empty((1, period), np.float64)
    v_ring = np.empty((1, period), np.float64)
    pv_sum = 0.0
    v_sum = 0.0
    pos = 0
    for n in range(price.shape[0]):
        p = price[n]
        v = volume[n]
        if not (math.isfinite(p) and math.isfinite(v)):
            return True
        pv_sum, v_sum, out[0, n] = K.vwap_step(pv_sum, v_sum, n, p, v, pv_ring, v_ring, 0, pos, period)
        pos += 1
        if pos == period:
            pos = 0
    return False


# ---------------------------------------------------------------------------------------------------------
# validation and the missing-sample rule
# ---------------------------------------------------------------------------------------------------------
def check_period(name: str, value: object, minimum: int) -> int:
    """An int in [minimum, MAX_PERIOD] (TA-Lib's ranges), else ValueError/TypeError naming the parameter."""
    if type(value) is int and minimum <= value <= MAX_PERIOD:
        return value  # the common case, without the ABC check
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if not minimum <= int(value) <= MAX_PERIOD:
        raise ValueError(f"{name} must be in [{minimum}, {MAX_PERIOD}], got {value}")
    return int(value)


def check_real(name: str, value: object) -> float:
    """A finite float, else ValueError naming the parameter."""
    if type(value) is float and math.isfinite(value):
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _as_series(name: str, a: object) -> np.ndarray:
    if type(a) is np.ndarray and a.dtype == np.float64 and a.ndim == 1 and a.flags.c_contiguous:
        return a  # the common case, without a copy
    arr = np.asarray(a)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {arr.shape}")
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.float64)


def _as_series_group(names: tuple[str, ...], arrays: tuple[object, ...]) -> list[np.ndarray]:
    out = [_as_series(n, a) for n, a in zip(names, arrays, strict=True)]
    if len({a.shape[0] for a in out}) != 1:
        shapes = ", ".join(f"{n}={a.shape[0]}" for n, a in zip(names, out, strict=True))
        raise ValueError(f"input arrays must have the same length ({shapes})")
    return out


def _run(loop, inputs: list[np.ndarray], n_out: int, *params) -> np.ndarray:
    """Run ``loop`` over the samples where every input is finite; scatter the outputs back (NaN elsewhere).

    The outputs are the rows of one (n_out, len) array: one argument for the dispatcher to type. The compiled
    loop stops at the first non-finite input (one compare per sample, off the dependency chain); only then is
    the mask computed and the loop rerun over the packed valid samples.
    """
    out = np.empty((n_out, inputs[0].shape[0]))
    if not loop(*inputs, *params, out):
        return out
    missing = ~np.isfinite(inputs[0])
    for a in inputs[1:]:
        missing |= ~np.isfinite(a)
    keep = ~missing
    packed = np.empty((n_out, int(keep.sum())))
    loop(*[np.ascontiguousarray(a[keep]) for a in inputs], *params, packed)
    out.fill(np.nan)
    out[:, keep] = packed
    return out


# ---------------------------------------------------------------------------------------------------------
# public API (TA-Lib names and defaults)
# ---------------------------------------------------------------------------------------------------------
def sma(real: np.ndarray, timeperiod: int = 30) -> np.ndarray:
    """Simple moving average (TA-Lib ``SMA``); first output at ``timeperiod - 1``."""
    p = check_period("timeperiod", timeperiod, 1)
    return _run(_sma_loop, [_as_series("real", real)], 1, p)[0]


def ema(real: np.ndarray, timeperiod: int = 30) -> np.ndarray:
    """Exponential moving average seeded with the SMA of the first period (TA-Lib ``EMA``)."""
    p = check_period("timeperiod", timeperiod, 1)
    return _run(_ema_loop, [_as_series("real", real)], 1, p)[0]


def rsi(real: np.ndarray, timeperiod: int = 14) -> np.ndarray:
    """Wilder's relative strength index (TA-Lib ``RSI``); 0 on a flat series; first output at ``timeperiod``."""
    p = check_period("timeperiod", timeperiod, 2)
    return _run(_rsi_loop, [_as_series("real", real)], 1, p)[0]


def macd(
    real: np.ndarray, fastperiod: int = 12, slowperiod: int = 26, signalperiod: int = 9
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(macd, macdsignal, macdhist) as TA-Lib ``MACD``; ``fastperiod > slowperiod`` is swapped like TA-Lib."""
    fp = check_period("fastperiod", fastperiod, 2)
    sp = check_period("slowperiod", slowperiod, 2)
    gp = check_period("signalperiod", signalperiod, 1)
    if sp < fp:
        fp, sp = sp, fp
    out = _run(_macd_loop, [_as_series("real", real)], 3, fp, sp, gp)
    return out[0], out[1], out[2]


def atr(high: np.ndarray, low: np.ndarray, close: np.ndarray, timeperiod: int = 14) -> np.ndarray:
    """Wilder's average true range (TA-Lib ``ATR``); first output at ``timeperiod``."""
    p = check_period("timeperiod", timeperiod, 1)
    arrays = _as_series_group(("high", "low", "close"), (high, low, close))
    return _run(_atr_loop, arrays, 1, p)[0]


def bbands(
    real: np.ndarray, timeperiod: int = 20, nbdevup: float = 2.0, nbdevdn: float = 2.0, matype: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(upperband, middleband, lowerband) as TA-Lib ``BBANDS`` with an SMA middle (``matype=0`` only)."""
    p = check_period("timeperiod", timeperiod, 2)
    up = check_real("nbdevup", nbdevup)
    dn = check_real("nbdevdn", nbdevdn)
    if matype != 0 or isinstance(matype, bool):
        raise ValueError(f"matype {matype!r} is not supported: only 0 (SMA) is implemented")
    out = _run(_bbands_loop, [_as_series("real", real)], 3, p, up, dn)
    return out[0], out[1], out[2]


def vwap(price: np.ndarray, volume: np.ndarray, timeperiod: int = 20) -> np.ndarray:
    """Rolling volume-weighted average price over the last ``timeperiod`` samples (no TA-Lib peer).

    NaN before ``timeperiod - 1`` and wherever the window's volume is 0; volume must be >= 0.
    """
    p = check_period("timeperiod", timeperiod, 1)
    arrays = _as_series_group(("price", "volume"), (price, volume))
    if (arrays[1] < 0).any():
        raise ValueError("volume must be >= 0")
    return _run(_vwap_loop, arrays, 1, p)[0]
