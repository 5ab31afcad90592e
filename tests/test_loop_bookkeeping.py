"""The worker loop's own bookkeeping in every timing mode: each pass counted, busy or idle, in the block of
every stage the worker runs, and the heartbeats current -- also in an untimed lockstep run (a backtest), which
reads the clock only every ``COARSE_CLOCK_EVERY`` busy passes and adds its busy passes up in batches
(:mod:`hean.engine.pipeline`). ``hean top`` and the supervisor's liveness checks read these words. The
histograms of an in-process pipeline start as zero pages (``hean.shm.lazy_zeros``)."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from hean.engine.build import build_local
from hean.engine.config import load_config
from hean.engine.loopgen import loop_module
from hean.shm import lazy_zeros
from hean.stages.registry import PIPELINE
from hean.telemetry.block import C_BUSY_LOOPS, C_BUSY_NS, C_HEARTBEAT_NS, C_IDLE_LOOPS


@pytest.mark.parametrize("shape", [(3,), 5000, (4, 70_000), (1 << 20,)])
def test_lazy_zeros_are_zeros_of_the_shape_and_private(shape):
    """``lazy_zeros``: writable zeros of the shape asked, in a private mapping (64 KiB and more) or from
    ``np.zeros``; a write in a child process (fork) is the child's alone."""
    a = lazy_zeros(shape, np.int64)
    want = (shape,) if isinstance(shape, int) else shape
    assert a.shape == want and a.dtype == np.int64 and a.flags.writeable and not a.any()
    pid = os.fork()
    if pid == 0:  # the child writes and leaves at once
        a.reshape(-1)[-1] = 7
        os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0
    assert not a.any(), "the child's write stays in the child"
    a.reshape(-1)[0] = 1
    assert a.reshape(-1)[0] == 1


LOOPS = 20_000
MESSAGES = 2_000


@pytest.mark.parametrize(
    "lockstep, timed",
    [(True, False), (True, True), (False, False), (False, True)],
    ids=["lockstep-untimed", "lockstep-timed", "free-untimed", "free-timed"],
)
def test_every_pass_is_counted_and_every_heartbeat_is_current(lockstep, timed):
    cfg = load_config(
        overrides={
            "engine.lockstep": lockstep,
            "engine.latency_stats": timed,
            "feed.pace": "fast",
            "feed.max_messages": MESSAGES,
        }
    )
    W = build_local(cfg)
    before = time.monotonic_ns()
    loops = loop_module(PIPELINE).run_loop(W, LOOPS)
    after = time.monotonic_ns()
    assert loops == LOOPS
    for stage in PIPELINE:
        c = getattr(W, f"tm_{stage.name}").counters
        assert c[C_BUSY_LOOPS] + c[C_IDLE_LOOPS] == LOOPS, stage.name
        # lockstep: one message a pass at most (the feed waits for the pipeline to go idle); free: in batches
        assert c[C_BUSY_LOOPS] >= (MESSAGES if lockstep else 1), stage.name
        assert before <= c[C_HEARTBEAT_NS] <= after, stage.name
        hists = getattr(W, f"tm_{stage.name}").hists
        assert hists.flags.writeable and hists.flags.c_contiguous
        if not timed:
            assert c[C_BUSY_NS] == 0, f"{stage.name}: an untimed run measures no pass"
            assert not hists.any(), f"{stage.name}: an untimed run's histograms stay zero"
    if timed:  # the stages' service times were recorded (the histograms' pages are their own: see build)
        assert all(getattr(W, f"tm_{s.name}").hists[0].any() for s in PIPELINE if s.name != "feed")
