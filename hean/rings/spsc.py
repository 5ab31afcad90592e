"""The ring's operations as ``@kernel`` functions over ``(hdr, slots)``, callable from any numba loop.

``hdr`` is the ring's int64 header view (:attr:`hean.rings.Ring.hdr`) and ``slots`` its structured slot
array (:attr:`hean.rings.Ring.slots`); capacity and mask are read from ``hdr``, so these two arrays are all
a stage needs. None of them allocates, raises or blocks: a full ring returns failure and the caller decides
whether to spin (:func:`push_spin`), count a drop (:func:`count_drop`) or back off.

Producer side::

    ok = try_push(hdr, slots, rec)            # copy one record, publish it (one release store)
    seq = try_claim(hdr, n)                   # reserve n slots, or -1 when fewer than n are free
    seq, k = claim_upto(hdr, n)               # reserve up to n slots (k may be 0)
    slots[(seq + j) & hdr[MASK]].price = ...  # write fields in place, j < n
    publish(hdr, seq + n)                     # one release store publishes the whole batch
    prefetch_claim(hdr, slots, seq + n, n)    # optional: pull the next batch's slots in, exclusive

Consumer side::

    seq = try_peek(hdr)                       # sequence of the oldest unread record, or -1 when empty
    rec = slots[seq & hdr[MASK]]              # read it in place ...
    release(hdr, seq + 1)                     # ... then hand the slot back (one release store)
    start, n = available(hdr)                 # everything visible; read slots, then release(hdr, start+n)

Every access to a shared word names its memory order (see :mod:`hean.rings.layout`). The numba cache does
not notice edits to ``layout.py`` or ``atomics.py``: after changing them, delete ``hean/**/*.nbi``.
"""

from __future__ import annotations

from hean.atomics import cpu_pause, load_acquire, load_relaxed, prefetch_write, store_relaxed, store_release
from hean.jit import kernel
from hean.rings.layout import (
    C_CACHED_WRITE,
    C_HIGH_WATER,
    C_READ,
    CAPACITY,
    MASK,
    P_CACHED_READ,
    P_DROPS,
    P_FULL,
    P_HIGH_WATER,
    P_WRITE,
    READ,
    WRITE,
)

__all__ = [
    "available",
    "claim_upto",
    "count_drop",
    "fill",
    "header_load",
    "header_store",
    "prefetch_claim",
    "publish",
    "push_spin",
    "release",
    "try_claim",
    "try_peek",
    "try_pop",
    "try_push",
]

# Why every operation is ``@kernel(forceinline=True)`` (each measured on the development VM):
# * no reference counting (``_nrt=False``, a kernel's default): numba reference-counts every array argument
#   (a ``lock inc``/``lock dec`` of the array's meminfo) around each call of a function that takes arrays,
#   and does not prune those in a busy loop that calls small helpers: 150 ns per push+pop in one process
#   instead of 8 ns. A locked instruction also drains the store buffer, which across cores stalls the
#   producer on every record. These functions never allocate or keep an array, so they hold borrowed
#   references and need no runtime.
# * ``forceinline=True`` (LLVM ``alwaysinline``): LLVM's cost model declines to inline a function that copies
#   a record (``try_push``); the call (a dozen stack stores for the exploded array arguments) then sits in
#   the producer's store buffer behind the slot and cursor stores, and across cores single-record pushes ran
#   3-5x slower (2 M/s vs 7-40 M/s for the same loop with claim/publish inlined).


# ----------------------------------------------------------------------------------------------------------
# producer
# ----------------------------------------------------------------------------------------------------------
@kernel(forceinline=True)
def _refresh_read(hdr, w):
    """Producer slow path: acquire-load the consumer's READ, cache it, sample the occupancy."""
    r = load_acquire(hdr, READ)  # acquire: the consumer's reads of those slots happened before
    store_relaxed(hdr, P_CACHED_READ, r)
    occ = w - r
    if occ > load_relaxed(hdr, P_HIGH_WATER):
        store_relaxed(hdr, P_HIGH_WATER, occ)
    return r


@kernel(forceinline=True)
def _count_full(hdr):
    store_relaxed(hdr, P_FULL, load_relaxed(hdr, P_FULL) + 1)


@kernel(forceinline=True)
def _claim(hdr, n):
    """Like :func:`try_claim` without counting a full event."""
    w = load_relaxed(hdr, P_WRITE)  # own cursor, private copy
    cap = hdr[CAPACITY]  # immutable after create
    if w + n - load_relaxed(hdr, P_CACHED_READ) > cap:
        r = _refresh_read(hdr, w)
        if w + n - r > cap:
            return -1
    return w


@kernel(forceinline=True)
def try_claim(hdr, n):
    """Reserve ``n`` consecutive slots; return the first sequence, or -1 (and count a full event).

    Nothing is visible to the consumer until :func:`publish`. ``n`` must be in ``1..capacity`` (a larger
    ``n`` can never succeed). Claiming again before publishing returns the same sequence.
    """
    seq = _claim(hdr, n)
    if seq < 0:
        _count_full(hdr)
    return seq


@kernel(forceinline=True)
def claim_upto(hdr, n):
    """Reserve up to ``n`` slots; return ``(first_sequence, k)`` with ``0 <= k <= n`` (k == 0: full).

    Re-reads the consumer's cursor only when the cached value shows fewer than ``n`` free slots; counts a
    full event when fewer than ``n`` are free even then.
    """
    w = load_relaxed(hdr, P_WRITE)
    cap = hdr[CAPACITY]
    free = cap - (w - load_relaxed(hdr, P_CACHED_READ))
    if free < n:
        free = cap - (w - _refresh_read(hdr, w))
        if free < n:
            _count_full(hdr)
    return w, min(n, free)


@kernel(forceinline=True)
def publish(hdr, end_seq):
    """Make every claimed slot below ``end_seq`` visible to the consumer (release store of WRITE)."""
    store_relaxed(hdr, P_WRITE, end_seq)
    store_release(hdr, WRITE, end_seq)


@kernel(forceinline=True)
def try_push(hdr, slots, rec):
    """Copy one record (an element of an array of the ring's dtype) into the ring; False when full."""
    seq = try_claim(hdr, 1)
    if seq < 0:
        return False
    slots[seq & hdr[MASK]] = rec
    publish(hdr, seq + 1)
    return True


@kernel(forceinline=True)
def push_spin(hdr, slots, rec, max_spins):
    """:func:`try_push`, retrying up to ``max_spins`` times with a ``pause`` between tries.

    Returns False when the ring stayed full, so the caller can return to Python every so often to check
    that the consumer is still alive (:func:`hean.rings.peer_alive`) instead of spinning forever. Counts
    at most one full event per call.
    """
    seq = _claim(hdr, 1)
    if seq < 0:
        _count_full(hdr)
        for _ in range(max_spins):
            cpu_pause()
            seq = _claim(hdr, 1)
            if seq >= 0:
                break
        if seq < 0:
            return False
    slots[seq & hdr[MASK]] = rec
    publish(hdr, seq + 1)
    return True


@kernel(forceinline=True)
def prefetch_claim(hdr, slots, seq, n):
    """Hint: start taking the slots of sequences ``seq .. seq+n-1`` exclusive for this core.

    Why: a slot's line was last read by the consumer, so the producer's first store to it waits for the
    consumer's core to give the line up (a read-for-ownership, one cross-core transfer). A batching producer
    that asks for the next batch's lines while it writes the current one overlaps those transfers with
    useful work: batched publication of 64-byte records went from ~250 to ~310 M records/s on the
    development VM (``hean bench ring``). Harmless if those slots are not free yet: a prefetch never
    writes, and the ring's cursors alone decide what may be written. Prefetches the first line of each
    record (the adjacent-line prefetcher usually brings the second of a 128-byte record).
    """
    mask = hdr[MASK]
    for j in range(n):
        prefetch_write(slots, (seq + j) & mask)


@kernel(forceinline=True)
def count_drop(hdr, n=1):
    """Count ``n`` records the producer dropped because the ring was full (its own decision)."""
    store_relaxed(hdr, P_DROPS, load_relaxed(hdr, P_DROPS) + n)


# ----------------------------------------------------------------------------------------------------------
# consumer
# ----------------------------------------------------------------------------------------------------------
@kernel(forceinline=True)
def _refresh_write(hdr, r):
    """Consumer slow path: acquire-load the producer's WRITE, cache it, sample the occupancy."""
    w = load_acquire(hdr, WRITE)  # acquire: the producer's slot writes below w are visible
    store_relaxed(hdr, C_CACHED_WRITE, w)
    occ = w - r
    if occ > load_relaxed(hdr, C_HIGH_WATER):
        store_relaxed(hdr, C_HIGH_WATER, occ)
    return w


@kernel(forceinline=True)
def try_peek(hdr):
    """Sequence of the oldest unread record, or -1 when the ring is empty. Read the slot, then release."""
    r = load_relaxed(hdr, C_READ)  # own cursor, private copy
    if r == load_relaxed(hdr, C_CACHED_WRITE):
        if _refresh_write(hdr, r) == r:
            return -1
    return r


@kernel(forceinline=True)
def try_pop(hdr, slots, out, i):
    """Copy the oldest unread record into ``out[i]`` and release its slot; False when empty."""
    r = try_peek(hdr)
    if r < 0:
        return False
    out[i] = slots[r & hdr[MASK]]
    release(hdr, r + 1)
    return True


@kernel(forceinline=True)
def available(hdr):
    """``(first_sequence, n)``: every record the consumer can read now (n == 0: empty).

    Uses the cached WRITE while it is ahead of READ, so a consumer that takes part of a batch and comes
    back does not touch the producer's cache line. Read ``slots[(first + j) & mask]`` for ``j < n`` (or
    fewer), then :func:`release` once.
    """
    r = load_relaxed(hdr, C_READ)
    w = load_relaxed(hdr, C_CACHED_WRITE)
    if w == r:
        w = _refresh_write(hdr, r)
    return r, w - r


@kernel(forceinline=True)
def release(hdr, end_seq):
    """Hand every slot below ``end_seq`` back to the producer (release store of READ)."""
    store_relaxed(hdr, C_READ, end_seq)
    store_release(hdr, READ, end_seq)


# ----------------------------------------------------------------------------------------------------------
# observer
# ----------------------------------------------------------------------------------------------------------
@kernel(forceinline=True)
def fill(hdr):
    """Records published and not yet released, as seen by any process (0..capacity)."""
    r = load_acquire(hdr, READ)  # READ first: WRITE read after it is >= it
    w = load_acquire(hdr, WRITE)
    n = w - r
    if n < 0:
        return 0
    cap = hdr[CAPACITY]
    return cap if n > cap else n


@kernel(forceinline=True)
def header_load(hdr, i):
    """``hdr[i]`` with acquire ordering (Python-side reads of header words: pids, counters, cursors)."""
    return load_acquire(hdr, i)


@kernel(forceinline=True)
def header_store(hdr, i, v):
    """``hdr[i] = v`` with release ordering (Python-side writes of header words: pids, magic)."""
    store_release(hdr, i, v)
