"""The order router: ids, smart venue routing with splitting, order state tracking, cancels and replaces.

Parents and children. An order that passed risk becomes a *parent* (the id risk and the strategy know);
the router sends it to venues as one or more *child* orders (the ids the venues know). All reports the
router forwards to risk name the parent and describe the parent's quantities, so risk never sees the split.
Every parent and child moves through the state machine of :mod:`hean.stages.orders`; an event the machine
does not allow is counted there (``router.ot.invalid``) and not forwarded.

Routing a NEW (``order.venue >= 0`` sends it to that venue as is):

- *marketable* (MARKET, or a LIMIT that reaches the best opposite price of some venue, and not POST_ONLY):
  venues are ranked by effective price -- ask * (1 + taker fee) for a buy, bid * (1 - taker fee) for a
  sell -- and each, in that order, gets ``min(remaining, its top-of-book size)`` as long as its price is
  within the limit; what is left goes to the best-ranked venue (it rests there at the limit, or, for IOC
  and MARKET, the venue expires it). A market order with no opposite price anywhere is rejected.
- *passive*: the venue with the lowest maker fee (the lowest index on a tie).

The router's view of the venues is a :class:`hean.stages.tops.VenueTops`: per (venue, symbol) best bid/ask
price and size, which the book stage keeps current from each venue's BOOK_STATE
(:func:`~hean.stages.tops.tops_on_book_state`), possibly from another process. The router reads each venue's
opposite side through the view's seqlock (:func:`~hean.stages.tops.tops_opposite`: price and size from one
update, never torn); a venue whose entry stays mid-write for every try counts as having no quote
(``counters[C_TOPS_UNAVAILABLE]``). A backtest may pass the simulated venue's own ``tops``
(:mod:`hean.stages.venue`) directly.

Reports forwarded to risk (``router_on_report``, at most :data:`ROUTER_MAX_REPORTS` per call):

- ACK once, when the first child is acknowledged
- PARTIAL_FILL / FILL per child fill: ``qty`` = this fill, ``leaves_qty``/``cum_qty`` = the parent's; FILL
  only when the parent is completely filled
- CANCELED / EXPIRED / REJECTED once, when the last child is done and the parent is not filled: ``qty`` =
  the lots this removes from the open quantity (everything not filled)
- REPLACED: ``qty`` = open lots before, ``leaves_qty`` = open lots after
- CANCEL_REJECTED when a cancel or replace was refused

CANCEL and REPLACE with ``order_id`` 0 name "this strategy's live order on this side of this symbol" (the
strategy stage does not see router ids): the router resolves them to the parent it routed last for that
(strategy, symbol, side), if still live. A REPLACE that resolves to nothing is routed as a NEW (the quote was
filled or canceled meanwhile); risk never counted it open, so the first report forwarded for it carries
F_OPENS_ORDER, and a refusal of it is a CANCEL_REJECTED.

Orders the router itself refuses (halted, table full, unknown id, no liquidity, ...) produce a REJECTED (a
NEW; ``qty`` = the order's qty, ``order_id`` 0) or CANCEL_REJECTED (a cancel/replace) report that waits in a
small queue; :func:`router_poll` hands them to risk.

Output bounds: ``router_on_order`` writes at most :data:`ROUTER_MAX_ORDERS` records, and never more than
``len(out) - k``: an order that would need more children than that is rejected (TABLE_FULL).

Usage in the engine's router stage::

    router = make_router(n_symbols, n_venues, maker_fee=[...], taker_fee=[...])
    tops = make_venue_tops(n_venues, n_symbols)        # hean.stages.tops; or venue.tops of the simulated venues
    tops_on_book_state(tops, v, book_state.symbol, book_state, now_ns())  # the book stage, per venue book state
    n = router_on_order(router, order_from_risk, tops, now_ns(), out_venue_orders, k)   # <= 8 ORDERs
    n = router_on_report(router, venue_report, out_reports_to_risk, k)                  # <= 2 reports
    n = router_poll(router, out_reports_to_risk, k)    # the router's own rejects, when idle
    router_halt(router)                                # a worker died: send nothing more

``router_on_order``/``router_on_report`` are ``inline="always"`` (see :mod:`hean.stages.risk`): call them
from a loop compiled with ``_nrt=False``.

Kernels are compiled with ``_nrt=False``: they never allocate, and numba would otherwise reference-count
every array of a NamedTuple argument on each call (hundreds of ns; see :mod:`hean.stages.book`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from hean.atomics import load_relaxed, now_ns, store_relaxed
from hean.jit import kernel
from hean.records import (
    A_CANCEL,
    A_CANCEL_ALL,
    A_NEW,
    A_REPLACE,
    EXEC_REPORT,
    F_OPENS_ORDER,
    F_POST_ONLY,
    N_REASONS,
    ORDER,
    R_BAD_QTY,
    R_BAD_SIDE,
    R_BAD_SYMBOL,
    R_BAD_TYPE,
    R_BAD_VENUE,
    R_INVALID_TRANSITION,
    R_NO_LIQUIDITY,
    R_REPLACE_SPLIT,
    R_ROUTER_HALTED,
    R_TABLE_FULL,
    R_UNKNOWN_ORDER,
    T_LIMIT,
    T_MARKET,
    X_ACK,
    X_CANCEL_REJECTED,
    X_CANCELED,
    X_EXPIRED,
    X_FILL,
    X_PARTIAL,
    X_REJECTED,
    X_REPLACED,
)
from hean.rings.layout import MASK
from hean.rings.spsc import available
from hean.stages.declare import F_HALTED, Stage, Stream, per_item
from hean.stages.orders import (
    EV_ACK,
    EV_CANCEL_REJECT,
    EV_CANCEL_REQUEST,
    EV_CANCELED,
    EV_EXPIRE,
    EV_FILL,
    EV_PARTIAL_FILL,
    EV_REJECT,
    EV_REPLACE_REQUEST,
    EV_REPLACED,
    EV_SUBMIT,
    EXEC_TO_EVENT,
    MAX_CHILDREN,
    OC_ANY_REJECTED,
    OC_CLIENT,
    OC_CUM,
    OC_FLAGS,
    OC_ID,
    OC_LEAVES,
    OC_LIVE_CHILDREN,
    OC_N_CHILDREN,
    OC_ORDER_TYPE,
    OC_PARENT,
    OC_PRICE,
    OC_QTY,
    OC_REMOVED,
    OC_RISK_UNSEEN,
    OC_SIDE,
    OC_STATE,
    OC_STRATEGY,
    OC_SYMBOL,
    OC_TIF,
    OC_VENUE,
    ST_CANCEL_PENDING,
    ST_REPLACE_PENDING,
    ST_SENT,
    OrderTable,
    make_order_table,
    ot_allows,
    ot_apply,
    ot_is_live,
    ot_new,
    ot_slot,
)
from hean.stages.ports import BATCH, H_SERVICE, age, out_each, put, release_to, room, room_each, service, stage_clock
from hean.stages.tops import MAX_VENUES, tops_opposite
from hean.telemetry.block import C_EVENTS_IN, C_EVENTS_OUT, C_FILLS, C_USER_BASE, tm_add, tm_copy_rejects
from hean.telemetry.block import C_ORDERS as TM_ORDERS
from hean.telemetry.histogram import hist_record

__all__ = [
    "ROUTER_MAX_ORDERS",
    "ROUTER_MAX_REPORTS",
    "Router",
    "make_router",
    "router_halt",
    "router_on_order",
    "router_on_report",
    "router_poll",
]

ROUTER_MAX_ORDERS = MAX_CHILDREN  # most ORDER records one router_on_order call writes
ROUTER_MAX_REPORTS = 2  # most EXEC_REPORT records one router_on_report call writes (a fill + the end)
MAX_STRATEGIES = 16  # strategies whose CANCEL/REPLACE may name their order by side (order_id 0)
PENDING_CAPACITY = 256  # router-generated reports waiting for router_poll

# g[] indices
G_HALTED = 0
G_ORDER_SEQ = 1  # seq of the last ORDER sent to a venue
G_REPORT_SEQ = 2  # seq of the last EXEC_REPORT forwarded to risk
G_PEND_HEAD = 3  # next pending report to hand out
G_PEND_TAIL = 4  # next free pending slot
G_LEN = 8
# counters[] indices
C_ROUTED = 0  # parents routed
C_CHILDREN = 1  # child orders sent
C_SPLITS = 2  # parents split across more than one venue
C_CANCELS = 3  # cancel requests sent (children)
C_REPLACES = 4  # replace requests sent
C_CANCEL_ALLS = 5
C_REPORTS_IN = 6  # reports received from venues
C_REPORTS_OUT = 7  # reports forwarded to risk
C_UNKNOWN_REPORTS = 8  # reports naming no known child order
C_REFUSED = 9  # orders the router refused (sum of rejects[])
C_PEND_DROPPED = 10  # router-generated reports lost because the pending queue was full
C_TOPS_UNAVAILABLE = 11  # venue quotes read as unavailable (every try overlapped a write): routed as no quote
C_LEN = 16


F_MAKER, F_TAKER = 0, 1  # fees[] rows
S_RANK, S_VENUE, S_QTY, S_AVAIL = 0, 1, 2, 3  # scratch[] rows


class Router(NamedTuple):
    ot: OrderTable
    fees: np.ndarray  # float64[2, n_venues]: F_MAKER / F_TAKER fee, fraction of notional (negative = rebate)
    enabled: np.ndarray  # int64[n_venues, n_symbols]: 1 = the venue trades the symbol
    g: np.ndarray  # int64[G_LEN]
    pending: np.ndarray  # EXEC_REPORT[PENDING_CAPACITY]
    rejects: np.ndarray  # int64[N_REASONS]: router refusals by RejectReason
    counters: np.ndarray  # int64[C_LEN]
    scratch: np.ndarray  # int64[4, MAX_VENUES]: S_RANK venues in routing order and S_AVAIL their size at the
    # price ranked (one consistent read of the view per venue); S_VENUE / S_QTY the children
    rank_px: np.ndarray  # float64[MAX_VENUES] scratch: effective prices of the ranked venues
    by_side: np.ndarray  # int64[MAX_STRATEGIES, n_symbols, 2]: last parent slot per (strategy, symbol, buy/sell)


def make_router(
    n_symbols: int,
    n_venues: int,
    *,
    maker_fee: float | np.ndarray = 0.0,
    taker_fee: float | np.ndarray = 0.0,
    enabled: np.ndarray | None = None,
    capacity: int = 4096,
) -> Router:
    """Build a router for ``n_venues`` (1..8) venues.

    ``maker_fee``/``taker_fee``: fraction of notional per venue (scalar or one per venue; 0.0002 = 2 bp,
    negative = rebate). ``enabled``: int/bool[n_venues, n_symbols], which venue trades which symbol (default
    all). ``capacity``: order table size, a power of two (parents and children together).
    """
    if not 1 <= n_venues <= MAX_VENUES:
        raise ValueError(f"n_venues must be 1..{MAX_VENUES}, got {n_venues}")
    if n_symbols < 1:
        raise ValueError(f"n_symbols must be >= 1, got {n_symbols}")

    def fees(v, name):
        vals = per_item(v, n_venues, float)
        if not all(math.isfinite(x) and abs(x) < 0.1 for x in vals):
            raise ValueError(f"{name} must be finite fractions of notional below 10 %, got {v!r}")
        return vals

    if enabled is None:
        en = np.ones((n_venues, n_symbols), dtype=np.int64)
    else:
        en = np.asarray(enabled)
        if en.shape != (n_venues, n_symbols):
            raise ValueError(f"enabled must have shape ({n_venues}, {n_symbols}), got {en.shape}")
        en = (en != 0).astype(np.int64)
    return Router(
        ot=make_order_table(capacity),
        fees=np.array([fees(maker_fee, "maker_fee"), fees(taker_fee, "taker_fee")], np.float64),
        enabled=en,
        g=np.zeros(G_LEN, dtype=np.int64),
        pending=np.zeros(PENDING_CAPACITY, dtype=EXEC_REPORT),
        rejects=np.zeros(N_REASONS, dtype=np.int64),
        counters=np.zeros(C_LEN, dtype=np.int64),
        scratch=np.zeros((4, MAX_VENUES), dtype=np.int64),
        rank_px=np.zeros(MAX_VENUES, dtype=np.float64),
        by_side=np.full((MAX_STRATEGIES, n_symbols, 2), -1, dtype=np.int64),
    )


# ---------------------------------------------------------------------------------------------------------
# output helpers
# ---------------------------------------------------------------------------------------------------------
# inlined by numba: tiny, and called with literal constants (one compile per constant otherwise)
@kernel(inline=True)
def _write_report(rep, seq, ts_origin, symbol, kind, side, order_id, price, qty, leaves, cum, fee, ts_venue,
                  venue, reason, liquidity, strategy, client_id):  # fmt: skip
    rep.seq = seq
    rep.ts_origin = ts_origin
    rep.ts_exch = 0
    rep.symbol = symbol
    rep.kind = kind
    rep.side = side
    rep.flags = 0
    rep.order_id = order_id
    rep.price = price
    rep.qty = qty
    rep.leaves_qty = leaves
    rep.cum_qty = cum
    rep.fee = fee
    rep.ts_venue = ts_venue
    rep.venue = venue
    rep.reason = reason
    rep.liquidity = liquidity
    rep.strategy = strategy
    rep.client_id = client_id


# inlined by numba: tiny, and called with literal constants (one compile per constant otherwise)
@kernel(inline=True)
def _refuse(router, order, kind, reason):
    """Count a refusal and queue a REJECTED / CANCEL_REJECTED report for risk."""
    router.rejects[reason] += 1
    router.counters[C_REFUSED] += 1
    g = router.g
    cap = router.pending.shape[0]
    if g[G_PEND_TAIL] - g[G_PEND_HEAD] >= cap:
        router.counters[C_PEND_DROPPED] += 1
        return 0
    qty = order.qty if kind == X_REJECTED else 0
    rep = router.pending[g[G_PEND_TAIL] % cap]
    g[G_PEND_TAIL] += 1
    _write_report(rep, 0, order.ts_origin, order.symbol, kind, order.side, order.order_id, order.price, qty, 0, 0,
                  0.0, 0, -1, reason, 0, order.strategy, order.client_id)  # fmt: skip
    return 0


@kernel
def router_poll(router, out, k):
    """Hand queued router-generated reports to risk: writes at most ``len(out) - k``; returns how many."""
    g = router.g
    cap = router.pending.shape[0]
    w = 0
    while g[G_PEND_HEAD] < g[G_PEND_TAIL] and k + w < out.shape[0]:
        src = router.pending[g[G_PEND_HEAD] % cap]
        g[G_PEND_HEAD] += 1
        g[G_REPORT_SEQ] += 1
        _write_report(out[k + w], g[G_REPORT_SEQ], src.ts_origin, src.symbol, src.kind, src.side, src.order_id,
                      src.price, src.qty, 0, 0, 0.0, 0, -1, src.reason, 0, src.strategy, src.client_id)  # fmt: skip
        router.counters[C_REPORTS_OUT] += 1
        w += 1
    return w


@kernel
def _send(router, out, k, order, action, slot, ts_origin):
    """Write the venue ORDER for child ``slot``."""
    ot = router.ot
    router.g[G_ORDER_SEQ] += 1
    o = out[k]
    o.seq = router.g[G_ORDER_SEQ]
    o.ts_origin = ts_origin
    o.ts_exch = 0
    o.symbol = ot.cols[slot, OC_SYMBOL]
    o.kind = action
    o.side = ot.cols[slot, OC_SIDE]
    o.flags = ot.cols[slot, OC_FLAGS]
    o.order_id = ot.cols[slot, OC_ID]
    o.price = ot.cols[slot, OC_PRICE]
    o.qty = ot.cols[slot, OC_LEAVES]
    o.order_type = ot.cols[slot, OC_ORDER_TYPE]
    o.tif = ot.cols[slot, OC_TIF]
    o.strategy = ot.cols[slot, OC_STRATEGY]
    o.reason = 0
    o.venue = ot.cols[slot, OC_VENUE]
    o._res = 0
    o.client_id = ot.cols[slot, OC_CLIENT]


# ---------------------------------------------------------------------------------------------------------
# routing
# ---------------------------------------------------------------------------------------------------------
@kernel
def _rank_venues(router, tops, s, side, limit, is_market):
    """Rank the venues whose opposite best is within the limit, best first (scratch[S_RANK], rank_px), with
    the size at that price (scratch[S_AVAIL]): price and size from one consistent read of the view."""
    n = 0
    for v in range(router.enabled.shape[0]):
        if router.enabled[v, s] == 0:
            continue
        ok, px, qty = tops_opposite(tops, v, s, side)
        if not ok:
            router.counters[C_TOPS_UNAVAILABLE] += 1
            continue
        if px <= 0 or qty <= 0:
            continue
        if side > 0:
            if not is_market and px > limit:
                continue
            eff = px * (1.0 + router.fees[F_TAKER, v])
        else:
            if not is_market and px < limit:
                continue
            eff = -px * (1.0 - router.fees[F_TAKER, v])  # negate: lower is better for both sides
        i = n  # insertion sort (n <= 8)
        while i > 0 and router.rank_px[i - 1] > eff:
            router.rank_px[i] = router.rank_px[i - 1]
            router.scratch[S_RANK, i] = router.scratch[S_RANK, i - 1]
            router.scratch[S_AVAIL, i] = router.scratch[S_AVAIL, i - 1]
            i -= 1
        router.rank_px[i] = eff
        router.scratch[S_RANK, i] = v
        router.scratch[S_AVAIL, i] = qty
        n += 1
    return n


@kernel
def _plan(router, tops, order, s, side, qty):
    """Plan the children (scratch[S_VENUE], scratch[S_QTY]); their count, or -reason when it cannot route."""
    nv = router.enabled.shape[0]
    v = order.venue
    if v >= 0:
        if v >= nv or router.enabled[v, s] == 0:
            return -R_BAD_VENUE
        router.scratch[S_VENUE, 0] = v
        router.scratch[S_QTY, 0] = qty
        return 1
    if v != -1:
        return -R_BAD_VENUE
    is_market = order.order_type == T_MARKET
    if (order.flags & F_POST_ONLY) == 0:
        n = _rank_venues(router, tops, s, side, order.price, is_market)
        if n > 0:
            m = 0
            remaining = qty
            for i in range(n):
                if remaining <= 0:
                    break
                w = router.scratch[S_RANK, i]
                take = min(remaining, router.scratch[S_AVAIL, i])
                router.scratch[S_VENUE, m] = w
                router.scratch[S_QTY, m] = take
                remaining -= take
                m += 1
            router.scratch[S_QTY, 0] += remaining  # the rest goes to the best venue
            return m
        if is_market:
            return -R_NO_LIQUIDITY
    best = -1  # passive: cheapest maker fee
    for w in range(nv):
        if router.enabled[w, s] != 0 and (best < 0 or router.fees[F_MAKER, w] < router.fees[F_MAKER, best]):
            best = w
    if best < 0:
        return -R_BAD_VENUE
    router.scratch[S_VENUE, 0] = best
    router.scratch[S_QTY, 0] = qty
    return 1


@kernel
def _ids_free(ot, n):
    """True when the next ``n`` ids' slots are free (so a parent and its children can all be created)."""
    nxt = ot.meta[0]
    mask = ot.cols.shape[0] - 1
    for i in range(n):
        if ot_is_live(ot, (nxt + i) & mask):
            return False
    return True


@kernel
def _route_new(router, order, tops, now_ns, out, k, upsert):
    """Create the parent and its children and send them. ``upsert``: a REPLACE-by-side that found no live
    order -- refusals are CANCEL_REJECTED (risk never counted it open) and the parent's first report to risk
    will carry F_OPENS_ORDER."""
    ot = router.ot
    s = order.symbol
    side = np.int64(order.side)
    qty = np.int64(order.qty)
    reason = 0
    m = 0
    if s < 0 or s >= router.enabled.shape[1]:
        reason = R_BAD_SYMBOL
    elif side != 1 and side != -1:
        reason = R_BAD_SIDE
    elif qty <= 0:
        reason = R_BAD_QTY
    elif order.order_type != T_LIMIT and order.order_type != T_MARKET:
        reason = R_BAD_TYPE
    else:
        m = _plan(router, tops, order, s, side, qty)
        if m < 0:
            reason = -m
        elif m > out.shape[0] - k or not _ids_free(ot, m + 1):
            reason = R_TABLE_FULL
    if reason != 0:
        return _refuse(router, order, X_CANCEL_REJECTED if upsert else X_REJECTED, reason)
    price = order.price if order.order_type == T_LIMIT else 0
    typ, tif, fl, st, cid = order.order_type, order.tif, order.flags, order.strategy, order.client_id
    p = ot_new(ot, -1, s, side, price, qty, -1, typ, tif, fl, st, cid, now_ns)
    ot_apply(ot, p, EV_SUBMIT)
    for i in range(m):
        q = router.scratch[S_QTY, i]
        v = router.scratch[S_VENUE, i]
        c = ot_new(ot, p, s, side, price, q, v, typ, tif, fl, st, cid, now_ns)
        ot_apply(ot, c, EV_SUBMIT)
        ot.children[p, i] = c
        _send(router, out, k + i, order, A_NEW, c, order.ts_origin)
    ot.cols[p, OC_N_CHILDREN] = m
    ot.cols[p, OC_LIVE_CHILDREN] = m
    ot.cols[p, OC_RISK_UNSEEN] = 1 if upsert else 0
    st = order.strategy
    if st < router.by_side.shape[0]:
        router.by_side[st, s, 0 if side > 0 else 1] = p
    router.counters[C_ROUTED] += 1
    router.counters[C_CHILDREN] += m
    if m > 1:
        router.counters[C_SPLITS] += 1
    return m


@kernel
def _parent_slot(ot, order_id):
    p = ot_slot(ot, order_id)
    if p < 0 or ot.cols[p, OC_PARENT] != -1:
        return -1
    return p


@kernel
def _by_side(router, order):
    """The live parent of (strategy, symbol, side) most recently routed, or -1."""
    st = order.strategy
    s = order.symbol
    side = order.side
    if st >= router.by_side.shape[0] or s < 0 or s >= router.by_side.shape[1] or (side != 1 and side != -1):
        return -1
    p = router.by_side[st, s, 0 if side > 0 else 1]
    if p < 0 or not ot_is_live(router.ot, p) or router.ot.cols[p, OC_PARENT] != -1:
        return -1
    return p


@kernel
def _cancel(router, order, p, out, k):
    ot = router.ot
    if p < 0 or not ot_is_live(ot, p):
        return _refuse(router, order, X_CANCEL_REJECTED, R_UNKNOWN_ORDER)
    if not ot_allows(ot, p, EV_CANCEL_REQUEST):
        ot_apply(ot, p, EV_CANCEL_REQUEST)  # counts the invalid transition
        return _refuse(router, order, X_CANCEL_REJECTED, R_INVALID_TRANSITION)
    w = 0
    for i in range(ot.cols[p, OC_N_CHILDREN]):
        c = ot.children[p, i]
        if ot_is_live(ot, c) and ot_allows(ot, c, EV_CANCEL_REQUEST) and k + w < out.shape[0]:
            ot_apply(ot, c, EV_CANCEL_REQUEST)
            _send(router, out, k + w, order, A_CANCEL, c, order.ts_origin)
            w += 1
    ot_apply(ot, p, EV_CANCEL_REQUEST)
    router.counters[C_CANCELS] += w
    return w


@kernel
def _replace(router, order, p, out, k):
    ot = router.ot
    if p < 0 or not ot_is_live(ot, p):
        return _refuse(router, order, X_CANCEL_REJECTED, R_UNKNOWN_ORDER)
    if order.qty <= 0 or (ot.cols[p, OC_ORDER_TYPE] == T_LIMIT and order.price <= 0):
        return _refuse(router, order, X_CANCEL_REJECTED, R_BAD_QTY if order.qty <= 0 else R_BAD_TYPE)
    if ot.cols[p, OC_LIVE_CHILDREN] != 1:
        return _refuse(router, order, X_CANCEL_REJECTED, R_REPLACE_SPLIT)
    c = -1
    for i in range(ot.cols[p, OC_N_CHILDREN]):
        if ot_is_live(ot, ot.children[p, i]):
            c = ot.children[p, i]
    if not ot_allows(ot, p, EV_REPLACE_REQUEST) or not ot_allows(ot, c, EV_REPLACE_REQUEST) or k >= out.shape[0]:
        ot_apply(ot, p, EV_REPLACE_REQUEST)  # counts the invalid transition
        return _refuse(router, order, X_CANCEL_REJECTED, R_INVALID_TRANSITION)
    ot_apply(ot, p, EV_REPLACE_REQUEST)
    ot_apply(ot, c, EV_REPLACE_REQUEST)
    _send(router, out, k, order, A_REPLACE, c, order.ts_origin)
    o = out[k]
    o.price = order.price  # the requested values; the table changes when the venue confirms (REPLACED)
    o.qty = order.qty
    router.counters[C_REPLACES] += 1
    return 1


@kernel
def _cancel_all(router, order, out, k):
    """Cancel every live parent of the symbol (-1: all symbols): one CANCEL_ALL per venue."""
    ot = router.ot
    s = order.symbol
    nv = router.enabled.shape[0]
    if s < -1 or s >= router.enabled.shape[1]:
        return _refuse(router, order, X_CANCEL_REJECTED, R_BAD_SYMBOL)
    for p in range(ot.cols.shape[0]):
        if ot.cols[p, OC_PARENT] != -1 or not ot_is_live(ot, p) or (s >= 0 and ot.cols[p, OC_SYMBOL] != s):
            continue
        if not ot_allows(ot, p, EV_CANCEL_REQUEST):  # already cancel-pending: leave it
            continue
        ot_apply(ot, p, EV_CANCEL_REQUEST)
        for i in range(ot.cols[p, OC_N_CHILDREN]):
            c = ot.children[p, i]
            if ot_is_live(ot, c) and ot_allows(ot, c, EV_CANCEL_REQUEST):
                ot_apply(ot, c, EV_CANCEL_REQUEST)
    w = 0
    for v in range(nv):
        if k + w >= out.shape[0]:
            break
        router.g[G_ORDER_SEQ] += 1
        o = out[k + w]
        o.seq = router.g[G_ORDER_SEQ]
        o.ts_origin = order.ts_origin
        o.ts_exch = 0
        o.symbol = s
        o.kind = A_CANCEL_ALL
        o.side = 0
        o.flags = 0
        o.order_id = 0
        o.price = 0
        o.qty = 0
        o.order_type = 0
        o.tif = 0
        o.strategy = order.strategy
        o.reason = 0
        o.venue = v
        o.client_id = 0
        w += 1
    router.counters[C_CANCEL_ALLS] += 1
    return w


@kernel(inline=True)
def router_on_order(router, order, tops, now_ns, out, k):
    """Route one ORDER from risk; writes the venue ORDERs to ``out[k:]`` and returns how many.

    At most :data:`ROUTER_MAX_ORDERS` (and at most ``len(out) - k``). NEW: parent + children (``venue`` set
    on each); CANCEL/REPLACE: by parent ``order_id``; CANCEL_ALL: one per venue. Refusals return 0 and queue
    a report for :func:`router_poll`.
    """
    action = order.kind
    if router.g[G_HALTED] != 0:
        kind = X_REJECTED if action == A_NEW else X_CANCEL_REJECTED
        return _refuse(router, order, kind, R_ROUTER_HALTED)
    if action == A_NEW:
        return _route_new(router, order, tops, now_ns, out, k, False)
    if action == A_CANCEL or action == A_REPLACE:
        if order.order_id == 0:
            p = _by_side(router, order)
            if p < 0 and action == A_REPLACE:
                return _route_new(router, order, tops, now_ns, out, k, True)  # nothing to replace: a new order
        else:
            p = _parent_slot(router.ot, order.order_id)
        if action == A_CANCEL:
            return _cancel(router, order, p, out, k)
        return _replace(router, order, p, out, k)
    if action == A_CANCEL_ALL:
        return _cancel_all(router, order, out, k)
    return _refuse(router, order, X_CANCEL_REJECTED, R_BAD_TYPE)


@kernel
def router_halt(router):
    """Stop sending: every later order is refused (ROUTER_HALTED). Reports are still processed."""
    router.g[G_HALTED] = 1


# ---------------------------------------------------------------------------------------------------------
# reports
# ---------------------------------------------------------------------------------------------------------
# inlined by numba: tiny, and called with literal constants (one compile per constant otherwise)
@kernel(inline=True)
def _forward(router, rep, p, kind, qty, price, fee, out, k):
    ot = router.ot
    router.g[G_REPORT_SEQ] += 1
    router.counters[C_REPORTS_OUT] += 1
    _write_report(
        out[k],
        router.g[G_REPORT_SEQ],
        rep.ts_origin,
        ot.cols[p, OC_SYMBOL],
        kind,
        ot.cols[p, OC_SIDE],
        ot.cols[p, OC_ID],
        price,
        qty,
        ot.cols[p, OC_LEAVES],
        ot.cols[p, OC_CUM],
        fee,
        rep.ts_venue,
        rep.venue,
        rep.reason,
        rep.liquidity,
        ot.cols[p, OC_STRATEGY],
        ot.cols[p, OC_CLIENT],
    )
    if ot.cols[p, OC_RISK_UNSEEN] != 0:
        ot.cols[p, OC_RISK_UNSEEN] = 0
        out[k].flags = F_OPENS_ORDER
    return 1


@kernel(inline=True)
def router_on_report(router, rep, out, k):
    """Apply one venue EXEC_REPORT to its child and parent; forward to risk in ``out[k:]``; returns how many.

    Writes at most :data:`ROUTER_MAX_REPORTS` (and at most ``len(out) - k``; the caller must leave room for
    2 or a terminal report can be lost -- it is counted in ``counters[C_PEND_DROPPED]`` then).
    """
    ot = router.ot
    router.counters[C_REPORTS_IN] += 1
    c = ot_slot(ot, rep.order_id)
    kind = rep.kind
    if c < 0 or ot.cols[c, OC_PARENT] < 0 or kind >= EXEC_TO_EVENT.shape[0]:
        router.counters[C_UNKNOWN_REPORTS] += 1
        return 0
    event = EXEC_TO_EVENT[kind]
    if event < 0 or ot_apply(ot, c, event) < 0:
        return 0  # counted by the state machine (or an unknown kind: counted there as out of range)
    p = ot.cols[c, OC_PARENT]
    cap = out.shape[0] - k
    w = 0
    if kind == X_PARTIAL or kind == X_FILL:
        q = np.int64(rep.qty)
        ot.cols[c, OC_CUM] += q
        ot.cols[c, OC_LEAVES] = max(np.int64(0), ot.cols[c, OC_LEAVES] - q)
        ot.fees[c] += rep.fee
        ot.cols[p, OC_CUM] += q
        ot.cols[p, OC_LEAVES] = max(np.int64(0), ot.cols[p, OC_LEAVES] - q)
        ot.fees[p] += rep.fee
        full = ot.cols[p, OC_LEAVES] == 0 and ot.cols[p, OC_CUM] == ot.cols[p, OC_QTY]
        ot_apply(ot, p, EV_FILL if full else EV_PARTIAL_FILL)
        if w < cap:
            w += _forward(router, rep, p, X_FILL if full else X_PARTIAL, q, rep.price, rep.fee, out, k + w)
    elif kind == X_CANCELED or kind == X_EXPIRED or kind == X_REJECTED:
        removed = ot.cols[c, OC_LEAVES]
        ot.cols[c, OC_LEAVES] = 0
        ot.cols[c, OC_REMOVED] += removed
        ot.cols[p, OC_LEAVES] = max(np.int64(0), ot.cols[p, OC_LEAVES] - removed)
        ot.cols[p, OC_REMOVED] += removed
        if kind == X_REJECTED:
            ot.cols[p, OC_ANY_REJECTED] += 1
    elif kind == X_ACK:
        if ot.cols[p, OC_STATE] == ST_SENT:  # the first ack
            ot_apply(ot, p, EV_ACK)
            if w < cap:
                w += _forward(router, rep, p, X_ACK, 0, ot.cols[p, OC_PRICE], 0.0, out, k + w)
    elif kind == X_REPLACED:
        old = ot.cols[p, OC_LEAVES]
        ot.cols[c, OC_LEAVES] = np.int64(rep.leaves_qty)
        ot.cols[c, OC_PRICE] = rep.price
        ot.cols[c, OC_QTY] = ot.cols[c, OC_CUM] + ot.cols[c, OC_LEAVES] + ot.cols[c, OC_REMOVED]
        ot.cols[p, OC_LEAVES] = ot.cols[c, OC_LEAVES]
        ot.cols[p, OC_PRICE] = rep.price
        ot.cols[p, OC_QTY] = ot.cols[p, OC_CUM] + ot.cols[p, OC_LEAVES] + ot.cols[p, OC_REMOVED]
        ot_apply(ot, p, EV_REPLACED)
        if w < cap:
            w += _forward(router, rep, p, X_REPLACED, old, rep.price, 0.0, out, k + w)
    elif kind == X_CANCEL_REJECTED:
        st = ot.cols[p, OC_STATE]
        if st == ST_CANCEL_PENDING or st == ST_REPLACE_PENDING:
            ot_apply(ot, p, EV_CANCEL_REJECT)
        if w < cap:
            w += _forward(router, rep, p, X_CANCEL_REJECTED, 0, ot.cols[p, OC_PRICE], 0.0, out, k + w)

    if ot.terminal[ot.cols[c, OC_STATE]]:
        ot.cols[p, OC_LIVE_CHILDREN] -= 1
        if ot.cols[p, OC_LIVE_CHILDREN] == 0 and not ot.terminal[ot.cols[p, OC_STATE]]:
            if ot.cols[p, OC_ANY_REJECTED] == ot.cols[p, OC_N_CHILDREN]:
                end_kind, end_event = X_REJECTED, EV_REJECT
            elif (
                ot.cols[p, OC_STATE] == ST_CANCEL_PENDING
                or ot.cols[p, OC_STATE] == ST_REPLACE_PENDING
                or kind == X_CANCELED
            ):
                end_kind, end_event = X_CANCELED, EV_CANCELED
            else:
                end_kind, end_event = X_EXPIRED, EV_EXPIRE
            ot.cols[p, OC_LEAVES] = 0
            ot_apply(ot, p, end_event)
            if w < cap:
                w += _forward(router, rep, p, end_kind, ot.cols[p, OC_REMOVED], ot.cols[p, OC_PRICE], 0.0, out, k + w)
            else:
                router.counters[C_PEND_DROPPED] += 1
    return w


# ---------------------------------------------------------------------------------------------------------
# the stage
# ---------------------------------------------------------------------------------------------------------
ROUTER_REPORTS_OUT = 16  # the most reports one router kernel call may write

# histogram rows
H_AGE_ORDERS = 1  # an order's age when the router takes it
H_AGE_REPORTS = 2  # a venue report's age when the router takes it
H_E2E = 3  # tick-to-trade: origin to the order leaving the router
# user counters (C_USER_BASE + i): digests of every order that left the router and every fill it received,
# so two runs can be compared exactly; when the last order left, and when the router first saw the halt --
# "nothing leaves after a halt" is last_order_ns < halted_ns
U_ORDER_DIGEST = C_USER_BASE
U_FILL_DIGEST = C_USER_BASE + 1
U_LAST_ORDER_NS = C_USER_BASE + 2
U_HALTED_NS = C_USER_BASE + 3
_FNV_PRIME = 1099511628211


class RouterStage(NamedTuple):
    """The router stage's state: the order table and routing state, the tops view it reads, its buffers."""

    router: Router
    tops: object  # hean.stages.tops.VenueTops: the view the book stage writes
    orders: np.ndarray  # ORDER[ROUTER_MAX_ORDERS]
    reports: np.ndarray  # EXEC_REPORT[ROUTER_REPORTS_OUT]


@kernel(forceinline=True, error_model="numpy")
def _digest(counters, idx, a, b, c, d):
    """Fold four int64 values into a running FNV-style digest (wrapping arithmetic)."""
    h = load_relaxed(counters, idx)
    h = (h ^ a) * _FNV_PRIME
    h = (h ^ b) * _FNV_PRIME
    h = (h ^ c) * _FNV_PRIME
    h = (h ^ d) * _FNV_PRIME
    store_relaxed(counters, idx, h)


@kernel(forceinline=True, error_model="numpy")
def router_step(Rt, ins, outs, tm, now, flags):
    """Venue reports first (state machine, forwarded to risk), then orders from risk (routed to venues).

    ``ins``: (orders, venue reports); ``outs``: (venue orders, reports to their consumers: risk and the
    strategy). Halted (``F_HALTED``: a worker died, or the supervisor is gone), nothing more leaves: every
    later order is refused to risk.
    """
    orders, reports = ins
    vorders = outs[0][0]
    rreports = outs[1]  # every consumer: risk and the strategy
    router = Rt.router
    tmc = tm.counters
    if (flags & F_HALTED) != 0:
        router_halt(router)
        if load_relaxed(tmc, U_HALTED_NS) == 0:
            store_relaxed(tmc, U_HALTED_NS, now_ns())
    done = 0
    start, n = available(reports.hdr)
    if n:
        m = reports.hdr[MASK]
        k = 0
        t0 = stage_clock(flags)
        while k < min(n, BATCH) and room_each(rreports, ROUTER_REPORTS_OUT, tmc):
            rep = reports.slots[(start + k) & m]
            age(tm.hists[H_AGE_REPORTS], t0, rep.ts_origin)
            if rep.kind == X_FILL or rep.kind == X_PARTIAL:
                _digest(tmc, U_FILL_DIGEST, rep.order_id, rep.price, rep.qty, rep.leaves_qty)
                tm_add(tmc, C_FILLS, 1)
            w = router_on_report(router, rep, Rt.reports, 0)
            w += router_poll(router, Rt.reports, w)
            out_each(rreports, Rt.reports, w, tm)
            k += 1
        if k:
            service(tm.hists, t0, k)
            release_to(reports, start + k)
            done += k
    start, n = available(orders.hdr)
    m = orders.hdr[MASK]
    k = 0
    while k < min(n, BATCH) and room(vorders, ROUTER_MAX_ORDERS, tmc) and room_each(rreports, ROUTER_REPORTS_OUT, tmc):
        order = orders.slots[(start + k) & m]
        t0 = stage_clock(flags)
        age(tm.hists[H_AGE_ORDERS], t0, order.ts_origin)
        w = router_on_order(router, order, Rt.tops, order.ts_exch, Rt.orders, 0)
        t_out = stage_clock(flags)  # the order leaves the router now
        for j in range(w):
            o = Rt.orders[j]
            put(vorders, o)
            age(tm.hists[H_E2E], t_out, o.ts_origin)
            _digest(tmc, U_ORDER_DIGEST, o.order_id, o.kind * 4 + o.side, o.price, o.qty)
        if w:
            if t_out != 0:
                store_relaxed(tmc, U_LAST_ORDER_NS, t_out)
            tm_add(tmc, TM_ORDERS, w)
            tm_add(tmc, C_EVENTS_OUT, w)
        out_each(rreports, Rt.reports, router_poll(router, Rt.reports, 0), tm)
        if t0 != 0:
            hist_record(tm.hists[H_SERVICE], t_out - t0)
        k += 1
    if k:
        release_to(orders, start + k)
        done += k
    if done:
        tm_add(tmc, C_EVENTS_IN, done)
    return done


@kernel(forceinline=True, error_model="numpy")
def router_view(Rt, tm, now):
    """The router's refusals by reason, for observers."""
    tm_copy_rejects(tm.counters, Rt.router.rejects)


def _venue_fees(cfg) -> dict[str, np.ndarray]:
    """Each venue's maker and taker fee (the router's defaults): from the venues' own parameters."""
    out_ = {"maker_fee": [], "taker_fee": []}
    for v in cfg.venues or []:
        for key in out_:
            out_[key].append(float(v.params.get(key, 0.0)))
    return {k: np.array(v or [0.0], np.float64) for k, v in out_.items()}


def make_router_stage(ctx) -> RouterStage:
    """The router stage from ``[router]`` (fees default to the venues'), over the shared tops view."""
    table = dict(ctx.cfg.router) if ctx.real else {}
    ctx.kwargs("router", table, make_router)
    fees = _venue_fees(ctx.cfg)
    table.setdefault("maker_fee", fees["maker_fee"])
    table.setdefault("taker_fee", fees["taker_fee"])
    n_venues = max(1, len(ctx.cfg.venues))
    router = ctx.call("router", make_router, len(ctx.symbols), n_venues, **table)
    return RouterStage(
        router, ctx.views["tops"], np.zeros(ROUTER_MAX_ORDERS, ORDER), np.zeros(ROUTER_REPORTS_OUT, EXEC_REPORT)
    )


ROUTER = Stage(
    name="router",
    module=__name__,
    step="router_step",
    view="router_view",
    inputs=(Stream("orders", ORDER), Stream("venue_reports", EXEC_REPORT)),
    outputs=(Stream("venue_orders", ORDER), Stream("reports", EXEC_REPORT)),
    build=make_router_stage,
    hists=("service", "age:orders", "age:venue_reports", "e2e"),
    user_counters=("order_digest", "fill_digest", "last_order_ns", "halted_ns"),
    feedback=frozenset({"venue_reports"}),
    config="router",
)
