"""Building a worker's state from the configuration and the pipeline's registry.

Each stage builds its own state from its configuration table (its declaration's ``build``, given a
:class:`hean.stages.declare.BuildContext`); the engine gives it the symbol table, the shared views and its
checks of a table against the stage factory's keyword parameters (:func:`hean.engine.config.stage_kwargs`:
an unknown or mistyped key is an error naming the key; a factory's ValueError a :class:`ConfigError` naming
the table). :func:`check_config` builds every stage once in the supervisor before any process starts.

A worker builds every stage: the ones it runs for real, the others as small private stand-ins of the same
types -- so every placement's loop has one type, compiled once (:mod:`hean.engine.warm`).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from hean import records
from hean.engine import pipeline as P
from hean.engine.config import Config, ConfigError, call_factory, stage_kwargs
from hean.engine.loopgen import edges, loop_module, stage_hists
from hean.engine.topology import SHARED_VIEWS, private_views, view_dims, view_name
from hean.rings import Ring, attach
from hean.shm import attach_segment, lazy_zeros
from hean.stages.declare import BuildContext, Stage
from hean.stages.ports import Port, StageTm, private_port
from hean.stages.registry import PIPELINE
from hean.symbols import SymbolTable
from hean.telemetry.block import attach_block, block_name
from hean.telemetry.histogram import HIST_LEN

__all__ = [
    "BuiltWorker",
    "build_local",
    "build_stages",
    "build_worker",
    "check_config",
    "load_replay",
    "prepare_replay",
    "prepared_replay",
]


def venue_index(cfg: Config) -> dict[str, int]:
    return {v.name: i for i, v in enumerate(cfg.venues)}


def symbol_table(cfg: Config) -> SymbolTable:
    return SymbolTable(
        [
            {"name": s.name, "tick_size": str(s.tick_size), "lot_size": str(s.lot_size), "venue": s.venue}
            for s in cfg.symbols
        ]
    )


def _context(cfg: Config, real: bool, views: dict, replay: np.ndarray | None = None) -> BuildContext:
    """What a stage's build gets from the engine (hean.stages.declare.BuildContext)."""
    vidx = venue_index(cfg)
    venue_of = np.array([vidx[s.venue] for s in cfg.symbols], np.int64)
    ids = {s.name: i for i, s in enumerate(cfg.symbols)}
    instrument_of = np.array([ids[s.instrument] if s.instrument else i for i, s in enumerate(cfg.symbols)], np.int64)
    return BuildContext(cfg=cfg, symbols=symbol_table(cfg), venue_of=venue_of, views=views, real=real,
                        kwargs=stage_kwargs, call=call_factory, error=ConfigError, replay=replay,
                        instrument_of=instrument_of, value_per_tick_lot=value_per_tick_lot(cfg))  # fmt: skip


def value_per_tick_lot(cfg: Config) -> np.ndarray:
    """Each symbol's quote currency per tick per lot: tick size x lot size x contract multiplier."""
    from decimal import Decimal

    return np.array(
        [float(Decimal(str(s.tick_size)) * Decimal(str(s.lot_size)) * Decimal(str(s.multiplier))) for s in cfg.symbols],
        np.float64,
    )


def build_stages(
    cfg: Config,
    views: dict,
    owns: set[str] | None = None,
    pipeline: tuple[Stage, ...] = PIPELINE,
    replay: np.ndarray | None = None,
) -> dict[str, object]:
    """Every stage's state by name, in pipeline order (``owns``: the stages built for real; the others get
    stand-ins). ``replay``: the recording's events, for the source when it is real."""
    owns = {s.name for s in pipeline} if owns is None else owns
    ctx = _context(cfg, True, views, replay)  # one for all: its tables are read, never written, by the builds
    return {s.name: s.build(dataclasses.replace(ctx, real=s.name in owns)) for s in pipeline}


def check_config(cfg: Config, pipeline: tuple[Stage, ...] = PIPELINE) -> None:
    """Build every stage once in the supervisor: every key and value error surfaces before processes start.

    Whatever a stage factory raises on a value it cannot take is a ConfigError (one line, exit 2), never a
    traceback: :func:`call_factory` names the table; this names the configuration as the last resort.
    """
    try:
        build_stages(cfg, private_views(cfg), pipeline=pipeline)
    except ConfigError:
        raise
    except (ValueError, TypeError, ArithmeticError, KeyError, MemoryError) as e:
        raise ConfigError(f"the configuration cannot be built: {type(e).__name__}: {e}") from None


def prepare_replay(cfg: Config, directory: str):
    """:func:`prepared_replay` without the events: (config, the reader's report)."""
    cfg, report, _events = prepared_replay(cfg, directory)
    return cfg, report


def prepared_replay(cfg: Config, directory: str | os.PathLike, in_process: bool = False):
    """The recording(s) as one native event file and the configuration to run it: the feed maps that file,
    and the symbol table is the recording's symbols as exact instruments on their venues
    (:mod:`hean.engine.recordings`). Returns (config, the readers' reports (``.summary()``), the events as
    read: an in-process run builds on them, with no second load). Raises the reader's FeedError (naming the
    file).

    A native recording is mapped where it is. Any other is read once into HEAN's conversion cache
    (:mod:`hean.feeds.cache`: a second replay of the same file maps the entry and parses nothing); several
    recordings, or units changed by the instruments, are merged into ``directory``. ``in_process``: the
    events returned are all that replays them (:func:`hean.engine.recordings.prepare_recordings`)."""
    import msgspec

    from hean.engine.recordings import prepare_recordings
    from hean.stages.book_l3 import l3_capacity

    rec = prepare_recordings(cfg, directory, in_process)
    symbols = [msgspec.structs.replace(cfg.symbols[0], **entry) for entry in rec.symbols]
    cap = l3_capacity(rec.events)  # None: no L3 event (an L2 recording)
    feed = msgspec.structs.replace(cfg.feed, path=rec.path, format="native", l3=cap is not None, guessed=rec.guessed)
    cfg = msgspec.structs.replace(cfg, feed=feed, symbols=symbols, book=_l3_book(cfg.book, cap))
    return cfg, rec, rec.events


def _l3_book(table: dict, cap: tuple[int, int] | None) -> dict:
    """The ``[book]`` table of a replay: on an L3 recording (``feed.l3``: the engine then runs the L3 book and
    venue, hean.stages.registry.trading_pipeline), ``l3_orders``/``l3_levels`` sized from the recording where
    the configuration leaves them 0 (hean.stages.book_l3.l3_capacity)."""
    book = dict(table)
    if cap is not None:
        for key, n in zip(("l3_orders", "l3_levels"), cap, strict=True):
            if not book.get(key):
                book[key] = n
    return book


def load_replay(cfg: Config, events: np.ndarray | None = None) -> np.ndarray:
    """The recording's events for the replay feed (an empty array for the synthetic feed); ``events``: the
    recording already read in this process (:func:`prepared_replay`)."""
    from hean.stages.feed import replay_array

    if cfg.feed.source != "replay":
        return replay_array(np.zeros(0, records.MARKET_EVENT))
    if events is None:
        from hean.feeds import load_events

        events, _report = load_events(
            cfg.feed.path, cfg.feed.format, lenient=cfg.feed.lenient, symbol=cfg.feed.symbol or None
        )
    return replay_array(events)


# ---------------------------------------------------------------------------------------------------------
# one worker
# ---------------------------------------------------------------------------------------------------------
def _dummy_tm(stage: Stage, n_symbols: int, hists: np.ndarray | None = None) -> StageTm:
    """Private telemetry of the same shape as the stage's block (a stage this worker does not run, or the
    whole in-process pipeline); ``hists``: its histogram rows, when the caller mapped them."""
    from hean.telemetry.block import N_COUNTERS, risk_len

    if hists is None:
        hists = lazy_zeros((len(stage_hists(stage)), HIST_LEN), np.int64)
    return StageTm(np.zeros(N_COUNTERS, np.int64), hists, np.zeros(risk_len(n_symbols), np.int64))


def _private_tms(pipeline: tuple[Stage, ...], n_symbols: int) -> dict[str, StageTm]:
    """Every stage's private telemetry, the histograms of all of them in one mapping (a mapping a stage
    was ~15 us of a backtest's set-up, and its unmapping as much)."""
    rows = [len(stage_hists(s)) for s in pipeline]
    arena = lazy_zeros((sum(rows), HIST_LEN), np.int64)
    ends = np.cumsum(rows)
    return {s.name: _dummy_tm(s, n_symbols, arena[e - r : e]) for s, r, e in zip(pipeline, rows, ends, strict=True)}


@dataclass
class BuiltWorker:
    worker: object  # the generated loop module's Worker
    loop: ModuleType  # the generated loop module (run_loop, PASSES; hean.engine.loopgen)
    pipeline: tuple[Stage, ...]
    rings: list[Ring]
    segments: list
    preempted_at_start: int = 0  # this process's involuntary context switches when its stages started

    def _owned_counters(self):
        for i, stage in enumerate(self.pipeline):
            if self.worker.owns[i]:
                yield getattr(self.worker, "tm_" + stage.name).counters

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


def _params(cfg: Config) -> np.ndarray:
    params = np.zeros(P.P_LEN, np.int64)
    params[P.P_WAIT] = P.W_SPIN
    # a replay is always deterministic: the feed schedules simulated time (hean.stages.feed)
    params[P.P_LOCKSTEP] = 1 if cfg.engine.lockstep or cfg.feed.source == "replay" else 0
    params[P.P_UNTIMED] = 0 if cfg.engine.latency_stats else 1
    params[P.P_NOTIFY_FD] = -1  # no supervisor waiting (in process); a worker gets the supervisor's
    return params


def _assemble(loop: ModuleType, pipeline, params, ctl, owns, rings: dict, states: dict, tms: dict):
    return loop.Worker(
        params=params,
        ctl=ctl,
        owns=np.array([1 if s.name in owns else 0 for s in pipeline], np.int64),
        rings=loop.Rings(**rings),
        **{"st_" + s.name: states[s.name] for s in pipeline},
        **{"tm_" + s.name: tms[s.name] for s in pipeline},
    )


def build_worker(spec: dict, ctl: np.ndarray) -> BuiltWorker:
    """Attach this worker's rings and telemetry, build its stages, and assemble the loop's state."""
    import msgspec

    from hean.engine import control as C
    from hean.stages.registry import load

    cfg = msgspec.convert(spec["config"], Config)
    pipeline = load(spec["pipeline"]) if spec.get("pipeline") else PIPELINE
    loop = loop_module(pipeline)
    mine = set(spec["stages"])
    run_id = spec["run_id"]
    n_sym = len(cfg.symbols)
    segments: list = []
    views = _attach_views(run_id, cfg, segments)
    source_real = any(s.source and s.name in mine for s in pipeline)
    states = build_stages(cfg, views, mine, pipeline, load_replay(cfg) if source_real else None)

    rings: list[Ring] = []
    ports = {}
    cap = cfg.engine.ring_capacity
    w_act = C.worker_word(int(spec["index"]), C.W_ACTIVITY)
    act = ctl[w_act : w_act + 1]  # this worker's ACTIVITY word, shared by all its rings
    for edge in edges(pipeline):
        name = spec["rings"].get(edge.key)
        if name and (edge.src in mine or edge.dst in mine):
            ring = attach(name, role="producer" if edge.src in mine else "consumer")
            rings.append(ring)
            ports[edge.field] = Port(ring.hdr, ring.slots, act)
        elif edge.src in mine and edge.dst in mine:
            ports[edge.field] = private_port(edge.dtype, cap, act)
        else:
            ports[edge.field] = private_port(edge.dtype, 2, act)  # never used here
    tms = {}
    for stage in pipeline:
        if stage.name in mine:
            seg = attach_block(block_name(run_id, stage.name), readonly=False)
            segments.append(seg)
            tms[stage.name] = seg.block
        else:
            tms[stage.name] = _dummy_tm(stage, n_sym)

    params = _params(cfg)
    params[P.P_WORKER] = spec["index"]
    params[P.P_WAIT] = P.WAIT_CODES[spec["wait"]]
    params[P.P_SPIN_YIELD] = spec["spin_before_yield"]
    params[P.P_SPIN_SLEEP] = spec["spin_before_sleep"]
    params[P.P_SLEEP_NS] = spec["sleep_ns"]
    params[P.P_SUPERVISOR] = int(spec.get("supervisor_pid", 0))
    params[P.P_SUP_TIMEOUT_NS] = cfg.engine.heartbeat_timeout_ms * 1_000_000
    params[P.P_SUP_TID] = int(spec.get("supervisor_tid", 0))
    params[P.P_NOTIFY_FD] = int(spec.get("notify_fd", -1))
    worker = _assemble(loop, pipeline, params, ctl, mine, ports, states, tms)
    return BuiltWorker(worker, loop, pipeline, rings, segments)


def _attach_views(run_id: str, cfg: Config, segments: list) -> dict[str, object]:
    """Every shared view of the topology (the router's top of book, the positions) over its run segment."""
    dims = view_dims(cfg)
    views = {}
    for v in SHARED_VIEWS:
        seg = attach_segment(view_name(run_id, v))
        segments.append(seg)
        views[v.key] = v.view(seg.array(np.int64), dims)
    return views


def build_local(
    cfg: Config, ctl: np.ndarray | None = None, pipeline: tuple[Stage, ...] = PIPELINE, replay: np.ndarray | None = None
):
    """The whole pipeline in this process, every edge a private ring, telemetry in private arrays (``replay``:
    the recording's events when the caller has read them already).

    For tests, research and benchmarks: ``loop_module(pipeline).run_loop(worker, n)`` runs ``n`` iterations
    of the same loop a worker process runs (without segments, processes or a supervisor).
    """
    from hean.engine import control as C

    loop = loop_module(pipeline)
    if ctl is None:
        ctl = np.zeros(C.CTL_WORDS, np.int64)
    act = ctl[C.worker_word(0, C.W_ACTIVITY) : C.worker_word(0, C.W_ACTIVITY) + 1]
    ctl[C.N_WORKERS] = 1
    ctl[C.START] = 1  # no other worker to wait for
    names = {s.name for s in pipeline}
    states = build_stages(cfg, private_views(cfg), names, pipeline, load_replay(cfg, replay))
    cap = cfg.engine.ring_capacity
    ports = {e.field: private_port(e.dtype, cap, act) for e in edges(pipeline)}
    tms = _private_tms(pipeline, len(cfg.symbols))
    return _assemble(loop, pipeline, _params(cfg), ctl, names, ports, states, tms)
