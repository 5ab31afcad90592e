"""Reading a journal back: every verified entry of every segment, in order, and what stopped the reading.

Why a scan rather than trusting the header's end offset: entries are self-delimiting and checksummed
(:mod:`hean.journal.format`), so a journal cut by a crash at any point reads back to its last whole entry
-- and an entry that is torn (a crash mid-write, a damaged or truncated file) is reported with where it is,
never decoded. The same scan follows a live journal (:func:`follow`): it stops at the first unwritten word
and resumes there.
"""

from __future__ import annotations

import mmap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hean.jit import entry
from hean.journal import format as J

__all__ = ["Journal", "find_segments", "follow", "read_journal"]

ST_END, ST_TORN, ST_EOF, ST_MORE, ST_NEXT = 0, 1, 2, 3, 4  # why a scan stopped
MAX_KIND = J.MAX_KIND


@entry(error_model="numpy")
def scan_entries(words, start, offs, kinds):
    """``(n, stop offset, status)``: the verified entries from ``start`` (their offsets and kinds into
    ``offs``/``kinds``), up to the first unwritten word (ST_END), a torn entry (ST_TORN), the file's end
    (ST_EOF), a full output (ST_MORE) or the segment's END entry (ST_NEXT)."""
    o = start
    n = 0
    end = len(words)
    while o + J.ENTRY_WORDS <= end:
        w0 = words[o]
        if w0 == 0:
            return n, o, ST_END
        size = w0 & 0xFFFFFFFF
        kind = w0 >> 32
        if size < J.ENTRY_WORDS or o + size > end or kind < 1 or kind > MAX_KIND:
            return n, o, ST_TORN
        if J.checksum(w0, words, o + J.ENTRY_WORDS, size - J.ENTRY_WORDS) != words[o + 1]:
            return n, o, ST_TORN
        if kind == J.K_END:
            return n, o + size, ST_NEXT
        if n == len(offs):
            return n, o, ST_MORE
        offs[n] = o
        kinds[n] = kind
        n += 1
        o += size
    return n, o, ST_EOF if o == end else ST_TORN


def find_segments(folder: str | Path) -> list[Path]:
    """The segment files of a journal folder, in order; a clear error when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise J.JournalError(f"{folder}: no such journal folder")
    segs = sorted(folder.glob(f"journal-*{J.SUFFIX}"))
    if not segs:
        raise J.JournalError(f"{folder}: no journal segments (journal-*.hj) in it")
    return segs


def _map(path: Path) -> np.ndarray:
    """A read-only int64 view of a segment file (whole words; a trailing partial word is a torn end)."""
    size = path.stat().st_size // 8 * 8
    if size == 0:
        return np.zeros(0, np.int64)
    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), size, mmap.MAP_SHARED, mmap.PROT_READ)
    return np.frombuffer(mm, np.int64)


@dataclass
class Journal:
    """A journal read back: the records of each kind (numpy structured arrays, in journal order), the
    metadata of its first segment, and every warning about how it ended."""

    folder: Path
    meta: dict
    records: dict[str, np.ndarray]  # "orders", "reports", "rejects", "controls", "marks", "market", "risk"
    segments: int
    closed: bool  # the run ended and closed the journal (False: cut by a crash, or still being written)
    warnings: list[str] = field(default_factory=list)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.records[name]

    def counts(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.records.items()}


def _gather(words: np.ndarray, offs: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The records at entry offsets ``offs`` as an array of ``dtype`` (a copy: the file may go away)."""
    rw = dtype.itemsize // 8
    idx = offs[:, None] + J.ENTRY_WORDS + np.arange(rw)[None, :]
    return np.ascontiguousarray(words[idx]).view(dtype).reshape(len(offs))


def _read_segment(path: Path, words: np.ndarray, head: J.SegmentHeader, out: dict, warnings: list) -> int:
    """Collect one segment's records into ``out`` (kind -> list of arrays); returns the scan status."""
    dtypes = head.dtypes()
    start = head.header_words
    cap = 1 << 16
    while True:
        offs, kinds = np.zeros(cap, np.int64), np.zeros(cap, np.int64)
        n, stop, status = scan_entries(words, start, offs, kinds)
        offs, kinds = offs[:n], kinds[:n]
        for k in np.unique(kinds).tolist():
            if k in dtypes:
                out.setdefault(k, []).append(_gather(words, offs[kinds == k], dtypes[k]))
        if status != ST_MORE:
            break
        start = stop
    if status == ST_TORN:
        warnings.append(
            f"{path}: a torn entry at byte {stop * 8} (a crash mid-write, or a damaged file): the journal "
            "is read up to the entry before it"
        )
    elif status == ST_EOF and head.state == J.S_OPEN:
        warnings.append(f"{path}: the file ends without the journal's end (truncated?)")
    return int(status)


def read_journal(folder: str | Path) -> Journal:
    """Every verified record of a journal folder (see the module docstring); warnings for a torn or cut end."""
    segs = find_segments(folder)
    out: dict[int, list[np.ndarray]] = {}
    warnings: list[str] = []
    meta: dict = {}
    closed = False
    for i, path in enumerate(segs):
        words = _map(path)
        head = J.SegmentHeader.read(path, words)
        if head.index != i:
            raise J.JournalError(f"{path}: segment {head.index} where segment {i} was expected (a file missing?)")
        meta = meta or head.meta
        status = _read_segment(path, words, head, out, warnings)
        closed = head.state == J.S_CLOSED
        if status == ST_NEXT and i == len(segs) - 1:
            warnings.append(f"{path}: the journal continues in segment {i + 1}, which is missing")
    if not closed and not warnings:
        warnings.append(f"{segs[-1]}: the journal was not closed: the run was cut short (or is still running)")
    records = {
        J.KIND_NAMES[k]: (np.concatenate(out[k]) if k in out else np.zeros(0, dt)) for k, dt in J.KIND_DTYPES.items()
    }
    return Journal(Path(folder), meta, records, len(segs), closed, warnings)


def follow(folder: str | Path, poll_s: float = 0.2, stop=None) -> Iterator[tuple[str, np.void]]:
    """``(kind name, record)`` for every entry of a journal as it is written (``hean journal tail``): reads
    what is there, then waits for more, moving to the next segment at each END. ``stop()`` true ends it."""
    folder = Path(folder)
    index, start, head, words = 0, None, None, None
    while stop is None or not stop():
        path = J.segment_path(folder, index)
        if words is None:
            if not path.exists():
                time.sleep(poll_s)
                continue
            words = _map(path)
            if len(words) < J.H_META or int(words[J.H_MAGIC]) != J.MAGIC:
                words = None  # being created
                time.sleep(poll_s)
                continue
            head = J.SegmentHeader.read(path, words)
            start = head.header_words
        offs, kinds = np.zeros(4096, np.int64), np.zeros(4096, np.int64)
        n, stop_at, status = scan_entries(words, start, offs, kinds)
        dtypes = head.dtypes()
        for o, k in zip(offs[:n].tolist(), kinds[:n].tolist(), strict=True):
            if k in dtypes:
                yield J.KIND_NAMES[k], _gather(words, np.array([o]), dtypes[k])[0]
        start = stop_at
        if status == ST_NEXT:
            index, words = index + 1, None
        elif status == ST_TORN:
            raise J.JournalError(f"{path}: a torn entry at byte {stop_at * 8}")
        elif status in (ST_END, ST_EOF) and n == 0:
            if int(words[J.H_STATE]) == J.S_CLOSED:
                return
            time.sleep(poll_s)
