"""The L2 price-level order book: numba kernels over a :class:`L2Book` NamedTuple of numpy arrays.

Why this layout: a level update must cost a few ns, so the hot path is one array store. Each (symbol, side)
keeps a *window* of ``W`` price slots (``W`` a power of two) indexed by the price in ticks, plus an
*overflow* hash table for levels that are further from the touch than the window reaches -- nothing is
dropped because it is far away, and a far update is O(1) too (on the Binance recording about 5 % of level
updates land more than 14,000 ticks from the touch).

Keys: both sides are stored as "smaller key = better": ``key = -px`` on the bid side (s = 0), ``key = px``
on the ask side (s = 1). The window of a side covers keys ``[lo, lo + W)``; key ``k`` lives in slot
``k & (W - 1)`` (a ring, so moving the window only touches the keys that enter or leave it). Invariants:

* ``best`` is the smallest key with quantity > 0, or :data:`EMPTY` when the side has no level; when the side
  is not empty, ``best`` is inside the window; when it is empty, ``lo`` is :data:`LO_NONE`;
* every overflow key is ``>= lo + W`` (worse than anything in the window);
* the window is placed with ``best`` about ``W/8`` slots above ``lo`` (room for the touch to improve); it
  moves when a better price arrives below ``lo`` or when ``best`` drifts past ``lo + W/2``. Keys that leave
  the window go to the overflow, keys that enter come from it.

``l2_best_*`` is two loads. A level set inside the window is a store plus a compare with ``best``; deleting
the best level scans the window forward to the next non-empty slot (dense near the touch in practice).

Status codes (every kernel returns one, none raises): :data:`OK`, :data:`IGNORED` (an event kind the book does
not act on: TRADE, TICKER, HALT, L3_*), :data:`ERR_SYMBOL`, :data:`ERR_SIDE`, :data:`ERR_QTY` (negative),
:data:`ERR_OVERFLOW` (the overflow store of that side is full: a far level was lost; the book is marked stale
until the next snapshot and ``info[sym, I_LOST]`` counts the lost levels).

Why ``_nrt=False`` on every kernel: numba reference-counts each array of a NamedTuple argument on entry to a
function that has branches, with atomic increments it cannot prune -- measured here, 200-600 ns per call
of a kernel taking an 8-array NamedTuple, against a few ns without. The kernels never allocate, so they are
compiled without the NRT and a call costs what its body costs. (Callers may keep the NRT.)

Staleness: an OUT_OF_SYNC event marks the symbol stale until the next CLEAR (snapshot begin);
:func:`l2_fill_state` also flags F_STALE when ``now - last update > stale_ns`` (``stale_ns`` > 0) and
F_CROSSED when best bid >= best ask.

Usage (the engine's book stage; ``out`` is a BOOK_STATE array, e.g. a ring slot)::

    book = make_l2_book(n_symbols)
    stats = make_trade_stats(n_symbols)
    n = book_on_event(book, stats, events[i], out, k, 0)   # 1 when out[k] was written

Walking depth from the touch outward (the simulated venue filling a marketable buy)::

    px, qty = l2_best_ask(book, sym)
    while qty > 0 and remaining > 0:
        ...                                    # take min(qty, remaining) at px
        px = l2_next_level(book, sym, ASK, px)
        if px == NO_PRICE:
            break
        qty = l2_level_qty(book, sym, ASK, px)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from hean.jit import kernel
from hean.records import (
    BOOK_STATE,
    F_CROSSED,
    F_LAST_IN_GROUP,
    F_STALE,
    MARKET_EVENT,
    BookStateKind,
    EventKind,
)
from hean.stages.declare import Stage, Stream
from hean.stages.depth import DW_LEVELS, DW_SEQ, DW_SYMBOL, depth_levels
from hean.stages.hashmap import HM_EMPTY, hm_delete_at, hm_find, hm_insert
from hean.stages.ports import age, put_each, slot
from hean.stages.tops import tops_on_book_state
from hean.stages.trades import TradeStats, make_trade_stats, trade_on, trade_vwap

__all__ = [
    "EMPTY",
    "ERR_OVERFLOW",
    "ERR_QTY",
    "ERR_SIDE",
    "ERR_SYMBOL",
    "IGNORED",
    "LO_NONE",
    "NO_PRICE",
    "OK",
    "L2Book",
    "book_on_event",
    "book_on_events",
    "book_replay_states",
    "l2_apply",
    "l2_apply_events",
    "l2_best_ask",
    "l2_best_bid",
    "l2_clear",
    "l2_depth",
    "l2_fill_state",
    "l2_level_qty",
    "l2_n_levels",
    "l2_next_level",
    "l2_set_level",
    "make_l2_book",
]

EMPTY = np.int64(np.iinfo(np.int64).max)  # ``best`` key of an empty side
# ``lo`` of an empty side: a window no price is inside (key - LO_NONE >= 2**62 - |key| > W for any real
# price), so the fast path never takes an update for an empty side and the slow path places the window.
LO_NONE = np.int64(-(1 << 62))
NO_PRICE = np.int64(np.iinfo(np.int64).min)  # l2_next_level: no further level

OK = 0
IGNORED = 1
ERR_SYMBOL = -1
ERR_SIDE = -2
ERR_QTY = -3
ERR_OVERFLOW = -4

# ``info`` columns, per symbol
I_UPDATE_ID = 0  # update_id of the last applied LEVEL_SET / CLEAR
I_TS = 1  # ts_origin of the last applied event
I_TS_EXCH = 2  # ts_exch of the last applied event
I_STALE = 3  # 1 after OUT_OF_SYNC or a lost level, until the next CLEAR
I_LOST = 4  # levels lost because an overflow store was full
I_APPLIED = 5  # LEVEL_SET events applied
I_ERRORS = 6  # events rejected (bad side, negative qty)
N_INFO = 8

# enum values as plain ints for the kernels
_LEVEL_SET = int(EventKind.LEVEL_SET)
_CLEAR = int(EventKind.CLEAR)
_TRADE = int(EventKind.TRADE)
_TICKER = int(EventKind.TICKER)
_OUT_OF_SYNC = int(EventKind.OUT_OF_SYNC)
_Q_QUOTE = int(BookStateKind.QUOTE)
_Q_TRADE = int(BookStateKind.TRADE)
_Q_STATUS = int(BookStateKind.STATUS)


class L2Book(NamedTuple):
    """State of the L2 book for ``n`` symbols. Side index s: 0 = bid, 1 = ask."""

    qty: np.ndarray  # int64[n, 2, W]: lots at key k in slot k & (W-1), for keys in [lo, lo+W)
    lo: np.ndarray  # int64[n, 2]: lowest key of the window
    best: np.ndarray  # int64[n, 2]: best (smallest) key, EMPTY when the side is empty
    nlev: np.ndarray  # int64[n, 2]: non-empty levels inside the window
    ovf_key: (
        np.ndarray
    )  # int64[n, 2, H]: hash table (hean.stages.hashmap) of the keys beyond the window (all >= lo + W)
    ovf_qty: np.ndarray  # int64[n, 2, H]: their quantities
    ovf_n: np.ndarray  # int64[n, 2]: levels in the overflow (at most H / 2)
    info: np.ndarray  # int64[n, N_INFO]: I_* columns


# Price slots per side an L2 book keeps directly indexed, by default: the book stage's and the venue's books
# too. At 4096, ~3,300 levels per side of the Binance sample lived in the overflow table and its backtest's
# loop ran ~3 % slower (the same fills: the window decides where a level is stored, not the book).
L2_WINDOW = 16384


def make_l2_book(n_symbols: int, window: int = L2_WINDOW, overflow: int = 4096) -> L2Book:
    """An empty book for ``n_symbols``.

    ``window``: price slots per side kept directly indexed around the touch (a power of two; 16384 ticks
    covers BTCUSDT from 200 USD above to 1400 USD below the touch at tick 0.1 -- on the Binance recording
    95 % of level updates fall inside). ``overflow``: levels per side kept beyond the window, in a hash
    table of ``2 * overflow`` slots (O(1) set/get; walking depth beyond the window scans it). Memory per
    symbol: ``16 * window + 64 * overflow`` bytes (512 KiB with the defaults).
    """
    if n_symbols < 1:
        raise ValueError("n_symbols must be >= 1")
    if window < 16 or window & (window - 1):
        raise ValueError(f"window must be a power of two >= 16, got {window}")
    if overflow < 1:
        raise ValueError("overflow must be >= 1")
    table = 1 << max(1, (2 * int(overflow) - 1).bit_length())
    return L2Book(
        qty=np.zeros((n_symbols, 2, window), np.int64),
        lo=np.full((n_symbols, 2), LO_NONE, np.int64),
        best=np.full((n_symbols, 2), EMPTY, np.int64),
        nlev=np.zeros((n_symbols, 2), np.int64),
        ovf_key=np.full((n_symbols, 2, table), HM_EMPTY, np.int64),
        ovf_qty=np.zeros((n_symbols, 2, table), np.int64),
        ovf_n=np.zeros((n_symbols, 2), np.int64),
        info=np.zeros((n_symbols, N_INFO), np.int64),
    )


# ---------------------------------------------------------------------------------------------------------
# overflow store: one open-addressing hash table per (symbol, side), linear probing, backward-shift delete
# ---------------------------------------------------------------------------------------------------------
@kernel
def _ovf_set(book, sym, s, key, q):
    keys = book.ovf_key[sym, s]
    vals = book.ovf_qty[sym, s]
    i = hm_find(keys, key)
    if i >= 0:
        if q > 0:
            vals[i] = q
        else:
            hm_delete_at(keys, vals, i)
            book.ovf_n[sym, s] -= 1
        return OK
    if q == 0:
        return OK
    if book.ovf_n[sym, s] * 2 >= keys.shape[0]:  # load factor 1/2: the capacity asked for is full
        return ERR_OVERFLOW
    hm_insert(keys, vals, key, q)
    book.ovf_n[sym, s] += 1
    return OK


@kernel
def _ovf_get(book, sym, s, key):
    i = hm_find(book.ovf_key[sym, s], key)
    return book.ovf_qty[sym, s, i] if i >= 0 else np.int64(0)


@kernel
def _ovf_min_above(book, sym, s, start):
    """Smallest overflow key >= ``start`` (EMPTY when none): a scan of the table, for rare far walks."""
    keys = book.ovf_key[sym, s]
    best = EMPTY
    if book.ovf_n[sym, s] == 0:
        return best
    for i in range(keys.shape[0]):
        k = keys[i]
        if k != HM_EMPTY and start <= k < best:
            best = k
    return best


# ---------------------------------------------------------------------------------------------------------
# the window
# ---------------------------------------------------------------------------------------------------------
@kernel
def _recenter(book, sym, s, new_lo):
    """Move the window of (sym, s) to ``[new_lo, new_lo + W)``; returns OK or ERR_OVERFLOW (levels lost)."""
    W = book.qty.shape[2]
    mask = W - 1
    lo = book.lo[sym, s]
    row = book.qty[sym, s]
    status = OK
    if new_lo < lo:
        # keys [max(lo, new_lo + W), lo + W) leave the window for the overflow
        for k in range(max(lo, new_lo + W), lo + W):
            slot = k & mask
            q = row[slot]
            if q != 0:
                row[slot] = 0
                book.nlev[sym, s] -= 1
                if _ovf_set(book, sym, s, k, q) != OK:
                    book.info[sym, I_LOST] += 1
                    book.info[sym, I_STALE] = 1
                    status = ERR_OVERFLOW
    elif new_lo > lo and book.ovf_n[sym, s] > 0:
        # keys below new_lo are empty (they are better than best); overflow keys < new_lo + W enter
        end = new_lo + W
        keys = book.ovf_key[sym, s]
        vals = book.ovf_qty[sym, s]
        i = 0
        while i < keys.shape[0]:
            k = keys[i]
            if k != HM_EMPTY and k < end:
                row[k & mask] = vals[i]
                book.nlev[sym, s] += 1
                book.ovf_n[sym, s] -= 1
                hm_delete_at(keys, vals, i)  # may shift an unvisited entry into slot i: look again
            else:
                i += 1
    book.lo[sym, s] = new_lo
    return status


@kernel
def _find_best_from(book, sym, s, start):
    """Set ``best`` to the first non-empty key >= ``start`` (window, then overflow), moving the window."""
    W = book.qty.shape[2]
    mask = W - 1
    lo = book.lo[sym, s]
    end = lo + W
    if book.nlev[sym, s] > 0:
        row = book.qty[sym, s]
        for k in range(max(start, lo), end):
            if row[k & mask] != 0:
                book.best[sym, s] = k
                if k - lo > (W >> 1):
                    _recenter(book, sym, s, k - (W >> 3))
                return
    k = _ovf_min_above(book, sym, s, start)
    if k != EMPTY:
        _recenter(book, sym, s, k - (W >> 3))
    else:
        book.lo[sym, s] = LO_NONE  # the side is empty (window and overflow)
    book.best[sym, s] = k


@kernel
def _side_index(side):
    """BID (+1) -> 0, ASK (-1) -> 1, anything else -> -1."""
    if side == 1:
        return 0
    if side == -1:
        return 1
    return -1


@kernel
def _set_level_slow(book, sym, s, px, q):
    """Every case of :func:`l2_set_level` (the fast path handles only the common ones)."""
    key = px if s == 1 else -px
    W = book.qty.shape[2]
    mask = W - 1
    best = book.best[sym, s]
    if q > 0:
        if best == EMPTY:  # empty side: the window is all zero and the overflow empty; place the window
            book.lo[sym, s] = key - (W >> 3)
            book.qty[sym, s, key & mask] = q
            book.nlev[sym, s] = 1
            book.best[sym, s] = key
            return OK
        lo = book.lo[sym, s]
        status = OK
        if key < lo:  # better than anything in the window: move the window down to it
            status = _recenter(book, sym, s, key - (W >> 3))
            lo = book.lo[sym, s]
        if key < lo + W:
            slot = key & mask
            if book.qty[sym, s, slot] == 0:
                book.nlev[sym, s] += 1
            book.qty[sym, s, slot] = q
            if key < best:
                book.best[sym, s] = key
            return status
        return _ovf_set(book, sym, s, key, q)
    if q < 0:
        return ERR_QTY
    if best == EMPTY:
        return OK
    lo = book.lo[sym, s]
    if key < lo:
        return OK
    if key < lo + W:
        slot = key & mask
        if book.qty[sym, s, slot] == 0:
            return OK
        book.qty[sym, s, slot] = 0
        book.nlev[sym, s] -= 1
        if key == best:
            _find_best_from(book, sym, s, key + 1)
        return OK
    return _ovf_set(book, sym, s, key, q)


@kernel(inline=True)
def _set_level_fast(book, sym, s, px, q):
    """:func:`l2_set_level`, expanded in place by numba into the NRT-free batch kernels of this module.

    The common cases (a level inside the window that is not a deletion of the best) are a few loads and
    stores; the rest goes to :func:`_set_level_slow`. Only NRT-free callers may inline it: in a function
    compiled with the NRT, an inlined NamedTuple argument is reference-counted array by array.

    Why it is written this way (each measured on the Binance recording, ``hean bench book``): one unsigned
    compare tests ``lo <= key < lo + W``; an empty side needs no test of its own because its ``lo`` is
    :data:`LO_NONE`, which no key is inside; the level count moves by ``(q > 0) - (old > 0)`` instead of
    two data-dependent branches (about half the recorded updates are deletions, so those branches were
    unpredictable); indices are unsigned, so numba emits no negative-index wraparound code (the callers
    have checked ``0 <= sym < n`` and ``s`` is 0 or 1). Together: 16.3 -> 13.2 ns median per level update.
    """
    key = px if s == 1 else -px
    W = book.qty.shape[2]
    u, us = np.uint64(sym), np.uint64(s)  # unsigned indices: no negative-index wraparound code
    best = book.best[u, us]
    if np.uint64(key - book.lo[u, us]) < np.uint64(W) and q >= 0 and (q > 0 or key != best):
        slot = np.uint64(key) & np.uint64(W - 1)
        row = book.qty[u, us]
        old = row[slot]
        row[slot] = q
        book.nlev[u, us] += np.int64(q > 0) - np.int64(old > 0)
        if q > 0 and key < best:
            book.best[u, us] = key
        return OK
    return _set_level_slow(book, sym, s, px, q)


@kernel(forceinline=True)  # per event in the venue: a call would copy the book tuple
def l2_set_level(book, sym, s, px, q):
    """Set level ``px`` (ticks) of side index ``s`` (0 bid, 1 ask) to ``q`` lots; ``q == 0`` deletes it.

    Returns OK, ERR_QTY (negative ``q``), ERR_OVERFLOW, ERR_SYMBOL or ERR_SIDE (``s`` not 0 or 1). A call
    passes the book by value (~0.6 KB, tens of ns): loops over many events should use
    :func:`l2_apply_events` / :func:`book_on_events`.
    """
    if sym < 0 or sym >= book.qty.shape[0]:
        return ERR_SYMBOL
    if s != 0 and s != 1:
        return ERR_SIDE
    return _set_level_fast(book, sym, s, px, q)


@kernel
def l2_clear(book, sym):
    """Remove every level of ``sym`` (both sides)."""
    for s in range(2):
        if book.nlev[sym, s] > 0:
            book.qty[sym, s, :] = 0
        book.nlev[sym, s] = 0
        if book.ovf_n[sym, s] > 0:
            book.ovf_key[sym, s, :] = HM_EMPTY
            book.ovf_qty[sym, s, :] = 0
        book.ovf_n[sym, s] = 0
        book.best[sym, s] = EMPTY
        book.lo[sym, s] = LO_NONE


@kernel
def l2_apply(book, ev):
    """Apply one MARKET_EVENT record; returns a status code (see module doc), never raises.

    LEVEL_SET sets a level, CLEAR empties the symbol's book and clears its stale mark (a snapshot follows),
    OUT_OF_SYNC marks it stale. TRADE, TICKER, HALT and L3 kinds are IGNORED by the L2 book. Inlined into
    the caller; only LEVEL_SET has its fast path here.
    """
    sym = ev.symbol
    if ev.kind == _LEVEL_SET and sym >= 0 and sym < book.qty.shape[0] and (ev.side == 1 or ev.side == -1):
        status = _set_level_fast(book, sym, 0 if ev.side == 1 else 1, ev.price, ev.qty)
        if status == OK:
            info = book.info
            info[sym, I_UPDATE_ID] = ev.update_id
            info[sym, I_TS] = ev.ts_origin
            info[sym, I_TS_EXCH] = ev.ts_exch
            info[sym, I_APPLIED] += 1
            return OK
        return _apply_status(book, ev, status)
    return _apply_other(book, ev)


@kernel
def _apply_status(book, ev, status):
    """Book-keeping of a LEVEL_SET that did not return OK."""
    sym = ev.symbol
    info = book.info
    if status == ERR_QTY:
        info[sym, I_ERRORS] += 1
        return status
    if status == ERR_OVERFLOW:
        info[sym, I_LOST] += 1
        info[sym, I_STALE] = 1
    info[sym, I_UPDATE_ID] = ev.update_id
    info[sym, I_TS] = ev.ts_origin
    info[sym, I_TS_EXCH] = ev.ts_exch
    info[sym, I_APPLIED] += 1
    return status


@kernel
def _apply_other(book, ev):
    """Everything but a well-formed LEVEL_SET."""
    sym = ev.symbol
    if sym < 0 or sym >= book.qty.shape[0]:
        return ERR_SYMBOL
    kind = ev.kind
    info = book.info
    if kind == _LEVEL_SET:
        info[sym, I_ERRORS] += 1
        return ERR_SIDE
    if kind == _CLEAR:
        l2_clear(book, sym)
        info[sym, I_STALE] = 0
        info[sym, I_UPDATE_ID] = ev.update_id
        info[sym, I_TS] = ev.ts_origin
        info[sym, I_TS_EXCH] = ev.ts_exch
        return OK
    if kind == _OUT_OF_SYNC:
        info[sym, I_STALE] = 1
        info[sym, I_TS] = ev.ts_origin
        return OK
    return IGNORED


@kernel
def l2_apply_events(book, events, start, stop):
    """Apply ``events[start:stop]`` (clipped to the array); returns how many were rejected with an error.

    The batch form is the fast one: the LEVEL_SET path is expanded in this loop, so the book (a NamedTuple
    that numba passes by value, ~0.6 KB) is handed to a function call only on rare paths. One call of
    :func:`l2_apply` per event costs that copy every time. The ``info`` columns (last update id, stamps,
    applied count) are written once per run of level sets of one symbol rather than per level: four
    stores that LLVM cannot keep in registers (``info`` may alias the book's arrays, as far as it knows).
    """
    bad = 0
    n_sym = book.qty.shape[0]
    info = book.info
    # the info columns of a run of level sets of one symbol are written once, when the run ends
    run_sym = -1
    upd = ts = ts_exch = n_run = np.int64(0)
    for i in range(max(start, 0), min(stop, events.shape[0])):
        e = events[np.uint64(i)]  # unsigned: i >= 0, no wraparound code
        sym = e.symbol
        side = e.side
        if e.kind == _LEVEL_SET and sym >= 0 and sym < n_sym and (side == 1 or side == -1):
            status = _set_level_fast(book, sym, 0 if side == 1 else 1, e.price, e.qty)
            if status == OK:
                if sym != run_sym:
                    _end_run(info, run_sym, upd, ts, ts_exch, n_run)
                    run_sym = sym
                    n_run = 0
                upd, ts, ts_exch = e.update_id, e.ts_origin, e.ts_exch
                n_run += 1
                continue
            _end_run(info, run_sym, upd, ts, ts_exch, n_run)
            run_sym = -1
            status = _apply_status(book, e, status)
        elif e.kind == _TRADE or e.kind == _TICKER:
            continue  # IGNORED by the L2 book, without a call
        else:
            _end_run(info, run_sym, upd, ts, ts_exch, n_run)
            run_sym = -1
            status = _apply_other(book, e)
        if status < 0:
            bad += 1
    _end_run(info, run_sym, upd, ts, ts_exch, n_run)
    return bad


@kernel(inline=True)
def _end_run(info, sym, upd, ts, ts_exch, n):
    """Write the info columns of a run of ``n`` level sets of ``sym`` (nothing when ``sym`` < 0)."""
    if sym >= 0:
        info[sym, I_UPDATE_ID] = upd
        info[sym, I_TS] = ts
        info[sym, I_TS_EXCH] = ts_exch
        info[sym, I_APPLIED] += n


# ---------------------------------------------------------------------------------------------------------
# reads
# ---------------------------------------------------------------------------------------------------------
@kernel
def l2_best_bid(book, sym):
    """``(px, qty)`` of the best bid; ``(0, 0)`` when there is no bid."""
    k = book.best[sym, 0]
    if k == EMPTY:
        return np.int64(0), np.int64(0)
    return -k, book.qty[sym, 0, k & (book.qty.shape[2] - 1)]


@kernel
def l2_best_ask(book, sym):
    """``(px, qty)`` of the best ask; ``(0, 0)`` when there is no ask."""
    k = book.best[sym, 1]
    if k == EMPTY:
        return np.int64(0), np.int64(0)
    return k, book.qty[sym, 1, k & (book.qty.shape[2] - 1)]


@kernel
def l2_level_qty(book, sym, side, px):
    """Lots resting at ``px`` on ``side`` (BID +1 / ASK -1); 0 when there is no such level."""
    s = _side_index(side)
    if s < 0 or book.best[sym, s] == EMPTY:
        return np.int64(0)
    key = px if s == 1 else -px
    lo = book.lo[sym, s]
    W = book.qty.shape[2]
    if key < lo:
        return np.int64(0)
    if key < lo + W:
        return book.qty[sym, s, key & (W - 1)]
    return _ovf_get(book, sym, s, key)


@kernel
def l2_next_level(book, sym, side, px):
    """Price of the next *worse* level after ``px`` on ``side`` (lower for bids, higher for asks).

    ``px`` need not be a level; a ``px`` better than the touch gives the touch. :data:`NO_PRICE` when none.
    """
    s = _side_index(side)
    if s < 0:
        return NO_PRICE
    best = book.best[sym, s]
    if best == EMPTY:
        return NO_PRICE
    sign = 1 if s == 1 else -1
    key = px * sign
    start = max(key + 1, best)
    W = book.qty.shape[2]
    mask = W - 1
    end = book.lo[sym, s] + W
    row = book.qty[sym, s]
    for k in range(start, end):
        if row[k & mask] != 0:
            return k * sign
    k = _ovf_min_above(book, sym, s, start)
    return NO_PRICE if k == EMPTY else k * sign


@kernel
def l2_depth(book, sym, side, n, out_px, out_qty):
    """Write the best ``n`` levels of ``side`` into ``out_px``/``out_qty`` (best first); returns the count."""
    s = _side_index(side)
    if s < 0:
        return 0
    best = book.best[sym, s]
    if best == EMPTY:
        return 0
    sign = 1 if s == 1 else -1
    W = book.qty.shape[2]
    mask = W - 1
    end = book.lo[sym, s] + W
    row = book.qty[sym, s]
    c = 0
    for k in range(best, end):
        if c >= n:
            return c
        q = row[k & mask]
        if q != 0:
            out_px[c] = k * sign
            out_qty[c] = q
            c += 1
    k = end
    while c < n:
        k = _ovf_min_above(book, sym, s, k)
        if k == EMPTY:
            break
        out_px[c] = k * sign
        out_qty[c] = _ovf_get(book, sym, s, k)
        c += 1
        k += 1
    return c


@kernel
def l2_n_levels(book, sym, side):
    """Number of levels on ``side`` (window plus overflow)."""
    s = _side_index(side)
    if s < 0:
        return 0
    return book.nlev[sym, s] + book.ovf_n[sym, s]


@kernel
def l2_fill_state(book, sym, out, k, now_ns, stale_ns):
    """Write the top of book of ``sym`` into ``out[k]`` (a BOOK_STATE array); returns the flags written.

    Writes symbol, kind (QUOTE), flags (F_STALE: out of sync, a lost level, or no update for ``stale_ns``
    when ``stale_ns`` > 0; F_CROSSED: bid >= ask), ts_origin/ts_exch of the last applied event, top, spread,
    mid, microprice, imbalance, update_id. Leaves seq and the trade fields to the caller.
    """
    r = out[k]
    bpx, bq = l2_best_bid(book, sym)
    apx, aq = l2_best_ask(book, sym)
    info = book.info
    flags = 0
    if info[sym, I_STALE] != 0 or (stale_ns > 0 and now_ns - info[sym, I_TS] > stale_ns):
        flags |= F_STALE
    if bq > 0 and aq > 0 and bpx >= apx:
        flags |= F_CROSSED
    r.symbol = sym
    r.kind = _Q_QUOTE
    r.side = 0
    r.flags = flags
    r.ts_origin = info[sym, I_TS]
    r.ts_exch = info[sym, I_TS_EXCH]
    r.bid_px = bpx
    r.bid_qty = bq
    r.ask_px = apx
    r.ask_qty = aq
    tq = bq + aq
    if bq > 0 and aq > 0:
        r.spread = apx - bpx
        r.mid = 0.5 * (bpx + apx)
        r.microprice = (bpx * aq + apx * bq) / tq
    else:
        r.spread = 0
        r.mid = 0.0
        r.microprice = 0.0
    r.imbalance = (bq - aq) / tq if tq > 0 else 0.0
    r.update_id = info[sym, I_UPDATE_ID]
    return flags


# ---------------------------------------------------------------------------------------------------------
# the stage kernel
# ---------------------------------------------------------------------------------------------------------
@kernel
def _emit(book, stats, sym, ev, out, k, kind, stale_ns):
    l2_fill_state(book, sym, out, k, ev.ts_origin, stale_ns)
    r = out[k]
    r.seq = ev.seq
    r.ts_origin = ev.ts_origin
    r.ts_exch = ev.ts_exch
    r.kind = kind
    r.last_trade_px = stats.last[sym, 0]
    r.last_trade_qty = stats.last[sym, 1]
    r.vwap = trade_vwap(stats, sym, ev.ts_origin)


@kernel(forceinline=True)  # inlined: a call would copy the book tuple
def book_on_event(book, stats, ev, out, k, stale_ns):
    """The book stage's per-event kernel: apply ``ev`` and maybe publish one BOOK_STATE into ``out[k]``.

    Returns 1 when ``out[k]`` was written, else 0:

    * LEVEL_SET / CLEAR flagged F_LAST_IN_GROUP (the book is consistent): a QUOTE state;
    * TRADE: updates the trade stats, a TRADE state;
    * OUT_OF_SYNC: a STATUS state with F_STALE;
    * anything else (mid-group level sets, TICKER, HALT, L3 kinds, bad symbol): nothing.

    The state copies seq, ts_origin and ts_exch from ``ev`` so latency is measured from the market event.
    """
    sym = ev.symbol
    if sym < 0 or sym >= book.qty.shape[0]:
        return 0
    kind = ev.kind
    if kind == _TRADE:
        trade_on(stats, sym, ev.ts_origin, ev.price, ev.qty, ev.side)
        _emit(book, stats, sym, ev, out, k, _Q_TRADE, stale_ns)
        return 1
    l2_apply(book, ev)
    if kind == _OUT_OF_SYNC:
        _emit(book, stats, sym, ev, out, k, _Q_STATUS, stale_ns)
        return 1
    if (kind == _LEVEL_SET or kind == _CLEAR) and (ev.flags & F_LAST_IN_GROUP) != 0:
        _emit(book, stats, sym, ev, out, k, _Q_QUOTE, stale_ns)
        return 1
    return 0


@kernel
def book_on_events(book, stats, events, start, stop, out, k, stale_ns):
    """:func:`book_on_event` over ``events[start:stop]`` (e.g. one batch popped from a ring), writing states
    from ``out[k]`` on; returns how many were written. The fast form: the LEVEL_SET path is expanded in the
    loop, so a level update does not pay for passing the book to a function."""
    n = 0
    n_sym = book.qty.shape[0]
    info = book.info
    for i in range(start, stop):
        e = events[i]
        sym = e.symbol
        side = e.side
        if e.kind == _LEVEL_SET and sym >= 0 and sym < n_sym and (side == 1 or side == -1):
            status = _set_level_fast(book, sym, 0 if side == 1 else 1, e.price, e.qty)
            if status == OK:
                info[sym, I_UPDATE_ID] = e.update_id
                info[sym, I_TS] = e.ts_origin
                info[sym, I_TS_EXCH] = e.ts_exch
                info[sym, I_APPLIED] += 1
            else:
                _apply_status(book, e, status)
            if (e.flags & F_LAST_IN_GROUP) != 0:
                _emit(book, stats, sym, e, out, k + n, _Q_QUOTE, stale_ns)
                n += 1
        elif e.kind != _TICKER:  # TICKER (the exchange's own top, an oracle) changes nothing: no call
            n += book_on_event(book, stats, e, out, k + n, stale_ns)
    return n


@kernel
def book_replay_states(book, stats, events, out, stale_ns):
    """Run :func:`book_on_events` over all ``events``; returns how many states were written to ``out``.

    ``out`` must hold at least one state per event group, trade and out-of-sync marker
    (``len(events)`` is always enough).
    """
    return book_on_events(book, stats, events, 0, events.shape[0], out, 0, stale_ns)


def new_states(n: int) -> np.ndarray:
    """A zeroed BOOK_STATE array of ``n`` records."""
    return np.zeros(n, BOOK_STATE)


__all__ += ["TradeStats", "make_trade_stats", "new_states"]


# ---------------------------------------------------------------------------------------------------------
# the stage
# ---------------------------------------------------------------------------------------------------------
class BookStage(NamedTuple):
    """The book stage's state: the books, trade statistics, the views it writes for the router and the
    strategies."""

    book: L2Book
    trades: TradeStats
    tops: object  # hean.stages.tops.VenueTops: a view shared with the router (written here)
    venue_of: np.ndarray  # int64[n_symbols]: each symbol's venue
    out: np.ndarray  # BOOK_STATE[1]: the state book_on_event writes
    stale_ns: np.ndarray  # int64[1]: a book older than this is stale (0: off)
    depth: np.ndarray  # int64[rows, 2 + 4N]: the depth beside each state published (hean.stages.depth)
    published: np.ndarray  # int64[1]: states published (the states rings' sequence)
    instrument_of: np.ndarray  # int64[n_symbols]: the instrument each symbol's book quotes (a listing's: another)


H_AGE_EVENTS = 1  # histogram row: an event's age when the book takes it


@kernel(error_model="numpy")
def depth_write(table, k, book, bs):
    """Entry ``k`` of the depth table (:mod:`hean.stages.depth`): the top levels of ``bs.symbol``'s book
    as it stands when state ``bs`` is published."""
    m = depth_levels(table)
    e = table[k & (table.shape[0] - 1)]
    e[DW_SEQ] = bs.seq
    e[DW_SYMBOL] = bs.symbol
    for side in range(2):
        px = e[DW_LEVELS + 2 * side * m : DW_LEVELS + (2 * side + 1) * m]
        qty = e[DW_LEVELS + (2 * side + 1) * m : DW_LEVELS + (2 * side + 2) * m]
        c = l2_depth(book, bs.symbol, 1 - 2 * side, m, px, qty)
        for i in range(c, m):
            px[i] = 0
            qty[i] = 0


@kernel(forceinline=True, error_model="numpy")
def book_batch(B, src, states, start, n, tm, t0):
    """Market events in; a book state per consistent group out, to every consumer of ``states`` (a batch
    kernel: hean.stages.declare), with its depth entry first when a strategy reads depth. Returns the
    records published."""
    published = 0
    stale_ns = B.stale_ns[0]  # once per batch
    deep = B.depth.shape[1] > DW_LEVELS
    for j in range(n):
        ev = slot(src, start + j)
        age(tm.hists[H_AGE_EVENTS], t0, ev.ts_origin)
        if book_on_event(B.book, B.trades, ev, B.out, 0, stale_ns):
            published += publish_state(B, B.book, states, deep)
    return published


@kernel(forceinline=True, error_model="numpy")
def publish_state(B, l2, states, deep):
    """The book state in ``B.out[0]`` out, from the L2 book ``l2`` (an L3 book's own): the router's tops (of
    the instrument the symbol quotes on its venue: a listing's book is its venue's quote of another symbol),
    its depth entry (first, when a strategy reads depth), then every consumer. Returns records published."""
    bs = B.out[0]
    tops_on_book_state(B.tops, B.venue_of[bs.symbol], B.instrument_of[bs.symbol], bs, bs.ts_exch)
    if deep:
        depth_write(B.depth, B.published[0], l2, bs)
    B.published[0] += 1
    put_each(states, bs)
    return len(states)


MAX_L3 = 1 << 30  # most orders (levels) an L3 book's tables are sized for: about 100 GiB


def book_tables(
    n_symbols: int,
    *,
    window: int = L2_WINDOW,
    overflow: int = 8192,
    stale_ns: int = 0,
    vwap_window_ns: int = 60_000_000_000,
    trades_capacity: int = 4096,
    l3_orders: int = 0,
    l3_levels: int = 0,
):
    """``[book]``: price window and overflow per side (levels), stale window (0 off), VWAP window; its keyword
    parameters are the table's keys (the window's default: :data:`L2_WINDOW`). ``l3_orders``/``l3_levels``
    size the order-by-order book of an L3 replay (:mod:`hean.stages.book_l3`; 0: from the recording) and are
    not used here."""
    if stale_ns < 0 or vwap_window_ns <= 0:
        raise ValueError("stale_ns must be >= 0 and vwap_window_ns > 0")
    if not (0 <= l3_orders <= MAX_L3 and 0 <= l3_levels <= MAX_L3):
        raise ValueError(f"l3_orders and l3_levels must be in [0, {MAX_L3}] (0: sized from the recording)")
    return make_l2_book(n_symbols, window, overflow), make_trade_stats(n_symbols, vwap_window_ns, trades_capacity)


def make_book_stage(ctx) -> BookStage:
    """The book stage from the configuration's ``[book]`` table (a small stand-in where it does not run)."""
    table = ctx.kwargs("book", dict(ctx.cfg.book), book_tables) if ctx.real else {}
    book, trades = ctx.call("book", book_tables, len(ctx.symbols), **table)
    stale = np.array([int(table.get("stale_ns", 0))], np.int64)
    depth = ctx.views["depth"] if ctx.real else np.zeros((1, DW_LEVELS), np.int64)
    return BookStage(book, trades, ctx.views["tops"], ctx.venue_of, np.zeros(1, BOOK_STATE), stale, depth,
                     np.zeros(1, np.int64), ctx.instrument_of)  # fmt: skip


BOOK = Stage(
    name="book",
    module=__name__,
    batch="book_batch",
    inputs=(Stream("events", MARKET_EVENT),),
    outputs=(Stream("states", BOOK_STATE),),
    build=make_book_stage,
    hists=("service", "age:events"),
    config="book",
)
