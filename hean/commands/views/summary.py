"""The end-of-run summary as ``hean run`` prints it: the run's facts, a tick-to-trade row, a stages table.

Drawn with rich from the dict :func:`hean.engine.summary.build_summary` returns (the same dict ``--json``
writes), so the screen shows exactly the figures the JSON holds and nothing is computed here but rates and
units. Compact enough for an 80-column pipe: rich draws plain text without colours when the output is not a
terminal (``hean run | cat``), and the tables never stretch to a wide terminal.
"""

from __future__ import annotations

from rich import box
from rich.console import Console, ConsoleOptions, ConsoleRenderable, Group, RenderResult
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from hean.commands.views.units import fmt_ns

__all__ = ["summary_view"]

STATE_STYLE = {"ACTIVE": "green", "REDUCING": "yellow", "HALTED": "bold red"}
STAGES_NOTE = "records: taken in (the feed: sent out); preempted: involuntary context switches"
LATENCY_KEYS = (("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("p99.9", "p999"), ("p99.99", "p9999"))


def _headline(s: dict) -> Text:
    t = Text("HEAN run ", style="bold")
    t.append(s["run_id"], style="bold cyan")
    t.append(": ")
    if s["exit_code"] == 0:
        t.append("OK", style="bold green")
    else:
        t.append(f"FAILED (exit {s['exit_code']})", style="bold red")
    return t


def _placement(s: dict) -> str:
    workers = s["placement"].get("workers", [])
    return "; ".join(
        f"[{'+'.join(w['stages'])}] cpu {w['cpu'] if w['cpu'] is not None else '-'} {w['wait']}" for w in workers
    )


def _by_reason(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items()))


def _flow(s: dict) -> list[tuple[str, str | Text]]:
    """How it ended, where it ran, and what went through (rates over the feed's own time)."""
    rate = s["events"] / s["feed_s"] if s["feed_s"] else 0.0
    mrate = s["messages"] / s["feed_s"] if s["feed_s"] else 0.0
    rows: list[tuple[str, str | Text]] = [
        ("ended", f"by {s['reason']} after {s['elapsed_s']:.2f} s (start-up {s['startup_s']:.2f} s)"),
    ]
    if s["error"]:
        rows.append(("error", Text(s["error"], style="red")))
    rows += [
        ("placement", _placement(s)),
        ("events in", f"{s['events']:,} ({rate:,.0f}/s) in {s['messages']:,} messages ({mrate:,.0f}/s)"),
        ("orders", f"{s['orders']:,}"),
        ("fills", f"{s['fills']:,}"),
        ("risk rejects", f"{s['rejects_total']:,} ({_by_reason(s['rejects']) or 'none'})"),
    ]
    if s["router_refusals"]:
        rows.append(("router refusals", _by_reason(s["router_refusals"])))
    if s.get("book_errors"):  # an L3 book's rejected events (hean.stages.book_l3): the book may be off
        rows.append(("book errors", Text(_by_reason(s["book_errors"]), style="yellow")))
    rows += _live(s.get("live") or {})
    return rows


def _live(lv: dict) -> list[tuple[str, str | Text]]:
    """A live feed: what it received, every fault it survived, how long books were stale (hean.live)."""
    if not lv:
        return []
    c = lv["counters"]
    faults = {k: c[f"live_{k}"] for k in ("disconnects", "silences", "gaps", "malformed", "exchange_errors",
                                          "rate_limited", "ring_full") if c[f"live_{k}"]}  # fmt: skip
    windows = [w for w in lv["stale_windows"] if w["reason"] != "start"]
    stale_s = sum(((w["end_ns"] or w["start_ns"]) - w["start_ns"]) / 1e9 for w in windows)
    rows: list[tuple[str, str | Text]] = [
        (
            "live feed",
            f"{lv['venue']}: {c['live_frames']:,} frames, {c['live_connects']} connects, "
            f"{c['live_snapshots']} snapshots",
        ),  # fmt: skip
        ("live faults", Text(_by_reason(faults), style="yellow") if faults else "none"),
    ]
    if windows:
        still = sum(1 for w in windows if not w["end_ns"])
        rows.append(
            ("stale windows", f"{len(windows)} after the start, {stale_s:.3f} s in all, {still} open at the end")
        )
    if lv.get("last_error"):
        rows.append(("last error", Text(lv["last_error"][:160], style="yellow")))
    if lv.get("recorded"):
        rows.append(("recorded", ", ".join(lv["recorded"][:4]) + (" ..." if len(lv["recorded"]) > 4 else "")))
    return rows


def _pnl(s: dict) -> list[tuple[str, str | Text]]:
    """Profit and loss, the trading state and the positions (nothing when the run had no risk stage)."""
    pnl = s["pnl"]
    if not pnl:
        return []
    total = (
        f"total {pnl['total']:,.2f} = realized {pnl['realized']:,.2f} + unrealized {pnl['unrealized']:,.2f}"
        f" - fees {pnl['fees']:,.2f}"
    )
    state = Text(pnl["trading_state"], style=STATE_STYLE.get(pnl["trading_state"], ""))
    positions = ", ".join(f"{k} {v['lots']:+,} lots" for k, v in pnl["positions"].items())
    rows = [("PnL", total), ("trading state", state), ("positions", positions or "-")]
    for st in s.get("strategies", []):  # the breakdown per strategy (its own fills, marked to the mid)
        rows.append(
            (
                f"strategy {st['id']}",
                f"{st['path']}: orders {st['orders']:,}, fills {st['fills']:,}, PnL {st['pnl']:,.2f}"
                + (f", refused actions {st['refused_actions']:,}" if st["refused_actions"] else "")
                + (f", FAULTED: {st['fault']} raised (stopped)" if st.get("fault") else ""),
            )
        )
    for c in s.get("controls", []):  # what an operator (or the daily reset) changed during the run
        rows.append(("control", f"{c['utc']} {c['what']} ({c['by']})"))
    return rows


def _models(s: dict) -> list[tuple[str, str | Text]]:
    """What the simulation assumed (hean.engine.summary.models_used): a result is read with its models."""
    m = s.get("models") or {}
    rows: list[tuple[str, str | Text]] = [("feed latency", m["feed_latency"])] if m else []
    if m.get("instruments"):
        rows.append(("instruments", m["instruments"]))
    for name, v in m.get("venues", {}).items():
        rows.append((f"venue {name}", f"order latency {v['order_latency']}; queue {v['queue']}; fees {v['fees']}"))
    return rows


def _facts(s: dict) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    for key, value in _flow(s) + _pnl(s) + _models(s):
        grid.add_row(key, value if isinstance(value, Text) else Text(value))  # Text: no markup in "[feed]"
    return grid


def _table() -> Table:
    """Compact: a rule under the header, no frame, one blank between columns."""
    return Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)


def _titled(title: str, table: Table, note: str = "") -> Group:
    """A table under its title (a line of its own: a table's title would wrap at the table's width)."""
    parts = [Text(title, style="bold"), table]
    if note:
        parts.append(Text(note, style="dim"))
    return Group(*parts)


def _tick_to_trade(s: dict) -> Group:
    """One row: how long from the market event to the order leaving the router, over every order."""
    t = s["tick_to_trade_ns"]
    table = _table()
    for label in ("orders", *(label for label, _ in LATENCY_KEYS), "max"):
        table.add_column(label, justify="right", overflow="fold")
    table.add_row(f"{t['count']:,}", *(fmt_ns(t[key]) for _, key in LATENCY_KEYS), fmt_ns(t["max"]))
    return _titled("tick-to-trade (market event to order out of the router)", table)


def _stages(s: dict) -> Group:
    """One row per stage: records taken in, the share of loops that found work, service time, preemptions."""
    table = _table()
    table.add_column("stage", overflow="fold")
    for name in ("records", "busy%", "p50", "p99", "p99.9", "max", "preempted"):
        table.add_column(name, justify="right", overflow="fold")  # a narrow terminal folds, never cuts, a figure
    for name, st in s["stages"].items():
        sv = st["service_ns"]
        count = st["events_out"] if name == "feed" else st["events_in"]
        table.add_row(
            name, f"{count:,}", f"{st['busy_pct']:.1f}", fmt_ns(sv["p50"]), fmt_ns(sv["p99"]), fmt_ns(sv["p999"]),
            fmt_ns(sv["max"]), f"{st.get('preempted', 0):,}",
        )  # fmt: skip
    return _titled("stages (service time per record)", table, STAGES_NOTE)


class _Trimmed:
    """A renderable whose lines lose their trailing blanks (rich pads every cell), for clean logs and pipes."""

    def __init__(self, inner: ConsoleRenderable):
        self.inner = inner

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        for line in console.render_lines(self.inner, options, pad=False):
            yield from _rstrip(line)
            yield Segment.line()


def _rstrip(line: list[Segment]) -> list[Segment]:
    """The line without its trailing blank segments (no style here draws a background, so nothing is lost)."""
    while line and not line[-1].control and not line[-1].text.rstrip():
        line = line[:-1]
    if line and not line[-1].control:
        last = line[-1]
        line = [*line[:-1], Segment(last.text.rstrip(), last.style)]
    return line


def summary_view(s: dict) -> ConsoleRenderable:
    """The whole summary of a finished run (``s`` from :func:`hean.engine.summary.build_summary`)."""
    return _Trimmed(Group(_headline(s), _facts(s), Text(), _tick_to_trade(s), Text(), _stages(s)))
