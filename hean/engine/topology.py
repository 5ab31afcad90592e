"""The pipeline's graph: which stage sends which record type to which stage, and which views stages share.

    feed --events--> book --states--> strategy --intents--> risk --orders--> router --venue_orders--> venue
      |                 \\--states------------------------->  risk <--reports-- router <--venue_reports--/
      \\--market-------------------------------------------------------------------------------> venue
    supervisor --control--> risk
    supervisor --live--> feed            (the live client's events: hean.live.ingest)

(derived from the stage registry: :mod:`hean.stages.registry`, :func:`hean.engine.loopgen.edges`)

Every edge whose two stages run in different workers becomes an SPSC ring in shared memory named
``hean-<run_id>-<edge>``; an edge inside one worker is a *private* ring, the same layout and operations over
process-local memory (so fused and split placements order records identically). The control edge always is
a shared ring: the supervisor (plain Python) is its producer; so is the ``live`` edge into the feed, which the
supervisor's live client fills (and which is empty in the other feed modes).

Besides the edges, stages share *views* (:data:`SHARED_VIEWS`): state one stage overwrites in place and
another reads when it needs the latest value, not a stream of records -- the router's top of book per
(venue, symbol), written by the book stage; the position and trading state per symbol, written by risk and
read by the strategy; the depth beside each book state, written by the book and read by the strategy; and
the simulated venue's next due time, written by the venue and read by the feed that schedules a replay.
Each is one segment ``hean-<run_id>-<key>``, created by the supervisor for every placement and attached by
every worker; its layout and the memory order of every access are documented beside the code that reads and
writes it (:mod:`hean.stages.tops` over :mod:`hean.rings.seqlock`, :mod:`hean.stages.positions`,
:mod:`hean.stages.depth`).

Cycles and back-pressure: orders flow risk -> router -> venue and reports flow back venue -> router -> risk,
so a worker that waited on a full ring could wait on a worker waiting on it. No step waits: a step takes an
input record only when its output rings have room for everything that record can produce, and otherwise
leaves it where it is while the worker runs its other stages, so a full ring back-pressures its producer and
the cycle never deadlocks. Market data (events, states) is acyclic and back-pressures the feed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from hean.engine.config import Config
from hean.engine.loopgen import Edge, edges
from hean.engine.placement import Placement
from hean.rings.seqlock import aligned_words
from hean.stages.depth import depth_bytes, depth_view
from hean.stages.positions import position_bytes, position_view
from hean.stages.registry import PIPELINE
from hean.stages.simclock import simclock_bytes, simclock_view
from hean.stages.tops import tops_bytes, tops_view

# The edges between stages: derived from the stage registry by the streams each stage declares
# (hean.engine.loopgen.edges), one per (stream, consumer), named "<stream>-<consumer>".
EDGES: tuple[Edge, ...] = edges(PIPELINE)


class ViewDims(NamedTuple):
    """What the shared views are sized by (:func:`view_dims`)."""

    n_venues: int  # at least one (the default simulated venue)
    n_symbols: int
    rows: int  # the rings' capacity (the depth table has one entry per slot of the states ring)
    depth: int  # levels per side the strategies read (the most any of them asks for; 0: none)


@dataclass(frozen=True)
class SharedView:
    """State shared between stages in place (not a stream): one segment per run, whatever the placement."""

    key: str  # segment suffix: hean-<run_id>-<key>
    writers: tuple[str, ...]  # the stage that stores into it (one writer per word or entry)
    readers: tuple[str, ...]  # stages that load from it
    nbytes: Callable[[ViewDims], int]  # the segment's size in bytes
    view: Callable[[np.ndarray, ViewDims], object]  # (int64 words of the segment, dims) -> the view
    order: str  # the memory-order summary; the layout is documented where ``view`` is defined


SHARED_VIEWS: tuple[SharedView, ...] = (
    SharedView(
        "tops",
        writers=("book",),
        readers=("router",),
        nbytes=lambda d: tops_bytes(d.n_venues, d.n_symbols),
        view=lambda words, d: tops_view(words, d.n_venues, d.n_symbols),
        order="a seqlock entry (one cache line) per (venue, symbol): the book stage stores SEQ odd (relaxed), "
        "a release fence, the five payload words (relaxed), SEQ even (release); the router loads SEQ "
        "(acquire), its two words (relaxed), an acquire fence, SEQ again (relaxed) and retries a torn copy, "
        "a bounded number of times (then: no quote)",
    ),
    SharedView(
        "pos",
        writers=("risk",),
        readers=("strategy",),
        nbytes=lambda d: position_bytes(d.n_symbols),
        view=lambda words, d: position_view(words, d.n_symbols),
        order="one aligned int64 per symbol (cannot tear): risk stores it relaxed, the strategy loads it relaxed",
    ),
    SharedView(
        "rstate",
        writers=("risk",),
        readers=("strategy",),
        nbytes=lambda d: position_bytes(d.n_symbols),
        view=lambda words, d: position_view(words, d.n_symbols),
        order="one aligned int64 per symbol, the TradingState that applies to it: risk stores it relaxed at "
        "every heartbeat of its worker, the strategy loads it relaxed (hean.api.risk_state)",
    ),
    SharedView(
        "depth",
        writers=("book",),
        readers=("strategy",),
        nbytes=lambda d: depth_bytes(d.rows, d.depth),
        view=lambda words, d: depth_view(words, d.rows, d.depth),
        order="one entry per slot of the states ring, plain stores: the book writes entry k before its release "
        "store publishes state k, the strategy reads it after its acquire load saw k, and the book cannot "
        "rewrite it before the strategy released slot k (hean.stages.depth)",
    ),
    SharedView(
        "simclock",
        writers=("venue",),
        readers=("feed",),
        nbytes=lambda d: simclock_bytes(d.n_symbols),
        view=lambda words, d: simclock_view(words, d.n_symbols),
        order="a cache line and two words per symbol: the venue stores each symbol's reach (relaxed), then its "
        "next due time (release), before it releases the records it took; the feed loads the due time "
        "(acquire), then the reach, only when the pipeline is quiescent (hean.stages.simclock)",
    ),
)


def view_name(run_id: str, view: SharedView) -> str:
    return f"hean-{run_id}-{view.key}"


def view_dims(cfg: Config) -> ViewDims:
    """What the shared views are sized for: the venues (at least the default simulated one), the symbols, the
    rings' capacity and the depth the run's strategies read (their declarations are imported for it)."""
    from hean.stages.strategy import strategy_depth

    return ViewDims(max(1, len(cfg.venues)), len(cfg.symbols), cfg.engine.ring_capacity, strategy_depth(cfg))


def private_views(cfg: Config) -> dict[str, object]:
    """Every shared view over process-local memory (one process runs the whole pipeline: tests, research)."""
    d = view_dims(cfg)
    return {v.key: v.view(aligned_words(v.nbytes(d) // 8), d) for v in SHARED_VIEWS}


@dataclass(frozen=True)
class RingSpec:
    edge: Edge
    name: str
    capacity: int


def ring_name(run_id: str, edge: Edge) -> str:
    return f"hean-{run_id}-{edge.key}"


def crosses(edge: Edge, placement: Placement) -> bool:
    """True when the edge joins two different processes and therefore needs a ring."""
    if edge.src == "supervisor":
        return True
    return not placement.fused(edge.src, edge.dst)


def ring_specs(run_id: str, placement: Placement, capacity: int, all_edges: tuple[Edge, ...] = EDGES) -> list[RingSpec]:
    """The rings this run needs: one per edge that crosses workers."""
    return [RingSpec(e, ring_name(run_id, e), _capacity(e, capacity)) for e in all_edges if crosses(e, placement)]


def _capacity(edge: Edge, capacity: int) -> int:
    if edge.src == "supervisor" and edge.stream == "control":  # control records: a few per run
        return 64
    return capacity  # the live feed's events: as many as any market-data ring (untouched pages cost nothing)
