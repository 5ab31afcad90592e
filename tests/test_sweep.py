"""``hean sweep`` / ``hean.sweep``: a grid over recordings on a local Ray and in process, identical tables; a
failing cell reported while the rest complete; a re-run skips finished cells; the grid's errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import hean
from hean.records import RejectReason
from hean.sweeps import METRICS, Grid, SweepError, _sharpe, run_sweep

ROOT = Path(__file__).resolve().parents[1]
BINANCE = ROOT / "tests" / "data" / "binance-usdm-btcusdt-20240808.gz"

CONFIG = """
[strategy]
name = "market_maker"

[strategy.params]
quote_qty = 1
"""

# 2 x 2 parameters: 4 cells per recording
GRID = {"params": {"half_spread_ticks": [1, 3], "skew_ticks_per_lot": [0.0, 0.5]}}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, str]:
    """The configuration, and two recordings as a glob pattern: the Binance recording's first half (cut where
    a group of events ends) and the whole of it, as native event files."""
    from hean.feeds import load_events
    from hean.feeds.native import write_native
    from hean.records import F_LAST_IN_GROUP

    folder = tmp_path_factory.mktemp("sweep-inputs")
    (folder / "config.toml").write_text(CONFIG)
    events, report = load_events(str(BINANCE), "binance-usdm")
    ends = np.flatnonzero(events["flags"] & F_LAST_IN_GROUP)
    cut = int(ends[len(ends) // 2]) + 1
    write_native(folder / "rec-a.hev", np.asarray(events[:cut]), report.symbols)
    write_native(folder / "rec-b.hev", np.asarray(events), report.symbols)
    return folder / "config.toml", str(folder / "rec-*.hev")


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray for the tests that join a running one (run_sweep starts and stops its own otherwise)."""
    ray = pytest.importorskip("ray", reason="ray is in the test extra; without it this test cannot run")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             object_store_memory=256 << 20)  # fmt: skip
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def local(inputs, tmp_path_factory):
    config, pattern = inputs
    return run_sweep(config, GRID, pattern, out=tmp_path_factory.mktemp("sweep-local"), local=True)


def test_a_local_sweep_runs_every_cell_in_the_grids_order(local):
    t = local.table
    assert (local.ran, local.skipped, local.failed) == (8, 0, {})
    assert [Path(r).name for r in t["recording"]] == ["rec-a.hev"] * 4 + ["rec-b.hev"] * 4
    assert t[["param_half_spread_ticks", "param_skew_ticks_per_lot"]].values.tolist()[:4] == [
        [1.0, 0.0], [1.0, 0.5], [3.0, 0.0], [3.0, 0.5],
    ]  # fmt: skip
    reasons = [f"rejects_{r.name}" for r in RejectReason if r.value]
    assert set(METRICS) | set(reasons) <= set(t.columns)
    assert (t[reasons].sum(axis=1) == t["rejects"]).all()
    assert (t["fills"] > 0).all() and (t["orders"] >= t["fills"] / 10).all()
    assert (t["max_drawdown"] >= 0).all() and (t["turnover"] > 0).all()
    # a wider half spread quotes further away: fewer fills on the same recording
    a = t[t["recording"].str.endswith("rec-a.hev")].set_index(["param_half_spread_ticks", "param_skew_ticks_per_lot"])
    assert a.loc[(3.0, 0.0), "fills"] < a.loc[(1.0, 0.0), "fills"]
    saved = pd.read_parquet(local.results_path)
    pd.testing.assert_frame_equal(saved, t)
    assert "best 8 by PnL" in (local.out / "summary.txt").read_text()


def test_a_cell_equals_the_backtest_it_stands_for(inputs, local):
    config, pattern = inputs
    row = local.table.iloc[1]
    r = hean.backtest(
        row["recording"], [{"path": "market_maker", "params": {"quote_qty": 1, "half_spread_ticks": 1,
                                                                "skew_ticks_per_lot": 0.5}}],
        config=str(config), format="native",
    )  # fmt: skip
    assert (row["fills"], row["orders"]) == (len(r.fills), int((r.orders["action"] == 1).sum()))
    assert math.isclose(row["pnl"], r.summary["pnl"], rel_tol=0, abs_tol=1e-9)


@pytest.mark.timeout(600)
def test_ray_gives_the_local_table_and_a_rerun_skips_finished_cells(inputs, local, tmp_path):
    pytest.importorskip("ray", reason="ray is in the test extra; without it this test cannot run")
    config, pattern = inputs
    out = tmp_path / "ray"
    seen = []
    res = run_sweep(config, GRID, pattern, out=out, workers=2, progress=lambda d, f, n: seen.append((d, f, n)))
    assert (res.ran, res.failed) == (8, {})
    pd.testing.assert_frame_equal(res.table, local.table)
    assert seen[-1] == (8, 0, 8)
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*.json")}
    again = run_sweep(config, GRID, pattern, out=out, local=True)
    assert (again.ran, again.skipped) == (0, 8)
    pd.testing.assert_frame_equal(again.table, local.table)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*.json")} == stamps


@pytest.mark.timeout(600)
@pytest.mark.parametrize("on_ray", [False, True], ids=["local", "ray"])
def test_a_failing_cell_is_reported_and_the_rest_complete_then_it_runs_again(inputs, tmp_path, on_ray, request):
    if on_ray:
        request.getfixturevalue("ray_cluster")
    config, pattern = inputs
    grid = {"params": {"requote_ticks": [1, 0]}}  # the market maker's validate refuses 0
    res = run_sweep(config, grid, pattern, out=tmp_path, local=not on_ray, workers=2)
    assert res.ran == 2 and len(res.failed) == 2 and len(res.table) == 2
    assert all("requote_ticks" in e for e in res.failed.values())
    assert (res.table["param_requote_ticks"] == 1.0).all()
    failed = sorted(p.name for p in (tmp_path / "cells").glob("*.failed.json"))
    assert len(failed) == 2 and "requote_ticks" in json.loads((tmp_path / "cells" / failed[0]).read_text())["error"]
    assert "failed:" in (tmp_path / "summary.txt").read_text()
    again = run_sweep(config, grid, pattern, out=tmp_path, local=True)
    assert (again.ran, again.skipped, len(again.failed)) == (0, 2, 2), "finished cells skipped, failed ones retried"


def test_hean_sweep_returns_a_dataframe_with_what_happened(inputs, local):
    config, pattern = inputs
    df = hean.sweep(config, {"params": {"half_spread_ticks": [1]}}, sorted(Path(pattern).parent.glob("rec-a*")),
                    local=True)  # fmt: skip
    assert isinstance(df, pd.DataFrame) and len(df) == 1
    assert df.attrs["ran"] == 1 and df.attrs["failed"] == {} and df.attrs["results_path"] is None
    same = local.table.iloc[1]  # rec-a, half_spread_ticks 1, skew_ticks_per_lot 0.5 (the strategy's default)
    assert (df.iloc[0]["fills"], df.iloc[0]["pnl"]) == (same["fills"], same["pnl"])


BAD_GRIDS = [
    ({}, r"\[params\] must name at least one parameter"),
    ({"params": {"half_spread_ticks": []}}, "must be a non-empty list of numbers"),
    ({"params": {"half_spread_ticks": [1, "a"]}}, "'a' is not a finite number"),
    ({"params": {"half_spread_ticks": [1, 1]}}, "lists a value twice"),
    ({"params": {"x": [1]}, "speed": 2}, r"unknown key\(s\) \['speed'\]"),
    ({"params": {"x": [1]}, "strategy": -1}, "strategy must be an index >= 0"),
]


@pytest.mark.parametrize(("grid", "match"), BAD_GRIDS)
def test_a_bad_grid_is_one_clear_error(grid, match):
    with pytest.raises(SweepError, match=match):
        Grid.load(grid)


def test_unknown_parameters_strategies_and_recordings_are_refused_before_any_cell(inputs, tmp_path):
    config, pattern = inputs
    with pytest.raises(SweepError, match=r"has no parameter \['spread'\]; its parameters: \['half_spread_ticks'"):
        run_sweep(config, {"params": {"spread": [1]}}, pattern, local=True)
    with pytest.raises(SweepError, match="strategy = 3, but the configuration has 1 strategies"):
        run_sweep(config, {"params": {"half_spread_ticks": [1]}, "strategy": 3}, pattern, local=True)
    with pytest.raises(SweepError, match="no file matches"):
        run_sweep(config, GRID, str(tmp_path / "none-*.gz"), local=True)
    with pytest.raises(SweepError, match="say its format"):
        run_sweep(config, GRID, str(BINANCE), local=True)


def test_the_sharpe_ratio_reads_the_curve_every_second():
    s = 1_000_000_000
    ts = np.array([0, s, 2 * s, 3 * s, 4 * s])
    pnl = np.array([0.0, 1.0, 1.0, 3.0, 3.0])  # changes 1, 0, 2, 0: mean 0.75, sd sqrt(0.6875)
    want = 0.75 / math.sqrt(0.6875) * math.sqrt(365 * 86_400)
    assert math.isclose(_sharpe(ts, pnl), want, rel_tol=1e-12)
    # an irregular sample between two seconds does not count twice: the curve is read at whole seconds
    assert math.isclose(_sharpe(np.insert(ts, 2, s + s // 2), np.insert(pnl, 2, 5.0)), want, rel_tol=1e-12)
    assert math.isnan(_sharpe(ts, np.zeros(5)))


@pytest.mark.timeout(300)
def test_the_command_writes_the_results_and_says_where(inputs, tmp_path):
    config, pattern = inputs
    grid = tmp_path / "grid.toml"
    grid.write_text("[params]\nhalf_spread_ticks = [1, 3]\n")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "hean", "sweep", str(config), "--grid", str(grid), "--recordings",
           str(Path(pattern).parent / "rec-a*"), "--out", str(out), "--local"]  # fmt: skip
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=280)
    assert p.returncode == 0, p.stderr
    assert "2 cells: 2 ran" in p.stdout and f"results: {out / 'results.parquet'}" in p.stderr
    assert len(pd.read_parquet(out / "results.parquet")) == 2


def test_without_ray_the_sweep_says_how_to_get_it_or_run_local(inputs, monkeypatch):
    config, pattern = inputs
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(SweepError, match=r"pip install 'hean\[sweep\]' \(or run with --local\)"):
        run_sweep(config, GRID, pattern)


@pytest.mark.timeout(600)
def test_on_a_cluster_each_recording_goes_through_the_object_store_to_nodes_that_cannot_see_it(
    inputs, local, ray_cluster
):
    from hean.sweeps import Recording, _local_copy

    ray = ray_cluster
    config, pattern = inputs
    # joining "a cluster" (this one): the recordings are put in the object store, the table is the same
    res = run_sweep(config, GRID, pattern, address="auto")
    pd.testing.assert_frame_equal(res.table, local.table)
    # a node that cannot see the file writes it once from the object store, byte for byte
    src = sorted(Path(pattern).parent.glob("rec-a*"))[0]
    ref = ray.put(src.read_bytes())
    rec = Recording(str(src), "/nonexistent/rec-a.hev", f"test-{src.stat().st_size}")
    copy = Path(_local_copy(rec, ref))
    assert copy != src and copy.read_bytes() == src.read_bytes()
    copy.unlink()
