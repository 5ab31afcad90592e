"""Building a worker's state from the configuration: the one place config keys meet the stages' factories.

Each stage table of the configuration is checked against the keyword parameters of the factory it feeds
(:func:`hean.engine.config.stage_kwargs`), so an unknown or mistyped key is an error naming the key. The
factories' own validation (negative limits, impossible sizes) becomes a :class:`ConfigError` naming the
table. :func:`check_config` runs all of it in the supervisor before any process starts.

Stages this worker does not run get small private stand-ins of the same types (numba compiles one loop for
every placement, so every argument must exist); they are never touched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from hean import records
from hean.engine import pipeline as P
from hean.engine.config import STAGES, Config, ConfigError, call_factory, stage_kwargs
from hean.engine.topology import EDGES
from hean.feeds.synthetic import make_synthetic, max_events_per_message
from hean.rings import Ring, attach
from hean.shm import attach_segment
from hean.stages.book import make_l2_book
from hean.stages.risk import make_risk
from hean.stages.router import make_router, make_venue_tops
from hean.stages.trades import make_trade_stats
from hean.stages.venue import make_venue
from hean.strategies import make_strategy_stage, strategy_on_book  # noqa: F401  (re-exported for pipeline)
from hean.symbols import SymbolTable
from hean.telemetry.block import attach_block, block_name
from hean.telemetry.histogram import HIST_LEN

# Histogram rows of each stage's telemetry block, fixed so the loop can index them by constant
# (hean.engine.pipeline.H_*): "age.<edge>" is now - ts_origin when the stage takes the record.
STAGE_HISTS: dict[str, list[str]] = {
    "feed": ["service"],
    "book": ["service", "age.ev-book"],
    "strategy": ["service", "age.bs-strat"],
    "risk": ["service", "age.bs-risk", "age.intents", "age.risk-reports"],
    "router": ["service", "age.orders", "age.reports", "e2e"],
    "venue": ["service", "age.ev-venue", "age.venue-orders"],
}
# stage-specific counters (C_USER_BASE + i), see hean.engine.pipeline.U_*
STAGE_USER_COUNTERS: dict[str, list[str]] = {"router": ["order_digest", "fill_digest"]}
_TM_FIELDS = {
    "feed": ("feed_c", "feed_h"),
    "book": ("book_c", "book_h"),
    "strategy": ("strat_c", "strat_h"),
    "risk": ("risk_c", "risk_h"),
    "router": ("router_c", "router_h"),
    "venue": ("venue_c", "venue_h"),
}
_RING_FIELDS = {
    "ev-book": "ev_book",
    "ev-venue": "ev_venue",
    "bs-strat": "bs_strat",
    "bs-risk": "bs_risk",
    "intents": "intents",
    "orders": "orders",
    "venue-orders": "vorders",
    "reports": "reports",
    "risk-reports": "rreports",
    "control": "control",
}
PACES = {"rate": 0, "recorded": 1, "fast": 2}


class Ctx(NamedTuple):
    """Everything :func:`hean.engine.pipeline.run_loop` touches (see the pipeline's docstring)."""

    params: np.ndarray
    ctl: np.ndarray
    owns: np.ndarray
    feedp: np.ndarray
    clock: np.ndarray  # int64[1]: the simulated exchange clock (latest ts_exch seen)
    synth: object
    replay: np.ndarray
    book: object
    trades: object
    tops: object
    venue_of: np.ndarray  # int64[n_symbols]: venue index of each symbol
    strategy: object
    position: np.ndarray
    risk: object
    router: object
    venue: object
    rings: P.Rings
    scratch: P.Scratch
    tm: P.Telemetry


# ---------------------------------------------------------------------------------------------------------
# factories of the engine-level tables (their keyword parameters are the valid keys)
# ---------------------------------------------------------------------------------------------------------
def book_factory(
    n_symbols: int,
    *,
    window: int = 4096,
    overflow: int = 8192,
    stale_ns: int = 0,
    vwap_window_ns: int = 60_000_000_000,
    trades_capacity: int = 4096,
):
    """``[book]``: price window and overflow per side (levels), stale window (0 off), VWAP window."""
    if stale_ns < 0 or vwap_window_ns <= 0:
        raise ValueError("stale_ns must be >= 0 and vwap_window_ns > 0")
    return make_l2_book(n_symbols, window, overflow), make_trade_stats(n_symbols, vwap_window_ns, trades_capacity)


def venue_index(cfg: Config) -> dict[str, int]:
    return {v.name: i for i, v in enumerate(cfg.venues)}


def symbol_table(cfg: Config) -> SymbolTable:
    return SymbolTable(
        [
            {"name": s.name, "tick_size": str(s.tick_size), "lot_size": str(s.lot_size), "venue": s.venue}
            for s in cfg.symbols
        ]
    )


def _value_per_tick_lot(table: SymbolTable) -> np.ndarray:
    """Quote currency per (1 tick x 1 lot) of each symbol: tick size x lot size (linear contracts)."""
    return np.array([float(s.tick_size) * float(s.lot_size) for s in table], np.float64)


def build_stages(cfg: Config, position: np.ndarray | None, owns: set[str] | None = None):
    """The stage states for this configuration (``owns``: stages to build for real; others get stand-ins)."""
    owns = set(STAGES) if owns is None else owns
    table = symbol_table(cfg)
    n = len(table)
    nv = max(1, len(cfg.venues))
    vidx = venue_index(cfg)
    venue_of = np.array([vidx[s.venue] for s in cfg.symbols], np.int64)
    real = {s: (s in owns) for s in STAGES}

    book_kw = stage_kwargs("book", dict(cfg.book), book_factory) if real["book"] else {}
    book, trades = call_factory("book", book_factory, n, **book_kw)

    synth_kw = stage_kwargs("feed.synthetic", dict(cfg.feed.synthetic), make_synthetic) if real["feed"] else {}
    synth = call_factory("feed.synthetic", make_synthetic, n, cfg.feed.seed, **synth_kw)

    risk_kw = dict(cfg.risk) if real["risk"] else {}
    stage_kwargs("risk", risk_kw, make_risk)
    risk_kw.setdefault("value_per_tick_lot", _value_per_tick_lot(table))
    risk = call_factory("risk", make_risk, n, position_lots=position if real["risk"] else None, **risk_kw)

    fees = _venue_fees(cfg)
    router_kw = dict(cfg.router) if real["router"] else {}
    stage_kwargs("router", router_kw, make_router)
    router_kw.setdefault("maker_fee", fees["maker_fee"])
    router_kw.setdefault("taker_fee", fees["taker_fee"])
    router = call_factory("router", make_router, n, nv, **router_kw)

    venue_kw = _venue_params(cfg) if real["venue"] else {}
    venue = call_factory("venues", make_venue, n, nv, **venue_kw)

    strat_params = dict(cfg.strategy.params) if real["strategy"] else {}
    strategy = call_factory("strategy", make_strategy_stage, cfg.strategy.name, n, strat_params, dict(cfg.indicators))
    return table, venue_of, synth, book, trades, risk, router, venue, strategy


def _venue_fees(cfg: Config) -> dict[str, np.ndarray]:
    out = {"maker_fee": [], "taker_fee": []}
    for v in cfg.venues or []:
        for key in out:
            out[key].append(float(v.params.get(key, 0.0)))
    return {k: np.array(v or [0.0], np.float64) for k, v in out.items()}


def _venue_params(cfg: Config) -> dict:
    """Per-venue keyword arguments of make_venue: each key becomes an array with one value per venue."""
    keys: set[str] = set()
    for v in cfg.venues:
        keys.update(v.params)
    for i, v in enumerate(cfg.venues):
        stage_kwargs(f"venues[{i}].params", dict(v.params), make_venue)
    out = {}
    for key in sorted(keys):
        sample = next(v.params[key] for v in cfg.venues if key in v.params)
        default = _default_of(make_venue, key)
        vals = [v.params.get(key, default) for v in cfg.venues]
        out[key] = np.array(vals, np.float64 if isinstance(sample, float) else np.int64)
    return out


def _default_of(factory, key):
    import inspect

    d = inspect.signature(factory).parameters[key].default
    return np.asarray(d).reshape(-1)[0] if isinstance(d, np.ndarray) else d


def check_config(cfg: Config) -> None:
    """Build every stage once in the supervisor: every key and value error surfaces before processes start."""
    build_stages(cfg, np.zeros(len(cfg.symbols), np.int64))


# ---------------------------------------------------------------------------------------------------------
# the feed
# ---------------------------------------------------------------------------------------------------------
def feed_params(cfg: Config) -> np.ndarray:
    fp = np.zeros(P.F_LEN, np.int64)
    fp[P.F_MODE] = 0 if cfg.feed.source == "synthetic" else 1
    fp[P.F_PACE] = PACES[cfg.feed.pace]
    fp[P.F_PERIOD_NS] = max(1, int(round(1e9 / cfg.feed.rate)))
    fp[P.F_MAX_MSGS] = cfg.feed.max_messages
    return fp


def load_replay(cfg: Config) -> np.ndarray:
    """The recording's events for the replay feed (an empty array for the synthetic feed)."""
    if cfg.feed.source != "replay":
        return np.zeros(1, records.MARKET_EVENT)[:0]
    from hean.feeds import load_events

    events, _table = load_events(cfg.feed.path, cfg.feed.format, market=cfg.feed.market)
    return np.ascontiguousarray(events)


# ---------------------------------------------------------------------------------------------------------
# one worker
# ---------------------------------------------------------------------------------------------------------
def _dummy_tm(stage: str) -> tuple[np.ndarray, np.ndarray]:
    from hean.telemetry.block import N_COUNTERS

    return np.zeros(N_COUNTERS, np.int64), np.zeros((len(STAGE_HISTS[stage]), HIST_LEN), np.int64)


@dataclass
class BuiltWorker:
    ctx: Ctx
    rings: list[Ring]
    segments: list

    def started(self) -> None:
        from hean.telemetry.block import tm_start

        cpu = -1
        for stage in STAGES:
            if self.ctx.owns[STAGES.index(stage)]:
                tm_start(getattr(self.ctx.tm, _TM_FIELDS[stage][0]), cpu)

    def finished(self) -> None:
        import time

        from hean.telemetry.block import tm_stop

        for stage in STAGES:
            if self.ctx.owns[STAGES.index(stage)]:
                tm_stop(getattr(self.ctx.tm, _TM_FIELDS[stage][0]), time.monotonic_ns())


def build_worker(spec: dict, ctl: np.ndarray) -> BuiltWorker:
    """Attach this worker's rings and telemetry, build its stages, and assemble the loop's context."""
    import msgspec

    cfg = msgspec.convert(spec["config"], Config)
    mine = set(spec["stages"])
    owns = np.array([1 if s in mine else 0 for s in STAGES], np.int64)
    run_id = spec["run_id"]
    segments: list = []

    pos_seg = attach_segment(f"hean-{run_id}-pos")
    segments.append(pos_seg)
    position = pos_seg.array(np.int64, len(cfg.symbols), 0)
    table, venue_of, synth, book, trades, risk, router, venue, strategy = build_stages(cfg, position, mine)
    tops = _attach_tops(run_id, len(cfg.venues), len(cfg.symbols), segments)

    rings: list[Ring] = []
    ring_arrays = {}
    for edge in EDGES:
        name = spec["rings"].get(edge.key)
        field = _RING_FIELDS[edge.key]
        if name and (edge.src in mine or edge.dst in mine):
            role = "producer" if edge.src in mine else "consumer"
            ring = attach(name, role=role)
            rings.append(ring)
            ring_arrays[field + "_h"], ring_arrays[field + "_s"] = ring.hdr, ring.slots
        else:
            ring_arrays[field + "_h"], ring_arrays[field + "_s"] = P.dummy_ring(edge.dtype)
    tm_arrays = {}
    risk_region = np.zeros(0, np.int64)
    for stage in STAGES:
        cf, hf = _TM_FIELDS[stage]
        if stage in mine:
            seg = attach_block(block_name(run_id, stage), readonly=False)
            segments.append(seg)
            tm_arrays[cf], tm_arrays[hf] = seg.block.counters, seg.block.hists
            if stage == "risk":
                risk_region = seg.block.risk
        else:
            tm_arrays[cf], tm_arrays[hf] = _dummy_tm(stage)
    if len(risk_region) == 0:
        from hean.telemetry.block import risk_len

        risk_region = np.zeros(risk_len(len(cfg.symbols)), np.int64)
    tm = P.Telemetry(risk_r=risk_region, **tm_arrays)

    params = np.zeros(P.P_LEN, np.int64)
    params[P.P_WORKER] = spec["index"]
    params[P.P_WAIT] = P.WAIT_CODES[spec["wait"]]
    params[P.P_SPIN_YIELD] = spec["spin_before_yield"]
    params[P.P_SPIN_SLEEP] = spec["spin_before_sleep"]
    params[P.P_SLEEP_NS] = spec["sleep_ns"]
    params[P.P_LOCKSTEP] = 1 if cfg.engine.lockstep else 0
    params[P.P_STALE_NS] = int(cfg.book.get("stale_ns", 0))
    replay = load_replay(cfg) if "feed" in mine else np.zeros(0, records.MARKET_EVENT)
    n_ev = max(4096, max_events_per_message(synth))
    ctx = Ctx(
        params=params,
        ctl=ctl,
        owns=owns,
        feedp=feed_params(cfg),
        clock=np.zeros(1, np.int64),
        synth=synth,
        replay=replay,
        book=book,
        trades=trades,
        tops=tops,
        venue_of=venue_of,
        strategy=strategy,
        position=position,
        risk=risk,
        router=router,
        venue=venue,
        rings=P.Rings(**ring_arrays),
        scratch=P.make_scratch(n_ev),
        tm=tm,
    )
    return BuiltWorker(ctx, rings, segments)


TOPS_FIELDS = 5  # VenueTops: bid_px, bid_qty, ask_px, ask_qty, ts_ns


def tops_name(run_id: str) -> str:
    return f"hean-{run_id}-tops"


def tops_size(n_venues: int, n_symbols: int) -> int:
    return TOPS_FIELDS * max(1, n_venues) * n_symbols * 8


def _attach_tops(run_id: str, n_venues: int, n_symbols: int, segments: list):
    """The router's view of each venue's top of book, shared: the book stage writes, the router reads."""
    seg = attach_segment(tops_name(run_id))
    segments.append(seg)
    nv = max(1, n_venues)
    arr = seg.array(np.int64, TOPS_FIELDS * nv * n_symbols, 0).reshape(TOPS_FIELDS, nv, n_symbols)
    template = make_venue_tops(nv, n_symbols)
    return type(template)(*[arr[i] for i in range(TOPS_FIELDS)])


def describe_error(e: Exception) -> str:
    return str(e) if isinstance(e, ConfigError) else f"{type(e).__name__}: {e}"
