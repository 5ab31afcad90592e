"""The simulated venue on an order-by-order (L3) feed: :mod:`hean.stages.venue` with the exchange's orders.

Why the venue keeps its own L3 book (:mod:`hean.stages.l3book`) rather than level totals moved by each
event's quantity: not every L3 event says what it takes off its level -- a LOBSTER delete carries no size, a
Databento modify carries the order's *new* price and size -- so the venue has to know each order. The L3
book aggregates into the venue's own L2 book (``Venue.book``, the same arrays), so everything the venue
does against level totals -- marketable orders taking the visible levels, FOK checks, the router's tops --
works unchanged, and an order of ours that takes lots from a level removes them from the venue's copy until
the next L3 event on that level publishes the level's total again (the L2 rule: "until the feed next sets
that level").

**Queue position is exact** (the ``queue_model`` of the venue plays no part on an L3 symbol: it exists
because L2 data cannot tell where a cancellation was). A resting order of ours joins the tail of its level:
``queue_ahead`` = the level's total then, and the orders ahead of it are always a *prefix* of the level's
FIFO queue (later adds, and orders re-queued by a modify, go behind it). So an L3 event that takes ``r``
lots off order X at our price -- a cancel (its size), a delete (what X had left), an execution (its size), a
modify (the lots X gives up keeping its place; all of X when it moves or grows, which re-queues it behind
us) -- is ahead of us exactly when the lots queued before X are fewer than our ``queue_ahead``, and then
``queue_ahead -= r``. Adds never change it.

**Executions fill** by the venue's print rule. An L3_EXECUTE of resting order X for ``q`` lots is a print of
``min(q, X's size)`` at X's price, the aggressor on the other side: our orders priced better than it fill
first (the aggressor went through them), then our orders at its price, each with what of the print is
beyond its ``queue_ahead`` -- one print's lots shared by all of them; then the execution is applied to the
book (and, as above, moves ``queue_ahead`` when X was ahead). A TRADE on an L3 symbol (Databento's prints,
whose resting side's cancels follow it; LOBSTER's hidden and cross executions) fills by the same rule. Unlike
the L2 rule, a print never lowers ``queue_ahead`` itself: on an L3 feed the book events that follow (or
carry) the print say which orders traded, and counting both would count the lots twice.

What the venue cannot see: the recording's orders trade with each other as if ours were not there (ours
take no lots from the recording's), as on an L2 feed. Where the recording is not strictly FIFO (LOBSTER's
sample starts mid-day: its reader books what it never saw as synthetic orders at the tail of their level),
an execution attributed to an order behind ours moves nothing ahead of it: fills come late, never early.

Events of other kinds (LEVEL_SET, OUT_OF_SYNC; TRADE on a symbol with no L3 event so far) go to the L2 venue
(:func:`hean.stages.venue.venue_apply_event`): a replay merging L3 and L2 recordings trades both. CLEAR
removes the symbol's orders and levels.

The engine picks this stage (:data:`VENUE_L3`, named ``venue`` like :data:`hean.stages.venue.VENUE`) with
the L3 book stage when the recording holds L3 events (:func:`hean.stages.registry.pipeline_for`); the L2
venue's loop is untouched. Its L3 tables are sized like the book stage's (``[book]`` ``l3_orders`` /
``l3_levels``).

Usage (a backtest driving the venue by hand, as :func:`hean.stages.venue.venue_on_event`)::

    vn = make_venue(n_symbols)
    x = make_venue_l3(vn, max_orders=1 << 16, max_levels=1 << 14)
    n = venue_l3_on_event(vn, x, v, market_event, now_ns, out, k)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from hean.jit import kernel
from hean.records import EXEC_REPORT, MARKET_EVENT, ORDER, X_FILL, X_PARTIAL, EventKind
from hean.stages.book_l3 import l3_table_sizes
from hean.stages.declare import Stage, Stream
from hean.stages.l3book import L3Book, l3_apply_at, l3_order, l3_queue_position, make_l3_book
from hean.stages.venue import (
    C_EVENTS,
    C_FILLED_LOTS,
    C_FILLS,
    C_TRADES,
    G_NREST,
    MAKER,
    O_AHEAD,
    O_CUM,
    O_ID,
    O_LEAVES,
    O_PRICE,
    O_SIDE,
    O_SYMBOL,
    O_VENUE,
    VF_MAKER,
    Venue,
    _refresh_tops,
    _report,
    _rest_remove,
    listed_event,
    make_venue_stage,
    venue_advance,
    venue_apply_event,
    venue_pass,
    venue_release,
)

__all__ = [
    "VENUE_L3",
    "VenueL3",
    "VenueL3Stage",
    "make_venue_l3",
    "venue_apply_l3",
    "venue_l3_on_event",
    "venue_l3_step",
]

_ADD = int(EventKind.L3_ADD)
_MODIFY = int(EventKind.L3_MODIFY)
_DELETE = int(EventKind.L3_DELETE)
_EXECUTE = int(EventKind.L3_EXECUTE)
_CLEAR = int(EventKind.CLEAR)
_TRADE = int(EventKind.TRADE)


class VenueL3(NamedTuple):
    """The venue's orders on an L3 feed."""

    book: L3Book  # one row per (venue, symbol), like Venue.book -- whose arrays are its aggregated L2 book
    rows: np.ndarray  # int64[n_venues * n_symbols]: 1 once the row had an L3 event (its prints: the L3 rule)


class VenueL3Stage(NamedTuple):
    """The venue stage's state on an L3 feed: :class:`hean.stages.venue.VenueStage` and the orders."""

    venue: Venue
    venue_of: np.ndarray  # int64[n_symbols]
    out: np.ndarray  # EXEC_REPORT[VENUE_MAX_REPORTS]
    owed: np.ndarray  # int64[1]: 1 while due reports wait for room in the report ring
    clock: np.ndarray  # int64[1]: simulated time
    sim: np.ndarray  # the simclock view (hean.stages.simclock)
    instrument_of: np.ndarray  # int64[n_symbols]: the instrument each symbol quotes
    listed: np.ndarray  # MARKET_EVENT[1] (hean.stages.venue.listed_event)
    l3: VenueL3


def make_venue_l3(vn: Venue, max_orders: int = 1 << 16, max_levels: int = 1 << 14) -> VenueL3:
    """The L3 tables of venues ``vn`` (empty), aggregating into ``vn.book``."""
    rows = vn.book.qty.shape[0]
    return VenueL3(make_l3_book(rows, max_orders, max_levels, l2=vn.book), np.zeros(rows, np.int64))


# ---------------------------------------------------------------------------------------------------------
# prints and queue position
# ---------------------------------------------------------------------------------------------------------
@kernel
def _maker_fill(vn, v, t, slot, px, q, ts_origin):
    """Resting order ``slot`` fills ``q`` lots at ``px`` (a maker fill, reported)."""
    s = vn.o[slot, O_SYMBOL]
    vn.o[slot, O_LEAVES] -= q
    vn.o[slot, O_CUM] += q
    fee = px * q * vn.value_per_tick_lot[s] * vn.vf[v, VF_MAKER]
    kind = X_FILL if vn.o[slot, O_LEAVES] == 0 else X_PARTIAL
    _report(vn, v, t, ts_origin, s, kind, vn.o[slot, O_SIDE], vn.o[slot, O_ID], px, q, vn.o[slot, O_LEAVES],
            vn.o[slot, O_CUM], fee, 0, MAKER)  # fmt: skip
    vn.counters[C_FILLS] += 1
    vn.counters[C_FILLED_LOTS] += q


@kernel
def _l3_print(vn, v, t, s, px, qty, passive, ts_origin):
    """A print of ``qty`` lots at ``px`` against resting orders of side ``passive`` (module docstring): orders
    priced better fill first, then orders at ``px`` with what is beyond their queue ahead, which the print
    leaves as it is (the L3 events move it)."""
    avail = qty
    for through_pass in (True, False):
        i = 0
        while i < vn.g[G_NREST] and avail > 0:
            slot = vn.rest[i]
            i += 1
            if vn.o[slot, O_VENUE] != v or vn.o[slot, O_SYMBOL] != s or vn.o[slot, O_SIDE] != passive:
                continue
            op = vn.o[slot, O_PRICE]
            through = op > px if passive > 0 else op < px
            if through_pass:
                if not through:
                    continue
                q = min(vn.o[slot, O_LEAVES], avail)
            else:
                ahead = vn.o[slot, O_AHEAD]
                if op != px or qty <= ahead:
                    continue
                q = min(vn.o[slot, O_LEAVES], qty - ahead, avail)
            avail -= q
            _maker_fill(vn, v, t, slot, op, q, ts_origin)
            if vn.o[slot, O_LEAVES] == 0:
                _rest_remove(vn, slot)
                i -= 1  # the last resting order moved into position i - 1


@kernel
def _removed(kind, ev_px, ev_qty, px, q):
    """Lots an L3 event of ``kind`` takes off the place in the queue of an order resting ``q`` lots at ``px``:
    a modify that moves or grows the order takes all of it (it re-queues at a tail)."""
    if kind == _DELETE:
        return q
    if kind == _MODIFY:
        if ev_qty < 0:
            return np.int64(0)
        if ev_qty == 0 or ev_px != px or ev_qty > q:
            return q
        return q - ev_qty
    return max(np.int64(0), min(np.int64(ev_qty), q))  # cancel, execute


@kernel
def _credit_ahead(vn, b, v, s, side, px, oid, removed):
    """``removed`` lots left the queue at ``px`` from order ``oid``: our resting orders there that it was ahead
    of (the lots queued before it are fewer than theirs ahead) move up by as much."""
    if removed <= 0:
        return
    before = np.int64(-1)
    for i in range(vn.g[G_NREST]):
        slot = vn.rest[i]
        if (vn.o[slot, O_PRICE] != px or vn.o[slot, O_VENUE] != v or vn.o[slot, O_SYMBOL] != s
                or vn.o[slot, O_SIDE] != side):  # fmt: skip
            continue
        if before < 0:
            before, _n = l3_queue_position(b, oid)
        if before < vn.o[slot, O_AHEAD]:
            vn.o[slot, O_AHEAD] = max(np.int64(0), vn.o[slot, O_AHEAD] - removed)


@kernel
def _l3_event(vn, x, v, s, row, ev, now_ns):
    """An L3_* event of row ``row``: a print first for an execution, our queue positions, then the book."""
    kind = ev.kind
    x.rows[row] = 1
    if kind != _ADD:
        side, px, q = l3_order(x.book, ev.order_id)
        if side != 0:
            if kind == _EXECUTE:
                vn.counters[C_TRADES] += 1
                if vn.g[G_NREST] > 0:
                    _l3_print(vn, v, now_ns, s, px, min(q, max(np.int64(ev.qty), np.int64(0))), side, ev.ts_origin)
            if vn.g[G_NREST] > 0:
                _credit_ahead(vn, x.book, v, s, side, px, ev.order_id, _removed(kind, ev.price, ev.qty, px, q))
    l3_apply_at(x.book, ev, row)
    _refresh_tops(vn, v, s, now_ns)


@kernel(forceinline=True)
def venue_apply_l3(vn, x, v, ev, now_ns):
    """A MARKET_EVENT of venue ``v`` at ``now_ns`` on an L3 feed (module docstring); ``x``: the venues' orders
    (:class:`VenueL3`). Call :func:`hean.stages.venue.venue_advance` to ``now_ns`` first."""
    ns = vn.tops.entries.shape[1]
    s = ev.symbol
    kind = ev.kind
    if (kind >= _ADD and kind <= _EXECUTE) or kind == _CLEAR:
        if 0 <= v < vn.in_ht.shape[0] and 0 <= s < ns:
            row = v * ns + s
            vn.counters[C_EVENTS] += 1
            if kind == _CLEAR:
                l3_apply_at(x.book, ev, row)
                vn.stale[row] = 0
                _refresh_tops(vn, v, s, now_ns)
            else:
                _l3_event(vn, x, v, s, row, ev, now_ns)
    elif kind == _TRADE and 0 <= v < vn.in_ht.shape[0] and 0 <= s < ns and x.rows[v * ns + s] != 0:
        vn.counters[C_EVENTS] += 1
        vn.counters[C_TRADES] += 1
        _l3_print(vn, v, now_ns, s, ev.price, np.int64(ev.qty), -np.int64(ev.side), ev.ts_origin)
    else:
        venue_apply_event(vn, v, ev, now_ns)


@kernel
def venue_l3_on_event(vn, x, v, ev, now_ns, out, k):
    """:func:`hean.stages.venue.venue_on_event` on an L3 feed: orders that arrived first are matched first,
    then the event is applied; returns the reports written to ``out[k:]``."""
    venue_advance(vn, now_ns)
    venue_apply_l3(vn, x, v, ev, now_ns)
    return venue_release(vn, now_ns, out, k)


# ---------------------------------------------------------------------------------------------------------
# the stage
# ---------------------------------------------------------------------------------------------------------
@kernel(forceinline=True, error_model="numpy")
def venue_l3_stage_apply(V, v, ev, now):
    """A market event (not a CLOCK) of venue ``v`` at ``now``: :func:`venue_apply_l3` (of the instrument it
    quotes: :func:`hean.stages.venue.listed_event`)."""
    venue_apply_l3(V.venue, V.l3, v, listed_event(V, ev), now)


@kernel(forceinline=True, error_model="numpy")
def venue_l3_step(V, ins, outs, tm, now_pass, flags):
    """The venue stage's step (:func:`hean.stages.venue.venue_step`) with the L3 event kernel."""
    return venue_pass(V, ins, outs, tm, flags, venue_l3_stage_apply)


def make_venue_l3_stage(ctx) -> VenueL3Stage:
    """The simulated venues from ``[[venues]]``, their L3 tables sized by ``[book]`` (:mod:`hean.stages.book_l3`)."""
    base = make_venue_stage(ctx)
    orders, levels = l3_table_sizes(dict(ctx.cfg.book)) if ctx.real else (1, 1)
    return VenueL3Stage(*base, make_venue_l3(base.venue, orders, levels))


VENUE_L3 = Stage(
    name="venue",
    module=__name__,
    step="venue_l3_step",
    inputs=(Stream("market", MARKET_EVENT), Stream("venue_orders", ORDER)),
    outputs=(Stream("venue_reports", EXEC_REPORT),),
    build=make_venue_l3_stage,
    hists=("service", "age:market", "age:venue_orders"),
    config="venues",
)
