"""Byte layout of a ring segment: where every header word lives, who writes it, and with which ordering.

A ring is one POSIX shared-memory segment::

    offset  size  cache lines        contents                                  written by
    ------  ----  -----------------  ----------------------------------------  -------------------------------
         0    64  line 0             META: magic, versions, geometry           create(), once; read-only after
        64    64  line 1             OWNERS: producer/consumer/creator pids    attach(role) / close()
       128   128  lines 2-3          WRITE cursor (alone)                      producer only (release store)
       256   128  lines 4-5          READ cursor (alone)                       consumer only (release store)
       384   128  lines 6-7          producer private: own WRITE copy, cached  producer only (relaxed)
                                     READ, counters
       512   128  lines 8-9          consumer private: own READ copy, cached   consumer only (relaxed)
                                     WRITE, counters
       640     n  ...                dtype description, UTF-8 text             create(), once
    HEADER  cap*R                    slots: ``capacity`` records of R bytes    producer writes, consumer reads

``HEADER`` (the slots' offset) is ``640 + len(text)`` rounded up to 128 bytes; R (the record size) is a
multiple of 64, so every slot starts on its own cache line.

Cursors are *sequence numbers*, not indices: int64 counters that only grow (2**63 records at 10**9/s is
292 years), so ``WRITE - READ`` is the fill level with no wrap ambiguity and the slot of sequence ``s`` is
``s & MASK``. The ring is empty when ``READ == WRITE`` and full when ``WRITE - READ == CAPACITY``.

Memory order, one rule per word (the only accesses to shared words go through :mod:`hean.atomics`):

* WRITE: the producer fills slots, then **release**-stores WRITE (publish). The consumer **acquire**-loads
  WRITE before it reads those slots. One release store per batch publishes the whole batch.
* READ: the consumer reads slots, then **release**-stores READ. The producer **acquire**-loads READ before
  it overwrites those slots.
* Each side keeps a private copy of its *own* cursor (``P_WRITE``, ``C_READ``) and reads that, never the
  shared cursor: a load from the line the peer is polling gets snooped mid-flight, and on x86 that costs a
  memory-ordering machine clear per push (measured: 2-3 M/s instead of tens of M/s single-record).
* Each side's private copy of its own cursor, its cached copy of the peer's cursor and its counters are
  read and written with **relaxed** atomic accesses: there is one writer, and relaxed keeps the compiler
  from caching them in a register across a busy-poll loop, so an observer (``hean rings``, ``hean top``)
  sees current values.
* META and the dtype text are written before MAGIC, and MAGIC last with a **release** store; attach
  **acquire**-loads MAGIC first, so a half-initialised ring is never accepted.

Cached cursors (rigtorp's SPSCQueue, the Disruptor's cached gating sequence): the producer keeps
``P_CACHED_READ`` and re-reads READ only when the ring looks full from the cached value; the consumer keeps
``C_CACHED_WRITE`` and re-reads WRITE only when the ring looks empty. In steady state each side then touches
the other's cache line once per ``capacity`` records (or once per batch), not once per record.

High-water mark: each side, whenever it re-reads the peer's cursor, records the exact occupancy at that
instant (``WRITE - READ``) if it exceeds its previous maximum (``P_HIGH_WATER`` / ``C_HIGH_WATER``; one
writer each). The ring's high-water mark is the larger of the two: a sampled maximum (a lower bound of the
true peak between samples), exact whenever the producer found the ring full.
"""

from __future__ import annotations

import numpy as np

CACHE_LINE = 64
# cursors are 128 bytes apart: x86's adjacent-line prefetcher pulls cache lines in pairs
PAIR = 2 * CACHE_LINE
WORD = 8  # every header word is an int64

MAGIC_VALUE = int.from_bytes(b"HEANRING", "little")  # 0x474e4952_4e414548
LAYOUT_VERSION = 2  # 2: private copies of the own cursors (P_WRITE, C_READ) shifted the private words
MAX_CAPACITY = 1 << 30
MAX_RECORD_SIZE = 1 << 20
MAX_DESCR_BYTES = 1 << 16

# ---- line 0: META (bytes 0..63), written once by create() --------------------------------------------
MAGIC = 0  # MAGIC_VALUE; release-stored last by create(), acquire-loaded first by attach()
VERSION = 1  # LAYOUT_VERSION
CAPACITY = 2  # number of slots, a power of two
MASK = 3  # CAPACITY - 1: slot of sequence s is s & MASK
RECORD_SIZE = 4  # bytes per slot = dtype.itemsize, a multiple of 64
HEADER_SIZE = 5  # byte offset of slot 0, a multiple of 128
RECORDS_VERSION = 6  # hean.records.RECORDS_VERSION at creation; attach refuses another version
DESCR_LEN = 7  # bytes of dtype description text at DESCR_OFFSET

# ---- line 1: OWNERS (bytes 64..127) ---------------------------------------------------------------------
PRODUCER_PID = 8  # pid of the attached producer, 0 = none; set by attach(role='producer'), cleared by close
CONSUMER_PID = 9  # pid of the attached consumer, 0 = none
CREATOR_PID = 10  # pid that created the segment (liveness fallback when no role ever attached)
CREATED_NS = 11  # CLOCK_REALTIME ns at creation (for display)

# ---- lines 2-3: WRITE cursor, alone (bytes 128..255) ----------------------------------------------------
WRITE = 16  # next sequence the producer will write = total records published

# ---- lines 4-5: READ cursor, alone (bytes 256..383) -----------------------------------------------------
READ = 32  # next sequence the consumer will read = total records consumed

# ---- lines 6-7: producer private (bytes 384..511) -------------------------------------------------------
P_WRITE = 48  # the producer's own copy of WRITE (what it reads; WRITE itself is only stored)
P_CACHED_READ = 49  # producer's last-seen READ
P_FULL = 50  # push/claim attempts that found the ring full (after re-reading READ)
P_DROPS = 51  # records the producer chose to drop (count_drop)
P_HIGH_WATER = 52  # max occupancy seen when the producer re-read READ

# ---- lines 8-9: consumer private (bytes 512..639) -------------------------------------------------------
C_READ = 64  # the consumer's own copy of READ (what it reads; READ itself is only stored)
C_CACHED_WRITE = 65  # consumer's last-seen WRITE
C_HIGH_WATER = 66  # max occupancy seen when the consumer re-read WRITE

HDR_WORDS = 80  # the int64 view ``Ring.hdr`` covers bytes 0..639
DESCR_OFFSET = HDR_WORDS * WORD  # 640

# ---- invariants (checked at import, rigtorp-style) -------------------------------------------------------
assert MAGIC == 0 and DESCR_LEN * WORD < CACHE_LINE, "META must fit in line 0"
assert all(CACHE_LINE <= i * WORD < 2 * CACHE_LINE for i in (PRODUCER_PID, CONSUMER_PID, CREATOR_PID))
assert WRITE * WORD % PAIR == 0 and READ * WORD % PAIR == 0, "cursors start on a 128-byte boundary"
assert READ * WORD - WRITE * WORD >= PAIR, "WRITE and READ are at least 128 bytes apart"
assert P_WRITE * WORD - READ * WORD >= PAIR, "producer's private words are not on READ's lines"
assert C_READ * WORD - P_WRITE * WORD >= PAIR, "the two private areas do not share lines"
assert P_WRITE * WORD % PAIR == 0 and C_READ * WORD % PAIR == 0
_P = (P_WRITE, P_CACHED_READ, P_FULL, P_DROPS, P_HIGH_WATER)
_C = (C_READ, C_CACHED_WRITE, C_HIGH_WATER)
assert all(P_WRITE <= i < P_WRITE + PAIR // WORD for i in _P) and len(set(_P)) == len(_P)
assert all(C_READ <= i < C_READ + PAIR // WORD for i in _C) and len(set(_C)) == len(_C)
assert DESCR_OFFSET >= (C_READ * WORD + PAIR), "dtype text starts after the consumer's lines"
assert DESCR_OFFSET % CACHE_LINE == 0


def header_size(descr_len: int) -> int:
    """Byte offset of slot 0 for a dtype text of ``descr_len`` bytes: rounded up to 128 bytes."""
    return -(-(DESCR_OFFSET + descr_len) // PAIR) * PAIR


def segment_size(descr_len: int, capacity: int, record_size: int) -> int:
    return header_size(descr_len) + capacity * record_size


def is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def padded(dtype: np.dtype) -> np.dtype:
    """``dtype`` with its itemsize rounded up to a multiple of 64 (fields and offsets unchanged).

    Padding keeps every slot on its own cache lines: two adjacent records never share a line, so the
    producer writing slot s+1 never invalidates the line the consumer is reading slot s from.
    """
    size = -(-dtype.itemsize // CACHE_LINE) * CACHE_LINE
    if size == dtype.itemsize:
        return dtype
    if dtype.names is None:
        raise ValueError(f"ring records must be a structured dtype, got {dtype}")
    fields = {"names": [], "formats": [], "offsets": [], "itemsize": size}
    for name in dtype.names:
        fmt, off = dtype.fields[name][:2]
        fields["names"].append(name)
        fields["formats"].append(fmt)
        fields["offsets"].append(off)
    return np.dtype(fields)
