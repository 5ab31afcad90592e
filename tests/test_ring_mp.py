"""hean.rings across processes: a 10-million-record stress test, and what happens when a peer is killed.

The stress test moves records between a producer and a consumer process through one ring and verifies,
in numba on the consumer side, that every record arrives exactly once and in order (its ``seq`` equals
the expected counter) and untorn (an order-sensitive checksum over every field matches the producer's).
It runs with the two processes pinned to different CPUs and unpinned (the scheduler may then put both
on one CPU: the idle loops yield, so progress continues at scheduler speed).

Processes are forked after the numba loops are compiled in the parent, so a child starts in a few ms.
Every child is killed and joined by pid in ``finally``, and every segment unlinked.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time

import numpy as np
import pytest
from numba import njit

from hean.atomics import cpu_pause, sched_yield
from hean.cli import main as hean_main
from hean.records import MARKET_EVENT
from hean.rings import (
    MASK,
    PeerDeadError,
    attach,
    available,
    claim_upto,
    create,
    peer_alive,
    publish,
    release,
    try_peek,
    try_push,
)
from hean.shm import SHM_DIR, unlink_segment

FORK = mp.get_context("fork")
N_RECORDS = 10_000_000
CAPACITY = 4096
BATCH = 64
IDLE_RETURN = 1 << 20  # idle polls before a loop returns to Python to check its peer
MIX = 1099511628211  # FNV-64 prime: an order-sensitive checksum


@njit(cache=True, nogil=True, inline="always")
def _fill(r, s):
    r.seq = s
    r.ts_origin = s * -7046029254386353131
    r.ts_exch = s ^ 0x5555
    r.symbol = s & 0x7FFF
    r.kind = s & 0x7F
    r.price = s * 3 + 1
    r.qty = ~s
    r.order_id = s >> 3
    r.update_id = -s


@njit(cache=True, nogil=True, inline="always")
def _mix(acc, r):
    acc = acc * MIX + r.seq
    acc = acc * MIX + (r.ts_origin ^ r.ts_exch)
    acc = acc * MIX + r.symbol + r.kind
    acc = acc * MIX + (r.price ^ r.qty)
    return acc * MIX + (r.order_id ^ r.update_id)


@njit(cache=True, nogil=True)
def _idle(idle):
    if idle & 255 == 0:
        sched_yield()  # a co-located peer gets the CPU instead of waiting for the next tick
    else:
        cpu_pause()


@njit(cache=True, nogil=True)
def produce_batched(hdr, slots, seq, end, acc):
    """Claim up to BATCH slots, fill them, publish once; return (next seq, checksum) when done or idle."""
    mask = hdr[MASK]
    idle = 0
    while seq < end:
        w, k = claim_upto(hdr, min(BATCH, end - seq))
        if k == 0:
            idle += 1
            if idle > IDLE_RETURN:
                break
            _idle(idle)
            continue
        idle = 0
        for j in range(k):
            r = slots[(w + j) & mask]
            _fill(r, seq + j)
            acc = _mix(acc, r)
        publish(hdr, w + k)
        seq += k
    return seq, acc


@njit(cache=True, nogil=True)
def produce_single(hdr, slots, seq, end, acc, scratch):
    """One try_push per record (copying from a scratch record)."""
    idle = 0
    while seq < end:
        _fill(scratch[0], seq)
        if not try_push(hdr, slots, scratch[0]):
            idle += 1
            if idle > IDLE_RETURN:
                break
            _idle(idle)
            continue
        idle = 0
        acc = _mix(acc, scratch[0])
        seq += 1
    return seq, acc


@njit(cache=True, nogil=True)
def consume_batched(hdr, slots, expected, end, acc, errors):
    """Take everything available, verify and checksum it, release once per batch."""
    mask = hdr[MASK]
    idle = 0
    while expected < end:
        start, n = available(hdr)
        if n == 0:
            idle += 1
            if idle > IDLE_RETURN:
                break
            _idle(idle)
            continue
        idle = 0
        for j in range(n):
            r = slots[(start + j) & mask]
            if r.seq != expected:
                errors += 1
            acc = _mix(acc, r)
            expected += 1
        release(hdr, start + n)
    return expected, acc, errors


@njit(cache=True, nogil=True)
def consume_single(hdr, slots, expected, end, acc, errors):
    """try_peek / read / release one record at a time."""
    mask = hdr[MASK]
    idle = 0
    while expected < end:
        s = try_peek(hdr)
        if s < 0:
            idle += 1
            if idle > IDLE_RETURN:
                break
            _idle(idle)
            continue
        idle = 0
        r = slots[s & mask]
        if r.seq != expected:
            errors += 1
        acc = _mix(acc, r)
        release(hdr, s + 1)
        expected += 1
    return expected, acc, errors


def _pin(cpu):
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def _producer(name, n, cpu, mode, conn):
    try:
        _pin(cpu)
        ring = attach(name, role="producer")
        seq, acc = 0, 0
        scratch = np.zeros(1, ring.dtype)
        while seq < n:
            if mode == "batched":
                seq, acc = produce_batched(ring.hdr, ring.slots, seq, n, acc)
            else:
                seq, acc = produce_single(ring.hdr, ring.slots, seq, n, acc, scratch)
            if seq < n and not peer_alive(ring.consumer_pid) and ring.consumer_pid:
                raise PeerDeadError(name, "consumer", ring.consumer_pid)
        conn.send(("ok", seq, acc, os.sched_getaffinity(0)))
    except BaseException as e:
        conn.send(("error", repr(e)))
    os._exit(0)


def _consumer(name, n, cpu, mode, conn):
    try:
        _pin(cpu)
        ring = attach(name, role="consumer")
        got, acc, errors = 0, 0, 0
        t0 = time.perf_counter()
        while got < n:
            fn = consume_batched if mode == "batched" else consume_single
            got, acc, errors = fn(ring.hdr, ring.slots, got, n, acc, errors)
            if got < n and ring.producer_pid and not peer_alive(ring.producer_pid):
                raise PeerDeadError(name, "producer", ring.producer_pid)
        conn.send(("ok", got, acc, errors, time.perf_counter() - t0, ring.stats()))
    except BaseException as e:
        conn.send(("error", repr(e)))
    os._exit(0)


def _warm_up(name):
    """Compile (or load from cache) every loop in the parent, so forked children start instantly."""
    with create(name, MARKET_EVENT, 8) as ring:
        try:
            scratch = np.zeros(1, ring.dtype)
            produce_batched(ring.hdr, ring.slots, 0, 4, 0)
            consume_batched(ring.hdr, ring.slots, 0, 4, 0, 0)
            produce_single(ring.hdr, ring.slots, 0, 4, 0, scratch)
            consume_single(ring.hdr, ring.slots, 0, 4, 0, 0)
        finally:
            ring.unlink()


def _recv(conn, proc, timeout):
    if not conn.poll(timeout):
        raise AssertionError(f"pid {proc.pid} sent no result within {timeout} s (alive: {proc.is_alive()})")
    return conn.recv()


def _run_pair(name, n, cpus, mode):
    _warm_up(name + "w")
    ring = create(name, MARKET_EVENT, CAPACITY)
    procs = []
    try:
        p_recv, p_send = FORK.Pipe(duplex=False)
        c_recv, c_send = FORK.Pipe(duplex=False)
        cons = FORK.Process(target=_consumer, args=(name, n, cpus[1], mode, c_send))
        prod = FORK.Process(target=_producer, args=(name, n, cpus[0], mode, p_send))
        for p in (cons, prod):
            p.start()
            procs.append(p)
        pres = _recv(p_recv, prod, 150)
        cres = _recv(c_recv, cons, 150)
        assert pres[0] == "ok", f"producer: {pres}"
        assert cres[0] == "ok", f"consumer: {cres}"
        _, sent, p_acc, p_cpus = pres
        _, got, c_acc, errors, secs, stats = cres
        assert sent == got == n
        assert errors == 0, f"{errors} records out of order, lost or duplicated"
        assert c_acc == p_acc, "checksum mismatch: a record arrived torn or altered"
        assert stats["write"] == stats["read"] == n and len(ring) == 0
        if cpus[0] is not None:
            assert p_cpus == {cpus[0]}
        print(f"{mode} {cpus}: {n / secs / 1e6:.1f} M records/s, full {stats['full']}")
    finally:
        for p in procs:
            if p.is_alive():
                os.kill(p.pid, signal.SIGKILL)
            p.join(10)
        ring.close()
        unlink_segment(name)


def _two_cpus():
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip(f"pinning to two different CPUs needs two CPUs; this process may use {cpus}")
    return cpus[0], cpus[1]


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("pinned", [True, False], ids=["pinned", "unpinned"])
def test_ten_million_records_batched(shm_name, pinned):
    _run_pair(shm_name, N_RECORDS, _two_cpus() if pinned else (None, None), "batched")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_million_single_records_pinned(shm_name):
    _run_pair(shm_name, 2_000_000, _two_cpus(), "single")


# --------------------------------------------------------------------------------------------------------
# kill -9 of the consumer
# --------------------------------------------------------------------------------------------------------
def _slow_consumer(name, conn):
    ring = attach(name, role="consumer")
    first = ring.pop_all(10)
    conn.send(len(first))
    while True:  # attached, alive, never consuming again
        time.sleep(1)


@pytest.mark.timeout(120)
def test_killed_consumer_is_detected_and_its_ring_cleaned(shm_name, capsys):
    ring = create(shm_name, MARKET_EVENT, 64, role="producer")
    proc = None
    try:
        recs = np.zeros(64, MARKET_EVENT)
        recs["seq"] = np.arange(64)
        ring.push(recs)
        recv, send = FORK.Pipe(duplex=False)
        proc = FORK.Process(target=_slow_consumer, args=(shm_name, send))
        proc.start()
        assert _recv(recv, proc, 60) == 10
        assert ring.consumer_pid == proc.pid and peer_alive(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)  # not joined yet: a zombie, which counts as dead
        with pytest.raises(PeerDeadError, match=f"ring '{shm_name}': consumer pid {proc.pid} is dead"):
            ring.push_wait(recs, timeout=60, check_every=10_000)
        ring.close()  # the producer (this process) gives up its role: now both recorded owners are dead
        capsys.readouterr()

        assert hean_main(["rings"]) == 0
        listing = capsys.readouterr().out
        line = next(x for x in listing.splitlines() if x.startswith(shm_name + " "))
        assert "STALE" in line and f"{proc.pid} (dead)" in line

        assert hean_main(["rings", "clean", shm_name]) == 0
        assert f"removed /dev/shm/{shm_name} (ring of no run: no recorded owner alive)" in capsys.readouterr().out
        assert not (SHM_DIR / shm_name).exists()
    finally:
        if proc is not None:
            if proc.is_alive():
                os.kill(proc.pid, signal.SIGKILL)
            proc.join(10)
        ring.close()
        unlink_segment(shm_name)
