"""The L3 order-by-order book: orders by id in FIFO queues per price level, aggregated into an L2 book.

Why it reuses :class:`hean.stages.book.L2Book`: every question asked of aggregated levels (best bid/ask,
depth, next level, BOOK_STATE) already has a fast answer there, so the L3 book keeps only what L2 cannot:
the orders. State is a :class:`L3Book` NamedTuple of numpy arrays:

* an order table (``C`` slots: id, symbol, side, price, remaining qty, prev/next slot in its level's queue)
  with a free-slot stack;
* a level table (slots: head/tail order, total qty, order count) with a free-slot stack;
* two open-addressing hash maps (linear probing, backward-shift deletion, load <= 1/2): order id -> order
  slot, and (symbol, side, price) -> level slot;
* ``l2``: the aggregated L2 book, updated with the level's total on every change.

Semantics (LOBSTER/ITCH style): ADD appends to the tail of its level; CANCEL reduces an order by qty (removed
at zero); DELETE removes it; EXECUTE reduces it by the executed qty; MODIFY to a lower qty at the same price
keeps the queue position, while a price change or a qty increase re-queues it at the tail.
:func:`l3_queue_position` gives the qty and number of orders ahead of an order.

Status codes: those of :mod:`hean.stages.book` plus :data:`ERR_UNKNOWN_ORDER`, :data:`ERR_DUPLICATE`,
:data:`ERR_FULL` (order or level table full). :func:`l3_apply` counts every error it returns in
``errors[-status]`` (the engine's book stage shows them in its telemetry, :mod:`hean.stages.book_l3`), and one
per symbol in the L2 book's ``I_ERRORS`` column. An add the full tables cannot hold is lost: the symbol is
marked stale (``I_STALE``, F_STALE on its states) until its next CLEAR and ``I_LOST`` counts it; so is a level
the aggregated L2 book cannot hold (its overflow store full: ``errors[-ERR_OVERFLOW]``). Nothing is dropped
silently, nothing raises.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from hean.jit import kernel
from hean.records import F_LAST_IN_GROUP, F_STALE, BookStateKind, EventKind
from hean.stages.book import (
    ERR_OVERFLOW,
    ERR_QTY,
    ERR_SIDE,
    ERR_SYMBOL,
    I_ERRORS,
    I_LOST,
    I_STALE,
    I_TS,
    I_TS_EXCH,
    I_UPDATE_ID,
    IGNORED,
    OK,
    L2Book,
    _side_index,
    l2_clear,
    l2_fill_state,
    l2_set_level,
    make_l2_book,
)
from hean.stages.hashmap import HM_EMPTY, hm_delete_at, hm_find, hm_insert
from hean.stages.trades import trade_on, trade_vwap

__all__ = [
    "ERR_DUPLICATE",
    "ERR_FULL",
    "ERR_UNKNOWN_ORDER",
    "N_ERRORS",
    "L3Book",
    "l3_add",
    "l3_apply",
    "l3_apply_at",
    "l3_cancel",
    "l3_clear",
    "l3_delete",
    "l3_execute",
    "l3_modify",
    "l3_on_event",
    "l3_order",
    "l3_queue_position",
    "l3_replay_states",
    "make_l3_book",
]

ERR_UNKNOWN_ORDER = -5
ERR_DUPLICATE = -6
ERR_FULL = -7
N_ERRORS = 8  # L3Book.errors: index -status (ERR_SYMBOL .. ERR_FULL)

_NIL = -1

_ADD = int(EventKind.L3_ADD)
_MODIFY = int(EventKind.L3_MODIFY)
_CANCEL = int(EventKind.L3_CANCEL)
_DELETE = int(EventKind.L3_DELETE)
_EXECUTE = int(EventKind.L3_EXECUTE)
_CLEAR = int(EventKind.CLEAR)
_TRADE = int(EventKind.TRADE)
_OUT_OF_SYNC = int(EventKind.OUT_OF_SYNC)
_Q_QUOTE = int(BookStateKind.QUOTE)
_Q_TRADE = int(BookStateKind.TRADE)
_Q_STATUS = int(BookStateKind.STATUS)


class L3Book(NamedTuple):
    o_id: np.ndarray  # int64[C]
    o_sym: np.ndarray  # int64[C]
    o_side: np.ndarray  # int64[C]: side index 0 bid, 1 ask
    o_px: np.ndarray  # int64[C]: ticks
    o_qty: np.ndarray  # int64[C]: remaining lots
    o_prev: np.ndarray  # int64[C]: previous order slot in the level queue (-1 at the head)
    o_next: np.ndarray  # int64[C]
    o_level: np.ndarray  # int64[C]: level slot
    o_free: np.ndarray  # int64[C]: stack of free order slots
    lv_head: np.ndarray  # int64[Lc]
    lv_tail: np.ndarray  # int64[Lc]
    lv_qty: np.ndarray  # int64[Lc]
    lv_count: np.ndarray  # int64[Lc]
    lv_key: np.ndarray  # int64[Lc]: the level's hash key (to delete it from the map)
    lv_free: np.ndarray  # int64[Lc]
    counts: np.ndarray  # int64[2]: free order slots, free level slots
    om_keys: np.ndarray  # int64[H]: order id -> slot map
    om_vals: np.ndarray
    lm_keys: np.ndarray  # int64[H2]: level key -> slot map
    lm_vals: np.ndarray
    n_sym: np.ndarray  # int64[1]
    errors: np.ndarray  # int64[N_ERRORS]: errors returned by l3_apply (and levels lost), by -status
    l2: L2Book


def _pow2_at_least(n: int) -> int:
    return 1 << max(4, (int(n) - 1).bit_length())


def make_l3_book(
    n_symbols: int, max_orders: int = 1 << 16, max_levels: int = 1 << 14, l2: L2Book | None = None, **l2_kwargs
) -> L3Book:
    """An empty L3 book; ``l2_kwargs`` size the aggregated L2 book (see :func:`make_l2_book`), or ``l2`` is an
    existing empty one of ``n_symbols`` rows to aggregate into (the simulated venue's own, which it matches
    against)."""
    if n_symbols < 1 or max_orders < 1 or max_levels < 1:
        raise ValueError("n_symbols, max_orders and max_levels must be positive")
    if l2 is not None and l2.qty.shape[0] != n_symbols:
        raise ValueError(f"the L2 book has {l2.qty.shape[0]} rows, not {n_symbols}")
    c, lc = int(max_orders), int(max_levels)
    h, h2 = _pow2_at_least(2 * c), _pow2_at_least(2 * lc)
    i64 = np.int64
    return L3Book(
        o_id=np.zeros(c, i64),
        o_sym=np.zeros(c, i64),
        o_side=np.zeros(c, i64),
        o_px=np.zeros(c, i64),
        o_qty=np.zeros(c, i64),
        o_prev=np.full(c, _NIL, i64),
        o_next=np.full(c, _NIL, i64),
        o_level=np.full(c, _NIL, i64),
        o_free=np.arange(c - 1, -1, -1, dtype=i64),
        lv_head=np.full(lc, _NIL, i64),
        lv_tail=np.full(lc, _NIL, i64),
        lv_qty=np.zeros(lc, i64),
        lv_count=np.zeros(lc, i64),
        lv_key=np.zeros(lc, i64),
        lv_free=np.arange(lc - 1, -1, -1, dtype=i64),
        counts=np.array([c, lc], i64),
        om_keys=np.full(h, HM_EMPTY, i64),
        om_vals=np.zeros(h, i64),
        lm_keys=np.full(h2, HM_EMPTY, i64),
        lm_vals=np.zeros(h2, i64),
        n_sym=np.array([n_symbols], i64),
        errors=np.zeros(N_ERRORS, i64),
        l2=make_l2_book(n_symbols, **l2_kwargs) if l2 is None else l2,
    )


# ---------------------------------------------------------------------------------------------------------
# orders and levels
# ---------------------------------------------------------------------------------------------------------
@kernel
def _level_key(b, sym, s, px):
    return (px * b.n_sym[0] + sym) * 2 + s


@kernel
def _publish_level(b, sym, s, px, lv):
    """The level's total into the L2 book; a level its overflow store cannot hold is lost (counted, stale)."""
    q = b.lv_qty[lv] if lv >= 0 else 0
    if l2_set_level(b.l2, sym, s, px, q) == ERR_OVERFLOW:
        b.errors[-ERR_OVERFLOW] += 1
        b.l2.info[sym, I_LOST] += 1
        b.l2.info[sym, I_STALE] = 1


@kernel
def _unlink(b, o):
    """Take order slot ``o`` out of its level (freeing an emptied level) and free the slot."""
    lv = b.o_level[o]
    p = b.o_prev[o]
    nx = b.o_next[o]
    if p != _NIL:
        b.o_next[p] = nx
    else:
        b.lv_head[lv] = nx
    if nx != _NIL:
        b.o_prev[nx] = p
    else:
        b.lv_tail[lv] = p
    b.lv_qty[lv] -= b.o_qty[o]
    b.lv_count[lv] -= 1
    sym = b.o_sym[o]
    s = b.o_side[o]
    px = b.o_px[o]
    if b.lv_count[lv] == 0:
        i = hm_find(b.lm_keys, b.lv_key[lv])
        hm_delete_at(b.lm_keys, b.lm_vals, i)
        b.lv_free[b.counts[1]] = lv
        b.counts[1] += 1
        _publish_level(b, sym, s, px, -1)
    else:
        _publish_level(b, sym, s, px, lv)
    i = hm_find(b.om_keys, b.o_id[o])
    hm_delete_at(b.om_keys, b.om_vals, i)
    b.o_level[o] = _NIL  # marks the slot free
    b.o_free[b.counts[0]] = o
    b.counts[0] += 1


@kernel
def l3_add(b, sym, side, oid, px, qty):
    """Append order ``oid`` (``side`` BID +1 / ASK -1) of ``qty`` lots at ``px`` to its level's queue."""
    s = _side_index(side)
    if s < 0:
        return ERR_SIDE
    if qty <= 0:
        return ERR_QTY
    if sym < 0 or sym >= b.n_sym[0]:
        return ERR_SYMBOL
    if oid == HM_EMPTY or hm_find(b.om_keys, oid) >= 0:
        return ERR_DUPLICATE
    key = _level_key(b, sym, s, px)
    if key == HM_EMPTY:  # a price whose level key wraps onto the hash map's empty marker: cannot be stored
        return ERR_FULL
    li = hm_find(b.lm_keys, key)
    if b.counts[0] == 0 or (li < 0 and b.counts[1] == 0):
        return ERR_FULL
    if li >= 0:
        lv = b.lm_vals[li]
    else:
        b.counts[1] -= 1
        lv = b.lv_free[b.counts[1]]
        b.lv_head[lv] = _NIL
        b.lv_tail[lv] = _NIL
        b.lv_qty[lv] = 0
        b.lv_count[lv] = 0
        b.lv_key[lv] = key
        hm_insert(b.lm_keys, b.lm_vals, key, lv)
    b.counts[0] -= 1
    o = b.o_free[b.counts[0]]
    b.o_id[o] = oid
    b.o_sym[o] = sym
    b.o_side[o] = s
    b.o_px[o] = px
    b.o_qty[o] = qty
    b.o_level[o] = lv
    b.o_next[o] = _NIL
    t = b.lv_tail[lv]
    b.o_prev[o] = t
    if t != _NIL:
        b.o_next[t] = o
    else:
        b.lv_head[lv] = o
    b.lv_tail[lv] = o
    b.lv_qty[lv] += qty
    b.lv_count[lv] += 1
    hm_insert(b.om_keys, b.om_vals, oid, o)
    _publish_level(b, sym, s, px, lv)
    return OK


@kernel
def _slot(b, oid):
    """Order slot of ``oid``, or _NIL. HM_EMPTY is never an order: hm_find would match a free hash slot and
    return a stale slot number (a cancel of id int64-min reduced whichever order sat in slot 0)."""
    if oid == HM_EMPTY:
        return _NIL
    i = hm_find(b.om_keys, oid)
    return b.om_vals[i] if i >= 0 else _NIL


@kernel
def l3_cancel(b, oid, qty):
    """Reduce order ``oid`` by ``qty`` lots (removed when nothing remains)."""
    o = _slot(b, oid)
    if o == _NIL:
        return ERR_UNKNOWN_ORDER
    if qty <= 0:
        return ERR_QTY
    if qty >= b.o_qty[o]:
        _unlink(b, o)
        return OK
    b.o_qty[o] -= qty
    lv = b.o_level[o]
    b.lv_qty[lv] -= qty
    _publish_level(b, b.o_sym[o], b.o_side[o], b.o_px[o], lv)
    return OK


@kernel
def l3_execute(b, oid, qty):
    """Order ``oid`` traded ``qty`` lots: same book effect as a cancel of that qty."""
    return l3_cancel(b, oid, qty)


@kernel
def l3_delete(b, oid):
    """Remove order ``oid``."""
    o = _slot(b, oid)
    if o == _NIL:
        return ERR_UNKNOWN_ORDER
    _unlink(b, o)
    return OK


@kernel
def l3_modify(b, oid, px, qty):
    """Order ``oid`` now rests at ``px`` with ``qty``: a smaller qty at the same price keeps its place,
    anything else re-queues it at the tail of its (new) level. ``qty`` 0 deletes it."""
    o = _slot(b, oid)
    if o == _NIL:
        return ERR_UNKNOWN_ORDER
    if qty < 0:
        return ERR_QTY
    if qty == 0:
        _unlink(b, o)
        return OK
    if px == b.o_px[o] and qty <= b.o_qty[o]:
        return l3_cancel(b, oid, b.o_qty[o] - qty) if qty < b.o_qty[o] else OK
    sym = b.o_sym[o]
    side = 1 if b.o_side[o] == 0 else -1
    _unlink(b, o)
    return l3_add(b, sym, side, oid, px, qty)


@kernel
def l3_clear(b, sym):
    """Remove every order of ``sym``."""
    for o in range(b.o_id.shape[0]):
        if b.o_level[o] != _NIL and b.o_sym[o] == sym:
            _unlink(b, o)
    l2_clear(b.l2, sym)


@kernel
def l3_order(b, oid):
    """``(side, px, qty)`` of order ``oid`` (side BID +1 / ASK -1); ``(0, 0, 0)`` when unknown."""
    o = _slot(b, oid)
    if o == _NIL:
        return 0, np.int64(0), np.int64(0)
    return (1 if b.o_side[o] == 0 else -1), b.o_px[o], b.o_qty[o]


@kernel
def l3_queue_position(b, oid):
    """``(qty_ahead, orders_ahead)`` of order ``oid`` in its level's queue; ``(-1, -1)`` when unknown."""
    o = _slot(b, oid)
    if o == _NIL:
        return np.int64(-1), np.int64(-1)
    q = np.int64(0)
    n = np.int64(0)
    p = b.o_prev[o]
    while p != _NIL:
        q += b.o_qty[p]
        n += 1
        p = b.o_prev[p]
    return q, n


@kernel
def l3_apply(b, ev):
    """Apply one MARKET_EVENT (L3_* kinds, CLEAR, OUT_OF_SYNC); returns a status code, never raises."""
    return l3_apply_at(b, ev, ev.symbol)


@kernel
def l3_apply_at(b, ev, sym):
    """:func:`l3_apply` into book row ``sym`` (the venue keeps one row per (venue, symbol)). Errors are
    counted (module docstring)."""
    if sym < 0 or sym >= b.n_sym[0]:
        b.errors[-ERR_SYMBOL] += 1
        return ERR_SYMBOL
    k = ev.kind
    info = b.l2.info
    if k == _ADD:
        st = l3_add(b, sym, ev.side, ev.order_id, ev.price, ev.qty)
    elif k == _CANCEL:
        st = l3_cancel(b, ev.order_id, ev.qty)
    elif k == _DELETE:
        st = l3_delete(b, ev.order_id)
    elif k == _EXECUTE:
        st = l3_execute(b, ev.order_id, ev.qty)
    elif k == _MODIFY:
        st = l3_modify(b, ev.order_id, ev.price, ev.qty)
    elif k == _CLEAR:
        l3_clear(b, sym)
        info[sym, I_STALE] = 0
        st = OK
    elif k == _OUT_OF_SYNC:
        info[sym, I_STALE] = 1
        return OK
    else:
        return IGNORED
    info[sym, I_UPDATE_ID] = ev.update_id
    info[sym, I_TS] = ev.ts_origin
    info[sym, I_TS_EXCH] = ev.ts_exch
    if st < 0:
        _count_error(b, sym, st)
    return st


@kernel
def _count_error(b, sym, st):
    b.errors[-st] += 1
    b.l2.info[sym, I_ERRORS] += 1
    if st == ERR_FULL:  # an order lost: the book is wrong until the next snapshot
        b.l2.info[sym, I_LOST] += 1
        b.l2.info[sym, I_STALE] = 1


@kernel(forceinline=True)  # per event in the engine's book stage: a call would copy the book tuple
def l3_on_event(b, stats, ev, out, k, stale_ns):
    """The L3 book stage kernel, like :func:`hean.stages.book.book_on_event`: returns 1 when ``out[k]``
    (BOOK_STATE) was written -- after a group ending F_LAST_IN_GROUP, a trade (TRADE or L3_EXECUTE, which
    updates the trade stats; aggressor = the side opposite the resting order) or OUT_OF_SYNC."""
    sym = ev.symbol
    if sym < 0 or sym >= b.n_sym[0]:
        return 0
    kind = ev.kind
    traded = False
    if kind == _TRADE:
        trade_on(stats, sym, ev.ts_origin, ev.price, ev.qty, ev.side)
        traded = True
    else:
        if kind == _EXECUTE:
            side, px, q = l3_order(b, ev.order_id)
            if side != 0:
                trade_on(stats, sym, ev.ts_origin, px, min(q, ev.qty), -side)
                traded = True
        l3_apply(b, ev)
    if not (traded or kind == _OUT_OF_SYNC or (ev.flags & F_LAST_IN_GROUP) != 0):
        return 0
    l2_fill_state(b.l2, sym, out, k, ev.ts_origin, stale_ns)
    r = out[k]
    r.seq = ev.seq
    r.ts_origin = ev.ts_origin
    r.ts_exch = ev.ts_exch
    if kind == _OUT_OF_SYNC:
        r.kind = _Q_STATUS
        r.flags = r.flags | F_STALE
    elif traded and (ev.flags & F_LAST_IN_GROUP) == 0:
        r.kind = _Q_TRADE
    else:
        r.kind = _Q_QUOTE
    r.last_trade_px = stats.last[sym, 0]
    r.last_trade_qty = stats.last[sym, 1]
    r.vwap = trade_vwap(stats, sym, ev.ts_origin)
    return 1


@kernel
def l3_replay_states(b, stats, events, out, stale_ns):
    """Run :func:`l3_on_event` over ``events``; returns how many BOOK_STATEs were written to ``out``."""
    k = 0
    for i in range(events.shape[0]):
        k += l3_on_event(b, stats, events[i], out, k, stale_ns)
    return k
