"""The HDR-style histogram equals the ``hdrhistogram`` package (hdrh) on the same values."""

from __future__ import annotations

import numpy as np
import pytest
from hdrh.histogram import HdrHistogram
from numba import njit

from hean.telemetry.histogram import (
    DEFAULT_PERCENTILES,
    H_BASE,
    H_MAX,
    H_MIN,
    H_NEGATIVE,
    H_OVERFLOW,
    H_SUM,
    H_TOTAL,
    HIST_BUCKETS,
    HIST_COUNTS_LEN,
    HIST_HIGHEST,
    HIST_LEN,
    HIST_MAX_VALUE,
    check_histogram,
    hist_add,
    hist_count,
    hist_highest_equivalent,
    hist_index,
    hist_lowest_equivalent,
    hist_max,
    hist_mean,
    hist_min,
    hist_record,
    hist_record_n,
    hist_reset,
    hist_sub,
    hist_value_at_index,
    hist_value_at_percentile,
    new_histogram,
    percentiles,
    required_count,
    summary,
    supported_percentiles,
)

EDGES = [0, 1, 2, 1023, 1024, 2047, 2048, 2049, 2050, 4095, 4096, 4097, 8191, 8192, 999_999, 1_000_000]
EDGES += [1 << k for k in range(1, 34)] + [(1 << k) - 1 for k in range(2, 34)]
EDGES += [10**9, 10**10, HIST_MAX_VALUE - 1, HIST_MAX_VALUE]


@njit(cache=True)
def _record_all(counts, values):
    for v in values:
        hist_record(counts, v)


def _pair(values):
    ours = new_histogram()
    _record_all(ours, np.asarray(values, dtype=np.int64))
    theirs = HdrHistogram(1, HIST_HIGHEST, 3)
    for v in values:
        assert theirs.record_value(int(v)), v
    return ours, theirs


def test_layout_matches_hdrh():
    ref = HdrHistogram(1, HIST_HIGHEST, 3)
    assert ref.counts_len == HIST_COUNTS_LEN == 25_600
    assert ref.bucket_count == HIST_BUCKETS
    assert HIST_LEN == H_BASE + HIST_COUNTS_LEN
    # the last trackable value is >= 10 s and the next one is not trackable by the reference
    assert HIST_MAX_VALUE >= 10 * 10**9
    assert ref.record_value(HIST_MAX_VALUE) and not ref.record_value(HIST_MAX_VALUE + 1)


@pytest.mark.parametrize("value", EDGES)
def test_bucket_arithmetic_equals_hdrh(value):
    ref = HdrHistogram(1, HIST_HIGHEST, 3)
    idx = hist_index(value)
    assert idx == ref._counts_index_for(value)
    assert hist_value_at_index(idx) == ref.get_value_from_index(idx)
    assert hist_lowest_equivalent(value) == ref.get_lowest_equivalent_value(value)
    assert hist_highest_equivalent(value) == ref.get_highest_equivalent_value(value)
    assert hist_lowest_equivalent(value) <= value <= hist_highest_equivalent(value)


def test_every_index_round_trips_and_resolution_is_3_digits():
    rng = np.random.default_rng(7)
    ref = HdrHistogram(1, HIST_HIGHEST, 3)
    for idx in list(range(0, 4096)) + list(rng.integers(4096, HIST_COUNTS_LEN, 500)):
        low = hist_value_at_index(idx)
        assert low == ref.get_value_from_index(idx)
        assert hist_index(low) == idx
        width = hist_highest_equivalent(low) - low + 1
        assert width == 1 or width / low <= 1 / 1024


def test_percentiles_of_lognormal_samples_equal_hdrh():
    rng = np.random.default_rng(2024)
    values = np.minimum(rng.lognormal(8.0, 2.0, 30_000).astype(np.int64), HIST_MAX_VALUE)
    ours, theirs = _pair(values)
    for p in (0.0, 1.0, 25.0, 50.0, 75.0, 90.0, 99.0, 99.5, 99.9, 99.99, 100.0):
        assert hist_value_at_percentile(ours, p) == theirs.get_value_at_percentile(p), p
    assert hist_count(ours) == theirs.get_total_count() == len(values)
    assert hist_max(ours) == values.max() and hist_min(ours) == values.min()
    assert theirs.values_are_equivalent(hist_max(ours), theirs.get_max_value())
    assert hist_mean(ours) == pytest.approx(values.mean())
    # the bucket counters are hdrh's counts, slot for slot
    assert np.array_equal(ours[H_BASE:], np.asarray(theirs.counts[:HIST_COUNTS_LEN], dtype=np.int64))


@pytest.mark.parametrize("values", [[5], [1, 1, 1], [0, 10**9], [2047, 2048, 4095, 4096, 4097], EDGES])
def test_percentiles_small_sets_equal_hdrh(values):
    ours, theirs = _pair(values)
    for p in (0.0, 10.0, 33.3, 50.0, 66.7, 90.0, 99.0, 100.0):
        assert hist_value_at_percentile(ours, p) == theirs.get_value_at_percentile(p), p


def test_empty_histogram():
    h = new_histogram()
    assert hist_count(h) == 0 and hist_max(h) == 0 and hist_min(h) == 0 and hist_mean(h) == 0.0
    assert hist_value_at_percentile(h, 50.0) == 0
    assert summary(h)["percentiles_ns"] == {}


def test_overflow_and_negative_values_are_clamped_and_counted():
    h = new_histogram()
    hist_record(h, 30 * 10**9)
    hist_record(h, -5)
    hist_record(h, 100)
    assert h[H_OVERFLOW] == 1 and h[H_NEGATIVE] == 1 and h[H_TOTAL] == 3
    assert h[H_BASE + hist_index(HIST_MAX_VALUE)] == 1 and h[H_BASE + 0] == 1
    assert hist_max(h) == 30 * 10**9  # the true maximum survives the clamp
    assert hist_min(h) == 0
    assert hist_value_at_percentile(h, 100.0) == HIST_MAX_VALUE
    assert h[H_SUM] == 30 * 10**9 + 100


def test_record_n_and_reset():
    h = new_histogram()
    hist_record_n(h, 1500, 10)
    assert h[H_TOTAL] == 10 and h[H_BASE + hist_index(1500)] == 10 and h[H_SUM] == 15_000
    hist_reset(h)
    assert not h.any()


def test_add_merges():
    rng = np.random.default_rng(3)
    a_vals = rng.integers(1, 10**6, 2000)
    b_vals = rng.integers(10**5, 10**8, 1500)
    a, _ = _pair(a_vals)
    b, _ = _pair(b_vals)
    both, ref = _pair(np.concatenate([a_vals, b_vals]))
    hist_add(a, b)
    assert np.array_equal(a, both)
    assert hist_value_at_percentile(a, 99.0) == ref.get_value_at_percentile(99.0)


def test_interval_view_is_current_minus_previous():
    h = new_histogram()
    _record_all(h, np.arange(1000, 2000, dtype=np.int64))
    prev = h.copy()
    _record_all(h, np.array([5000, 6000, 7001], dtype=np.int64))
    cur = h.copy()
    iv = new_histogram()
    hist_sub(iv, cur, prev)
    expected, _ = _pair([5000, 6000, 7001])
    assert np.array_equal(iv[H_BASE:], expected[H_BASE:])
    assert iv[H_TOTAL] == 3 and iv[H_SUM] == 18_001
    assert iv[H_MAX] == 7001  # a new maximum inside the interval is exact
    assert iv[H_MIN] == hist_value_at_index(hist_index(5000))  # not a new minimum: bucket boundary
    # an interval without a new max reports its top bucket's upper bound, capped by the true max
    _record_all(h, np.array([1500], dtype=np.int64))
    hist_sub(iv, h.copy(), cur)
    assert iv[H_TOTAL] == 1 and iv[H_MAX] == hist_highest_equivalent(1500) and iv[H_MIN] == 1500
    # an empty interval
    hist_sub(iv, cur, cur)
    assert not iv.any()


def test_interval_after_reset_clamps_at_zero():
    h = new_histogram()
    _record_all(h, np.array([10, 20, 30], dtype=np.int64))
    prev = h.copy()
    hist_reset(h)
    hist_record(h, 40)
    iv = new_histogram()
    hist_sub(iv, h, prev)
    assert (iv >= 0).all() and iv[H_BASE + hist_index(40)] == 1


@pytest.mark.parametrize(
    ("pct", "needed"),
    [(0.0, 1), (50.0, 2), (90.0, 10), (99.0, 100), (99.9, 1000), (99.99, 10_000), (100.0, 1)],
)
def test_required_count(pct, needed):
    assert required_count(pct) == needed


@pytest.mark.parametrize(
    ("count", "shown"),
    [
        (0, []),
        (1, []),
        (2, [50.0]),
        (99, [50.0, 90.0]),
        (100, [50.0, 90.0, 99.0]),
        (9_999, [50.0, 90.0, 99.0, 99.9]),
        (10_000, list(DEFAULT_PERCENTILES)),
    ],
)
def test_supported_percentiles(count, shown):
    assert supported_percentiles(count) == shown


def test_percentiles_helper_and_summary():
    ours, theirs = _pair(np.arange(1, 501, dtype=np.int64) * 1000)
    assert percentiles(ours, [50, 99.9]) == {
        50.0: theirs.get_value_at_percentile(50),
        99.9: theirs.get_value_at_percentile(99.9),
    }
    s = summary(ours)
    assert s["count"] == 500 and s["max_ns"] == 500_000 and s["min_ns"] == 1000
    assert list(s["percentiles_ns"]) == [50.0, 90.0, 99.0]  # 500 samples: no p99.9


@pytest.mark.parametrize(
    "bad", [np.zeros(HIST_LEN, np.int32), np.zeros(10, np.int64), np.zeros((2, HIST_LEN), np.int64), [0] * 3]
)
def test_check_histogram_rejects_bad_arrays(bad):
    with pytest.raises(ValueError, match="expected an int64 array"):
        check_histogram(bad, "stage book service")
    with pytest.raises(ValueError, match="outside"):
        required_count(101.0)


def test_arrays_that_are_not_histograms_read_as_empty_and_are_never_written():
    short = np.zeros(10, np.int64)
    for fn in (hist_count, hist_max, hist_min):
        assert fn(short) == 0
    assert hist_mean(short) == 0.0 and hist_value_at_percentile(short, 50.0) == 0
    assert hist_count(np.zeros(0, np.int64)) == 0
    hist_record(short, 5)
    hist_record_n(short, 5, 3)
    h = new_histogram()
    hist_add(short, h)
    hist_sub(short, h, h)
    assert not short.any()
