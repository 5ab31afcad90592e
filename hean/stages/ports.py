"""A stage's ports: the rings it takes records from and publishes to, as its step function sees them.

Why a module of its own: every stage's step uses the same few moves -- is there room for what this record
can produce, publish one or a batch, hand consumed slots back, take only what was published before a
snapshot of another ring -- and they must be the same moves in every stage, so that the fused placement and
the one-process-per-stage placement order records identically.

A :class:`Port` is one edge of the topology: a shared-memory ring when its two stages run in different
workers, a *private* ring (:func:`private_port`: the same layout and operations over process-local memory)
when they run in the same worker. ``act`` is the worker's ACTIVITY word in the control block (every port of
a worker shares it): bumped before each publish and release, so "ACTIVITY == IDLE_AT" means nothing of that
worker is in flight (the lockstep check, :func:`hean.engine.pipeline.quiescent`).

Memory order: the cursors are read and written by :mod:`hean.rings.spsc` (acquire loads of the peer's
cursor, release stores of one's own); ``act`` is a relaxed counter -- it orders nothing, it only changes.
Every function here is a forceinline kernel: the worker loop is one function.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from hean.atomics import load_acquire, load_relaxed, now_ns, store_relaxed
from hean.jit import kernel
from hean.rings.layout import CAPACITY, HDR_WORDS, MASK, READ, WRITE
from hean.rings.spsc import available, claim_upto, publish, release
from hean.stages.declare import F_UNTIMED
from hean.telemetry.block import C_EVENTS_IN, C_EVENTS_OUT, C_RING_FULL, TelemetryBlock, tm_add
from hean.telemetry.histogram import hist_record, hist_record_n

__all__ = [
    "BATCH",
    "H_SERVICE",
    "Port",
    "StageTm",
    "age",
    "empty",
    "goal_if_waiting",
    "out",
    "out_each",
    "out_each_nearest_first",
    "private_port",
    "put",
    "put_all",
    "put_all_each",
    "put_range",
    "put_range_each",
    "put_each",
    "room_each",
    "release_to",
    "room",
    "service",
    "slot",
    "take",
    "taken",
    "written",
]


BATCH = 256  # records one step takes from one input per call: bounds how long other inputs wait
H_SERVICE = 0  # every stage's first histogram row: time in the stage's kernel per input record


class Port(NamedTuple):
    """One edge as a stage sees it (see the module docstring)."""

    hdr: np.ndarray
    slots: np.ndarray
    act: np.ndarray


StageTm = TelemetryBlock  # a stage's telemetry as its step sees it: counters, histogram rows, risk region


def private_port(dtype, capacity: int, act: np.ndarray) -> Port:
    """A ring in process-local memory: the edge between two stages fused into one worker. Its slots are not
    zeroed: a slot is read only after it was written (the cursors say which), and zeroing a backtest's
    rings (13 of up to 512 KiB) was ~0.3 ms of each backtest."""
    hdr = np.zeros(HDR_WORDS, np.int64)
    hdr[CAPACITY] = capacity
    hdr[MASK] = capacity - 1
    return Port(hdr, np.empty(capacity, dtype), act)


@kernel(forceinline=True, error_model="numpy")
def room(port, n, tmc):
    """True when ``port`` has room for ``n`` more records (a shortage counts as a ring-full event)."""
    _, k = claim_upto(port.hdr, np.int64(n))  # not a literal: one claim_upto for every caller
    if k < n:
        tm_add(tmc, C_RING_FULL, 1)
        return False
    return True


@kernel(forceinline=True, error_model="numpy")
def _bump(port):
    store_relaxed(port.act, 0, port.act[0] + 1)


@kernel(forceinline=True, error_model="numpy")
def release_to(port, end):
    """Hand consumed slots back, up to ``end`` (after their outputs were published)."""
    _bump(port)
    release(port.hdr, end)


@kernel(forceinline=True, error_model="numpy")
def put(port, rec):
    """Publish one record; the caller checked the room."""
    _bump(port)
    seq, _ = claim_upto(port.hdr, 1)
    port.slots[seq & port.hdr[MASK]] = rec
    publish(port.hdr, seq + 1)


@kernel(forceinline=True, error_model="numpy")
def put_all(port, buf, n):
    """Publish ``buf[0:n]`` with one release store; the caller checked the room."""
    if n == 0:
        return
    _bump(port)
    seq, _ = claim_upto(port.hdr, n)
    m = port.hdr[MASK]
    for j in range(n):
        port.slots[(seq + j) & m] = buf[j]
    publish(port.hdr, seq + n)


@kernel(forceinline=True, error_model="numpy")
def room_each(ports, n, tmc):
    """Room for ``n`` records in every port of a stream's consumers."""
    for p in ports:
        if not room(p, n, tmc):
            return False
    return True


@kernel(forceinline=True, error_model="numpy")
def put_each(ports, rec):
    """Publish one record to every consumer of a stream, the furthest downstream first: a consumer never
    holds the effect of a record (an intent caused by a book state) before a later stage holds its cause."""
    for i in range(len(ports) - 1, -1, -1):
        put(ports[i], rec)


@kernel(forceinline=True, error_model="numpy")
def put_range(port, src, start, n, ts_origin):
    """Publish ``src[start:start + n]`` stamped ``ts_origin``, straight from ``src`` (no staging buffer), with
    one release store; the caller checked the room."""
    if n == 0:
        return
    _bump(port)
    seq, _ = claim_upto(port.hdr, n)
    m = port.hdr[MASK]
    for j in range(n):
        k = (seq + j) & m
        port.slots[k] = src[start + j]
        port.slots[k].ts_origin = ts_origin
    publish(port.hdr, seq + n)


@kernel(forceinline=True, error_model="numpy")
def put_range_each(ports, src, start, n, ts_origin):
    """:func:`put_range` to every consumer of a stream (the furthest downstream first, as put_each)."""
    for i in range(len(ports) - 1, -1, -1):
        put_range(ports[i], src, start, n, ts_origin)


@kernel(forceinline=True, error_model="numpy")
def put_all_each(ports, buf, n):
    """Publish ``buf[0:n]`` to every consumer of a stream (the furthest downstream first, as put_each)."""
    for i in range(len(ports) - 1, -1, -1):
        put_all(ports[i], buf, n)


@kernel(forceinline=True, error_model="numpy")
def out_each(ports, buf, n, tm):
    """Publish what a kernel wrote to ``buf[0:n]`` to every consumer of a stream (the caller checked the room
    in each) and count it once."""
    if n:
        put_all_each(ports, buf, n)
        tm_add(tm.counters, C_EVENTS_OUT, n)


@kernel(forceinline=True, error_model="numpy")
def out_each_nearest_first(ports, buf, n, tm):
    """:func:`out_each`, publishing to the consumers in pipeline order, the nearest first: for a stream whose
    last consumer is a background stage (the journal), so the hot consumer gets the record one ring publish
    sooner (risk's orders: the router first, then the journal)."""
    if n == 0:
        return
    for i in range(len(ports)):
        put_all(ports[i], buf, n)
    tm_add(tm.counters, C_EVENTS_OUT, n)


@kernel(forceinline=True, error_model="numpy")
def slot(port, seq):
    """The record at sequence ``seq`` of an input port (from ``take``'s ``start``)."""
    return port.slots[seq & port.hdr[MASK]]


@kernel(forceinline=True, error_model="numpy")
def take(src, dst, tmc):
    """``(start, n)``: the records of ``src`` a step that writes at most one record per input to every port
    of ``dst`` takes now -- up to BATCH when they all have room for that many, else one, else none (the
    shortage counted as a ring-full event)."""
    start, n = available(src.hdr)
    if n == 0:
        return start, 0
    n = min(n, BATCH)
    if room_each(dst, n, tmc):
        return start, n
    if room_each(dst, 1, tmc):
        return start, 1
    return start, 0


@kernel(forceinline=True, error_model="numpy")
def taken(src, start, n, tm, t0, published):
    """Close a batch ``take`` gave: its service time, the slots handed back (their outputs are published),
    records in and out counted."""
    service(tm.hists, t0, n)
    release_to(src, start + n)
    tm_add(tm.counters, C_EVENTS_IN, n)
    if published:
        tm_add(tm.counters, C_EVENTS_OUT, published)


@kernel(forceinline=True, error_model="numpy")
def out(port, buf, n, tm):
    """Publish what a kernel wrote to ``buf[0:n]`` (the caller checked the room) and count it."""
    for j in range(n):
        put(port, buf[j])
    if n:
        tm_add(tm.counters, C_EVENTS_OUT, n)


@kernel(forceinline=True, error_model="numpy")
def goal_if_waiting(first, then):
    """``(goal, start, n)``: the records waiting in ``then`` (``start``, ``n``) and, when there are any, the
    WRITE of ``first`` read after them (else -1). Everything published to ``first`` before those records is
    below ``goal``: the consumer applies it first, and takes only these ``n`` -- a record of ``then``
    published after the snapshot may follow ``first`` records above ``goal``. Reading ``then`` before
    ``first`` is what makes the bound hold."""
    start, n = available(then.hdr)
    if n == 0:
        return -1, start, n
    return load_acquire(first.hdr, WRITE), start, n


@kernel(forceinline=True, error_model="numpy")
def empty(port):
    return load_relaxed(port.hdr, WRITE) == load_relaxed(port.hdr, READ)


@kernel(forceinline=True, error_model="numpy")
def written(port):
    """The port's WRITE cursor: it changes whenever anything is published to it."""
    return load_relaxed(port.hdr, WRITE)


@kernel(forceinline=True, error_model="numpy")
def stage_clock(flags):
    """The clock a stage measures latency with: ``now_ns()`` -- or 0 in an untimed run (F_UNTIMED: a
    research backtest, whose wall-clock latencies nobody reads), which :func:`age` and :func:`service` then
    skip. Two to three reads per active stage per pass were half the cost of a simulated event."""
    if (flags & F_UNTIMED) != 0:
        return np.int64(0)
    return now_ns()


@kernel(forceinline=True, error_model="numpy")
def age(h, now, ts_origin):
    """Record ``now - ts_origin`` -- unless the record has no origin (0): a CANCEL_ALL that risk issued on
    its own (kill switch, loss trip) was caused by no market event and is not tick-to-trade -- or the run is
    untimed (``now`` 0, :func:`stage_clock`)."""
    if ts_origin > 0 and now != 0:
        hist_record(h, now - ts_origin)


@kernel(forceinline=True, error_model="numpy")
def service(h, t0, n):
    """Service time of a batch of ``n`` records, recorded as ``n`` samples of the per-record average.

    Two clock reads per batch, not per record: under load batches grow, and the measurement's own cost
    (22 ns per CLOCK_MONOTONIC read) shrinks per record instead of growing with the load.
    """
    if n > 0 and t0 != 0:  # (t0 0: untimed, stage_clock)
        t1 = now_ns()
        hist_record_n(h[H_SERVICE], (t1 - t0) // n, n)
