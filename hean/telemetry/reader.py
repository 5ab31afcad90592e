"""Read-side views of telemetry: snapshots (copies), interval views (copy minus previous copy), derived stats.

Readers never write a block. A :class:`Snapshot` is a copy of a block's counters, histograms and risk
state taken at one instant; :func:`interval` subtracts an earlier snapshot (cumulative counters and
histograms are differenced, gauges such as the heartbeat are taken from the later one). Every derived
number a UI shows (rates, useful-work %, supported percentiles) is computed by :func:`stage_stats` from a
pair (interval, cumulative), so ``hean top`` and tests share one definition.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from hean.telemetry.block import (
    C_BUSY_LOOPS,
    C_BUSY_NS,
    C_CPU,
    C_DROPS,
    C_EVENTS_IN,
    C_EVENTS_OUT,
    C_FILLS,
    C_HEARTBEAT_NS,
    C_IDLE_LOOPS,
    C_MAX_LOOP_NS,
    C_ORDERS,
    C_PID,
    C_REJECT_BASE,
    C_REJECTS,
    C_RING_FULL,
    C_SEQ_GAPS,
    C_START_NS,
    C_STATE,
    GAUGES,
    N_REJECT_REASONS,
    R_FEES,
    R_N_SYMBOLS,
    R_OPEN_ORDERS,
    R_REALIZED_PNL,
    R_REJECTS,
    R_TRADING_STATE,
    R_UNREALIZED_PNL,
    R_UPDATED_NS,
    RISK_HEADER,
    RISK_SYM_SLOTS,
    TRADING_STATE_NAMES,
    TelemetrySegment,
)
from hean.telemetry.histogram import (
    DEFAULT_PERCENTILES,
    H_BASE,
    hist_max,
    hist_sub,
    hist_value_at_percentile,
    supported_percentiles,
)

__all__ = [
    "HistStats",
    "RiskState",
    "Snapshot",
    "StageStats",
    "hist_stats",
    "interval",
    "risk_state",
    "snapshot",
    "stage_stats",
]


class Snapshot(NamedTuple):
    """A copy of one telemetry block at ``t_ns`` (CLOCK_MONOTONIC)."""

    t_ns: int
    counters: np.ndarray
    hists: np.ndarray
    risk: np.ndarray


def snapshot(seg: TelemetrySegment, t_ns: int | None = None) -> Snapshot:
    """Copy the block now (the writer keeps running; see histogram.py for why copies stay consistent)."""
    b = seg.block
    t = time.monotonic_ns() if t_ns is None else int(t_ns)  # CLOCK_MONOTONIC, like now_ns()
    return Snapshot(t, b.counters.copy(), b.hists.copy(), b.risk.copy())


def interval(prev: Snapshot, cur: Snapshot) -> Snapshot:
    """What happened between two snapshots of one block: ``cur - prev`` (gauges from ``cur``).

    A counter that went down (the block was reset) clamps at 0.
    """
    if prev.counters.shape != cur.counters.shape or prev.hists.shape != cur.hists.shape:
        raise ValueError(f"interval: snapshots of different blocks (hists {prev.hists.shape} vs {cur.hists.shape})")
    counters = np.maximum(cur.counters - prev.counters, 0)
    for g in GAUGES:
        counters[g] = cur.counters[g]
    hists = np.empty_like(cur.hists)
    for row in range(cur.hists.shape[0]):
        hist_sub(hists[row], cur.hists[row], prev.hists[row])
    return Snapshot(cur.t_ns - prev.t_ns, counters, hists, cur.risk.copy())


@dataclass
class HistStats:
    """Count, supported percentiles and max of one histogram (ns)."""

    count: int
    percentiles: dict[float, int]  # only those the count supports
    max_ns: int

    def get(self, pct: float) -> int | None:
        return self.percentiles.get(float(pct))


def hist_stats(counts: np.ndarray, pcts=DEFAULT_PERCENTILES) -> HistStats:
    """HistStats of one histogram row, hiding percentiles the sample count cannot support."""
    n = int(counts[H_BASE:].sum())
    shown = supported_percentiles(n, pcts)
    return HistStats(
        n, {float(p): int(hist_value_at_percentile(counts, float(p))) for p in shown}, int(hist_max(counts))
    )


@dataclass
class StageStats:
    """What one row of ``hean top`` shows for a stage."""

    stage: str
    pid: int
    cpu_pinned: int
    state: int
    heartbeat_ns: int
    start_ns: int
    in_rate: float  # events/s over the interval
    out_rate: float
    events_in: int  # since start
    events_out: int
    useful_pct: float | None  # busy ns / interval wall ns, None when the interval is empty
    busy_loops: int
    idle_loops: int
    max_loop_ns: int
    orders: int
    fills: int
    rejects: int
    rejects_by_reason: dict[int, int]
    ring_full: int
    drops: int
    seq_gaps: int
    interval_hists: dict[str, HistStats] = field(default_factory=dict)
    total_hists: dict[str, HistStats] = field(default_factory=dict)


def stage_stats(seg: TelemetrySegment, iv: Snapshot, cur: Snapshot, pcts=DEFAULT_PERCENTILES) -> StageStats:
    """Derive a stage's row from its interval view ``iv`` and cumulative snapshot ``cur``."""
    dt = iv.t_ns / 1e9
    c, ic = cur.counters, iv.counters
    reasons = {r: int(c[C_REJECT_BASE + r]) for r in range(N_REJECT_REASONS) if c[C_REJECT_BASE + r]}
    return StageStats(
        stage=seg.stage,
        pid=int(c[C_PID]),
        cpu_pinned=int(c[C_CPU]),
        state=int(c[C_STATE]),
        heartbeat_ns=int(c[C_HEARTBEAT_NS]),
        start_ns=int(c[C_START_NS]),
        in_rate=ic[C_EVENTS_IN] / dt if dt > 0 else 0.0,
        out_rate=ic[C_EVENTS_OUT] / dt if dt > 0 else 0.0,
        events_in=int(c[C_EVENTS_IN]),
        events_out=int(c[C_EVENTS_OUT]),
        useful_pct=min(100.0, 100.0 * ic[C_BUSY_NS] / iv.t_ns) if iv.t_ns > 0 else None,
        busy_loops=int(c[C_BUSY_LOOPS]),
        idle_loops=int(c[C_IDLE_LOOPS]),
        max_loop_ns=int(c[C_MAX_LOOP_NS]),
        orders=int(c[C_ORDERS]),
        fills=int(c[C_FILLS]),
        rejects=int(c[C_REJECTS]),
        rejects_by_reason=reasons,
        ring_full=int(c[C_RING_FULL]),
        drops=int(c[C_DROPS]),
        seq_gaps=int(c[C_SEQ_GAPS]),
        interval_hists={h: hist_stats(iv.hists[i], pcts) for i, h in enumerate(seg.hist_names)},
        total_hists={h: hist_stats(cur.hists[i], pcts) for i, h in enumerate(seg.hist_names)},
    )


@dataclass
class RiskState:
    """The risk stage's published state, decoded (PnL in quote currency, prices in ticks)."""

    trading_state: str
    open_orders: int
    rejects: int
    realized_pnl: float
    unrealized_pnl: float
    fees: float
    updated_ns: int
    positions: list[dict] = field(default_factory=list)  # per symbol with a non-zero position or PnL


def risk_state(risk: np.ndarray, symbols: list[str] | None = None) -> RiskState | None:
    """Decode a risk-state region (see block.py for the layout); None when the block has none."""
    if risk.shape[0] < RISK_HEADER:
        return None
    r = np.asarray(risk, dtype=np.int64).copy()
    f = r.view(np.float64)
    positions = []
    n = int(r[R_N_SYMBOLS])
    for s in range(min(n, (r.shape[0] - RISK_HEADER) // RISK_SYM_SLOTS)):
        base = RISK_HEADER + RISK_SYM_SLOTS * s
        pos, avg, real, unreal = int(r[base]), float(f[base + 1]), float(f[base + 2]), float(f[base + 3])
        if pos or real or unreal:
            name = symbols[s] if symbols and s < len(symbols) else str(s)
            positions.append(
                {"symbol": name, "position": pos, "avg_price": avg, "realized": real, "unrealized": unreal}
            )
    return RiskState(
        trading_state=TRADING_STATE_NAMES.get(int(r[R_TRADING_STATE]), f"?{int(r[R_TRADING_STATE])}"),
        open_orders=int(r[R_OPEN_ORDERS]),
        rejects=int(r[R_REJECTS]),
        realized_pnl=float(f[R_REALIZED_PNL]),
        unrealized_pnl=float(f[R_UNREALIZED_PNL]),
        fees=float(f[R_FEES]),
        updated_ns=int(r[R_UPDATED_NS]),
        positions=positions,
    )
