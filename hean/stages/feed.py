"""The feed stage: the pipeline's source -- the synthetic market or a recording -- published on schedule.

It publishes every exchange message twice: on ``events`` to the book chain (the tick-to-trade path) and on
``market`` to the simulated venue, which stands for the exchange and applies a message's events before any
order published after them. Each message is stamped with its *scheduled* send time (``ts_origin``), so
latency counts from when it was due, not from when a late worker got to it: no coordinated omission.

Pacing (``F_PACE``): at a fixed rate, at the recording's own inter-arrival times, or unpaced. In lockstep
mode (the engine's ``F_LOCKSTEP`` flag; the engine calls the step only when nothing is in flight) each
message goes out in two phases: to the venue, then -- once the pipeline is idle again -- to the book chain.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from hean import records
from hean.atomics import store_relaxed
from hean.feeds.synthetic import make_synthetic, max_events_per_message, synthetic_next
from hean.jit import kernel
from hean.stages.declare import F_LOCKSTEP, BuildContext, Stage, Stream
from hean.stages.ports import put_all_each, room_each, service
from hean.telemetry.block import C_EVENTS_OUT, C_USER_BASE, tm_add
from hean.telemetry.histogram import hist_record

__all__ = ["FEED", "FeedState", "feed_step", "make_feed"]


FEED_BURST = 64  # messages published per call when behind schedule (or unpaced)

# feed parameters and position (int64) indices
F_MODE = 0  # 0 synthetic, 1 replay
F_PACE = 1  # 0 rate, 1 recorded, 2 fast
F_PERIOD_NS = 2  # ns between messages at the configured rate
F_MAX_MSGS = 3  # 0 = unlimited
F_POS = 4  # replay: next event index
F_MSGS = 5  # messages published
F_T0 = 6  # CLOCK_MONOTONIC ns of the first message
F_REC_T0 = 7  # replay: recorded receive time of the first message
F_PHASE = 8  # lockstep: 1 = the current message still has to go to the book chain
F_MSG_N = 9  # events in the current message (in the feed's buffer)
F_LEN = 16
PACES = {"rate": 0, "recorded": 1, "fast": 2}

H_LATE = 1  # histogram row: how late each message went out (pass start minus its scheduled time)
U_MESSAGES = C_USER_BASE  # user counter: messages published (the run's progress and its message count)
U_FIRST_NS = C_USER_BASE + 1  # CLOCK_MONOTONIC ns of the first burst of messages (0: none yet)
U_LAST_NS = C_USER_BASE + 2  # ... of the latest: the publishing time is LAST - FIRST (the summary's rate)


class FeedState(NamedTuple):
    fp: np.ndarray  # int64[F_LEN]
    synth: object  # hean.feeds.synthetic.SyntheticState
    replay: np.ndarray  # MARKET_EVENT[]: the recording (empty for the synthetic feed)
    buf: np.ndarray  # MARKET_EVENT[]: the message being published


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
        buf[j].ts_origin = sched  # latency counts from the scheduled time: no coordinated omission
    return n


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
    """Publish the messages due at ``now`` (at most FEED_BURST; one in lockstep): events published, 0 when
    none is due, -1 when the feed is finished. ``outs``: (book chain ports, venue ports)."""
    fp = F.fp
    chain, market = outs
    lockstep = (flags & F_LOCKSTEP) != 0
    if fp[F_PHASE] == 1:  # lockstep, second phase: the same message to the book chain
        n = fp[F_MSG_N]
        if not room_each(chain, n, tm.counters):
            return 0
        put_all_each(chain, F.buf, n)
        fp[F_PHASE] = 0
        return n
    if not feed_exhausted(F) and _next_due(F, now) > now:
        return 0
    cap = F.buf.shape[0]
    total = 0
    t0 = now
    for _ in range(1 if lockstep else FEED_BURST):
        if feed_exhausted(F):
            if total == 0:
                return -1
            break
        if not room_each(market, cap, tm.counters) or (not lockstep and not room_each(chain, cap, tm.counters)):
            break
        n = _load_message(F, t0)
        if n == 0:
            break
        fp[F_MSGS] += 1
        hist_record(tm.hists[H_LATE], t0 - F.buf[0].ts_origin)  # the worker's lag behind the schedule
        if lockstep:
            put_all_each(market, F.buf, n)  # phase 1: the venue; the book chain once all is idle
            fp[F_PHASE] = 1
            fp[F_MSG_N] = n
        else:
            # the book chain first: it is the tick-to-trade path (the venue, standing for the exchange,
            # applies a message's events before any order published after them either way)
            put_all_each(chain, F.buf, n)
            put_all_each(market, F.buf, n)
        total += n
    if total:
        store_relaxed(tm.counters, U_MESSAGES, fp[F_MSGS])
        if tm.counters[U_FIRST_NS] == 0:
            store_relaxed(tm.counters, U_FIRST_NS, t0)
        store_relaxed(tm.counters, U_LAST_NS, t0)
        tm_add(tm.counters, C_EVENTS_OUT, total)  # events published (each goes to the venue and the book)
        service(tm.hists, t0, total)
    return total


def feed_params(cfg) -> np.ndarray:
    """The feed's parameters from the configuration's ``[feed]`` table."""
    fp = np.zeros(F_LEN, np.int64)
    fp[F_MODE] = 0 if cfg.feed.source == "synthetic" else 1
    fp[F_PACE] = PACES[cfg.feed.pace]
    fp[F_PERIOD_NS] = max(1, int(round(1e9 / cfg.feed.rate)))
    fp[F_MAX_MSGS] = cfg.feed.max_messages
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
    replay = ctx.replay if ctx.real and ctx.replay is not None else np.zeros(0, records.MARKET_EVENT)
    n_ev = buffer_len(cfg.engine.ring_capacity, max_events_per_message(synth))
    return FeedState(feed_params(cfg), synth, replay, np.zeros(n_ev, records.MARKET_EVENT))


FEED = Stage(
    name="feed",
    module=__name__,
    step="feed_step",
    inputs=(),
    outputs=(Stream("events", records.MARKET_EVENT), Stream("market", records.MARKET_EVENT)),
    build=make_feed,
    hists=("service", "late"),
    user_counters=("messages", "first_ns", "last_ns"),
    config="feed",
)
