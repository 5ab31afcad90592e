"""A seqlock: one writer publishes a multi-word value that readers in other processes copy without tearing.

Why a seqlock and not a ring: the router needs the *latest* top of book of each (venue, symbol), never the
history, and the book stage must never wait for it. A ring would make the reader drain every update to find
the last one; a seqlock overwrites in place, the writer never blocks, and a reader that overlaps a write
notices (the sequence moved) and copies again. Only readers retry, and a write is a handful of stores.

Layout: a table of *entries*, each one cache line of eight int64 words::

    word  name       written by                          memory order
    ----  ---------  ----------------------------------  -------------------------------------------------
       0  SEQ        the entry's one writer               writer: relaxed store of s+1 (odd: being written),
                                                          release fence, ..., release store of s+2 (even).
                                                          reader: acquire load first, relaxed load again
                                                          after an acquire fence
     1-7  payload    the entry's one writer, between the  writer: relaxed stores after the release fence;
          (PAYLOAD   odd and the even SEQ store           reader: relaxed loads between the two SEQ loads
          .. 7)

A table is an int64 array whose last axis is :data:`ENTRY_WORDS` (``[n, 8]``, ``[n_venues, n_symbols, 8]``:
any leading shape), starting on a 64-byte boundary: a shared-memory segment is page-aligned, and
:func:`make_entries` aligns a private one. The kernels take one entry, ``table[i]`` / ``table[v, s]``: a
1-D view of its eight words.

The protocol (Boehm, "Can seqlocks get along with programming language memory models?", 2012):

* **Writer** (one per entry; it alone stores SEQ, so it reads its own SEQ back relaxed):
  ``SEQ = s + 1`` (relaxed) -> :func:`~hean.atomics.fence_release` -> payload (relaxed stores) ->
  ``SEQ = s + 2`` (release). The fence keeps the payload stores from moving above the odd SEQ, the release
  store keeps them from moving below the even one.
* **Reader**: ``s = SEQ`` (acquire); odd -> a write is in progress, try again; payload (relaxed loads) ->
  :func:`~hean.atomics.fence_acquire` -> ``SEQ`` again (relaxed); unchanged -> the copy is one write's
  payload; changed -> try again. The acquire load keeps the payload loads below the first SEQ load, the
  fence keeps them above the second.
* **Bounded**: a reader gives up after a number of tries and says "unavailable" (:func:`seqlock_read`
  returns -1): a writer killed between its two SEQ stores leaves the entry odd for ever, and the reader
  must not hang on it. The caller treats unavailable as no value (the router: as no quote from that venue).

On x86-64 every access above is a plain ``mov`` and both fences emit nothing: the cost over plain stores
and loads is what the compiler may no longer reorder or merge, plus one more load and a compare per read.
The payload words are atomic accesses too (relaxed), so the race the reader detects is not undefined
behaviour in LLVM's model, and no access is elided or hoisted out of a retry loop.

Why one entry per cache line: 1 + 7 words is exactly 64 bytes. The router's view (1 + 5 words) pays 16
bytes of padding per entry for it, a few KiB for a whole table, and in return a write to one
(venue, symbol) never invalidates the line a reader is copying another entry from (no false retries, no
extra miss), and a read is one line. Not 128 bytes (the ring cursors' spacing, against the adjacent-line
prefetcher): one writer writes every entry of a table and one reader reads them, so a neighbour's line
pulled in by the prefetcher costs at most an invalidation, never a retry; doubling the table is not worth
it.

The sequence starts at 0 (even: a zeroed table is a valid view whose payload is all zeros) and grows by 2
per write: 2**62 writes before it wraps.
"""

from __future__ import annotations

import numpy as np

from hean.atomics import (
    cpu_pause,
    fence_acquire,
    fence_release,
    load_acquire,
    load_relaxed,
    store_relaxed,
    store_release,
)
from hean.jit import kernel

__all__ = [
    "ENTRY_BYTES",
    "ENTRY_WORDS",
    "PAYLOAD",
    "PAYLOAD_WORDS",
    "SEQ",
    "aligned_words",
    "entries_bytes",
    "entries_view",
    "make_entries",
    "seqlock_begin",
    "seqlock_load",
    "seqlock_read",
    "seqlock_store",
    "seqlock_valid",
    "seqlock_write_begin",
    "seqlock_write_end",
]

CACHE_LINE = 64
WORD = 8
ENTRY_WORDS = 8  # one cache line
ENTRY_BYTES = ENTRY_WORDS * WORD
SEQ = 0  # the sequence word: even = stable, odd = being written
PAYLOAD = 1  # the first payload word
PAYLOAD_WORDS = ENTRY_WORDS - PAYLOAD  # at most 7 payload words per entry

# ---- invariants (checked at import, rigtorp-style) -------------------------------------------------------
assert ENTRY_BYTES == CACHE_LINE, "an entry is exactly one cache line"
assert SEQ == 0 and PAYLOAD == SEQ + 1 and PAYLOAD + PAYLOAD_WORDS == ENTRY_WORDS


def entries_bytes(n_entries: int) -> int:
    """Bytes of a table of ``n_entries`` entries."""
    if n_entries < 1:
        raise ValueError(f"a seqlock table needs at least one entry, got {n_entries}")
    return n_entries * ENTRY_BYTES


def entries_view(words: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``words`` (int64, e.g. a view of a shared-memory segment) as a table of ``shape`` entries
    (``int64[*shape, ENTRY_WORDS]``); its first entry must start on a cache line."""
    n = int(np.prod(shape))
    need = n * ENTRY_WORDS
    if words.dtype != np.int64 or words.ndim != 1 or words.shape[0] < need:
        raise ValueError(f"need int64[>= {need}] for {shape} seqlock entries, got {words.dtype}{words.shape}")
    if words.ctypes.data % CACHE_LINE:
        raise ValueError("a seqlock table must start on a 64-byte boundary")
    return words[:need].reshape(*shape, ENTRY_WORDS)


def aligned_words(n_words: int) -> np.ndarray:
    """Private zeroed int64[n_words] starting on a cache line (numpy guarantees only 16 bytes)."""
    raw = np.zeros(n_words + CACHE_LINE // WORD, dtype=np.int64)
    skip = (-raw.ctypes.data % CACHE_LINE) // WORD
    return raw[skip : skip + n_words]


def make_entries(shape: tuple[int, ...]) -> np.ndarray:
    """A private zeroed table of ``shape`` entries, its first entry on a cache line (every SEQ even)."""
    need = entries_bytes(int(np.prod(shape))) // WORD
    return entries_view(aligned_words(need), shape)


# ---- writer ------------------------------------------------------------------------------------------------
@kernel(forceinline=True)
def seqlock_write_begin(entry):
    """Mark ``entry`` as being written (SEQ odd) and return that odd sequence for :func:`seqlock_write_end`.

    The single writer reads its own SEQ back (relaxed: nobody else stores it). The release fence keeps the
    payload stores that follow from moving above the odd SEQ."""
    s = load_relaxed(entry, SEQ) + 1
    store_relaxed(entry, SEQ, s)
    fence_release()
    return s


@kernel(forceinline=True)
def seqlock_store(entry, w, value):
    """Payload word ``w`` (PAYLOAD..7) = ``value``, between :func:`seqlock_write_begin` and ``_end`` (relaxed)."""
    store_relaxed(entry, w, value)


@kernel(forceinline=True)
def seqlock_write_end(entry, s):
    """Publish: SEQ = ``s + 1`` (even), a release store -- every payload store is visible before it."""
    store_release(entry, SEQ, s + 1)


# ---- reader ------------------------------------------------------------------------------------------------
@kernel(forceinline=True)
def seqlock_begin(entry):
    """One try at starting a read: the (even) sequence to read under, or -1 while a write is in progress.

    An acquire load: the payload loads that follow cannot move above it."""
    s = load_acquire(entry, SEQ)
    return -1 if s & 1 else s


@kernel(forceinline=True)
def seqlock_load(entry, w):
    """Payload word ``w``, after :func:`seqlock_begin` and before :func:`seqlock_valid` (relaxed)."""
    return load_relaxed(entry, w)


@kernel(forceinline=True)
def seqlock_valid(entry, s):
    """True when no write overlapped the loads since :func:`seqlock_begin` returned ``s``: the copy is one
    write's payload. The acquire fence keeps those loads above the second SEQ load."""
    fence_acquire()
    return load_relaxed(entry, SEQ) == s


@kernel(forceinline=True)
def seqlock_read(entry, out, max_tries):
    """Copy the payload of ``entry`` into ``out[0:len(out)]`` (at most :data:`PAYLOAD_WORDS` words).

    Returns the number of tries it took (1 = no retry), or -1 when ``max_tries`` tries all overlapped a
    write: the entry is unavailable (its writer may have died mid-write) and ``out`` holds garbage.
    """
    n = min(out.shape[0], PAYLOAD_WORDS)
    for t in range(max_tries):
        s = seqlock_begin(entry)
        if s >= 0:
            for w in range(n):
                out[w] = seqlock_load(entry, PAYLOAD + w)
            if seqlock_valid(entry, s):
                return t + 1
        cpu_pause()
    return -1
