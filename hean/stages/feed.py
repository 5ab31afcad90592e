"""The feed stage: the pipeline's source -- the synthetic market or a recording -- published on schedule.

It publishes every exchange message twice: on ``events`` to the book chain (the tick-to-trade path) and on
``market`` to the simulated venue, which stands for the exchange and applies a message's events before any
order published after them. Each message is stamped with its *scheduled* send time (``ts_origin``), so
latency counts from when it was due, not from when a late worker got to it: no coordinated omission.

Pacing (``F_PACE``): at a fixed rate, at the recording's own inter-arrival times, or unpaced.

**Deterministic mode** (the engine's ``F_LOCKSTEP`` flag: every replay, and ``engine.lockstep``; the engine
calls the step only when nothing is in flight anywhere) makes the feed the scheduler of simulated time, one
action per call, in time order:

* a message to the **venue**, at its exchange time (``ts_exch``);
* the same message to the **book chain**, at its local receive time -- the feed latency model
  (``feed.latency``: the exchange time + ``feed.latency_ns``, or the recording's own receive time) -- preceded
  on ``market`` by a CLOCK record at that time, so the orders it causes are sent, as far as the venue is
  concerned, when the strategy saw it;
* a **wake-up** of the venue (a CLOCK record), at the time its next order arrives or its next held-back
  report is released (:mod:`hean.stages.simclock`), so a report reaches the strategy before market data
  received after it, and an order caused by a report reaches the venue before market events stamped later.

Ties go to the venue's message when it is the same one or an earlier one than the chain's, then to the
chain's message (the one the strategy already waits for: so an order caused by a message reaches the venue
before a later message with the same stamp), a wake-up before the chain's message at the same time. So the
venue never applies a market event stamped after an order's arrival before that order, and the strategy
never sees a message before its receive time -- whatever the placement, batch sizes or pacing: ``--fast`` and
every placement give the same orders and fills. The synthetic market has no receive times: its messages go
to the chain at their exchange time (the venue first).

Two shortcuts keep a deterministic replay's passes down without moving a fill: a *quiet* message (one from
which the venue can make no report: book changes, prints that cannot reach a resting order) received when it
happens goes to both at once; and in an unpaced replay a message no stage acts on (TICKER only) is counted
and *passed over* -- the venue's clock it would have moved is owed and goes to the venue as one CLOCK record
before anything else does (:func:`_pass_over`, :func:`_settle`).

**Live** (``feed.source = "live"``): the stage's one input, ``live``, is a ring the supervisor's live client
(:mod:`hean.live.ingest`) fills with the events it decoded, stamped with their receive time at the socket
read (on CLOCK_MONOTONIC). The stage passes them on as they come -- to the book chain first, then the venue
-- so the ``late`` histogram is the time from the socket read to the feed. In the other modes the ring is
there and empty.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from hean import records
from hean.atomics import prefetch_read, store_relaxed
from hean.feeds.synthetic import make_synthetic, max_events_per_message, synthetic_next
from hean.jit import kernel
from hean.rings.spsc import available
from hean.stages.declare import F_LOCKSTEP, BuildContext, Stage, Stream
from hean.stages.ports import BATCH, put_all_each, put_each, put_range_each, release_to, room_each, service, slot
from hean.stages.simclock import NOTHING_DUE, print_reaches, venue_next
from hean.telemetry.block import C_EVENTS_IN, C_EVENTS_OUT, C_USER_BASE, tm_add
from hean.telemetry.histogram import hist_record

__all__ = ["FEED", "FeedState", "feed_step", "make_feed"]

_LEVEL_SET = int(records.EventKind.LEVEL_SET)
_CLEAR = int(records.EventKind.CLEAR)
_TICKER = int(records.EventKind.TICKER)
_TRADE = int(records.EventKind.TRADE)
_OUT_OF_SYNC = int(records.EventKind.OUT_OF_SYNC)


FEED_BURST = 64  # messages published per call when behind schedule (or unpaced)
# Events ahead of the one a replay's scan reads whose line it asks for: a recording is read once, from memory
# (tens of MB), and a deterministic run reads one message per pipeline pass -- too little, between the other
# stages' accesses, for the hardware's stream prefetcher to keep ahead. 32 events (2 KB) is about two passes.
SCAN_AHEAD = 32

# feed parameters and position (int64) indices
F_MODE = 0  # 0 synthetic, 1 replay, 2 live
F_PACE = 1  # 0 rate, 1 recorded, 2 fast
F_PERIOD_NS = 2  # ns between messages at the configured rate
F_MAX_MSGS = 3  # 0 = unlimited
F_POS = 4  # replay: next event index
F_MSGS = 5  # messages published
F_T0 = 6  # CLOCK_MONOTONIC ns of the first message
F_REC_T0 = 7  # replay: recorded receive time of the first message
F_PHASE = 8  # lockstep: 1 = the current message still has to go to the book chain
F_MSG_N = 9  # events in the current message (in the feed's buffer)
F_VPOS = 10  # deterministic replay: the next event index for the venue (>= F_POS: the venue gets it first)
F_VCLOCK = 11  # deterministic mode: the venue's simulated time as the feed last set it (only runs forward)
F_CCLOCK = 12  # deterministic replay: the receive time of the last message to the book chain
F_LAT_NS = 13  # feed latency, ns (latency = "constant")
F_LAT_REC = 14  # 1: the recording's own receive time (latency = "recorded")
F_LAT_OFFSET = 15  # latency = "recorded": the receive clock's offset (the smallest receive - exchange time)
F_TIMED = 16  # 1: latency histograms (engine.latency_stats): the worker's lag and the service time
F_PASS_OVER = 17  # 1: deterministic unpaced replay passes over messages no stage acts on (_pass_over)
F_VOWED = 18  # the venue's clock as the messages passed over would have set it (0: none owed; _settle)
F_LEN = 19
PACES = {"rate": 0, "recorded": 1, "fast": 2}

H_LATE = 1  # histogram row: how late each message went out (pass start minus its scheduled time)
U_MESSAGES = C_USER_BASE  # user counter: messages published (the run's progress and its message count)
U_FIRST_NS = C_USER_BASE + 1  # CLOCK_MONOTONIC ns of the first burst of messages (0: none yet)
U_LAST_NS = C_USER_BASE + 2  # ... of the latest: the publishing time is LAST - FIRST (the summary's rate)
# A live feed's counters (hean.live.ingest.LiveIngest.stats): the supervisor copies them in at each heartbeat
# (the only writer of these words; aligned int64 stores), `hean top` reads them. The stage never touches them.
LIVE_COUNTERS = (
    "live_frames",
    "live_connects",
    "live_disconnects",
    "live_silences",
    "live_gaps",
    "live_malformed",
    "live_exchange_errors",
    "live_rate_limited",
    "live_snapshots",
    "live_resyncs",
    "live_ring_full",
    "live_stale_symbols",
    "live_stale_windows",
    "live_unrouted",
)


class FeedState(NamedTuple):
    fp: np.ndarray  # int64[F_LEN]
    synth: object  # hean.feeds.synthetic.SyntheticState
    replay: np.ndarray  # MARKET_EVENT[]: the recording (empty for the synthetic feed)
    buf: np.ndarray  # MARKET_EVENT[]: the message being published (its size bounds a message's piece)
    tick: np.ndarray  # MARKET_EVENT[1]: a CLOCK record
    sim: np.ndarray  # the simclock view: the venue's next due time (hean.stages.simclock)


@kernel(error_model="numpy")
def _message_end(events, start):
    """One past the last event of the message starting at ``start`` (its F_LAST_IN_GROUP event)."""
    n = events.shape[0]
    i = start
    while i < n and (events[i].flags & records.F_LAST_IN_GROUP) == 0:
        i += 1
    return min(i + 1, n)


@kernel(forceinline=True, error_model="numpy")
def _load_message(F, now):
    """The next message into ``F.buf[0:n]``, stamped with its scheduled send time; n (0: not due yet)."""
    fp = F.fp
    buf = F.buf
    if fp[F_MODE] == 0:
        if fp[F_MSGS] == 0:
            fp[F_T0] = now
        sched = now if fp[F_PACE] == 2 else fp[F_T0] + fp[F_MSGS] * fp[F_PERIOD_NS]
        if now < sched:
            return 0
        n = synthetic_next(F.synth, buf, 0, sched)
        sim = (fp[F_MSGS] + 1) * fp[F_PERIOD_NS]  # the synthetic market's own (deterministic) clock
        for j in range(n):
            buf[j].ts_exch = sim
    else:
        ev = F.replay
        start = fp[F_POS]
        end = min(_message_end(ev, start), start + buf.shape[0])  # a huge group goes out in pieces
        sched = _replay_schedule(F, now)
        if now < sched:
            return 0
        n = end - start
        for j in range(n):
            buf[j] = ev[start + j]
        fp[F_POS] = end
    for j in range(n):
        buf[j].ts_origin = sched  # latency counts from the scheduled time: no coordinated omission
    return n


@kernel(forceinline=True, error_model="numpy")
def _replay_schedule(F, now):
    """Scheduled send time of the recording's next message (the first one fixes the schedule's origin)."""
    fp = F.fp
    if fp[F_MSGS] == 0:
        fp[F_T0] = now
        fp[F_REC_T0] = F.replay[fp[F_POS]].ts_origin
    if fp[F_PACE] == 0:
        return fp[F_T0] + fp[F_MSGS] * fp[F_PERIOD_NS]
    if fp[F_PACE] == 1:
        return fp[F_T0] + (F.replay[fp[F_POS]].ts_origin - fp[F_REC_T0])
    return now


@kernel(forceinline=True, error_model="numpy")
def _next_due(F, now):
    """Scheduled send time of the next message (without generating it): cheap enough for every idle pass."""
    fp = F.fp
    if fp[F_PACE] == 2 or fp[F_MSGS] == 0:
        return now
    if fp[F_PACE] == 0:
        return fp[F_T0] + fp[F_MSGS] * fp[F_PERIOD_NS]
    return fp[F_T0] + (F.replay[min(fp[F_POS], F.replay.shape[0] - 1)].ts_origin - fp[F_REC_T0])


@kernel(forceinline=True, error_model="numpy")
def feed_exhausted(F):
    fp = F.fp
    if fp[F_MAX_MSGS] > 0 and fp[F_MSGS] >= fp[F_MAX_MSGS]:
        return True
    return fp[F_MODE] == 1 and fp[F_POS] >= F.replay.shape[0]


@kernel(forceinline=True, error_model="numpy")
def feed_step(F, ins, outs, tm, now, flags):
    """Publish the messages due at ``now`` (at most FEED_BURST; one action in deterministic mode): events
    published (or 1 for a CLOCK), 0 when none is due, -1 when the feed is finished. ``outs``: (book chain
    ports, venue ports)."""
    fp = F.fp
    chain, market = outs
    if fp[F_MODE] == 2:
        return _live_step(F, ins[0], chain, market, tm, now)
    if not feed_exhausted(F) and _next_due(F, now) > now:
        return 0
    if (flags & F_LOCKSTEP) != 0:
        if fp[F_MODE] == 1:
            return _replay_action(F, chain, market, tm, now)
        return _synthetic_action(F, chain, market, tm, now)
    cap = F.buf.shape[0]
    total = 0
    for _ in range(FEED_BURST):
        if feed_exhausted(F):
            if total == 0:
                return -1
            break
        if not room_each(market, cap, tm.counters) or not room_each(chain, cap, tm.counters):
            break
        n = _load_message(F, now)
        if n == 0:
            break
        # the book chain first: it is the tick-to-trade path (the venue, standing for the exchange,
        # applies a message's events before any order published after them either way)
        put_all_each(chain, F.buf, n)
        put_all_each(market, F.buf, n)
        _published(F, tm, now, n, F.buf[0].ts_origin)
        total += n
    if total:
        _service(F, tm, now, total)
    return total


@kernel(error_model="numpy")
def _live_step(F, src, chain, market, tm, now):
    """Live: pass on up to a buffer of the events the live client pushed, as they came (book chain first);
    events passed, 0 when none came or there is no room (the client counts a full ``live`` ring).

    A call, not inlined: the synthetic and replay loops carry one call instruction for it, not its body."""
    if feed_exhausted(F):
        return -1
    start, n = available(src.hdr)
    n = min(n, BATCH, F.buf.shape[0])
    if n == 0:
        return 0
    if not room_each(chain, n, tm.counters) or not room_each(market, n, tm.counters):
        return 0
    buf = F.buf
    msgs = 0
    for j in range(n):
        buf[j] = slot(src, start + j)
        if (buf[j].flags & records.F_LAST_IN_GROUP) != 0:
            msgs += 1
    release_to(src, start + n)
    put_all_each(chain, buf, n)
    put_all_each(market, buf, n)
    tm_add(tm.counters, C_EVENTS_IN, n)
    fp = F.fp
    fp[F_MSGS] += msgs - 1
    _published(F, tm, now, n, buf[0].ts_origin)  # counts one message: msgs in all
    _service(F, tm, now, n)
    return n


@kernel(forceinline=True, error_model="numpy")
def _published(F, tm, now, n, sched):
    """A message of ``n`` events, scheduled at ``sched``, went to the book chain: count it."""
    if F.fp[F_TIMED] != 0:
        hist_record(tm.hists[H_LATE], now - sched)  # the worker's lag behind the schedule
    _counted(F, tm, now, n)


@kernel(forceinline=True, error_model="numpy")
def _counted(F, tm, now, n):
    """A message of ``n`` events is done with (published, or passed over): the run's progress."""
    fp = F.fp
    fp[F_MSGS] += 1
    store_relaxed(tm.counters, U_MESSAGES, fp[F_MSGS])
    if tm.counters[U_FIRST_NS] == 0:
        store_relaxed(tm.counters, U_FIRST_NS, now)
    store_relaxed(tm.counters, U_LAST_NS, now)
    tm_add(tm.counters, C_EVENTS_OUT, n)  # events published (each goes to the venue and the book)


@kernel(forceinline=True, error_model="numpy")
def _service(F, tm, now, n):
    """The service time of ``n`` events published since ``now`` -- when the run keeps latency figures."""
    if F.fp[F_TIMED] != 0:
        service(tm.hists, now, n)


@kernel(forceinline=True, error_model="numpy")
def _clock(F, market, t, now):
    """A CLOCK record at simulated time ``t`` to the venue (the caller checked the room); its time only runs
    forward."""
    fp = F.fp
    fp[F_VCLOCK] = max(fp[F_VCLOCK], t)
    _tick(F, market, max(fp[F_VCLOCK], fp[F_VOWED]), now)


@kernel(forceinline=True, error_model="numpy")
def _tick(F, market, t, now):
    """A CLOCK record at ``t`` to the venue (the caller checked the room): it settles any clock owed."""
    F.fp[F_VOWED] = 0
    r = F.tick[0]
    r.ts_exch = t
    r.ts_origin = now
    put_each(market, r)


@kernel(forceinline=True, error_model="numpy")
def _settle(F, market, now):
    """Before anything else goes to the venue: the clock the messages passed over would have set, as a
    CLOCK record (the caller checked the room for it)."""
    if F.fp[F_VOWED] != 0:
        _tick(F, market, F.fp[F_VOWED], now)


@kernel(forceinline=True, error_model="numpy")
def _wake_first(F, t, chain_next):
    """The venue's next due event comes before the action at ``t`` (``chain_next``: that action is the book
    chain's message, which a wake-up at the same time precedes)."""
    due = venue_next(F.sim)
    return due != NOTHING_DUE and (due < t or (due == t and chain_next)), due


@kernel(forceinline=True, error_model="numpy")
def _to_chain(F, chain, market, tm, now, t):
    """The next message to the book chain at receive time ``t``, after a CLOCK telling the venue that time
    (none when its clock is there already): events published, 0 without room or when not due."""
    fp = F.fp
    if not room_each(market, 1, tm.counters) or not room_each(chain, F.buf.shape[0], tm.counters):
        return 0
    n = _load_message(F, now)
    if n == 0:
        return 0
    if t != fp[F_VCLOCK]:
        _clock(F, market, t, now)
    _settle(F, market, now)
    put_all_each(chain, F.buf, n)
    _published(F, tm, now, n, F.buf[0].ts_origin)
    _service(F, tm, now, n)
    return n


@kernel(forceinline=True, error_model="numpy")
def _receive_time(F, i):
    """When the strategy side receives the recording's event ``i`` (the feed latency model, plus
    ``latency_ns``); never before the exchange time, nor before the message received before it."""
    fp = F.fp
    ev = F.replay[i]
    t = max(ev.ts_exch, ev.ts_origin - fp[F_LAT_OFFSET]) if fp[F_LAT_REC] != 0 else ev.ts_exch
    return max(t + fp[F_LAT_NS], fp[F_CCLOCK])


@kernel(forceinline=True, error_model="numpy")
def _scan(ev, start, cap, sim):
    """One look at the message starting at ``start`` (at most ``cap`` events: a huge group goes out in
    pieces), when the pipeline is quiescent: ``(end, quiet, inert, latest exchange time)``.

    *quiet*: the venue can make no report from applying it -- book changes (:mod:`hean.stages.venue`:
    LEVEL_SET, CLEAR and OUT_OF_SYNC change the book, TICKER is ignored) and prints that cannot reach a
    resting order (the venue's reach in the simclock view, ``sim``: :func:`hean.stages.simclock.print_reaches`);
    a report needs an order or a print that fills one. *inert*: no stage acts on it -- TICKER only, the
    exchange's own best bid/ask, an oracle that the book and the venue pass over (its only effect is the
    venue's clock)."""
    stop = min(ev.shape[0], start + cap)
    quiet = True
    inert = True
    t = ev[start].ts_exch
    i = start
    while i < stop:
        prefetch_read(ev, i + SCAN_AHEAD)  # the recording streams from memory: ask for it passes ahead
        e = ev[i]
        k = e.kind
        if k != _TICKER:
            inert = False
            if k == _TRADE:
                if quiet and print_reaches(sim, e.symbol, e.price, e.side):
                    quiet = False
            elif k != _LEVEL_SET and k != _CLEAR and k != _OUT_OF_SYNC:
                quiet = False
        t = max(t, e.ts_exch)
        i += 1
        if (e.flags & records.F_LAST_IN_GROUP) != 0:
            break
    return i, quiet, inert, t


@kernel(forceinline=True, error_model="numpy")
def _pass_over(F, tm, now):
    """Deterministic unpaced replay: count and pass over the next messages that no stage would act on
    (inert, :func:`_scan`) -- without a pipeline pass each: the venue's clock they would have moved is owed
    (F_VOWED) and goes to the venue as one CLOCK record before anything else does (:func:`_settle`). Only
    where the message would have gone to both at once (:func:`_replay_action`: the same message next for
    both, received when it happens, nothing due at the venue by its last event), so no action comes between.
    Events passed over."""
    fp = F.fp
    ev = F.replay
    total = 0
    for _ in range(FEED_BURST):
        pc = fp[F_POS]
        if fp[F_VPOS] != pc or pc >= ev.shape[0]:
            break
        if ev[pc].kind != _TICKER:  # (the common case, told without a look at the whole message)
            break
        end, _, inert, t_last = _scan(ev, pc, F.buf.shape[0], F.sim)
        if not inert:
            break
        t = max(ev[pc].ts_exch, fp[F_VCLOCK])
        t_chain = _receive_time(F, pc)
        due = venue_next(F.sim)
        if t != t_chain or (due != NOTHING_DUE and due <= max(t, t_last)):
            break
        fp[F_POS] = end
        fp[F_VPOS] = end
        fp[F_VCLOCK] = t
        fp[F_CCLOCK] = t_chain
        fp[F_VOWED] = max(fp[F_VOWED], t, t_last)
        _counted(F, tm, now, end - pc)
        total += end - pc
    return total


@kernel(forceinline=True, error_model="numpy")
def _replay_action(F, chain, market, tm, now):
    """Deterministic replay: :func:`_pass_over` the messages no stage acts on, then :func:`_next_action`;
    the events passed over plus what that returns (-1 at the end only when nothing was passed over)."""
    over = _pass_over(F, tm, now) if F.fp[F_PASS_OVER] != 0 else 0
    n = _next_action(F, chain, market, tm, now)
    if over == 0:
        return n
    return over + max(n, 0)


@kernel(forceinline=True, error_model="numpy")
def _next_action(F, chain, market, tm, now):
    """Deterministic replay: the earliest of the venue's next message, the book chain's next message and the
    venue's wake-up (see the module docstring): 1 or the events published, 0 without room, -1 at the end."""
    fp = F.fp
    if feed_exhausted(F):
        return -1
    ev = F.replay
    pc = fp[F_POS]
    pv = fp[F_VPOS]
    t_chain = _receive_time(F, pc)
    venue_next_msg = pv <= pc or (pv < ev.shape[0] and max(ev[pv].ts_exch, fp[F_VCLOCK]) < t_chain)
    t = max(ev[pv].ts_exch, fp[F_VCLOCK]) if venue_next_msg else t_chain
    wake, due = _wake_first(F, t, not venue_next_msg)
    if wake:
        if not room_each(market, 1, tm.counters):
            return 0
        _clock(F, market, due, now)  # (due comes after any clock owed: it settles it)
        return 1
    if not venue_next_msg:
        n = _to_chain(F, chain, market, tm, now, t_chain)
        if n:
            fp[F_CCLOCK] = t_chain
        return n
    end, quiet, _, _ = _scan(ev, pv, F.buf.shape[0], F.sim)  # the chain's pieces of a huge group, the same
    n = end - pv
    if not room_each(market, n + 1, tm.counters):
        return 0
    # The same message to both at once when nothing can come between: received when it happens, nothing
    # due at the venue by then, and nothing in it from which the venue could make a report before the
    # strategy sees the book (the venue applies it first either way: orders wait for earlier events).
    both = pv == pc and t == t_chain and (due == NOTHING_DUE or due > t) and quiet
    if both and not room_each(chain, n, tm.counters):
        return 0
    _settle(F, market, now)
    put_range_each(market, ev, pv, n, now)  # straight from the recording: no staging copy
    fp[F_VPOS] = end
    fp[F_VCLOCK] = t
    if both:
        sched = _replay_schedule(F, now)
        put_range_each(chain, ev, pc, n, sched)
        fp[F_POS] = end
        _published(F, tm, now, n, sched)
        _service(F, tm, now, n)
        fp[F_CCLOCK] = t_chain
    return n


@kernel(forceinline=True, error_model="numpy")
def _synthetic_action(F, chain, market, tm, now):
    """Deterministic synthetic run: a wake-up of the venue when due, else the next message to the venue
    (phase 0), then the same message to the book chain (phase 1) at the same time."""
    fp = F.fp
    if fp[F_PHASE] == 1:
        t = F.buf[0].ts_exch
        wake, due = _wake_first(F, t, True)
        if not wake:
            if not room_each(chain, fp[F_MSG_N], tm.counters):
                return 0
            put_all_each(chain, F.buf, fp[F_MSG_N])
            _published(F, tm, now, fp[F_MSG_N], F.buf[0].ts_origin)
            _service(F, tm, now, fp[F_MSG_N])
            fp[F_PHASE] = 0
            return fp[F_MSG_N]
    else:
        if feed_exhausted(F):
            return -1
        wake, due = _wake_first(F, (fp[F_MSGS] + 1) * fp[F_PERIOD_NS], False)  # (the next message's time)
        if not wake:
            if not room_each(market, F.buf.shape[0], tm.counters):
                return 0
            n = _load_message(F, now)
            if n == 0:
                return 0
            put_all_each(market, F.buf, n)
            fp[F_VCLOCK] = max(fp[F_VCLOCK], F.buf[0].ts_exch)
            fp[F_PHASE] = 1
            fp[F_MSG_N] = n
            return n
    if not room_each(market, 1, tm.counters):
        return 0
    _clock(F, market, due, now)
    return 1


def feed_params(cfg) -> np.ndarray:
    """The feed's parameters from the configuration's ``[feed]`` table."""
    fp = np.zeros(F_LEN, np.int64)
    fp[F_MODE] = {"synthetic": 0, "replay": 1, "live": 2}[cfg.feed.source]
    fp[F_PACE] = PACES[cfg.feed.pace]
    fp[F_PERIOD_NS] = max(1, int(round(1e9 / cfg.feed.rate)))
    fp[F_MAX_MSGS] = cfg.feed.max_messages
    fp[F_LAT_NS] = cfg.feed.latency_ns
    fp[F_LAT_REC] = 1 if cfg.feed.latency == "recorded" else 0
    fp[F_TIMED] = 1 if cfg.engine.latency_stats else 0
    # passing over messages no stage acts on: unpaced (paced, each message keeps its time slot), and not when
    # the journal keeps every market event the venue sees
    fp[F_PASS_OVER] = 1 if cfg.feed.pace == "fast" and not (cfg.journal.dir and cfg.journal.market) else 0
    return fp


def buffer_len(ring_capacity: int, max_message: int) -> int:
    """Events the feed stages per publish: whole messages of up to ``max_message`` events (a recording's
    bigger groups go out in pieces of this size), and at most a quarter of a ring, so the feed never waits
    for a ring to drain completely before it publishes again."""
    return max(max_message, min(4096, ring_capacity // 4))


def make_feed(ctx: BuildContext) -> FeedState:
    """The feed's state: the synthetic generator (small, built in every worker: one loop type for every
    placement), the recording's events when it replays, and the buffer of the message being published."""
    cfg = ctx.cfg
    table = ctx.kwargs("feed.synthetic", dict(cfg.feed.synthetic), make_synthetic) if ctx.real else {}
    synth = ctx.call("feed.synthetic", make_synthetic, len(ctx.symbols), cfg.feed.seed, **table)
    replay = replay_array(ctx.replay if ctx.real and ctx.replay is not None else np.zeros(0, records.MARKET_EVENT))
    n_ev = buffer_len(cfg.engine.ring_capacity, max_events_per_message(synth))
    tick = np.zeros(1, records.MARKET_EVENT)
    tick[0]["kind"] = records.EventKind.CLOCK
    tick[0]["flags"] = records.F_LAST_IN_GROUP
    buf = np.zeros(n_ev, records.MARKET_EVENT)
    fp = feed_params(cfg)
    if fp[F_LAT_REC]:
        fp[F_LAT_OFFSET] = receive_offset(replay)
    return FeedState(fp, synth, replay, buf, tick, ctx.views["simclock"])


def replay_array(events: np.ndarray) -> np.ndarray:
    """The recording as the feed holds it: a plain read-only array, in every worker and every run -- one
    array type, so one compiled loop for every placement (a worker that does not run the feed holds an empty
    one of the same type) -- and the recording's mapping used in place, not copied (a copy cost a backtest of
    600k events 20 ms)."""
    out = np.asarray(events).view(np.ndarray)
    out.flags.writeable = False
    return out


def receive_offset(events: np.ndarray) -> int:
    """The offset of a recording's receive clock from the exchange's: the smallest ``ts_origin - ts_exch``.
    The two clocks are different machines' (the Binance sample's receive stamps run 1.27 s *behind* the
    exchange's), so the recorded feed latency counts from the fastest message, taken as zero."""
    stamped = events[events["ts_exch"] > 0] if len(events) else events
    if not len(stamped):
        return 0
    return int((stamped["ts_origin"] - stamped["ts_exch"]).min())


FEED = Stage(
    name="feed",
    module=__name__,
    step="feed_step",
    inputs=(Stream("live", records.MARKET_EVENT, external=True),),
    outputs=(Stream("events", records.MARKET_EVENT), Stream("market", records.MARKET_EVENT)),
    build=make_feed,
    hists=("service", "late"),
    user_counters=("messages", "first_ns", "last_ns", *LIVE_COUNTERS),
    config="feed",
)
