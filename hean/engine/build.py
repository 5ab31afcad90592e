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

import numpy as np

from hean import records
from hean.engine import pipeline as P
from hean.engine.config import STAGES, Config, ConfigError, call_factory, stage_kwargs
from hean.engine.topology import EDGES, SHARED_VIEWS, private_views, view_dims, view_name
from hean.rings import Ring, attach
from hean.shm import attach_segment
from hean.stages.book import make_book_stage
from hean.stages.declare import BuildContext
from hean.stages.feed import make_feed
from hean.stages.ports import Port, StageTm, private_port
from hean.stages.risk import make_risk_stage
from hean.stages.router import make_router_stage
from hean.stages.strategy import make_strategy
from hean.stages.venue import make_venue_stage
from hean.symbols import SymbolTable
from hean.telemetry.block import attach_block, block_name
from hean.telemetry.histogram import HIST_LEN

# Histogram rows of each stage's telemetry block, fixed so the loop can index them by constant
# (hean.engine.pipeline.H_*): "age.<edge>" is now - ts_origin when the stage takes the record.
STAGE_HISTS: dict[str, list[str]] = {
    "feed": ["service", "late"],
    "book": ["service", "age.ev-book"],
    "strategy": ["service", "age.bs-strat"],
    "risk": ["service", "age.bs-risk", "age.intents", "age.risk-reports"],
    "router": ["service", "age.orders", "age.reports", "e2e"],
    "venue": ["service", "age.ev-venue", "age.venue-orders"],
}
# stage-specific counters (C_USER_BASE + i), see hean.engine.pipeline.U_*
STAGE_USER_COUNTERS: dict[str, list[str]] = {
    "feed": ["messages"],  # hean.stages.feed.U_MESSAGES
    "router": ["order_digest", "fill_digest", "last_order_ns", "halted_ns"],
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


# ---------------------------------------------------------------------------------------------------------
# factories of the engine-level tables (their keyword parameters are the valid keys)
# ---------------------------------------------------------------------------------------------------------
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


def build_stages(cfg: Config, position: np.ndarray | None, owns: set[str] | None = None, tops=None):
    """The stage states for this configuration (``owns``: stages to build for real; others get stand-ins)."""
    owns = set(STAGES) if owns is None else owns
    table = symbol_table(cfg)
    vidx = venue_index(cfg)
    venue_of = np.array([vidx[s.venue] for s in cfg.symbols], np.int64)
    real = {s: (s in owns) for s in STAGES}

    make_book_stage(_context(cfg, real["book"], views={"tops": None}))  # checks [book]

    make_feed(_context(cfg, real["feed"]))  # checks [feed.synthetic] (the workers build the feed for real)

    risk = make_risk_stage(_context(cfg, real["risk"], views={"pos": position}))

    router = make_router_stage(_context(cfg, real["router"], views={"tops": tops}))

    venue = make_venue_stage(_context(cfg, real["venue"], venue_of=venue_of))

    strategy = make_strategy(_context(cfg, real["strategy"], views={"pos": position}))
    return table, venue_of, risk, router, venue, strategy


def check_config(cfg: Config) -> None:
    """Build every stage once in the supervisor: every key and value error surfaces before processes start.

    Whatever a stage factory raises on a value it cannot take is a ConfigError (one line, exit 2), never a
    traceback: :func:`call_factory` names the table; this names the configuration as the last resort.
    """
    try:
        build_stages(cfg, np.zeros(len(cfg.symbols), np.int64))
    except ConfigError:
        raise
    except (ValueError, TypeError, ArithmeticError, KeyError, MemoryError) as e:
        raise ConfigError(f"the configuration cannot be built: {type(e).__name__}: {e}") from None


# ---------------------------------------------------------------------------------------------------------
# the feed
# ---------------------------------------------------------------------------------------------------------
def _context(cfg: Config, real: bool, replay: np.ndarray | None = None, views: dict | None = None,
             venue_of: np.ndarray | None = None) -> BuildContext:
    """What a stage's build gets from the engine (hean.stages.declare.BuildContext)."""
    if venue_of is None:
        vidx = venue_index(cfg)
        venue_of = np.array([vidx[s.venue] for s in cfg.symbols], np.int64)
    return BuildContext(cfg=cfg, symbols=symbol_table(cfg), venue_of=venue_of, views=views or {}, real=real,
                        kwargs=stage_kwargs, call=call_factory, error=ConfigError, replay=replay)  # fmt: skip


def load_replay(cfg: Config) -> np.ndarray:
    """The recording's events for the replay feed (an empty array for the synthetic feed)."""
    if cfg.feed.source != "replay":
        return np.zeros(1, records.MARKET_EVENT)[:0]
    from hean.feeds import load_events

    events, _report = load_events(
        cfg.feed.path, cfg.feed.format, lenient=cfg.feed.lenient, symbol=cfg.feed.symbol or None
    )
    return np.array(events)  # a private writable copy: one array type for every worker (one compile)


# ---------------------------------------------------------------------------------------------------------
# one worker
# ---------------------------------------------------------------------------------------------------------
def _dummy_tm(stage: str, n_symbols: int) -> StageTm:
    """Private telemetry of the same shape as the stage's block (a stage this worker does not run, or the
    whole in-process pipeline)."""
    from hean.telemetry.block import N_COUNTERS, risk_len

    hists = np.zeros((len(STAGE_HISTS[stage]), HIST_LEN), np.int64)
    return StageTm(np.zeros(N_COUNTERS, np.int64), hists, np.zeros(risk_len(n_symbols), np.int64))


@dataclass
class BuiltWorker:
    worker: P.Worker
    rings: list[Ring]
    segments: list
    preempted_at_start: int = 0  # this process's involuntary context switches when its stages started

    def _owned_counters(self):
        for i, stage in enumerate(STAGES):
            if self.worker.owns[i]:
                yield getattr(self.worker, "tm_" + stage).counters

    def started(self, cpu: int) -> None:
        import resource

        from hean.telemetry.block import tm_start

        self.preempted_at_start = resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw
        for c in self._owned_counters():
            tm_start(c, cpu)

    def finished(self) -> None:
        """Mark the stages stopped, with how often the kernel preempted this process while they ran."""
        import resource
        import time

        from hean.telemetry.block import C_PREEMPTED, tm_stop

        preempted = resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw - self.preempted_at_start
        for c in self._owned_counters():
            c[C_PREEMPTED] = preempted
            tm_stop(c, time.monotonic_ns())


def build_worker(spec: dict, ctl: np.ndarray) -> BuiltWorker:
    """Attach this worker's rings and telemetry, build its stages, and assemble the loop's state."""
    import msgspec

    cfg = msgspec.convert(spec["config"], Config)
    mine = set(spec["stages"])
    run_id = spec["run_id"]
    n_sym = len(cfg.symbols)
    segments: list = []

    views = _attach_views(run_id, cfg, segments)
    position, tops = views["pos"], views["tops"]
    table, venue_of, risk, router, venue, strategy = build_stages(cfg, position, mine, tops)

    rings: list[Ring] = []
    edge_rings = {}
    cap = cfg.engine.ring_capacity
    from hean.engine import control as C

    w_act = C.worker_word(int(spec["index"]), C.W_ACTIVITY)
    act = ctl[w_act : w_act + 1]  # this worker's ACTIVITY word, shared by all its rings
    for edge in EDGES:
        name = spec["rings"].get(edge.key)
        if name and (edge.src in mine or edge.dst in mine):
            ring = attach(name, role="producer" if edge.src in mine else "consumer")
            rings.append(ring)
            edge_rings[_RING_FIELDS[edge.key]] = Port(ring.hdr, ring.slots, act)
        elif edge.src in mine and edge.dst in mine:
            edge_rings[_RING_FIELDS[edge.key]] = private_port(edge.dtype, cap, act)
        else:
            edge_rings[_RING_FIELDS[edge.key]] = private_port(edge.dtype, 2, act)  # never used here
    tms = {}
    for stage in STAGES:
        if stage in mine:
            seg = attach_block(block_name(run_id, stage), readonly=False)
            segments.append(seg)
            tms[stage] = seg.block
        else:
            tms[stage] = _dummy_tm(stage, n_sym)

    params = np.zeros(P.P_LEN, np.int64)
    params[P.P_WORKER] = spec["index"]
    params[P.P_WAIT] = P.WAIT_CODES[spec["wait"]]
    params[P.P_SPIN_YIELD] = spec["spin_before_yield"]
    params[P.P_SPIN_SLEEP] = spec["spin_before_sleep"]
    params[P.P_SLEEP_NS] = spec["sleep_ns"]
    params[P.P_LOCKSTEP] = 1 if cfg.engine.lockstep else 0
    params[P.P_SUPERVISOR] = int(spec.get("supervisor_pid", 0))
    params[P.P_SUP_TIMEOUT_NS] = cfg.engine.heartbeat_timeout_ms * 1_000_000
    params[P.P_SUP_TID] = int(spec.get("supervisor_tid", 0))
    replay = load_replay(cfg) if "feed" in mine else np.zeros(0, records.MARKET_EVENT)
    worker = P.Worker(
        params=params,
        ctl=ctl,
        owns=np.array([1 if s in mine else 0 for s in STAGES], np.int64),
        clock=np.zeros(len(STAGES), np.int64),
        rings=P.Rings(**edge_rings),
        feed=make_feed(_context(cfg, "feed" in mine, replay)),
        book=make_book_stage(_context(cfg, "book" in mine, views={"tops": tops}, venue_of=venue_of)),
        strategy=strategy,
        risk=risk,
        router=router,
        venue=venue,
        **{"tm_" + s: tms[s] for s in STAGES},
    )  # fmt: skip
    return BuiltWorker(worker, rings, segments)


def _attach_views(run_id: str, cfg: Config, segments: list) -> dict[str, object]:
    """Every shared view of the topology (the router's top of book, the positions) over its run segment."""
    nv, ns = view_dims(cfg)
    views = {}
    for v in SHARED_VIEWS:
        seg = attach_segment(view_name(run_id, v))
        segments.append(seg)
        views[v.key] = v.view(seg.array(np.int64), nv, ns)
    return views


def build_local(cfg: Config, ctl: np.ndarray | None = None) -> P.Worker:
    """The whole pipeline in this process, every edge a private ring, telemetry in private arrays.

    For tests, research and benchmarks: ``run_loop(worker, n)`` runs ``n`` iterations of the same loop a
    worker process runs (without segments, processes or a supervisor).
    """
    n_sym = len(cfg.symbols)
    views = private_views(cfg)
    position, tops = views["pos"], views["tops"]
    table, venue_of, risk, router, venue, strategy = build_stages(cfg, position, tops=tops)
    from hean.engine import control as C

    if ctl is None:
        ctl = np.zeros(C.CTL_WORDS, np.int64)

    params = np.zeros(P.P_LEN, np.int64)
    params[P.P_WAIT] = P.W_SPIN
    params[P.P_LOCKSTEP] = 1 if cfg.engine.lockstep else 0
    cap = cfg.engine.ring_capacity
    act = ctl[C.worker_word(0, C.W_ACTIVITY) : C.worker_word(0, C.W_ACTIVITY) + 1]
    ctl[C.N_WORKERS] = 1
    ctl[C.START] = 1  # no other worker to wait for
    return P.Worker(
        params=params,
        ctl=ctl,
        owns=np.ones(len(STAGES), np.int64),
        clock=np.zeros(len(STAGES), np.int64),
        rings=P.Rings(**{_RING_FIELDS[e.key]: private_port(e.dtype, cap, act) for e in EDGES}),
        feed=make_feed(_context(cfg, True, load_replay(cfg))),
        book=make_book_stage(_context(cfg, True, views={"tops": tops}, venue_of=venue_of)),
        strategy=strategy,
        risk=risk,
        router=router,
        venue=venue,
        **{"tm_" + s: _dummy_tm(s, n_sym) for s in STAGES},
    )  # fmt: skip
