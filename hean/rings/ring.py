"""The :class:`Ring` Python object: create, attach, close and unlink a ring; Python-speed push/pop wrappers.

The hot path does not use these wrappers: a stage passes :attr:`Ring.hdr` and :attr:`Ring.slots` into its
compiled loop and calls :mod:`hean.rings.spsc` there. The wrappers are for tests, tools and cold paths;
each call costs a few microseconds of interpreter and dispatch time.
"""

from __future__ import annotations

import ast
import os
import time
from typing import Literal

import numpy as np
from numpy.lib import format as npy_format

from hean import records
from hean.procs import process_alive as peer_alive  # a ring's peer: one notion of "alive" everywhere
from hean.rings import layout as L
from hean.rings import spsc
from hean.shm import Segment, SegmentError, attach_segment, create_segment, unlink_segment

__all__ = ["PeerDeadError", "Ring", "RingError", "attach", "create", "peer_alive"]

Role = Literal["producer", "consumer"]


class RingError(RuntimeError):
    """A ring could not be created or attached, or its header is not what it should be; names the ring."""


class PeerDeadError(RingError):
    """The process on the other side of a ring has exited; the message names the ring, role and pid."""

    def __init__(self, ring: str, role: str, pid: int):
        super().__init__(f"ring {ring!r}: {role} pid {pid} is dead (ring stays full; nobody will drain it)")
        self.ring, self.role, self.pid = ring, role, pid


def _dtype_text(dtype: np.dtype) -> bytes:
    """The dtype as text: the ``.npy`` file format's descr (padding kept as unnamed void fields)."""
    return repr(npy_format.dtype_to_descr(dtype)).encode()


def _parse_dtype(name: str, text: bytes) -> np.dtype:
    """Parse :func:`_dtype_text` output with ``ast.literal_eval`` (literals only: never executes code)."""
    try:
        return npy_format.descr_to_dtype(ast.literal_eval(text.decode()))
    except (ValueError, SyntaxError, TypeError, UnicodeDecodeError) as e:
        raise RingError(f"ring {name!r}: unreadable dtype description {text[:80]!r} ({e})") from None


class Ring:
    """One mapped SPSC ring. Use :func:`create` or :func:`attach`; close with :meth:`close` or ``with``.

    Attributes: ``name``, ``dtype``, ``capacity``, ``mask``, ``role`` ('producer', 'consumer' or None),
    ``hdr`` (int64 view of the header words, see :mod:`hean.rings.layout`), ``slots`` (structured view of
    the ``capacity`` slots), ``owner`` (True in the process that created the segment).
    """

    def __init__(self, seg: Segment, dtype: np.dtype, role: Role | None):
        self.name = seg.name
        self._seg = seg
        self.dtype = dtype
        self.hdr: np.ndarray = seg.array(np.int64, L.HDR_WORDS, 0)
        self.capacity = int(self.hdr[L.CAPACITY])
        self.mask = int(self.hdr[L.MASK])
        self.slots: np.ndarray = seg.array(dtype, self.capacity, int(self.hdr[L.HEADER_SIZE]))
        self.role = role
        self.owner = seg.owner

    # ---- lifecycle ----------------------------------------------------------------------------------------
    def take_role(self, role: Role | None) -> None:
        """Record this process as the ring's producer or consumer (e.g. in a child forked after create).

        Refused while another live process holds the role; a dead holder's role is taken over.
        """
        if role is None:
            return
        if role not in ("producer", "consumer"):
            raise RingError(f"ring {self.name!r}: role must be 'producer', 'consumer' or None, got {role!r}")
        slot = L.PRODUCER_PID if role == "producer" else L.CONSUMER_PID
        me = os.getpid()
        other = int(spsc.header_load(self.hdr, slot))
        if other not in (0, me) and peer_alive(other):
            raise RingError(f"ring {self.name!r} already has a live {role}: pid {other}")
        spsc.header_store(self.hdr, slot, me)
        self.role = role

    def close(self) -> None:
        """Give up this process's role (its pid is cleared from the header) and unmap. Idempotent."""
        if self._seg is None:
            return
        if self.role is not None and self._seg.buf is not None:
            slot = L.PRODUCER_PID if self.role == "producer" else L.CONSUMER_PID
            if int(spsc.header_load(self.hdr, slot)) == os.getpid():
                spsc.header_store(self.hdr, slot, 0)
        seg, self._seg = self._seg, None
        self.hdr = self.slots = None  # drop our views so the map can be released
        seg.close()

    def unlink(self) -> None:
        """Remove the segment's name from /dev/shm (mapped views stay valid until closed)."""
        unlink_segment(self.name)

    @property
    def closed(self) -> bool:
        return self._seg is None

    def __enter__(self) -> Ring:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        if self.closed:
            return f"<Ring {self.name!r} closed>"
        return f"<Ring {self.name!r} capacity={self.capacity} record={self.dtype.itemsize}B fill={len(self)}>"

    # ---- state ---------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        """Records published and not yet consumed (any process may ask)."""
        return int(spsc.fill(self.hdr))

    @property
    def producer_pid(self) -> int:
        return int(spsc.header_load(self.hdr, L.PRODUCER_PID))

    @property
    def consumer_pid(self) -> int:
        return int(spsc.header_load(self.hdr, L.CONSUMER_PID))

    @property
    def high_water(self) -> int:
        """Largest occupancy either side saw when it re-read the other's cursor (see layout)."""
        return max(int(spsc.header_load(self.hdr, L.P_HIGH_WATER)), int(spsc.header_load(self.hdr, L.C_HIGH_WATER)))

    def stats(self) -> dict[str, int]:
        """A snapshot of the cursors and counters (each word read atomically; not one consistent cut)."""
        h = self.hdr
        return {
            "capacity": self.capacity,
            "record_size": self.dtype.itemsize,
            "write": int(spsc.header_load(h, L.WRITE)),
            "read": int(spsc.header_load(h, L.READ)),
            "fill": len(self),
            "high_water": self.high_water,
            "full": int(spsc.header_load(h, L.P_FULL)),
            "drops": int(spsc.header_load(h, L.P_DROPS)),
            "producer_pid": self.producer_pid,
            "consumer_pid": self.consumer_pid,
            "creator_pid": int(spsc.header_load(h, L.CREATOR_PID)),
            "created_ns": int(spsc.header_load(h, L.CREATED_NS)),
        }

    # ---- Python-speed wrappers ----------------------------------------------------------------------------
    def _as_records(self, x) -> np.ndarray:
        arr = np.asarray(x)
        if arr.dtype != self.dtype:
            raise RingError(f"ring {self.name!r}: record dtype {arr.dtype} does not match the ring's {self.dtype}")
        return arr.reshape(-1)

    def push(self, x) -> int:
        """Push one record or an array of records without blocking; returns how many were pushed.

        Records go in order from the front; when the ring fills up the rest are not pushed (and one full
        event is counted). The caller decides whether to retry, wait (:meth:`push_wait`) or count a drop.
        """
        arr = self._as_records(x)
        n = len(arr)
        if n == 0:
            return 0
        seq, k = spsc.claim_upto(self.hdr, n)
        if k:
            self._copy_in(int(seq), arr[:k])
            spsc.publish(self.hdr, seq + k)
        return int(k)

    def push_wait(self, x, timeout: float | None = None, check_every: int = 100_000) -> None:
        """Push every record, spinning while the ring is full; raise if the consumer dies or time runs out.

        Between bursts of ``check_every`` spins the producer returns to Python and checks the consumer's
        pid (:class:`PeerDeadError`) and the ``timeout`` in seconds (:class:`TimeoutError`).
        """
        arr = self._as_records(x)
        deadline = None if timeout is None else time.monotonic() + timeout
        done = 0
        while done < len(arr):
            done += self.push(arr[done:])
            if done == len(arr):
                return
            if spsc.push_spin(self.hdr, self.slots, arr[done], check_every):
                done += 1
                continue
            pid = self.consumer_pid
            if pid and not peer_alive(pid):
                raise PeerDeadError(self.name, "consumer", pid)
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"ring {self.name!r}: still full after {timeout} s ({done}/{len(arr)} pushed)")

    def pop(self) -> np.void | None:
        """The oldest unread record (a copy), or None when the ring is empty."""
        seq = spsc.try_peek(self.hdr)
        if seq < 0:
            return None
        rec = self.slots[seq & self.mask].copy()
        spsc.release(self.hdr, seq + 1)
        return rec

    def pop_all(self, max_n: int | None = None) -> np.ndarray:
        """Every record published by now (at most ``max_n``), as a new array; one release store per batch.

        :func:`~hean.rings.spsc.available` answers from the consumer's cached WRITE first, so this takes
        batches until a fresh read of WRITE finds nothing more.
        """
        limit = self.capacity if max_n is None else int(max_n)
        parts = []
        got = 0
        while got < limit:
            start, n = spsc.available(self.hdr)
            n = min(int(n), limit - got)
            if n == 0:
                break
            part = np.empty(n, self.dtype)
            i = int(start) & self.mask
            first = min(n, self.capacity - i)
            part[:first] = self.slots[i : i + first]
            part[first:] = self.slots[: n - first]
            spsc.release(self.hdr, start + n)
            parts.append(part)
            got += n
        if len(parts) == 1:
            return parts[0]
        return np.concatenate(parts) if parts else np.empty(0, self.dtype)

    def count_drop(self, n: int = 1) -> None:
        spsc.count_drop(self.hdr, n)

    def _copy_in(self, seq: int, arr: np.ndarray) -> None:
        i = seq & self.mask
        first = min(len(arr), self.capacity - i)
        self.slots[i : i + first] = arr[:first]
        self.slots[: len(arr) - first] = arr[first:]


def create(name: str, dtype, capacity: int, role: Role | None = None) -> Ring:
    """Create a new ring segment ``/dev/shm/<name>`` (mode 0600) holding ``capacity`` records of ``dtype``.

    ``capacity`` must be a power of two; ``dtype`` a structured numpy dtype without Python objects, padded
    here to a multiple of 64 bytes. ``role`` optionally records this process as producer or consumer.
    """
    dtype = np.dtype(dtype)
    if dtype.names is None or dtype.hasobject:
        raise RingError(f"ring {name!r}: records must be a structured dtype without objects, got {dtype}")
    if not isinstance(capacity, int | np.integer) or not L.is_power_of_two(int(capacity)):
        raise RingError(f"ring {name!r}: capacity must be a power of two, got {capacity!r}")
    capacity = int(capacity)
    if capacity > L.MAX_CAPACITY:
        raise RingError(f"ring {name!r}: capacity {capacity} exceeds the maximum {L.MAX_CAPACITY}")
    dtype = L.padded(dtype)
    if dtype.itemsize > L.MAX_RECORD_SIZE:
        raise RingError(f"ring {name!r}: record size {dtype.itemsize} exceeds {L.MAX_RECORD_SIZE} bytes")
    text = _dtype_text(dtype)
    if len(text) > L.MAX_DESCR_BYTES:
        raise RingError(f"ring {name!r}: dtype description is {len(text)} bytes (max {L.MAX_DESCR_BYTES})")
    try:
        seg = create_segment(name, L.segment_size(len(text), capacity, dtype.itemsize))
    except SegmentError as e:
        raise RingError(str(e)) from None
    try:
        hdr = seg.array(np.int64, L.HDR_WORDS, 0)
        hdr[L.VERSION] = L.LAYOUT_VERSION
        hdr[L.CAPACITY] = capacity
        hdr[L.MASK] = capacity - 1
        hdr[L.RECORD_SIZE] = dtype.itemsize
        hdr[L.HEADER_SIZE] = L.header_size(len(text))
        hdr[L.RECORDS_VERSION] = records.RECORDS_VERSION
        hdr[L.DESCR_LEN] = len(text)
        hdr[L.CREATOR_PID] = os.getpid()
        hdr[L.CREATED_NS] = time.time_ns()
        seg.buf[L.DESCR_OFFSET : L.DESCR_OFFSET + len(text)] = text
        spsc.header_store(hdr, L.MAGIC, L.MAGIC_VALUE)  # last: attach accepts the ring only after this
        del hdr
        ring = Ring(seg, dtype, role)
        ring.take_role(role)
    except BaseException:
        seg.close()
        unlink_segment(name)
        raise
    return ring


def _check_header(name: str, seg: Segment) -> np.dtype:
    """Validate a mapped segment's header; return the ring's dtype or raise :class:`RingError`."""
    if seg.size < L.DESCR_OFFSET:
        raise RingError(f"ring {name!r}: segment is {seg.size} bytes, too small for a ring header")
    hdr = seg.array(np.int64, L.HDR_WORDS, 0)
    magic = int(spsc.header_load(hdr, L.MAGIC))
    if magic != L.MAGIC_VALUE:
        what = "not initialised (magic 0)" if magic == 0 else f"bad magic {magic & (2**64 - 1):#018x}"
        raise RingError(f"ring {name!r}: {what}: not a HEAN ring")
    version = int(hdr[L.VERSION])
    if version != L.LAYOUT_VERSION:
        raise RingError(f"ring {name!r}: layout version {version}, this HEAN reads version {L.LAYOUT_VERSION}")
    rv = int(hdr[L.RECORDS_VERSION])
    if rv != records.RECORDS_VERSION:
        raise RingError(
            f"ring {name!r}: records version {rv}, this HEAN uses records version {records.RECORDS_VERSION}"
        )
    cap, mask, rsize = int(hdr[L.CAPACITY]), int(hdr[L.MASK]), int(hdr[L.RECORD_SIZE])
    dlen, hsize = int(hdr[L.DESCR_LEN]), int(hdr[L.HEADER_SIZE])
    if not L.is_power_of_two(cap) or cap > L.MAX_CAPACITY or mask != cap - 1:
        raise RingError(f"ring {name!r}: bad capacity {cap} / mask {mask} in header")
    if rsize <= 0 or rsize % L.CACHE_LINE or rsize > L.MAX_RECORD_SIZE:
        raise RingError(f"ring {name!r}: bad record size {rsize} in header")
    if not 0 < dlen <= L.MAX_DESCR_BYTES or hsize != L.header_size(dlen):
        raise RingError(f"ring {name!r}: bad header size {hsize} / dtype text length {dlen}")
    want = L.segment_size(dlen, cap, rsize)
    if seg.size < want:
        raise RingError(f"ring {name!r}: segment is {seg.size} bytes, header says {want}")
    dtype = _parse_dtype(name, bytes(seg.buf[L.DESCR_OFFSET : L.DESCR_OFFSET + dlen]))
    if dtype.itemsize != rsize:
        raise RingError(f"ring {name!r}: dtype itemsize {dtype.itemsize} != record size {rsize} in header")
    return dtype


def attach(name: str, role: Role | None = None, readonly: bool | None = None) -> Ring:
    """Map an existing ring; its dtype and geometry come from the header (validated; errors name the ring).

    ``role='producer'`` / ``'consumer'`` records this process's pid in the header (refused while another
    live process holds the role); ``None`` attaches as an observer, read-only unless ``readonly=False``.
    """
    if readonly is None:
        readonly = role is None
    if readonly and role is not None:
        raise RingError(f"ring {name!r}: a {role} needs a writable mapping")
    try:
        seg = attach_segment(name, readonly=readonly)
    except SegmentError as e:
        raise RingError(str(e)) from None
    try:
        dtype = _check_header(name, seg)
        ring = Ring(seg, dtype, role)
        ring.take_role(role)
    except BaseException:
        seg.close()
        raise
    return ring
