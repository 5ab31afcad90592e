"""``hean top``: a live, read-only view of a running engine (rich).

Three layers, so each can be used and tested alone:

* :class:`TopSource` attaches read-only to a run (via its manifest) and turns each :meth:`~TopSource.sample`
  into a :class:`TopFrame`: per-stage interval and since-start statistics, ring occupancy, the end-to-end
  tick-to-trade histogram, the risk state, and per-process facts from psutil (CPU last ran on, context
  switches).
* :func:`render` is pure: a TopFrame in, a rich renderable out (tests render it into
  ``Console(record=True)``; ``hean run --top`` can render frames of its own run).
* :func:`run_top` is the live loop: at most 4 refreshes per second, ``q`` quits (keys are read in cbreak
  mode when stdin is a terminal), terminal resizes are picked up on the next frame (rich measures the
  console on every render), and it returns when the engine's pid dies or its manifest disappears.

Percentiles the interval's sample count cannot support are hidden (shown as ``-``; rule in
:func:`hean.telemetry.histogram.supported_percentiles`). Conventions the view relies on: a stage's own
processing time is its histogram ``service``; for input ring ``R`` the consuming stage keeps either
``queue.R`` (time the record waited in the ring) or ``age.R`` (now - ts_origin when the stage takes the
record: the tick-to-here latency), shown in the ring's row; the tick-to-trade latency is a histogram named
``e2e`` (in the router).
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from hean.procs import process_alive as pid_alive
from hean.shm import SHM_DIR
from hean.telemetry.block import (
    C_REJECT_BASE,
    C_START_NS,
    N_REJECT_REASONS,
    ST_RUNNING,
    ST_STOPPED,
    BlockError,
    TelemetrySegment,
    attach_block,
)
from hean.telemetry.manifest import Manifest, ManifestError, RingInfo, StageInfo, find_run, manifest_name
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

__all__ = [
    "MAX_REFRESH_HZ",
    "ProcInfo",
    "RingRow",
    "StageRow",
    "TopFrame",
    "TopSource",
    "render",
    "ring_occupancy",
    "run_top",
]

MAX_REFRESH_HZ = 4.0
SPARK = "▁▂▃▄▅▆▇█"
STALL_NS = 1_000_000_000  # a running stage whose heartbeat is older than this is flagged


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
        return frame

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


# ---------------------------------------------------------------------------------------------------------
# rendering (pure)
# ---------------------------------------------------------------------------------------------------------
def _ns(ns: int | None) -> str:
    if ns is None:
        return "-"
    if ns < 1_000:
        return f"{ns}ns"
    if ns < 1_000_000:
        return f"{ns / 1e3:.3g}us" if ns < 100_000 else f"{ns / 1e3:.0f}us"
    if ns < 1_000_000_000:
        return f"{ns / 1e6:.3g}ms" if ns < 100_000_000 else f"{ns / 1e6:.0f}ms"
    return f"{ns / 1e9:.2f}s"


def _rate(r: float) -> str:
    if r >= 1e6:
        return f"{r / 1e6:.2f}M"
    if r >= 1e3:
        return f"{r / 1e3:.1f}k"
    return f"{r:.0f}"


def _pcts(h: HistStats | None, short: bool = False) -> str:
    """``p50 / p99 / p99.9 / max`` (``p99 / max`` when short), ``-`` where the count cannot support it."""
    if h is None:
        return "-"
    mx = h.max_ns if h.count else None
    vals = [h.get(99.0), mx] if short else [h.get(50.0), h.get(99.0), h.get(99.9), mx]
    return " / ".join(_ns(v) for v in vals)


def _bar(fill: int, cap: int, high: int, width: int = 20) -> Text:
    """``████▒▒░░░░`` fill (solid) and high-water mark (shaded) of a ring."""
    if cap <= 0:
        return Text("-")
    f = min(width, round(width * fill / cap))
    h = max(f, min(width, round(width * high / cap)))
    style = "green" if fill < cap / 2 else "yellow" if fill < cap else "red"
    t = Text("█" * f, style=style)
    t.append("▒" * (h - f), style="dim")
    t.append("░" * (width - h), style="dim")
    return t


def _spark(values: list[int]) -> str:
    if not values:
        return ""
    lo, hi = min(values), max(values)
    span = max(1, hi - lo)
    return "".join(SPARK[min(len(SPARK) - 1, (v - lo) * len(SPARK) // span)] for v in values)


def _uptime(seconds: float) -> str:
    s = max(0, int(seconds))
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _header(f: TopFrame) -> Text:
    m = f.manifest
    t = Text()
    t.append("HEAN top ", style="bold")
    t.append(f"run {m.run_id}", style="bold cyan")
    t.append(f"  engine pid {m.engine_pid}  uptime {_uptime((f.now_ns - m.start_ns) / 1e9)}")
    t.append(f"  clock {m.clock_source}  CPUs {','.join(map(str, m.cpus)) or '-'}")
    if f.interval_s:
        t.append(f"  interval {f.interval_s:.2f}s")
    if m.workers:
        places = [
            f"{w.name}@cpu{w.cpu if w.cpu >= 0 else '?'}[{','.join(w.stages)}]{' ' + w.wait if w.wait else ''}"
            for w in m.workers
        ]
        t.append("\nplacement: " + "  ".join(places))
    if f.status:
        t.append(f"\n{f.status}", style="bold red")
    return t


def _state(s: StageStats, now_ns: int) -> Text:
    if s.state == ST_STOPPED:
        return Text("stop", style="dim")
    if s.state == ST_RUNNING:
        if s.heartbeat_ns and now_ns - s.heartbeat_ns > STALL_NS:
            return Text("stall", style="bold red")
        return Text("run", style="green")
    return Text("init", style="yellow")


# layout tiers: which columns fit the console's width (re-chosen on every render, so resizes just work)
NARROW, MEDIUM, WIDE = 0, 1, 2
MEDIUM_WIDTH = 120
WIDE_WIDTH = 185


def _tier(width: int) -> int:
    return WIDE if width >= WIDE_WIDTH else MEDIUM if width >= MEDIUM_WIDTH else NARROW


def _table(title: str, columns: list[tuple[str, str, int]], rows: list[dict], tier: int) -> Table:
    """A table with the columns whose tier fits; ``columns`` are (header, justify, min tier)."""
    t = Table(title=title, expand=False, title_justify="left")
    shown = [(h, j) for h, j, lvl in columns if lvl <= tier]
    for h, j in shown:
        t.add_column(h, justify=j, no_wrap=True)
    for row in rows:
        t.add_row(*[row.get(h, "-") for h, _ in shown])
    return t


def _stage_table(f: TopFrame, tier: int) -> Table:
    pct_i = "p50 / p99 / p99.9 / max (interval)" if tier >= MEDIUM else "p99 / max"
    columns = [
        ("stage", "left", NARROW), ("st", "left", NARROW), ("pid", "right", MEDIUM),
        ("cpu pin/last", "right", MEDIUM), ("in/s", "right", NARROW), ("out/s", "right", NARROW),
        (pct_i, "right", NARROW), ("p50 / p99 / p99.9 / max (since start)", "right", WIDE),
        ("work%", "right", NARROW), ("ctxsw/s", "right", WIDE), ("drops", "right", NARROW),
        ("rejects", "right", MEDIUM),
    ]  # fmt: skip
    rows = []
    for row in f.stages:
        s = row.stats
        if s is None:
            rows.append({"stage": row.info.name, "st": Text("-", style="dim"), pct_i: row.error})
            continue
        pin = str(s.cpu_pinned) if s.cpu_pinned >= 0 else "-"
        last = str(row.proc.last_cpu) if row.proc.last_cpu is not None else "-"
        svc = s.interval_hists.get("service")
        rows.append(
            {
                "stage": row.info.name,
                "st": _state(s, f.now_ns),
                "pid": str(s.pid or "-"),
                "cpu pin/last": f"{pin}/{last}",
                "in/s": _rate(s.in_rate),
                "out/s": _rate(s.out_rate),
                pct_i: _pcts(svc) if tier >= MEDIUM else _pcts(svc, short=True),
                "p50 / p99 / p99.9 / max (since start)": _pcts(s.total_hists.get("service")),
                "work%": f"{s.useful_pct:.1f}" if s.useful_pct is not None else "-",
                "ctxsw/s": f"{row.proc.ctx_rate:.0f}" if row.proc.ctx_rate is not None else "-",
                "drops": f"{s.drops:,}",
                "rejects": f"{s.rejects:,}",
            }
        )
    title = "stages (service time)" if tier < WIDE else "stages (service time: interval | since start)"
    return _table(title, columns, rows, tier)


def _ring_table(f: TopFrame, tier: int) -> Table:
    columns = [
        ("ring", "left", NARROW), ("from -> to", "left", MEDIUM), ("occupancy", "left", NARROW),
        ("fill/cap", "right", NARROW), ("high-water", "right", NARROW), ("full", "right", MEDIUM),
        ("drops", "right", NARROW), ("queue|age p99", "right", NARROW),
    ]  # fmt: skip
    rows = []
    for r in f.rings:
        row = {"ring": r.info.name, "from -> to": f"{r.info.producer or '?'} -> {r.info.consumer or '?'}"}
        if r.error:
            row["occupancy"] = Text(r.error, style="dim")
        else:
            row.update(
                {
                    "occupancy": _bar(r.fill, r.capacity, r.high_water, 20 if tier >= MEDIUM else 10),
                    "fill/cap": f"{r.fill:,}/{r.capacity:,}",
                    "high-water": f"{r.high_water:,}",
                    "full": f"{r.full:,}",
                    "drops": f"{r.drops:,}",
                    "queue|age p99": f"{_ns(r.queue.get(99.0))} {r.queue_kind}" if r.queue else "-",
                }
            )
        rows.append(row)
    return _table("rings (occupancy; ▒ = high-water mark)", columns, rows, tier)


def _e2e_table(f: TopFrame, tier: int) -> Table:
    pct_i = "p50 / p99 / p99.9 / max (interval)" if tier >= MEDIUM else "p99 / max"
    columns = [
        ("stage", "left", NARROW), ("samples", "right", NARROW), (pct_i, "right", NARROW),
        ("p50 / p99 / p99.9 / max (since start)", "right", WIDE), ("p99 history", "left", NARROW),
    ]  # fmt: skip
    if f.e2e_stage is None:
        rows = [{"stage": "-", pct_i: "no stage publishes an e2e histogram", "p99 history": ""}]
    else:
        hist_len = 30 if tier < MEDIUM else 60
        rows = [
            {
                "stage": f"tick-to-trade ({f.e2e_stage})" if tier >= MEDIUM else f"e2e ({f.e2e_stage})",
                "samples": f"{f.e2e_interval.count if f.e2e_interval else 0:,}",
                pct_i: _pcts(f.e2e_interval, short=tier < MEDIUM),
                "p50 / p99 / p99.9 / max (since start)": _pcts(f.e2e_total),
                "p99 history": Text(_spark(f.e2e_p99_history[-hist_len:]), style="cyan"),
            }
        ]
    return _table("tick-to-trade (end to end)", columns, rows, tier)


def _risk_panel(f: TopFrame) -> Panel | Text:
    r = f.risk
    if r is None:
        return Text("risk: no risk state published", style="dim")
    color = {"ACTIVE": "green", "REDUCING": "yellow", "HALTED": "bold red"}.get(r.trading_state, "white")
    t = Text("trading ")
    t.append(r.trading_state, style=color)
    t.append(f"   open orders {r.open_orders}   rejects {r.rejects}")
    t.append(f"   PnL realized {r.realized_pnl:,.2f}  unrealized {r.unrealized_pnl:,.2f}  fees {r.fees:,.2f}")
    if f.risk_rejects:
        t.append("\nrejects by reason: " + ", ".join(f"{k} {v}" for k, v in f.risk_rejects.items()))
    for p in r.positions:
        t.append(
            f"\n  {p['symbol']}: position {p['position']} lots @ {p['avg_price']:,.2f}"
            f"  realized {p['realized']:,.2f}  unrealized {p['unrealized']:,.2f}"
        )
    return Panel(t, title="risk", title_align="left", expand=False)


class _View:
    """A frame laid out for the width it is rendered at (rich asks again after every resize)."""

    def __init__(self, frame: TopFrame):
        self.frame = frame

    def __rich_console__(self, console: Console, options):
        f, tier = self.frame, _tier(options.max_width)
        yield Group(_header(f), _stage_table(f, tier), _ring_table(f, tier), _e2e_table(f, tier), _risk_panel(f))


def render(frame: TopFrame):
    """The whole screen for one frame (a rich renderable; columns adapt to the console width)."""
    return _View(frame)


# ---------------------------------------------------------------------------------------------------------
# the live loop
# ---------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _keys(enabled: bool):
    """Yield a function returning pending key presses ('' when none); cbreak mode on a terminal only."""
    if not enabled or not sys.stdin.isatty():
        yield lambda timeout: (time.sleep(timeout), "")[1]
        return
    import termios
    import tty

    fd = sys.stdin.fileno()
    old = termios.tcgetattr(fd)
    tty.setcbreak(fd)

    def read(timeout: float) -> str:
        ready, _, _ = select.select([fd], [], [], timeout)
        return os.read(fd, 32).decode(errors="ignore") if ready else ""

    try:
        yield read
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)


def run_top(
    run_id: str | None = None,
    duration: float | None = None,
    console: Console | None = None,
    refresh_hz: float = MAX_REFRESH_HZ,
    read_keys: bool = True,
    stop: Callable[[], bool] | None = None,
    on_frame: Callable[[TopFrame], None] | None = None,
) -> int:
    """Show the live view until ``q``, the engine stops, ``duration`` seconds pass or ``stop()`` is true.

    ``on_frame`` sees every frame (e.g. to log it). Returns 0 after a normal end, 1 when no run could be
    attached (the reason is printed).
    """
    from rich.live import Live

    console = console or Console()
    try:
        source = TopSource.attach(run_id)
    except ManifestError as e:
        console.print(f"hean top: {e}")
        return 1
    period = 1.0 / min(MAX_REFRESH_HZ, max(0.1, refresh_hz))
    t_end = None if duration is None else time.monotonic() + duration
    why = ""
    try:
        with _keys(read_keys) as keys, Live(console=console, auto_refresh=False, transient=False) as live:
            while True:
                frame = source.sample()
                ok, why = source.alive()
                if not ok:
                    frame.status = why
                if on_frame is not None:
                    on_frame(frame)
                live.update(render(frame), refresh=True)
                if not ok:
                    break
                if stop is not None and stop():
                    break
                if t_end is not None and time.monotonic() >= t_end:
                    break
                deadline = time.monotonic() + period
                quit_ = False
                while (left := deadline - time.monotonic()) > 0:
                    if "q" in keys(left).lower():
                        quit_ = True
                        break
                if quit_:
                    break
    finally:
        source.close()
    if why:
        if not console.is_terminal:
            console.line()  # a non-terminal Live leaves its last frame without a newline
        console.print(f"hean top: {why}")
    return 0
