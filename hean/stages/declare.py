"""A stage's declaration: what the engine needs to know to put a stage into the pipeline.

Why declarations: the engine composes the pipeline -- its rings, workers, compiled loop, telemetry blocks and
summary -- from the ordered registry of these (:mod:`hean.stages.registry`); a stage is wired in nowhere
else. Adding a stage is one module holding its state, kernels, step and :class:`Stage`, plus one line in
the registry.

**Streams and edges.** A stage names the streams it takes and publishes (``"events"``, ``"states"``, ...).
The engine joins them into edges by pipeline order: a stage takes stream S from the nearest stage *before*
it that publishes S -- or, for a feedback stream (the reports flowing back), the nearest one after it. One
edge per (producer, consumer): a stream two stages take is published to both, in the order of the
producer's outputs. So a pass-through stage placed between two others takes over their stream without
either changing. A stream no stage publishes comes from outside the pipeline (``external``: the
supervisor's control records, the live client's events).

**The step.** ``step(state, ins, outs, tm, now, flags) -> int``, a forceinline kernel: ``ins``/``outs`` are
tuples of :class:`hean.stages.ports.Port` in the order declared, ``tm`` the stage's
:class:`hean.stages.ports.StageTm`, ``now`` the pass's CLOCK_MONOTONIC ns, ``flags`` the engine's
``F_*`` bits. It returns how many records it took (a *source* -- a stage with no inputs -- returns -1 once
it has nothing more to publish). It never blocks: it takes an input only when its outputs have room for
everything that input can produce.

**The batch.** Most stages take one stream and publish at most one record per input to every consumer of one
stream (the book, the strategy). Such a stage may declare ``batch`` instead of ``step``:
``batch(state, src, dst, start, n, tm, t0) -> int`` applies the ``n`` records of port ``src`` from sequence
``start`` (:func:`hean.stages.ports.slot`), publishes to ``dst`` (the consumers' ports:
:func:`hean.stages.ports.put_each`) and returns how many records it published. The engine writes the step
around it, the same for every such stage: take a batch the outputs have room for
(:func:`hean.stages.ports.take`), call ``batch``, close the batch (:func:`hean.stages.ports.taken`: service
time, slots released, records counted).

**The view.** Optionally ``view(state, tm, now)``, called at every heartbeat of the worker: what the stage
shows observers in its telemetry block (risk state, reject counts).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["F_HALTED", "F_LOCKSTEP", "F_UNTIMED", "BuildContext", "Stage", "Stream"]

F_HALTED = 1  # flags bit: the run is halted -- nothing more may leave the router
F_LOCKSTEP = 2  # flags bit: deterministic lockstep mode (the source publishes one message at a time)
F_UNTIMED = 4  # flags bit: no latency histograms -- the stages read no clock (hean.stages.ports.stage_clock)


@dataclass(frozen=True)
class Stream:
    """What flows on an edge: a name the stages agree on and the record dtype."""

    name: str
    dtype: np.dtype
    external: bool = False  # published from outside the pipeline (the supervisor)


@dataclass(frozen=True)
class BuildContext:
    """What a stage's ``build`` gets: the configuration, the symbol table, the shared views, and whether this
    worker runs the stage (a stage it does not run gets a small stand-in of the same types: one compiled loop
    serves every placement)."""

    cfg: Any  # hean.engine.config.Config
    symbols: Any  # hean.symbols.SymbolTable
    venue_of: np.ndarray  # int64[n_symbols]: each symbol's venue index
    # int64[n_symbols]: the instrument each symbol quotes -- itself, or for another venue's listing the symbol
    # it lists ([[symbols]] instrument): its book is that venue's quote of the instrument for the router
    instrument_of: np.ndarray
    # float64[n_symbols]: quote currency one tick of price on one lot is worth, tick_size * lot_size * the
    # contract multiplier ([[symbols]] multiplier: 50 for CME's ES, 1 for linear crypto contracts): every
    # notional, fee and PnL of the engine
    value_per_tick_lot: np.ndarray
    views: dict[str, Any]  # shared views by name (hean.engine.topology.SHARED_VIEWS)
    real: bool  # this worker runs the stage
    # the engine's checks of a configuration table, so a stage names its keys' errors the engine's way:
    # kwargs(section, table, factory) -> the table, checked against the factory's keyword parameters;
    # call(section, factory, *args, **kwargs) -> the factory's result (its ValueError names the section)
    kwargs: Callable[..., dict[str, Any]]
    call: Callable[..., Any]
    error: Callable[[str], Exception]  # the engine's configuration error, for a message naming a key
    replay: np.ndarray | None = None  # the recording's events (for the feed, when it is real)


@dataclass(frozen=True)
class Stage:
    """One stage of the pipeline (see the module docstring)."""

    name: str
    module: str  # the module holding ``step`` (or ``batch``) and ``view`` (imported by the generated loop)
    inputs: tuple[Stream, ...]
    outputs: tuple[Stream, ...]
    build: Callable[[BuildContext], Any]  # the stage's state (a NamedTuple of numpy arrays and tuples)
    hists: tuple[str, ...]  # histogram rows of its telemetry block; the first is "service"
    step: str | None = None  # name of the step kernel in ``module``
    batch: str | None = None  # or: name of its batch kernel (one input, one output; see the module docstring)
    user_counters: tuple[str, ...] = ()
    view: str | None = None  # name of the view kernel in ``module``
    feedback: frozenset[str] = field(default_factory=frozenset)  # input streams that flow back (reports)
    config: str | None = None  # the configuration table it reads (for messages and `config show`)
    risk_region: bool = False  # its telemetry block has the per-symbol risk region its view fills (`hean top`)
    # off the hot path: the stage runs in a worker of its own, on the CPUs kept for the OS, and sleeps when idle
    background: bool = False
    # a class in ``module`` whose instance does the stage's Python-side work (files, sockets) between chunks of
    # the worker's loop: ``Cls(cfg, run_id)``, ``.start(state) -> state``, ``.serve(state, final) -> state``,
    # ``.close()`` (only a background stage may have one: chunking would stall a hot worker)
    service: str | None = None

    def __post_init__(self) -> None:
        if not self.hists or self.hists[0] != "service":
            raise ValueError(f"stage {self.name!r}: the first histogram row must be 'service'")
        if (self.step is None) == (self.batch is None):
            raise ValueError(f"stage {self.name!r}: declare exactly one of step and batch")
        if self.batch is not None and (len(self.inputs) != 1 or len(self.outputs) != 1):
            raise ValueError(f"stage {self.name!r}: a batch stage takes one stream and publishes one")
        if self.service is not None and not self.background:
            raise ValueError(f"stage {self.name!r}: only a background stage may have a service")
        names = [s.name for s in self.inputs]
        if len(set(names)) != len(names):
            raise ValueError(f"stage {self.name!r}: an input stream twice: {names}")

    @property
    def source(self) -> bool:
        """A stage that takes nothing from another stage (at most streams from outside the pipeline: the
        feed's ``live`` ring): the engine starts it at START, stops it at STOP_FEED."""
        return all(s.external for s in self.inputs)


@functools.cache
def parameters_of(factory: Callable) -> Mapping[str, inspect.Parameter]:
    """A stage factory's parameters, read once per process: the configuration checks each stage's table
    against them and takes their defaults (``inspect.signature`` took ~2 ms of every backtest's set-up)."""
    return inspect.signature(factory).parameters


def per_item(value: Any, n: int, cast: Callable[[Any], Any] | None = None) -> list:
    """A factory's parameter given once for all items or once per item (a sequence or array of ``n``), as a
    list of ``n`` Python numbers to check and turn into the stage's array (``cast``: applied to each, e.g.
    ``float`` for a float64 parameter). Why plain numbers: a build checks a dozen such parameters, and
    numpy's broadcast and reductions over a few elements cost ~10 us a check, against ~1 us in Python. A
    sequence of another length raises numpy's ValueError."""
    vals = [value] * n if type(value) in (int, float) else np.broadcast_to(np.asarray(value), (n,)).tolist()
    return vals if cast is None else [cast(x) for x in vals]
