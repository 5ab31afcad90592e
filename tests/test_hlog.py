"""``.hlog`` output decodes with the ``hdrhistogram`` package (hdrh), interval by interval."""

from __future__ import annotations

import numpy as np
import pytest
from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader

from hean.bench.harness import BenchResult, Interval, RateResult
from hean.bench.hlog import HLOG_VERSION, encode_histogram, write_hlog
from hean.bench.report import write_bench_hlog
from hean.telemetry.histogram import (
    H_BASE,
    HIST_COUNTS_LEN,
    HIST_HIGHEST,
    HIST_MAX_VALUE,
    hist_record,
    hist_value_at_percentile,
    new_histogram,
)


def _hist(values) -> np.ndarray:
    h = new_histogram()
    for v in values:
        hist_record(h, int(v))
    return h


def _counts(decoded: HdrHistogram) -> np.ndarray:
    c = np.zeros(HIST_COUNTS_LEN, dtype=np.int64)
    for i in range(decoded.counts_len):
        c[i] = decoded.get_count_at_index(i)
    return c


def _read_all(path) -> list[HdrHistogram]:
    reader = HistogramLogReader(str(path), HdrHistogram(1, HIST_HIGHEST, 3))
    out = []
    while (h := reader.get_next_interval_histogram()) is not None:
        out.append(h)
    return out


RNG = np.random.default_rng(11)
CASES = {
    "lognormal": RNG.lognormal(8.0, 2.0, 20_000).astype(np.int64),
    "single": [7],
    "zeros_and_edges": [0, 0, 1, 2047, 2048, 4095, 4096, 10**10],
    "top_bucket": [HIST_MAX_VALUE, 3 * 10**10, 5],
    "empty": [],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_encoded_histogram_decodes_to_the_same_counts(case):
    h = _hist(CASES[case])
    decoded = HdrHistogram.decode(encode_histogram(h))
    assert decoded.get_total_count() == len(CASES[case])
    assert np.array_equal(_counts(decoded), h[H_BASE:])
    for p in (50.0, 90.0, 99.0, 99.9, 100.0):
        assert decoded.get_value_at_percentile(p) == hist_value_at_percentile(h, p), p


def test_write_hlog_round_trip_with_tags_and_times(tmp_path):
    a, b = _hist(CASES["lognormal"]), _hist([100, 200, 300])
    path = tmp_path / "x.hlog"
    n = write_hlog(path, [("rate_1000", 0.0, 1.0, a), ("rate_1000", 1.0, 0.5, b), (None, 2.0, 1.0, b)], 1.7e9)
    assert n == 3
    text = path.read_text()
    assert text.startswith(f"#[Histogram log format version {HLOG_VERSION}]\n")
    assert "#[StartTime: 1700000000.000 (seconds since epoch)" in text
    hs = _read_all(path)
    assert [h.get_tag() for h in hs] == ["rate_1000", "rate_1000", None]
    assert [h.get_total_count() for h in hs] == [20_000, 3, 3]
    assert [h.get_start_time_stamp() for h in hs] == [1.7e12, 1.7e12 + 1000.0, 1.7e12 + 2000.0]
    assert hs[1].get_end_time_stamp() == 1.7e12 + 1500.0
    assert np.array_equal(_counts(hs[0]), a[H_BASE:])


@pytest.mark.parametrize("tag", ["a,b", "has space", ""])
def test_bad_tags_are_rejected(tmp_path, tag):
    with pytest.raises(ValueError, match="hlog tag"):
        write_hlog(tmp_path / "bad.hlog", [(tag, 0.0, 1.0, _hist([1]))], 0.0)


def test_bench_result_hlog_has_every_interval_of_every_rate(tmp_path):
    i1, i2, i3 = _hist([1000] * 10), _hist([2000] * 20), _hist([500] * 5)
    r1 = RateResult(1000, 30, 30, 30, 0, 0, 1_000_000_000, _hist([1000] * 10 + [2000] * 20))
    r1.intervals = [Interval(0.0, 0.5, i1), Interval(0.5, 0.5, i2)]
    r2 = RateResult(0, 5, 5, 5, 0, 0, 2_000_000, i3)  # no intervals: the whole run is one
    res = BenchResult("demo", [r1, r2], start_unix=1.7e9)
    path = tmp_path / "demo.hlog"
    assert write_bench_hlog(res, path) == 3
    hs = _read_all(path)
    assert [h.get_tag() for h in hs] == ["rate_1000", "rate_1000", "rate_max"]
    assert [h.get_total_count() for h in hs] == [10, 20, 5]
    assert hs[2].get_start_time_stamp() == pytest.approx(1.7e12 + 1000.0)
    merged = HdrHistogram(1, HIST_HIGHEST, 3)
    for h in hs[:2]:
        merged.add(h)
    assert merged.get_value_at_percentile(99.0) == hist_value_at_percentile(r1.hist, 99.0)
