"""The worker loop: one numba function that runs any adjacent group of stages, fused or not.

Why one loop for every placement: a worker owning stages ``book..venue`` and a worker owning only ``risk``
run the same compiled code with different ``owns`` flags, so there is exactly one function to compile and
cache (``cache=True``), and the fused and the one-process-per-stage placements execute the same kernels in
the same order -- which is what makes them produce identical orders and fills in lockstep mode.

Delivery: every edge of the topology (:mod:`hean.engine.topology`) has a ``deliver_*`` function. If the
edge's consumer stage runs in this worker, delivery *is* the consumer's kernel call (no copy, no ring); else
the record is pushed into the edge's ring. A worker's loop then polls the rings of its stages' inputs that
come from other workers. Every record is released only after it has been processed and its outputs pushed,
so "every ring empty" means "nothing in flight" (the lockstep feed relies on it).

Order of delivery (identical in every placement):

* a market message goes to the venue first (fills of resting orders, latency-delayed reports), and -- in
  lockstep mode, once the pipeline is idle again -- to the book chain;
* a book state goes to risk (mark to mid, staleness) before the strategy sees it;
* an execution report goes venue -> router -> risk.

Back-pressure: a full ring makes the producer wait (with its wait strategy) while it keeps heart-beating;
after ``STALL_NS`` it gives up with ``ERR_RING_STALLED`` -- a full order/report ring means a stalled peer,
since those rings are sized far beyond what the risk limits let be outstanding.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from hean import records
from hean.atomics import cpu_pause, load_relaxed, nanosleep, now_ns, sched_yield, store_relaxed
from hean.engine import control as C
from hean.feeds.synthetic import synthetic_next
from hean.rings.layout import MASK, READ, WRITE
from hean.rings.spsc import available, count_drop, release, try_push
from hean.stages.book import book_on_event
from hean.stages.positions import T_FEES, T_REALIZED, T_UNREALIZED
from hean.stages.risk import C_REJECTED as RC_REJECTED
from hean.stages.risk import (
    G_OPEN_TOTAL,
    X_FILL,
    X_PARTIAL,
    risk_effective_state,
    risk_on_book,
    risk_on_control,
    risk_on_intent,
    risk_on_report,
    risk_poll,
)
from hean.stages.router import router_on_order, router_on_report, router_poll, tops_on_book_state
from hean.stages.venue import venue_on_event, venue_on_order, venue_poll
from hean.strategies import strategy_on_book
from hean.telemetry.block import (
    C_DROPS,
    C_EVENTS_IN,
    C_EVENTS_OUT,
    C_FILLS,
    C_ORDERS,
    C_REJECT_BASE,
    C_REJECTS,
    C_RING_FULL,
    N_REJECT_REASONS,
    risk_set_position,
    risk_set_state,
    risk_set_totals,
    tm_add,
    tm_busy,
    tm_heartbeat,
    tm_idle,
)
from hean.telemetry.histogram import hist_record

# stage indices (hean.engine.config.STAGES order)
FEED, BOOK, STRATEGY, RISK, ROUTER, VENUE = 0, 1, 2, 3, 4, 5
N_STAGES = 6

# wait strategies
W_SPIN, W_YIELD, W_SLEEP = 0, 1, 2
WAIT_CODES = {"spin": W_SPIN, "yield": W_YIELD, "sleep": W_SLEEP}

STALL_NS = 2_000_000_000  # an output ring full this long: the consumer is stalled
HEARTBEAT_EVERY = 256  # loop iterations between heartbeats while busy

# params (int64 array) indices
P_WORKER = 0  # this worker's index
P_WAIT = 1  # W_*
P_SPIN_YIELD = 2  # idle polls before yielding
P_SPIN_SLEEP = 3  # idle polls before sleeping
P_SLEEP_NS = 4
P_LOCKSTEP = 5  # 1: deterministic lockstep
P_STALE_NS = 6  # book stale window (0: off)
P_LEN = 8

# feed params/state (int64 array) indices
F_MODE = 0  # 0 synthetic, 1 replay
F_PACE = 1  # 0 rate, 1 recorded, 2 fast
F_PERIOD_NS = 2  # ns between messages at the configured rate
F_MAX_MSGS = 3  # 0 = unlimited
F_POS = 4  # replay: next event index
F_MSGS = 5  # messages published
F_T0 = 6  # CLOCK_MONOTONIC ns of the first message
F_REC_T0 = 7  # replay: recorded receive time of the first message
F_PHASE = 8  # lockstep: 0 = next message to the venue, 1 = same message to the book chain
F_MSG_START = 9  # lockstep: start index of the current message in the scratch/replay array
F_MSG_END = 10
F_SCHED = 11  # scheduled send time of the current message
F_SEQ = 12  # last event seq assigned
F_LEN = 16


class Rings(NamedTuple):
    """(hdr, slots) of every edge; edges inside this worker or not touching it hold unused dummies."""

    ev_book_h: np.ndarray
    ev_book_s: np.ndarray
    ev_venue_h: np.ndarray
    ev_venue_s: np.ndarray
    bs_strat_h: np.ndarray
    bs_strat_s: np.ndarray
    bs_risk_h: np.ndarray
    bs_risk_s: np.ndarray
    intents_h: np.ndarray
    intents_s: np.ndarray
    orders_h: np.ndarray
    orders_s: np.ndarray
    vorders_h: np.ndarray
    vorders_s: np.ndarray
    reports_h: np.ndarray
    reports_s: np.ndarray
    rreports_h: np.ndarray
    rreports_s: np.ndarray
    control_h: np.ndarray
    control_s: np.ndarray


class Scratch(NamedTuple):
    """Per-call-site output buffers for direct (fused) delivery; one per site, so nested calls never share."""

    ev: np.ndarray  # MARKET_EVENT: one synthetic message
    bs: np.ndarray  # BOOK_STATE: book output
    intent: np.ndarray  # ORDER: strategy output
    risk_out: np.ndarray  # ORDER: risk output on an intent
    risk_aux: np.ndarray  # ORDER: risk output on book/control/poll (cancel-alls)
    vorders: np.ndarray  # ORDER: router output
    rep_ev: np.ndarray  # EXEC_REPORT: venue output on a market event / poll
    rep_ord: np.ndarray  # EXEC_REPORT: venue output on an order
    rep_risk: np.ndarray  # EXEC_REPORT: router output (reports forwarded to risk)


def make_scratch(n_ev: int = 4096) -> Scratch:
    return Scratch(
        ev=np.zeros(n_ev, records.MARKET_EVENT),
        bs=np.zeros(4, records.BOOK_STATE),
        intent=np.zeros(4, records.ORDER),
        risk_out=np.zeros(4, records.ORDER),
        risk_aux=np.zeros(1024, records.ORDER),
        vorders=np.zeros(64, records.ORDER),
        rep_ev=np.zeros(4096, records.EXEC_REPORT),
        rep_ord=np.zeros(256, records.EXEC_REPORT),
        rep_risk=np.zeros(256, records.EXEC_REPORT),
    )


def dummy_ring(dtype) -> tuple[np.ndarray, np.ndarray]:
    """A private (hdr, slots) pair for an edge this worker never uses as a ring (keeps numba types fixed)."""
    from hean.rings.layout import CAPACITY, HDR_WORDS

    hdr = np.zeros(HDR_WORDS, np.int64)
    hdr[CAPACITY] = 1
    hdr[MASK] = 0
    return hdr, np.zeros(1, dtype)


# ---------------------------------------------------------------------------------------------------------
# telemetry rows (fixed per stage; see hean.engine.supervisor.STAGE_HISTS)
# ---------------------------------------------------------------------------------------------------------
H_SERVICE = 0  # every stage: time spent in its kernel per input record
H_AGE1 = 1  # first input's age at this stage (now - ts_origin)
H_AGE2 = 2  # second input
H_AGE3 = 3  # third input
H_E2E_ROUTER = 3  # router: tick-to-trade, origin to the order leaving the router

# router user counters (hean.telemetry.block C_USER_BASE + i; names in STAGE_USER_COUNTERS): digests of
# every order that left the router and every fill it received, so two runs can be compared exactly.
U_ORDER_DIGEST = 64
U_FILL_DIGEST = 65
_FNV_PRIME = 1099511628211


class Telemetry(NamedTuple):
    """Counters and histograms of each stage's block (dummies for stages this worker does not own)."""

    feed_c: np.ndarray
    feed_h: np.ndarray
    book_c: np.ndarray
    book_h: np.ndarray
    strat_c: np.ndarray
    strat_h: np.ndarray
    risk_c: np.ndarray
    risk_h: np.ndarray
    risk_r: np.ndarray  # the risk-state region (positions, PnL) for `hean top`
    router_c: np.ndarray
    router_h: np.ndarray
    venue_c: np.ndarray
    venue_h: np.ndarray


# ---------------------------------------------------------------------------------------------------------
# ring plumbing
# ---------------------------------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _wait(params, idle):
    """One idle step of the worker's wait strategy (after ``idle`` consecutive idle polls)."""
    mode = params[P_WAIT]
    if mode == W_SPIN:
        cpu_pause()
    elif mode == W_YIELD:
        if idle >= params[P_SPIN_YIELD]:
            sched_yield()
        else:
            cpu_pause()
    else:
        if idle >= params[P_SPIN_SLEEP]:
            nanosleep(params[P_SLEEP_NS])
        elif idle >= params[P_SPIN_YIELD]:
            sched_yield()
        else:
            cpu_pause()


@njit(cache=True, nogil=True)
def _push(hdr, slots, rec, params, ctl, tmc):
    """Push one record, waiting while the ring is full. False: STOP was set or the consumer stalled."""
    if try_push(hdr, slots, rec):
        tm_add(tmc, C_EVENTS_OUT, 1)
        return True
    tm_add(tmc, C_RING_FULL, 1)
    t0 = now_ns()
    spins = 0
    w = params[P_WORKER]
    while True:
        _wait(params, spins)
        spins += 1
        if try_push(hdr, slots, rec):
            tm_add(tmc, C_EVENTS_OUT, 1)
            return True
        if (spins & 255) == 0:
            t = now_ns()
            store_relaxed(ctl, C.worker_word(w, C.W_HEARTBEAT), t)
            if load_relaxed(ctl, C.STOP) != 0:
                count_drop(hdr)
                tm_add(tmc, C_DROPS, 1)
                return False
            if t - t0 > STALL_NS:
                store_relaxed(ctl, C.worker_word(w, C.W_ERROR), C.ERR_RING_STALLED)
                store_relaxed(ctl, C.STOP, 1)
                count_drop(hdr)
                tm_add(tmc, C_DROPS, 1)
                return False


@njit(cache=True, nogil=True)
def _ring_empty(hdr):
    return hdr[WRITE] == hdr[READ]  # observer view; used with the double-collect in _quiescent


@njit(cache=True, nogil=True)
def _writes(R):
    """Sum of every ring's WRITE cursor (relaxed): changes whenever anything is published anywhere."""
    return (
        load_relaxed(R.ev_book_h, WRITE) + load_relaxed(R.ev_venue_h, WRITE) + load_relaxed(R.bs_strat_h, WRITE)
        + load_relaxed(R.bs_risk_h, WRITE) + load_relaxed(R.intents_h, WRITE) + load_relaxed(R.orders_h, WRITE)
        + load_relaxed(R.vorders_h, WRITE) + load_relaxed(R.reports_h, WRITE) + load_relaxed(R.rreports_h, WRITE)
    )  # fmt: skip


@njit(cache=True, nogil=True)
def _all_empty(R):
    return (
        load_relaxed(R.ev_book_h, WRITE) == load_relaxed(R.ev_book_h, READ)
        and load_relaxed(R.ev_venue_h, WRITE) == load_relaxed(R.ev_venue_h, READ)
        and load_relaxed(R.bs_strat_h, WRITE) == load_relaxed(R.bs_strat_h, READ)
        and load_relaxed(R.bs_risk_h, WRITE) == load_relaxed(R.bs_risk_h, READ)
        and load_relaxed(R.intents_h, WRITE) == load_relaxed(R.intents_h, READ)
        and load_relaxed(R.orders_h, WRITE) == load_relaxed(R.orders_h, READ)
        and load_relaxed(R.vorders_h, WRITE) == load_relaxed(R.vorders_h, READ)
        and load_relaxed(R.reports_h, WRITE) == load_relaxed(R.reports_h, READ)
        and load_relaxed(R.rreports_h, WRITE) == load_relaxed(R.rreports_h, READ)
    )


@njit(cache=True, nogil=True)
def _quiescent(R):
    """True when nothing is in flight anywhere: every ring empty, twice, with no write in between.

    Consumers release a record only after processing it and pushing its outputs, so an empty ring holds
    no unfinished work; the second collection rules out a record that moved between rings while the first
    one was being taken.
    """
    w1 = _writes(R)
    if not _all_empty(R):
        return False
    return _all_empty(R) and _writes(R) == w1


# ---------------------------------------------------------------------------------------------------------
# delivery: one function per edge; a local consumer runs its kernel, a remote one gets a ring push
# ---------------------------------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _service(hists, t0):
    t1 = now_ns()
    hist_record(hists[H_SERVICE], t1 - t0)
    return t1


@njit(cache=True, nogil=True)
def deliver_risk_report(X, rep):
    """router -> risk: an execution report (positions, PnL, open orders)."""
    T = X.tm
    if X.owns[RISK] == 0:
        return _push(X.rings.rreports_h, X.rings.rreports_s, rep, X.params, X.ctl, T.router_c)
    t0 = now_ns()
    hist_record(T.risk_h[H_AGE3], t0 - rep.ts_origin)
    tm_add(T.risk_c, C_EVENTS_IN, 1)
    risk_on_report(X.risk, rep)
    if rep.kind == X_FILL or rep.kind == X_PARTIAL:
        tm_add(T.risk_c, C_FILLS, 1)
    _service(T.risk_h, t0)
    return True


@njit(cache=True, nogil=True)
def _router_reports_out(X, n):
    ok = True
    for j in range(n):
        ok = deliver_risk_report(X, X.scratch.rep_risk[j]) and ok
    return ok


@njit(cache=True, nogil=True)
def _digest(counters, idx, a, b, c, d):
    """Fold four int64 values into a running FNV-style digest (wrapping arithmetic)."""
    h = load_relaxed(counters, idx)
    for v in (a, b, c, d):
        h = (h ^ v) * _FNV_PRIME
    store_relaxed(counters, idx, h)


@njit(cache=True, nogil=True)
def deliver_report(X, rep):
    """venue -> router: an execution report; the router forwards what risk must see."""
    T = X.tm
    if X.owns[ROUTER] == 0:
        return _push(X.rings.reports_h, X.rings.reports_s, rep, X.params, X.ctl, T.venue_c)
    if rep.kind == X_FILL or rep.kind == X_PARTIAL:
        _digest(T.router_c, U_FILL_DIGEST, rep.order_id, rep.price, rep.qty, rep.leaves_qty)
    t0 = now_ns()
    hist_record(T.router_h[H_AGE2], t0 - rep.ts_origin)
    tm_add(T.router_c, C_EVENTS_IN, 1)
    n = router_on_report(X.router, rep, X.scratch.rep_risk, 0)
    n += router_poll(X.router, X.scratch.rep_risk, n)
    _service(T.router_h, t0)
    return _router_reports_out(X, n)


@njit(cache=True, nogil=True)
def _venue_reports_out(X, buf, n):
    ok = True
    for j in range(n):
        rep = buf[j]
        if rep.kind == X_FILL or rep.kind == X_PARTIAL:
            tm_add(X.tm.venue_c, C_FILLS, 1)
        ok = deliver_report(X, rep) and ok
    return ok


@njit(cache=True, nogil=True)
def deliver_venue_order(X, order):
    """router -> venue: an order leaving the router (tick-to-trade ends here)."""
    T = X.tm
    if load_relaxed(X.ctl, C.HALT) != 0:  # a worker died: nothing more leaves the router
        tm_add(T.router_c, C_DROPS, 1)
        return True
    hist_record(T.router_h[H_E2E_ROUTER], now_ns() - order.ts_origin)
    tm_add(T.router_c, C_ORDERS, 1)
    _digest(T.router_c, U_ORDER_DIGEST, order.order_id, order.kind * 4 + order.side, order.price, order.qty)
    if X.owns[VENUE] == 0:
        return _push(X.rings.vorders_h, X.rings.vorders_s, order, X.params, X.ctl, T.router_c)
    t0 = now_ns()
    hist_record(T.venue_h[H_AGE2], t0 - order.ts_origin)
    tm_add(T.venue_c, C_EVENTS_IN, 1)
    n = venue_on_order(X.venue, order, order.ts_exch, X.scratch.rep_ord, 0)
    _service(T.venue_h, t0)
    ok = _venue_reports_out(X, X.scratch.rep_ord, n)
    return _venue_flush(X, order.ts_exch) and ok


@njit(cache=True, nogil=True)
def deliver_order(X, order):
    """risk -> router: an order that passed the pre-trade checks."""
    T = X.tm
    if X.owns[ROUTER] == 0:
        return _push(X.rings.orders_h, X.rings.orders_s, order, X.params, X.ctl, T.risk_c)
    t0 = now_ns()
    hist_record(T.router_h[H_AGE1], t0 - order.ts_origin)
    tm_add(T.router_c, C_EVENTS_IN, 1)
    n = router_on_order(X.router, order, X.tops, order.ts_exch, X.scratch.vorders, 0)
    m = router_poll(X.router, X.scratch.rep_risk, 0)
    _service(T.router_h, t0)
    ok = True
    for j in range(n):
        ok = deliver_venue_order(X, X.scratch.vorders[j]) and ok
    return _router_reports_out(X, m) and ok


@njit(cache=True, nogil=True)
def _risk_orders_out(X, buf, n):
    ok = True
    for j in range(n):
        ok = deliver_order(X, buf[j]) and ok
    return ok


@njit(cache=True, nogil=True)
def deliver_intent(X, intent):
    """strategy -> risk: an order intent for the pre-trade checks."""
    T = X.tm
    tm_add(T.strat_c, C_ORDERS, 1)
    if X.owns[RISK] == 0:
        return _push(X.rings.intents_h, X.rings.intents_s, intent, X.params, X.ctl, T.strat_c)
    t0 = now_ns()
    hist_record(T.risk_h[H_AGE2], t0 - intent.ts_origin)
    tm_add(T.risk_c, C_EVENTS_IN, 1)
    n = risk_on_intent(X.risk, intent, intent.ts_exch, X.scratch.risk_out, 0)
    if n == 0:
        tm_add(T.risk_c, C_REJECTS, 1)
    _service(T.risk_h, t0)
    return _risk_orders_out(X, X.scratch.risk_out, n)


@njit(cache=True, nogil=True)
def deliver_state_strategy(X, bs):
    """book -> strategy: a book state; the strategy may answer with one intent."""
    T = X.tm
    if X.owns[STRATEGY] == 0:
        return _push(X.rings.bs_strat_h, X.rings.bs_strat_s, bs, X.params, X.ctl, T.book_c)
    t0 = now_ns()
    hist_record(T.strat_h[H_AGE1], t0 - bs.ts_origin)
    tm_add(T.strat_c, C_EVENTS_IN, 1)
    n = strategy_on_book(X.strategy, bs, X.position, X.scratch.intent, 0)
    _service(T.strat_h, t0)
    ok = True
    for j in range(n):
        ok = deliver_intent(X, X.scratch.intent[j]) and ok
    return ok


@njit(cache=True, nogil=True)
def deliver_state_risk(X, bs):
    """book -> risk: a book state (mark to mid, staleness trips)."""
    T = X.tm
    if X.owns[RISK] == 0:
        return _push(X.rings.bs_risk_h, X.rings.bs_risk_s, bs, X.params, X.ctl, T.book_c)
    t0 = now_ns()
    hist_record(T.risk_h[H_AGE1], t0 - bs.ts_origin)
    tm_add(T.risk_c, C_EVENTS_IN, 1)
    n = risk_on_book(X.risk, bs, bs.ts_exch, X.scratch.risk_aux, 0)
    _service(T.risk_h, t0)
    return _risk_orders_out(X, X.scratch.risk_aux, n)


@njit(cache=True, nogil=True)
def deliver_event_book(X, ev):
    """feed -> book: a market event; a consistent group yields a book state for risk and the strategy."""
    T = X.tm
    if X.owns[BOOK] == 0:
        return _push(X.rings.ev_book_h, X.rings.ev_book_s, ev, X.params, X.ctl, T.feed_c)
    t0 = now_ns()
    hist_record(T.book_h[H_AGE1], t0 - ev.ts_origin)
    tm_add(T.book_c, C_EVENTS_IN, 1)
    n = book_on_event(X.book, X.trades, ev, X.scratch.bs, 0, X.params[P_STALE_NS])
    if n:
        bs = X.scratch.bs[0]
        sym = bs.symbol
        tops_on_book_state(X.tops, X.venue_of[sym], bs, bs.ts_exch)
    _service(T.book_h, t0)
    if n == 0:
        return True
    tm_add(T.book_c, C_EVENTS_OUT, 1)
    ok = deliver_state_risk(X, X.scratch.bs[0])
    return deliver_state_strategy(X, X.scratch.bs[0]) and ok


@njit(cache=True, nogil=True)
def deliver_event_venue(X, ev):
    """feed -> venue: a market event for the simulated venue's own book and resting orders."""
    T = X.tm
    if X.owns[VENUE] == 0:
        return _push(X.rings.ev_venue_h, X.rings.ev_venue_s, ev, X.params, X.ctl, T.feed_c)
    t0 = now_ns()
    hist_record(T.venue_h[H_AGE1], t0 - ev.ts_origin)
    tm_add(T.venue_c, C_EVENTS_IN, 1)
    n = venue_on_event(X.venue, X.venue_of[ev.symbol], ev, ev.ts_exch, X.scratch.rep_ev, 0)
    _service(T.venue_h, t0)
    ok = _venue_reports_out(X, X.scratch.rep_ev, n)
    return _venue_flush(X, ev.ts_exch) and ok


@njit(cache=True, nogil=True)
def _venue_flush(X, now):
    """Release every report whose latency has elapsed (the venue hands them out a bounded batch at a time)."""
    ok = True
    while True:
        n = venue_poll(X.venue, now, X.scratch.rep_ev, 0)
        if n == 0:
            return ok
        ok = _venue_reports_out(X, X.scratch.rep_ev, n) and ok


@njit(cache=True, nogil=True)
def deliver_control(X, rec):
    """supervisor -> risk: the kill switch and friends (risk answers with cancel-alls)."""
    T = X.tm
    tm_add(T.risk_c, C_EVENTS_IN, 1)
    n = risk_on_control(X.risk, rec, X.clock[0], X.scratch.risk_aux, 0)
    return _risk_orders_out(X, X.scratch.risk_aux, n)


# ---------------------------------------------------------------------------------------------------------
# the feed
# ---------------------------------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _message_end(events, start):
    """One past the last event of the message starting at ``start`` (its F_LAST_IN_GROUP event)."""
    n = events.shape[0]
    i = start
    while i < n and (events[i].flags & records.F_LAST_IN_GROUP) == 0:
        i += 1
    return min(i + 1, n)


@njit(cache=True, nogil=True)
def _load_message(X, now):
    """Put the next message into ``scratch.ev[0:n]`` stamped with its scheduled time; return n (0: not yet)."""
    fp = X.feedp
    buf = X.scratch.ev
    if fp[F_MODE] == 0:
        if fp[F_MSGS] == 0:
            fp[F_T0] = now
        sched = now if fp[F_PACE] == 2 else fp[F_T0] + fp[F_MSGS] * fp[F_PERIOD_NS]
        if now < sched:
            return 0
        n = synthetic_next(X.synth, buf, 0, sched)
        sim = (fp[F_MSGS] + 1) * fp[F_PERIOD_NS]  # deterministic exchange clock of the synthetic market
        for j in range(n):
            buf[j].ts_exch = sim
    else:
        ev = X.replay
        start = fp[F_POS]
        end = _message_end(ev, start)
        if end - start > buf.shape[0]:
            end = start + buf.shape[0]  # a group larger than the scratch goes out in pieces
        if fp[F_MSGS] == 0:
            fp[F_T0] = now
            fp[F_REC_T0] = ev[start].ts_origin
        if fp[F_PACE] == 0:
            sched = fp[F_T0] + fp[F_MSGS] * fp[F_PERIOD_NS]
        elif fp[F_PACE] == 1:
            sched = fp[F_T0] + (ev[start].ts_origin - fp[F_REC_T0])
        else:
            sched = now
        if now < sched:
            return 0
        n = end - start
        for j in range(n):
            buf[j] = ev[start + j]
        fp[F_POS] = end
    for j in range(n):
        buf[j].ts_origin = sched  # latency is measured from the scheduled time: no coordinated omission
    fp[F_SCHED] = sched
    return n


@njit(cache=True, nogil=True)
def _feed_exhausted(X):
    fp = X.feedp
    if fp[F_MAX_MSGS] > 0 and fp[F_MSGS] >= fp[F_MAX_MSGS]:
        return True
    return fp[F_MODE] == 1 and fp[F_POS] >= X.replay.shape[0]


@njit(cache=True, nogil=True)
def feed_step(X):
    """Publish at most one message. Returns events published (0: idle), or -1 when the feed is finished.

    Lockstep mode publishes each message in two phases -- to the venue, then (once the pipeline is idle)
    to the book chain -- and starts the next message only when the pipeline is idle again, so every stage
    sees the records in the same order as in a single fused worker.
    """
    fp = X.feedp
    lockstep = X.params[P_LOCKSTEP] != 0
    if lockstep and not _quiescent(X.rings):
        return 0
    buf = X.scratch.ev
    if lockstep and fp[F_PHASE] == 1:
        for j in range(fp[F_MSG_END]):
            if not deliver_event_book(X, buf[j]):
                return -1
        fp[F_PHASE] = 0
        return fp[F_MSG_END]
    if _feed_exhausted(X):
        return -1
    n = _load_message(X, now_ns())
    if n == 0:
        return 0
    X.clock[0] = buf[n - 1].ts_exch
    tm_add(X.tm.feed_c, C_EVENTS_OUT, n)
    fp[F_MSGS] += 1
    store_relaxed(X.ctl, C.FEED_SENT, fp[F_MSGS])
    t0 = now_ns()
    for j in range(n):
        if not deliver_event_venue(X, buf[j]):
            return -1
    if lockstep:
        fp[F_PHASE] = 1
        fp[F_MSG_END] = n
        _service(X.tm.feed_h, t0)
        return n
    for j in range(n):
        if not deliver_event_book(X, buf[j]):
            return -1
    _service(X.tm.feed_h, t0)
    return n


# ---------------------------------------------------------------------------------------------------------
# polling input rings (records are processed in place, then released once per batch)
# ---------------------------------------------------------------------------------------------------------
BATCH = 256  # records taken from one ring per poll: bounds how long other inputs wait


@njit(cache=True, nogil=True)
def _take(hdr):
    start, n = available(hdr)
    return start, min(n, BATCH), hdr[MASK]


@njit(cache=True, nogil=True)
def poll_ev_book(X):
    R = X.rings
    start, n, m = _take(R.ev_book_h)
    for j in range(n):
        deliver_event_book(X, R.ev_book_s[(start + j) & m])
    if n:
        release(R.ev_book_h, start + n)
    return n


@njit(cache=True, nogil=True)
def poll_ev_venue(X):
    R = X.rings
    start, n, m = _take(R.ev_venue_h)
    for j in range(n):
        ev = R.ev_venue_s[(start + j) & m]
        X.clock[0] = ev.ts_exch
        deliver_event_venue(X, ev)
    if n:
        release(R.ev_venue_h, start + n)
    return n


@njit(cache=True, nogil=True)
def poll_vorders(X):
    """Orders for the venue; the market events published before them are applied first (same order as fused)."""
    R = X.rings
    start, n, m = _take(R.vorders_h)
    if n == 0:
        return 0
    k = 0
    if X.owns[FEED] == 0:
        while True:
            got = poll_ev_venue(X)
            k += got
            if got < BATCH:
                break
    for j in range(n):
        order = R.vorders_s[(start + j) & m]
        hist_record(X.tm.venue_h[H_AGE2], now_ns() - order.ts_origin)
        tm_add(X.tm.venue_c, C_EVENTS_IN, 1)
        t0 = now_ns()
        q = venue_on_order(X.venue, order, order.ts_exch, X.scratch.rep_ord, 0)
        _service(X.tm.venue_h, t0)
        _venue_reports_out(X, X.scratch.rep_ord, q)
        _venue_flush(X, order.ts_exch)
    release(R.vorders_h, start + n)
    return n + k


@njit(cache=True, nogil=True)
def poll_bs_strat(X):
    R = X.rings
    start, n, m = _take(R.bs_strat_h)
    for j in range(n):
        deliver_state_strategy(X, R.bs_strat_s[(start + j) & m])
    if n:
        release(R.bs_strat_h, start + n)
    return n


@njit(cache=True, nogil=True)
def poll_bs_risk(X):
    R = X.rings
    start, n, m = _take(R.bs_risk_h)
    for j in range(n):
        bs = R.bs_risk_s[(start + j) & m]
        X.clock[0] = bs.ts_exch
        deliver_state_risk(X, bs)
    if n:
        release(R.bs_risk_h, start + n)
    return n


@njit(cache=True, nogil=True)
def poll_intents(X):
    """Intents for risk; the book states published before them are applied first (same order as fused)."""
    R = X.rings
    start, n, m = _take(R.intents_h)
    if n == 0:
        return 0
    k = 0
    if X.owns[BOOK] == 0:
        while True:
            got = poll_bs_risk(X)
            k += got
            if got < BATCH:
                break
    for j in range(n):
        deliver_intent(X, R.intents_s[(start + j) & m])
    release(R.intents_h, start + n)
    return n + k


@njit(cache=True, nogil=True)
def poll_rreports(X):
    R = X.rings
    start, n, m = _take(R.rreports_h)
    for j in range(n):
        deliver_risk_report(X, R.rreports_s[(start + j) & m])
    if n:
        release(R.rreports_h, start + n)
    return n


@njit(cache=True, nogil=True)
def poll_orders(X):
    R = X.rings
    start, n, m = _take(R.orders_h)
    for j in range(n):
        deliver_order(X, R.orders_s[(start + j) & m])
    if n:
        release(R.orders_h, start + n)
    return n


@njit(cache=True, nogil=True)
def poll_reports(X):
    R = X.rings
    start, n, m = _take(R.reports_h)
    for j in range(n):
        deliver_report(X, R.reports_s[(start + j) & m])
    if n:
        release(R.reports_h, start + n)
    return n


@njit(cache=True, nogil=True)
def poll_control(X):
    R = X.rings
    start, n, m = _take(R.control_h)
    for j in range(n):
        deliver_control(X, R.control_s[(start + j) & m])
    if n:
        release(R.control_h, start + n)
    return n


@njit(cache=True, nogil=True)
def poll_inputs(X):
    """Everything that arrived from other workers, report paths first (they never back-pressure)."""
    o = X.owns
    n = 0
    if o[RISK] != 0:
        n += poll_control(X)
        if o[ROUTER] == 0:
            n += poll_rreports(X)
    if o[ROUTER] != 0 and o[VENUE] == 0:
        n += poll_reports(X)
    if o[VENUE] != 0:
        if o[FEED] == 0:
            n += poll_ev_venue(X)
        if o[ROUTER] == 0:
            n += poll_vorders(X)
    if o[BOOK] != 0 and o[FEED] == 0:
        n += poll_ev_book(X)
    if o[RISK] != 0 and o[BOOK] == 0:
        n += poll_bs_risk(X)
    if o[STRATEGY] != 0 and o[BOOK] == 0:
        n += poll_bs_strat(X)
    if o[RISK] != 0 and o[STRATEGY] == 0:
        n += poll_intents(X)
    if o[ROUTER] != 0 and o[RISK] == 0:
        n += poll_orders(X)
    return n


# ---------------------------------------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def sync_risk_view(X):
    """Copy risk's reject counts, trading state, positions and PnL into its telemetry block (for top)."""
    if X.owns[RISK] == 0:
        return
    risk = X.risk
    T = X.tm
    for i in range(min(N_REJECT_REASONS, risk.rejects.shape[0])):
        store_relaxed(T.risk_c, C_REJECT_BASE + i, risk.rejects[i])
    extra = 0
    for i in range(N_REJECT_REASONS, risk.rejects.shape[0]):
        extra += risk.rejects[i]
    if extra:
        store_relaxed(T.risk_c, C_REJECT_BASE + N_REJECT_REASONS - 1, risk.rejects[N_REJECT_REASONS - 1] + extra)
    n_sym = risk.stale.shape[0]
    worst = 0
    for s in range(n_sym):
        worst = max(worst, risk_effective_state(risk, s))
    pos = risk.pos
    risk_set_state(T.risk_r, worst, risk.g[G_OPEN_TOTAL], risk.counters[RC_REJECTED], X.clock[0])
    risk_set_totals(T.risk_r, pos.totals[T_REALIZED], pos.totals[T_UNREALIZED], pos.totals[T_FEES])
    for s in range(n_sym):
        risk_set_position(T.risk_r, s, pos.position_lots[s], pos.avg_px[s], pos.realized[s], pos.unrealized[s])


@njit(cache=True, nogil=True)
def _loop_stats(X, busy, t0, t1):
    T = X.tm
    o = X.owns
    if busy:
        if o[FEED]:
            tm_busy(T.feed_c, t0, t1)
        if o[BOOK]:
            tm_busy(T.book_c, t0, t1)
        if o[STRATEGY]:
            tm_busy(T.strat_c, t0, t1)
        if o[RISK]:
            tm_busy(T.risk_c, t0, t1)
        if o[ROUTER]:
            tm_busy(T.router_c, t0, t1)
        if o[VENUE]:
            tm_busy(T.venue_c, t0, t1)
    else:
        if o[FEED]:
            tm_idle(T.feed_c)
        if o[BOOK]:
            tm_idle(T.book_c)
        if o[STRATEGY]:
            tm_idle(T.strat_c)
        if o[RISK]:
            tm_idle(T.risk_c)
        if o[ROUTER]:
            tm_idle(T.router_c)
        if o[VENUE]:
            tm_idle(T.venue_c)


@njit(cache=True, nogil=True)
def _heartbeat(X, now):
    store_relaxed(X.ctl, C.worker_word(X.params[P_WORKER], C.W_HEARTBEAT), now)
    T = X.tm
    o = X.owns
    if o[FEED]:
        tm_heartbeat(T.feed_c, now)
    if o[BOOK]:
        tm_heartbeat(T.book_c, now)
    if o[STRATEGY]:
        tm_heartbeat(T.strat_c, now)
    if o[RISK]:
        tm_heartbeat(T.risk_c, now)
    if o[ROUTER]:
        tm_heartbeat(T.router_c, now)
    if o[VENUE]:
        tm_heartbeat(T.venue_c, now)


@njit(cache=True, nogil=True)
def run_loop(X, max_loops):
    """The worker's busy-poll loop; returns the number of iterations it ran.

    Leaves when STOP is set (or after ``max_loops`` iterations when > 0: warm-up and tests). A dead worker
    elsewhere sets HALT: the router then sends nothing more (:func:`deliver_venue_order`), the rest drains.
    """
    ctl = X.ctl
    w = X.params[P_WORKER]
    o = X.owns
    idle = 0
    loops = 0
    feed_live = o[FEED] != 0
    while True:
        if load_relaxed(ctl, C.STOP) != 0:
            break
        if max_loops > 0 and loops >= max_loops:
            break
        loops += 1
        t0 = now_ns()
        n = 0
        if feed_live:
            if load_relaxed(ctl, C.STOP_FEED) != 0:
                feed_live = False
            else:
                r = feed_step(X)
                if r < 0:
                    feed_live = False
                    store_relaxed(ctl, C.FEED_DONE, 1)
                else:
                    n += r
        n += poll_inputs(X)
        if o[RISK] != 0:
            m = risk_poll(X.risk, X.clock[0], X.scratch.risk_aux, 0)
            if m:
                _risk_orders_out(X, X.scratch.risk_aux, m)
                n += m
        if n == 0:
            idle += 1
            _loop_stats(X, False, t0, t0)
            if (idle & 1023) == 1:
                _heartbeat(X, t0)
                sync_risk_view(X)
            _wait(X.params, idle)
        else:
            idle = 0
            t1 = now_ns()
            _loop_stats(X, True, t0, t1)
            if (loops & (HEARTBEAT_EVERY - 1)) == 0:
                _heartbeat(X, t1)
                sync_risk_view(X)
        store_relaxed(ctl, C.worker_word(w, C.W_LOOPS), loops)
    _heartbeat(X, now_ns())
    sync_risk_view(X)
    return loops
