"""Finishing a journal whose writer died: what was still in its rings is appended by the supervisor.

Why: the journal stage runs in a worker of its own, and that worker may be killed like any other. What it
had written is safe in its files; what the other stages had published to it and it had not taken yet is
still in its rings, in shared memory the supervisor holds. Once the run's other workers have stopped (so
nothing more arrives), the supervisor appends those records to the journal with the same entry format --
so a kill -9 of the journal's worker loses nothing the venue reported either.

Two details a crash leaves behind: the writer may have died mid-entry (the entry's first word, stored last,
is then zero or its checksum fails: the append starts there, over it), and it may have written some records
of a batch whose ring slots it had not released yet (they are in both places: the records at the head of a
ring that equal the last ones journaled of that kind are skipped, never written twice).
"""

from __future__ import annotations

import mmap
import os
import time
from pathlib import Path

import numpy as np

from hean.journal import format as J
from hean.journal.reader import ST_MORE, ST_NEXT, find_segments, scan_entries

__all__ = ["append_pending"]

SCRUB_WORDS = 64  # words zeroed past the end before appending: the most a torn entry can have left behind


class _Segment:
    """The journal's last segment, mapped read-write, with where its entries end."""

    def __init__(self, path: Path) -> None:
        self.path = path
        size = path.stat().st_size // 8 * 8
        with open(path, "r+b") as f:
            self.mm = mmap.mmap(f.fileno(), size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.words = np.frombuffer(self.mm, np.int64)
        self.head = J.SegmentHeader.read(path, self.words)
        self.offs: list[int] = []
        self.kinds: list[int] = []
        self.end, self.sealed = self._scan()

    def _scan(self) -> tuple[int, bool]:
        start = self.head.header_words
        while True:
            offs, kinds = np.zeros(1 << 16, np.int64), np.zeros(1 << 16, np.int64)
            n, stop, status = scan_entries(self.words, start, offs, kinds)
            self.offs += offs[:n].tolist()
            self.kinds += kinds[:n].tolist()
            if status != ST_MORE:
                return int(stop), status == ST_NEXT
            start = stop

    def last_of_kind(self, kind: int, k: int, dtype: np.dtype) -> list[bytes]:
        """The payloads of the last ``k`` entries of ``kind``, oldest first."""
        rw = dtype.itemsize // 8
        out = [o for o, kd in zip(self.offs, self.kinds, strict=True) if kd == kind][-k:] if k else []
        return [self.words[o + J.ENTRY_WORDS : o + J.ENTRY_WORDS + rw].tobytes() for o in out]

    def room(self, words: int) -> bool:
        return self.end + words + J.ENTRY_WORDS <= len(self.words)

    def append(self, kind: int, rec: np.ndarray) -> None:
        w = rec.view(np.int64)
        o = self.end
        self.words[o + J.ENTRY_WORDS : o + J.ENTRY_WORDS + len(w)] = w
        word0 = np.int64(J.ENTRY_WORDS + len(w)) | (np.int64(kind) << np.int64(32))
        self.words[o + 1] = J.checksum(word0, self.words, o + J.ENTRY_WORDS, len(w))
        self.words[o] = word0
        self.end = o + J.ENTRY_WORDS + len(w)

    def scrub(self) -> None:
        """Zero what a torn entry may have left past the end (a reader stops at the first zero word)."""
        self.words[self.end : min(len(self.words), self.end + SCRUB_WORDS)] = 0

    def seal(self) -> None:
        """END: the journal continues in the next segment."""
        self.append(J.K_END, np.zeros(0, np.int64))
        self.words[J.H_END], self.words[J.H_STATE] = self.end, J.S_FULL

    def close(self, state: int) -> None:
        self.words[J.H_END], self.words[J.H_STATE] = self.end, state
        self.mm.flush()
        self.words = None  # type: ignore[assignment]
        self.mm.close()


def _next_segment(prev: _Segment) -> _Segment:
    """A new segment after ``prev``, the same size and header metadata."""
    path = J.segment_path(prev.path.parent, prev.head.index + 1)
    size = max(len(prev.words) * 8, (prev.head.header_words + 4096) * 8)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)
    with open(path, "r+b") as f:
        mm = mmap.mmap(f.fileno(), size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    words = np.frombuffer(mm, np.int64)
    meta = prev.words[J.H_META : J.H_META + (prev.head.header_words - J.H_META)].tobytes()
    meta = meta[: int(prev.words[J.H_META_BYTES])]
    J.init_segment(words, prev.head.index + 1, meta, time.time_ns())
    del words
    mm.close()
    return _Segment(path)


def _rotate(seg: _Segment) -> _Segment:
    nxt = _next_segment(seg)
    seg.close(J.S_FULL)
    return nxt


def append_pending(folder: str | Path, pending: list[tuple[int, np.ndarray]]) -> int:
    """Append ``pending`` -- ``(kind, records)`` per ring, each in ring order -- to the journal in ``folder``,
    skipping the records already journaled, and close the journal. Returns the records appended."""
    seg = _Segment(find_segments(folder)[-1])
    if seg.sealed:
        seg = _rotate(seg)
    todo = []
    for kind, recs in pending:
        if len(recs) == 0:
            continue
        tail = seg.last_of_kind(kind, len(recs), recs.dtype)
        head = [r.tobytes() for r in recs[: len(tail)]]
        skip = next((k for k in range(min(len(tail), len(recs)), 0, -1) if tail[-k:] == head[:k]), 0)
        todo.append((kind, recs[skip:]))
    seg.scrub()
    n = 0
    for kind, recs in todo:
        for rec in recs:
            words = rec.dtype.itemsize // 8
            if not seg.room(words + J.ENTRY_WORDS):
                seg.seal()
                seg = _rotate(seg)
            seg.append(kind, np.array(rec).reshape(1))
            n += 1
    seg.scrub()
    seg.close(J.S_CLOSED)
    return n
