"""``hean top``'s data side: attach read-only to a running engine and sample it into plain frames.

:class:`TopSource` attaches to a run (via its manifest) and turns each :meth:`~TopSource.sample` into a
:class:`TopFrame`: per-stage interval and since-start statistics, ring occupancy, the end-to-end
tick-to-trade histogram, the risk state, and per-process facts from psutil (CPU last ran on, context
switches). A frame is plain data, so it can be asserted on without a screen; drawing it (rich) and the live
loop are the CLI's (:mod:`hean.commands.views.top`), which keeps this layer free of any terminal code.

Conventions the frames rely on: a stage's own processing time is its histogram ``service``; for input
ring ``R`` the consuming stage keeps either ``queue.R`` (time the record waited in the ring) or ``age.R``
(now - ts_origin when the stage takes the record: the tick-to-here latency), reported with the ring; the
tick-to-trade latency is a histogram named ``e2e`` (in the router). Percentiles an interval's sample count
cannot support are left out of its :class:`~hean.telemetry.reader.HistStats` (rule in
:func:`hean.telemetry.histogram.supported_percentiles`).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import psutil

from hean.procs import process_alive as pid_alive
from hean.shm import SHM_DIR
from hean.telemetry.block import (
    C_REJECT_BASE,
    C_START_NS,
    N_REJECT_REASONS,
    BlockError,
    TelemetrySegment,
    attach_block,
)
from hean.telemetry.manifest import Manifest, RingInfo, StageInfo, find_run, manifest_name
from hean.telemetry.reader import (
    HistStats,
    RiskState,
    Snapshot,
    StageStats,
    hist_stats,
    interval,
    risk_state,
    snapshot,
    stage_stats,
)

__all__ = ["ProcInfo", "RingRow", "StageRow", "TopFrame", "TopSource", "ring_occupancy"]


@dataclass
class ProcInfo:
    """psutil facts about the process running a stage (None when unavailable)."""

    last_cpu: int | None = None
    ctx_switches: int | None = None
    ctx_rate: float | None = None


@dataclass
class StageRow:
    info: StageInfo
    stats: StageStats | None  # None: the stage's block is not there (yet)
    proc: ProcInfo = field(default_factory=ProcInfo)
    error: str = ""


@dataclass
class RingRow:
    info: RingInfo
    capacity: int = 0
    fill: int = 0
    high_water: int = 0
    full: int = 0
    drops: int = 0
    queue: HistStats | None = None  # interval histogram of the consumer's queue.<ring> or age.<ring>
    queue_kind: str = ""  # "queue" or "age": which of the two it is
    error: str = ""


@dataclass
class TopFrame:
    """Everything one screen shows (plain data: render it, assert on it)."""

    manifest: Manifest
    now_ns: int
    interval_s: float
    stages: list[StageRow]
    rings: list[RingRow]
    e2e_stage: str | None = None
    e2e_interval: HistStats | None = None
    e2e_total: HistStats | None = None
    e2e_p99_history: list[int] = field(default_factory=list)
    risk: RiskState | None = None
    risk_rejects: dict[str, int] = field(default_factory=dict)
    status: str = ""  # e.g. "engine stopped"
    # a live feed's counters (the feed block's live_* words, hean.live.ingest), without the prefix; {} otherwise
    live: dict[str, int] = field(default_factory=dict)


def ring_occupancy(segment: str) -> dict:
    """Fill level, capacity, high-water mark, full count and drops of a ring (through hean.rings).

    Isolated here so the ring's own reader stays the one place that knows its header.
    """
    from hean.rings.inspect import ring_info

    i = ring_info(segment)
    return {"capacity": i.capacity, "fill": i.fill, "high_water": i.high_water, "full": i.full, "drops": i.drops}


class TopSource:
    """Samples one run's telemetry; keeps the previous snapshots for interval views."""

    def __init__(self, manifest: Manifest, history: int = 60):
        self.manifest = manifest
        self.blocks: dict[str, TelemetrySegment] = {}
        self.prev: dict[str, Snapshot] = {}
        self.procs: dict[int, psutil.Process] = {}
        self.prev_ctx: dict[int, tuple[int, int]] = {}
        self.e2e_history: deque[int] = deque(maxlen=history)

    @classmethod
    def attach(cls, run_id: str | None = None) -> TopSource:
        """Attach to ``run_id``, or to the only running engine; ManifestError explains otherwise."""
        return cls(find_run(run_id))

    def alive(self) -> tuple[bool, str]:
        """(True, "") while the engine runs; else (False, why)."""
        m = self.manifest
        if not (SHM_DIR / manifest_name(m.run_id)).exists():
            return False, f"run {m.run_id} ended (manifest removed)"
        if not pid_alive(m.engine_pid):
            return False, f"run {m.run_id} ended (engine pid {m.engine_pid} exited)"
        return True, ""

    def _block(self, name: str) -> TelemetrySegment | None:
        seg = self.blocks.get(name)
        if seg is None:
            try:
                seg = attach_block(name, readonly=True)
            except BlockError:
                return None
            self.blocks[name] = seg
        return seg

    def _proc(self, pid: int, now_ns: int) -> ProcInfo:
        if pid <= 0:
            return ProcInfo()
        try:
            p = self.procs.get(pid) or self.procs.setdefault(pid, psutil.Process(pid))
            with p.oneshot():
                cpu = p.cpu_num()
                ctx = p.num_ctx_switches()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            self.procs.pop(pid, None)
            return ProcInfo()
        total = int(ctx.voluntary + ctx.involuntary)
        rate = None
        if pid in self.prev_ctx:
            t0, c0 = self.prev_ctx[pid]
            if now_ns > t0:
                rate = (total - c0) / ((now_ns - t0) / 1e9)
        self.prev_ctx[pid] = (now_ns, total)
        return ProcInfo(cpu, total, rate)

    def _interval(self, name: str, cur: Snapshot) -> Snapshot:
        prev = self.prev.get(name)
        if prev is None:  # first look: since the stage started
            start = int(cur.counters[C_START_NS]) if cur.counters[C_START_NS] > 0 else cur.t_ns
            prev = Snapshot(start, cur.counters * 0, cur.hists * 0, cur.risk * 0)
        self.prev[name] = cur
        return interval(prev, cur)

    def sample(self) -> TopFrame:
        """Take one frame now."""
        now = time.monotonic_ns()
        m = self.manifest
        rows: list[StageRow] = []
        ivs: dict[str, tuple[TelemetrySegment, Snapshot, Snapshot]] = {}
        dt = 0.0
        proc_cache: dict[int, ProcInfo] = {}
        for st in m.stages:
            seg = self._block(st.block)
            if seg is None:
                rows.append(StageRow(st, None, error="no telemetry block yet"))
                continue
            cur = snapshot(seg, now)
            iv = self._interval(st.block, cur)
            ivs[st.name] = (seg, iv, cur)
            stats = stage_stats(seg, iv, cur)
            dt = max(dt, iv.t_ns / 1e9)
            if stats.pid not in proc_cache:
                proc_cache[stats.pid] = self._proc(stats.pid, now)
            rows.append(StageRow(st, stats, proc_cache[stats.pid]))
        frame = TopFrame(m, now, dt, rows, self._rings(ivs))
        self._e2e(frame, ivs)
        self._risk(frame)
        self._live(frame, ivs)
        return frame

    def _live(self, frame: TopFrame, ivs) -> None:
        """The live feed's counters, when the run has one (its client has connected or tried to)."""
        if "feed" not in ivs:
            return
        seg, _, cur = ivs["feed"]
        names = [n for n in getattr(seg, "user_counters", []) if n.startswith("live_")]
        values = {n[5:]: int(cur.counters[seg.user_counter(n)]) for n in names}
        if values.get("connects", 0) or values.get("frames", 0) or values.get("stale_symbols", 0):
            frame.live = values

    def _rings(self, ivs) -> list[RingRow]:
        out = []
        for r in self.manifest.rings:
            row = RingRow(r)
            try:
                occ = ring_occupancy(r.segment)
                row.capacity, row.fill, row.high_water = occ["capacity"], occ["fill"], occ["high_water"]
                row.full, row.drops = occ["full"], occ["drops"]
            except Exception as e:  # a ring that is gone or not yet created: show why, keep going
                msg = str(e).split("\n")[0]
                row.error = "missing (no segment)" if "not found" in msg else msg[:40]
            if r.consumer in ivs:
                seg, iv, _ = ivs[r.consumer]
                for kind in ("queue", "age"):
                    name = f"{kind}.{r.name}"
                    if name in seg.hist_names:
                        row.queue = hist_stats(iv.hists[seg.hist_names.index(name)])
                        row.queue_kind = kind
                        break
            out.append(row)
        return out

    def _e2e(self, frame: TopFrame, ivs) -> None:
        for stage, (seg, iv, cur) in ivs.items():
            if "e2e" in seg.hist_names:
                i = seg.hist_names.index("e2e")
                frame.e2e_stage = stage
                frame.e2e_interval = hist_stats(iv.hists[i])
                frame.e2e_total = hist_stats(cur.hists[i])
                p99 = frame.e2e_interval.get(99.0)
                if p99 is not None:
                    self.e2e_history.append(p99)
                break
        frame.e2e_p99_history = list(self.e2e_history)

    def _risk(self, frame: TopFrame) -> None:
        name = self.manifest.risk_block
        seg = self._block(name) if name else None
        if seg is None:
            return
        frame.risk = risk_state(seg.block.risk.copy(), self.manifest.symbols)
        reasons = self.manifest.reject_reasons
        c = seg.block.counters.copy()
        for r in range(N_REJECT_REASONS):
            if c[C_REJECT_BASE + r]:
                frame.risk_rejects[reasons[r] if r < len(reasons) and reasons[r] else f"reason {r}"] = int(
                    c[C_REJECT_BASE + r]
                )

    def close(self) -> None:
        for seg in self.blocks.values():
            seg.close()
        self.blocks.clear()
