"""The machine-noise probe behind `hean bench noise` and the pipeline benchmark's floor columns."""

from __future__ import annotations

import os

import numpy as np
import pytest

from hean.bench.noise import machine_noise, main, wait_floor


@pytest.mark.parametrize(
    ("gaps", "total", "pct", "expected"),
    [
        ([], 1e9, 99.0, 0.0),  # no gaps: no wait
        ([5_000_000], 1e9, 99.0, 0.0),  # 0.5 % of the time: p99 never waits
        ([10_000_000], 1e9, 99.0, 0.0),  # exactly 1 %: the p99 instant is just outside the gap
        ([20_000_000], 1e9, 99.0, 10_000_000),  # a 20 ms gap in 1 s: 1 % of instants wait > 10 ms
        ([10_000_000, 10_000_000], 1e9, 99.0, 5_000_000),  # 2 % lost in two gaps: the last half of each
        ([40_000] * 500, 1e9, 99.0, 20_000),  # 2 % lost in 40 us gaps: half of each gap is the worst 1 %
        ([40_000] * 500, 1e9, 99.9, 38_000),
    ],
)
def test_wait_floor(gaps, total, pct, expected):
    assert wait_floor(np.array(gaps, np.int64), total, pct) == pytest.approx(expected, abs=1.0)


def test_probe_on_a_cpu_reports_consistent_figures():
    cpu = sorted(os.sched_getaffinity(0))[-1]
    r = machine_noise(cpu, seconds=0.2)
    assert r["cpu"] == cpu and 0.0 <= r["lost_pct"] <= 100.0
    assert r["gaps_per_s"] >= 0
    assert 0 <= r["gap_p50_ns"] <= r["gap_p99_ns"] <= r["gap_max_ns"]
    assert 0.0 <= r["wait_floor_p99_ns"] <= r["wait_floor_p999_ns"] <= max(r["gap_max_ns"], 0) + 1


def test_cli_rejects_a_cpu_outside_the_mask(capsys):
    with pytest.raises(SystemExit):
        main(["--cpus", "4096"])
    assert "not available" in capsys.readouterr().err
