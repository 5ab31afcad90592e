"""pytest-benchmark wrappers for ``hean bench risk`` (run: ``.venv/bin/pytest benchmarks/test_bench_risk.py``).

Each test runs one figure of :mod:`hean.bench.risk` once (a figure is itself 100,000 calls timed inside
numba, in batches) and stores its median/mean ns per call and per-call percentiles in
``benchmark.extra_info``. Nothing here asserts a timing: the targets (risk check <= 100 ns, route + state
update <= 200 ns) are judged by ``hean bench risk`` on a quiet machine (see BENCHMARKS.md).
"""

from __future__ import annotations

import pytest

from hean.bench import risk as bench

pytestmark = pytest.mark.timeout(600)


@pytest.mark.parametrize("name", bench.FIGURES)
def test_figure(benchmark, name):
    box = {}

    def once():
        box["figs"] = bench.run_all(100_000, only=(name,))

    benchmark.pedantic(once, rounds=1, iterations=1)
    fig, clock = box["figs"]
    assert fig["figure"] == name and fig["calls"] > 0 and fig["median_ns"] > 0
    benchmark.extra_info.update({k: v for k, v in fig.items() if k != "figure"})
    benchmark.extra_info["clock_ns"] = clock["mean_ns"]
