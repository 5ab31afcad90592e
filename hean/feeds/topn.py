"""Top-N book rows (Tardis ``book_snapshot_N`` and ``quotes``, Databento MBP-1 and MBP-10) -> L2 events.

Why a diff and not CLEAR + N level sets per row: each row states the whole top N of the book, so the book
must end up holding exactly those levels after the row. A CLEAR per row would do that, but it wipes the L2
book's whole price window (tens of microseconds in the engine, per row) and turns every row into 2N+1 events.
Instead :func:`topn_events` remembers the previous row of each symbol and emits only what changed:

* a level of the previous row whose price is not in the new row -> LEVEL_SET qty 0 (deleted; this includes a
  level pushed out of the top N: deeper levels are unknown, so the book keeps none);
* a level of the new row that is new or has another quantity -> LEVEL_SET with its quantity.

The first row of each symbol is a CLEAR then all its levels, flagged F_SNAPSHOT (the book starts from a
known state). A row that closes a group (``row_close``: every Tardis row; a Databento record with F_LAST)
flags its last event F_LAST_IN_GROUP; when it changed nothing, it repeats its best level unchanged (or emits
a CLEAR when both sides are empty) so that every such row still publishes one book state -- ``hean book``
then writes one line per row. After each closed row the L2 book is exactly that row's top N.

An optional TRADE per row (Databento MBP records with action T) comes before the row's level events.
"""

from __future__ import annotations

import numpy as np

from hean.jit import entry, kernel
from hean.records import F_LAST_IN_GROUP, F_SNAPSHOT, MARKET_EVENT, EventKind

__all__ = ["check_levels", "run_topn", "to_events", "topn_events"]
_CHUNK_EVENTS = 1 << 20  # room for events per call: bounds the scratch buffer, whatever N and the row count

_LEVEL_SET = int(EventKind.LEVEL_SET)
_CLEAR = int(EventKind.CLEAR)
_TRADE = int(EventKind.TRADE)


def check_levels(px: np.ndarray, qty: np.ndarray, side: int) -> np.ndarray:
    """Per row: are the present levels (qty > 0) a prefix of the N slots, with prices strictly worse from
    slot to slot (bids falling, asks rising)? A row that fails would not state one book, so it is a bad row."""
    present = qty > 0
    if px.shape[1] < 2:
        return np.ones(len(px), np.bool_)
    gap = ~present[:, :-1] & present[:, 1:]
    step = (px[:, 1:] - px[:, :-1]) * -side  # > 0 when the next level is worse
    bad_order = present[:, 1:] & (step <= 0)
    return ~(gap | bad_order).any(axis=1)


@entry
def topn_events(row_sym, bid_px, bid_qty, ask_px, ask_qty, row_close, trade, prev_px, prev_qty, started, out):
    """Emit the events of every row (see the module doc) into ``out``; returns how many were written.

    ``bid_px``/``bid_qty``/``ask_px``/``ask_qty``: int64[rows, N] in ticks/lots, qty 0 = no level.
    ``trade``: int64[rows, 4] = (has trade, side, px, qty). ``prev_px``/``prev_qty``: int64[symbols, 2, N]
    and ``started``: bool[symbols], the state carried from row to row (zeros to begin). ``out``:
    int64[cap, 6], a row per event: (row index, kind, side, px, qty, flags); ``cap`` must be at least
    ``rows * (4 * N + 3)``. :func:`run_topn` calls it chunk by chunk.
    """
    n = 0
    nl = bid_px.shape[1]
    for i in range(row_sym.shape[0]):
        sym = row_sym[i]
        first = n
        if trade[i, 0] != 0:
            n = _put(out, n, i, _TRADE, trade[i, 1], trade[i, 2], trade[i, 3], 0)
        flags = 0
        if not started[sym]:
            started[sym] = True
            for k in range(nl):
                prev_qty[sym, 0, k] = 0
                prev_qty[sym, 1, k] = 0
            n = _put(out, n, i, _CLEAR, 0, 0, 0, F_SNAPSHOT)
            flags = F_SNAPSHOT
        for s in range(2):
            side = 1 if s == 0 else -1
            px = bid_px[i] if s == 0 else ask_px[i]
            qty = bid_qty[i] if s == 0 else ask_qty[i]
            for j in range(nl):  # deletions: previous levels absent from this row
                if prev_qty[sym, s, j] > 0 and _find(px, qty, prev_px[sym, s, j]) < 0:
                    n = _put(out, n, i, _LEVEL_SET, side, prev_px[sym, s, j], 0, flags)
            for k in range(nl):  # new levels and changed quantities
                if qty[k] > 0:
                    j = _find(prev_px[sym, s], prev_qty[sym, s], px[k])
                    if j < 0 or prev_qty[sym, s, j] != qty[k]:
                        n = _put(out, n, i, _LEVEL_SET, side, px[k], qty[k], flags)
            for k in range(nl):
                prev_px[sym, s, k] = px[k]
                prev_qty[sym, s, k] = qty[k]
        if row_close[i]:
            if n == first or out[n - 1, 1] == _TRADE:
                n = _repeat_best(out, n, i, bid_px[i], bid_qty[i], ask_px[i], ask_qty[i])
            out[n - 1, 5] |= F_LAST_IN_GROUP
    return n


@kernel(inline=True)
def _find(px, qty, p):
    """Slot of price ``p`` among the present levels of one side, or -1."""
    for k in range(px.shape[0]):
        if qty[k] > 0 and px[k] == p:
            return k
    return -1


@kernel(inline=True)
def _put(out, n, row, kind, side, px, qty, flags):
    out[n, 0] = row
    out[n, 1] = kind
    out[n, 2] = side
    out[n, 3] = px
    out[n, 4] = qty
    out[n, 5] = flags
    return n + 1


@kernel(inline=True)
def _repeat_best(out, n, row, bid_px, bid_qty, ask_px, ask_qty):
    """An event that changes nothing, to close a row that changed nothing: its best bid (or ask) set to the
    quantity it already has, or a CLEAR of a book that is already empty."""
    if bid_qty[0] > 0:
        return _put(out, n, row, _LEVEL_SET, 1, bid_px[0], bid_qty[0], 0)
    if ask_qty[0] > 0:
        return _put(out, n, row, _LEVEL_SET, -1, ask_px[0], ask_qty[0], 0)
    return _put(out, n, row, _CLEAR, 0, 0, 0, 0)


def run_topn(row_sym, bid_px, bid_qty, ask_px, ask_qty, row_close, trade, n_symbols: int) -> np.ndarray:
    """:func:`topn_events` over all rows (arguments as there, contiguous int64/bool arrays), in chunks of rows
    whose worst case fits :data:`_CHUNK_EVENTS` events, the state carried from chunk to chunk. Returns the
    events, int64[k, 6] (row index, kind, side, px, qty, flags)."""
    rows, depth = bid_px.shape
    prev_px = np.zeros((n_symbols, 2, depth), np.int64)
    prev_qty = np.zeros((n_symbols, 2, depth), np.int64)
    started = np.zeros(n_symbols, np.bool_)
    step = max(1, _CHUNK_EVENTS // (4 * depth + 3))
    out = np.zeros((step * (4 * depth + 3), 6), np.int64)
    parts = [np.zeros((0, 6), np.int64)]
    for a in range(0, rows, step):
        b = min(rows, a + step)
        k = topn_events(row_sym[a:b], bid_px[a:b], bid_qty[a:b], ask_px[a:b], ask_qty[a:b], row_close[a:b],
                        trade[a:b], prev_px, prev_qty, started, out)  # fmt: skip
        part = out[:k].copy()
        part[:, 0] += a
        parts.append(part)
    return np.concatenate(parts)


def to_events(o: np.ndarray, row_sym, ts_origin, ts_exch, update_id) -> np.ndarray:
    """MARKET_EVENT records of the events ``o`` (see :func:`run_topn`), each stamped with its row's symbol,
    times and update id (per-row arrays); ``seq`` is left to the caller."""
    row = o[:, 0]
    ev = np.zeros(len(o), MARKET_EVENT)
    ev["kind"], ev["side"], ev["price"], ev["qty"], ev["flags"] = o[:, 1], o[:, 2], o[:, 3], o[:, 4], o[:, 5]
    ev["symbol"] = row_sym[row]
    ev["ts_origin"] = ts_origin[row]
    ev["ts_exch"] = ts_exch[row]
    ev["update_id"] = update_id[row]
    return ev
