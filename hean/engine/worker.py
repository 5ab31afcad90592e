"""A worker process: runs one placement group of stages in :func:`hean.engine.pipeline.run_loop`.

Started by the supervisor as ``python -m hean.engine.worker`` with its spec (JSON) in ``HEAN_WORKER_SPEC``.
Life cycle: pin to its CPU -> attach the control block, its rings and the stages' telemetry blocks -> build
the stage states -> compile and warm up (one short loop over private dummy rings would not exercise the
real ones, so warm-up runs the loop with ``max_loops`` before START: the feed is held back by START) ->
set READY -> wait for START -> run until STOP -> exit 0. Any Python exception is reported in the control
block (``ERR_PYTHON``) and printed, and the process exits 1: the supervisor names the stage.

SIGINT is ignored here: Ctrl-C in a terminal reaches the whole process group, and the supervisor -- not the
workers -- decides how to stop (drain first).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import time
import traceback

from hean.engine import control as C


def _set_timer_slack_ns(ns: int) -> None:
    """prctl(PR_SET_TIMERSLACK): short sleeps overshoot by the slack (50 us by default)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(29, ctypes.c_ulong(ns), 0, 0, 0)  # PR_SET_TIMERSLACK = 29
    except (OSError, AttributeError):
        pass


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    spec = json.loads(os.environ["HEAN_WORKER_SPEC"])
    w = int(spec["index"])
    seg, ctl = C.attach_control(spec["run_id"])
    ctl[C.worker_word(w, C.W_PID)] = os.getpid()
    try:
        if spec["cpu"] is not None:
            os.sched_setaffinity(0, {int(spec["cpu"])})
        _set_timer_slack_ns(1)
        from hean.engine.build import build_worker  # heavy imports (numpy, numba) after pinning

        built = build_worker(spec, ctl)
        from hean.engine.pipeline import run_loop
        from hean.engine.warm import compile_loop, precompile, stage_order

        # stage by stage, in this worker's order (another process may be compiling from the other end)
        claims = spec.get("compile_claims")
        precompile(built.worker, stage_order(bool(spec.get("compile_backwards"))), claims)
        compile_loop(built.worker, claims)  # compiles (or loads from the cache) and touches every state page
        ctl[C.worker_word(w, C.W_HEARTBEAT)] = time.monotonic_ns()
        ctl[C.worker_word(w, C.W_READY)] = 1
        while not ctl[C.START] and not ctl[C.STOP]:
            time.sleep(0.0005)
            ctl[C.worker_word(w, C.W_HEARTBEAT)] = time.monotonic_ns()
        built.started(-1 if spec["cpu"] is None else int(spec["cpu"]))
        if not ctl[C.STOP]:
            run_loop(built.worker, 0)
        built.finished()
        err = int(ctl[C.worker_word(w, C.W_ERROR)])
        ctl[C.worker_word(w, C.W_EXIT)] = C.EXIT_ERROR if err else C.EXIT_STOPPED
        return 4 if err else 0
    except BaseException:
        traceback.print_exc()
        print(f"hean worker {w} ({', '.join(spec['stages'])}): failed", file=sys.stderr, flush=True)
        ctl[C.worker_word(w, C.W_ERROR)] = C.ERR_PYTHON
        ctl[C.worker_word(w, C.W_EXIT)] = C.EXIT_ERROR
        return 1
    finally:
        del ctl
        seg.close()


if __name__ == "__main__":
    sys.exit(main())
