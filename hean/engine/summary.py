"""The end-of-run summary's figures: the dict ``hean run --json`` writes and its screen shows.

Built only from the telemetry snapshot the supervisor copied before unlinking the segments, so the summary
says exactly what the stages counted -- nothing is re-derived or estimated here. Drawing it is the CLI's
(:mod:`hean.commands.views.summary`): this layer returns data only.
"""

from __future__ import annotations

import numpy as np

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


def _strategies(tm: dict, paths: list[str]) -> list[dict]:
    """Orders (intents sent), fills and PnL per strategy, from the strategy stage's counters."""
    from hean.stages.strategy import CALLBACK_OF, U_FAULT, U_FILLS, U_INTENTS, U_PNL, U_REFUSED, U_STRIDE

    if "strategy" not in tm:
        return []
    c = tm["strategy"]["counters"]
    return [
        {
            "id": j,
            "path": path,
            "orders": int(c[U_INTENTS + j * U_STRIDE]),
            "fills": int(c[U_FILLS + j * U_STRIDE]),
            "refused_actions": int(c[U_REFUSED + j * U_STRIDE]),
            "pnl": _f64(c[U_PNL + j * U_STRIDE]),
            "fault": CALLBACK_OF.get(int(c[U_FAULT + j * U_STRIDE]), ""),  # the callback that raised (debug)
        }
        for j, path in enumerate(paths)
    ]


def _ns(ns: int) -> str:
    return f"{ns / 1e6:g} ms" if ns >= 1_000_000 else f"{ns / 1e3:g} us" if ns >= 1_000 else f"{ns} ns"


def feed_model(cfg) -> str:
    """When the strategy receives a message (docs/backtests.md, "feed latency")."""
    f = cfg.feed
    if f.source != "replay":
        return f"none: the {f.source} feed's messages are received as they are made"
    if f.latency == "recorded":
        return f"recorded receive stamps (clock offset removed) + {_ns(f.latency_ns)}"
    return f"constant: exchange time + {_ns(f.latency_ns)}"


def venue_models(cfg) -> dict[str, dict[str, str]]:
    """Each simulated venue's models as the run used them: its params over make_venue's defaults."""
    from hean.stages.venue import venue_param

    out = {}
    for v in cfg.venues:
        p = lambda key, params=v.params: params.get(key, venue_param(key))  # noqa: E731
        if p("latency_file"):
            latency = f"recorded round trips from {p('latency_file')}, interpolated (FIFO per venue)"
        else:
            latency = f"constant: entry {_ns(int(p('entry_latency_ns')))}, response {_ns(int(p('report_latency_ns')))}"
        queue = p("queue_model")
        if queue.startswith("power"):
            queue = f"{queue} (n = {float(p('queue_power')):g})"
        if cfg.feed.l3:  # hean.stages.venue_l3: the recorded orders ahead, exactly
            queue = "exact: behind the recorded orders ahead (an order-by-order feed)"
        out[v.name] = {
            "order_latency": latency,
            "queue": queue,
            "fills": "marketable orders walk the levels; resting orders fill partially by the prints past them",
            "fees": f"maker {float(p('maker_fee')):g}, taker {float(p('taker_fee')):g} of notional",
            "rejects": f"{float(p('reject_prob')):g} of new orders, seed {int(p('seed'))}",
        }
    return out


def instruments_model(cfg) -> str:
    """Where the symbols' ticks and lots came from (hean.engine.recordings): guessed ones are named."""
    f = cfg.feed
    if f.source != "replay":
        return "configured ([[symbols]])"
    if not f.guessed:
        return "exact: [[symbols]], instrument files or the recording's definitions"
    shown = ", ".join(f.guessed[:8]) + (f" and {len(f.guessed) - 8} more" if len(f.guessed) > 8 else "")
    return f"guessed from the recording's finest decimals for {shown} (give [[symbols]] or feed.instruments)"


def models_used(cfg) -> dict:
    """The simulation's models, for the summary, so a result always says what it assumed."""
    return {"feed_latency": feed_model(cfg), "instruments": instruments_model(cfg), "venues": venue_models(cfg)}


def _book_errors(tm: dict) -> dict[str, int]:
    """The L3 book's errors by kind, those that happened (hean.stages.book_l3.ERROR_COUNTERS; an L2 book: {})."""
    from hean.stages.book_l3 import ERROR_COUNTERS

    user = tm.get("book", {}).get("user", {})
    return {name: int(user[name]) for name in ERROR_COUNTERS if user.get(name)}


def build_summary(result, symbols: list[str], reject_names: dict[int, str], cfg=None) -> dict:
    """The JSON-able summary of a finished run (``symbols``: names by id; the run's own list wins; ``cfg``:
    the run's configuration, whose models the summary states)."""
    tm = result.telemetry
    symbols = list(getattr(result, "symbols", None) or symbols)
    stages = {}
    for stage in tm:  # the stages in pipeline order (the supervisor's snapshot)
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
        "strategies": _strategies(tm, getattr(result, "strategies", [])),
        "controls": list(getattr(result, "controls", [])),  # operator controls applied (hean halt, risk set)
        "tick_to_trade_ns": hist_summary(e2e if e2e is not None else new_histogram()),
        "book_errors": _book_errors(tm),
        "stages": stages,
        "placement": result.placement,
        # each shared ring at the end: records published and taken (equal unless the run was cut short)
        "rings": dict(getattr(result, "rings", {}) or {}),
        "journal": getattr(result, "journal", ""),
        "models": models_used(cfg) if cfg is not None else {},
        "live": dict(getattr(result, "live", {}) or {}),  # a live feed: counters, stale windows (hean.live)
    }
