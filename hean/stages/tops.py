"""The top-of-book view shared by the book, the router and the venue: best bid/ask per (venue, symbol).

Who writes, who reads:

* the **book stage** writes the engine's view, one (venue, symbol) entry per BOOK_STATE
  (:func:`tops_on_book_state`); across processes it is the segment ``hean-<run>-tops`` declared in
  :data:`hean.engine.topology.SHARED_VIEWS`;
* the **router** reads it when it routes an order (:func:`tops_opposite`: the side an order would take);
* a **simulated venue** keeps a private view of its own book the same way (:func:`tops_set`), which a
  backtest may hand to the router directly.

Each (venue, symbol) is one seqlock entry (:mod:`hean.rings.seqlock`), one cache line::

    word  name        value
    ----  ----------  ------------------------------------------------------------------------------
       0  SEQ         the seqlock sequence (even = stable)
       1  T_BID_PX    best bid, ticks (0 = side empty)
       2  T_BID_QTY   lots at the best bid
       3  T_ASK_PX    best ask, ticks (0 = side empty)
       4  T_ASK_QTY   lots at the best ask
       5  T_TS_NS     when the entry was last written (the book state's exchange time)
     6-7  --          padding (the entry is one cache line)

so a reader in another process never sees a bid from one update and an ask from another: it copies the
entry and checks the sequence did not move meanwhile (retrying if it did). After :data:`TOPS_READ_TRIES`
tries that all overlapped a write -- a book stage killed mid-write leaves the entry odd for ever -- the read
says *unavailable*, and the router treats that venue as having no quote (counted in its
``C_TOPS_UNAVAILABLE``).

:data:`MAX_VENUES` bounds the venue axis: a parent order has at most one child per venue
(:data:`hean.stages.orders.MAX_CHILDREN`), so the router can use no more venues than that.

Python access: ``tops.bid_px`` etc. are plain strided views of one field over every entry, for tests and
observers in one process; compiled code reads through :func:`tops_read` / :func:`tops_opposite`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from hean.atomics import cpu_pause
from hean.jit import kernel
from hean.records import F_CROSSED, F_STALE
from hean.rings.seqlock import (
    PAYLOAD,
    PAYLOAD_WORDS,
    entries_bytes,
    entries_view,
    make_entries,
    seqlock_begin,
    seqlock_load,
    seqlock_store,
    seqlock_valid,
    seqlock_write_begin,
    seqlock_write_end,
)
from hean.stages.orders import MAX_CHILDREN

__all__ = [
    "MAX_VENUES",
    "TOPS_FIELDS",
    "TOPS_READ_TRIES",
    "VenueTops",
    "make_venue_tops",
    "tops_bytes",
    "tops_on_book_state",
    "tops_opposite",
    "tops_read",
    "tops_set",
    "tops_view",
]

MAX_VENUES = MAX_CHILDREN  # a parent has at most one child per venue
T_BID_PX = PAYLOAD
T_BID_QTY = PAYLOAD + 1
T_ASK_PX = PAYLOAD + 2
T_ASK_QTY = PAYLOAD + 3
T_TS_NS = PAYLOAD + 4
TOPS_FIELDS = 5
# tries before a read says "unavailable": a live writer holds an entry odd for a few stores (ns), so a
# reader that overlaps one succeeds on its second try; 64 tries with a pause each took 1.7 us on the
# development VM (AMD EPYC; a pause is ~140 cycles on recent Intel: ~3 us), the most a routing decision
# waits on a writer preempted or killed mid-write
TOPS_READ_TRIES = 64

assert TOPS_FIELDS <= PAYLOAD_WORDS and T_TS_NS == PAYLOAD + TOPS_FIELDS - 1
assert T_BID_QTY == T_BID_PX + 1 and T_ASK_QTY == T_ASK_PX + 1, "a side's size follows its price (tops_opposite)"


class VenueTops(NamedTuple):
    """Best bid/ask per (venue, symbol): what smart routing sees. Prices ticks (0 = side empty), sizes lots."""

    entries: np.ndarray  # int64[n_venues, n_symbols, ENTRY_WORDS]: one seqlock entry per (venue, symbol)

    # plain views for Python (tests, observers): not a consistent snapshot across fields while a writer runs
    @property
    def bid_px(self) -> np.ndarray:
        return self.entries[..., T_BID_PX]

    @property
    def bid_qty(self) -> np.ndarray:
        return self.entries[..., T_BID_QTY]

    @property
    def ask_px(self) -> np.ndarray:
        return self.entries[..., T_ASK_PX]

    @property
    def ask_qty(self) -> np.ndarray:
        return self.entries[..., T_ASK_QTY]

    @property
    def ts_ns(self) -> np.ndarray:
        return self.entries[..., T_TS_NS]


def _check(n_venues: int, n_symbols: int) -> None:
    if not 1 <= n_venues <= MAX_VENUES or n_symbols < 1:
        raise ValueError(f"need 1..{MAX_VENUES} venues and >= 1 symbol, got {n_venues}, {n_symbols}")


def tops_bytes(n_venues: int, n_symbols: int) -> int:
    """Bytes of a view of ``n_venues`` x ``n_symbols`` entries (the size of the shared segment)."""
    _check(n_venues, n_symbols)
    return entries_bytes(n_venues * n_symbols)


def make_venue_tops(n_venues: int, n_symbols: int) -> VenueTops:
    """An empty private view: every side empty."""
    _check(n_venues, n_symbols)
    return VenueTops(make_entries((n_venues, n_symbols)))


def tops_view(words: np.ndarray, n_venues: int, n_symbols: int) -> VenueTops:
    """The view over ``words`` (int64, e.g. the shared segment's; zeroed = every side empty)."""
    _check(n_venues, n_symbols)
    return VenueTops(entries_view(words, (n_venues, n_symbols)))


@kernel(forceinline=True)
def tops_set(tops, venue, symbol, bid_px, bid_qty, ask_px, ask_qty, now_ns):
    """Write one (venue, symbol) entry: the single writer of ``tops`` (the book stage, or a venue's own)."""
    e = tops.entries[venue, symbol]
    s = seqlock_write_begin(e)
    seqlock_store(e, T_BID_PX, bid_px)
    seqlock_store(e, T_BID_QTY, bid_qty)
    seqlock_store(e, T_ASK_PX, ask_px)
    seqlock_store(e, T_ASK_QTY, ask_qty)
    seqlock_store(e, T_TS_NS, now_ns)
    seqlock_write_end(e, s)


@kernel(forceinline=True)
def tops_on_book_state(tops, venue, s, bs, now_ns):
    """Copy one BOOK_STATE of ``venue`` into the view as symbol ``s``'s quote there (``bs.symbol``, or the
    instrument a listing quotes); a stale or crossed book shows as empty."""
    if venue < 0 or venue >= tops.entries.shape[0] or s < 0 or s >= tops.entries.shape[1]:
        return
    if (bs.flags & (F_STALE | F_CROSSED)) != 0:  # nothing to route against
        tops_set(tops, venue, s, 0, 0, 0, 0, now_ns)
    else:
        tops_set(tops, venue, s, bs.bid_px, bs.bid_qty, bs.ask_px, bs.ask_qty, now_ns)


@kernel(forceinline=True)
def tops_read(tops, venue, symbol):
    """A consistent copy of one entry: ``(tries, bid_px, bid_qty, ask_px, ask_qty, ts_ns)``.

    ``tries`` is how many tries it took (1 = no write overlapped), or -1 when all :data:`TOPS_READ_TRIES`
    overlapped a write: unavailable, every value 0.
    """
    e = tops.entries[venue, symbol]
    for t in range(TOPS_READ_TRIES):
        s = seqlock_begin(e)
        if s >= 0:
            bp = seqlock_load(e, T_BID_PX)
            bq = seqlock_load(e, T_BID_QTY)
            ap = seqlock_load(e, T_ASK_PX)
            aq = seqlock_load(e, T_ASK_QTY)
            ts = seqlock_load(e, T_TS_NS)
            if seqlock_valid(e, s):
                return t + 1, bp, bq, ap, aq, ts
        cpu_pause()
    z = np.int64(0)
    return -1, z, z, z, z, z


@kernel(forceinline=True)
def tops_opposite(tops, venue, symbol, side):
    """``(ok, px, qty)`` of the best price an order of ``side`` (+1 buy / -1 sell) would take at ``venue``:
    its ask for a buy, its bid for a sell, both from one write. ``ok`` False: unavailable (``px``/``qty`` 0,
    the caller treats it as no quote)."""
    e = tops.entries[venue, symbol]
    w = T_ASK_PX if side > 0 else T_BID_PX
    for _ in range(TOPS_READ_TRIES):
        s = seqlock_begin(e)
        if s >= 0:
            px = seqlock_load(e, w)
            qty = seqlock_load(e, w + 1)
            if seqlock_valid(e, s):
                return True, px, qty
        cpu_pause()
    return False, np.int64(0), np.int64(0)
