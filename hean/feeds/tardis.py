"""Tardis.dev CSV downloads -> MARKET_EVENT arrays (format ``tardis``; the data type is read from the header).

Every Tardis CSV starts ``exchange,symbol,timestamp,local_timestamp``: ``timestamp`` is the exchange's time
and ``local_timestamp`` the time Tardis received the message, both µs since the epoch. As in every reader,
``ts_exch`` = ``timestamp`` and ``ts_origin`` = ``local_timestamp`` (the receive time), in ns. ``update_id``
is the row's line number in the file (Tardis rows carry no exchange update id), so a ``hean book`` line
points back at its row. Columns are found by name, so their order does not matter. Data types:

* ``incremental_book_L2`` (``is_snapshot,side,price,amount``): each row sets one level (``side`` bid/ask;
  amount 0 deletes it). A run of consecutive ``is_snapshot=true`` rows of a symbol replaces its book: a CLEAR,
  then the run's levels, all flagged F_SNAPSHOT, as one group. Update rows are grouped by
  ``local_timestamp`` (the rows of one exchange message share it): the last row of each group carries
  F_LAST_IN_GROUP. Updates before the first snapshot are applied as Tardis documents (counted in
  ``updates_before_snapshot``).
* ``book_snapshot_N`` (``asks[i].price, asks[i].amount, bids[i].price, bids[i].amount`` for i < N): each row
  is the whole top N; after it the book holds exactly those levels (see :mod:`hean.feeds.topn`: only what
  changed is emitted, levels that left the top N are deleted). Empty fields: no level.
* ``quotes`` (``ask_amount,ask_price,bid_price,bid_amount``): the best bid and ask, as a top-1 book the same
  way. An empty side has no level.
* ``trades`` (``id,side,price,amount``): TRADE, side = the taker's (buy +1, sell -1, unknown 0),
  ``order_id`` = ``id`` when it is a number below 10**18, else 0 (many venues' ids are UUIDs).

Prices and amounts are converted exactly (:func:`hean.symbols.to_units`); with no symbol table the tick and
lot of each symbol are the finest decimal steps its rows use (as the Binance and Bybit readers infer them); a
given table wins, and a symbol it lacks is a bad row. A bad row (wrong column count, a number that is not a
plain decimal, a price off the tick grid, an unknown side, book levels out of order, a half-empty level) is an
error naming file and line, or skipped and counted with ``lenient``. gzip input (``.csv.gz``) is read as is.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from hean.feeds.common import (
    ROLE_PAIRS,
    FeedError,
    LineErrors,
    ReadReport,
    convert_all,
    infer_symbols,
    read_bytes,
    split_lines,
)
from hean.feeds.topn import check_levels, run_topn, to_events
from hean.jit import entry
from hean.records import F_LAST_IN_GROUP, F_SNAPSHOT, MARKET_EVENT, EventKind
from hean.symbols import SymbolTable, parse_decimal

__all__ = ["KINDS", "RowProblems", "read_tardis"]

KINDS = ("incremental_book_L2", "book_snapshot_N", "quotes", "trades")
_BASE = ("symbol", "timestamp", "local_timestamp")
_COLUMNS = {
    "incremental_book_L2": ("is_snapshot", "side", "price", "amount"),
    "trades": ("id", "side", "price", "amount"),
    "quotes": ("ask_amount", "ask_price", "bid_price", "bid_amount"),
}
_LEVEL_RE = re.compile(r"(asks|bids)\[(\d+)\]\.(price|amount)\Z")
_MAX_US = (2**63 - 1) // 1000  # the latest time in µs whose ns still fits in int64
_SIDES = {
    "incremental_book_L2": {b"bid": 1, b"ask": -1},
    "trades": {b"buy": 1, b"sell": -1, b"unknown": 0},
}
_BOOL = {b"true": 1, b"false": 0}
_LEVEL_SET = int(EventKind.LEVEL_SET)
_CLEAR = int(EventKind.CLEAR)
NUM_OK, NUM_BAD, NUM_EMPTY = 0, 1, 2


@entry
def _split_fields(buf, starts, ends, fs, fe, nfields):
    """Field bounds of every line (``fs``/``fe``: int64[lines, ncols]) and its count of fields."""
    ncols = fs.shape[1]
    for i in range(starts.shape[0]):
        a = starts[i]
        e = ends[i]
        c = 0
        fs[i, 0] = a
        for j in range(a, e):
            if buf[j] == 44:  # ','
                if c + 1 < ncols:
                    fe[i, c] = j
                    fs[i, c + 1] = j + 1
                c += 1
        if c < ncols:
            fe[i, c] = e
        nfields[i] = c + 1


@entry
def _parse_fields(buf, fs, fe, cols, val, nfrac, status):
    """Field ``cols[j]`` of every row (bounds ``fs``/``fe``: int64[rows, ncols]) as an exact decimal:
    ``val[i, j]``/``nfrac[i, j]``, ``status[i, j]`` NUM_OK, NUM_BAD or NUM_EMPTY."""
    for i in range(fs.shape[0]):
        for j in range(cols.shape[0]):
            a = fs[i, cols[j]]
            b = fe[i, cols[j]]
            if b <= a:
                val[i, j] = 0
                nfrac[i, j] = 0
                status[i, j] = NUM_EMPTY
                continue
            v, nf, ok = parse_decimal(buf, a, b)
            val[i, j] = v
            nfrac[i, j] = nf
            status[i, j] = NUM_OK if ok else NUM_BAD


class RowProblems:
    """Bad rows found by the passes over columns, kept by line so that strict mode fails on the first bad
    line of the file (not the first one a later pass finds). Has ``bad`` like LineErrors (convert_all)."""

    def __init__(self) -> None:
        self.by_line: dict[int, str] = {}

    def bad(self, line: int, reason: str) -> None:
        self.by_line.setdefault(int(line), reason)

    def mark(self, mask: np.ndarray, lines: np.ndarray, reason) -> None:
        """Record ``reason(i)`` (or the string) for every row ``i`` where ``mask``."""
        for i in np.flatnonzero(mask).tolist():
            self.bad(int(lines[i]), reason(i) if callable(reason) else reason)

    def ok(self, lines: np.ndarray) -> np.ndarray:
        return ~np.isin(lines, np.fromiter(self.by_line, np.int64, len(self.by_line)))


class _Rows:
    """The data rows of a CSV: field bounds, line numbers, and typed views of columns."""

    def __init__(self, data: bytes, starts: np.ndarray, ends: np.ndarray, lines: np.ndarray, cols: dict[str, int]):
        self.data = data
        self.col = cols
        ncols = len(cols)
        self.buf = np.frombuffer(data, np.uint8)
        self.lines = lines
        n = len(starts)
        self.fs = np.zeros((n, ncols), np.int64)
        self.fe = np.zeros((n, ncols), np.int64)
        self.nfields = np.zeros(n, np.int64)
        _split_fields(self.buf, starts, ends, self.fs, self.fe, self.nfields)
        # a short row's missing fields have no bounds: make them empty (the row is reported as short)
        self.fe[:, :] = np.where(np.arange(ncols) < self.nfields[:, None], self.fe, self.fs)

    def text(self, col: int) -> list[bytes]:
        d = self.data
        return [d[a:b] for a, b in zip(self.fs[:, col].tolist(), self.fe[:, col].tolist(), strict=True)]

    def numbers(self, cols: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(val, nfrac, status)``: int64, int64 and int8 [rows, len(cols)]."""
        shape = (len(self.lines), len(cols))
        val, nfrac, status = np.empty(shape, np.int64), np.empty(shape, np.int64), np.empty(shape, np.int8)
        _parse_fields(self.buf, self.fs, self.fe, np.array(cols, np.int64), val, nfrac, status)
        return val, nfrac, status


def _schema(header: str, path: Path, line: int) -> tuple[str, dict[str, int], int]:
    """``(kind, column index by name, N levels)`` of a header line; FeedError when it is none of KINDS."""
    names = [c.strip() for c in header.split(",")]
    cols = {n: i for i, n in enumerate(names)}
    if len(cols) != len(names):
        raise FeedError(path, line, f"the header names a column twice: {header[:120]!r}")
    if all(c in cols for c in _BASE):
        for kind, need in _COLUMNS.items():
            if all(c in cols for c in need):
                return kind, cols, 1
        levels = {int(m.group(2)) for m in map(_LEVEL_RE.match, names) if m}
        n = len(levels)
        want = [f"{s}[{i}].{f}" for i in range(n) for s in ("asks", "bids") for f in ("price", "amount")]
        if n and levels == set(range(n)) and all(c in cols for c in want):
            return "book_snapshot_N", cols, n
    raise FeedError(
        path, line, f"not a Tardis CSV header ({', '.join(KINDS)}; with symbol, timestamp, local_timestamp): "
        f"{header[:120]!r}",
    )  # fmt: skip


def read_tardis(
    path: str | Path, symbols: SymbolTable | None = None, lenient: bool = False
) -> tuple[np.ndarray, ReadReport]:
    """Read a Tardis.dev CSV (``incremental_book_L2``, ``book_snapshot_N``, ``quotes`` or ``trades``; plain
    or gzipped) into MARKET_EVENTs. ``symbols`` None infers a table (finest decimal step per symbol);
    ``lenient`` skips and counts bad rows instead of raising :class:`hean.feeds.common.FeedError`."""
    path = Path(path)
    kind, n_levels, rows = _open(path)
    report = ReadReport(str(path), f"tardis {kind.replace('_N', f'_{n_levels}')}", counters={"rows": 0})
    report.lines = len(rows.lines)
    problems = RowProblems()
    p = _parse(rows, kind, n_levels, symbols, problems)
    errors = LineErrors(report, lenient)
    for line in sorted(problems.by_line):  # in file order: strict mode names the first bad line
        errors.bad(line, problems.by_line[line])
    ok = problems.ok(rows.lines)
    head = {"sym": p["sym"][ok], "line": rows.lines[ok], "ts_exch": p["ts_exch"][ok], "ts_origin": p["ts_origin"][ok]}
    if kind == "trades":
        ev = _trades(head, p["units"][ok], p["extra"], ok)
    elif kind == "incremental_book_L2":
        ev = _incremental(head, p["units"][ok], p["extra"], ok, report)
    else:
        ev = _topn(head, p["units"][ok], p["present"][ok], len(p["table"]))
    ev["seq"] = np.arange(1, len(ev) + 1)
    report.symbols = p["table"]
    report.messages = report.counters["rows"] = int(ok.sum())
    report.events = len(ev)
    return ev, report


def _open(path: Path) -> tuple[str, int, _Rows]:
    """``(kind, N levels, data rows)`` of a Tardis CSV; blank lines are left out, the first line is the header."""
    data = read_bytes(path)
    starts, ends = split_lines(data)
    nonblank = np.flatnonzero(ends > starts)
    if len(nonblank) == 0:
        raise FeedError(path, None, "empty file: no Tardis CSV header")
    h = int(nonblank[0])
    kind, cols, n_levels = _schema(data[starts[h] : ends[h]].decode("utf-8", "replace"), path, h + 1)
    at = nonblank[1:]
    return kind, n_levels, _Rows(data, starts[at], ends[at], at + 1, cols)


def _parse(rows: _Rows, kind: str, n_levels: int, symbols: SymbolTable | None, problems: RowProblems) -> dict:
    """Every column of every row, checked (bad rows go to ``problems``) and converted: symbol ids, times in
    ns, prices/amounts in ticks/lots (``units``, int64[rows, 2P]) with ``present`` levels, the words
    (``extra``: side, is_snapshot, trade id) and the symbol table (``symbols``, or inferred)."""
    cols = rows.col
    n = len(cols)
    problems.mark(rows.nfields != n, rows.lines, lambda i: f"expected {n} columns, got {rows.nfields[i]}")
    sym, names = _symbol_ids(rows, cols["symbol"], symbols, problems)
    ts_exch, ts_origin = _times(rows, cols, problems)
    optional = kind in ("book_snapshot_N", "quotes")
    val, nfrac, present = _values(rows, _pairs(kind, n_levels), optional, problems)
    extra = _text_columns(rows, kind, cols, problems)
    table = symbols if symbols is not None else _infer(sym, nfrac, present, problems.ok(rows.lines), names)
    units = _convert(val, nfrac, present, sym, rows.lines, table, problems)
    if optional:
        _check_book_rows(units, present, rows.lines, problems)
    return {"sym": sym, "ts_exch": ts_exch, "ts_origin": ts_origin, "units": units, "present": present,
            "extra": extra, "table": table}  # fmt: skip


def _check_book_rows(units: np.ndarray, present: np.ndarray, lines: np.ndarray, problems: RowProblems) -> None:
    """A book row whose levels are not best first without gaps states no book: a bad row."""
    ok = problems.ok(lines)
    px, qty = units[:, 0::2], np.where(present, units[:, 1::2], 0)
    for side, sl in ((1, slice(0, None, 2)), (-1, slice(1, None, 2))):
        good = check_levels(px[:, sl], qty[:, sl], side)
        problems.mark(ok & ~good, lines, f"{'bid' if side == 1 else 'ask'} levels are not best first without gaps")


def _symbol_ids(rows: _Rows, col: int, symbols: SymbolTable | None, problems: RowProblems):
    """Symbol id of every row: the given table's (a name it lacks is a bad row), else ids in order of first
    appearance (the inferred table's order). Returns ``(ids, names by id)``."""
    names: dict[bytes, int] = {} if symbols is None else {s.name.encode(): s.id for s in symbols}
    text = rows.text(col)
    ids = np.zeros(len(text), np.int64)
    for i, t in enumerate(text):
        sid = names.get(t)
        if sid is None:
            if symbols is not None or not t:
                problems.bad(int(rows.lines[i]), f"unknown symbol {t.decode('utf-8', 'replace')!r}")
                continue
            sid = names[t] = len(names)
        ids[i] = sid
    return ids, [k.decode("utf-8", "replace") for k in names]


def _times(rows: _Rows, cols: dict[str, int], problems: RowProblems) -> tuple[np.ndarray, np.ndarray]:
    """``timestamp`` and ``local_timestamp`` (whole µs since the epoch) in ns."""
    names = ["timestamp", "local_timestamp"]
    val, nfrac, status = rows.numbers([cols[n] for n in names])
    good = (status == NUM_OK) & (nfrac == 0) & (val >= 0) & (val <= _MAX_US)
    for j, n in enumerate(names):
        why = f"{n} {{!r}} is not whole µs since the epoch"
        problems.mark(~good[:, j], rows.lines, lambda i, n=n, why=why: why.format(_field(rows, i, cols[n])))
    ns = np.where(good, val, 0) * 1000
    return ns[:, 0], ns[:, 1]


def _field(rows: _Rows, i: int, col: int) -> str:
    return rows.data[rows.fs[i, col] : rows.fe[i, col]][:40].decode("utf-8", "replace")


def _pairs(kind: str, n_levels: int) -> list[tuple[str, str]]:
    """(price column, amount column) of every level a row may hold; book rows list bid i then ask i."""
    if kind in ("trades", "incremental_book_L2"):
        return [("price", "amount")]
    if kind == "quotes":
        return [("bid_price", "bid_amount"), ("ask_price", "ask_amount")]
    return [(f"{s}[{i}].price", f"{s}[{i}].amount") for i in range(n_levels) for s in ("bids", "asks")]


def _values(rows: _Rows, pairs, optional: bool, problems: RowProblems):
    """Parse every price/amount field. Returns ``(val, nfrac, present)``: int64[rows, 2P] and bool[rows, P]
    (a level whose price and amount are both empty is absent where ``optional``)."""
    names = [c for p in pairs for c in p]
    idx = [rows.col[c] for c in names]
    val, nfrac, status = rows.numbers(idx)
    bad = status == NUM_BAD
    empty = status == NUM_EMPTY
    half = empty[:, 0::2] != empty[:, 1::2]
    for i in np.flatnonzero(bad.any(axis=1) | (empty.any(axis=1) & ~optional) | half.any(axis=1)).tolist():
        problems.bad(int(rows.lines[i]), _value_problem(rows, i, names, idx, bad[i], empty[i], half[i], optional))
    present = ~(empty[:, 0::2] | empty[:, 1::2])
    return val, nfrac, present


def _value_problem(rows, i, names, idx, bad, empty, half, optional) -> str:
    """The first thing wrong with row ``i``'s prices and amounts, in column order."""
    for j, n in enumerate(names):
        if bad[j]:
            return f"{n} {_field(rows, i, idx[j])!r} is not a plain decimal number"
        if empty[j] and not optional:
            return f"{n} is empty"
    j = int(np.flatnonzero(half)[0])
    return f"{names[2 * j]} and {names[2 * j + 1]} must both be set or both be empty"


def _text_columns(rows: _Rows, kind: str, cols: dict[str, int], problems: RowProblems) -> dict[str, np.ndarray]:
    """The side (and ``is_snapshot``, trade ids) of each row as numbers; an unknown word is a bad row."""
    out: dict[str, np.ndarray] = {}
    words = {"side": _SIDES.get(kind), "is_snapshot": _BOOL if kind == "incremental_book_L2" else None}
    for name, table in words.items():
        if table is None:
            continue
        text = rows.text(cols[name])
        v = np.array([table.get(t, 9) for t in text], np.int64).reshape(len(text))
        allowed = "/".join(k.decode() for k in table)
        problems.mark(
            v == 9,
            rows.lines,
            lambda i, t=text, n=name, a=allowed: f"{n} {t[i][:20].decode('utf-8', 'replace')!r} is not {a}",
        )
        out[name] = v
    if kind == "trades":
        ids = rows.text(cols["id"])
        out["id"] = np.array([int(t) if t.isdigit() and len(t) < 19 else 0 for t in ids], np.int64).reshape(len(ids))
    return out


def _infer(sym, nfrac, present, ok, names: list[str]) -> SymbolTable:
    """Tick and lot per symbol: the finest decimal step of its good rows' prices and amounts."""
    keep = present & ok[:, None]
    pf = np.where(keep, nfrac[:, 0::2], 0).max(axis=1, initial=0)
    qf = np.where(keep, nfrac[:, 1::2], 0).max(axis=1, initial=0)
    ids = {n: i for i, n in enumerate(names)}
    return infer_symbols(
        names,
        {n: int(pf[ok & (sym == i)].max(initial=0)) for n, i in ids.items()},
        {n: int(qf[ok & (sym == i)].max(initial=0)) for n, i in ids.items()},
        "tardis",
    )


def _convert(val, nfrac, present, sym, lines, table: SymbolTable, problems: RowProblems) -> np.ndarray:
    """Prices to ticks and amounts to lots, exactly (int64[rows, 2P]); off-grid or out-of-range values make
    their row bad (convert_all's reasons). Each good row is one segment of (price, amount) pairs; an absent
    level converts as one tick and zero lots (and is masked out by ``present`` afterwards): its fields in
    ``val``/``nfrac`` are overwritten so."""
    rows = np.flatnonzero(problems.ok(lines))
    width = val.shape[1]
    val[:, 0::2] = np.where(present, val[:, 0::2], table.tick_mant[sym][:, None])
    nfrac[:, 0::2] = np.where(present, nfrac[:, 0::2], table.tick_scale[sym][:, None])
    val[:, 1::2] = np.where(present, val[:, 1::2], 0)
    nfrac[:, 1::2] = np.where(present, nfrac[:, 1::2], 0)
    units, _ok = convert_all(
        rows, np.full(len(rows), ROLE_PAIRS, np.int64), rows * width, np.full(len(rows), width, np.int64),
        val.ravel(), nfrac.ravel(), sym, lines, table, problems,
    )  # fmt: skip
    return units[: val.size].reshape(val.shape) if val.size else np.zeros(val.shape, np.int64)


def _trades(head: dict, units: np.ndarray, extra: dict, ok: np.ndarray) -> np.ndarray:
    """One TRADE per row, each its own group."""
    ev = _stamped(head, np.arange(len(units)))
    ev["kind"] = EventKind.TRADE
    ev["side"] = extra["side"][ok]
    ev["price"] = units[:, 0]
    ev["qty"] = units[:, 1]
    ev["order_id"] = extra["id"][ok]
    ev["flags"] = F_LAST_IN_GROUP
    return ev


def _topn(head: dict, units: np.ndarray, present: np.ndarray, n_symbols: int) -> np.ndarray:
    """book_snapshot_N and quotes rows: each row a whole top N (see :mod:`hean.feeds.topn`)."""
    qty = np.where(present, units[:, 1::2], 0)
    px = units[:, 0::2]
    bid_px, ask_px = np.ascontiguousarray(px[:, 0::2]), np.ascontiguousarray(px[:, 1::2])
    bid_qty, ask_qty = np.ascontiguousarray(qty[:, 0::2]), np.ascontiguousarray(qty[:, 1::2])
    o = run_topn(head["sym"], bid_px, bid_qty, ask_px, ask_qty, np.ones(len(units), np.bool_),
                 np.zeros((len(units), 4), np.int64), n_symbols)  # fmt: skip
    return to_events(o, head["sym"], head["ts_origin"], head["ts_exch"], head["line"])


def _incremental(head: dict, units: np.ndarray, extra: dict, ok: np.ndarray, report: ReadReport) -> np.ndarray:
    """incremental_book_L2 rows: a LEVEL_SET each, a CLEAR before each snapshot run, groups closed where
    the symbol, the snapshot flag or (for updates) ``local_timestamp`` changes."""
    sym, snap, ts = head["sym"], extra["is_snapshot"][ok], head["ts_origin"]
    n = len(sym)
    close = np.ones(n, np.bool_)
    if n > 1:
        same = (sym[1:] == sym[:-1]) & (snap[1:] == snap[:-1]) & ((snap[1:] == 1) | (ts[1:] == ts[:-1]))
        close[:-1] = ~same
    out = np.zeros((2 * n, 6), np.int64)
    n_sym = int(sym.max(initial=-1)) + 1
    counts = np.zeros(2, np.int64)
    k = _incremental_events(
        sym, snap, extra["side"][ok], units[:, 0], units[:, 1], close, np.full(n_sym, -1), out, counts
    )
    report.counters["snapshots"] = int(counts[0])
    report.counters["updates_before_snapshot"] = int(counts[1])
    o = out[:k]
    ev = _stamped(head, o[:, 0])
    ev["kind"], ev["side"], ev["price"], ev["qty"], ev["flags"] = o[:, 1], o[:, 2], o[:, 3], o[:, 4], o[:, 5]
    return ev


@entry
def _incremental_events(sym, snap, side, px, qty, close, state, out, counts):
    """The events of incremental_book_L2 rows into ``out`` (row, kind, side, px, qty, flags); returns their
    count. ``state[s]`` of each symbol: -1 no row yet, 0 updates but no snapshot yet, 1 in a snapshot run,
    2 updates after a snapshot. ``counts``: snapshot runs, update rows before the symbol's first snapshot."""
    n = 0
    for i in range(sym.shape[0]):
        s = sym[i]
        flags = 0
        if snap[i] == 1:
            flags = F_SNAPSHOT
            if state[s] != 1:  # a new snapshot run replaces the book
                out[n, 0], out[n, 1], out[n, 5] = i, _CLEAR, F_SNAPSHOT
                n += 1
                counts[0] += 1
            state[s] = 1
        elif state[s] <= 0:
            counts[1] += 1
            state[s] = 0
        else:
            state[s] = 2
        out[n, 0], out[n, 1], out[n, 2], out[n, 3], out[n, 4] = i, _LEVEL_SET, side[i], px[i], qty[i]
        out[n, 5] = flags | (F_LAST_IN_GROUP if close[i] else 0)
        n += 1
    return n


def _stamped(head: dict, row: np.ndarray) -> np.ndarray:
    """MARKET_EVENTs for rows ``row``, with their symbol, times and line number (update_id) filled in."""
    ev = np.zeros(len(row), MARKET_EVENT)
    ev["symbol"] = head["sym"][row]
    ev["ts_origin"] = head["ts_origin"][row]
    ev["ts_exch"] = head["ts_exch"][row]
    ev["update_id"] = head["line"][row]
    return ev
