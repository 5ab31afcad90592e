"""A stage added through the registry alone (issue 13): the toy pass-through stage of ``toy_stage.py``,
inserted between the book and the strategy, runs fused, two-worker and one process per stage in lockstep,
and the orders and fills are exactly those of the pipeline without it (the digests ``test_digests`` pins).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_digests import PINNED
from toy_stage import TOY, U_PASSED

from hean.engine.loopgen import edges
from hean.stages.registry import PIPELINE, refs

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS.parent / "tools"))
from digests import run_lockstep  # noqa: E402

WITH_TOY = (*PIPELINE[:2], TOY, *PIPELINE[2:])  # the registry's one line: after the book


def test_the_toy_takes_over_the_states_stream():
    joined = {(e.src, e.dst, e.stream) for e in edges(WITH_TOY)}
    assert ("book", "toy", "states") in joined
    assert {("toy", "strategy", "states"), ("toy", "risk", "states")} <= joined
    assert not any(e.src == "book" and e.dst != "toy" for e in edges(WITH_TOY))
    # everything else is the registry's pipeline unchanged
    rest = {(e.src, e.dst, e.stream) for e in edges(PIPELINE) if e.stream != "states"}
    assert rest == {x for x in joined if x[2] != "states"}


def test_the_workers_find_the_stage_by_reference():
    assert refs(WITH_TOY)[2] == "toy_stage:TOY"


@pytest.mark.timeout(420)
@pytest.mark.parametrize("placement", ["fused", "two", "split"])
def test_the_toy_stage_runs_in_every_placement_and_changes_nothing(placement, monkeypatch, precompiled):
    precompiled("loop-toy")  # its loop, from the session's background compile (conftest)
    # the worker processes import the toy's module by name, as they would a user's stage on their path
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
    feed, orders, fills, order_digest, fill_digest = PINNED["synthetic"]
    result = run_lockstep(feed, placement, WITH_TOY)
    tm = result.telemetry
    router = tm["router"]["counters"]
    from hean.telemetry.block import C_EVENTS_IN, C_EVENTS_OUT, C_FILLS, C_ORDERS, C_USER_BASE

    assert (int(router[C_ORDERS]), int(router[C_FILLS])) == (orders, fills)
    assert (int(router[C_USER_BASE]), int(router[C_USER_BASE + 1])) == (order_digest, fill_digest)
    book_states = int(tm["book"]["counters"][C_EVENTS_OUT])
    toy = tm["toy"]["counters"]
    assert book_states > 0
    assert int(toy[C_EVENTS_IN]) == book_states == int(toy[U_PASSED])
    assert int(toy[C_EVENTS_OUT]) == 2 * book_states  # to the strategy and to risk
    assert int(tm["toy"]["hists"]["age.states-toy"].sum()) > 0


@pytest.mark.timeout(300)
def test_a_run_without_the_toys_module_still_works_after_the_toy_ran(tmp_path):
    """numba's cache index of a module is unpickled whole: had an engine kernel been compiled for the toy
    pipeline's worker type, every later run would need the toy's module to load it. Runs after the toys."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-m", "hean", "run", "--duration", "0.3", "--quiet"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=280,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
