"""A stand-in engine for tests/test_top.py: two stages' telemetry written by a numba loop for N seconds.

Usage: ``python tests/fake_engine.py RUN_ID SECONDS``. Publishes its manifest once the loop is compiled,
and unlinks every segment it created when it ends (or fails). A file rather than ``python -c`` so numba can
cache the loop. The real engine's view is tested by the engine's own tests.
"""

from __future__ import annotations

import os
import sys
import time

from hean.atomics import nanosleep, now_ns
from hean.jit import entry
from hean.telemetry.block import C_EVENTS_IN, C_EVENTS_OUT, create_block, tm_add, tm_busy, tm_start, tm_stop
from hean.telemetry.histogram import hist_record
from hean.telemetry.manifest import Manifest, StageInfo, remove_manifest, write_manifest


@entry
def loop(a, b, duration_ns):
    """Stage a ("feed") publishes, stage b ("router") consumes: 50 events per ms."""
    tm_start(a.counters, -1)
    tm_start(b.counters, -1)
    t_end = now_ns() + duration_ns
    while now_ns() < t_end:
        for _ in range(50):
            t0 = now_ns()
            tm_add(a.counters, C_EVENTS_OUT, 1)
            tm_add(b.counters, C_EVENTS_IN, 1)
            tm_add(b.counters, C_EVENTS_OUT, 1)
            t1 = now_ns()
            hist_record(a.hists[0], t1 - t0)
            hist_record(b.hists[0], t1 - t0)
            hist_record(b.hists[1], t1 - t0 + 1000)
            tm_busy(a.counters, t0, t1)
            tm_busy(b.counters, t0, t1)
        nanosleep(1_000_000)
    tm_stop(a.counters, now_ns())
    tm_stop(b.counters, now_ns())


def main(run_id: str, seconds: float) -> None:
    a = create_block(run_id, "feed", ["service"])
    b = create_block(run_id, "router", ["service", "e2e"])
    try:
        loop(a.block, b.block, 1)  # compile before announcing the run
        stages = [StageInfo(name="feed", block=a.name), StageInfo(name="router", block=b.name)]
        write_manifest(
            Manifest(
                run_id=run_id, engine_pid=os.getpid(), start_ns=time.monotonic_ns(), start_unix=time.time(),
                stages=stages,
            )
        )  # fmt: skip
        loop(a.block, b.block, int(seconds * 1e9))
    finally:
        remove_manifest(run_id)
        for seg in (a, b):
            seg.close()
            seg.unlink()


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]))
