"""The end-of-run summary: what ``hean run`` prints and what ``--json`` writes.

Built only from the telemetry snapshot the supervisor copied before unlinking the segments, so the summary
says exactly what the stages counted -- nothing is re-derived or estimated here.
"""

from __future__ import annotations

import numpy as np

from hean.engine.config import STAGES
from hean.telemetry import block as B
from hean.telemetry.histogram import (
    hist_count,
    hist_max,
    hist_value_at_percentile,
    new_histogram,
    supported_percentiles,
)

PCTS = (50.0, 90.0, 99.0, 99.9, 99.99)
_PCT_KEY = {50.0: "p50", 90.0: "p90", 99.0: "p99", 99.9: "p999", 99.99: "p9999"}


def hist_summary(counts: np.ndarray) -> dict:
    """count, p50..p99.99 (only those the count supports; others None) and max, in ns."""
    n = int(hist_count(counts))
    out: dict = {"count": n}
    ok = set(supported_percentiles(n, PCTS))
    for p in PCTS:
        out[_PCT_KEY[p]] = int(hist_value_at_percentile(counts, p)) if p in ok else None
    out["max"] = int(hist_max(counts)) if n else None
    return out


def _f64(word: int) -> float:
    return float(np.array([word], np.int64).view(np.float64)[0])


def risk_view(risk: np.ndarray, symbols: list[str]) -> dict:
    """Decode the risk-state region of the risk stage's telemetry block."""
    if len(risk) == 0:
        return {}
    state = B.TRADING_STATE_NAMES.get(int(risk[B.R_TRADING_STATE]), "UNSET")
    out = {
        "trading_state": state,
        "open_orders": int(risk[B.R_OPEN_ORDERS]),
        "realized": _f64(risk[B.R_REALIZED_PNL]),
        "unrealized": _f64(risk[B.R_UNREALIZED_PNL]),
        "fees": _f64(risk[B.R_FEES]),
        "positions": {},
    }
    out["total"] = out["realized"] + out["unrealized"] - out["fees"]
    for s, name in enumerate(symbols):
        base = B.RISK_HEADER + B.RISK_SYM_SLOTS * s
        out["positions"][name] = {
            "lots": int(risk[base]),
            "avg_px_ticks": _f64(risk[base + 1]),
            "realized": _f64(risk[base + 2]),
            "unrealized": _f64(risk[base + 3]),
        }
    return out


def build_summary(result, symbols: list[str], reject_names: dict[int, str]) -> dict:
    """The JSON-able summary of a finished run (``symbols``: names by id; the run's own list wins)."""
    tm = result.telemetry
    symbols = list(getattr(result, "symbols", None) or symbols)
    stages = {}
    for stage in STAGES:
        if stage not in tm:
            continue
        c = tm[stage]["counters"]
        busy, idle = int(c[B.C_BUSY_LOOPS]), int(c[B.C_IDLE_LOOPS])
        stages[stage] = {
            "events_in": int(c[B.C_EVENTS_IN]),
            "events_out": int(c[B.C_EVENTS_OUT]),
            "ring_full": int(c[B.C_RING_FULL]),
            "drops": int(c[B.C_DROPS]),
            "busy_pct": round(100.0 * busy / (busy + idle), 2) if busy + idle else 0.0,
            # involuntary context switches of the stage's process during the run (0 when it owned its CPU)
            "preempted": int(c[B.C_PREEMPTED]),
            "service_ns": hist_summary(tm[stage]["hists"]["service"]),
            # feed only: how late messages went out against their schedule (the worker's lag)
            **({"late_ns": hist_summary(tm[stage]["hists"]["late"])} if "late" in tm[stage]["hists"] else {}),
            "age_ns": {
                name.split(".", 1)[1]: hist_summary(h)
                for name, h in tm[stage]["hists"].items()
                if name.startswith("age.")
            },
        }
    risk_c = tm["risk"]["counters"] if "risk" in tm else np.zeros(B.N_COUNTERS, np.int64)
    rejects = {
        reject_names.get(code, f"reason_{code}"): int(risk_c[B.C_REJECT_BASE + code])
        for code in range(B.N_REJECT_REASONS)
        if risk_c[B.C_REJECT_BASE + code]
    }
    router_c = tm["router"]["counters"] if "router" in tm else risk_c
    refusals = {
        reject_names.get(code, f"reason_{code}"): int(router_c[B.C_REJECT_BASE + code])
        for code in range(B.N_REJECT_REASONS)
        if router_c[B.C_REJECT_BASE + code]
    }
    e2e = tm["router"]["hists"].get("e2e") if "router" in tm else None
    return {
        "run_id": result.run_id,
        "exit_code": result.exit_code,
        "reason": result.reason,
        "error": result.error,
        "elapsed_s": round(result.elapsed_s, 3),
        "startup_s": round(result.startup_s, 3),
        "feed_s": round(result.feed_s, 3),
        "events": int(tm["feed"]["counters"][B.C_EVENTS_OUT]) if "feed" in tm else 0,
        "messages": result.messages,
        "orders": int(router_c[B.C_ORDERS]),
        "fills": int(router_c[B.C_FILLS]),  # fill reports the router received from the venues
        "rejects": rejects,
        "rejects_total": int(sum(rejects.values())),
        "router_refusals": refusals,  # orders the router refused after risk passed them (by reason)
        "pnl": risk_view(tm["risk"]["risk"], symbols) if "risk" in tm else {},
        "tick_to_trade_ns": hist_summary(e2e if e2e is not None else new_histogram()),
        "stages": stages,
        "placement": result.placement,
    }


def _ns(v) -> str:
    if v is None:
        return "-"
    if v >= 1_000_000:
        return f"{v / 1e6:.2f} ms"
    if v >= 1_000:
        return f"{v / 1e3:.2f} us"
    return f"{v} ns"


def format_summary(s: dict) -> str:
    """Human-readable summary (plain text, fixed-width columns)."""
    lines = []
    status = "OK" if s["exit_code"] == 0 else f"FAILED (exit {s['exit_code']})"
    lines.append(
        f"HEAN run {s['run_id']}: {status}, ended by {s['reason']} after {s['elapsed_s']:.2f} s "
        f"(start-up {s['startup_s']:.2f} s)"
    )
    if s["error"]:
        lines.append(f"  error: {s['error']}")
    workers = s["placement"].get("workers", [])
    lines.append(
        "  placement: "
        + "; ".join(f"[{'+'.join(w['stages'])}] cpu {w['cpu'] if w['cpu'] is not None else '-'} {w['wait']}"
                    for w in workers)
    )  # fmt: skip
    rate = s["events"] / s["feed_s"] if s["feed_s"] else 0.0
    mrate = s["messages"] / s["feed_s"] if s["feed_s"] else 0.0
    lines.append(
        f"  events in: {s['events']:,} ({rate:,.0f}/s) in {s['messages']:,} messages ({mrate:,.0f}/s)   "
        f"orders: {s['orders']:,}   fills: {s['fills']:,}"
    )
    rej = ", ".join(f"{k} {v:,}" for k, v in sorted(s["rejects"].items())) or "none"
    lines.append(f"  risk rejects: {s['rejects_total']:,} ({rej})")
    if s["router_refusals"]:
        ref = ", ".join(f"{k} {v:,}" for k, v in sorted(s["router_refusals"].items()))
        lines.append(f"  router refusals: {ref}")
    pnl = s["pnl"]
    if pnl:
        lines.append(
            f"  PnL: total {pnl['total']:,.2f} = realized {pnl['realized']:,.2f} + unrealized "
            f"{pnl['unrealized']:,.2f} - fees {pnl['fees']:,.2f}; trading state {pnl['trading_state']}"
        )
        pos = ", ".join(f"{k} {v['lots']:+,} lots" for k, v in pnl["positions"].items())
        lines.append(f"  positions: {pos}")
    t = s["tick_to_trade_ns"]
    lines.append(
        f"  tick-to-trade ({t['count']:,} orders): p50 {_ns(t['p50'])}  p90 {_ns(t['p90'])}  p99 {_ns(t['p99'])}  "
        f"p99.9 {_ns(t['p999'])}  p99.99 {_ns(t['p9999'])}  max {_ns(t['max'])}"
    )
    lines.append(
        "  stage      records in   busy%   service p50   p99       p99.9     max   preempted   (feed: events out)"
    )
    for name, st in s["stages"].items():
        sv = st["service_ns"]
        count = st["events_out"] if name == "feed" else st["events_in"]
        lines.append(
            f"  {name:<10} {count:>10,}  {st['busy_pct']:>6.1f}   {_ns(sv['p50']):>10}  "
            f"{_ns(sv['p99']):>9} {_ns(sv['p999']):>9} {_ns(sv['max']):>9}   {st.get('preempted', 0):>9,}"
        )
    return "\n".join(lines)
