"""Databento DBN files (plain or zstd, ``.dbn.zst``) -> MARKET_EVENT arrays (format ``dbn``).

Decoded with the ``databento-dbn`` package (``pip install -e '.[data]'``): its DBNDecoder turns the stream into
records, and each record's C layout (``bytes(record)``) is read into a numpy structured array per record type,
so the conversion is vectorised. Record numbers (1-based, after the metadata) stand for line numbers in errors.

Times: ``ts_exch`` = ``ts_event`` (the matching engine's), ``ts_origin`` = ``ts_recv`` (Databento's capture
server received it: the receive time, as every reader stores it; ``ts_event`` where ``ts_recv`` is undefined;
snapshot records, flagged F_BAD_TS_RECV, carry the snapshot's generation time there).
``update_id`` = the venue's ``sequence``. Sizes are whole contracts/shares (lot 1). Prices are int64 in units
of 1e-9, converted exactly to ticks.

Ticks and names come from definition records (``InstrumentDefMsg``: ``min_price_increment`` is the tick,
``raw_symbol`` the name) in the file itself or in ``instruments`` (a definitions DBN, ``--instruments``); an
instrument without one is named by the metadata's symbol mapping (else its instrument id) and gets the
finest decimal step its prices use, as the other readers infer ticks (counted in ``ticks_inferred``). The
multiplier (``contract_multiplier``, else ``unit_of_measure_qty``) has no place in a SymbolTable: it is kept
in ``report.instruments``. A given ``symbols`` table wins; an instrument it does not name is a bad record.

Schemas:

* **MBO** (L3): A -> L3_ADD, C -> L3_CANCEL of the cancelled size (L3_DELETE when nothing is left),
  M -> L3_MODIFY (an order the book does not know is added, as Databento's reference book does), R -> CLEAR,
  T -> TRADE (side = aggressor, ``order_id`` = the record's), F and N -> nothing: Databento sends a C for every
  fill, which is what changes the book, and the T is the print. A cancel of an unknown order changes nothing
  (``cancels_unknown``). Records flagged F_SNAPSHOT give F_SNAPSHOT events, and a snapshot that does not start
  with R gets a CLEAR first. **F_LAST**: Databento marks the last record of one venue event per instrument, and
  the book is only consistent after it, so F_LAST_IN_GROUP goes on the last event of a record with F_LAST (on
  the instrument's last event since the previous F_LAST when that record made none) and nowhere else: the
  book publishes its state once per venue event.
* **MBP-1 / MBP-10**: every record carries the top 1/10 levels after it; they become level diffs exactly as
  :mod:`hean.feeds.topn` does for Tardis snapshots (the book holds exactly those levels), after a TRADE for
  action T. A record with F_LAST closes a group (one book state per venue event).
* **trades**: TRADE per record (its own group).
* definitions fill the symbol table; other record types are counted in ``records_ignored`` and skipped.
"""

from __future__ import annotations

from array import array
from pathlib import Path

import numpy as np

from hean.feeds.common import ROLE_PRICE, ROLE_QTY, FeedError, LineErrors, ReadReport, check_input, convert_all
from hean.feeds.tardis import RowProblems
from hean.feeds.topn import check_levels, run_topn, to_events
from hean.records import F_LAST_IN_GROUP, F_SNAPSHOT, MARKET_EVENT, EventKind
from hean.symbols import SymbolTable, format_units

__all__ = ["DTYPES", "read_dbn", "read_definitions", "zstd_problem"]

UNDEF_PRICE = 2**63 - 1
UNDEF_TS = 2**64 - 1
DBN_F_LAST, DBN_F_SNAPSHOT = 1 << 7, 1 << 5
_CHUNK = 1 << 20  # compressed bytes per decoder write: records are turned into bytes chunk by chunk

_HEAD = [
    ("length", "u1"), ("rtype", "u1"), ("publisher_id", "<u2"), ("instrument_id", "<u4"), ("ts_event", "<u8"),
]  # fmt: skip
_BODY = [
    ("price", "<i8"), ("size", "<u4"), ("action", "S1"), ("side", "S1"), ("flags", "u1"), ("depth", "u1"),
    ("ts_recv", "<u8"), ("ts_in_delta", "<i4"), ("sequence", "<u4"),
]  # fmt: skip
_LEVEL = np.dtype(
    [("bid_px", "<i8"), ("ask_px", "<i8"), ("bid_sz", "<u4"), ("ask_sz", "<u4"), ("bid_ct", "<u4"), ("ask_ct", "<u4")]
)
_MBO = [
    ("order_id", "<u8"), ("price", "<i8"), ("size", "<u4"), ("flags", "u1"), ("channel_id", "u1"),
    ("action", "S1"), ("side", "S1"), ("ts_recv", "<u8"), ("ts_in_delta", "<i4"), ("sequence", "<u4"),
]  # fmt: skip
DTYPES = {
    "mbo": np.dtype(_HEAD + _MBO),
    "trades": np.dtype(_HEAD + _BODY),
    "mbp-1": np.dtype(_HEAD + _BODY + [("levels", _LEVEL, (1,))]),
    "mbp-10": np.dtype(_HEAD + _BODY + [("levels", _LEVEL, (10,))]),
}
"""The C layout of each record type (DBN v3, what the decoder upgrades every version to)."""
_SIDE = {b"B": 1, b"A": -1, b"N": 0}
_K = EventKind


def _package(path: Path):
    """The databento_dbn module; its absence is one FeedError saying how to install it."""
    try:
        import databento_dbn
    except ImportError:
        raise FeedError(path, None, "reading DBN needs the databento-dbn package: pip install -e '.[data]'") from None
    return databento_dbn


def _record_types(db) -> dict:
    return {db.MBOMsg: "mbo", db.MBP1Msg: "mbp-1", db.MBP10Msg: "mbp-10", db.TradeMsg: "trades",
            db.InstrumentDefMsg: "definition"}  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
# decoding
# ---------------------------------------------------------------------------------------------------------
class _Decoded:
    """A DBN file's metadata, its data records as structured arrays per schema (with their record numbers),
    its definition records and a count of the records of other types."""

    def __init__(self) -> None:
        self.metadata = None
        self.chunks: dict[str, list[bytes]] = {}
        self.numbers: dict[str, list[int]] = {}
        self.definitions: list = []
        self.ignored = 0
        self.count = 0

    def take(self, records: list, types: dict) -> None:
        for r in records:
            kind = types.get(type(r))
            if kind is None:
                if self.metadata is None and type(r).__name__ == "Metadata":
                    self.metadata = r
                else:
                    self.count += 1
                    self.ignored += 1
                continue
            self.count += 1
            if kind == "definition":
                self.definitions.append(r)
            else:
                self.chunks.setdefault(kind, []).append(bytes(r))
                self.numbers.setdefault(kind, []).append(self.count)

    def arrays(self, path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``{schema: (records, record numbers)}``; a record whose length is not its layout's is refused."""
        out = {}
        for kind, chunks in self.chunks.items():
            dt = DTYPES[kind]
            size = len(chunks[0])
            if size < dt.itemsize or any(len(c) != size for c in chunks):
                raise FeedError(path, None, f"unsupported DBN {kind} record layout ({size} bytes, not {dt.itemsize})")
            wide = np.dtype({"names": dt.names, "formats": [dt.fields[n][0] for n in dt.names],
                             "offsets": [dt.fields[n][1] for n in dt.names], "itemsize": size})  # fmt: skip
            out[kind] = (np.frombuffer(b"".join(chunks), wide), np.array(self.numbers[kind], np.int64))
        return out


def _decode(path: Path) -> _Decoded:
    """Decode a whole DBN file (zstd or plain); a corrupt or truncated file is a FeedError naming it."""
    db = _package(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise FeedError(path, None, f"cannot read: {e.strerror or e}") from None
    zstd = raw[:4] == b"\x28\xb5\x2f\xfd"
    if zstd:
        problem = zstd_problem(raw)
        if problem:
            raise FeedError(path, None, f"corrupt or truncated zstd: {problem}")
    dec = db.DBNDecoder(compression=db.Compression.ZSTD if zstd else db.Compression.NONE)
    out = _Decoded()
    types = _record_types(db)
    try:
        for off in range(0, len(raw), _CHUNK):
            dec.write(raw[off : off + _CHUNK])
            out.take(dec.decode(), types)
    except Exception as e:  # DBNError, and the zstd layer's RuntimeError/ValueError
        raise FeedError(path, None, f"not a valid DBN file: {e}") from None
    except BaseException as e:  # a malformed record makes the Rust decoder panic (pyo3's PanicException)
        if type(e).__name__ != "PanicException":
            raise
        raise FeedError(path, None, f"not a valid DBN file: {str(e).splitlines()[0][:200]}") from None
    if out.metadata is None:
        raise FeedError(path, None, "not a DBN file: no metadata")
    if dec.buffer():
        raise FeedError(path, None, f"truncated DBN: {len(dec.buffer())} bytes of an incomplete record at the end")
    return out


def zstd_problem(raw: bytes) -> str | None:
    """Why ``raw`` (zstd frames) is incomplete, or None. The decoder stops quietly at the end of whatever it
    was given, so a truncated download would otherwise lose its last records without a word: this walks the
    frames' block headers (RFC 8878) and checks that every frame reaches its last block (and checksum)."""
    i, n = 0, len(raw)
    while i < n:
        magic = int.from_bytes(raw[i : i + 4], "little")
        if 0x184D2A50 <= magic <= 0x184D2A5F:  # a skippable frame
            if i + 8 > n:
                return "a skippable frame is cut short"
            i += 8 + int.from_bytes(raw[i + 4 : i + 8], "little")
            continue
        if magic != 0xFD2FB528 or i + 5 > n:
            return f"no zstd frame at byte {i}"
        fhd = raw[i + 4]
        single = (fhd >> 5) & 1
        fcs = (0, 2, 4, 8)[fhd >> 6] or single
        i += 5 + (0 if single else 1) + (0, 1, 2, 4)[fhd & 3] + fcs
        while True:
            if i + 3 > n:
                return "the last block of a frame is missing"
            bh = int.from_bytes(raw[i : i + 3], "little")
            i += 3 + (1 if (bh >> 1) & 3 == 1 else bh >> 3)
            if bh & 1:
                break
        i += 4 if (fhd >> 2) & 1 else 0
        if i > n:
            return "a frame is cut short"
    return None


# ---------------------------------------------------------------------------------------------------------
# instruments and the symbol table
# ---------------------------------------------------------------------------------------------------------
def read_definitions(path: str | Path) -> dict[int, dict]:
    """Instrument definitions of a DBN file by instrument id: ``raw_symbol``, ``tick`` (a decimal string, or
    None when undefined) and ``multiplier`` (decimal string or None). A later definition of an instrument
    replaces an earlier one."""
    return _definitions(_decode(check_input(path)).definitions)


def _definitions(records: list) -> dict[int, dict]:
    out = {}
    for r in records:
        mpi = int(r.min_price_increment)
        mult = int(r.contract_multiplier)
        uom = int(r.unit_of_measure_qty)
        if 0 < mult < 2**31 - 1:
            multiplier = str(mult)
        elif 0 < uom < UNDEF_PRICE:
            multiplier = _decimal(uom)
        else:
            multiplier = None
        out[int(r.instrument_id)] = {
            "raw_symbol": str(r.raw_symbol),
            "tick": _decimal(mpi) if 0 < mpi < UNDEF_PRICE else None,
            "multiplier": multiplier,
        }
    return out


def _decimal(nano: int) -> str:
    """A price in 1e-9 units as a plain decimal string without trailing zeros (250000000 -> "0.25")."""
    text = format_units(nano, 9).rstrip("0")
    return text.rstrip(".") if text.endswith(".") else text


def _mapped_names(metadata) -> dict[int, str]:
    """Instrument id -> the symbol the metadata maps to it (when exactly one symbol maps to it)."""
    seen: dict[int, set[str]] = {}
    for name, intervals in (metadata.mappings or {}).items():
        for iv in intervals:
            sid = str(iv.get("symbol", ""))
            if sid.isdigit():
                seen.setdefault(int(sid), set()).add(name)
    return {i: next(iter(s)) for i, s in seen.items() if len(s) == 1}


def _names(ids: list[int], defs: dict[int, dict], metadata) -> dict[int, str]:
    """A unique name per instrument: its definition's raw symbol, else the metadata's symbol, else its id."""
    mapped = _mapped_names(metadata)
    out: dict[int, str] = {}
    for iid in ids:
        name = defs.get(iid, {}).get("raw_symbol") or mapped.get(iid) or str(iid)
        out[iid] = f"{name}.{iid}" if name in out.values() else name
    return out


def _finest_step(prices: np.ndarray) -> int:
    """Fraction digits of the finest decimal step among prices in 1e-9 units (0 to 9)."""
    p = prices[prices != UNDEF_PRICE]
    digits = 9
    while digits > 0 and not (p % 10 ** (10 - digits)).any():
        digits -= 1
    return digits


def _price_matrix(rec: np.ndarray) -> np.ndarray:
    """Every price of each record (its own and its levels'), int64[records, k]."""
    cols = [rec["price"][:, None]]
    if "levels" in rec.dtype.names:
        cols += [rec["levels"]["bid_px"], rec["levels"]["ask_px"]]
    return np.concatenate(cols, axis=1)


def _table(ids: list[int], arrays: dict, defs: dict[int, dict], metadata, report: ReadReport):
    """The symbol table of the data's instruments (in order of first appearance): ticks from definitions where
    there are any, else inferred from the prices; ``report.instruments`` and the counters say which."""
    names = _names(ids, defs, metadata)
    entries, info = [], {}
    for iid in ids:
        d = defs.get(iid, {})
        tick = d.get("tick")
        source = "definition" if tick else "inferred"
        if not tick:
            p = [_price_matrix(a)[a["instrument_id"] == iid].ravel() for a, _ in arrays.values()]
            tick = format_units(1, _finest_step(np.concatenate(p)))
        entries.append({"name": names[iid], "tick_size": tick, "lot_size": "1", "venue": "databento"})
        mult = d.get("multiplier")
        info[names[iid]] = {"instrument_id": iid, "tick_size": tick, "multiplier": mult, "source": source}
        report.counters["ticks_from_definitions" if source == "definition" else "ticks_inferred"] += 1
    report.instruments = info
    return SymbolTable(entries), {iid: k for k, iid in enumerate(ids)}


def _given(ids: list[int], table: SymbolTable, defs: dict[int, dict], metadata, report: ReadReport) -> dict:
    """Instrument id -> symbol id in a given table (instruments it does not name are left out)."""
    names = _names(ids, defs, metadata)
    report.instruments = {
        n: {"instrument_id": i, "tick_size": str(table[n].tick_size), "multiplier": defs.get(i, {}).get("multiplier"),
            "source": "given"}
        for i, n in names.items() if n in table
    }  # fmt: skip
    return {i: table.id_of(n) for i, n in names.items() if n in table}


# ---------------------------------------------------------------------------------------------------------
# the reader
# ---------------------------------------------------------------------------------------------------------
def read_dbn(
    path: str | Path,
    symbols: SymbolTable | None = None,
    lenient: bool = False,
    instruments: str | Path | None = None,
) -> tuple[np.ndarray, ReadReport]:
    """Read a DBN file (MBO, MBP-1, MBP-10, trades; definitions) into MARKET_EVENTs.

    ``instruments``: a definitions DBN for the ticks and names when the file has no definitions of its own
    (the file's own win). ``symbols`` (a given table) wins over both. ``lenient`` skips and counts bad records
    instead of raising :class:`hean.feeds.common.FeedError`.
    """
    path = check_input(path)
    dec = _decode(path)
    counters = {"records": dec.count, "records_ignored": dec.ignored, "ticks_from_definitions": 0, "ticks_inferred": 0}
    report = ReadReport(str(path), f"dbn {dec.metadata.schema or 'mixed'}", counters=counters)
    report.lines = dec.count
    errors = LineErrors(report, lenient)
    defs = read_definitions(instruments) if instruments is not None else {}
    defs.update(_definitions(dec.definitions))
    arrays = dec.arrays(path)
    ids = _instrument_ids(arrays)
    if symbols is None:
        symbols, by_iid = _table(ids, arrays, defs, dec.metadata, report)
    else:
        by_iid = _given(ids, symbols, defs, dec.metadata, report)
    problems = RowProblems()
    parts = []
    for kind, (rec, num) in arrays.items():
        iid = rec["instrument_id"].tolist()
        sym = np.array([by_iid.get(i, -1) for i in iid], np.int64).reshape(len(rec))
        problems.mark(sym < 0, num, lambda i, iid=iid: f"instrument {iid[i]} is not in the symbol table")
        head = _head(rec, num, sym, problems)
        parts.append(_SCHEMA[kind](rec, head, symbols, problems, report.counters))
    for line in sorted(problems.by_line):
        errors.bad(line, problems.by_line[line])
    ev = _merge(parts)
    ev["seq"] = np.arange(1, len(ev) + 1)
    report.symbols = symbols
    report.messages = report.lines - report.skipped - dec.ignored
    report.events = len(ev)
    return ev, report


def _instrument_ids(arrays: dict) -> list[int]:
    """Instrument ids of the data records in order of first appearance."""
    first: dict[int, int] = {}
    for rec, num in arrays.values():
        iid, at = np.unique(rec["instrument_id"], return_index=True)
        for i, k in zip(iid.tolist(), num[at].tolist(), strict=True):
            first[i] = min(first.get(i, k), k)
    return sorted(first, key=first.__getitem__)


def _head(rec: np.ndarray, num: np.ndarray, sym: np.ndarray, problems: RowProblems) -> dict:
    """Per record: symbol id, record number, times in ns (int64) and update id (the venue's sequence)."""
    ts_event = rec["ts_event"]
    ts_recv = np.where(rec["ts_recv"] == UNDEF_TS, ts_event, rec["ts_recv"])
    bad = (ts_event >= 2**63) | (ts_recv >= 2**63)
    problems.mark(bad, num, "ts_event/ts_recv beyond int64 ns")
    return {
        "sym": sym,
        "num": num,
        "ts_exch": np.where(bad, 0, ts_event).astype(np.int64),
        "ts_origin": np.where(bad, 0, ts_recv).astype(np.int64),
        "update_id": rec["sequence"].astype(np.int64),
    }


def _units(fields: list[tuple[np.ndarray, int, np.ndarray, int]], head: dict, table, problems) -> list[np.ndarray]:
    """Exact ticks/lots of ``fields``, each ``(record indices, role, values, nfrac)``: prices in 1e-9 units
    (nfrac 9), sizes whole (nfrac 0). Off-grid and out-of-range values make their record bad (the reasons of
    :func:`hean.feeds.common.convert_all`). Returns one array per field, aligned with its record indices."""
    seg_msg = np.concatenate([f[0] for f in fields]).astype(np.int64)
    seg_role = np.concatenate([np.full(len(f[0]), f[1], np.int64) for f in fields])
    val = np.concatenate([np.asarray(f[2], np.int64) for f in fields])
    nfrac = np.concatenate([np.full(len(f[0]), f[3], np.int64) for f in fields])
    for _ in range(9):  # trailing zeros off, as parsing a decimal string drops them (and errors read 5000.25)
        z = (nfrac > 0) & (val % 10 == 0)
        val[z] //= 10
        nfrac[z] -= 1
    tok = np.arange(len(val), dtype=np.int64)
    units, _ = convert_all(
        seg_msg, seg_role, tok, np.ones(len(val), np.int64), val, nfrac, head["sym"], head["num"], table, problems
    )
    return np.split(units[: len(val)], np.cumsum([len(f[0]) for f in fields])[:-1])


def _sides(col: np.ndarray) -> np.ndarray:
    """DBN side characters as +1 (B), -1 (A), 0 (N); 9 for anything else."""
    lut = np.full(256, 9, np.int64)
    for k, v in _SIDE.items():
        lut[k[0]] = v
    return lut[col.view(np.uint8)]


def _merge(parts: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """The events of every schema in record order (a stable sort keeps each record's own order)."""
    if not parts:
        return np.zeros(0, MARKET_EVENT)
    ev = np.concatenate([p[0] for p in parts])
    num = np.concatenate([p[1] for p in parts])
    return ev[np.argsort(num, kind="stable")]


def _events(rows: np.ndarray, cols: np.ndarray, head: dict) -> tuple[np.ndarray, np.ndarray]:
    """MARKET_EVENTs from ``cols`` int64[n, 6] (kind, side, px, qty, order id, flags) of records ``rows``."""
    ev = np.zeros(len(rows), MARKET_EVENT)
    for k, name in enumerate(("kind", "side", "price", "qty", "order_id", "flags")):
        ev[name] = cols[:, k]
    for name in ("ts_origin", "ts_exch", "update_id"):
        ev[name] = head[name][rows]
    ev["symbol"] = head["sym"][rows]
    return ev, head["num"][rows]


# ---------------------------------------------------------------------------------------------------------
# schemas
# ---------------------------------------------------------------------------------------------------------
def _trades(rec: np.ndarray, head: dict, table, problems: RowProblems, counters: dict):
    """trades: a TRADE per record, each its own group."""
    side = _sides(rec["side"])
    problems.mark(side == 9, head["num"], "side is not B, A or N")
    problems.mark(rec["price"] == UNDEF_PRICE, head["num"], "trade without a price")
    ok = np.flatnonzero(problems.ok(head["num"]))
    px, qty = _units([(ok, ROLE_PRICE, rec["price"][ok], 9), (ok, ROLE_QTY, rec["size"][ok], 0)], head, table, problems)
    keep = problems.ok(head["num"][ok])
    rows = ok[keep]
    cols = np.zeros((len(rows), 6), np.int64)
    cols[:, 0], cols[:, 1], cols[:, 2], cols[:, 3] = _K.TRADE, side[rows], px[keep], qty[keep]
    cols[:, 5] = F_LAST_IN_GROUP
    counters["trades"] = counters.get("trades", 0) + len(rows)
    return _events(rows, cols, head)


def _mbp(rec: np.ndarray, head: dict, table, problems: RowProblems, counters: dict):
    """MBP-1/MBP-10: each record's levels as a top-N book (see :mod:`hean.feeds.topn`), a TRADE first for
    action T; a record with F_LAST closes a group."""
    num = head["num"]
    lv = rec["levels"]
    is_trade = rec["action"] == b"T"
    side = _sides(rec["side"])
    problems.mark(is_trade & ((side == 9) | (rec["price"] == UNDEF_PRICE)), num, "trade without a price or side")
    ok = problems.ok(num)
    fields, where = [], []
    for px_col, sz_col in (("bid_px", "bid_sz"), ("ask_px", "ask_sz")):
        present = (lv[px_col] != UNDEF_PRICE) & (lv[sz_col] > 0) & ok[:, None]
        r, c = np.nonzero(present)
        fields += [(r, ROLE_PRICE, lv[px_col][r, c], 9), (r, ROLE_QTY, lv[sz_col][r, c], 0)]
        where += [(r, c), (r, c)]
    t = np.flatnonzero(is_trade & ok)
    fields += [(t, ROLE_PRICE, rec["price"][t], 9), (t, ROLE_QTY, rec["size"][t], 0)]
    units = _units(fields, head, table, problems)
    shape = lv.shape
    book = [np.zeros(shape, np.int64) for _ in range(4)]  # bid px, bid qty, ask px, ask qty
    for k in range(4):
        book[k][where[k]] = units[k]
    for k, s in ((0, 1), (2, -1)):
        good = check_levels(book[k], book[k + 1], s)
        problems.mark(~good & problems.ok(num), num, f"{'bid' if s == 1 else 'ask'} levels are not best first")
    trade = np.zeros((len(rec), 4), np.int64)
    trade[t, 0], trade[t, 1], trade[t, 2], trade[t, 3] = 1, side[t], units[4], units[5]
    rows = np.flatnonzero(problems.ok(num))
    close = (rec["flags"][rows] & DBN_F_LAST) != 0
    o = run_topn(head["sym"][rows], *(np.ascontiguousarray(b[rows]) for b in book), close, trade[rows], len(table))
    r = rows[o[:, 0]]
    ev = to_events(o, head["sym"][rows], head["ts_origin"][rows], head["ts_exch"][rows], head["update_id"][rows])
    counters["trades"] = counters.get("trades", 0) + int(np.isin(t, rows).sum())
    return ev, num[r]


_MBO_ACTIONS = b"ACMRTFN"
_MBO_COUNT = {b"A": "adds", b"C": "cancels", b"M": "modifies", b"R": "clears", b"T": "trades", b"F": "fills",
              b"N": "no_action"}  # fmt: skip


def _mbo(rec: np.ndarray, head: dict, table, problems: RowProblems, counters: dict):
    """MBO: validate the records, convert their prices and sizes, then follow the orders (see the module doc)."""
    num = head["num"]
    act = rec["action"]
    side = _sides(rec["side"])
    adds = (act == b"A") | (act == b"M")
    priced = adds | (act == b"T")
    sized = priced | (act == b"C")
    problems.mark(~np.isin(act, [bytes([c]) for c in _MBO_ACTIONS]), num, lambda i: f"unknown action {act[i]!r}")
    problems.mark(adds & ((side == 9) | (side == 0)), num, "an add/modify without side B or A")
    problems.mark(side == 9, num, "side is not B, A or N")
    problems.mark(priced & (rec["price"] == UNDEF_PRICE), num, "an add/modify/trade without a price")
    problems.mark((act == b"A") & (rec["size"] == 0), num, "an add of size 0")
    problems.mark(sized & (act != b"T") & (rec["order_id"] >= 2**63), num, "order id beyond int64")
    ok = problems.ok(num)
    p, q = np.flatnonzero(priced & ok), np.flatnonzero(sized & ok)
    px_u, qty_u = _units([(p, ROLE_PRICE, rec["price"][p], 9), (q, ROLE_QTY, rec["size"][q], 0)], head, table, problems)
    px = np.zeros(len(rec), np.int64)
    qty = np.zeros(len(rec), np.int64)
    px[p], qty[q] = px_u, qty_u
    rows = np.flatnonzero(problems.ok(num))
    oid = np.where(rec["order_id"] < 2**63, rec["order_id"], 0).astype(np.int64)
    book = _MboBook(head["sym"], counters, problems, num)
    out = book.run(rows, act, side, px, qty, oid, rec["flags"])
    counters["groups_open_at_end"] = sum(1 for v in book.pending.values() if v >= 0)
    return _events(out[:, 0], out[:, 1:], head)


class _MboBook:
    """The reader's model of the resting orders (id -> [symbol, side, price, size left]), which the
    translation needs: a cancel must know whether it empties its order, a modify whether the order exists."""

    def __init__(self, sym: np.ndarray, counters: dict, problems: RowProblems, num: np.ndarray) -> None:
        self.sym = sym
        self.counters = counters
        for k in (*_MBO_COUNT.values(), "snapshots", "cancels_unknown", "modifies_unknown_as_add"):
            counters.setdefault(k, 0)
        self.problems = problems
        self.num = num
        self.orders: dict[int, list[int]] = {}
        self.in_snapshot: dict[int, bool] = {}
        self.pending: dict[int, int] = {}  # symbol -> its last event since its last F_LAST, or -1
        self.out = array("q")  # 7 numbers per event: record, kind, side, px, qty, order id, flags

    def run(self, rows, act, side, px, qty, oid, flags) -> np.ndarray:
        """The events of records ``rows``, int64[n, 7] (record, kind, side, px, qty, order id, flags)."""
        cols = (act[rows].tolist(), side[rows].tolist(), px[rows].tolist(), qty[rows].tolist(),
                oid[rows].tolist(), flags[rows].tolist(), self.sym[rows].tolist())  # fmt: skip
        for i, a, sd, p, q, o, f, s in zip(rows.tolist(), *cols, strict=True):
            if a == b"A" and o in self.orders:
                self.problems.bad(int(self.num[i]), f"order {o} added twice")
                continue
            self.counters[_MBO_COUNT[a]] += 1
            n0 = len(self.out) // 7
            snap = F_SNAPSHOT if f & DBN_F_SNAPSHOT else 0
            if snap and not self.in_snapshot.get(s, False) and a != b"R":
                self._clear(i, s, snap)  # a snapshot replaces the book even when it does not start with R
            self.in_snapshot[s] = bool(snap)
            self._apply(i, a, sd, p, q, o, s, snap)
            self._close(s, n0, bool(f & DBN_F_LAST))
        return np.frombuffer(self.out, np.int64).reshape(-1, 7)

    def _apply(self, i, a, sd, p, q, o, s, snap) -> None:
        out = self.out
        if a == b"A":
            self.orders[o] = [s, sd, p, q]
            out.extend((i, _K.L3_ADD, sd, p, q, o, snap))
        elif a == b"C":
            od = self.orders.get(o)
            if od is None:
                self.counters["cancels_unknown"] += 1
            elif q >= od[3]:
                del self.orders[o]
                out.extend((i, _K.L3_DELETE, od[1], od[2], od[3], o, snap))
            else:
                od[3] -= q
                out.extend((i, _K.L3_CANCEL, od[1], od[2], q, o, snap))
        elif a == b"M":
            od = self.orders.get(o)
            if od is None:
                self.counters["modifies_unknown_as_add"] += 1
                if q > 0:
                    self.orders[o] = [s, sd, p, q]
                    out.extend((i, _K.L3_ADD, sd, p, q, o, snap))
            else:
                out.extend((i, _K.L3_MODIFY, od[1], p, q, o, snap))
                if q > 0:
                    od[2], od[3] = p, q
                else:
                    del self.orders[o]
        elif a == b"R":
            self._clear(i, s, snap)
        elif a == b"T":
            out.extend((i, _K.TRADE, sd, p, q, o, 0))

    def _clear(self, i: int, s: int, snap: int) -> None:
        self.orders = {k: v for k, v in self.orders.items() if v[0] != s}
        self.out.extend((i, _K.CLEAR, 0, 0, 0, 0, snap))
        self.counters["snapshots"] += 1 if snap else 0

    def _close(self, s: int, n0: int, last: bool) -> None:
        """F_LAST: flag the record's last event, or the symbol's last event since its previous F_LAST."""
        if len(self.out) // 7 > n0:
            self.pending[s] = len(self.out) // 7 - 1
        if last and self.pending.get(s, -1) >= 0:
            self.out[7 * self.pending[s] + 6] |= F_LAST_IN_GROUP
            self.pending[s] = -1


_SCHEMA = {"mbo": _mbo, "trades": _trades, "mbp-1": _mbp, "mbp-10": _mbp}
