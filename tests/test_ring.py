"""hean.rings in one process: semantics against a model, geometry, header validation, Python wrappers.

The state machine drives every producer and consumer operation (Python wrappers and the ``@njit``
functions) against a ``collections.deque`` model, for capacities 1..16, and checks after every step that
the ring holds exactly the model's records in order and that its counters agree.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import stat
from collections import deque

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from numba import njit

from hean import records
from hean.records import BOOK_STATE, EXEC_REPORT, MARKET_EVENT, ORDER
from hean.rings import (
    MASK,
    PeerDeadError,
    RingError,
    attach,
    available,
    claim_upto,
    count_drop,
    create,
    peer_alive,
    publish,
    push_spin,
    release,
    try_claim,
    try_peek,
    try_pop,
    try_push,
)
from hean.rings import layout as L
from hean.rings.spsc import header_store, prefetch_claim
from hean.shm import SHM_DIR, create_segment, unlink_segment

FORK = mp.get_context("fork")


def events(start: int, n: int) -> np.ndarray:
    a = np.zeros(n, MARKET_EVENT)
    a["seq"] = np.arange(start, start + n)
    a["price"] = a["seq"] * 7 + 1
    return a


@njit(cache=True, nogil=True)
def _write_claimed(slots, mask, seq, n, first_value):
    for j in range(n):
        s = slots[(seq + j) & mask]
        s.seq = first_value + j
        s.price = (first_value + j) * 7 + 1


@njit(cache=True, nogil=True)
def _read_seqs(slots, mask, start, n, out):
    for j in range(n):
        out[j] = slots[(start + j) & mask].seq


# --------------------------------------------------------------------------------------------------------
# model-based state machine
# --------------------------------------------------------------------------------------------------------
class RingMachine(RuleBasedStateMachine):
    """Each rule is one ring operation; the model is the deque of ``seq`` values the ring must hold."""

    def __init__(self):
        super().__init__()
        self.ring = None

    @initialize(capacity=st.sampled_from([1, 2, 4, 8, 16]), start=st.sampled_from([0, 2**62 - 5]))
    def setup(self, capacity, start):
        self.name = f"hean-test-sm-{os.getpid()}"
        unlink_segment(self.name)
        self.ring = create(self.name, MARKET_EVENT, capacity)
        # start the cursors anywhere: slot index is seq & mask, sequences never wrap
        for i in (L.WRITE, L.READ, L.P_WRITE, L.P_CACHED_READ, L.C_READ, L.C_CACHED_WRITE):
            header_store(self.ring.hdr, i, start)
        self.cap = capacity
        self.model: deque[int] = deque()
        self.next_value = 0  # seq field of the next record pushed
        self.full = 0

    def teardown(self):
        if self.ring is not None:
            self.ring.close()
            unlink_segment(self.name)

    @property
    def free(self) -> int:
        return self.cap - len(self.model)

    def _pushed(self, k: int) -> None:
        self.model.extend(range(self.next_value, self.next_value + k))
        self.next_value += k

    @rule(via=st.sampled_from(["python", "njit", "spin"]))
    def push_one(self, via):
        rec = events(self.next_value, 1)
        if via == "python":
            ok = self.ring.push(rec[0]) == 1
        elif via == "njit":
            ok = try_push(self.ring.hdr, self.ring.slots, rec[0])
        else:
            ok = push_spin(self.ring.hdr, self.ring.slots, rec[0], 3)
        assert ok == (self.free > 0)
        if ok:
            self._pushed(1)
        else:
            self.full += 1

    @rule(k=st.integers(0, 40))
    def push_array(self, k):
        got = self.ring.push(events(self.next_value, k))
        assert got == min(k, self.free)
        if got < k:
            self.full += 1
        self._pushed(got)

    @rule(k=st.integers(1, 17), publish_part=st.booleans())
    def claim_and_publish(self, k, publish_part):
        hdr = self.ring.hdr
        seq = try_claim(hdr, k)
        if k > self.free:
            assert seq == -1
            self.full += 1
            return
        assert seq == hdr[L.WRITE]
        assert try_claim(hdr, k) == seq  # claiming again before publishing reserves the same slots
        _write_claimed(self.ring.slots, hdr[MASK], seq, k, self.next_value)
        n = k // 2 if publish_part else k  # publishing a prefix of a claim is allowed
        publish(hdr, seq + n)
        self._pushed(n)

    @rule(k=st.integers(0, 17))
    def claim_upto_and_publish(self, k):
        hdr = self.ring.hdr
        seq, got = claim_upto(hdr, k)
        assert got == min(k, self.free)
        assert seq == hdr[L.WRITE]
        if got < k:
            self.full += 1
        _write_claimed(self.ring.slots, hdr[MASK], seq, got, self.next_value)
        publish(hdr, seq + got)
        self._pushed(got)

    @rule(via=st.sampled_from(["python", "njit", "peek"]))
    def pop_one(self, via):
        want = self.model.popleft() if self.model else None
        if via == "python":
            rec = self.ring.pop()
            got = None if rec is None else int(rec["seq"])
            if rec is not None:
                assert rec["price"] == got * 7 + 1
        elif via == "njit":
            out = np.zeros(1, MARKET_EVENT)
            got = int(out[0]["seq"]) if try_pop(self.ring.hdr, self.ring.slots, out, 0) else None
        else:
            seq = try_peek(self.ring.hdr)
            assert seq == try_peek(self.ring.hdr)  # peeking does not consume
            got = None
            if seq >= 0:
                got = int(self.ring.slots[seq & self.ring.mask]["seq"])
                release(self.ring.hdr, seq + 1)
        assert got == want

    @rule(take=st.integers(0, 17))
    def available_then_release_part(self, take):
        hdr = self.ring.hdr
        start, n = available(hdr)
        assert start == hdr[L.READ]
        assert n <= len(self.model)
        assert (n > 0) == (len(self.model) > 0)  # a cached view may be short, never empty when not
        k = min(n, take)
        out = np.zeros(k, np.int64)
        _read_seqs(self.ring.slots, hdr[MASK], start, k, out)
        assert out.tolist() == [self.model.popleft() for _ in range(k)]
        release(hdr, start + k)

    @rule(max_n=st.one_of(st.none(), st.integers(0, 20)))
    def pop_all(self, max_n):
        got = self.ring.pop_all(max_n)
        n = len(self.model) if max_n is None else min(max_n, len(self.model))
        assert got["seq"].tolist() == [self.model.popleft() for _ in range(n)]

    @precondition(lambda self: self.ring is not None)
    @rule(n=st.integers(1, 3))
    def drop(self, n):
        count_drop(self.ring.hdr, n)
        self.drops = getattr(self, "drops", 0) + n

    @invariant()
    def agrees_with_model(self):
        if self.ring is None:
            return
        s = self.ring.stats()
        assert len(self.ring) == len(self.model) == s["write"] - s["read"]
        assert s["full"] == self.full
        assert s["drops"] == getattr(self, "drops", 0)
        assert 0 <= s["high_water"] <= self.cap
        # the ring holds exactly the model's records, in order
        start = s["read"]
        held = [int(self.ring.slots[(start + j) & self.ring.mask]["seq"]) for j in range(len(self.model))]
        assert held == list(self.model)


TestRingMachine = RingMachine.TestCase
TestRingMachine.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


# --------------------------------------------------------------------------------------------------------
# deterministic edge cases
# --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("capacity", [1, 2, 8])
def test_many_laps_keep_order(shm_name, capacity):
    with create(shm_name, MARKET_EVENT, capacity) as ring:
        try:
            seen = []
            for lap in range(5 * capacity + 3):
                assert ring.push(events(lap * 10, capacity + 1)) == capacity  # one too many: refused
                assert len(ring) == capacity
                seen += ring.pop_all()["seq"].tolist()
                assert len(ring) == 0 and ring.pop() is None
            assert seen == [lap * 10 + j for lap in range(5 * capacity + 3) for j in range(capacity)]
            assert ring.stats()["full"] == 5 * capacity + 3
            assert ring.high_water == capacity
        finally:
            ring.unlink()


def test_full_ring_never_overwrites(shm_name):
    with create(shm_name, MARKET_EVENT, 4) as ring:
        try:
            assert ring.push(events(0, 4)) == 4
            for _ in range(3):
                assert not try_push(ring.hdr, ring.slots, events(99, 1)[0])
                assert try_claim(ring.hdr, 1) == -1
                assert claim_upto(ring.hdr, 5)[1] == 0
            assert ring.pop_all()["seq"].tolist() == [0, 1, 2, 3]
            assert ring.stats()["full"] == 9
        finally:
            ring.unlink()


def test_claim_more_than_capacity_fails(shm_name):
    with create(shm_name, MARKET_EVENT, 4) as ring:
        try:
            assert try_claim(ring.hdr, 5) == -1
            assert claim_upto(ring.hdr, 5) == (0, 4)
        finally:
            ring.unlink()


# --------------------------------------------------------------------------------------------------------
# create: geometry, dtype, permissions
# --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [MARKET_EVENT, BOOK_STATE, ORDER, EXEC_REPORT, records.CONTROL])
def test_record_dtypes_round_trip_through_the_header(shm_name, dtype):
    with create(shm_name, dtype, 8) as ring:
        try:
            with attach(shm_name) as other:
                assert other.dtype == dtype
                assert other.slots.dtype == dtype
                assert other.capacity == 8 and other.mask == 7
        finally:
            ring.unlink()


def test_unpadded_dtype_is_padded_to_a_cache_line(shm_name):
    dt = np.dtype([("a", "<i8"), ("b", "<f4"), ("v", "<i2", (3,))])  # 18 bytes
    with create(shm_name, dt, 4) as ring:
        try:
            assert ring.dtype.itemsize == 64
            assert ring.dtype.names == dt.names
            assert all(ring.dtype.fields[n][:2] == dt.fields[n][:2] for n in dt.names)
            with attach(shm_name) as other:
                assert other.dtype == ring.dtype
            rec = np.zeros(1, ring.dtype)
            rec["a"], rec["v"] = 5, [1, 2, 3]
            assert ring.push(rec) == 1
            got = ring.pop()
            assert got["a"] == 5 and got["v"].tolist() == [1, 2, 3]
        finally:
            ring.unlink()


def test_layout_offsets(shm_name):
    with create(shm_name, MARKET_EVENT, 16) as ring:
        try:
            hsize = int(ring.hdr[L.HEADER_SIZE])
            assert hsize % 128 == 0 and hsize >= L.DESCR_OFFSET + int(ring.hdr[L.DESCR_LEN])
            base = ring.hdr.ctypes.data
            assert ring.slots.ctypes.data - base == hsize
            assert (SHM_DIR / shm_name).stat().st_size == hsize + 16 * 64
            assert int(ring.hdr[L.RECORDS_VERSION]) == records.RECORDS_VERSION
            assert int(ring.hdr[L.CREATOR_PID]) == os.getpid()
        finally:
            ring.unlink()


def test_segment_is_owner_only(shm_name):
    with create(shm_name, MARKET_EVENT, 4) as ring:
        try:
            mode = stat.S_IMODE((SHM_DIR / shm_name).stat().st_mode)
            assert mode == 0o600
        finally:
            ring.unlink()


@pytest.mark.parametrize("capacity", [0, -1, 3, 6, 1000, 2**31, 2.0, "8"])
def test_bad_capacity(shm_name, capacity):
    with pytest.raises(RingError, match=f"ring '{shm_name}'.*capacity"):
        create(shm_name, MARKET_EVENT, capacity)
    assert not (SHM_DIR / shm_name).exists()


@pytest.mark.parametrize("dtype", [np.int64, np.dtype([("o", object)])])
def test_bad_dtype(shm_name, dtype):
    with pytest.raises(RingError, match="structured dtype"):
        create(shm_name, dtype, 4)


@pytest.mark.parametrize("name", ["ring", "/hean-x", "hean x", "hean/x", ""])
def test_bad_name(name):
    with pytest.raises(RingError, match="bad segment name"):
        create(name, MARKET_EVENT, 4)


def test_existing_name_is_refused(shm_name):
    with create(shm_name, MARKET_EVENT, 4) as ring:
        try:
            with pytest.raises(RingError, match="already exists"):
                create(shm_name, MARKET_EVENT, 4)
        finally:
            ring.unlink()


# --------------------------------------------------------------------------------------------------------
# attach: every header check names the segment
# --------------------------------------------------------------------------------------------------------
def test_attach_missing(shm_name):
    with pytest.raises(RingError, match=f"'{shm_name}' not found"):
        attach(shm_name)


def _corrupt(*pairs):
    def f(name):
        with attach(name, readonly=False) as r:
            for word, value in zip(pairs[::2], pairs[1::2], strict=True):
                header_store(r.hdr, word, value)

    return f


def _write_text(text):
    def f(name):
        with attach(name, readonly=False) as r:
            n = int(r.hdr[L.DESCR_LEN])  # same length, so the header size stays consistent
            r._seg.buf[L.DESCR_OFFSET : L.DESCR_OFFSET + n] = text.ljust(n)

    return f


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_corrupt(L.MAGIC, 0), "not initialised"),
        (_corrupt(L.MAGIC, 0x1234), "bad magic 0x0000000000001234"),
        (_corrupt(L.VERSION, 99), "layout version 99"),
        (_corrupt(L.RECORDS_VERSION, 99), "records version 99"),
        (_corrupt(L.CAPACITY, 6), "bad capacity 6"),
        (_corrupt(L.MASK, 3), "mask 3"),
        (_corrupt(L.CAPACITY, 1 << 20, L.MASK, (1 << 20) - 1), "segment is .* bytes, header says"),
        (_corrupt(L.RECORD_SIZE, 100), "bad record size 100"),
        (_corrupt(L.RECORD_SIZE, 128), "itemsize 64 != record size 128|header says"),
        (_corrupt(L.HEADER_SIZE, 64), "bad header size 64"),
        (_write_text(b"[('a', '<i8')] ; import os"), "unreadable dtype"),
        (_write_text(b"__import__('os')"), "unreadable dtype"),
    ],
)
def test_attach_rejects_a_bad_header(shm_name, damage, message):
    ring = create(shm_name, MARKET_EVENT, 8)
    try:
        damage(shm_name)
        with pytest.raises(RingError, match=f"ring '{shm_name}': (.*)({message})"):
            attach(shm_name)
    finally:
        ring.close()
        ring.unlink()


@pytest.mark.parametrize("size", [1, 100, 639])
def test_attach_rejects_a_small_segment(shm_name, size):
    create_segment(shm_name, size).close()
    try:
        with pytest.raises(RingError, match=f"ring '{shm_name}': segment is {size} bytes"):
            attach(shm_name)
    finally:
        unlink_segment(shm_name)


# --------------------------------------------------------------------------------------------------------
# roles, observers, lifecycle
# --------------------------------------------------------------------------------------------------------
def test_roles_record_and_clear_pids(shm_name):
    ring = create(shm_name, MARKET_EVENT, 4)
    try:
        prod = attach(shm_name, role="producer")
        cons = attach(shm_name, role="consumer")
        assert ring.producer_pid == ring.consumer_pid == os.getpid()  # the same process may hold both
        assert prod.push(events(0, 3)) == 3
        assert cons.pop_all()["seq"].tolist() == [0, 1, 2]
        prod.close()
        assert ring.producer_pid == 0 and ring.consumer_pid == os.getpid()
        cons.close()
        assert ring.consumer_pid == 0
        prod.close()  # idempotent
        assert prod.closed and "closed" in repr(prod)
    finally:
        ring.close()
        ring.unlink()


def _sleep_forever():
    import time

    time.sleep(600)


@pytest.mark.timeout(60)
def test_a_live_role_holder_is_not_displaced(shm_name):
    ring = create(shm_name, MARKET_EVENT, 4)
    p = FORK.Process(target=_sleep_forever)
    p.start()
    try:
        header_store(ring.hdr, L.CONSUMER_PID, p.pid)
        with pytest.raises(RingError, match=f"already has a live consumer: pid {p.pid}"):
            attach(shm_name, role="consumer")
        p.kill()
        p.join(10)
        with attach(shm_name, role="consumer") as cons:  # a dead holder's role can be taken over
            assert cons.consumer_pid == os.getpid()
    finally:
        p.kill()
        p.join(10)
        ring.close()
        ring.unlink()


def test_observer_is_read_only(shm_name):
    with create(shm_name, MARKET_EVENT, 4) as ring:
        try:
            ring.push(events(0, 2))
            with attach(shm_name) as obs:
                assert len(obs) == 2 and not obs.hdr.flags.writeable
                assert obs.stats()["write"] == 2
            with pytest.raises(RingError, match="needs a writable mapping"):
                attach(shm_name, role="producer", readonly=True)
            with pytest.raises(RingError, match="role must be"):
                attach(shm_name, role="both")
        finally:
            ring.unlink()


def test_push_rejects_another_dtype(shm_name):
    with create(shm_name, MARKET_EVENT, 4) as ring:
        try:
            with pytest.raises(RingError, match=f"ring '{shm_name}': record dtype"):
                ring.push(np.zeros(1, ORDER))
        finally:
            ring.unlink()


def test_drops_and_high_water(shm_name):
    with create(shm_name, MARKET_EVENT, 8) as ring:
        try:
            ring.push(events(0, 8))
            assert ring.push(events(8, 1)) == 0
            ring.count_drop()
            ring.count_drop(2)
            s = ring.stats()
            assert (s["full"], s["drops"], s["high_water"]) == (1, 3, 8)
        finally:
            ring.unlink()


def _exit_now():
    os._exit(0)


@pytest.mark.timeout(60)
def test_peer_alive_treats_zombies_as_dead():
    assert peer_alive(os.getpid())
    assert not peer_alive(0) and not peer_alive(-1)
    p = FORK.Process(target=_exit_now)
    p.start()
    try:
        for _ in range(1000):  # exited but not reaped: a zombie
            if not peer_alive(p.pid):
                break
            import time

            time.sleep(0.01)
        assert not peer_alive(p.pid)
    finally:
        p.join(10)


@pytest.mark.timeout(60)
def test_push_wait_detects_a_dead_consumer_and_times_out(shm_name):
    with create(shm_name, MARKET_EVENT, 2, role="producer") as ring:
        try:
            ring.push(events(0, 2))
            with pytest.raises(TimeoutError, match=f"ring '{shm_name}': still full"):
                ring.push_wait(events(2, 1), timeout=0.05, check_every=1000)
            p = FORK.Process(target=_exit_now)
            p.start()
            p.join(10)
            header_store(ring.hdr, L.CONSUMER_PID, p.pid)
            with pytest.raises(PeerDeadError, match=f"ring '{shm_name}': consumer pid {p.pid} is dead"):
                ring.push_wait(events(2, 1), check_every=1000)
            ring.pop()
            ring.push_wait(events(2, 1))  # room again: returns without checking anything
            assert ring.pop_all()["seq"].tolist() == [1, 2]
        finally:
            ring.unlink()


# --------------------------------------------------------------------------------------------------------
# codegen: the ring operations add no calls (no refcounting) to the loop that uses them
# --------------------------------------------------------------------------------------------------------
# not cached: numba can show the LLVM IR only of code it compiled in this process
@njit(cache=False, nogil=True)
def _one_op(hdr, slots, scratch, n):
    acc = 0
    for _ in range(n):
        acc += try_push(hdr, slots, scratch[0])
    return acc


@njit(cache=False, nogil=True)
def _many_ops(hdr, slots, scratch, n):
    acc = 0
    mask = hdr[MASK]
    for _ in range(n):
        acc += try_push(hdr, slots, scratch[0])
        s = try_peek(hdr)
        if s >= 0:
            acc += slots[s & mask].seq
            release(hdr, s + 1)
        w, k = claim_upto(hdr, 4)
        publish(hdr, w + k)
        start, m = available(hdr)
        release(hdr, start + m)
        acc += try_claim(hdr, 1) + push_spin(hdr, slots, scratch[0], 2)
        acc += try_pop(hdr, slots, scratch, 0)
    return acc


def _increfs_in(fn) -> int:
    """Reference-count increments in the optimised LLVM IR of ``fn``'s own body (not its wrapper)."""
    lines = fn.inspect_llvm(fn.signatures[0]).splitlines()
    name = fn.py_func.__name__
    start = next(i for i, x in enumerate(lines) if x.startswith("define") and name in x and "cpython" not in x)
    end = next(i for i in range(start, len(lines)) if lines[i] == "}")
    return sum("@NRT_incref(" in x for x in lines[start:end])


def test_ring_operations_inline_without_refcounting(shm_name):
    """numba refcounts array arguments around every call that is not inlined (a locked inc/dec each):
    the ring operations are compiled without the runtime, so adding more of them to a loop adds no calls.
    """
    with create(shm_name, MARKET_EVENT, 8) as ring:
        try:
            scratch = np.zeros(1, MARKET_EVENT)
            _one_op(ring.hdr, ring.slots, scratch, 2)
            _many_ops(ring.hdr, ring.slots, scratch, 2)
        finally:
            ring.unlink()
    one, many = _increfs_in(_one_op), _increfs_in(_many_ops)
    assert one <= 3  # at most the loop's own array arguments, once
    assert many == one, f"{many - one} refcount increments added by ring operations"


@njit(cache=False)  # its machine code is inspected: code loaded from numba's cache has none to show
def _prefetch_batch(hdr, slots, n):
    prefetch_claim(hdr, slots, 0, n)


def test_prefetch_claim_is_a_hint_that_changes_nothing(shm_name):
    """Prefetching slots (even ones not free yet, even more than the capacity) neither writes a slot nor
    moves a cursor, and compiles to the x86 ``prefetchw`` instruction the batching producer relies on."""
    with create(shm_name, MARKET_EVENT, 4) as ring:
        try:
            assert ring.push(events(0, 3)) == 3
            before_slots, before_stats = ring.slots.copy(), ring.stats()
            _prefetch_batch(ring.hdr, ring.slots, 9)
            assert ring.stats() == before_stats
            assert ring.slots.tobytes() == before_slots.tobytes()
            assert ring.pop_all()["seq"].tolist() == [0, 1, 2]
        finally:
            ring.unlink()
    asm = next(iter(_prefetch_batch.inspect_asm().values()))
    assert "prefetchw" in asm
