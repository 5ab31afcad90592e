"""A worker process: runs one placement group of stages in the pipeline's loop (:mod:`hean.engine.pipeline`).

Started by the supervisor as ``python -m hean.engine.worker`` with its spec (JSON) in ``HEAN_WORKER_SPEC``.
Life cycle: pin to its CPU -> attach the control block, its rings and the stages' telemetry blocks -> build
the stage states -> compile and warm up (one short loop over private dummy rings would not exercise the
real ones, so warm-up runs the loop with ``max_loops`` before START: the feed is held back by START) ->
set READY -> wait for START -> run until STOP -> exit 0. Any Python exception is reported in the control
block (``ERR_PYTHON``) and printed, and the process exits 1: the supervisor names the stage.

A worker never outlives its supervisor. Until START a watchdog thread beats the worker's heartbeat (the
supervisor sees a stopped or hung start-up) and checks the supervisor (the worker's parent pid, and the
supervisor's heartbeat in the control block); from START the loop itself checks at every heartbeat
(:func:`hean.engine.pipeline.supervisor_lost`). Without a supervisor nothing may trade: the router is
halted, the worker drains and exits with code 5 -- and the last process of the run removes its segments and
temp folders (:func:`hean.engine.runs.leave_orphaned_run`).

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


EXIT_ORPHANED = 5  # the worker's exit code when it left because its supervisor was gone


class _Watchdog:
    """Start-up's heartbeat and supervisor check, in a thread (the main thread is busy compiling).

    Why a thread: compiling takes up to a minute of Python the main thread cannot interrupt, and during it
    the supervisor must see the worker alive, and the worker must see the supervisor gone. Stopped before the
    loop starts: its wake-ups would preempt a spinning worker, and the loop checks by itself.
    """

    PERIOD_S = 0.05

    def __init__(self, spec: dict, ctl, w: int) -> None:
        import threading

        self.spec, self.ctl, self.w = spec, ctl, w
        self.sup = int(spec.get("supervisor_pid", 0))
        self.tid = int(spec.get("supervisor_tid", 0))
        self.timeout_ns = int(spec["config"]["engine"]["heartbeat_timeout_ms"]) * 1_000_000
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hean-watchdog", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(self.PERIOD_S):
            now = time.monotonic_ns()
            self.ctl[C.worker_word(self.w, C.W_HEARTBEAT)] = now
            if self.sup and self._lost(now):
                _leave_orphaned(self.spec, self.ctl, self.w, "during start-up")
                os._exit(EXIT_ORPHANED)

    def _lost(self, now: int) -> bool:
        """The same three checks as the loop's (hean.engine.pipeline.supervisor_lost)."""
        if self.tid and int(self.ctl[C.LIFE_LOCK]) & C.FUTEX_TID_MASK != self.tid:
            return True
        return os.getppid() != self.sup or now - int(self.ctl[C.SUP_BEAT]) > self.timeout_ns

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def _leave_orphaned(spec: dict, ctl, w: int, when: str) -> None:
    """The supervisor is gone: say so, mark this worker, and clean the run up if this is its last process."""
    from hean.engine.runs import leave_orphaned_run

    ctl[C.HALT] = 1
    ctl[C.worker_word(w, C.W_ERROR)] = C.ERR_SUPERVISOR_LOST
    if not ctl[C.worker_word(w, C.W_ORPHANED_NS)]:
        ctl[C.worker_word(w, C.W_ORPHANED_NS)] = time.monotonic_ns()
    ctl[C.worker_word(w, C.W_EXIT)] = C.EXIT_ERROR
    print(
        f"hean worker {w} ({', '.join(spec['stages'])}): supervisor pid {spec.get('supervisor_pid')} is gone "
        f"{when}; order flow halted, leaving",
        file=sys.stderr,
        flush=True,
    )
    leave_orphaned_run(spec["run_id"], ctl, w)


class _Served:
    """The loop of a worker whose stage has a service (:attr:`hean.stages.declare.Stage.service`): the compiled
    loop runs in chunks of :attr:`CHUNK` passes, and the service works between them -- files and sockets are
    Python's business, never the loop's. Only background stages have services, so no hot worker is chunked.
    """

    CHUNK = 256  # loop passes per chunk: ~15 ms when idle (the worker sleeps), far less when busy
    PEER_DRAIN_S = 1.0  # orphaned: how long to keep taking what the other workers still publish

    def __init__(self, built, name: str, service) -> None:
        from hean.engine.loopgen import edges

        self.built, self.field, self.service = built, "st_" + name, service
        self.inputs = [e.field for e in edges(built.pipeline) if e.dst == name]
        self._put(service.start(self._state()))

    @classmethod
    def of(cls, built, spec: dict) -> _Served | None:
        import importlib

        import msgspec

        from hean.engine.config import Config

        for stage in built.pipeline:
            if stage.service is not None and stage.name in spec["stages"]:
                make = getattr(importlib.import_module(stage.module), stage.service)
                return cls(built, stage.name, make(msgspec.convert(spec["config"], Config), spec["run_id"]))
        return None

    def _state(self):
        return getattr(self.built.worker, self.field)

    def _put(self, state) -> None:
        self.built.worker = self.built.worker._replace(**{self.field: state})

    def run(self, ctl, w: int) -> None:
        """Chunks until STOP -- or, orphaned, until the other workers are gone (they may still publish what
        the journal must keep) -- then the service's last word (the journal closes its segment)."""
        orphaned_at = 0.0
        try:
            while not ctl[C.STOP]:
                self.built.loop.run_loop(self.built.worker, self.CHUNK)
                self._put(self.service.serve(self._state(), False))
                if ctl[C.worker_word(w, C.W_ERROR)] == C.ERR_SUPERVISOR_LOST:
                    orphaned_at = orphaned_at or time.monotonic()
                    if not _peers_alive(ctl, w) or time.monotonic() - orphaned_at > self.PEER_DRAIN_S:
                        self._drain(orphaned_at + 2 * self.PEER_DRAIN_S)
                        break
        finally:
            self._put(self.service.serve(self._state(), True))

    def _inputs_empty(self) -> bool:
        from hean.rings.layout import READ, WRITE

        rings = self.built.worker.rings
        return all(getattr(rings, f).hdr[WRITE] == getattr(rings, f).hdr[READ] for f in self.inputs)

    def _drain(self, deadline: float) -> None:
        """Orphaned, the other workers gone: take what they left in the rings (shared memory outlives them)."""
        while not self._inputs_empty() and time.monotonic() < deadline:
            self.built.loop.run_loop(self.built.worker, self.CHUNK)
            self._put(self.service.serve(self._state(), False))

    def close(self) -> None:
        """After the stages' last telemetry: drop the loop's state (it holds the mappings), then the service's
        files."""
        import gc

        self.built.worker = None
        gc.collect()
        self.service.close()


def _peers_alive(ctl, w: int) -> bool:
    """Another worker of this run still runs (its pid and start time: a recycled pid is not it)."""
    from hean.procs import same_process

    return any(
        same_process(int(ctl[C.worker_word(i, C.W_PID)]), int(ctl[C.worker_word(i, C.W_START_TICKS)]))
        for i in range(int(ctl[C.N_WORKERS]))
        if i != w and ctl[C.worker_word(i, C.W_PID)] > 0
    )


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    spec = json.loads(os.environ["HEAN_WORKER_SPEC"])
    w = int(spec["index"])
    sup = int(spec.get("supervisor_pid", 0))
    if sup and os.getppid() != sup:  # the supervisor died before this process got here
        return EXIT_ORPHANED
    seg, ctl = C.attach_control(spec["run_id"])
    ctl[C.worker_word(w, C.W_PID)] = os.getpid()
    watchdog = _Watchdog(spec, ctl, w)
    try:
        if spec["cpu"] is not None:
            os.sched_setaffinity(0, {int(spec["cpu"])})
        _set_timer_slack_ns(1)
        from hean.engine.build import build_worker  # heavy imports (numpy, numba) after pinning

        built = build_worker(spec, ctl)
        from hean.engine.warm import compile_loop, precompile, stage_order

        # stage by stage, in this worker's order (another process may be compiling from the other end)
        claims = spec.get("compile_claims")
        order = stage_order(len(built.pipeline), bool(spec.get("compile_backwards")))
        precompile(built.loop, built.worker, order, claims)
        compile_loop(built.loop, built.worker, claims)  # compiles (or loads) and touches every state page
        served = _Served.of(built, spec)  # a background stage's Python-side work (the journal's files)
        ctl[C.worker_word(w, C.W_HEARTBEAT)] = time.monotonic_ns()
        ctl[C.worker_word(w, C.W_READY)] = 1
        while not ctl[C.START] and not ctl[C.STOP]:
            time.sleep(0.0005)
        watchdog.stop()
        built.started(-1 if spec["cpu"] is None else int(spec["cpu"]))
        if served is not None:
            served.run(ctl, w)
        elif not ctl[C.STOP]:
            built.loop.run_loop(built.worker, 0)
        built.finished()
        if served is not None:
            served.close()
        err = int(ctl[C.worker_word(w, C.W_ERROR)])
        if err == C.ERR_SUPERVISOR_LOST:
            _leave_orphaned(spec, ctl, w, "while running")
            return EXIT_ORPHANED
        ctl[C.worker_word(w, C.W_EXIT)] = C.EXIT_ERROR if err else C.EXIT_STOPPED
        return 4 if err else 0
    except BaseException:
        traceback.print_exc()
        print(f"hean worker {w} ({', '.join(spec['stages'])}): failed", file=sys.stderr, flush=True)
        ctl[C.worker_word(w, C.W_ERROR)] = C.ERR_PYTHON
        ctl[C.worker_word(w, C.W_EXIT)] = C.EXIT_ERROR
        return 1
    finally:
        watchdog.stop()
        del ctl
        seg.close()


if __name__ == "__main__":
    sys.exit(main())
