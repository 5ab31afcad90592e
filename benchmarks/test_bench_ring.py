"""pytest-benchmark wrappers for ``hean bench ring`` (run: ``.venv/bin/pytest benchmarks/test_bench_ring.py``).

Each test runs one figure of :mod:`hean.bench.ring` once (two pinned processes; a figure is itself many
thousands of messages) between two placement probes, and stores its percentiles, rate, placement and
preemption count in ``benchmark.extra_info``. Nothing here asserts a timing: the figures and their targets
are judged by ``hean bench ring`` on a quiet machine (see BENCHMARKS.md).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from hean.bench import ring as bench

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def harness():
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        pytest.fail(f"the ring benchmark pins two processes to two CPUs; this process may use {allowed}")
    bench._warm_up()
    with tempfile.TemporaryDirectory(prefix="hean-bench-ring-") as tmp:
        exe = bench.build_floor(Path(tmp))
        yield bench.Harness(exe, (allowed[0], allowed[1]), 250, 1, lambda msg: None)


def _record(benchmark, harness, name, kind, fn):
    box = {}

    def once():
        box["fig"] = harness.run(name, kind, fn)

    benchmark.pedantic(once, rounds=1, iterations=1)
    fig = box["fig"]
    benchmark.extra_info.update({"placement": fig.placement, "probe_rtt_ns": list(fig.probe_rtt_ns)})
    if "hop" in fig.value:
        benchmark.extra_info.update({k: v for k, v in fig.value["hop"].items()})
    for key in ("msgs_per_s", "one_way_p50_ns", "rtt_p50_ns", "preemptions"):
        if key in fig.value:
            benchmark.extra_info[key] = fig.value[key]
    return fig


def test_floor_pingpong(benchmark, harness):
    def floor():
        v = bench.pingpong(harness.exe, harness.cpus, samples=2000)
        v["one_way_p50_ns"] = v["rtt_p50_ns"] // 2
        return v

    fig = _record(benchmark, harness, "C cache-line floor (rtt/2)", "floor", floor)
    assert fig.value["one_way_p50_ns"] > 0


@pytest.mark.parametrize("rate", [100_000, 1_000_000])
def test_ring_hop_paced(benchmark, harness, rate):
    n = max(rate // 4, 2000)
    fn = lambda: bench.ring_latency(harness.cpus, n, 1_000_000_000 // rate, 8192, 120)  # noqa: E731
    fig = _record(benchmark, harness, f"ring hop @{rate}/s", "latency", fn)
    assert fig.value["hop"]["count"] == n - min(n // 10, 10_000)


@pytest.mark.parametrize(
    ("name", "batch", "batched_consume"),
    [("single", 1, False), ("single push, batch pop", 1, True), ("batch push/pop (64)", 64, True)],
)
def test_ring_throughput(benchmark, harness, name, batch, batched_consume):
    fn = lambda: {"msgs_per_s": bench.ring_throughput(harness.cpus, 1 << 22, batch, batched_consume, 8192, 120)}  # noqa: E731
    fig = _record(benchmark, harness, f"ring {name}", "throughput", fn)
    assert fig.value["msgs_per_s"] > 0


def test_c_ring_throughput(benchmark, harness):
    fn = lambda: {"msgs_per_s": bench.c_ring(harness.exe, harness.cpus, 1 << 22, 8192)}  # noqa: E731
    fig = _record(benchmark, harness, "C ring single push/pop", "throughput", fn)
    assert fig.value["msgs_per_s"] > 0


@pytest.mark.parametrize("peer", ["mp.Queue", "mp.Pipe", "pyzmq", "faster-fifo"])
def test_peer(benchmark, harness, peer):
    why = bench.peer_available(peer)
    if why:
        pytest.skip(why)
    fn = lambda: bench.peer_figures(peer, harness.cpus, 3000, 100_000, 50_000, 120)  # noqa: E731
    fig = _record(benchmark, harness, f"peer {peer}", "latency", fn)
    assert fig.value["msgs_per_s"] > 0
