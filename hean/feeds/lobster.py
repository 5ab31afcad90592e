"""LOBSTER message + orderbook CSV pairs -> L3 MARKET_EVENT arrays.

The message file has one order-book event per row: ``time`` (seconds after midnight, exchange local time,
up to ns precision), ``type``, ``order id``, ``size``, ``price`` (dollars x 10000), ``direction`` (1 buy /
-1 sell limit order). Types: 1 new order, 2 partial cancel, 3 full delete, 4 visible execution, 5 hidden
execution, 6 cross trade, 7 trading halt. Row ``i`` of the orderbook file is the top ``L`` levels after
message ``i``: ``ask px, ask size, bid px, bid size`` per level (empty levels: price +-9999999999, size 0).

Why the reader also reads the orderbook file: a level-L sample leaves out events beyond the L visible levels
and starts mid-day, so orders already resting at the start (and deeper orders whose level later enters the
top L) never appear in an ADD. The reader keeps its own model of the book and, after each message, compares
it with the orderbook row; a difference becomes a fix-up on that level: missing size is an L3_ADD of a
*phantom* order (a synthetic negative id), surplus is cancelled from the level's phantoms and then from its
real orders, newest first (their cancels happened while the level was out of view). Messages that touch an
order id the sample never added act on the phantoms of their level. The report counts ``fixups_initial``
(row 0), ``fixups_outside_view`` (a level outside the previous row's visible range: it entered the view or
went away unseen) and ``fixups_inconsistent`` (a visible level that disagrees with the messages: 0 on
consistent data).

Events per message (one group, the last flagged F_LAST_IN_GROUP; ``update_id`` = 1-based message number):
type 1 -> L3_ADD, 2 -> L3_CANCEL (qty = cancelled size), 3 -> L3_DELETE, 4 -> L3_EXECUTE, 5 -> TRADE
flagged F_HIDDEN (side = aggressor = opposite of the hidden order's direction), 6 -> TRADE (side 0),
7 -> HALT (price = LOBSTER's halt indicator: -1 halt, 0 quote resume, 1 trade resume); then the fix-ups.
``ts_exch`` = ``ts_origin`` = the message time as ns since the epoch (midnight America/New_York of the date
in the file name; ns after midnight when the name has no date). Times, sizes, prices and order ids outside
the bounds every event keeps (:mod:`hean.feeds.native`) make the row a bad line.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from hean.feeds.common import FeedError, LineErrors, ReadReport, check_input, read_bytes
from hean.records import F_HIDDEN, F_LAST_IN_GROUP, MARKET_EVENT, EventKind
from hean.symbols import SymbolTable, units_from_str

__all__ = ["PHANTOM_BASE", "read_lobster"]

PHANTOM_BASE = -(1 << 40)  # phantom order ids count down from here (LOBSTER ids are positive)
EMPTY_PX = 9999999999
MAX_UNITS = 1 << 53  # hean.feeds.native.MAX_UNITS: prices, sizes and order ids stay below it
_COUNTERS = [
    "messages",
    "adds",
    "cancels",
    "deletes",
    "executions",
    "hidden",
    "cross",
    "halts",
    "unknown_order_on_unknown_level",
    "messages_without_events",
    "fixups_initial",
    "fixups_outside_view",
    "fixups_inconsistent",
]
_NAME_RE = re.compile(r"([A-Za-z][A-Za-z.]*)[_-](\d{4}-\d{2}-\d{2})")


def _parse_time_ns(text: str) -> int:
    """Seconds after midnight (up to ns precision) as ns; at most 9 integer digits, so that midnight plus
    the time stays an int64."""
    whole, _, frac = text.partition(".")
    if not _digits(whole) or len(whole) > 9 or (frac and not _digits(frac)) or len(frac) > 9:
        raise ValueError(f"bad time {text!r}")
    return int(whole) * 1_000_000_000 + int(frac.ljust(9, "0") or 0)


def _digits(text: str) -> bool:
    """ASCII digits only (``str.isdigit`` also takes other scripts' digits and superscripts)."""
    return text.isascii() and text.isdigit()


def _bounded(name: str, value: int, low: int, high: int = MAX_UNITS) -> int:
    """``value`` when ``low <= value < high`` (the bounds every event must keep), else ValueError naming it."""
    if not low <= value < high:
        raise ValueError(f"{name} {value} out of range [{low}, {high})")
    return value


def _midnight_ns(path: Path, date: str | None) -> int:
    if date is None:
        return 0
    try:
        d = datetime.strptime(date, "%Y-%m-%d").replace(tzinfo=ZoneInfo("America/New_York"))
    except ValueError:
        raise FeedError(path, None, f"the date {date} in the file name is not a calendar date") from None
    return max(0, int(d.timestamp())) * 1_000_000_000


def _rows(path: Path, errors: LineErrors, ncols: int | None):
    text = read_bytes(path).decode("ascii", errors="replace")
    for li, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        cells = line.split(",")
        if ncols is not None and len(cells) < ncols:
            errors.bad(li, f"{path.name}: expected {ncols} columns, got {len(cells)}")
            continue
        yield li, cells


class _Model:
    """The reader's own L3 model: real orders, phantom orders per level, level totals."""

    def __init__(self) -> None:
        self.orders: dict[int, list[int]] = {}  # id -> [side, px, qty]
        self.level: dict[tuple[int, int], int] = {}
        self.phantoms: dict[tuple[int, int], list[list[int]]] = {}  # (side, px) -> [[id, qty], ...]
        self.next_phantom = PHANTOM_BASE

    def add(self, oid: int, side: int, px: int, qty: int) -> None:
        self.orders[oid] = [side, px, qty]
        self.level[(side, px)] = self.level.get((side, px), 0) + qty

    def _level_sub(self, key: tuple[int, int], qty: int) -> None:
        left = self.level[key] - qty
        if left:
            self.level[key] = left
        else:
            del self.level[key]

    def reduce(self, oid: int, qty: int) -> None:
        o = self.orders[oid]
        take = min(qty, o[2])
        o[2] -= take
        self._level_sub((o[0], o[1]), take)
        if o[2] == 0:
            del self.orders[oid]

    def phantom_add(self, side: int, px: int, qty: int) -> int:
        self.next_phantom -= 1
        self.phantoms.setdefault((side, px), []).append([self.next_phantom, qty])
        self.level[(side, px)] = self.level.get((side, px), 0) + qty
        return self.next_phantom

    def phantom_reduce(self, side: int, px: int, qty: int) -> list[tuple[int, int]]:
        """Take ``qty`` off the level's phantoms, newest first; returns ``[(phantom id, qty taken)]``."""
        taken = []
        lst = self.phantoms.get((side, px), [])
        while qty > 0 and lst:
            ph = lst[-1]
            t = min(qty, ph[1])
            ph[1] -= t
            qty -= t
            taken.append((ph[0], t))
            self._level_sub((side, px), t)
            if ph[1] == 0:
                lst.pop()
        if not lst:
            self.phantoms.pop((side, px), None)
        return taken

    def level_reduce(self, side: int, px: int, qty: int) -> list[tuple[int, int, bool]]:
        """Take ``qty`` off a level: phantoms first, then real orders newest first (their cancels happened
        outside the sample's visible levels). Returns ``[(order id, qty taken, order gone)]``."""
        taken = [(ph, t, False) for ph, t in self.phantom_reduce(side, px, qty)]
        qty -= sum(t for _, t, _ in taken)
        if qty > 0:
            real = [oid for oid, o in self.orders.items() if o[0] == side and o[1] == px]
            for oid in reversed(real):
                if qty <= 0:
                    break
                t = min(qty, self.orders[oid][2])
                gone = t == self.orders[oid][2]
                self.reduce(oid, t)
                taken.append((oid, t, gone))
                qty -= t
        return taken


def read_lobster(
    message_path: str | Path,
    book_path: str | Path | None = None,
    symbols: SymbolTable | None = None,
    lenient: bool = False,
    symbol: str | None = None,
) -> tuple[np.ndarray, ReadReport]:
    """Read a LOBSTER message file (and its orderbook file, by default the same name with ``orderbook``).

    ``symbols`` default: one symbol named from the file name (or ``symbol``), tick 0.01, lot 1.
    """
    mpath = Path(message_path)
    check_input(mpath)
    bpath = Path(book_path) if book_path is not None else mpath.with_name(mpath.name.replace("message", "orderbook"))
    if bpath == mpath or not bpath.exists():
        raise FeedError(mpath, None, f"orderbook file {bpath.name} not found (pass book_path)")
    m = _NAME_RE.search(mpath.name)
    name = symbol or (m.group(1) if m else "LOBSTER")
    if symbols is None:
        symbols = SymbolTable([{"name": name, "tick_size": "0.01", "lot_size": "1", "venue": "lobster"}])
    sym = symbols[name] if name in symbols else symbols.by_id(0)
    report = ReadReport(str(mpath), "lobster", symbols=symbols)
    errors = LineErrors(report, lenient)
    midnight = _midnight_ns(mpath, m.group(2) if m else None)

    def px_ticks(raw: str) -> int:
        return units_from_str(_dollars(raw), sym.tick_mant, sym.tick_scale, f"{sym.name} price")

    brows = list(_rows(bpath, LineErrors(ReadReport(str(bpath), "lobster"), False), None))
    mrows = list(_rows(mpath, errors, 6))
    if len(brows) != sum(1 for _ in _rows(mpath, LineErrors(ReadReport(str(mpath), "lobster"), True), None)):
        raise FeedError(bpath, None, f"{len(brows)} orderbook rows for a message file of another length")
    book_by_line = {li: cells for li, cells in brows}
    n_levels = len(brows[0][1]) // 4 if brows else 0

    out: list[tuple[int, int, int, int, int, int, int]] = []  # kind, side, flags, px, qty, oid, uid / ts
    ts_list: list[int] = []
    model = _Model()
    counts = dict.fromkeys(_COUNTERS, 0)
    prev_range: dict[int, tuple[int, int] | None] | None = None
    for idx, (li, c) in enumerate(mrows, 1):
        try:
            ts = midnight + _parse_time_ns(c[0].strip())
            typ, oid, size, raw_px, direction = (int(x) for x in c[1:6])
            if direction not in (1, -1):
                raise ValueError(f"direction {direction} is not 1 or -1")
            _bounded("size", size, 0)
            _bounded("order id", oid, 0)
            # a halt's price is its indicator (-1 halt, 0 quote resume, 1 trade resume), not a price
            px = _bounded("price", px_ticks(c[4].strip()), 1) if typ != 7 else _bounded("halt", raw_px, -1, 2)
            row = book_by_line.get(li)
            if row is None or len(row) < 4 * n_levels:
                raise ValueError("no matching orderbook row")
            levels = _row_levels(row, n_levels, px_ticks)
        except ValueError as e:
            errors.bad(li, str(e))
            continue
        first = len(out)
        side = direction
        if typ == 1:
            if oid in model.orders:
                errors.bad(li, f"order {oid} added twice")
                continue
            model.add(oid, side, px, size)
            out.append((EventKind.L3_ADD, side, 0, px, size, oid))
            counts["adds"] += 1
        elif typ in (2, 3, 4):
            kind = {2: EventKind.L3_CANCEL, 3: EventKind.L3_DELETE, 4: EventKind.L3_EXECUTE}[typ]
            counts[{2: "cancels", 3: "deletes", 4: "executions"}[typ]] += 1
            if oid in model.orders:
                o = model.orders[oid]
                if typ == 3:
                    model.reduce(oid, o[2])
                    out.append((kind, o[0], 0, o[1], 0, oid))
                else:
                    model.reduce(oid, size)
                    out.append((kind, o[0], 0, o[1], size, oid))
            else:
                taken = model.phantom_reduce(side, px, size)
                if not taken:
                    counts["unknown_order_on_unknown_level"] += 1
                for ph, t in taken:
                    k = EventKind.L3_EXECUTE if typ == 4 else EventKind.L3_CANCEL
                    out.append((k, side, 0, px, t, ph))
        elif typ == 5:
            counts["hidden"] += 1
            out.append((EventKind.TRADE, -side, F_HIDDEN, px, size, oid))
        elif typ == 6:
            counts["cross"] += 1
            out.append((EventKind.TRADE, 0, 0, px, size, oid))
        elif typ == 7:
            counts["halts"] += 1
            out.append((EventKind.HALT, 0, 0, px, 0, 0))  # price: the halt indicator
        else:
            errors.bad(li, f"unknown message type {typ}")
            continue
        counts["messages"] += 1
        # fix-ups against the orderbook row
        for s, lv in levels.items():
            for lpx, lqty in lv:
                have = model.level.get((s, lpx), 0)
                if have == lqty:
                    continue
                if prev_range is None:
                    counts["fixups_initial"] += 1
                elif prev_range[s] is not None and _inside(s, lpx, prev_range[s]):
                    counts["fixups_inconsistent"] += 1
                else:
                    counts["fixups_outside_view"] += 1
                if lqty > have:
                    ph = model.phantom_add(s, lpx, lqty - have)
                    out.append((EventKind.L3_ADD, s, 0, lpx, lqty - have, ph))
                else:
                    for oid2, t, gone in model.level_reduce(s, lpx, have - lqty):
                        out.append((EventKind.L3_DELETE if gone else EventKind.L3_CANCEL, s, 0, lpx, t, oid2))
            # a level the model has inside the visible range but the row does not list
            if lv:
                rng = (lv[0][0], lv[-1][0])
                listed = {p for p, _ in lv}
                for (ms, mpx), mq in list(model.level.items()):
                    if ms == s and mpx not in listed and _inside(s, mpx, rng):
                        seen = prev_range is not None and prev_range[s] is not None and _inside(s, mpx, prev_range[s])
                        counts["fixups_inconsistent" if seen else "fixups_outside_view"] += 1
                        for oid2, t, gone in model.level_reduce(s, mpx, mq):
                            out.append((EventKind.L3_DELETE if gone else EventKind.L3_CANCEL, s, 0, mpx, t, oid2))
        prev_range = {s: ((lv[0][0], lv[-1][0]) if lv else None) for s, lv in levels.items()}
        if len(out) == first:
            counts["messages_without_events"] += 1  # e.g. a cancel the sample cannot place: the book is unchanged
            continue
        ts_list += [ts] * (len(out) - first)
        out[-1] = out[-1][:2] + (out[-1][2] | F_LAST_IN_GROUP,) + out[-1][3:]
        out[first:] = [e + (idx,) for e in out[first:]]

    ev = np.zeros(len(out), MARKET_EVENT)
    if out:
        arr = np.array(out, np.int64)
        ev["kind"], ev["side"], ev["flags"] = arr[:, 0], arr[:, 1], arr[:, 2]
        ev["price"], ev["qty"], ev["order_id"], ev["update_id"] = arr[:, 3], arr[:, 4], arr[:, 5], arr[:, 6]
        ev["ts_origin"] = ev["ts_exch"] = np.array(ts_list, np.int64)
    ev["symbol"] = sym.id
    ev["seq"] = np.arange(1, len(ev) + 1)
    report.lines = len(mrows) + report.skipped
    report.messages = counts["messages"]
    report.events = len(ev)
    report.counters = counts
    return ev, report


def _dollars(raw: str) -> str:
    """LOBSTER's integer price (dollars x 10000) as a decimal string."""
    v = int(raw)
    sign = "-" if v < 0 else ""
    v = abs(v)
    return f"{sign}{v // 10000}.{v % 10000:04d}"


def _row_levels(row: list[str], n_levels: int, px_ticks) -> dict[int, list[tuple[int, int]]]:
    """``{BID: [(px, qty), ...best first], ASK: [...]}`` of one orderbook row, empty levels left out."""
    out: dict[int, list[tuple[int, int]]] = {1: [], -1: []}
    for i in range(n_levels):
        for side, off in ((-1, 0), (1, 2)):
            p = int(row[4 * i + off])
            q = _bounded("orderbook size", int(row[4 * i + off + 1]), 0)
            if abs(p) == EMPTY_PX or q == 0:
                continue
            out[side].append((_bounded("orderbook price", px_ticks(row[4 * i + off].strip()), 1), q))
    return out


def _inside(side: int, px: int, rng: tuple[int, int]) -> bool:
    """Is ``px`` within the visible range ``(best, worst)`` of ``side``?"""
    best, worst = rng[0], rng[1]
    return worst <= px <= best if side == 1 else best <= px <= worst
