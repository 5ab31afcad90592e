"""``hean top``'s screen: a :class:`~hean.telemetry.top.TopFrame` drawn with rich, and the live loop.

* :func:`render` is pure: a TopFrame in, a rich renderable out (tests render it into
  ``Console(record=True)``; ``hean run --top`` renders frames of its own run). Which columns show is chosen
  from the console's width at every render, so a resized terminal just works.
* :func:`run_top` is the live loop: at most 4 refreshes per second, ``q`` quits (keys are read in cbreak
  mode when stdin is a terminal), and it returns when the engine's pid dies or its manifest disappears.

Sampling the run is the telemetry layer's (:class:`hean.telemetry.top.TopSource`); this module only draws.
Percentiles the interval's sample count cannot support are shown as ``-``.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import time
from collections.abc import Callable

from rich.console import Console, ConsoleRenderable, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from hean.commands.views.units import fmt_ns, fmt_rate
from hean.telemetry.block import ST_RUNNING, ST_STOPPED
from hean.telemetry.manifest import ManifestError
from hean.telemetry.reader import HistStats, StageStats
from hean.telemetry.top import TopFrame, TopSource

__all__ = ["MAX_REFRESH_HZ", "pcts", "render", "run_top"]

MAX_REFRESH_HZ = 4.0
SPARK = "▁▂▃▄▅▆▇█"
STALL_NS = 1_000_000_000  # a running stage whose heartbeat is older than this is flagged


# ---------------------------------------------------------------------------------------------------------
# rendering (pure)
# ---------------------------------------------------------------------------------------------------------
def pcts(h: HistStats | None, short: bool = False) -> str:
    """``p50 / p99 / p99.9 / max`` (``p99 / max`` when short), ``-`` where the count cannot support it."""
    if h is None:
        return "-"
    mx = h.max_ns if h.count else None
    vals = [h.get(99.0), mx] if short else [h.get(50.0), h.get(99.0), h.get(99.9), mx]
    return " / ".join(fmt_ns(v) for v in vals)


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
                "in/s": fmt_rate(s.in_rate),
                "out/s": fmt_rate(s.out_rate),
                pct_i: pcts(svc) if tier >= MEDIUM else pcts(svc, short=True),
                "p50 / p99 / p99.9 / max (since start)": pcts(s.total_hists.get("service")),
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
                    "queue|age p99": f"{fmt_ns(r.queue.get(99.0))} {r.queue_kind}" if r.queue else "-",
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
                pct_i: pcts(f.e2e_interval, short=tier < MEDIUM),
                "p50 / p99 / p99.9 / max (since start)": pcts(f.e2e_total),
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


def _live_panel(f: TopFrame) -> Text | Panel:
    """A live feed's health: what was received, every fault survived, and the symbols stale now."""
    v = f.live
    if not v:
        return Text("")
    t = Text(f"frames {v.get('frames', 0):,}   connects {v.get('connects', 0)}   snapshots {v.get('snapshots', 0)}")
    stale = v.get("stale_symbols", 0)
    t.append("   stale symbols ")
    t.append(str(stale), style="bold red" if stale else "green")
    faults = ("disconnects", "silences", "gaps", "malformed", "exchange_errors", "rate_limited", "ring_full",
              "unrouted")  # fmt: skip
    t.append("\n" + "   ".join(f"{k.replace('_', ' ')} {v.get(k, 0)}" for k in faults))
    t.append(f"   resyncs {v.get('resyncs', 0)} (stale windows {v.get('stale_windows', 0)})")
    return Panel(t, title="live feed", title_align="left", expand=False)


class _View:
    """A frame laid out for the width it is rendered at (rich asks again after every resize)."""

    def __init__(self, frame: TopFrame):
        self.frame = frame

    def __rich_console__(self, console: Console, options):
        f, tier = self.frame, _tier(options.max_width)
        parts = [_header(f), _stage_table(f, tier), _ring_table(f, tier), _e2e_table(f, tier), _risk_panel(f)]
        if f.live:
            parts.append(_live_panel(f))
        yield Group(*parts)


def render(frame: TopFrame) -> ConsoleRenderable:
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


def _quit_pressed(keys: Callable[[float], str], period: float) -> bool:
    """Wait one refresh period; True as soon as ``q`` is pressed in it."""
    deadline = time.monotonic() + period
    while (left := deadline - time.monotonic()) > 0:
        if "q" in keys(left).lower():
            return True
    return False


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
        Console(stderr=True).print(f"hean top: {e}", markup=False)
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
                if _quit_pressed(keys, period):
                    break
    finally:
        source.close()
    if why:
        if not console.is_terminal:
            console.line()  # a non-terminal Live leaves its last frame without a newline
        console.print(f"hean top: {why}")
    return 0
