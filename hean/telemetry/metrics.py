"""Prometheus metrics from the telemetry of running engines (``hean metrics``).

Why a collector that reads shared memory at scrape time: the engine's hot path already keeps every counter
and latency histogram in its telemetry blocks (:mod:`hean.telemetry.block`); an exporter that copies them
when Prometheus asks adds nothing to the hot path -- no socket, no lock, no extra store in a stage -- and
never slows it. Each scrape attaches (once) to the blocks of every live run in ``/dev/shm``
(:func:`hean.telemetry.manifest.list_runs`), copies them (:func:`hean.telemetry.reader.snapshot`) and
turns the copies into metric families; a run that ended disappears from the next scrape.

Names (labels ``run``, ``stage``; every time in seconds):

====================================  =========  ===========================================================
``hean_stage_events_in_total``        counter    records a stage took (and ``_events_out_total``,
                                                 ``_orders_total``, ``_fills_total``, ``_rejects_total``,
                                                 ``_ring_full_total``, ``_drops_total``, ``_seq_gaps_total``,
                                                 ``_busy_loops_total``, ``_idle_loops_total``)
``hean_stage_busy_seconds_total``     counter    time in useful work
``hean_stage_heartbeat_age_seconds``  gauge      since the stage's last heartbeat (a stuck stage grows)
``hean_stage_latency_seconds``        histogram  each histogram row of the stage (label ``hist``: service,
                                                 age:<stream>, e2e = tick-to-trade), buckets :data:`BOUNDS`
``hean_stage_latency_quantile_seconds``  gauge   the row's p50 .. p99.99 (label ``quantile``), exact to the
                                                 histogram's 3 significant digits
``hean_ring_fill`` / ``_capacity``    gauge      records waiting in each ring (label ``ring``) / its slots
``hean_ring_full_total``              counter    times a producer found the ring full
``hean_risk_trading_state``           gauge      0 active, 1 reducing, 2 halted (``state`` label names it)
``hean_risk_pnl`` / ``_fees``         gauge      realized + unrealized PnL / fees, quote currency
``hean_risk_open_orders``             gauge
``hean_rejects_total``                counter    rejects by ``reason``
====================================  =========  ===========================================================

Histogram buckets are the HdrHistogram's counts up to each bound's bucket, so a bound is exact to the
histogram's resolution (0.1 %); ``_sum`` is the sum of each bucket's lowest value times its count.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np

from hean.telemetry.block import (
    C_BUSY_LOOPS,
    C_BUSY_NS,
    C_DROPS,
    C_EVENTS_IN,
    C_EVENTS_OUT,
    C_FILLS,
    C_HEARTBEAT_NS,
    C_IDLE_LOOPS,
    C_ORDERS,
    C_REJECT_BASE,
    C_REJECTS,
    C_RING_FULL,
    C_SEQ_GAPS,
    N_REJECT_REASONS,
    R_FEES,
    R_OPEN_ORDERS,
    R_REALIZED_PNL,
    R_TRADING_STATE,
    R_UNREALIZED_PNL,
    TRADING_STATE_NAMES,
    TS_ACTIVE,
    BlockError,
    TelemetrySegment,
    attach_block,
)
from hean.telemetry.histogram import (
    DEFAULT_PERCENTILES,
    H_BASE,
    HIST_COUNTS_LEN,
    hist_index,
    hist_value_at_index,
    hist_value_at_percentile,
)
from hean.telemetry.manifest import Manifest, list_runs
from hean.telemetry.reader import snapshot

__all__ = ["BOUNDS", "EngineCollector"]

# bucket upper bounds, ns: 100 ns .. 100 ms, 1-2.5-5 steps
BOUNDS_NS = [m * 10**e for e in range(2, 8) for m in (1, 2.5, 5)] + [10**8]
BOUNDS = [b / 1e9 for b in BOUNDS_NS]

COUNTERS = {
    "events_in": C_EVENTS_IN, "events_out": C_EVENTS_OUT, "orders": C_ORDERS, "fills": C_FILLS,
    "rejects": C_REJECTS, "ring_full": C_RING_FULL, "drops": C_DROPS, "seq_gaps": C_SEQ_GAPS,
    "busy_loops": C_BUSY_LOOPS, "idle_loops": C_IDLE_LOOPS,
}  # fmt: skip

_BOUND_INDEX = np.array([hist_index(int(b)) for b in BOUNDS_NS], np.int64)
_LOWEST = None  # each counts index's lowest value, ns (built on first use)


def _lowest() -> np.ndarray:
    global _LOWEST
    if _LOWEST is None:
        _LOWEST = np.array([hist_value_at_index(i) for i in range(HIST_COUNTS_LEN)], np.int64)
    return _LOWEST


def histogram_buckets(counts: np.ndarray) -> tuple[list[tuple[str, float]], float]:
    """Cumulative ``(le, count)`` buckets of one telemetry histogram row in seconds, and its sum."""
    body = counts[H_BASE:]
    cum = np.cumsum(body)
    total = float(cum[-1]) if len(cum) else 0.0
    buckets = [(repr(b), float(cum[k])) for b, k in zip(BOUNDS, _BOUND_INDEX, strict=True)]
    buckets.append(("+Inf", total))
    return buckets, float((body * _lowest()).sum()) / 1e9


class EngineCollector:
    """A prometheus-client collector over every live engine's telemetry (see the module docstring)."""

    def __init__(self) -> None:
        self._blocks: dict[str, TelemetrySegment] = {}

    def _block(self, name: str) -> TelemetrySegment | None:
        seg = self._blocks.get(name)
        if seg is None:
            try:
                seg = attach_block(name, readonly=True)
            except BlockError:
                return None
            self._blocks[name] = seg
        return seg

    def _forget(self, live: set[str]) -> None:
        for name in [n for n in self._blocks if n not in live]:
            self._blocks.pop(name).close()

    def describe(self) -> list:
        return []  # the families depend on the runs found at scrape time

    def collect(self) -> Iterator:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        kinds = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily, "histogram": HistogramMetricFamily}
        fams: dict[str, object] = {}

        def family(kind: str, name: str, doc: str, labels: list[str]):
            if name not in fams:
                fams[name] = kinds[kind](name, doc, labels=labels)
            return fams[name]

        live: set[str] = set()
        now = time.monotonic_ns()
        for status in list_runs():
            if not status.alive or status.manifest is None:
                continue
            m: Manifest = status.manifest
            for st in m.stages:
                seg = self._block(st.block)
                if seg is not None:
                    live.add(st.block)
                    self._stage(m.run_id, st.name, seg, now, family)
            self._risk(m, family)
            self._rings(m, family)
        self._forget(live)  # blocks of runs that ended
        yield from fams.values()

    def _stage(self, run: str, stage: str, seg: TelemetrySegment, now: int, family) -> None:
        snap = snapshot(seg, now)
        c = snap.counters
        lab = [run, stage]
        for what, idx in COUNTERS.items():
            family(
                "counter", f"hean_stage_{what}", f"{what.replace('_', ' ')} of the stage", ["run", "stage"]
            ).add_metric(lab, float(c[idx]))
        family("counter", "hean_stage_busy_seconds", "time in useful work", ["run", "stage"]).add_metric(
            lab, float(c[C_BUSY_NS]) / 1e9
        )
        if c[C_HEARTBEAT_NS] > 0:
            family(
                "gauge", "hean_stage_heartbeat_age_seconds", "since the last heartbeat", ["run", "stage"]
            ).add_metric(lab, max(0, now - int(c[C_HEARTBEAT_NS])) / 1e9)
        hists = family("histogram", "hean_stage_latency_seconds", "latency histograms", ["run", "stage", "hist"])
        quantiles = family(
            "gauge", "hean_stage_latency_quantile_seconds", "latency percentiles", ["run", "stage", "hist", "quantile"]
        )
        for row, hist in enumerate(seg.hist_names):
            buckets, total = histogram_buckets(snap.hists[row])
            hists.add_metric([*lab, hist], buckets, total)
            if int(snap.hists[row][H_BASE:].sum()):
                for q in DEFAULT_PERCENTILES:
                    v = int(hist_value_at_percentile(snap.hists[row], float(q))) / 1e9
                    quantiles.add_metric([*lab, hist, f"{q / 100:g}"], v)

    def _risk(self, m: Manifest, family) -> None:
        seg = self._block(m.risk_block) if m.risk_block else None
        if seg is None:
            return
        r = seg.block.risk.copy()
        state = int(r[R_TRADING_STATE])
        if state == 0:  # risk has not published yet
            return
        family("gauge", "hean_risk_trading_state", "risk's trading state: 0 active, 1 reducing, 2 halted",
               ["run", "state"]).add_metric([m.run_id, TRADING_STATE_NAMES.get(state, str(state))],
                                            float(state - TS_ACTIVE))  # fmt: skip
        f = r.view(np.float64)
        family("gauge", "hean_risk_pnl", "realized + unrealized PnL, quote currency", ["run"]).add_metric(
            [m.run_id], float(f[R_REALIZED_PNL] + f[R_UNREALIZED_PNL]))  # fmt: skip
        family("gauge", "hean_risk_fees", "fees paid, quote currency", ["run"]).add_metric([m.run_id], float(f[R_FEES]))
        family("gauge", "hean_risk_open_orders", "open orders", ["run"]).add_metric([m.run_id], float(r[R_OPEN_ORDERS]))
        c = seg.block.counters
        rej = family("counter", "hean_rejects", "orders rejected by risk, by reason", ["run", "reason"])
        for k in range(N_REJECT_REASONS):
            if c[C_REJECT_BASE + k]:
                reason = m.reject_reasons[k] if k < len(m.reject_reasons) and m.reject_reasons[k] else str(k)
                rej.add_metric([m.run_id, reason], float(c[C_REJECT_BASE + k]))

    def _rings(self, m: Manifest, family) -> None:
        from hean.telemetry.top import ring_occupancy

        for ring in m.rings:
            try:
                occ = ring_occupancy(ring.segment)
            except Exception:  # a ring gone between the manifest and now: leave it out of this scrape
                continue
            lab = [m.run_id, ring.name]
            family("gauge", "hean_ring_fill", "records waiting in the ring", ["run", "ring"]).add_metric(
                lab, float(occ["fill"]))  # fmt: skip
            family("gauge", "hean_ring_capacity", "slots of the ring", ["run", "ring"]).add_metric(
                lab, float(occ["capacity"]))  # fmt: skip
            family("counter", "hean_ring_full", "times the producer found the ring full", ["run", "ring"]).add_metric(
                lab, float(occ["full"]))  # fmt: skip

    def close(self) -> None:
        self._forget(set())
