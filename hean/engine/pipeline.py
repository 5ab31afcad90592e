"""The worker loop: one numba function that runs any group of the pipeline's stages.

The pipeline is the ordered registry of stages (:mod:`hean.stages.registry`); this module is the engine's own
part of every worker's loop: the pass over the stages it owns, waiting, lockstep quiescence, heartbeats, the
supervisor checks and control. The stage-specific glue -- the worker's state type, one call of each stage's
step with its ports, the sums over every ring -- is generated from the registry by
:mod:`hean.engine.loopgen` into a module beside the cache, together with :data:`LOOP_SOURCE` below, so the
loop stays one compiled function whatever the stages are.

Every edge of the topology is an SPSC ring: a shared-memory ring when its two stages run in different workers,
a *private* ring (the same layout and operations over process-local memory) when they run in the same worker.
Each stage's step takes records from its input ports and publishes into its output ports
(:mod:`hean.stages.declare`); a worker's loop calls the steps of the stages it owns, in pipeline order. So the
fused placement and the one-process-per-stage placement run the same compiled code with the same ordering
rules -- the reason they produce identical orders and fills in lockstep mode.

Back-pressure without blocking: a step takes an input record only when each of its output rings has room for
everything that record can produce (a shortage is counted as a ring-full event). A step never waits on a
full ring, so a worker keeps serving its other inputs: the order/report cycle cannot deadlock, and a fused
worker cannot wait on itself. A record is released only after it has been processed and its outputs
published, so "every ring empty" means "nothing in flight".

Ordering rules (the same in every placement): the venue applies every market event it has been given before
an order; risk applies every book state it has been given before an intent; in lockstep mode
(``engine.lockstep``) the source publishes one message, and the next only when the pipeline is idle again
(:func:`quiescent`, generated with the glue).

How each function is compiled (:mod:`hean.jit`): ``run_loop`` is the one the worker calls from Python
(``entry``); the steps take the stages' state tuples by value, and a non-inlined call copies every array
descriptor of a tuple (~100+ ns), so they are LLVM-inlined (``forceinline``) and the loop is one function;
the thin glue between ``run_loop`` and the steps is inlined by numba itself (``inline``).
"""

from __future__ import annotations

from hean.atomics import cpu_pause, eventfd_signal, getppid, load_relaxed, nanosleep, sched_yield, store_relaxed
from hean.engine import control as C
from hean.jit import kernel
from hean.telemetry.block import C_BUSY_LOOPS, C_IDLE_LOOPS, tm_add, tm_busy, tm_heartbeat

# wait strategies
W_SPIN, W_YIELD, W_SLEEP = 0, 1, 2
WAIT_CODES = {"spin": W_SPIN, "yield": W_YIELD, "sleep": W_SLEEP}
HEARTBEAT_EVERY = 256  # busy loop iterations between heartbeats (idle ones beat every 1024)
# An untimed lockstep run (a replay: its time comes from its records, the wall clock only stamps telemetry)
# reads the clock once every this many busy passes, and records its busy passes in batches at heartbeats.
COARSE_CLOCK_EVERY = 64
# a busy heartbeat falls on a pass that read the clock: the beat and the supervisor's check see fresh time
assert HEARTBEAT_EVERY % COARSE_CLOCK_EVERY == 0
# tm_pass's ``busy``: one idle record of ``t0`` passes / one busy pass from ``t0`` to ``t1`` / ``t0`` untimed
# busy passes ending at ``t1``
PASS_IDLE, PASS_BUSY, PASS_BUSY_BATCH = 0, 1, 2

# params (int64) indices
P_WORKER = 0  # this worker's index
P_WAIT = 1  # W_*
P_SPIN_YIELD = 2  # idle polls before yielding
P_SPIN_SLEEP = 3  # idle polls before sleeping
P_SLEEP_NS = 4
P_LOCKSTEP = 5  # 1: deterministic lockstep
P_UNTIMED = 6  # 1: no latency histograms: one clock read per pass, or per COARSE_CLOCK_EVERY in lockstep
P_LEAVE_IDLE = 7  # > 0: leave the loop after this many idle passes in a row once the source is done (an
#                   in-process backtest's end: it returns to its caller to be checked, not after max_loops)
P_SUPERVISOR = 8  # the supervisor's pid: the worker's parent (0: no supervisor, e.g. an in-process backtest)
P_SUP_TIMEOUT_NS = 9  # the supervisor's heartbeat older than this: it is stopped or hung
P_SUP_TID = 10  # the thread id holding the supervisor's life lock (0: the lock is not used)
P_NOTIFY_FD = 11  # an eventfd the supervisor waits on: signalled when the source is done (-1: none)
P_LEN = 12
# A worker that lost its supervisor halts every router at once, stops the feed, and leaves its loop once its
# rings are empty -- or after this long, when a peer that would drain them is gone too.
ORPHAN_DRAIN_NS = 500_000_000


@kernel(forceinline=True, error_model="numpy")
def others_idle(ctl, me):
    """Every other worker has done nothing since it last found all its rings empty."""
    for w in range(ctl[C.N_WORKERS]):
        if w == me or ctl[C.worker_word(w, C.W_BACKGROUND)] != 0:
            continue
        if load_relaxed(ctl, C.worker_word(w, C.W_ACTIVITY)) != load_relaxed(ctl, C.worker_word(w, C.W_IDLE_AT)):
            return False
    return True


@kernel(forceinline=True, error_model="numpy")
def activity(ctl):
    """The sum of every worker's ACTIVITY word: it changes whenever any worker publishes or releases."""
    total = 0
    for w in range(ctl[C.N_WORKERS]):
        total += load_relaxed(ctl, C.worker_word(w, C.W_ACTIVITY))
    return total


@kernel(forceinline=True, error_model="numpy")
def wait_step(params, idle):
    """One idle step of the worker's wait strategy, after ``idle`` consecutive idle polls."""
    mode = params[P_WAIT]
    if mode == W_SPIN or idle < params[P_SPIN_YIELD]:
        cpu_pause()
    elif mode == W_YIELD or idle < params[P_SPIN_SLEEP]:
        sched_yield()
    else:
        nanosleep(params[P_SLEEP_NS])


@kernel(forceinline=True, error_model="numpy")
def tm_pass(counters, busy, t0, t1, beat):
    """Loop statistics and the heartbeat into one owned stage's block (``busy``: PASS_BUSY, one busy pass
    from t0 to t1; PASS_BUSY_BATCH, ``t0`` untimed busy passes; PASS_IDLE, ``t0`` idle passes)."""
    if busy == PASS_BUSY:
        tm_busy(counters, t0, t1)
    elif busy == PASS_BUSY_BATCH:
        tm_add(counters, C_BUSY_LOOPS, t0)
        tm_heartbeat(counters, t1)
    else:
        tm_add(counters, C_IDLE_LOOPS, t0)
    if beat:
        tm_heartbeat(counters, t1)


@kernel(forceinline=True, error_model="numpy")
def source_may_run(ctl):
    """0: not yet (START not set); 1: run the source; -1: stop it for good (STOP_FEED: the drain began)."""
    if load_relaxed(ctl, C.START) == 0:
        return 0
    if load_relaxed(ctl, C.STOP_FEED) != 0:
        return -1
    return 1


@kernel(forceinline=True, error_model="numpy")
def source_done(ctl, params):
    """The source has published everything it will: the supervisor ends the run once the pipeline drains. It
    waits on an eventfd as well as on its workers' exits: signalled, it sees the end at once, not at its next
    look (a quarter second later at most)."""
    store_relaxed(ctl, C.FEED_DONE, 1)
    if params[P_NOTIFY_FD] >= 0:
        eventfd_signal(params[P_NOTIFY_FD])


@kernel(forceinline=True, error_model="numpy")
def supervisor_lost(params, ctl, now):
    """True when this worker's supervisor is dead -- its life lock lost its owner (the kernel marks it at the
    start of the supervisor's exit), or, where no life lock could be taken, the worker's parent is no longer
    its pid (the kernel reparents once the supervisor's memory is freed: 10-35 ms later here) -- or has not
    heart-beaten for longer than the timeout (stopped or hung). Checked at every heartbeat.

    Takes the worker's arrays, never the worker tuple: a function compiled here for a pipeline's ``Worker``
    type would put that type -- and so its stages' modules -- into this module's numba cache index, which
    every later run unpickles whole (a run of another pipeline would then need those modules)."""
    sup = params[P_SUPERVISOR]
    if sup == 0:
        return False
    tid = params[P_SUP_TID]
    if tid != 0:  # the robust mutex's word holds its owner's thread id until the owner dies: one load
        if (load_relaxed(ctl, C.LIFE_LOCK) & C.FUTEX_TID_MASK) != tid:
            return True
    elif getppid() != sup:  # without the lock: a syscall (222 ns on the development VM)
        return True
    return now - load_relaxed(ctl, C.SUP_BEAT) > params[P_SUP_TIMEOUT_NS]


@kernel(forceinline=True, error_model="numpy")
def orphaned(params, ctl, now):
    """The supervisor is gone: nothing may trade. HALT every router (this worker's on its next pass, the
    others' as soon as they read the control block), stop the feed, and say why; the loop then drains."""
    w = params[P_WORKER]
    store_relaxed(ctl, C.HALT, 1)
    store_relaxed(ctl, C.STOP_FEED, 1)
    store_relaxed(ctl, C.worker_word(w, C.W_ERROR), C.ERR_SUPERVISOR_LOST)
    store_relaxed(ctl, C.worker_word(w, C.W_ORPHANED_NS), now)


# The engine's loop, as source the generator puts beside each pipeline's glue (hean.engine.loopgen): it calls
# the generated ``step_all``, ``each_owned``, ``views``, ``all_empty`` and ``writes``.
LOOP_SOURCE = '''
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
    if W.ctl[C.N_WORKERS] == 1:  # alone (a backtest, a fused run): nothing moves while this thread looks
        return all_empty(R)
    me = W.params[P_WORKER]
    a1 = activity(W.ctl)
    w1 = writes(R)
    if not (all_empty(R) and others_idle(W.ctl, me)):
        return False
    return all_empty(R) and others_idle(W.ctl, me) and writes(R) == w1 and activity(W.ctl) == a1


@entry(error_model="numpy")
def run_loop(W, max_loops):
    """The worker's busy-poll loop; returns the number of iterations it ran.

    Leaves when STOP is set (or after ``max_loops`` iterations when > 0: warm-up and tests; or, with
    P_LEAVE_IDLE, once the source is done and that many passes in a row found nothing to do). HALT (a dead
    worker elsewhere) makes the router refuse every later order: nothing more leaves it. At every heartbeat
    the worker checks its supervisor; without one it halts order flow and leaves once drained
    (ORPHAN_DRAIN_NS at most), with ERR_SUPERVISOR_LOST in its error word.
    """
    ctl = W.ctl
    w = W.params[P_WORKER]
    idle = 0
    loops = 0
    live = True  # the source (when this worker runs it) may still publish
    lockstep = W.params[P_LOCKSTEP] != 0
    mode = (F_LOCKSTEP if lockstep else np.int64(0)) | (F_UNTIMED if W.params[P_UNTIMED] != 0 else np.int64(0))
    timed = W.params[P_UNTIMED] == 0
    coarse = lockstep and not timed  # the clock every COARSE_CLOCK_EVERY busy passes, busy passes batched
    busy_acc = 0  # untimed busy passes not yet added to the stages' counters
    leave_idle = W.params[P_LEAVE_IDLE]
    idle_acc = 0  # idle passes not yet added to the stages' counters (added in batches: cheaper idle pass)
    orphaned_at = 0  # when the supervisor was found gone (0: it is not)
    t0 = now_ns()
    while load_relaxed(ctl, C.STOP) == 0 and (max_loops <= 0 or loops < max_loops):
        loops += 1
        if not coarse or idle != 0 or (loops & (COARSE_CLOCK_EVERY - 1)) == 0:
            t0 = now_ns()
        flags = mode | (F_HALTED if load_relaxed(ctl, C.HALT) != 0 else np.int64(0))
        n, live = step_all(W, live, t0, flags)
        beat = False
        if n == 0:
            idle += 1
            idle_acc += 1
            if lockstep and all_empty(W.rings):  # nothing of this worker in flight (see quiescent)
                store_relaxed(ctl, C.worker_word(w, C.W_IDLE_AT), load_relaxed(ctl, C.worker_word(w, C.W_ACTIVITY)))
            if (idle & 1023) == 1:
                beat = True
                if busy_acc:
                    each_owned(W, PASS_BUSY_BATCH, busy_acc, t0, False)
                    busy_acc = 0
                each_owned(W, PASS_IDLE, idle_acc, t0, True)
                idle_acc = 0
                store_relaxed(ctl, C.worker_word(w, C.W_HEARTBEAT), t0)
                store_relaxed(ctl, C.worker_word(w, C.W_LOOPS), loops)
                views(W, t0)
            if orphaned_at != 0 and (all_empty(W.rings) or t0 - orphaned_at > ORPHAN_DRAIN_NS):
                break  # drained (or a peer that would drain it is gone): leave
            if leave_idle > 0 and idle >= leave_idle and load_relaxed(ctl, C.FEED_DONE) != 0:
                break  # the caller checks that the pipeline drained
            wait_step(W.params, idle)
        else:
            idle = 0
            t1 = now_ns() if timed else t0
            beat = (loops & (HEARTBEAT_EVERY - 1)) == 0
            if idle_acc:
                each_owned(W, PASS_IDLE, idle_acc, t1, False)
                idle_acc = 0
            if not coarse:
                each_owned(W, PASS_BUSY, t0, t1, beat)
            else:
                busy_acc += 1
                if beat:
                    each_owned(W, PASS_BUSY_BATCH, busy_acc, t1, True)
                    busy_acc = 0
            if beat:
                store_relaxed(ctl, C.worker_word(w, C.W_HEARTBEAT), t1)
                store_relaxed(ctl, C.worker_word(w, C.W_LOOPS), loops)
                views(W, t1)
            if orphaned_at != 0 and t1 - orphaned_at > ORPHAN_DRAIN_NS:
                break
        if beat and orphaned_at == 0 and supervisor_lost(W.params, ctl, t0):
            orphaned_at = now_ns()  # after this pass's orders: none leaves from here on
            orphaned(W.params, ctl, orphaned_at)
    if busy_acc:
        each_owned(W, PASS_BUSY_BATCH, busy_acc, t0, False)
    if idle_acc:
        each_owned(W, PASS_IDLE, idle_acc, t0, False)
    store_relaxed(ctl, C.worker_word(w, C.W_LOOPS), loops)
    now = now_ns()
    store_relaxed(ctl, C.worker_word(w, C.W_HEARTBEAT), now)
    views(W, now)
    return loops
'''
