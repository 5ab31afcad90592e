"""``hean bench ring``: one-hop latency and throughput of the SPSC ring, beside Python IPC and a C floor.

Every figure runs between two processes pinned to two different CPUs (``--cpus A,B``; the producer on A):

* **floor**: a cache-line ping-pong between the same two CPUs, in C (``tools/ring_floor.c`` of the source
  tree, built now with ``cc -O3 -march=native``); one-way = round trip / 2. Nothing crossing CPUs can be
  faster.
* **hop**: the producer claims a slot, writes a 64-byte MARKET_EVENT in place, stamps it with
  CLOCK_MONOTONIC just before publishing; the consumer busy-polls, and records now minus stamp into an
  HDR histogram (:mod:`hean.telemetry.histogram`). Paced at fixed rates (``--rates``) -- each record also
  carries its *scheduled* send time, and "from schedule" latency (now minus scheduled time, which counts a
  producer that fell behind: no coordinated omission) is reported beside the hop -- and unpaced (the
  ring runs full, so unpaced latency is queueing: capacity / throughput).
* **throughput** of 64-byte records, unpaced: single-record push + single-record pop; single push +
  batched consumption (one release per batch); batched publication (claim up to 64, one publish) +
  batched consumption; and the same records through a C ring of the same design (``ring_floor ring``).
* **peers** on the same harness and records: multiprocessing.Queue, multiprocessing.Pipe, pyzmq
  PUSH/PULL over ipc://, faster-fifo (each skipped with a message when not installed); latency paced at
  ``--peer-rate`` and throughput unpaced.

Placement: on a VM the two vCPUs may sit close (round trip ~110 ns) or far apart (~410 ns), and the host
moves them every few minutes. A short ping-pong runs right before and after every figure; a figure is
labelled ``near`` or ``far`` when both agree (threshold ``--near-threshold-ns``), else ``mixed`` and is
retried (``--retries``). Ratios compare figures with the floor measured in the same placement only.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hean.atomics import cpu_pause, now_ns
from hean.commands import HeanParser, emit_json, text_out
from hean.jit import entry
from hean.records import MARKET_EVENT
from hean.rings import (
    MASK,
    PeerDeadError,
    available,
    claim_upto,
    create,
    peer_alive,
    publish,
    release,
    try_claim,
    try_peek,
    try_push,
)
from hean.rings.spsc import prefetch_claim
from hean.shm import unlink_segment
from hean.telemetry.histogram import hist_record, new_histogram, summary

FORK = mp.get_context("fork")
# The C floor is a tool of the source tree, not part of the installed package: it is found beside hean/ in a
# checkout or an editable install (`pip install -e .`), and compiled at run time.
C_SOURCE = Path(__file__).resolve().parents[2] / "tools" / "ring_floor.c"
PCTS = (50.0, 90.0, 99.0, 99.9, 99.99, 100.0)
STALL_SPINS = 1 << 24  # a loop returns to Python after this many fruitless polls to check its peer
BATCH = 64

# ==========================================================================================================
# numba loops (each returns to Python when stalled, so a dead peer is noticed)
# ==========================================================================================================


@entry
def _lat_produce(hdr, slots, i, n, period_ns, t_start):
    """Send records i..n-1: wait for the scheduled time (if paced), claim, fill, stamp, publish."""
    mask = hdr[MASK]
    while i < n:
        t_sched = 0
        if period_ns > 0:
            t_sched = t_start + i * period_ns
            while now_ns() < t_sched:
                pass
        spins = 0
        seq = try_claim(hdr, 1)
        while seq < 0:
            spins += 1
            if spins > STALL_SPINS:
                return i
            cpu_pause()
            seq = try_claim(hdr, 1)
        r = slots[seq & mask]
        r.seq = i
        r.ts_exch = t_sched
        r.ts_origin = now_ns()  # stamped just before publishing
        publish(hdr, seq + 1)
        i += 1
    return i


@entry
def _lat_consume(hdr, slots, got, n, warmup, hop, sched):
    """Receive until n records: record now - stamp (and now - scheduled time when paced)."""
    mask = hdr[MASK]
    spins = 0
    while got < n:
        s = try_peek(hdr)
        if s < 0:
            spins += 1
            if spins > STALL_SPINS:
                return got
            continue
        t = now_ns()
        spins = 0
        r = slots[s & mask]
        if r.seq >= warmup:
            hist_record(hop, t - r.ts_origin)
            if r.ts_exch != 0:
                hist_record(sched, t - r.ts_exch)
        release(hdr, s + 1)
        got += 1
    return got


@entry
def _tp_produce(hdr, slots, scratch, i, n, batch):
    """Unpaced: batch == 1 pushes each record with try_push; else claim up to ``batch``, publish once."""
    mask = hdr[MASK]
    spins = 0
    while i < n:
        if batch == 1:
            scratch[0].seq = i
            if try_push(hdr, slots, scratch[0]):
                i += 1
                spins = 0
                continue
        else:
            w, k = claim_upto(hdr, min(batch, n - i))
            if k > 0:
                prefetch_claim(hdr, slots, w + k, batch)  # the next batch's lines, while writing this one
                for j in range(k):
                    slots[(w + j) & mask] = scratch[0]
                    slots[(w + j) & mask].seq = i + j
                publish(hdr, w + k)
                i += k
                spins = 0
                continue
        spins += 1
        if spins > STALL_SPINS:
            return i
        cpu_pause()
    return i


@entry
def _tp_consume(hdr, slots, got, n, batched, acc, t_first):
    """Unpaced: pop one at a time (try_peek/release) or take whole batches (available/release once)."""
    mask = hdr[MASK]
    spins = 0
    while got < n:
        if batched:
            start, k = available(hdr)
            if k > 0:
                if t_first == 0:
                    t_first = now_ns()
                for j in range(k):
                    acc += slots[(start + j) & mask].seq
                release(hdr, start + k)
                got += k
                spins = 0
                continue
        else:
            s = try_peek(hdr)
            if s >= 0:
                if t_first == 0:
                    t_first = now_ns()
                acc += slots[s & mask].seq
                release(hdr, s + 1)
                got += 1
                spins = 0
                continue
        spins += 1
        if spins > STALL_SPINS:
            return got, acc, t_first, 0
        cpu_pause()  # back off the producer's cache lines while the ring is empty (as the C ring does)
    return got, acc, t_first, now_ns()


@entry
def _hist_from(values, hist):
    for v in values:
        hist_record(hist, v)


# ==========================================================================================================
# process harness
# ==========================================================================================================
def _pin(cpu: int) -> None:
    os.sched_setaffinity(0, {cpu})


# involuntary context switches of the last pair's two processes: how often the scheduler took their CPU
# away mid-figure (0 on a quiet machine; every one is a stall of up to a scheduler slice, milliseconds)
LAST_PREEMPTIONS = {"count": 0}


def _child(target, args, conn) -> None:
    try:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw
        value = target(*args)
        conn.send(("ok", (value, resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw - before)))
    except BaseException as e:  # report, never hang the parent
        conn.send(("error", f"{type(e).__name__}: {e}"))
    finally:
        conn.close()
        os._exit(0)


def _run_pair(producer, p_args, consumer, c_args, timeout: float) -> tuple[object, object]:
    """Fork consumer then producer, wait for both results; kill and join both by pid whatever happens."""
    procs, conns = [], []
    try:
        for target, args in ((consumer, c_args), (producer, p_args)):
            recv, send = FORK.Pipe(duplex=False)
            p = FORK.Process(target=_child, args=(target, args, send))
            p.start()
            send.close()
            procs.append(p)
            conns.append(recv)
        out = []
        for p, recv in zip(procs, conns, strict=True):
            if not recv.poll(timeout):
                raise RuntimeError(f"bench process pid {p.pid} gave no result within {timeout:.0f} s")
            status, value = recv.recv()
            if status != "ok":
                raise RuntimeError(f"bench process pid {p.pid} failed: {value}")
            out.append(value)
        LAST_PREEMPTIONS["count"] = out[0][1] + out[1][1]
        return out[1][0], out[0][0]  # (producer's, consumer's)
    finally:
        for p in procs:
            if p.is_alive():
                os.kill(p.pid, signal.SIGKILL)
            p.join(10)


def _ring_name(tag: str) -> str:
    return f"hean-bench-{os.getpid()}-{tag}"


def _loop_until(fn, name: str, peer: str, ring, state, done):
    """Call a stall-returning numba loop until ``done(state)``, checking the peer between calls."""
    while True:
        state = fn(state)
        if done(state):
            return state
        pid = ring.consumer_pid if peer == "consumer" else ring.producer_pid
        if pid and not peer_alive(pid):
            raise PeerDeadError(name, peer, pid)


# The children use the Ring the parent created, inherited through fork: no attach by name, so nothing can
# unlink the name from under a figure between create and attach.
def _lat_producer(ring, cpu, n, period_ns):
    _pin(cpu)
    ring.take_role("producer")
    while ring.consumer_pid == 0:  # wait for the consumer before the clock starts
        time.sleep(0.0005)
    t_start = int(time.monotonic_ns()) + 2_000_000
    _loop_until(
        lambda i: _lat_produce(ring.hdr, ring.slots, i, n, period_ns, t_start),
        ring.name,
        "consumer",
        ring,
        0,
        lambda i: i >= n,
    )
    return n


def _lat_consumer(ring, cpu, n, warmup):
    _pin(cpu)
    ring.take_role("consumer")
    hop, sched = new_histogram(), new_histogram()
    _loop_until(
        lambda got: _lat_consume(ring.hdr, ring.slots, got, n, warmup, hop, sched),
        ring.name,
        "producer",
        ring,
        0,
        lambda got: got >= n,
    )
    return hop, sched


def _tp_producer(ring, cpu, n, batch):
    _pin(cpu)
    ring.take_role("producer")
    scratch = np.zeros(1, ring.dtype)
    scratch["price"] = 12345
    _loop_until(
        lambda i: _tp_produce(ring.hdr, ring.slots, scratch, i, n, batch),
        ring.name,
        "consumer",
        ring,
        0,
        lambda i: i >= n,
    )
    return n


def _tp_consumer(ring, cpu, n, batched):
    _pin(cpu)
    ring.take_role("consumer")
    got, acc, t0, t1 = _loop_until(
        lambda s: _tp_consume(ring.hdr, ring.slots, s[0], n, batched, s[1], s[2]),
        ring.name,
        "producer",
        ring,
        (0, 0, 0, 0),
        lambda s: s[0] >= n,
    )
    if acc != n * (n - 1) // 2:
        raise RuntimeError(f"ring {ring.name!r}: checksum {acc} != {n * (n - 1) // 2}: records lost or torn")
    return (n - 1) * 1e9 / max(t1 - t0, 1)


def _with_ring(tag: str, capacity: int, fn):
    name = _ring_name(tag)
    ring = create(name, MARKET_EVENT, capacity)
    try:
        return fn(ring)
    finally:
        ring.close()
        unlink_segment(name)


def ring_latency(cpus, n: int, period_ns: int, capacity: int, timeout: float) -> dict:
    warmup = min(n // 10, 10_000)

    def go(ring):
        _, (hop, sched) = _run_pair(
            _lat_producer, (ring, cpus[0], n, period_ns), _lat_consumer, (ring, cpus[1], n, warmup), timeout
        )
        return hop, sched

    hop, sched = _with_ring("lat", capacity, go)
    out = {"hop": _summ(hop)}
    if period_ns:
        out["from_schedule"] = _summ(sched)
    return out


def ring_throughput(cpus, n: int, batch: int, batched_consume: bool, capacity: int, timeout: float) -> float:
    def go(ring):
        _, rate = _run_pair(
            _tp_producer, (ring, cpus[0], n, batch), _tp_consumer, (ring, cpus[1], n, batched_consume), timeout
        )
        return rate

    return _with_ring("tp", capacity, go)


def _summ(hist) -> dict:
    s = summary(hist, PCTS)
    p = s["percentiles_ns"]
    keys = {50.0: "p50_ns", 90.0: "p90_ns", 99.0: "p99_ns", 99.9: "p999_ns", 99.99: "p9999_ns"}
    out = {"count": s["count"], "min_ns": s["min_ns"], "max_ns": s["max_ns"]}
    out.update({k: p.get(pct) for pct, k in keys.items()})
    return out


# ==========================================================================================================
# Python IPC peers: the same 64-byte records (MARKET_EVENT layout: seq at 0, ts_origin at 8)
# ==========================================================================================================
REC = struct.Struct("<qq48x")
assert REC.size == MARKET_EVENT.itemsize == 64


def _peer_endpoints(kind: str, tag: str):
    """``(make_sender, make_receiver, cleanup)``. In the children, ``make_sender()`` returns ``(send, flush)``
    (``flush`` waits until every message has left the process: a child exits with ``os._exit``) and
    ``make_receiver()`` returns ``recv``; ``cleanup`` runs in the parent.
    """
    if kind == "mp.Queue":
        q = FORK.Queue(maxsize=4096)

        def flush():
            q.close()
            q.join_thread()

        return (lambda: (q.put, flush)), (lambda: q.get), lambda: None
    if kind == "mp.Pipe":
        r, w = FORK.Pipe(duplex=False)
        return (lambda: (w.send_bytes, lambda: None)), (lambda: r.recv_bytes), lambda: None
    if kind == "faster-fifo":
        import faster_fifo

        q = faster_fifo.Queue(max_size_bytes=4096 * 80)
        return (lambda: (q.put, lambda: None)), (lambda: lambda: q.get(timeout=60)), lambda: None
    if kind == "pyzmq":
        import zmq

        path = Path(tempfile.gettempdir()) / f"hean-bench-{os.getpid()}-{tag}.ipc"
        addr = f"ipc://{path}"

        def sender():
            ctx = zmq.Context()
            s = ctx.socket(zmq.PUSH)
            s.connect(addr)

            def flush():
                s.close(linger=-1)  # block until queued messages are delivered
                ctx.term()

            return s.send, flush

        def receiver():
            s = zmq.Context().socket(zmq.PULL)
            s.bind(addr)
            return s.recv

        return sender, receiver, lambda: path.unlink(missing_ok=True)
    raise ValueError(f"unknown peer {kind!r}")


def peer_available(kind: str) -> str | None:
    """None when the peer can run, else why not."""
    mod = {"faster-fifo": "faster_fifo", "pyzmq": "zmq"}.get(kind)
    if mod is None:
        return None
    try:
        __import__(mod)
    except ImportError:
        return f"{kind} is not installed (pip install '.[bench]')"
    return None


def _peer_send(make_send, cpu, n, period_ns):
    _pin(cpu)
    send, flush = make_send()
    time.sleep(0.05)  # let the receiver bind/connect
    buf = bytearray(64)
    t_start = time.monotonic_ns() + 2_000_000
    for i in range(n):
        if period_ns:
            t_sched = t_start + i * period_ns
            while time.monotonic_ns() < t_sched:
                pass
        REC.pack_into(buf, 0, i, time.monotonic_ns())
        send(bytes(buf))
    flush()
    return n


def _peer_recv(make_recv, cpu, n):
    _pin(cpu)
    recv = make_recv()
    lat = np.empty(n, np.int64)
    t0 = 0
    for i in range(n):
        seq, stamp = REC.unpack_from(recv())
        t = time.monotonic_ns()
        if i == 0:
            t0 = t
        if seq != i:
            raise RuntimeError(f"peer delivered record {seq}, expected {i}")
        lat[i] = t - stamp
    return lat, (n - 1) * 1e9 / max(time.monotonic_ns() - t0, 1)


def peer_figures(kind: str, cpus, n_lat: int, period_ns: int, n_tp: int, timeout: float) -> dict:
    out = {}
    for what, n, period in (("lat", n_lat, period_ns), ("tp", n_tp, 0)):
        make_send, make_recv, cleanup = _peer_endpoints(kind, what)
        try:
            _, (lat, rate) = _run_pair(
                _peer_send, (make_send, cpus[0], n, period), _peer_recv, (make_recv, cpus[1], n), timeout
            )
        finally:
            cleanup()
        if what == "lat":
            hist = new_histogram()
            _hist_from(lat[min(n // 10, 1000) :], hist)
            out["hop"] = _summ(hist)
        else:
            out["msgs_per_s"] = rate
    return out


# ==========================================================================================================
# the C floor and the placement probe
# ==========================================================================================================
def floor_source() -> Path:
    """``tools/ring_floor.c``; FileNotFoundError with a one-line reason where this install has no source tree."""
    if not C_SOURCE.is_file():
        raise FileNotFoundError(
            f"the C peer needs HEAN's source tree: no {C_SOURCE} (install from a checkout: pip install -e .)"
        )
    return C_SOURCE


def build_floor(workdir: Path) -> Path:
    source = floor_source()
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise RuntimeError("no C compiler (cc/gcc) found: the floor and the placement probe need one")
    exe = workdir / "ring_floor"
    cmd = [cc, "-O3", "-march=native", "-pthread", "-o", str(exe), str(source)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"building {source.name} failed: {' '.join(cmd)}\n{res.stderr}")
    return exe


def _run_floor(exe: Path, mode: str, cpus, *args: int, timeout: float = 300) -> list[str]:
    """Run ``ring_floor MODE CPU_A CPU_B ARGS...``; its output words, the first checked to be ``mode``'s tag."""
    cmd = [str(exe), mode, str(cpus[0]), str(cpus[1]), *map(str, args)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True).stdout.split()
    tag = {"pingpong": "rtt_ns"}.get(mode, mode)
    if not out or out[0] != tag:
        raise RuntimeError(f"{' '.join(cmd)}: unexpected output {out[:8]}")
    return out


def _pcts(out: list[str]) -> tuple[int, int, int, int, int]:
    """The ``p50 min p90 p99 max`` a latency mode of ring_floor prints after its tag."""
    p50, lo, p90, p99, hi = map(int, out[1:6])
    return p50, lo, p90, p99, hi


def pingpong(exe: Path, cpus, samples: int, rounds: int = 100) -> dict:
    p50, lo, p90, p99, hi = _pcts(_run_floor(exe, "pingpong", cpus, samples, rounds, timeout=120))
    return {"rtt_p50_ns": p50, "rtt_min_ns": lo, "rtt_p90_ns": p90, "rtt_p99_ns": p99, "rtt_max_ns": hi}


def c_hop(exe: Path, cpus, n: int, period_ns: int, capacity: int) -> dict:
    """The C ring's one-hop latency, paced, measured exactly as the numba ring's (``ring_floor hop``)."""
    p50, lo, p90, p99, hi = _pcts(_run_floor(exe, "hop", cpus, n, period_ns, capacity))
    hop = {"min_ns": lo, "p50_ns": p50, "p90_ns": p90, "p99_ns": p99, "p999_ns": None, "p9999_ns": None}
    return {"hop": {**hop, "max_ns": hi}}


def c_ring(exe: Path, cpus, n: int, capacity: int) -> float:
    out = _run_floor(exe, "ring", cpus, n, capacity)
    if int(out[2]) != n * (n - 1) // 2:
        raise RuntimeError(f"C ring checksum {out[2]} != {n * (n - 1) // 2}")
    return float(out[1])


@dataclass
class Figure:
    name: str
    kind: str  # "latency" | "throughput" | "floor"
    placement: str
    probe_rtt_ns: tuple[int, int]
    value: dict = field(default_factory=dict)


class Harness:
    """Runs each figure between two placement probes and labels it."""

    def __init__(self, exe: Path, cpus, threshold_ns: int, retries: int, log):
        self.exe, self.cpus, self.threshold, self.retries, self.log = exe, cpus, threshold_ns, retries, log
        self.figures: list[Figure] = []

    def probe(self) -> int:
        return pingpong(self.exe, self.cpus, samples=200)["rtt_p50_ns"]

    def label(self, rtt: int) -> str:
        return "near" if rtt < self.threshold else "far"

    def run(self, name: str, kind: str, fn) -> Figure:
        for attempt in range(self.retries + 1):
            before = self.probe()
            LAST_PREEMPTIONS["count"] = -1
            value = fn()
            if LAST_PREEMPTIONS["count"] >= 0:
                value["preemptions"] = LAST_PREEMPTIONS["count"]
            after = self.probe()
            a, b = self.label(before), self.label(after)
            placement = a if a == b else "mixed"
            if placement != "mixed" or attempt == self.retries:
                break
            self.log(f"  {name}: placement changed during the run ({before} -> {after} ns), retrying")
        fig = Figure(name, kind, placement, (before, after), value)
        self.figures.append(fig)
        self.log(f"  {name:<34} [{placement}, probe rtt {before}/{after} ns] {_brief(kind, value)}")
        return fig


def _brief(kind: str, v: dict) -> str:
    if kind == "throughput":
        pre = f"  preempted {v['preemptions']}x" if "preemptions" in v else ""
        return f"{v['msgs_per_s'] / 1e6:.2f} M msgs/s{pre}"
    if kind == "floor":
        return f"one-way p50 {v['one_way_p50_ns']} ns (rtt p50 {v['rtt_p50_ns']} ns)"
    h = v["hop"]
    pre = f"  preempted {v['preemptions']}x" if "preemptions" in v else ""
    return f"p50 {h['p50_ns']} ns  p99 {h['p99_ns']} ns  max {h['max_ns']} ns{pre}"


# ==========================================================================================================
# report
# ==========================================================================================================
def floors_by_placement(figs: list[Figure]) -> dict[str, float]:
    out = {}
    for place in ("near", "far"):
        vals = [f.value["one_way_p50_ns"] for f in figs if f.kind == "floor" and f.placement == place]
        if vals:
            out[place] = float(np.median(vals))
    return out


def format_table(figs: list[Figure], floors: dict[str, float], c_rates: dict[str, float]) -> str:
    head = ("figure", "place", "min", "p50", "p90", "p99", "p99.9", "p99.99", "max", "msgs/s", "x floor", "preempt")
    rows = [head]

    def ns(v):
        return "-" if v is None else f"{v:,}"

    for f in figs:
        if f.kind == "floor":
            rows.append((f.name, f.placement, "-", ns(f.value["one_way_p50_ns"]), *["-"] * 5, "-", "1.00", "-"))
        elif f.kind == "latency":
            h = f.value["hop"]
            fl = floors.get(f.placement)
            ratio = f"{h['p50_ns'] / fl:.2f}" if fl else "n/a"
            vals = [ns(h[k]) for k in ("min_ns", "p50_ns", "p90_ns", "p99_ns", "p999_ns", "p9999_ns", "max_ns")]
            rows.append((f.name, f.placement, *vals, "-", ratio, str(f.value.get("preemptions", "-"))))
        else:
            rate = f.value["msgs_per_s"]
            c = c_rates.get(f.placement)
            ratio = f"{rate / c:.2f} (C ring)" if c and not f.name.startswith("C ring") else "-"
            pre = str(f.value.get("preemptions", "-"))
            rows.append((f.name, f.placement, *["-"] * 7, f"{rate / 1e6:,.2f} M", ratio, pre))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))) for r in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines) + (
        "\n(latencies in ns, one hop; x floor = p50 / C one-way p50 of the same placement;"
        "\n preempt = involuntary context switches of the two processes during the figure: 0 on a quiet machine)"
    )


def _pick(figs, name):
    for f in figs:
        if f.name == name:
            return f
    return None


def build_json(figs: list[Figure], floors, c_rates, args, machine) -> dict:
    hop = _pick(figs, f"ring hop @{args.rates[-1]:g}/s") or _pick(figs, "ring hop unpaced")
    c_hop_fig = _pick(figs, f"C ring hop @{args.rates[-1]:g}/s")
    placement = hop.placement if hop else "mixed"
    out = {
        "placement": placement,
        "floor_one_way_p50_ns": floors.get(placement),
        "floors_one_way_p50_ns": floors,
        "hop": {k: hop.value["hop"][k] for k in ("p50_ns", "p90_ns", "p99_ns", "p999_ns", "p9999_ns", "max_ns")}
        if hop
        else None,
        # the C ring of the same design, paced at the same rate and measured the same way, next to the hop
        "c_ring_hop": {"p50_ns": c_hop_fig.value["hop"]["p50_ns"], "placement": c_hop_fig.placement}
        if c_hop_fig
        else None,
        "throughput": {},
        "peers": {},
        "figures": [
            {"name": f.name, "kind": f.kind, "placement": f.placement, "probe_rtt_ns": list(f.probe_rtt_ns), **f.value}
            for f in figs
        ],
        "machine": machine,
        "command": "hean bench ring " + " ".join(args.argv),
    }
    for key, name in (
        ("single_msgs_per_s", "ring single push/pop"),
        ("batch_msgs_per_s", "ring single push, batch pop"),
        ("batch_publish_msgs_per_s", "ring batch push/pop (64)"),
        ("c_ring_msgs_per_s", "C ring single push/pop"),
    ):
        f = _pick(figs, name)
        if f:
            out["throughput"][key] = f.value["msgs_per_s"]
            out["throughput"][key.replace("msgs_per_s", "placement")] = f.placement
    for f in figs:
        if f.name.startswith("peer "):
            peer = f.name.split()[1]
            d = out["peers"].setdefault(peer, {})
            if f.kind == "latency":
                d["p50_ns"] = f.value["hop"]["p50_ns"]
                d["latency_placement"] = f.placement
            else:
                d["msgs_per_s"] = f.value["msgs_per_s"]
                d["throughput_placement"] = f.placement
    return out


def check_targets(js: dict) -> list[str]:
    """The issue's targets, judged only on near-placement figures of this run."""
    lines = []
    fl = js["floors_one_way_p50_ns"].get("near")

    def verdict(ok):
        return "PASS" if ok else "MISS"

    hop = js["hop"]
    if js["placement"] == "near" and fl and hop:
        ratio = hop["p50_ns"] / fl
        lines.append(f"hop p50 {hop['p50_ns']} ns <= 1.5 x C floor {fl:.0f} ns: {verdict(ratio <= 1.5)} ({ratio:.2f}x)")
    else:
        lines.append("hop p50 vs floor: not judged (hop or floor not measured in a near placement)")
    c = js.get("c_ring_hop")
    if hop and c and c["placement"] == js["placement"]:
        lines.append(
            f"  (context: a C ring of the same design, measured the same way: p50 {c['p50_ns']} ns; "
            f"HEAN's hop is {hop['p50_ns'] / max(c['p50_ns'], 1):.2f}x it)"
        )
    tp = js["throughput"]
    for key, target in (
        ("single_msgs_per_s", 50e6),
        ("batch_msgs_per_s", 100e6),
        ("batch_publish_msgs_per_s", 300e6),
    ):
        if key in tp and tp[key.replace("msgs_per_s", "placement")] == "near":
            lines.append(f"{key} {tp[key] / 1e6:.1f} M/s >= {target / 1e6:.0f} M/s: {verdict(tp[key] >= target)}")
        elif key in tp:
            lines.append(f"{key}: not judged ({tp[key.replace('msgs_per_s', 'placement')]} placement)")
    for peer, d in js["peers"].items():
        if hop and "p50_ns" in d:
            r = d["p50_ns"] / max(hop["p50_ns"], 1)
            lines.append(f"p50 vs {peer}: {r:,.0f}x lower (target >= 100x): {verdict(r >= 100)}")
        if "msgs_per_s" in d and "single_msgs_per_s" in tp:
            r = tp["single_msgs_per_s"] / d["msgs_per_s"]
            lines.append(f"single-record throughput vs {peer}: {r:,.0f}x (target >= 50x): {verdict(r >= 50)}")
    return lines


def machine_info(cpus) -> dict:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cpus_online": os.cpu_count(),
        "cpus_used": list(cpus),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg": os.getloadavg(),
    }


# ==========================================================================================================
# main
# ==========================================================================================================
def _parse(argv: list[str]) -> argparse.Namespace:
    p = HeanParser(prog="hean bench ring", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpus", default=None, help="producer,consumer CPUs (default: the first two allowed)")
    p.add_argument("--rates", default="100000,1000000", help="paced hop rates, msgs/s (comma list)")
    p.add_argument("--duration", type=float, default=0.3, help="seconds per paced hop figure")
    p.add_argument("--unpaced", type=int, default=300_000, help="records in the unpaced hop figure")
    p.add_argument("--records", type=int, default=1 << 24, help="records per throughput figure")
    p.add_argument("--capacity", type=int, default=8192, help="ring capacity (slots of 64 bytes)")
    p.add_argument("--peers", default="mp.Queue,mp.Pipe,pyzmq,faster-fifo", help="Python IPC peers ('' for none)")
    p.add_argument("--peer-rate", type=float, default=10_000, help="paced rate for peer latency, msgs/s")
    p.add_argument("--peer-records", type=int, default=5000, help="records for peer latency")
    p.add_argument("--peer-tp-records", type=int, default=100_000, help="records for peer throughput")
    p.add_argument("--near-threshold-ns", type=int, default=250, help="probe round trip below this = near")
    p.add_argument("--retries", type=int, default=1, help="re-runs of a figure whose placement changed")
    p.add_argument("--timeout", type=float, default=120, help="seconds before a stuck figure is killed")
    p.add_argument(
        "--json", metavar="FILE", help="write the results as JSON to FILE ('-': to stdout, the table to stderr)"
    )
    p.add_argument("--quiet", action="store_true", help="only the table")
    args = p.parse_args(argv)
    args.argv = argv
    args.rates = [float(r) for r in args.rates.split(",") if r.strip()]
    args.peers = [x.strip() for x in args.peers.split(",") if x.strip()]
    return args


def _choose_cpus(spec: str | None) -> tuple[int, int]:
    allowed = sorted(os.sched_getaffinity(0))
    if spec:
        a, b = (int(x) for x in spec.split(","))
    elif len(allowed) >= 2:
        a, b = allowed[0], allowed[1]
    else:
        raise SystemExit(f"hean bench ring: needs two CPUs to pin producer and consumer; allowed: {allowed}")
    if a == b or a not in allowed or b not in allowed:
        raise SystemExit(f"hean bench ring: --cpus {a},{b} must be two different CPUs among {allowed}")
    return a, b


def _warm_up() -> None:
    """Compile (or load from the numba cache) every loop in this process: forked children inherit it."""
    name = _ring_name("warm")
    with create(name, MARKET_EVENT, 8) as ring:
        try:
            hop, sched, scratch = new_histogram(), new_histogram(), np.zeros(1, MARKET_EVENT)
            _lat_produce(ring.hdr, ring.slots, 0, 4, 0, 0)
            _lat_consume(ring.hdr, ring.slots, 0, 4, 0, hop, sched)
            _tp_produce(ring.hdr, ring.slots, scratch, 0, 4, 1)
            _tp_consume(ring.hdr, ring.slots, 0, 4, False, 0, 0)
            _tp_produce(ring.hdr, ring.slots, scratch, 0, 4, 4)
            _tp_consume(ring.hdr, ring.slots, 0, 4, True, 0, 0)
            _hist_from(np.arange(3, dtype=np.int64), hop)
        finally:
            ring.unlink()


def run_all(args, log) -> tuple[list[Figure], dict]:
    cpus = _choose_cpus(args.cpus)
    t0 = time.monotonic()
    _warm_up()
    log(f"compiled loops in {time.monotonic() - t0:.1f} s; producer CPU {cpus[0]}, consumer CPU {cpus[1]}")
    with tempfile.TemporaryDirectory(prefix="hean-bench-ring-") as tmp:
        exe = build_floor(Path(tmp))
        h = Harness(exe, cpus, args.near_threshold_ns, args.retries, log)

        def floor():
            v = pingpong(exe, cpus, samples=2000)
            v["one_way_p50_ns"] = v["rtt_p50_ns"] // 2
            return v

        h.run("C cache-line floor (rtt/2)", "floor", floor)
        for rate in args.rates:
            n = max(int(rate * args.duration), 2000)
            period = int(round(1e9 / rate))
            h.run(
                f"ring hop @{rate:g}/s",
                "latency",
                lambda n=n, p=period: ring_latency(cpus, n, p, args.capacity, args.timeout),
            )
            h.run(
                f"C ring hop @{rate:g}/s",
                "latency",
                lambda n=n, p=period: c_hop(exe, cpus, n, p, args.capacity),
            )
        h.run("ring hop unpaced", "latency", lambda: ring_latency(cpus, args.unpaced, 0, args.capacity, args.timeout))
        for name, batch, bc in (
            ("ring single push/pop", 1, False),
            ("ring single push, batch pop", 1, True),
            ("ring batch push/pop (64)", BATCH, True),
        ):
            h.run(
                name,
                "throughput",
                lambda b=batch, c=bc: {
                    "msgs_per_s": ring_throughput(cpus, args.records, b, c, args.capacity, args.timeout)
                },
            )
        h.run(
            "C ring single push/pop",
            "throughput",
            lambda: {"msgs_per_s": c_ring(exe, cpus, args.records, args.capacity)},
        )
        peer_period = int(round(1e9 / args.peer_rate))
        h.run(
            f"ring hop @{args.peer_rate:g}/s (peer rate)",
            "latency",
            lambda: ring_latency(cpus, args.peer_records, peer_period, args.capacity, args.timeout),
        )
        for peer in args.peers:
            why = peer_available(peer)
            if why:
                log(f"  peer {peer}: skipped: {why}")
                continue
            res = {}

            def lat(peer=peer, res=res):
                res.update(peer_figures(peer, cpus, args.peer_records, peer_period, args.peer_tp_records, args.timeout))
                return {"hop": res["hop"]}

            f = h.run(f"peer {peer} hop @{args.peer_rate:g}/s", "latency", lat)
            # the peer's throughput came from the same run; label it with the same probes
            h.figures.append(
                Figure(
                    f"peer {peer} throughput",
                    "throughput",
                    f.placement,
                    f.probe_rtt_ns,
                    {"msgs_per_s": res["msgs_per_s"]},
                )
            )
            log(f"  {'peer ' + peer + ' throughput':<34} [{f.placement}] {res['msgs_per_s'] / 1e6:.3f} M msgs/s")
        h.run("C cache-line floor (rtt/2), end", "floor", floor)
    return h.figures, {"cpus": cpus}


def main(argv: list[str]) -> int:
    args = _parse(argv)
    try:
        floor_source()  # before the loops compile: a missing C peer is one line, not a traceback minutes later
    except FileNotFoundError as e:
        print(f"hean bench ring: {e}", file=sys.stderr)
        return 2

    def log(msg):
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    figs, meta = run_all(args, log)
    floors = floors_by_placement(figs)
    c_rates = {f.placement: f.value["msgs_per_s"] for f in figs if f.name == "C ring single push/pop"}
    machine = machine_info(meta["cpus"])
    js = build_json(figs, floors, c_rates, args, machine)
    out = text_out(args.json)  # with --json -, stdout is the JSON alone
    print(format_table(figs, floors, c_rates), file=out)
    print(file=out)
    print("targets (near placement only):", file=out)
    for line in check_targets(js):
        print("  " + line, file=out)
    print(
        f"\nmachine: {machine['cpu']}, {machine['cpus_online']} CPUs, CPUs used {meta['cpus']}, "
        f"Linux {machine['kernel']}, Python {machine['python']}, load avg {machine['loadavg'][0]:.2f}",
        file=out,
    )
    if args.json:
        emit_json(args.json, js)
    return 0
