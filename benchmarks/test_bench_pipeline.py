"""pytest-benchmark wrappers for ``hean bench pipeline``, ``hean bench startup`` and ``hean bench noise``
(run: ``.venv/bin/pytest benchmarks/test_bench_pipeline.py``).

One engine run per placement at 100k messages/s, a cold and a warm start of the default placement, and the
machine-noise probe on every CPU; the figures (tick-to-trade percentiles, start-up seconds, time lost to the
machine, its wait floor) go into ``benchmark.extra_info``.
Nothing here asserts a timing: the targets are judged by the CLI benchmarks on a quiet machine
(BENCHMARKS.md).
"""

from __future__ import annotations

import os

import pytest

from hean.bench import noise, startup
from hean.bench import pipeline as bench

pytestmark = pytest.mark.timeout(900)


@pytest.mark.parametrize("placement", ["fused", "two"])
def test_tick_to_trade_at_100k(benchmark, placement):
    box = {}
    benchmark.pedantic(lambda: box.update(row=bench.run_one(placement, 100_000, 3.0)), rounds=1, iterations=1)
    row = box["row"]
    assert row["exit_code"] == 0, row["error"]
    assert row["tick_to_trade_ns"]["count"] > 0
    benchmark.extra_info.update({f"t2t_{k}_ns": v for k, v in row["tick_to_trade_ns"].items()})
    benchmark.extra_info["messages_per_s"] = row["messages_per_s"]


def test_cold_and_warm_start(benchmark):
    box = {}
    benchmark.pedantic(lambda: box.update(row=startup.measure("fused", 1)), rounds=1, iterations=1)
    row = box["row"]
    assert not row["errors"], row["errors"]
    assert len(row["cold_s"]) == 1 and row["cold_s"][0] > 0 and row["warm_s"] > 0
    benchmark.extra_info.update({"cold_s": row["cold_s"][0], "warm_s": row["warm_s"]})


@pytest.mark.parametrize("cpu", sorted(os.sched_getaffinity(0)))
def test_machine_noise(benchmark, cpu):
    box = {}
    benchmark.pedantic(lambda: box.update(r=noise.machine_noise(cpu, 2.0)), rounds=1, iterations=1)
    assert 0.0 <= box["r"]["lost_pct"] <= 100.0
    benchmark.extra_info.update(box["r"])
