"""The journal's file layout: segment header, entries, checksum. The one place it is written down.

A journal is a folder of segment files ``journal-000000.hj``, ``journal-000001.hj``, ... each created at its
full size (``journal.segment_mb``, sparse until written) and mapped by the journal stage. All words are
little-endian int64.

**Segment header** (``header_words`` words, a multiple of 4 KiB):

======  ===============  ====================================================================================
word    name             meaning
======  ===============  ====================================================================================
0       H_MAGIC          ``b"HEANJNL1"``: a journal segment
1       H_VERSION        :data:`VERSION` (a reader refuses another)
2       H_HEADER_WORDS   where the first entry starts
3       H_SEGMENT        the segment's index (0, 1, ...): the files chain in this order
4       H_CREATED_NS     unix ns when the segment was created
5       H_END            the writer's next entry offset (words); release-stored after each batch -- a reader
                         may start a tail there, but never needs it: entries are self-delimiting
6       H_STATE          S_OPEN while written; S_FULL: continues in the next segment; S_CLOSED: the run ended
                         and wrote everything (a journal whose last segment is S_OPEN was cut by a crash)
7       H_META_BYTES     length of the JSON metadata from word 16 (run id, HEAN version, symbols with their
                         tick and lot sizes, strategies, the record dtypes by kind)
======  ===============  ====================================================================================

**Entry**: ``word0 = size_words | kind << 32``, ``word1 = checksum``, then the record's words (every HEAN
record is a multiple of 64 bytes: :mod:`hean.records`). The writer stores the record and the checksum first
and ``word0`` last, with release order: a reader that sees a non-zero ``word0`` (acquire) sees the whole
entry. ``word0 == 0`` is unwritten space: the end of the journal so far. An entry whose checksum does not
match, or that runs past the end of the file, is torn (a crash mid-write, or damage): the reader stops
before it and says so -- it never returns a record it could not verify.

**Checksum**: a 64-bit multiply-xorshift over ``word0`` and the record's words (:func:`checksum`). It is
there to catch torn and damaged entries, not an adversary; per 128-byte record it costs a few ns.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hean import records
from hean.jit import kernel

__all__ = [
    "ENTRY_WORDS",
    "KIND_DTYPES",
    "KIND_NAMES",
    "MAGIC",
    "VERSION",
    "JournalError",
    "SegmentHeader",
    "checksum",
    "segment_path",
]

MAGIC = int.from_bytes(b"HEANJNL1", "little")
VERSION = 1
SUFFIX = ".hj"

H_MAGIC, H_VERSION, H_HEADER_WORDS, H_SEGMENT, H_CREATED_NS, H_END, H_STATE, H_META_BYTES = range(8)
H_META = 16  # the JSON metadata starts at this word
PAGE_WORDS = 512  # header sizes round up to 4 KiB

S_OPEN, S_FULL, S_CLOSED = 0, 1, 2
STATE_NAMES = {S_OPEN: "open", S_FULL: "full", S_CLOSED: "closed"}

# entry kinds (word0 >> 32)
K_ORDER = 1  # an order risk passed to the router (ORDER)
K_REPORT = 2  # an execution report the router sent back (EXEC_REPORT): acks, fills, cancels, rejects
K_REJECT = 3  # an intent risk rejected, with its reason (EXEC_REPORT)
K_CONTROL = 4  # a control the supervisor sent (CONTROL): halt, resume, limits, a new trading day
K_MARK = 5  # a top of book sample (BOOK_STATE), at most one per symbol per journal.marks_ms of event time
K_MARKET = 6  # a market event (MARKET_EVENT), when journal.market is on
K_END = 7  # the segment is full: the journal continues in the next one
K_RISK = 8  # a symbol's trading state changed (CONTROL: kind the new TradingState, arg the old one, -1 at start)

KIND_DTYPES: dict[int, np.dtype] = {
    K_ORDER: records.ORDER,
    K_REPORT: records.EXEC_REPORT,
    K_REJECT: records.EXEC_REPORT,
    K_CONTROL: records.CONTROL,
    K_MARK: records.BOOK_STATE,
    K_MARKET: records.MARKET_EVENT,
    K_RISK: records.CONTROL,
}
KIND_NAMES = {K_ORDER: "orders", K_REPORT: "reports", K_REJECT: "rejects", K_CONTROL: "controls",
              K_MARK: "marks", K_MARKET: "market", K_END: "end", K_RISK: "risk"}  # fmt: skip
MAX_KIND = K_RISK
ENTRY_WORDS = 2  # words before the record

for _dt in KIND_DTYPES.values():
    assert _dt.itemsize % 8 == 0  # a record is whole words


class JournalError(ValueError):
    """A journal that cannot be read: the message names the file and what is wrong."""


@kernel(forceinline=True, error_model="numpy")
def checksum(word0, words, start, n):
    """The entry checksum over ``word0`` and ``words[start:start+n]`` (see the module docstring)."""
    h = np.uint64(0x9E3779B97F4A7C15) ^ np.uint64(word0)
    for i in range(start, start + n):
        h = (h ^ np.uint64(words[i])) * np.uint64(0xFF51AFD7ED558CCD)
        h ^= h >> np.uint64(32)
    return np.int64(h)


def segment_path(folder: str | Path, index: int) -> Path:
    return Path(folder) / f"journal-{index:06d}{SUFFIX}"


def header_words(meta: bytes) -> int:
    """Words of a segment header holding ``meta``: the fixed part and the JSON, rounded up to 4 KiB."""
    words = H_META + (len(meta) + 7) // 8
    return -(-words // PAGE_WORDS) * PAGE_WORDS


def encode_meta(meta: dict) -> bytes:
    """The metadata JSON, with the record dtypes by kind (a reader decodes records with the file's own)."""
    full = dict(meta)
    full["kinds"] = {str(k): {"name": KIND_NAMES[k], "descr": _descr(dt)} for k, dt in KIND_DTYPES.items()}
    return json.dumps(full, sort_keys=True).encode()


def _descr(dt: np.dtype) -> list:
    """``[name, base type, offset, shape]`` per field (a JSON-able dtype that keeps offsets and sub-arrays)."""
    out = []
    for name in dt.names:
        ft, off = dt.fields[name][:2]
        base, shape = (ft.subdtype[0], list(ft.subdtype[1])) if ft.subdtype else (ft, [])
        out.append([name, base.str, off, shape])
    return out


def dtype_from_descr(descr: list, itemsize: int) -> np.dtype:
    fields = [(name, (base, tuple(shape)) if shape else base, off) for name, base, off, shape in descr]
    return np.dtype({"names": [f[0] for f in fields], "formats": [f[1] for f in fields],
                     "offsets": [f[2] for f in fields], "itemsize": itemsize})  # fmt: skip


@dataclass(frozen=True)
class SegmentHeader:
    """A segment's header, read and checked (:meth:`read`)."""

    path: Path
    index: int
    header_words: int
    created_ns: int
    end: int
    state: int
    meta: dict

    @classmethod
    def read(cls, path: Path, words: np.ndarray) -> SegmentHeader:
        if len(words) < H_META or int(words[H_MAGIC]) != MAGIC:
            raise JournalError(f"{path}: not a HEAN journal segment (no HEANJNL1 magic)")
        if int(words[H_VERSION]) != VERSION:
            raise JournalError(f"{path}: journal format version {int(words[H_VERSION])}; this HEAN reads {VERSION}")
        hw, nbytes = int(words[H_HEADER_WORDS]), int(words[H_META_BYTES])
        if not H_META + (nbytes + 7) // 8 <= hw <= len(words):
            raise JournalError(f"{path}: damaged header (header of {hw} words, metadata of {nbytes} bytes)")
        try:
            meta = json.loads(words[H_META : H_META + (nbytes + 7) // 8].tobytes()[:nbytes])
        except ValueError as e:
            raise JournalError(f"{path}: damaged header metadata: {e}") from None
        return cls(path, int(words[H_SEGMENT]), hw, int(words[H_CREATED_NS]), int(words[H_END]),
                   int(words[H_STATE]), meta)  # fmt: skip

    def dtypes(self) -> dict[int, np.dtype]:
        """The record dtype of each entry kind, as the writer declared it."""
        out = {}
        for k, v in self.meta.get("kinds", {}).items():
            size = KIND_DTYPES[int(k)].itemsize if int(k) in KIND_DTYPES else None
            if size is not None:
                out[int(k)] = dtype_from_descr(v["descr"], size)
        return out


def init_segment(words: np.ndarray, index: int, meta: bytes, created_ns: int) -> int:
    """Write a fresh segment's header into its mapped ``words``; returns where entries start."""
    hw = header_words(meta)
    buf = np.zeros((hw - H_META) * 8, np.uint8)
    buf[: len(meta)] = np.frombuffer(meta, np.uint8)
    words[H_META:hw] = buf.view(np.int64)
    words[H_VERSION], words[H_HEADER_WORDS], words[H_SEGMENT] = VERSION, hw, index
    words[H_CREATED_NS], words[H_END], words[H_STATE], words[H_META_BYTES] = created_ns, hw, S_OPEN, len(meta)
    words[H_MAGIC] = MAGIC  # last: a segment with the magic has a whole header
    return hw
