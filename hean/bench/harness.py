"""The generic latency harness: fixed rates, warm-up then reset, latency from each message's *scheduled* time.

Why "scheduled": a harness that sends the next message only after the previous one completed stops sending
exactly when the system stalls, so the stall is recorded once instead of once per message that should have
been sent during it (coordinated omission; Gil Tene, wrk2, JLBH). Here message ``i`` of a paced run is due
at ``t0 + i * period``; the sender busy-waits until then (never sleeps: sleeps overshoot by 15-80 us here)
and the receiver records ``now - scheduled``. A late sender sends immediately, so lateness is measured.
Unpaced runs (rate 0) schedule each message when the previous one was handed over: the latency then
includes queueing behind earlier messages (saturation).

Two ways to plug a system in (both numba functions; the harness loops are ``@entry`` functions of :mod:`hean.jit`):

* a **kernel** ``kernel(state, i) -> anything``, timed in place: latency = completion - scheduled time
  (:func:`bench_kernel`; e.g. a book update, a risk check, an indicator step). One thread.
* a **send/receive pair** (:func:`bench_pair`): ``send(state, i, scheduled_ns) -> int`` returns 1 (sent),
  0 (transport full: the harness retries with the same scheduled time) or -1 (dropped: counted as lost);
  ``recv(state) -> int`` returns the scheduled time carried by one received message, or -1 when none is
  ready. The producer and the consumer run in two threads of this process (numba releases the GIL), so
  ``state`` can hold any shared arrays, e.g. a ring's header and slots.

A send/receive pair over a HEAN ring (``state = (ring.hdr, ring.slots)``; the scheduled time travels in
``ts_origin``; see ``tests/test_bench_harness.py::test_pair_over_a_hean_ring``)::

    @kernel
    def send(st, i, sched):
        hdr, slots = st
        seq = try_claim(hdr, 1)
        if seq < 0:
            return 0                       # full: the harness retries, same scheduled time
        slots[seq & hdr[MASK]].ts_origin = sched
        publish(hdr, seq + 1)
        return 1

    @kernel
    def recv(st):
        hdr, slots = st
        r = try_peek(hdr)
        if r < 0:
            return -1
        sched = slots[r & hdr[MASK]].ts_origin
        release(hdr, r + 1)
        return sched

Across processes, run :func:`paced_producer` in one and :func:`timed_consumer` in the other with a ``ctl``
array in shared memory (slot layout below), then build a :class:`RateResult` with :meth:`RateResult.build`.

``ctl`` (int64[CTL_LEN]) -- producer words and consumer words sit 128 bytes apart (no false sharing):

======  ==============  ======================================================================
slot    name            meaning
======  ==============  ======================================================================
0       P_SENT          messages handed to the transport
1       P_DROPPED       messages the transport refused for good (send returned -1)
2       P_FULL          send attempts that found the transport full (retried)
3       P_DONE          1 when the producer has finished (release store, after P_SENT)
4       P_T0            CLOCK_MONOTONIC ns of the first scheduled send
5       P_T_END         ns when the producer finished
6       P_ATTEMPTED     messages owed: sent + dropped, or all n when a paced run hit its deadline
16      C_RECEIVED      messages the consumer received and recorded
17      C_T_LAST        ns of the last receive
======  ==============  ======================================================================

Python side::

    res = bench_kernel("book.apply", apply_one, state, rates=(10_000, 100_000, 0), duration_s=1.0)
    print(format_table(res))              # hean.bench.report
    res.write_json("book.json"); write_hlog(res, "book.hlog")
"""

from __future__ import annotations

import os
import platform
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from hean.atomics import cpu_pause, load_acquire, load_relaxed, now_ns, store_relaxed, store_release
from hean.jit import entry, kernel
from hean.telemetry.histogram import (
    DEFAULT_PERCENTILES,
    H_BASE,
    hist_max,
    hist_mean,
    hist_min,
    hist_record,
    hist_reset,
    hist_sub,
    hist_value_at_percentile,
    new_histogram,
    supported_percentiles,
)

__all__ = [
    "CTL_LEN",
    "DEFAULT_RATES",
    "BenchResult",
    "Interval",
    "RateResult",
    "bench_kernel",
    "bench_pair",
    "machine_info",
    "new_ctl",
    "paced_kernel",
    "paced_producer",
    "put_percentiles",
    "timed_consumer",
]

DEFAULT_RATES: tuple[int, ...] = (10_000, 100_000, 1_000_000, 0)
"""Messages per second; 0 = unpaced (as fast as the system takes them)."""

P_SENT, P_DROPPED, P_FULL, P_DONE, P_T0, P_T_END, P_ATTEMPTED = 0, 1, 2, 3, 4, 5, 6
C_RECEIVED, C_T_LAST = 16, 17
CTL_LEN = 32
PCTS_REPORTED: tuple[float, ...] = (*DEFAULT_PERCENTILES, 100.0)


def new_ctl() -> np.ndarray:
    """A zeroed control array for one producer/consumer run."""
    return np.zeros(CTL_LEN, dtype=np.int64)


# ---------------------------------------------------------------------------------------------------------
# the measuring loops
# ---------------------------------------------------------------------------------------------------------
@kernel
def _wait_until(t: int) -> int:
    now = now_ns()
    while now < t:
        cpu_pause()
        now = now_ns()
    return now


@entry
def paced_kernel(kernel, state, ctl, hist, n: int, period_ns: int, t0: int, t_stop: int) -> int:
    """Call ``kernel(state, i)`` for i < n at ``t0 + i * period_ns`` and record completion - scheduled.

    Unpaced (period 0): scheduled = the call's start; stops early at ``t_stop``. Returns the calls made.
    """
    store_relaxed(ctl, P_T0, t0)
    i = 0
    t = now_ns()
    while i < n:
        if period_ns > 0:
            sched = t0 + i * period_ns
            _wait_until(sched)
        else:
            sched = now_ns()
            if sched >= t_stop:
                break
        kernel(state, i)
        t = now_ns()
        hist_record(hist, t - sched)
        i += 1
        if t > t_stop:
            break
    store_relaxed(ctl, P_SENT, i)
    store_relaxed(ctl, P_ATTEMPTED, i)
    store_relaxed(ctl, C_RECEIVED, i)
    store_relaxed(ctl, C_T_LAST, t)
    store_relaxed(ctl, P_T_END, t)
    store_release(ctl, P_DONE, 1)
    return i


@entry
def paced_producer(send, state, ctl, n: int, period_ns: int, t0: int, t_stop: int) -> int:
    """Send message i at ``t0 + i * period_ns`` (retrying while the transport is full, same scheduled
    time); unpaced when period is 0. Gives up at ``t_stop`` (the rest count as lost). Returns sent."""
    store_relaxed(ctl, P_T0, t0)
    sent = 0
    dropped = 0
    full = 0
    i = 0
    aborted = False
    while i < n and not aborted:
        if period_ns > 0:
            sched = t0 + i * period_ns
            _wait_until(sched)
        else:
            sched = now_ns()
            if sched >= t_stop:
                break
        while True:
            r = send(state, i, sched)
            if r > 0:
                sent += 1
                break
            if r < 0:
                dropped += 1
                break
            full += 1
            cpu_pause()
            if (full & 1023) == 0 and now_ns() > t_stop:
                aborted = True
                break
        i += 1
    # a paced run that hit the deadline still owed every scheduled message: all count as attempted
    attempted = n if (aborted and period_ns > 0) else sent + dropped
    store_relaxed(ctl, P_SENT, sent)
    store_relaxed(ctl, P_DROPPED, dropped)
    store_relaxed(ctl, P_FULL, full)
    store_relaxed(ctl, P_ATTEMPTED, attempted)
    store_relaxed(ctl, P_T_END, now_ns())
    store_release(ctl, P_DONE, 1)
    return sent


@entry
def timed_consumer(recv, state, ctl, hist, t_stop: int) -> int:
    """Receive until the producer is done and everything it sent arrived (or ``t_stop``), recording
    ``now - scheduled`` per message. Returns the messages received."""
    received = 0
    last = 0
    while True:
        s = recv(state)
        if s >= 0:
            t = now_ns()
            hist_record(hist, t - s)
            received += 1
            last = t
            continue
        if load_acquire(ctl, P_DONE) != 0 and received >= load_relaxed(ctl, P_SENT):
            break
        if now_ns() > t_stop:
            break
        cpu_pause()
    store_relaxed(ctl, C_RECEIVED, received)
    store_relaxed(ctl, C_T_LAST, last)
    return received


@entry
def _drain(recv, state) -> int:
    n = 0
    while recv(state) >= 0:
        n += 1
    return n


# ---------------------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------------------
@dataclass
class Interval:
    """One interval histogram of a run (for the .hlog): seconds since the run's start."""

    start_s: float
    length_s: float
    hist: np.ndarray = field(repr=False)


@dataclass
class RateResult:
    """One rate's measurement: counts, achieved rate, the latency histogram (ns) and its intervals."""

    target_rate: int  # messages/s, 0 = unpaced
    attempted: int
    sent: int
    received: int
    dropped: int
    full_retries: int
    elapsed_ns: int  # first scheduled send -> last receive
    hist: np.ndarray = field(repr=False)
    intervals: list[Interval] = field(default_factory=list, repr=False)

    @classmethod
    def build(cls, target_rate: int, ctl: np.ndarray, hist: np.ndarray, intervals=None) -> RateResult:
        """From a finished run's ``ctl`` words and histogram (also for cross-process runs)."""
        t_end = max(int(ctl[C_T_LAST]), int(ctl[P_T_END]))
        return cls(
            target_rate=int(target_rate),
            attempted=int(ctl[P_ATTEMPTED]),
            sent=int(ctl[P_SENT]),
            received=int(ctl[C_RECEIVED]),
            dropped=int(ctl[P_DROPPED]),
            full_retries=int(ctl[P_FULL]),
            elapsed_ns=max(0, t_end - int(ctl[P_T0])),
            hist=hist.copy(),
            intervals=list(intervals or []),
        )

    @property
    def lost(self) -> int:
        """Messages attempted but never received (dropped, or still in flight at the deadline)."""
        return max(0, self.attempted - self.received)

    @property
    def loss_pct(self) -> float:
        return 100.0 * self.lost / self.attempted if self.attempted else 0.0

    @property
    def achieved_rate(self) -> float:
        """Messages received per second over the run."""
        return self.received / (self.elapsed_ns / 1e9) if self.elapsed_ns > 0 else 0.0

    @property
    def count(self) -> int:
        return int(self.hist[H_BASE:].sum())

    def percentiles(self, pcts: Sequence[float] = PCTS_REPORTED) -> dict[float, int]:
        """Only the percentiles the sample count supports (100 = the bucket of the max)."""
        return {
            float(p): int(hist_value_at_percentile(self.hist, float(p)))
            for p in supported_percentiles(self.count, pcts)
        }

    def as_dict(self) -> dict:
        return {
            "target_rate": self.target_rate,
            "attempted": self.attempted,
            "sent": self.sent,
            "received": self.received,
            "dropped": self.dropped,
            "lost": self.lost,
            "loss_pct": round(self.loss_pct, 6),
            "full_retries": self.full_retries,
            "elapsed_s": self.elapsed_ns / 1e9,
            "achieved_rate": round(self.achieved_rate, 1),
            "count": self.count,
            "min_ns": int(hist_min(self.hist)),
            "mean_ns": round(float(hist_mean(self.hist)), 1),
            "max_ns": int(hist_max(self.hist)),
            "percentiles_ns": {_pct_key(p): v for p, v in self.percentiles(DEFAULT_PERCENTILES).items()},
        }


def _pct_key(p: float) -> str:
    return f"p{p:g}"


@dataclass
class BenchResult:
    """All rates of one benchmark, with what is needed to reproduce and compare it."""

    name: str
    results: list[RateResult]
    config: dict = field(default_factory=dict)
    machine: dict = field(default_factory=dict)
    start_unix: float = field(default_factory=time.time)

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "unit": "ns",
            "start_unix": self.start_unix,
            "config": self.config,
            "machine": self.machine,
            "results": [r.as_dict() for r in self.results],
        }

    def write_json(self, path: str | os.PathLike) -> None:
        import json

        with open(path, "w") as f:
            json.dump(self.as_dict(), f, indent=2)
            f.write("\n")


def machine_info() -> dict:
    """CPU model, CPU count, kernel, Python and numba versions: what a benchmark table must name."""
    import numba

    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "cpus_allowed": len(os.sched_getaffinity(0)),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "numba": numba.__version__,
        "numpy": np.__version__,
        "clock": "CLOCK_MONOTONIC",
    }


# ---------------------------------------------------------------------------------------------------------
# drivers
# ---------------------------------------------------------------------------------------------------------
def _messages(rate: int, duration_s: float, unpaced_max: int) -> tuple[int, int]:
    """(message count, period ns) of one phase; unpaced runs are bounded by time and ``unpaced_max``."""
    if rate < 0:
        raise ValueError(f"rate must be >= 0 messages/s (0 = unpaced), got {rate}")
    if rate == 0:
        return unpaced_max, 0
    return max(1, int(rate * duration_s)), max(1, 1_000_000_000 // rate)


def _run_threads(targets: list[Callable[[], object]], hist: np.ndarray, interval_s: float, t0: int):
    """Run ``targets`` in threads; meanwhile copy ``hist`` every ``interval_s`` into interval views."""
    errors: list[BaseException] = []

    def wrap(fn):
        def run():
            try:
                fn()
            except BaseException as e:  # surfaced in the caller, never lost in a thread
                errors.append(e)

        return run

    threads = [threading.Thread(target=wrap(fn), daemon=True) for fn in targets]
    prev, t_prev = hist.copy(), t0  # before the threads start: nothing recorded may fall before it
    for th in threads:
        th.start()
    intervals = []
    while any(th.is_alive() for th in threads):
        for th in threads:
            th.join(timeout=interval_s)
            if th.is_alive():
                break
        t = time.monotonic_ns()
        cur = hist.copy()
        iv = new_histogram()
        hist_sub(iv, cur, prev)
        if iv[H_BASE:].any():
            intervals.append(Interval(max(0.0, (t_prev - t0) / 1e9), (t - max(t_prev, t0)) / 1e9, iv))
        prev, t_prev = cur, t
    if errors:
        raise errors[0]
    return intervals


def bench_kernel(
    name: str,
    kernel,
    state,
    rates: Sequence[int] = DEFAULT_RATES,
    duration_s: float = 1.0,
    warmup_s: float = 0.2,
    unpaced_max: int = 10_000_000,
    interval_s: float = 1.0,
    config: dict | None = None,
) -> BenchResult:
    """Time ``kernel(state, i)`` at each rate (warm-up at the same rate, then reset, then measure).

    A paced phase still running ``max(2 s, duration)`` after its last scheduled message is cut off (what
    was not done counts as lost); an unpaced phase runs ``duration_s`` or ``unpaced_max`` messages.
    ``interval_s``: length of the interval histograms kept for the .hlog.
    """
    if duration_s <= 0 or warmup_s < 0:
        raise ValueError(f"{name}: duration_s must be > 0 and warmup_s >= 0")
    hist, ctl = new_histogram(), new_ctl()
    paced_kernel(kernel, state, ctl, hist, 1, 0, time.monotonic_ns(), time.monotonic_ns() + 10**9)  # compile
    results = []
    for rate in rates:
        for phase_s, keep in ((warmup_s, False), (duration_s, True)):
            if phase_s <= 0:
                continue
            n, period = _messages(rate, phase_s, unpaced_max)
            hist_reset(hist)
            ctl[:] = 0
            t0 = time.monotonic_ns() + 1_000_000
            t_stop = t0 + int(phase_s * 1e9) + (0 if period == 0 else int(max(2.0, phase_s) * 1e9))

            def run(n=n, period=period, t0=t0, t_stop=t_stop):
                paced_kernel(kernel, state, ctl, hist, n, period, t0, t_stop)

            intervals = _run_threads([run], hist, interval_s, t0)
            if keep:
                results.append(RateResult.build(rate, ctl, hist, intervals))
    return BenchResult(name, results, _config(config, rates, duration_s, warmup_s, "kernel"), machine_info())


def bench_pair(
    name: str,
    send,
    recv,
    state,
    rates: Sequence[int] = DEFAULT_RATES,
    duration_s: float = 1.0,
    warmup_s: float = 0.2,
    unpaced_max: int = 10_000_000,
    interval_s: float = 1.0,
    config: dict | None = None,
) -> BenchResult:
    """One-way latency through a transport: a paced producer thread and a timing consumer thread.

    Deadlines as in :func:`bench_kernel`; the consumer waits another ``max(2 s, duration)`` for messages in
    flight, and whatever is still in the transport after that is drained and counted as lost.
    """
    if duration_s <= 0 or warmup_s < 0:
        raise ValueError(f"{name}: duration_s must be > 0 and warmup_s >= 0")
    hist, ctl = new_histogram(), new_ctl()
    # compile both loops single-threaded (the transport buffers one message), then drain
    now = time.monotonic_ns()
    paced_producer(send, state, ctl, 1, 0, now, now + 10**9)
    timed_consumer(recv, state, ctl, hist, time.monotonic_ns() + 10**9)
    _drain(recv, state)
    results = []
    for rate in rates:
        for phase_s, keep in ((warmup_s, False), (duration_s, True)):
            if phase_s <= 0:
                continue
            n, period = _messages(rate, phase_s, unpaced_max)
            hist_reset(hist)
            ctl[:] = 0
            t0 = time.monotonic_ns() + 2_000_000
            t_stop = t0 + int(phase_s * 1e9) + (0 if period == 0 else int(max(2.0, phase_s) * 1e9))
            grace = int(max(2.0, phase_s) * 1e9)

            def produce(n=n, period=period, t0=t0, t_stop=t_stop):
                paced_producer(send, state, ctl, n, period, t0, t_stop)

            def consume(t_stop=t_stop + grace):
                timed_consumer(recv, state, ctl, hist, t_stop)

            intervals = _run_threads([consume, produce], hist, interval_s, t0)
            _drain(recv, state)  # anything still in flight is lost, not carried into the next phase
            if keep:
                results.append(RateResult.build(rate, ctl, hist, intervals))
    return BenchResult(name, results, _config(config, rates, duration_s, warmup_s, "pair"), machine_info())


def _config(extra: dict | None, rates, duration_s: float, warmup_s: float, mode: str) -> dict:
    cfg = {"mode": mode, "rates": list(rates), "duration_s": duration_s, "warmup_s": warmup_s}
    cfg.update(extra or {})
    return cfg


def put_percentiles(benchmark, result: BenchResult | RateResult | np.ndarray, prefix: str = "") -> dict:
    """Store latency percentiles (ns) in a pytest-benchmark fixture's ``extra_info``; returns what it put.

    ``result``: a BenchResult (keys ``<prefix>rate_<r>_p99_ns`` ...), a RateResult or a bare histogram
    (keys ``<prefix>p99_ns``). Only supported percentiles are stored, plus count and max.
    """
    info: dict = {}

    def add(pre: str, hist: np.ndarray) -> None:
        n = int(hist[H_BASE:].sum())
        info[f"{pre}count"] = n
        info[f"{pre}max_ns"] = int(hist_max(hist))
        for p in supported_percentiles(n, DEFAULT_PERCENTILES):
            info[f"{pre}{_pct_key(p)}_ns"] = int(hist_value_at_percentile(hist, float(p)))

    if isinstance(result, BenchResult):
        for r in result.results:
            add(f"{prefix}rate_{r.target_rate or 'max'}_", r.hist)
            info[f"{prefix}rate_{r.target_rate or 'max'}_achieved"] = round(r.achieved_rate, 1)
    elif isinstance(result, RateResult):
        add(prefix, result.hist)
        info[f"{prefix}achieved_rate"] = round(result.achieved_rate, 1)
    else:
        add(prefix, result)
    benchmark.extra_info.update(info)
    return info
