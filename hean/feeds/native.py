"""HEAN's native event file: MARKET_EVENT records behind a small self-describing header, memory-mapped on replay.

Why: parsing JSON costs microseconds a line; replaying fixed 64-byte records from a memory map costs
nothing, so recordings are converted once (``hean convert``) and replayed many times.

Layout (little-endian)::

    offset  size  field
    0       8     magic b"HEANEVT1"
    8       4     file format version (FORMAT_VERSION)
    12      4     MARKET_EVENT layout version (hean.records.EVENTS_VERSION)
    16      8     number of records
    24      8     data offset (header size, a multiple of 64)
    32      4     length J of the JSON metadata
    36      J     JSON: {"dtype": MARKET_EVENT.descr, "itemsize": 64, "symbols": [...], "source": ...}
    ...           zero padding to the data offset
    data    64*n  the records

:func:`open_native` refuses a file whose magic, versions, dtype or size do not match, naming the file.

**Every record is validated at load** (:func:`validate_events`), because the engine's kernels index their
state arrays by a record's symbol id and trust its kind, side and values: one record with a symbol id out of
range made a worker write outside its arrays (SIGSEGV), and an absurd price made ``hean book`` print crossed
books. The checks, made in one compiled pass over the records (no Python loop per record), are:

==========  ====================================================================================
field       valid values
==========  ====================================================================================
kind        an :class:`hean.records.EventKind`
symbol      ``0 <= symbol < len(symbols)`` (the file's own symbol table)
side        -1, 0 or +1; +-1 for LEVEL_SET, TICKER and L3_ADD (a book side is needed)
price       ``|price| < 2**53`` ticks; ``> 0`` for LEVEL_SET, TRADE, L3_ADD, L3_MODIFY; ``>= 0`` for TICKER
qty         ``0 <= qty < 2**53`` lots
flags       only F_LAST_IN_GROUP, F_SNAPSHOT, F_HIDDEN (the bits a market event may carry)
order_id    anything but int64's minimum (the L3 book's hash map uses it as its empty key)
update_id   ``>= 0``; seq ``>= 0``; ts_origin and ts_exch ``>= 0`` (ns since the epoch)
==========  ====================================================================================

Why ``2**53``: prices and quantities become float64 in the book state (mid, microprice), in risk (notional)
and in PnL, and every integer below 2**53 is exact there; it also keeps every key of the L2 book far from
its empty-side sentinel (2**62). Real markets need far less (BTC at 1e5 USD in 1e-8 ticks is 1e13 ticks).

Every path into the engine's kernels passes through this validation: :func:`hean.feeds.load_events`
validates what every reader returns (so ``hean book`` and ``hean convert`` see only valid events), a replay
run reads the recording with it in the supervisor (``Supervisor._prepare_replay``) and writes a native file
that the feed worker opens with :func:`open_native` (validated again: the worker trusts no file), and
:func:`write_native` refuses to write a file :func:`open_native` would refuse (``hean bench book`` replays
the file it wrote and re-opened). The readers also bound every value per line, so a bad value in a
recording is a named, skippable line rather than a refused file. Cost, measured on the converted Binance
recording (``benchmarks/test_bench_native.py``): about 25 ns per record, against ~0.3 ns to map the file
(lazily) and ~45 ns for the replay worker's private copy of the records.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from hean.feeds.common import FeedError, ReadReport
from hean.jit import entry
from hean.records import EVENTS_VERSION, F_HIDDEN, F_LAST_IN_GROUP, F_SNAPSHOT, MARKET_EVENT, EventKind
from hean.symbols import SymbolTable

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "MAX_UNITS",
    "native_file",
    "open_native",
    "read_native",
    "validate_events",
    "write_native",
]

MAGIC = b"HEANEVT1"
FORMAT_VERSION = 1
_FIXED = struct.Struct("<8sIIqqI")  # magic, format version, records version, n, data offset, json length

MAX_UNITS = 1 << 53  # |price| in ticks and qty in lots stay below this (exact as float64)
EVENT_FLAGS = F_LAST_IN_GROUP | F_SNAPSHOT | F_HIDDEN
_BAD_FLAGS = np.uint16(0xFFFF & ~EVENT_FLAGS)
_INT64_MIN = np.iinfo(np.int64).min


def _kind_table(values: dict[int, int], default: int, dtype) -> np.ndarray:
    """A 256-entry table indexed by the ``kind`` byte (any byte is a valid index)."""
    t = np.full(256, default, dtype)
    for k, v in values.items():
        t[int(k)] = v
    return t


_K = EventKind
# what a recording may hold: every kind but CLOCK, the replay scheduler's own record (hean.stages.feed)
_RECORDED = [k for k in EventKind if k != EventKind.CLOCK]
_KIND_OK = _kind_table({k: 1 for k in _RECORDED}, 0, np.bool_)
_NEEDS_SIDE = _kind_table({_K.LEVEL_SET: 1, _K.TICKER: 1, _K.L3_ADD: 1}, 0, np.bool_)
_PRICE_MIN = _kind_table(
    {_K.LEVEL_SET: 1, _K.TRADE: 1, _K.L3_ADD: 1, _K.L3_MODIFY: 1, _K.TICKER: 0}, -(MAX_UNITS - 1), np.int64
)


def _field_checks(ev: np.ndarray, n_symbols: int) -> list[tuple[str, np.ndarray, str]]:
    """``(field, ok mask, what a valid value is)`` for every check, over the records ``ev``."""
    kind = ev["kind"]
    side = ev["side"]
    price = ev["price"]
    qty = ev["qty"]
    sym = ev["symbol"]
    return [
        ("kind", _KIND_OK[kind], f"not a known record kind ({min(_RECORDED)}..{max(_RECORDED)})"),
        ("symbol", (sym >= 0) & (sym < n_symbols), f"out of range [0, {n_symbols}) (the file's symbol table)"),
        ("side", (side >= -1) & (side <= 1) & ((side != 0) | ~_NEEDS_SIDE[kind]), "not a valid side for its kind"),
        ("price", (price >= _PRICE_MIN[kind]) & (price < MAX_UNITS), "out of range"),
        ("qty", (qty >= 0) & (qty < MAX_UNITS), "out of range [0, 2**53)"),
        ("flags", (ev["flags"] & _BAD_FLAGS) == 0, "has bits a market event may not carry"),
        ("order_id", ev["order_id"] != _INT64_MIN, "is int64's minimum (reserved)"),
        ("update_id", ev["update_id"] >= 0, "is negative"),
        ("seq", ev["seq"] >= 0, "is negative"),
        ("ts_origin", ev["ts_origin"] >= 0, "is negative"),
        ("ts_exch", ev["ts_exch"] >= 0, "is negative"),
    ]


def _problem(ev: np.ndarray, n_symbols: int) -> str:
    """What is wrong with the one record in ``ev``."""
    for name, ok, why in _field_checks(ev, n_symbols):
        if not ok[0]:
            kind = int(ev["kind"][0])
            if name == "price":
                why = f"out of range [{_PRICE_MIN[kind]}, 2**53)"
            if name in ("side", "price"):
                why += f" for kind {EventKind(kind).name}"
            return f"{name} {int(ev[name][0])} {why}"
    return "valid"


def validate_events(events: np.ndarray, n_symbols: int, path: str | Path) -> None:
    """Raise :class:`FeedError` naming ``path``, the first bad record's index, the field and its value.

    One compiled pass over the records, every check of :func:`_field_checks` on each (the module doc has the
    rules): it reads each record once, where a numpy pass per check read the file eleven times (18 ms of a
    93,954-line capture's ~100 ms conversion); the bad record is then described by those same checks.
    """
    if events.dtype != MARKET_EVENT:
        raise FeedError(path, None, f"records have dtype {events.dtype}, not MARKET_EVENT")
    if not len(events):
        return
    i = _first_bad(events, n_symbols, _KIND_OK, _NEEDS_SIDE, _PRICE_MIN, _BAD_FLAGS)
    if i >= 0:
        raise FeedError(path, None, f"record {i}: {_problem(events[i : i + 1], n_symbols)}")


@entry(error_model="numpy")
def _first_bad(ev, n_symbols, kind_ok, needs_side, price_min, bad_flags):
    """Index of the first record that fails a check of :func:`_field_checks` (-1: none)."""
    for i in range(ev.shape[0]):
        e = ev[i]
        k = e.kind
        side = e.side
        if (
            not kind_ok[k]
            or e.symbol < 0
            or e.symbol >= n_symbols
            or side < -1
            or side > 1
            or (side == 0 and needs_side[k])
            or e.price < price_min[k]
            or e.price >= MAX_UNITS
            or e.qty < 0
            or e.qty >= MAX_UNITS
            or (e.flags & bad_flags) != 0
            or e.order_id == _INT64_MIN
            or e.update_id < 0
            or e.seq < 0
            or e.ts_origin < 0
            or e.ts_exch < 0
        ):
            return i
    return -1


def _descr() -> list:
    return json.loads(json.dumps(MARKET_EVENT.descr))


def write_native(path: str | Path, events: np.ndarray, symbols: SymbolTable, source: str = "") -> int:
    """Write ``events`` (MARKET_EVENT) and the symbol table to ``path`` atomically; returns bytes written.

    Refuses (FeedError) events :func:`open_native` would refuse, so a written file always opens.
    """
    if events.dtype != MARKET_EVENT:
        raise ValueError(f"events must have dtype MARKET_EVENT, not {events.dtype}")
    validate_events(events, len(symbols), path)
    with native_file(path, len(events), symbols, source) as records:
        records[:] = events
    return len(_header(len(events), symbols, source)) + events.nbytes


@contextmanager
def native_file(path: str | Path, n: int, symbols: SymbolTable, source: str = "") -> Iterator[np.ndarray]:
    """A new native file of ``n`` records, filled in place: yields its records as a writable memory map
    (zeros), and the file appears at ``path`` atomically when the block ends without an error (a failed
    block leaves nothing). For records made by compiled code straight into the file (a merge of several
    recordings: :mod:`hean.feeds.merge`) without holding them in memory; the caller owns their validity --
    :func:`open_native` validates them again whoever maps the file."""
    header = _header(n, symbols, source)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(header)
            f.truncate(len(header) + n * MARKET_EVENT.itemsize)
        if n:
            records = np.memmap(tmp, dtype=MARKET_EVENT, mode="r+", offset=len(header), shape=(n,))
            yield records
            records.flush()
            del records
        else:
            yield np.zeros(0, MARKET_EVENT)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _header(n: int, symbols: SymbolTable, source: str) -> bytes:
    """The header of a native file of ``n`` records (module docstring), padded to its data offset."""
    meta = json.dumps(
        {
            "dtype": _descr(),
            "itemsize": MARKET_EVENT.itemsize,
            "symbols": json.loads(symbols.to_json()),
            "source": source,
        }
    ).encode()
    offset = -(-(_FIXED.size + len(meta)) // 64) * 64
    header = _FIXED.pack(MAGIC, FORMAT_VERSION, EVENTS_VERSION, n, offset, len(meta)) + meta
    return header + b"\0" * (offset - len(header))


def _read_header(path: Path) -> tuple[int, int, int, dict]:
    """``(n records, data offset, header bytes used, metadata)`` of a native file; FeedError when unreadable."""
    if path.is_dir():
        raise FeedError(path, None, "is a directory, not a HEAN event file")
    try:
        with open(path, "rb") as f:
            fixed = f.read(_FIXED.size)
            if len(fixed) < _FIXED.size:
                raise FeedError(path, None, "too short for a HEAN event file header")
            magic, fver, rver, n, offset, jlen = _FIXED.unpack(fixed)
            if magic != MAGIC:
                raise FeedError(path, None, f"not a HEAN event file (magic {magic!r})")
            if fver != FORMAT_VERSION or rver != EVENTS_VERSION:
                raise FeedError(
                    path,
                    None,
                    f"event file format {fver}/records {rver}; this HEAN reads {FORMAT_VERSION}/{EVENTS_VERSION}"
                    " (convert the recording again)",
                )
            raw = f.read(jlen)
    except FileNotFoundError:
        raise FeedError(path, None, "no such file") from None
    except OSError as e:
        raise FeedError(path, None, f"cannot read: {e.strerror or e}") from None
    if len(raw) < jlen:
        raise FeedError(path, None, f"header metadata truncated ({len(raw)} of {jlen} bytes)")
    try:
        meta = json.loads(raw)
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise FeedError(path, None, f"unreadable header metadata: {str(e)[:120]}") from None
    if not isinstance(meta, dict):
        raise FeedError(path, None, "header metadata is not a JSON object")
    return n, offset, _FIXED.size + jlen, meta


def open_native(path: str | Path) -> tuple[np.ndarray, SymbolTable]:
    """Memory-map a native event file read-only: ``(events, symbols)``; nothing is copied.

    Every record is validated (:func:`validate_events`): a bad one is a FeedError naming the file, the
    record and the field.
    """
    events, symbols = _map_unvalidated(path)
    validate_events(events, len(symbols), path)
    return events, symbols


def _map_unvalidated(path: str | Path) -> tuple[np.ndarray, SymbolTable]:
    """The header checked and the records mapped, not yet validated: only :func:`open_native`, the conversion
    cache (whose entries' checksums prove them the records validated when made) and the benchmark that
    measures what validation adds may call this."""
    path = Path(path)
    n, offset, used, meta = _read_header(path)
    if meta.get("dtype") != _descr() or meta.get("itemsize") != MARKET_EVENT.itemsize:
        raise FeedError(path, None, "record layout differs from this HEAN's MARKET_EVENT")
    size = path.stat().st_size
    if n < 0 or offset < used or offset % 64 or size != offset + n * MARKET_EVENT.itemsize:
        raise FeedError(path, None, f"size {size} does not match {n} records at offset {offset}")
    try:
        symbols = SymbolTable(meta.get("symbols"))
    except (TypeError, ValueError, KeyError, ArithmeticError) as e:
        raise FeedError(path, None, f"bad symbol table in the header: {str(e)[:120]}") from None
    if n == 0:
        return np.zeros(0, MARKET_EVENT), symbols
    return np.memmap(path, dtype=MARKET_EVENT, mode="r", offset=offset, shape=(n,)), symbols


def read_native(path: str | Path) -> tuple[np.ndarray, ReadReport]:
    """:func:`open_native` with the readers' ``(events, report)`` shape."""
    events, symbols = open_native(path)
    n = len(events)
    return events, ReadReport(str(path), "native", symbols=symbols, lines=n, messages=n, events=n)
