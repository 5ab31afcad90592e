"""HDR-style log-linear latency histogram: numba functions over one plain ``int64`` numpy array.

Why this shape: a stage records one latency per event on its hot path, so recording must be O(1), allocate
nothing and touch one or two cache lines; and a histogram must live in shared memory so ``hean top`` can read
it from another process. A flat ``int64`` array satisfies both, and the bucket arithmetic is HdrHistogram's
(lowest trackable value 1 ns, 3 significant digits), so every value, bucket boundary and percentile equals
what the ``hdrhistogram`` package (``hdrh.histogram.HdrHistogram(1, 10_000_000_000, 3)``) computes for the
same inputs -- the tests check exactly that.

Bucket arithmetic (HdrHistogram, unit magnitude 0, 3 significant digits)::

    sub-bucket count 2048 (= 2**ceil(log2(2 * 10**3))), half count 1024
    bucket b covers [1024 << b, 2048 << b) in steps of 2**b (bucket 0 covers [0, 2048) in steps of 1)
    bucket(v)    = 64 - clz(v | 2047) - 11
    sub(v)       = v >> bucket(v)
    index(v)     = ((bucket(v) + 1) << 10) + sub(v) - 1024

With 24 buckets the histogram tracks 0 ns .. :data:`HIST_MAX_VALUE` = 17,179,869,183 ns (17.2 s) with a
relative error below 1/1024 (better than 3 significant digits); the HdrHistogram constructor call that
gives the same layout is ``HdrHistogram(1, HIST_HIGHEST, 3)`` with :data:`HIST_HIGHEST` = 10 s.

Array layout (``HIST_LEN`` int64 slots; a 2-D ``int64[k, HIST_LEN]`` array holds k histograms):

=========  =====  ==========================================================================================
slot       index  meaning
=========  =====  ==========================================================================================
H_TOTAL    0      number of recorded values
H_MIN      1      smallest recorded value (after clamping negatives to 0); meaningless while H_TOTAL == 0
H_MAX      2      largest recorded value, *unclamped* (a 30 s stall reads 30 s here although it is counted
                  in the top bucket)
H_SUM      3      sum of the recorded values (unclamped), for the mean
H_OVERFLOW 4      values above HIST_MAX_VALUE (counted in the top bucket)
H_NEGATIVE 5      negative values (clock went backwards; counted as 0)
6, 7       -      reserved, zero
H_BASE..   8..    the 25,600 bucket counters; counter ``i`` is HdrHistogram's counts index ``i - H_BASE``
=========  =====  ==========================================================================================

One writer per histogram (the stage that owns it) stores through :func:`hean.atomics.store_relaxed`, so the
stores are real memory stores even inside a busy-poll loop the compiler could otherwise keep in registers.
Readers copy the array (``counts.copy()``) and compute on the copy; the percentile functions count the
bucket counters themselves rather than trusting H_TOTAL, so a copy taken mid-record is still
self-consistent. An *interval* view is ``hist_sub(out, current_copy, previous_copy)``.

Which percentiles a sample count supports (:func:`supported_percentiles`): percentile ``p < 100`` is shown
only when ``count >= ceil(100 / (100 - p))`` -- at least one sample is expected at or above it. So p50 needs
2 samples, p90 10, p99 100, p99.9 1,000, p99.99 10,000; the maximum needs 1.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from numba.cpython.unsafe.numbers import leading_zeros

from hean.atomics import store_relaxed
from hean.jit import kernel

__all__ = [
    "DEFAULT_PERCENTILES",
    "HIST_BUCKETS",
    "HIST_COUNTS_LEN",
    "HIST_HIGHEST",
    "HIST_LEN",
    "HIST_LOWEST",
    "HIST_MAX_VALUE",
    "HIST_SIG_FIGS",
    "H_BASE",
    "H_MAX",
    "H_MIN",
    "H_NEGATIVE",
    "H_OVERFLOW",
    "H_SUM",
    "H_TOTAL",
    "check_histogram",
    "hist_add",
    "hist_count",
    "hist_highest_equivalent",
    "hist_index",
    "hist_lowest_equivalent",
    "hist_max",
    "hist_mean",
    "hist_min",
    "hist_record",
    "hist_record_n",
    "hist_reset",
    "hist_sub",
    "hist_value_at_index",
    "hist_value_at_percentile",
    "new_histogram",
    "percentiles",
    "required_count",
    "summary",
    "supported_percentiles",
]

# --- HdrHistogram parameters (lowest trackable 1, 3 significant digits) ----------------------------------
HIST_LOWEST = 1
HIST_SIG_FIGS = 3
HIST_HIGHEST = 10_000_000_000  # 10 s: the highest_trackable_value an equivalent HdrHistogram is built with
_SUB_BUCKET_COUNT = 2048
_SUB_BUCKET_HALF_COUNT = 1024
_SUB_BUCKET_HALF_COUNT_MAGNITUDE = 10
_SUB_BUCKET_MASK = _SUB_BUCKET_COUNT - 1
HIST_BUCKETS = 24  # smallest n with 2048 << (n - 1) > HIST_HIGHEST
HIST_COUNTS_LEN = (HIST_BUCKETS + 1) * _SUB_BUCKET_HALF_COUNT  # 25,600 counters
HIST_MAX_VALUE = (_SUB_BUCKET_COUNT << (HIST_BUCKETS - 1)) - 1  # 17,179,869,183 ns: last trackable value

# --- array layout -------------------------------------------------------------------------------------------
H_TOTAL = 0
H_MIN = 1
H_MAX = 2
H_SUM = 3
H_OVERFLOW = 4
H_NEGATIVE = 5
H_BASE = 8  # first bucket counter (header padded to one 64-byte cache line)
HIST_LEN = H_BASE + HIST_COUNTS_LEN

DEFAULT_PERCENTILES: tuple[float, ...] = (50.0, 90.0, 99.0, 99.9, 99.99)


# ---------------------------------------------------------------------------------------------------------
# bucket arithmetic
# ---------------------------------------------------------------------------------------------------------
@kernel(inline=True)
def _bucket_of(v: int) -> int:
    top = 64 - leading_zeros(np.int64(v) | np.int64(_SUB_BUCKET_MASK))
    return top - (_SUB_BUCKET_HALF_COUNT_MAGNITUDE + 1)


@kernel
def hist_index(value: int) -> int:
    """HdrHistogram counts index of ``value`` (clamped to [0, HIST_MAX_VALUE]); add H_BASE for the slot."""
    v = np.int64(value)
    if v < 0:
        v = np.int64(0)
    elif v > HIST_MAX_VALUE:
        v = np.int64(HIST_MAX_VALUE)
    b = _bucket_of(v)
    sub = v >> b
    return ((b + 1) << _SUB_BUCKET_HALF_COUNT_MAGNITUDE) + sub - _SUB_BUCKET_HALF_COUNT


@kernel
def hist_value_at_index(index: int) -> int:
    """Lowest value counted by HdrHistogram counts index ``index`` (the bucket's lower boundary)."""
    b = (np.int64(index) >> _SUB_BUCKET_HALF_COUNT_MAGNITUDE) - 1
    sub = (np.int64(index) & (_SUB_BUCKET_HALF_COUNT - 1)) + _SUB_BUCKET_HALF_COUNT
    if b < 0:
        sub -= _SUB_BUCKET_HALF_COUNT
        b = np.int64(0)
    return sub << b


@kernel
def hist_lowest_equivalent(value: int) -> int:
    """Smallest value that shares ``value``'s bucket."""
    v = np.int64(value)
    b = _bucket_of(v)
    return (v >> b) << b


@kernel
def hist_highest_equivalent(value: int) -> int:
    """Largest value that shares ``value``'s bucket (what HdrHistogram reports for a percentile)."""
    v = np.int64(value)
    b = _bucket_of(v)
    return ((v >> b) << b) + (np.int64(1) << b) - 1


# ---------------------------------------------------------------------------------------------------------
# writer side (one writer per histogram)
# ---------------------------------------------------------------------------------------------------------
@kernel
def hist_record_n(counts, value: int, n: int) -> None:
    """Record ``value`` ``n`` times. O(1), no allocation; see the module docstring for clamping.

    An array shorter than HIST_LEN is left alone (no exceptions on the hot path; never write out of
    bounds into shared memory): validate arrays once with :func:`check_histogram` when wiring a stage.
    """
    if counts.shape[0] < HIST_LEN:
        return
    v = np.int64(value)
    if v < 0:
        store_relaxed(counts, H_NEGATIVE, counts[H_NEGATIVE] + n)
        v = np.int64(0)
    clamped = v
    if v > HIST_MAX_VALUE:
        store_relaxed(counts, H_OVERFLOW, counts[H_OVERFLOW] + n)
        clamped = np.int64(HIST_MAX_VALUE)
    b = _bucket_of(clamped)
    i = H_BASE + ((b + 1) << _SUB_BUCKET_HALF_COUNT_MAGNITUDE) + (clamped >> b) - _SUB_BUCKET_HALF_COUNT
    store_relaxed(counts, i, counts[i] + n)
    total = counts[H_TOTAL]
    if total == 0 or v < counts[H_MIN]:
        store_relaxed(counts, H_MIN, v)
    if v > counts[H_MAX]:
        store_relaxed(counts, H_MAX, v)
    store_relaxed(counts, H_SUM, counts[H_SUM] + v * n)
    store_relaxed(counts, H_TOTAL, total + n)


@kernel
def hist_record(counts, value: int) -> None:
    """Record one value (ns). O(1), no allocation. Only the histogram's owner may call it."""
    hist_record_n(counts, value, 1)


@kernel
def hist_reset(counts) -> None:
    """Zero the histogram (the owner only, e.g. after a warm-up)."""
    for i in range(counts.shape[0]):
        store_relaxed(counts, i, 0)


# ---------------------------------------------------------------------------------------------------------
# reader side (work on copies)
# ---------------------------------------------------------------------------------------------------------
@kernel
def hist_count(counts) -> int:
    """Number of recorded values (H_TOTAL); 0 for an array that is not a histogram (too short)."""
    if counts.shape[0] < HIST_LEN:
        return 0
    return counts[H_TOTAL]


@kernel
def hist_max(counts) -> int:
    """Largest recorded value (exact, unclamped); 0 when empty."""
    if counts.shape[0] < HIST_LEN:
        return 0
    return counts[H_MAX] if counts[H_TOTAL] > 0 else 0


@kernel
def hist_min(counts) -> int:
    """Smallest recorded value (exact); 0 when empty."""
    if counts.shape[0] < HIST_LEN:
        return 0
    return counts[H_MIN] if counts[H_TOTAL] > 0 else 0


@kernel
def hist_mean(counts) -> float:
    """Mean of the recorded values (exact sum / count); 0.0 when empty."""
    if counts.shape[0] < HIST_LEN or counts[H_TOTAL] <= 0:
        return 0.0
    return counts[H_SUM] / counts[H_TOTAL]


@kernel
def hist_value_at_percentile(counts, pct: float) -> int:
    """HdrHistogram's ``get_value_at_percentile``: highest equivalent value of the bucket holding the
    ``ceil``-rounded target rank (lowest equivalent value for pct == 0); 0 when empty.

    The total is the sum of the bucket counters (not H_TOTAL) so a torn copy stays self-consistent.
    An array that is not a histogram (too short) reads as empty.
    """
    if counts.shape[0] < HIST_LEN:
        return 0
    total = np.int64(0)
    for i in range(H_BASE, H_BASE + HIST_COUNTS_LEN):
        total += counts[i]
    if total <= 0:
        return 0
    p = min(pct, 100.0)
    target = np.int64(p * total / 100.0 + 0.5)
    if target < 1:
        target = np.int64(1)
    run = np.int64(0)
    for i in range(HIST_COUNTS_LEN):
        run += counts[H_BASE + i]
        if run >= target:
            low = hist_value_at_index(i)
            if p > 0.0:
                return hist_highest_equivalent(low)
            return low
    return 0


@kernel
def hist_add(dst, src) -> None:
    """``dst += src`` (merge): counters and sums add, min/max combine. No-op unless both are histograms."""
    if dst.shape[0] < HIST_LEN or src.shape[0] < HIST_LEN:
        return
    if src[H_TOTAL] > 0:
        if dst[H_TOTAL] == 0 or src[H_MIN] < dst[H_MIN]:
            dst[H_MIN] = src[H_MIN]
        if src[H_MAX] > dst[H_MAX]:
            dst[H_MAX] = src[H_MAX]
    for i in (H_TOTAL, H_SUM, H_OVERFLOW, H_NEGATIVE):
        dst[i] += src[i]
    for i in range(H_BASE, H_BASE + HIST_COUNTS_LEN):
        dst[i] += src[i]


@kernel
def hist_sub(dst, cur, prev) -> None:
    """``dst = cur - prev``: the values recorded between two copies of one histogram (an interval view).

    Counters that went down (the owner reset the histogram in between) clamp at 0. Min and max are exact
    when the interval set a new extreme, else the bucket boundaries of the lowest / highest non-empty
    bucket (bounded by the cumulative extremes). No-op unless all three are histograms.
    """
    if dst.shape[0] < HIST_LEN or cur.shape[0] < HIST_LEN or prev.shape[0] < HIST_LEN:
        return
    for i in range(HIST_LEN):
        d = cur[i] - prev[i]
        dst[i] = d if d > 0 else 0
    lo = np.int64(-1)
    hi = np.int64(-1)
    for i in range(HIST_COUNTS_LEN):
        if dst[H_BASE + i] > 0:
            if lo < 0:
                lo = i
            hi = i
    if lo < 0:
        dst[H_MIN] = 0
        dst[H_MAX] = 0
        return
    if prev[H_TOTAL] == 0 or cur[H_MAX] > prev[H_MAX]:
        dst[H_MAX] = cur[H_MAX]
    else:
        dst[H_MAX] = min(hist_highest_equivalent(hist_value_at_index(hi)), cur[H_MAX])
    if prev[H_TOTAL] == 0 or cur[H_MIN] < prev[H_MIN]:
        dst[H_MIN] = cur[H_MIN]
    else:
        dst[H_MIN] = max(hist_value_at_index(lo), cur[H_MIN])


# ---------------------------------------------------------------------------------------------------------
# Python helpers
# ---------------------------------------------------------------------------------------------------------
def new_histogram(k: int | None = None) -> np.ndarray:
    """A zeroed histogram (``int64[HIST_LEN]``), or ``k`` of them (``int64[k, HIST_LEN]``)."""
    shape = (HIST_LEN,) if k is None else (k, HIST_LEN)
    return np.zeros(shape, dtype=np.int64)


def check_histogram(counts: np.ndarray, where: str = "histogram") -> np.ndarray:
    """``counts`` if it is a 1-D int64 array of HIST_LEN slots, else a ValueError naming ``where``."""
    if not isinstance(counts, np.ndarray) or counts.dtype != np.int64 or counts.shape != (HIST_LEN,):
        got = f"{type(counts).__name__} {getattr(counts, 'dtype', '?')} {getattr(counts, 'shape', '?')}"
        raise ValueError(f"{where}: expected an int64 array of shape ({HIST_LEN},), got {got}")
    return counts


def required_count(pct: float) -> int:
    """Samples needed before percentile ``pct`` is shown: ``ceil(100 / (100 - pct))``; 1 for the max."""
    if not 0.0 <= pct <= 100.0:
        raise ValueError(f"percentile {pct!r} outside [0, 100]")
    if pct >= 100.0:
        return 1
    # round first: 100 / (100 - 99.99) is 9999.99999999488 in binary floating point
    return max(1, math.ceil(round(100.0 / (100.0 - pct), 6)))


def supported_percentiles(count: int, pcts: Iterable[float] = DEFAULT_PERCENTILES) -> list[float]:
    """The subset of ``pcts`` that ``count`` samples support (rule: :func:`required_count`)."""
    return [p for p in pcts if count >= required_count(p)]


def percentiles(
    counts: np.ndarray, pcts: Iterable[float] = DEFAULT_PERCENTILES, only_supported: bool = False
) -> dict[float, int]:
    """``{pct: value_ns}`` for each requested percentile (HdrHistogram semantics).

    ``only_supported=True`` drops the percentiles the sample count cannot support.
    """
    check_histogram(counts)
    pcts = list(pcts)
    if only_supported:
        pcts = supported_percentiles(int(counts[H_BASE:].sum()), pcts)
    return {float(p): int(hist_value_at_percentile(counts, float(p))) for p in pcts}


def summary(counts: np.ndarray, pcts: Iterable[float] = DEFAULT_PERCENTILES) -> dict:
    """Count, min, mean, max, overflow and the *supported* percentiles, as plain Python numbers."""
    check_histogram(counts)
    n = int(counts[H_BASE:].sum())
    return {
        "count": n,
        "min_ns": int(hist_min(counts)),
        "mean_ns": float(hist_mean(counts)),
        "max_ns": int(hist_max(counts)),
        "overflow": int(counts[H_OVERFLOW]),
        "negative": int(counts[H_NEGATIVE]),
        "percentiles_ns": percentiles(counts, pcts, only_supported=True),
    }
