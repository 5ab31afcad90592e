"""O(1) step functions of the indicators: the arithmetic shared by the streaming and the batch API.

Why step functions over scalars: the batch loops (:mod:`hean.indicators.batch`) keep an indicator's state in
registers, so the loop-carried dependency is the arithmetic alone -- the same shape as TA-Lib's C loops. The
streaming updates (:mod:`hean.indicators.streaming`) load the same scalars from a symbol's state row, call the
same step and store them back. One function, two callers: streaming equals batch by construction, and both
equal TA-Lib because each step performs TA-Lib's operations in TA-Lib's order (C library 0.8, default
compatibility, unstable period 0):

* SMA: running total; add the new sample, divide, then subtract the sample that leaves (``INT_SMA``).
* EMA: seeded with the SMA of the first ``period`` samples, then ``fma(x - ema, k, ema)``, ``k = 2/(p+1)``
  (0.8 fuses the multiply-add; C 0.6 rounded twice).
* RSI: Wilder. The first output (at sample ``period``) averages the first ``period`` up/down moves
  (``sum * (1 / p)``); then ``avg = (avg * (p - 1) + move) * (1 / p)`` (0.8's reciprocal form; C 0.6
  divided);
  ``100 * (gain / (gain + loss))``, and 0 when gain + loss is 0 (a flat series reads 0, not 50 -- TA-Lib's
  value).
* MACD: slow EMA seeded over samples ``0..slow-1``; the fast EMA seeded over the *last* ``fast`` samples of
  that window (``slow-fast..slow-1``); the signal EMA seeded with the SMA of the first ``signal`` MACD values.
  First output at ``slow + signal - 2`` (33 for 12/26/9). ``fast > slow`` is swapped, as TA-Lib does.
* ATR: true range from sample 1 (sample 0 has no previous close); first ATR at sample ``period`` is the mean
  of TR[1..period]; then ``fma(atr, (p - 1) / p, tr * (1 - (p - 1) / p))`` (0.8's form). Period 1 is the
  true range itself (TA-Lib's TRANGE).
* BBANDS: middle = the SMA above; population standard deviation of the window. TA-Lib 0.8 computes it
  accurately (it tracks a two-pass ``np.std`` to ~1e-13 relative; C 0.6 used ``E[x^2] - mean^2``, which
  cancels catastrophically at BTC prices). Here: sums of ``x - K`` and ``(x - K)^2`` with the anchor ``K``
  reset to the newest sample and the sums recomputed from the window once every ``period`` samples
  (amortised O(1), no drift), and exactly 0 when the last ``period`` samples are all equal (TA-Lib's value
  on a flat window). Bands: ``middle +/- sd * nbdev``.
* VWAP (not in TA-Lib): rolling ``sum(price * volume) / sum(volume)`` over the last ``period`` samples, the
  sums recomputed from the window once every ``period`` samples; NaN while the window's volume is 0.

Every step takes ``n``, the number of samples the indicator has accepted before this one, and returns the
new state and the output (NaN before the first output). Non-finite inputs never reach a step: the callers
treat a NaN or infinite sample as missing (see :mod:`hean.indicators`).
"""

from __future__ import annotations

import math

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from hean.jit import kernel

NAN = math.nan


@intrinsic
def fma(typingctx, a, b, c):
    """``a * b + c`` rounded once (``llvm.fma.f64``): TA-Lib 0.8 fuses its EMA and ATR updates this way.

    Spelled out rather than left to ``fastmath={"contract"}``, which would also fuse the SMA, RSI and
    Bollinger arithmetic that TA-Lib does not fuse -- each step must round exactly where TA-Lib rounds.
    """
    sig = types.float64(types.float64, types.float64, types.float64)

    def codegen(context, builder, signature, args):
        dbl = ir.DoubleType()
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(dbl, [dbl, dbl, dbl]), "llvm.fma.f64")
        return builder.call(fn, args)

    return sig, codegen


@kernel(error_model="numpy")
def ema_k(period: int) -> float:
    """TA-Lib's smoothing factor ``PER_TO_K``: ``2 / (period + 1)``."""
    return 2.0 / float(period + 1)


# ---------------------------------------------------------------------------------------------------------
# SMA (ring of the last `period` samples; the caller owns the ring)
# ---------------------------------------------------------------------------------------------------------
@kernel(inline=True, error_model="numpy")
def sma_step(total, n, x, leaving, period):
    """Return (total, out): add ``x``, divide, then subtract ``leaving`` -- TA-Lib's order of operations.

    ``leaving`` is the sample that drops out of the window after this output, ``x[n - period + 1]`` (``x``
    itself for period 1; ignored while the window fills). The window storage is the caller's: the batch loop
    reads its input array, the streaming update a per-symbol ring.
    """
    total += x
    if n < period - 1:
        return total, NAN
    out = total / period
    total -= leaving
    return total, out


# ---------------------------------------------------------------------------------------------------------
# EMA (while seeding, `ema` holds the running sum)
# ---------------------------------------------------------------------------------------------------------
@kernel(inline=True, error_model="numpy")
def ema_step(ema, n, x, period, k):
    """Return (ema, out); out is NaN before sample ``period - 1``."""
    if n < period:
        ema += x
        if n == period - 1:
            ema = ema / period
            return ema, ema
        return ema, NAN
    ema = fma(x - ema, k, ema)
    return ema, ema


# ---------------------------------------------------------------------------------------------------------
# RSI (Wilder)
# ---------------------------------------------------------------------------------------------------------
@kernel(inline=True, error_model="numpy")
def _rsi_value(gain, loss):
    total = gain + loss
    if total != 0.0:
        return 100.0 * (gain / total)
    return 0.0


@kernel(inline=True, error_model="numpy")
def rsi_step(prev, gain, loss, n, x, period, inv_period):
    """Return (prev, gain, loss, out); out is NaN before sample ``period``.

    TA-Lib 0.8 averages with a reciprocal multiply: the seed is ``sum * (1 / p)`` and the smoothing
    ``(avg * (p - 1) + move) * (1 / p)``. Doing the same is bit-exact with it on the test series and keeps
    a division off the dependency chain.

    Branch-free on the direction of the move (``max`` compiles to a select): adding the zero that the
    other side receives is exact, so the sums equal TA-Lib's ``if (move < 0) loss -= move; else gain +=
    move`` bit for bit, without a mispredicted branch on every other tick of a random walk.
    """
    if n == 0:
        return x, 0.0, 0.0, NAN
    move = x - prev
    up = max(move, 0.0)
    down = max(-move, 0.0)
    if n <= period:
        gain += up
        loss += down
        if n < period:
            return x, gain, loss, NAN
        loss *= inv_period
        gain *= inv_period
        return x, gain, loss, _rsi_value(gain, loss)
    loss = (loss * (period - 1) + down) * inv_period
    gain = (gain * (period - 1) + up) * inv_period
    return x, gain, loss, _rsi_value(gain, loss)


# ---------------------------------------------------------------------------------------------------------
# MACD (fast/slow/signal EMAs; each holds its running sum while it seeds)
# ---------------------------------------------------------------------------------------------------------
@kernel(inline=True, error_model="numpy")
def macd_step(fast, slow, signal, n, x, fastp, slowp, signalp, kf, ks, kg):
    """Return (fast, slow, signal, macd, macdsignal, macdhist); outputs NaN before ``slow + signal - 2``.

    ``fastp <= slowp`` (the caller swaps them, as TA-Lib does).
    """
    if n < slowp:
        slow += x
        if n >= slowp - fastp:
            fast += x
        if n < slowp - 1:
            return fast, slow, signal, NAN, NAN, NAN
        slow = slow / slowp
        fast = fast / fastp
    else:
        slow = fma(x - slow, ks, slow)
        fast = fma(x - fast, kf, fast)
    line = fast - slow
    j = n - (slowp - 1)  # index of this MACD value
    if j < signalp:
        signal += line
        if j < signalp - 1:
            return fast, slow, signal, NAN, NAN, NAN
        signal = signal / signalp
    else:
        signal = fma(line - signal, kg, signal)
    return fast, slow, signal, line, signal, line - signal


# ---------------------------------------------------------------------------------------------------------
# ATR (Wilder)
# ---------------------------------------------------------------------------------------------------------
@kernel(inline=True, error_model="numpy")
def true_range(high, low, prev_close):
    """TA-Lib's TRANGE: the greatest of high - low, |prev_close - high|, |low - prev_close|."""
    return max(max(high - low, abs(prev_close - high)), abs(low - prev_close))


@kernel(inline=True, error_model="numpy")
def atr_step(prev_close, atr, n, high, low, close, period, keep, take):
    """Return (prev_close, atr, out); out is NaN before sample ``period``.

    ``keep = (period - 1) / period`` and ``take = 1 - keep``: TA-Lib 0.8's Wilder update is
    ``fma(atr, keep, tr * take)`` (bit-exact with it; C 0.6 computed ``(atr * (p - 1) + tr) / p``).
    """
    if n == 0:
        return close, 0.0, NAN
    tr = true_range(high, low, prev_close)
    if n <= period:
        atr += tr
        if n < period:
            return close, atr, NAN
        atr = atr / period
        return close, atr, atr
    atr = fma(atr, keep, tr * take)
    return close, atr, atr


# ---------------------------------------------------------------------------------------------------------
# Bollinger Bands (SMA middle, population standard deviation)
# ---------------------------------------------------------------------------------------------------------
@kernel(inline=True, error_model="numpy")
def _anchored_sums(ring, row, anchor):
    s = 0.0
    s2 = 0.0
    for j in range(ring.shape[1]):
        d = ring[row, j] - anchor
        s += d
        s2 += d * d
    return s, s2


@kernel(inline=True, error_model="numpy")
def bbands_step(total, anchor, s, s2, run, prev, n, x, ring, row, pos, period, inv_period, nbdevup, nbdevdn):
    """Return (total, anchor, s, s2, run, upper, middle, lower); outputs NaN before ``period - 1``.

    ``run`` counts the trailing equal samples (the window is flat when ``run >= period``). ``inv_period`` is
    ``1 / period``: the variance multiplies by it (the middle band divides, as TA-Lib's SMA does).
    """
    run = run + 1 if (n > 0 and x == prev) else 1
    ring[row, pos] = x
    total += x
    if n < period - 1:
        return total, anchor, s, s2, run, NAN, NAN, NAN
    if pos == period - 1:
        anchor = x
        s, s2 = _anchored_sums(ring, row, anchor)
    else:
        d = x - anchor
        s += d
        s2 += d * d
    middle = total / period
    var = (s2 - s * s * inv_period) * inv_period
    sd = math.sqrt(var) if (var > 0.0 and run < period) else 0.0
    oldest = pos + 1
    if oldest == period:
        oldest = 0
    old = ring[row, oldest]
    total -= old
    d = old - anchor
    s -= d
    s2 -= d * d
    return total, anchor, s, s2, run, middle + sd * nbdevup, middle, middle - sd * nbdevdn


# ---------------------------------------------------------------------------------------------------------
# rolling VWAP
# ---------------------------------------------------------------------------------------------------------
@kernel(inline=True, error_model="numpy")
def _window_sums(pv_ring, v_ring, row):
    pv = 0.0
    v = 0.0
    for j in range(pv_ring.shape[1]):
        pv += pv_ring[row, j]
        v += v_ring[row, j]
    return pv, v


@kernel(inline=True, error_model="numpy")
def vwap_step(pv_sum, v_sum, n, price, volume, pv_ring, v_ring, row, pos, period):
    """Return (pv_sum, v_sum, out); out is NaN before ``period - 1`` and while the window's volume is 0."""
    pv = price * volume
    pv_ring[row, pos] = pv
    v_ring[row, pos] = volume
    if n < period - 1:
        return pv_sum + pv, v_sum + volume, NAN
    if pos == period - 1:
        pv_sum, v_sum = _window_sums(pv_ring, v_ring, row)
    else:
        pv_sum += pv
        v_sum += volume
    out = pv_sum / v_sum if v_sum > 0.0 else NAN
    oldest = pos + 1
    if oldest == period:
        oldest = 0
    pv_sum -= pv_ring[row, oldest]
    v_sum -= v_ring[row, oldest]
    return pv_sum, v_sum, out
