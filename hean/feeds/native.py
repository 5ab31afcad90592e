"""HEAN's native event file: MARKET_EVENT records behind a small self-describing header, memory-mapped on replay.

Why: parsing JSON costs microseconds a line; replaying fixed 64-byte records from a memory map costs
nothing, so recordings are converted once (``hean convert``) and replayed many times.

Layout (little-endian)::

    offset  size  field
    0       8     magic b"HEANEVT1"
    8       4     file format version (FORMAT_VERSION)
    12      4     records version (hean.records.RECORDS_VERSION)
    16      8     number of records
    24      8     data offset (header size, a multiple of 64)
    32      4     length J of the JSON metadata
    36      J     JSON: {"dtype": MARKET_EVENT.descr, "itemsize": 64, "symbols": [...], "source": ...}
    ...           zero padding to the data offset
    data    64*n  the records

:func:`open_native` refuses a file whose magic, versions, dtype or size do not match, naming the file.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np

from hean.feeds.common import FeedError, ReadReport
from hean.records import MARKET_EVENT, RECORDS_VERSION
from hean.symbols import SymbolTable

__all__ = ["FORMAT_VERSION", "MAGIC", "open_native", "read_native", "write_native"]

MAGIC = b"HEANEVT1"
FORMAT_VERSION = 1
_FIXED = struct.Struct("<8sIIqqI")  # magic, format version, records version, n, data offset, json length


def _descr() -> list:
    return json.loads(json.dumps(MARKET_EVENT.descr))


def write_native(path: str | Path, events: np.ndarray, symbols: SymbolTable, source: str = "") -> int:
    """Write ``events`` (MARKET_EVENT) and the symbol table to ``path`` atomically; returns bytes written."""
    if events.dtype != MARKET_EVENT:
        raise ValueError(f"events must have dtype MARKET_EVENT, not {events.dtype}")
    meta = json.dumps(
        {
            "dtype": _descr(),
            "itemsize": MARKET_EVENT.itemsize,
            "symbols": json.loads(symbols.to_json()),
            "source": source,
        }
    ).encode()
    offset = -(-(_FIXED.size + len(meta)) // 64) * 64
    header = _FIXED.pack(MAGIC, FORMAT_VERSION, RECORDS_VERSION, len(events), offset, len(meta)) + meta
    header += b"\0" * (offset - len(header))
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(header)
        f.write(np.ascontiguousarray(events).tobytes())
    os.replace(tmp, path)
    return offset + events.nbytes


def open_native(path: str | Path) -> tuple[np.ndarray, SymbolTable]:
    """Memory-map a native event file read-only: ``(events, symbols)``; nothing is copied."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            fixed = f.read(_FIXED.size)
            if len(fixed) < _FIXED.size:
                raise FeedError(path, None, "too short for a HEAN event file header")
            magic, fver, rver, n, offset, jlen = _FIXED.unpack(fixed)
            if magic != MAGIC:
                raise FeedError(path, None, f"not a HEAN event file (magic {magic!r})")
            if fver != FORMAT_VERSION or rver != RECORDS_VERSION:
                raise FeedError(
                    path,
                    None,
                    f"event file format {fver}/records {rver}; this HEAN reads {FORMAT_VERSION}/{RECORDS_VERSION}"
                    " (convert the recording again)",
                )
            meta = json.loads(f.read(jlen))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FeedError(path, None, f"unreadable header: {e}") from None
    if meta.get("dtype") != _descr() or meta.get("itemsize") != MARKET_EVENT.itemsize:
        raise FeedError(path, None, "record layout differs from this HEAN's MARKET_EVENT")
    size = path.stat().st_size
    if offset % 64 or size != offset + n * MARKET_EVENT.itemsize:
        raise FeedError(path, None, f"size {size} does not match {n} records at offset {offset}")
    symbols = SymbolTable(meta["symbols"])
    if n == 0:
        return np.zeros(0, MARKET_EVENT), symbols
    events = np.memmap(path, dtype=MARKET_EVENT, mode="r", offset=offset, shape=(n,))
    return events, symbols


def read_native(path: str | Path) -> tuple[np.ndarray, ReadReport]:
    """:func:`open_native` with the readers' ``(events, report)`` shape."""
    events, symbols = open_native(path)
    n = len(events)
    return events, ReadReport(str(path), "native", symbols=symbols, lines=n, messages=n, events=n)
