"""``.hlog`` output decodes with the ``hdrhistogram`` package (hdrh), interval by interval: the benchmarks' logs
and the run's interval recorder (:class:`hean.telemetry.intervals.LatencyIntervals`)."""

from __future__ import annotations

import numpy as np
import pytest
from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader

from hean.bench.harness import BenchResult, Interval, RateResult
from hean.bench.report import write_bench_hlog
from hean.telemetry.histogram import (
    H_BASE,
    HIST_COUNTS_LEN,
    HIST_HIGHEST,
    HIST_MAX_VALUE,
    hist_highest_equivalent,
    hist_lowest_equivalent,
    hist_max,
    hist_record,
    hist_value_at_percentile,
    new_histogram,
)
from hean.telemetry.hlog import HLOG_VERSION, _varint, _varints, encode_histogram, write_hlog
from hean.telemetry.intervals import LatencyIntervals


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


# --- the run's interval recorder (hean.telemetry.intervals) ---------------------------------------------------
T0 = 1.7e9
# per case: (values recorded before each add after the first, per name); [] = nothing in that interval
INTERVAL_CASES = {
    "three_busy": {
        "tick_to_trade": [RNG.lognormal(7.0, 0.6, 5_000).astype(np.int64), [900, 1_100, 5_000], [10**9, 3]],
        "risk.age.states-risk": [[10] * 50, [20_000] * 7, [40] * 200],
    },
    "idle_middle": {
        "tick_to_trade": [[500] * 10, [], [700] * 10],
        "book.service": [[], [], []],  # never records: a log with only its headers
    },
    "tail_then_calm": {
        "tick_to_trade": [[1_000] * 99 + [2 * 10**9], [1_000] * 100, [1_200] * 100],
    },
}
TIMES = [T0, T0 + 1.0, T0 + 2.5, T0 + 3.25]  # the baseline, then three adds


def _equivalent(a: int, b: int) -> bool:
    """Two values HdrHistogram counts in the same bucket."""
    return hist_lowest_equivalent(a) == hist_lowest_equivalent(b) and hist_highest_equivalent(a) == (
        hist_highest_equivalent(b)
    )


@pytest.mark.parametrize("case", sorted(INTERVAL_CASES))
def test_interval_logs_hold_each_interval_of_each_histogram(tmp_path, case):
    batches = INTERVAL_CASES[case]
    live = {name: new_histogram() for name in batches}  # what the stages write, cumulative
    rec = LatencyIntervals()
    rec.add(TIMES[0], live)
    for k, t in enumerate(TIMES[1:]):
        for name, h in live.items():
            for v in batches[name][k]:
                hist_record(h, int(v))
        rec.add(t, live)
    paths = rec.write(tmp_path / "run")
    assert paths == [tmp_path / "run" / f"{name}.hlog" for name in batches]
    for name, per_interval in batches.items():
        text = (tmp_path / "run" / f"{name}.hlog").read_text()
        assert text.startswith(f"#[Histogram log format version {HLOG_VERSION}]\n") and "Tag=" not in text
        assert f"#[StartTime: {T0:.3f} (seconds since epoch)" in text
        hs = _read_all(tmp_path / "run" / f"{name}.hlog")
        busy = [k for k, vals in enumerate(per_interval) if len(vals)]  # empty intervals are left out
        assert len(hs) == len(busy) == rec.interval_count(name)
        merged = HdrHistogram(1, HIST_HIGHEST, 3)
        for h, k in zip(hs, busy, strict=True):
            want = _hist(per_interval[k])  # the interval recorded on its own
            assert h.get_total_count() == len(per_interval[k])
            assert h.get_start_time_stamp() == pytest.approx(TIMES[k] * 1000.0)
            assert h.get_end_time_stamp() == pytest.approx(TIMES[k + 1] * 1000.0)
            for p in (50.0, 99.0):
                assert _equivalent(h.get_value_at_percentile(p), hist_value_at_percentile(want, p)), (name, k, p)
            assert _equivalent(h.get_max_value(), hist_max(want)), (name, k)
            merged.add(h)
        assert np.array_equal(_counts(merged), live[name][H_BASE:])  # the intervals add up to the whole run


@pytest.mark.parametrize("case", list(INTERVAL_CASES))
def test_flushing_as_the_run_goes_writes_the_same_logs_and_lets_go_of_the_intervals(tmp_path, case):
    batches = INTERVAL_CASES[case]
    live = {name: new_histogram() for name in batches}
    whole, streamed = LatencyIntervals(start_unix=TIMES[0]), LatencyIntervals(start_unix=TIMES[0])
    for k, t in enumerate(TIMES[1:]):
        for name, h in live.items():
            for v in batches[name][k]:
                hist_record(h, int(v))
        whole.add(t, live)
        streamed.add(t, live)
        streamed.flush(tmp_path / "streamed")  # every snapshot: the most often a caller may flush
        assert all(streamed.interval_count(n) == 0 for n in batches)  # nothing held once on disk
    whole.write(tmp_path / "whole")
    for name in batches:
        assert (tmp_path / "streamed" / f"{name}.hlog").read_text() == (tmp_path / "whole" / f"{name}.hlog").read_text()
    with pytest.raises(ValueError, match="after flush"):
        streamed.write(tmp_path / "again")


def test_an_interval_line_carries_the_exact_maximum(tmp_path):
    live = new_histogram()
    rec = LatencyIntervals(start_unix=T0)  # the first add closes the interval from the run's start
    hist_record(live, 123_456_789)
    rec.add(T0 + 1.0, {"tick_to_trade": live})
    (path,) = rec.write(tmp_path)
    line = path.read_text().splitlines()[-1]
    assert line.split(",")[:3] == ["0.000", "1.000", "123.457"]  # start s, length s, max ms (exact: not a bucket)


def test_values_before_the_first_snapshot_are_counted_and_said(tmp_path):
    live = _hist([5, 6, 7])
    rec = LatencyIntervals()
    rec.add(T0, {"tick_to_trade": live})  # the baseline
    hist_record(live, 8)
    rec.add(T0 + 1.0, {"tick_to_trade": live})
    (path,) = rec.write(tmp_path)
    assert "#3 value(s) recorded before the first snapshot" in path.read_text()
    assert [h.get_total_count() for h in _read_all(path)] == [1]


def test_a_late_name_and_a_clock_stepping_back(tmp_path):
    a, b = _hist([1]), _hist([2, 3])
    rec = LatencyIntervals()
    rec.add(T0, {"tick_to_trade": a})
    rec.add(T0 + 1.0, {"tick_to_trade": a, "router.service": b})  # b first seen: empty at the snapshot before
    hist_record(a, 4)
    rec.add(T0 + 0.5, {"tick_to_trade": a})  # the wall clock stepped back: a zero-length interval
    assert rec.names == ["tick_to_trade", "router.service"]
    p_t2t, p_router = rec.write(tmp_path)
    (h,) = _read_all(p_t2t)
    assert h.get_total_count() == 1 and h.get_start_time_stamp() == h.get_end_time_stamp() == (T0 + 1.0) * 1000
    (h,) = _read_all(p_router)
    assert h.get_total_count() == 2 and h.get_start_time_stamp() == T0 * 1000


@pytest.mark.parametrize("name", ["a/b", "has space", "", "x,y", "../up", "tick\tto", "µs", 5, None])
def test_bad_histogram_names_are_refused_before_anything_is_recorded(name):
    rec = LatencyIntervals()
    with pytest.raises(ValueError, match="histogram name"):
        rec.add(T0, {"tick_to_trade": new_histogram(), name: new_histogram()})
    assert rec.names == [] and rec.start_unix is None


@pytest.mark.parametrize(
    ("now", "hist", "match"),
    [
        (float("nan"), new_histogram(), "now_unix"),
        ("1.7e9", new_histogram(), "now_unix"),
        (T0, np.zeros(10, np.int64), "expected an int64 array"),
        (T0, new_histogram().astype(np.int32), "expected an int64 array"),
    ],
)
def test_bad_snapshots_are_refused(now, hist, match):
    with pytest.raises(ValueError, match=match):
        LatencyIntervals().add(now, {"tick_to_trade": hist})


def test_memory_per_interval_is_its_encoded_line_not_the_array():
    live = new_histogram()
    rec = LatencyIntervals()
    rec.add(T0, {"tick_to_trade": live})
    base = rec.bytes_held()
    assert base == 3 * new_histogram().nbytes  # the previous copy and two scratch arrays
    for k in range(20):
        for v in RNG.lognormal(7.0, 0.6, 10_000).astype(np.int64):
            hist_record(live, int(v))
        rec.add(T0 + 1.0 + k, {"tick_to_trade": live})
        rec.add(T0 + 1.5 + k, {"tick_to_trade": live})  # empty: costs nothing
    assert rec.interval_count("tick_to_trade") == 20
    per_interval = (rec.bytes_held() - base) / 20
    assert per_interval < 5_000 < new_histogram().nbytes / 40, per_interval  # ~2 KB for 10,000 values


def test_write_with_no_snapshot_writes_nothing(tmp_path):
    assert LatencyIntervals().write(tmp_path / "none") == [] and not (tmp_path / "none").exists()


VARINT_EDGES = [0, 1, -1, 63, 64, -64, -65, 2**31, -(2**31), 2**49 - 1, 2**49, 2**56 - 1, 2**56, 2**63 - 1, -(2**63)]


def test_vectorized_varints_match_the_reference_encoder():
    values = np.array(VARINT_EDGES + list(RNG.integers(-(2**63), 2**63 - 1, 2_000, dtype=np.int64)), np.int64)
    want = bytearray()
    for v in values:
        _varint(int(v), want)
    assert _varints(values) == bytes(want)
    assert _varints(np.zeros(0, np.int64)) == b""


# --- hean bench pipeline --hlog: one interval per (placement, rate) run --------------------------------------
def test_bench_pipeline_hlog_has_one_tagged_interval_per_run(tmp_path, monkeypatch, capsys):
    from test_cli_conventions import _pipeline_run

    from hean.bench import pipeline

    monkeypatch.setattr(pipeline, "run_measured", _pipeline_run)
    path, js = tmp_path / "t2t.hlog", tmp_path / "runs.json"
    argv = ["--placements", "fused,two", "--rates", "1000,0", "--noise-s", "0", "--hlog", str(path), "--json", str(js)]
    assert pipeline.main(argv) == 0
    assert f"wrote {path} (4 runs)" in capsys.readouterr().out
    hs = _read_all(path)
    assert [h.get_tag() for h in hs] == ["fused.1000", "fused.unpaced", "two.1000", "two.unpaced"]
    for h, (placement, rate) in zip(hs, [("fused", 1000), ("fused", 0), ("two", 1000), ("two", 0)], strict=True):
        want = _pipeline_run(placement, rate, 0.0)[1]
        assert h.get_total_count() == 10 and np.array_equal(_counts(h), want[H_BASE:])
    starts = [h.get_start_time_stamp() for h in hs]
    assert starts == sorted(starts) and all(h.get_end_time_stamp() >= h.get_start_time_stamp() for h in hs)
    assert js.stat().st_size < 20_000  # the histograms stay out of the JSON rows


@pytest.mark.parametrize(("hlog", "message"), [("-", "--hlog needs a file"), ("/nonexistent/x.hlog", "does not exist")])
def test_bench_pipeline_refuses_a_bad_hlog_before_any_run(hlog, message, monkeypatch, capsys):
    from hean.bench import pipeline

    monkeypatch.setattr(pipeline, "run_measured", lambda *a: pytest.fail("ran before checking --hlog"))
    with pytest.raises(SystemExit) as e:
        pipeline.main(["--placements", "fused", "--rates", "0", "--hlog", hlog])
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_run_measured_returns_the_routers_tick_to_trade_counts(monkeypatch):
    """The histogram comes from the run's telemetry (the router's ``e2e``), as a copy, next to the figures."""
    import types

    import hean.engine.summary as summary_mod
    import hean.engine.supervisor as supervisor_mod
    from hean.bench import pipeline

    e2e = _hist([800, 900, 5_000])
    result = types.SimpleNamespace(telemetry={"router": {"hists": {"e2e": e2e}}})
    fig = {"feed_s": 1.0, "placement": {"workers": [["feed"]]}, "events": 3, "messages": 3, "exit_code": 0,
           "error": None, "startup_s": 0.1, "orders": 3, "fills": 0, "tick_to_trade_ns": {}, "stages": {}}  # fmt: skip
    monkeypatch.setattr(supervisor_mod, "Supervisor", lambda cfg: types.SimpleNamespace(run=lambda: result))
    monkeypatch.setattr(summary_mod, "build_summary", lambda *a: fig)
    row, hist = pipeline.run_measured("fused", 0, 0.1)
    assert row["orders"] == 3 and not any(isinstance(v, np.ndarray) for v in row.values())
    assert np.array_equal(hist, e2e) and hist is not e2e
    result.telemetry = {}  # a run with no router: an empty histogram
    assert not pipeline.run_measured("fused", 0, 0.1)[1].any()
