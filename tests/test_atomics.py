"""hean.atomics: each intrinsic's semantics, and the one property that makes busy-polling work at all.

The cross-process test is the reason the module exists: a waiter spinning on ``load_acquire`` must see a
value another process writes later. With a plain load LLVM hoists the read out of the loop and the waiter
spins forever (the test would then fail on its join timeout instead of hanging the suite).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time

import numpy as np
import pytest
from numba import njit

from hean import atomics as A
from hean.shm import attach_segment, create_segment, unlink_segment

FORK = mp.get_context("fork")


@njit(cache=True, nogil=True)
def _acquire(a, i):
    return A.load_acquire(a, i)


@njit(cache=True, nogil=True)
def _relaxed(a, i):
    return A.load_relaxed(a, i)


@njit(cache=True, nogil=True)
def _release_store(a, i, v):
    A.store_release(a, i, v)


@njit(cache=True, nogil=True)
def _relaxed_store(a, i, v):
    A.store_relaxed(a, i, v)


@njit(cache=True, nogil=True)
def _fence_and_pause(n):
    for _ in range(n):
        A.fence()
        A.cpu_pause()
    return n


@njit(cache=True, nogil=True)
def _clock_pair():
    return A.now_ns(), A.rdtsc()


@njit(cache=True, nogil=True)
def _monotonic_run(n):
    """Return the number of times now_ns() went backwards in n consecutive calls (must be 0)."""
    back = 0
    prev = A.now_ns()
    for _ in range(n):
        t = A.now_ns()
        if t < prev:
            back += 1
        prev = t
    return back


@njit(cache=True, nogil=True)
def _sleep(ns):
    A.nanosleep(ns)


@njit(cache=True, nogil=True)
def _yield():
    A.sched_yield()


@njit(cache=True, nogil=True)
def _pid():
    return A.getpid()


@njit(cache=True, nogil=True)
def _wait_until(flag, i, value):
    """Spin, with no bound and no call that could hide a hoisted load, until flag[i] == value."""
    spins = 0
    while A.load_acquire(flag, i) != value:
        spins += 1
    return spins


@pytest.mark.parametrize("index", [0, 1, 7, 63])
@pytest.mark.parametrize("value", [0, 1, -1, 2**62, -(2**63)])
def test_loads_and_stores_hit_exactly_one_element(index, value):
    for store in (_release_store, _relaxed_store):
        a = np.arange(64, dtype=np.int64)
        store(a, index, value)
        want = np.arange(64, dtype=np.int64)
        want[index] = value
        np.testing.assert_array_equal(a, want)
        assert _acquire(a, index) == value
        assert _relaxed(a, index) == value


def test_loads_reject_non_int64_arrays():
    from numba.core.errors import TypingError

    with pytest.raises(TypingError):
        _acquire(np.zeros(4, np.int32), 0)


def test_fence_and_pause_run():
    assert _fence_and_pause(1000) == 1000


def test_now_ns_is_clock_monotonic():
    before = time.monotonic_ns()
    t, _ = _clock_pair()
    after = time.monotonic_ns()
    assert before <= t <= after  # the same clock as time.monotonic_ns(), read between two of its calls


def test_now_ns_never_goes_backwards():
    assert _monotonic_run(1_000_000) == 0


def test_rdtsc_advances():
    _, c0 = _clock_pair()
    _, c1 = _clock_pair()
    assert c1 > c0 > 0


def test_nanosleep_sleeps_at_least_the_request():
    t0 = time.monotonic_ns()
    _sleep(2_000_000)
    assert time.monotonic_ns() - t0 >= 2_000_000


def test_sched_yield_and_getpid():
    _yield()
    assert _pid() == os.getpid()


def test_measure_clock_cost_reports_both_clocks():
    cost = A.measure_clock_cost_ns(10_000)
    assert set(cost) == {"clock_monotonic", "rdtsc"}
    assert all(v > 0 for v in cost.values())


def _exit_now():
    os._exit(0)


@pytest.mark.timeout(60)
def test_pid_alive():
    assert A.pid_alive(os.getpid())
    assert not A.pid_alive(0)
    assert not A.pid_alive(-5)
    p = FORK.Process(target=_exit_now)
    p.start()
    p.join(30)
    assert p.exitcode == 0
    assert not A.pid_alive(p.pid)  # reaped: gone (a pid is not reused this quickly)


def _waiter(name: str) -> None:
    seg = attach_segment(name)
    flag = seg.array(np.int64, 8)
    _release_store(flag, 1, 1)  # "I am about to spin"
    spins = _wait_until(flag, 0, 42)
    _release_store(flag, 2, max(spins, 0) + 1)
    os._exit(0)


@pytest.mark.timeout(60)
def test_busy_poll_sees_a_store_from_another_process(shm_name):
    """The waiter is already spinning when the value is written; it must notice and exit."""
    _wait_until(np.full(8, 42, np.int64), 0, 42)  # compile in the parent: the child inherits it by fork
    seg = create_segment(shm_name, 4096)
    p = None
    try:
        flag = seg.array(np.int64, 8)
        p = FORK.Process(target=_waiter, args=(shm_name,))
        p.start()
        deadline = time.monotonic() + 30
        while _acquire(flag, 1) != 1:
            assert p.is_alive() and time.monotonic() < deadline, "waiter did not start"
            time.sleep(0.001)
        time.sleep(0.05)  # let it spin on the old value for a while
        _release_store(flag, 0, 42)
        p.join(20)
        assert p.exitcode == 0, "the waiter never saw the store: its load was hoisted out of the loop"
        assert _acquire(flag, 2) > 1  # it really spun before seeing the value
        del flag
    finally:
        if p is not None and p.is_alive():
            p.kill()
            p.join(5)
        seg.close()
        unlink_segment(shm_name)


@njit(cache=False)
def _signal(fd):
    return A.eventfd_signal(fd)


def test_eventfd_signal_adds_one_and_wakes_the_supervisors_sleeper():
    """The source's worker signals the end of the feed from compiled code; the supervisor's sleeper wakes on
    it (not at its next look) and consumes it."""
    from hean.engine.supervisor import _Sleeper

    fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    sleeper = _Sleeper([os.getpid()], (fd,))
    try:
        assert _signal(fd) == 8 and _signal(fd) == 8  # write(2) of one 8-byte count, twice
        assert os.eventfd_read(fd) == 2
        _signal(fd)
        sleeper.wait(60.0)  # returns: the eventfd is readable (it would otherwise sleep a minute)
        with pytest.raises(BlockingIOError):
            os.eventfd_read(fd)  # the sleeper consumed it
        assert _signal(-1) == -1  # a bad descriptor: write fails, nothing raised
    finally:
        sleeper.close()
        os.close(fd)
