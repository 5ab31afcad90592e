"""The engine's control block: one small int64 segment through which the supervisor and the workers agree on
when to start, stop, halt, and whether each worker is alive.

Why a segment and not pipes or signals: a worker's numba loop must see "stop" or "halt" without leaving
compiled code, so the flags are words it reads with a relaxed atomic load once per loop iteration; and the
supervisor must see each worker's heartbeat without asking it anything.

Layout (``CTL_WORDS`` int64 words, ``/dev/shm/hean-<run_id>-ctl``)::

    word                 writer       meaning
    -------------------  -----------  ------------------------------------------------------------------
    MAGIC        0       supervisor   CTL_MAGIC once the block is initialised
    START        1       supervisor   1: ready workers begin (the feed starts publishing)
    STOP_FEED    2       supervisor   1: the feed stops publishing (drain begins)
    STOP         3       supervisor   1: every worker leaves its loop
    HALT         4       supervisor   1: order flow halted (a worker died): the router sends nothing more
    N_WORKERS    5       supervisor   number of workers
    SUP_PID      6       supervisor   the supervisor's pid (the workers' parent)
    SUP_BEAT     7       supervisor   CLOCK_MONOTONIC ns of the supervisor's latest heartbeat (at least every
                                      Supervisor.WATCH_S); a worker that finds it older than the heartbeat
                                      timeout, or whose parent is no longer SUP_PID, has lost its supervisor
    FEED_DONE    8       feed worker  1: the feed has published everything it will (end of replay/limit)
    HELPER_PID  10       supervisor   pid of the cold-start compile helper (0: none)
    HELPER_TICKS 11      supervisor   its start time (see START_TICKS below)
    (words 0-7, which every worker reads on every loop pass, are written only by the supervisor -- and HALT
    and STOP_FEED by a worker that lost its supervisor, the one case with nobody else to write them; the
    feed's words sit on the next cache line, so a message published does not invalidate what the others
    poll)
    per worker w, at WORKER_BASE + w * WORKER_STRIDE:
      +0 READY           worker w     1: compiled, warmed up, waiting for START
      +1 HEARTBEAT_NS    worker w     CLOCK_MONOTONIC ns of the latest heartbeat
      +2 EXIT            worker w     exit reason once it left its loop (EXIT_* below); 0 while running
      +3 PID             worker w     its pid
      +4 LOOPS           worker w     loop iterations (relaxed)
      +5 IDLE_LOOPS      worker w     iterations that found nothing to do
      +6 ERROR           worker w     error code (ERR_* below) when it stopped on an error
      +7 ACTIVITY        worker w     bumped before every publish to and release of any of its rings
      +8 IDLE_AT         worker w     ACTIVITY when the worker last found all its rings empty and nothing
                                      to do; ACTIVITY == IDLE_AT means "nothing of this worker in flight"
                                      (the lockstep feed reads it for every worker: see pipeline.quiescent)
      +9 START_TICKS     supervisor   the worker process's start time (/proc/<pid>/stat field 22): with PID,
                                      its identity, so a recycled pid is never mistaken for (or killed as) it
      +10 ORPHANED_NS    worker w     CLOCK_MONOTONIC ns when it noticed its supervisor was gone (0: never)
      +11 BACKGROUND     supervisor   1: the worker runs a background stage (the journal): nothing it holds
                                      feeds back into trading, so lockstep's quiescence does not wait for it
    LIFE_LOCK   1040..1047  supervisor  a process-shared *robust* pthread mutex the supervisor's main thread
                                      holds for the whole run (its first word: the owner's thread id). When
                                      the supervisor dies, the kernel marks it FUTEX_OWNER_DIED (the id goes)
                                      while it takes the process down -- before it frees the process's
                                      memory, which on this VM takes 10-35 ms more, after which the parent pid
                                      changes. The workers read its first word at every heartbeat.

Every word is read and written with a relaxed atomic access (``load_relaxed`` / ``store_relaxed`` in
compiled code; aligned int64 numpy reads and writes from Python): each word is one fact with one writer,
and no reader infers anything about another word from it.
"""

from __future__ import annotations

import numpy as np
from numba.extending import register_jitable

from hean.shm import Segment, attach_segment, create_segment

CTL_MAGIC = int.from_bytes(b"HEANCTL1", "little")

MAGIC = 0
START = 1
STOP_FEED = 2
STOP = 3
HALT = 4
N_WORKERS = 5
SUP_PID = 6
SUP_BEAT = 7
FEED_DONE = 8
HELPER_PID = 10
HELPER_TICKS = 11

WORKER_BASE = 16
WORKER_STRIDE = 16
MAX_WORKERS = 64
LIFE_LOCK = WORKER_BASE + WORKER_STRIDE * MAX_WORKERS  # 64-byte aligned (word 1040 = byte 8320)
LIFE_LOCK_WORDS = 8  # glibc's pthread_mutex_t is 40 bytes on x86-64
CTL_WORDS = LIFE_LOCK + LIFE_LOCK_WORDS
FUTEX_TID_MASK = 0x3FFFFFFF  # the owner's thread id in a robust futex word (linux/futex.h)
assert LIFE_LOCK * 8 % 64 == 0

W_READY = 0
W_HEARTBEAT = 1
W_EXIT = 2
W_PID = 3
W_LOOPS = 4
W_IDLE = 5
W_ERROR = 6
W_ACTIVITY = 7
W_IDLE_AT = 8
W_START_TICKS = 9
W_ORPHANED_NS = 10
W_BACKGROUND = 11

# why a worker left its loop
EXIT_STOPPED = 1  # STOP was set
EXIT_ERROR = 2  # see W_ERROR

# worker error codes
ERR_PEER_DEAD = 1  # a ring's peer process is gone while this worker waited on it
ERR_PYTHON = 3  # an exception in the worker's Python code (start-up, compile)
ERR_SUPERVISOR_LOST = 4  # the supervisor died or stopped heart-beating: halted, drained, left

ERROR_TEXT = {
    0: "none",
    ERR_PEER_DEAD: "a peer process died",
    ERR_PYTHON: "Python exception (see the worker's output)",
    ERR_SUPERVISOR_LOST: "the supervisor died or stopped responding (the worker halted its router and left)",
}


@register_jitable
def worker_word(w: int, field: int) -> int:
    """Index of ``field`` (W_*) of worker ``w`` in the control block (from Python and from compiled code)."""
    return WORKER_BASE + w * WORKER_STRIDE + field


def ctl_name(run_id: str) -> str:
    return f"hean-{run_id}-ctl"


def create_control(run_id: str, n_workers: int) -> tuple[Segment, np.ndarray]:
    if not 1 <= n_workers <= MAX_WORKERS:
        raise ValueError(f"between 1 and {MAX_WORKERS} workers, got {n_workers}")
    seg = create_segment(ctl_name(run_id), CTL_WORDS * 8)
    ctl = seg.array(np.int64)
    ctl[N_WORKERS] = n_workers
    ctl[MAGIC] = CTL_MAGIC
    return seg, ctl


def attach_control(run_id: str, readonly: bool = False) -> tuple[Segment, np.ndarray]:
    seg = attach_segment(ctl_name(run_id), readonly=readonly)
    ctl = seg.array(np.int64)
    if len(ctl) < CTL_WORDS or ctl[MAGIC] != CTL_MAGIC:
        seg.close()
        raise ValueError(f"segment {ctl_name(run_id)!r} is not a HEAN control block")
    return seg, ctl


class LifeLock:
    """The supervisor's robust mutex in the control block (see ``LIFE_LOCK`` above): held from the claim of
    the run to its end, by the thread that runs it.

    Why a robust futex: it is the one thing the kernel releases at the very start of a process's exit --
    with it, a worker notices a killed supervisor within microseconds of the kill instead of after the
    kernel has torn down the supervisor's address space (what a parent-death signal, a pidfd or the parent
    pid wait for). Without glibc's robust mutexes the word stays 0 and the workers rely on the parent pid.
    """

    def __init__(self, ctl: np.ndarray) -> None:
        import ctypes
        import threading

        self._addr = ctl.ctypes.data + LIFE_LOCK * 8
        self._ctl = ctl  # keeps the mapping alive while the lock is held
        self.held = False
        self.tid = threading.get_native_id()  # the owner the lock's word names while it lives
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            attr = ctypes.create_string_buffer(64)
            ok = (
                libc.pthread_mutexattr_init(attr) == 0
                and libc.pthread_mutexattr_setpshared(attr, 1) == 0  # PTHREAD_PROCESS_SHARED
                and libc.pthread_mutexattr_setrobust(attr, 1) == 0  # PTHREAD_MUTEX_ROBUST
                and libc.pthread_mutex_init(ctypes.c_void_p(self._addr), attr) == 0
                and libc.pthread_mutex_lock(ctypes.c_void_p(self._addr)) == 0
            )
        except (OSError, AttributeError):
            ok = False
        self._libc = libc if ok else None
        self.held = ok

    def release(self) -> None:
        """Unlock (from the thread that locked): the kernel's robust list must not point into a mapping that
        is about to go away."""
        if self.held:
            import ctypes

            self._libc.pthread_mutex_unlock(ctypes.c_void_p(self._addr))
            self.held = False
