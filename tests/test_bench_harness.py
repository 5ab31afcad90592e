"""The latency harness on tiny in-process runs: counts, loss, coordinated-omission-free timing, outputs.

No assertion here depends on how fast the machine is: counts are exact, and latency bounds follow from
the schedule itself (a kernel that busy-waits 300 us makes the messages due during the wait late by
construction).
"""

from __future__ import annotations

import argparse
import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
from numba import njit

from hean.atomics import load_acquire, now_ns, store_release
from hean.bench.harness import BenchResult, bench_kernel, bench_pair, put_percentiles
from hean.bench.report import (
    add_harness_args,
    emit,
    fmt_ns,
    fmt_rate,
    format_table,
    markdown_table,
    parse_rates,
    text_histogram,
)
from hean.rings.layout import MASK
from hean.rings.spsc import publish, release, try_claim, try_peek
from hean.telemetry.histogram import H_BASE, hist_index

RATE = 20_000  # 50 us apart
DUR = 0.05  # 1,000 messages


@njit(cache=True, nogil=True)
def _count_kernel(state, i):
    state[0] += 1
    state[1] += i


@njit(cache=True, nogil=True)
def _stalling_kernel(state, i):
    """Every 100th call busy-waits 300 us: 6 scheduled periods pass meanwhile."""
    state[0] += 1
    if i % 100 == 50:
        t = now_ns() + 300_000
        while now_ns() < t:
            pass


# a minimal SPSC ring over numpy (hdr[0] = write, hdr[16] = read), for the send/receive pair
@njit(cache=True, nogil=True)
def _send(st, i, sched):
    hdr, buf, drop_every = st
    if drop_every[0] > 0 and i % drop_every[0] == 3:
        return -1
    w = hdr[0]
    if w - load_acquire(hdr, 16) >= buf.shape[0]:
        return 0
    buf[w & (buf.shape[0] - 1)] = sched
    store_release(hdr, 0, w + 1)
    return 1


@njit(cache=True, nogil=True)
def _recv(st):
    hdr, buf, _ = st
    r = hdr[16]
    if r == load_acquire(hdr, 0):
        return -1
    s = buf[r & (buf.shape[0] - 1)]
    store_release(hdr, 16, r + 1)
    return s


def _ring_state(drop_every: int = 0):
    return (np.zeros(32, np.int64), np.zeros(256, np.int64), np.array([drop_every], np.int64))


def test_kernel_paced_and_unpaced_counts():
    state = np.zeros(2, np.int64)
    res = bench_kernel("count", _count_kernel, state, rates=(RATE, 0), duration_s=DUR, warmup_s=0.01,
                       unpaced_max=5_000, interval_s=0.02)  # fmt: skip
    paced, unpaced = res.results
    assert (paced.target_rate, paced.attempted, paced.received, paced.lost) == (RATE, 1000, 1000, 0)
    assert paced.count == 1000 and paced.hist[H_BASE:].sum() == 1000
    # 1000 messages 50 us apart cannot take less than 999 periods
    assert paced.elapsed_ns >= 999 * 50_000 and paced.achieved_rate <= RATE * 1000 / 999
    assert 0 < unpaced.received <= 5_000 and unpaced.lost == 0 and unpaced.target_rate == 0
    # warm-up calls ran too (then were reset): the kernel saw compile + warm-up + measured calls
    assert state[0] > paced.received + unpaced.received
    assert sum(iv.hist[H_BASE:].sum() for iv in paced.intervals) == 1000
    assert res.config["mode"] == "kernel" and res.machine["cpus"] >= 1


def test_kernel_latency_is_measured_from_the_schedule():
    res = bench_kernel("stall", _stalling_kernel, np.zeros(2, np.int64), rates=(RATE,), duration_s=DUR,
                       warmup_s=0.0)  # fmt: skip
    (r,) = res.results
    late = r.hist[H_BASE + hist_index(100_000) :].sum()  # samples >= ~100 us
    # per stall: the stalled call (>= 300 us) and the calls due during it (>= 250, 200, 150, 100 us);
    # a harness that timed from the actual send would see only the first
    assert late >= 5 * 10
    assert r.as_dict()["max_ns"] >= 300_000


def test_pair_counts_and_loss():
    res = bench_pair("ring", _send, _recv, _ring_state(), rates=(RATE,), duration_s=DUR, warmup_s=0.01)
    (r,) = res.results
    assert (r.attempted, r.sent, r.received, r.dropped, r.lost) == (1000, 1000, 1000, 0, 0)
    assert r.count == 1000 and r.as_dict()["min_ns"] >= 0
    lossy = bench_pair("lossy", _send, _recv, _ring_state(10), rates=(RATE,), duration_s=DUR, warmup_s=0)
    (r,) = lossy.results
    assert (r.attempted, r.dropped, r.received, r.lost) == (1000, 100, 900, 100)
    assert r.loss_pct == pytest.approx(10.0) and r.count == 900


def test_table_json_and_percentile_support():
    res = bench_kernel("count", _count_kernel, np.zeros(2, np.int64), rates=(RATE,), duration_s=DUR,
                       warmup_s=0.0)  # fmt: skip
    d = res.as_dict()
    json.dumps(d)  # plain JSON types only
    r = d["results"][0]
    assert r["count"] == 1000 and set(r["percentiles_ns"]) == {"p50", "p90", "p99", "p99.9"}  # no p99.99
    assert r["min_ns"] <= r["percentiles_ns"]["p50"] <= r["percentiles_ns"]["p99.9"]
    table = format_table(res)
    assert table.splitlines()[1].split() == ["rate", "achieved", "msgs", "lost", "p50", "p90", "p99", "p99.9",
                                             "p99.99", "max"]  # fmt: skip
    row = table.splitlines()[3].split()
    assert row[0] == "20k/s" and row[2] == "1,000" and len(row) == 9  # p99.99 blank: 1,000 samples
    assert markdown_table(res).count("\n") == 2


def test_emit_writes_json_hlog_and_explains_missing_matplotlib(tmp_path, capsys):
    res = bench_kernel("count", _count_kernel, np.zeros(2, np.int64), rates=(RATE,), duration_s=DUR,
                       warmup_s=0.0)  # fmt: skip
    p = argparse.ArgumentParser()
    add_harness_args(p)
    args = p.parse_args(["--json", str(tmp_path / "r.json"), "--hlog", str(tmp_path / "r.hlog"), "--histogram"])
    assert emit(res, args) == 0
    assert json.loads((tmp_path / "r.json").read_text())["name"] == "count"
    assert (tmp_path / "r.hlog").read_text().count("Tag=rate_20000,") >= 1
    out = capsys.readouterr().out
    assert "#" in out and "%" in out  # the text histogram
    try:
        import matplotlib  # noqa: F401

        has_mpl = True
    except ImportError:
        has_mpl = False
    rc = emit(res, p.parse_args(["--plot", str(tmp_path / "r.png")]))
    if has_mpl:
        assert rc == 0 and (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    else:
        assert rc == 2 and "matplotlib is not installed" in capsys.readouterr().err


def test_put_percentiles_into_benchmark_extra_info():
    res = bench_kernel("count", _count_kernel, np.zeros(2, np.int64), rates=(RATE,), duration_s=DUR,
                       warmup_s=0.0)  # fmt: skip
    fake = SimpleNamespace(extra_info={})
    info = put_percentiles(fake, res)
    assert fake.extra_info == info
    assert info["rate_20000_count"] == 1000 and "rate_20000_p99.9_ns" in info and "rate_20000_p99.99_ns" not in info
    info = put_percentiles(SimpleNamespace(extra_info={}), res.results[0].hist, prefix="svc_")
    assert set(info) == {"svc_count", "svc_max_ns", "svc_p50_ns", "svc_p90_ns", "svc_p99_ns", "svc_p99.9_ns"}


def test_put_percentiles_with_pytest_benchmark(benchmark):
    state = np.zeros(2, np.int64)
    res = benchmark.pedantic(
        bench_kernel, args=("count", _count_kernel, state), kwargs={"rates": (RATE,), "duration_s": DUR,
                                                                   "warmup_s": 0.0}, rounds=1, iterations=1
    )  # fmt: skip
    assert isinstance(res, BenchResult)
    put_percentiles(benchmark, res)
    assert benchmark.extra_info["rate_20000_count"] == 1000


def test_text_histogram_bins_sum_to_count():
    from hean.telemetry.histogram import hist_record, new_histogram

    h = new_histogram()
    for v in [150, 160, 1_500, 2_500, 2_600, 7_000_000]:
        hist_record(h, v)
    text = text_histogram(h)
    counts = [int(line.rsplit(None, 1)[1].replace(",", "")) for line in text.splitlines()]
    assert sum(counts) == 6
    assert text.splitlines()[0].startswith(" 100ns - 200ns") and "5ms - 10ms" in text.splitlines()[-1]
    assert text_histogram(new_histogram()) == "(no samples)"


@pytest.mark.parametrize(
    ("text", "rates"),
    [("10k,100k,1M,max", [10_000, 100_000, 1_000_000, 0]), ("500", [500]), ("2.5k,unpaced", [2500, 0])],
)
def test_parse_rates(text, rates):
    assert parse_rates(text) == rates


@pytest.mark.parametrize("bad", ["fast", "-5", "10x"])
def test_parse_rates_rejects(bad):
    with pytest.raises(argparse.ArgumentTypeError, match="--rates"):
        parse_rates(bad)


@pytest.mark.parametrize(
    ("ns", "text"), [(850, "850ns"), (12_345, "12.3us"), (4_560_000, "4.56ms"), (1.2e9, "1.20s"), (None, "-")]
)
def test_fmt_ns(ns, text):
    assert fmt_ns(ns) == text
    assert fmt_rate(0) == "max" and fmt_rate(1_000_000) == "1M/s"


def test_cli_bench_telemetry_writes_one_file_set_per_kernel(tmp_path, capsys):
    from hean.cli import main

    out = tmp_path / "t.json"
    rc = main(["bench", "telemetry", "--rates", "10k", "--duration", "0.02", "--warmup", "0", "--calls", "1000",
               "--json", str(out)])  # fmt: skip
    assert rc == 0
    text = capsys.readouterr().out
    assert "per call (tight loop, mean): now_ns" in text and "harness floor (empty kernel)" in text
    for slug in ("floor", "record", "counters"):
        d = json.loads((tmp_path / f"t.{slug}.json").read_text())
        assert d["results"][0]["received"] == 200 and d["config"]["per_call_ns"]["hist_record"] > 0


@njit(cache=True, nogil=True)
def _ring_send(st, i, sched):
    hdr, slots = st
    seq = try_claim(hdr, 1)
    if seq < 0:
        return 0
    slots[seq & hdr[MASK]].seq = i + 1
    slots[seq & hdr[MASK]].ts_origin = sched
    publish(hdr, seq + 1)
    return 1


@njit(cache=True, nogil=True)
def _ring_recv(st):
    hdr, slots = st
    r = try_peek(hdr)
    if r < 0:
        return -1
    sched = slots[r & hdr[MASK]].ts_origin
    release(hdr, r + 1)
    return sched


def test_pair_over_a_hean_ring(shm_name):
    """The harness drives the real SPSC ring (how the ring benchmark plugs in): scheduled time in ts_origin."""
    from hean.records import MARKET_EVENT
    from hean.rings import create

    ring = create(shm_name, MARKET_EVENT, 256)
    try:
        res = bench_pair("hean ring", _ring_send, _ring_recv, (ring.hdr, ring.slots), rates=(RATE,),
                         duration_s=DUR, warmup_s=0.01)  # fmt: skip
    finally:
        ring.close()
        ring.unlink()
    (r,) = res.results
    assert (r.attempted, r.received, r.lost) == (1000, 1000, 0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--placements", "fused,bogus"], "unknown placement(s) ['bogus']"),
        (["--runs", "0"], "--runs must be >= 1, got 0"),
    ],
)
def test_bench_startup_rejects_bad_options(argv, message, capsys):
    from hean.bench import startup

    with pytest.raises(SystemExit) as e:
        startup._parse(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_bench_startup_restores_the_callers_numba_cache_setting(monkeypatch):
    """Each measured run points the engine's processes at a cache folder of its own, and only them."""
    from hean.bench import startup

    seen = []
    monkeypatch.setattr(startup, "run_one", lambda placement, rate, s: seen.append(os.environ["NUMBA_CACHE_DIR"]))
    monkeypatch.setenv("NUMBA_CACHE_DIR", "/somewhere/else")
    startup._with_cache("/tmp/hean-bench-startup-x", "fused")
    assert seen == ["/tmp/hean-bench-startup-x"] and os.environ["NUMBA_CACHE_DIR"] == "/somewhere/else"
    monkeypatch.delenv("NUMBA_CACHE_DIR")
    startup._with_cache("/tmp/hean-bench-startup-y", "fused")
    assert seen[-1] == "/tmp/hean-bench-startup-y" and "NUMBA_CACHE_DIR" not in os.environ
