"""The worker loop: one numba function that runs any adjacent group of stages.

Every edge of the topology (:mod:`hean.engine.topology`) is an SPSC ring: a shared-memory ring when its two
stages run in different workers, a *private* ring (the same layout and operations over process-local numpy
arrays: no other core ever touches those lines) when they run in the same worker. Each stage is one
``*_step`` function that takes records from its input rings and publishes into its output rings; a worker's
loop calls the steps of the stages it owns, in pipeline order. So the fused placement and the
one-process-per-stage placement run the same compiled code with the same ordering rules -- the reason they
produce identical orders and fills in lockstep mode -- and every step function is small enough to compile
quickly and to cache (``cache=True``) on its own.

Back-pressure without blocking: a step takes an input record only when each of its output rings has room
for everything that record can produce (claimed with :func:`hean.rings.spsc.claim_upto`; a shortage is
counted as a ring-full event). A step never waits on a full ring, so a worker keeps serving its other
inputs: the order/report cycle (risk -> router -> venue -> router -> risk) cannot deadlock, and a fused
worker cannot wait on itself. A record is released only after it has been processed and its outputs
published, so "every ring empty" means "nothing in flight".

Ordering rules (the same in every placement):

* the venue applies every market event it has been given before an order (orders are matched against the
  book as it was when they were sent);
* risk applies every book state it has been given before an intent (marks and staleness first);
* lockstep mode (``engine.lockstep``) publishes each feed message in two phases -- to the venue, then,
  once the pipeline is idle, to the book chain -- and the next message only when it is idle again.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from hean.atomics import (
    cpu_pause,
    getppid,
    load_relaxed,
    nanosleep,
    now_ns,
    sched_yield,
    store_relaxed,
)
from hean.engine import control as C
from hean.jit import entry, kernel
from hean.rings.layout import WRITE
from hean.stages.book import book_step
from hean.stages.declare import F_HALTED, F_LOCKSTEP
from hean.stages.feed import feed_step
from hean.stages.ports import (
    Port,
    StageTm,
    empty,
)
from hean.stages.risk import risk_step, risk_view
from hean.stages.router import router_step, router_view
from hean.stages.strategy import strategy_step
from hean.stages.venue import venue_step
from hean.telemetry.block import (
    C_IDLE_LOOPS,
    tm_add,
    tm_busy,
    tm_heartbeat,
)

# How each function here is compiled (hean.jit): ``run_loop`` is the one the worker calls from Python
# (``entry``); the step functions take the stages' state tuples by value, and a non-inlined call copies every
# array descriptor of the tuple (~100+ ns), so they are LLVM-inlined (``forceinline``) and the worker loop is
# one function; the thin functions between ``run_loop`` and the steps are inlined by numba itself
# (``inline``), never compiled on their own. ``error_model="numpy"``: no ZeroDivisionError checks.

# stage indices (hean.engine.config.STAGES order)
FEED, BOOK, STRATEGY, RISK, ROUTER, VENUE = 0, 1, 2, 3, 4, 5

# wait strategies
W_SPIN, W_YIELD, W_SLEEP = 0, 1, 2
WAIT_CODES = {"spin": W_SPIN, "yield": W_YIELD, "sleep": W_SLEEP}
HEARTBEAT_EVERY = 256  # busy loop iterations between heartbeats (idle ones beat every 1024)

# params (int64) indices
P_WORKER = 0  # this worker's index
P_WAIT = 1  # W_*
P_SPIN_YIELD = 2  # idle polls before yielding
P_SPIN_SLEEP = 3  # idle polls before sleeping
P_SLEEP_NS = 4
P_LOCKSTEP = 5  # 1: deterministic lockstep
# 6: free (the book's stale window is the book stage's own state)
P_HALTED = 7  # this worker has applied HALT to its router
P_SUPERVISOR = 8  # the supervisor's pid: the worker's parent (0: no supervisor, e.g. an in-process backtest)
P_SUP_TIMEOUT_NS = 9  # the supervisor's heartbeat older than this: it is stopped or hung
P_SUP_TID = 10  # the thread id holding the supervisor's life lock (0: the lock is not used)
P_LEN = 11
# A worker that lost its supervisor halts every router at once, stops the feed, and leaves its loop once its
# rings are empty -- or after this long, when a peer that would drain them is gone too.
ORPHAN_DRAIN_NS = 500_000_000



class Rings(NamedTuple):
    """Every edge of the topology (shared-memory, private, or an unused stand-in)."""

    ev_book: Port
    ev_venue: Port
    bs_strat: Port
    bs_risk: Port
    intents: Port
    orders: Port
    vorders: Port
    reports: Port
    rreports: Port
    control: Port


class Worker(NamedTuple):
    params: np.ndarray
    ctl: np.ndarray
    owns: np.ndarray  # int64[6]
    clock: np.ndarray  # int64[6]: each stage's simulated exchange clock (the latest ts_exch it applied)
    rings: Rings
    feed: object  # hean.stages.feed.FeedState
    book: object  # hean.stages.book.BookStage
    strategy: object  # hean.stages.strategy.StrategyStage
    risk: object  # hean.stages.risk.RiskStage
    router: object  # hean.stages.router.RouterStage
    venue: object  # hean.stages.venue.VenueStage
    tm_feed: StageTm
    tm_book: StageTm
    tm_strategy: StageTm
    tm_risk: StageTm
    tm_router: StageTm
    tm_venue: StageTm


@kernel(forceinline=True, error_model="numpy")
def _writes(R):
    """Sum of every ring's WRITE cursor: changes whenever anything is published anywhere."""
    return (
        load_relaxed(R.ev_book.hdr, WRITE) + load_relaxed(R.ev_venue.hdr, WRITE)
        + load_relaxed(R.bs_strat.hdr, WRITE) + load_relaxed(R.bs_risk.hdr, WRITE)
        + load_relaxed(R.intents.hdr, WRITE) + load_relaxed(R.orders.hdr, WRITE)
        + load_relaxed(R.vorders.hdr, WRITE) + load_relaxed(R.reports.hdr, WRITE)
        + load_relaxed(R.rreports.hdr, WRITE)
    )  # fmt: skip


@kernel(forceinline=True, error_model="numpy")
def _all_empty(R):
    return (
        empty(R.ev_book) and empty(R.ev_venue) and empty(R.bs_strat) and empty(R.bs_risk)
        and empty(R.intents) and empty(R.orders) and empty(R.vorders) and empty(R.reports)
        and empty(R.rreports)
    )  # fmt: skip


@kernel(forceinline=True, error_model="numpy")
def _others_idle(ctl, me):
    """Every other worker has done nothing since it last found all its rings empty."""
    for w in range(ctl[C.N_WORKERS]):
        if w == me:
            continue
        if load_relaxed(ctl, C.worker_word(w, C.W_ACTIVITY)) != load_relaxed(ctl, C.worker_word(w, C.W_IDLE_AT)):
            return False
    return True


@kernel(forceinline=True, error_model="numpy")
def _activity(ctl):
    total = 0
    for w in range(ctl[C.N_WORKERS]):
        total += load_relaxed(ctl, C.worker_word(w, C.W_ACTIVITY))
    return total


@kernel(forceinline=True, error_model="numpy")
def quiescent(W):
    """Nothing in flight anywhere: this worker's rings empty and every other worker idle, twice, with no
    activity anywhere in between.

    Consumers release a record only after processing it and publishing its outputs, and every publish and
    release is preceded by a bump of the worker's ACTIVITY word, so "ACTIVITY == IDLE_AT" for a worker means
    none of its rings (shared or private) holds unfinished work; the second collection rules out a record
    that moved on while the first was taken.
    """
    R = W.rings
    me = W.params[P_WORKER]
    a1 = _activity(W.ctl)
    w1 = _writes(R)
    if not (_all_empty(R) and _others_idle(W.ctl, me)):
        return False
    return _all_empty(R) and _others_idle(W.ctl, me) and _writes(R) == w1 and _activity(W.ctl) == a1


# ---------------------------------------------------------------------------------------------------------
# book
# ---------------------------------------------------------------------------------------------------------
# ---------------------------------------------------------------------------------------------------------
# strategy
# ---------------------------------------------------------------------------------------------------------
# ---------------------------------------------------------------------------------------------------------
# risk
# ---------------------------------------------------------------------------------------------------------


@kernel(forceinline=True, error_model="numpy")
def sync_views(W):
    """Reject counts, risk state, positions and PnL into the telemetry blocks (for top and the summary)."""
    if W.owns[RISK]:
        risk_view(W.risk, W.tm_risk, np.int64(0))
    if W.owns[ROUTER]:
        router_view(W.router, W.tm_router, np.int64(0))


# ---------------------------------------------------------------------------------------------------------
# router
# ---------------------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------------------
# venue
# ---------------------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------------------------------------
@kernel(forceinline=True, error_model="numpy")
def _wait(params, idle):
    """One idle step of the worker's wait strategy, after ``idle`` consecutive idle polls."""
    mode = params[P_WAIT]
    if mode == W_SPIN or idle < params[P_SPIN_YIELD]:
        cpu_pause()
    elif mode == W_YIELD or idle < params[P_SPIN_SLEEP]:
        sched_yield()
    else:
        nanosleep(params[P_SLEEP_NS])


@kernel(forceinline=True, error_model="numpy")
def _each_owned(W, busy, t0, t1, beat):
    """Loop statistics and heartbeats into the block of every stage this worker runs (busy: one busy
    pass from t0 to t1; idle: ``t0`` idle passes)."""
    o = W.owns
    for i in range(6):
        if o[i] == 0:
            continue
        if i == FEED:
            c = W.tm_feed.counters
        elif i == BOOK:
            c = W.tm_book.counters
        elif i == STRATEGY:
            c = W.tm_strategy.counters
        elif i == RISK:
            c = W.tm_risk.counters
        elif i == ROUTER:
            c = W.tm_router.counters
        else:
            c = W.tm_venue.counters
        if busy:
            tm_busy(c, t0, t1)
        else:
            tm_add(c, C_IDLE_LOOPS, t0)
        if beat:
            tm_heartbeat(c, t1)


@kernel(inline=True, error_model="numpy")
def do_feed(W, feed_live, now):
    """The feed's part of a pass: (events published, feed still live)."""
    if feed_live and load_relaxed(W.ctl, C.START) != 0:  # the feed starts once every worker is ready
        if load_relaxed(W.ctl, C.STOP_FEED) != 0:
            return 0, False
        lockstep = W.params[P_LOCKSTEP] != 0
        if lockstep and not quiescent(W):  # lockstep: one message in flight at a time
            return 0, True
        flags = F_LOCKSTEP if lockstep else np.int64(0)
        R = W.rings
        r = feed_step(W.feed, (), ((R.ev_book,), (R.ev_venue,)), W.tm_feed, now, flags)
        if r < 0:
            store_relaxed(W.ctl, C.FEED_DONE, 1)
            return 0, False
        return r, True
    return 0, feed_live


@kernel(inline=True, error_model="numpy")
def do_book(W):
    R = W.rings
    return book_step(W.book, (R.ev_book,), ((R.bs_strat, R.bs_risk),), W.tm_book, np.int64(0), np.int64(0))


@kernel(inline=True, error_model="numpy")
def do_strategy(W):
    R = W.rings
    return strategy_step(W.strategy, (R.bs_strat,), ((R.intents,),), W.tm_strategy, np.int64(0), np.int64(0))


@kernel(inline=True, error_model="numpy")
def do_risk(W):
    R = W.rings
    return risk_step(W.risk, (R.bs_risk, R.intents, R.rreports, R.control), ((R.orders,),), W.tm_risk,
                     np.int64(0), np.int64(0))  # fmt: skip


@kernel(inline=True, error_model="numpy")
def do_router(W):
    R = W.rings
    flags = F_HALTED if load_relaxed(W.ctl, C.HALT) != 0 else np.int64(0)
    return router_step(W.router, (R.orders, R.reports), ((R.vorders,), (R.rreports,)), W.tm_router, np.int64(0), flags)


@kernel(inline=True, error_model="numpy")
def do_venue(W):
    R = W.rings
    return venue_step(W.venue, (R.ev_venue, R.vorders), ((R.reports,),), W.tm_venue, np.int64(0), np.int64(0))


# each stage's part of a pass, by stage index: what hean.engine.warm compiles ahead, one stage at a time
STAGE_PASSES = (do_feed, do_book, do_strategy, do_risk, do_router, do_venue)


@kernel(inline=True, error_model="numpy")
def step_all(W, feed_live, now):
    """One pass over the worker's stages in pipeline order; returns (records handled, feed still live)."""
    o = W.owns
    n, feed_live = do_feed(W, feed_live, now)
    if o[BOOK]:
        n += do_book(W)
    if o[STRATEGY]:
        n += do_strategy(W)
    if o[RISK]:
        n += do_risk(W)
    if o[ROUTER]:
        n += do_router(W)
    # the venue last: it stands for the exchange, off the tick-to-trade path (the order left the router)
    if o[VENUE]:
        n += do_venue(W)
    return n, feed_live


@kernel(forceinline=True, error_model="numpy")
def supervisor_lost(W, now):
    """True when this worker's supervisor is dead -- its life lock lost its owner (the kernel marks it at the
    start of the supervisor's exit), or, where no life lock could be taken, the worker's parent is no longer
    its pid (the kernel reparents once the supervisor's memory is freed: 10-35 ms later here) -- or has not
    heart-beaten for longer than the timeout (stopped or hung). Checked at every heartbeat."""
    sup = W.params[P_SUPERVISOR]
    if sup == 0:
        return False
    tid = W.params[P_SUP_TID]
    if tid != 0:  # the robust mutex's word holds its owner's thread id until the owner dies: one load
        if (load_relaxed(W.ctl, C.LIFE_LOCK) & C.FUTEX_TID_MASK) != tid:
            return True
    elif getppid() != sup:  # without the lock: a syscall (222 ns on the development VM)
        return True
    return now - load_relaxed(W.ctl, C.SUP_BEAT) > W.params[P_SUP_TIMEOUT_NS]


@kernel(forceinline=True, error_model="numpy")
def _orphaned(W, now):
    """The supervisor is gone: nothing may trade. HALT every router (this worker's on its next pass, the
    others' as soon as they read the control block), stop the feed, and say why; the loop then drains."""
    ctl = W.ctl
    w = W.params[P_WORKER]
    store_relaxed(ctl, C.HALT, 1)
    store_relaxed(ctl, C.STOP_FEED, 1)
    store_relaxed(ctl, C.worker_word(w, C.W_ERROR), C.ERR_SUPERVISOR_LOST)
    store_relaxed(ctl, C.worker_word(w, C.W_ORPHANED_NS), now)


@entry(error_model="numpy")
def run_loop(W, max_loops):
    """The worker's busy-poll loop; returns the number of iterations it ran.

    Leaves when STOP is set (or after ``max_loops`` iterations when > 0: warm-up and tests). HALT (a dead
    worker elsewhere) makes the router refuse every later order: nothing more leaves it. At every heartbeat
    the worker checks its supervisor; without one it halts order flow and leaves once drained
    (:data:`ORPHAN_DRAIN_NS` at most), with ``ERR_SUPERVISOR_LOST`` in its error word.
    """
    ctl = W.ctl
    w = W.params[P_WORKER]
    idle = 0
    loops = 0
    feed_live = W.owns[FEED] != 0
    lockstep = W.params[P_LOCKSTEP] != 0
    idle_acc = 0  # idle passes not yet added to the stages' counters (added in batches: cheaper idle pass)
    orphaned_at = 0  # when the supervisor was found gone (0: it is not)
    while load_relaxed(ctl, C.STOP) == 0 and (max_loops <= 0 or loops < max_loops):
        loops += 1
        t0 = now_ns()
        n, feed_live = step_all(W, feed_live, t0)
        beat = False
        if n == 0:
            idle += 1
            idle_acc += 1
            if lockstep and _all_empty(W.rings):  # nothing of this worker in flight (see quiescent)
                store_relaxed(ctl, C.worker_word(w, C.W_IDLE_AT), load_relaxed(ctl, C.worker_word(w, C.W_ACTIVITY)))
            if (idle & 1023) == 1:
                beat = True
                _each_owned(W, False, idle_acc, t0, True)
                idle_acc = 0
                store_relaxed(ctl, C.worker_word(w, C.W_HEARTBEAT), t0)
                store_relaxed(ctl, C.worker_word(w, C.W_LOOPS), loops)
                sync_views(W)
            if orphaned_at != 0 and (_all_empty(W.rings) or t0 - orphaned_at > ORPHAN_DRAIN_NS):
                break  # drained (or a peer that would drain it is gone): leave
            _wait(W.params, idle)
        else:
            idle = 0
            t1 = now_ns()
            beat = (loops & (HEARTBEAT_EVERY - 1)) == 0
            if idle_acc:
                _each_owned(W, False, idle_acc, t1, False)
                idle_acc = 0
            _each_owned(W, True, t0, t1, beat)
            if beat:
                store_relaxed(ctl, C.worker_word(w, C.W_HEARTBEAT), t1)
                store_relaxed(ctl, C.worker_word(w, C.W_LOOPS), loops)
                sync_views(W)
            if orphaned_at != 0 and t1 - orphaned_at > ORPHAN_DRAIN_NS:
                break
        if beat and orphaned_at == 0 and supervisor_lost(W, t0):
            orphaned_at = now_ns()  # after this pass's orders: none leaves from here on
            _orphaned(W, orphaned_at)
    if idle_acc:
        _each_owned(W, False, idle_acc, t0, False)
    store_relaxed(ctl, C.worker_word(w, C.W_LOOPS), loops)
    now = now_ns()
    store_relaxed(ctl, C.worker_word(w, C.W_HEARTBEAT), now)
    sync_views(W)
    return loops
