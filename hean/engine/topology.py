"""The pipeline's graph: which stage sends which record type to which stage.

    feed --events--> book --states--> strategy --intents--> risk --orders--> router --orders--> venue
      |                 \\--states------------------------->  risk <--reports-- router <--reports--/
      \\--events------------------------------------------------------------------------> venue
    supervisor --control--> risk

Every edge whose two stages run in different workers becomes an SPSC ring named
``hean-<run_id>-<edge>``; an edge inside one worker is a direct function call (no ring, no copy). The
control edge always is a ring: the supervisor (plain Python) is its producer.

Cycles and back-pressure: orders flow risk -> router -> venue and reports flow back venue -> router -> risk,
so a worker blocked on a full ring could wait on a worker blocked on it. The order and report rings are
therefore sized for far more records than the risk limits let be outstanding (max open orders times a few
reports each): a full order or report ring can only mean a stalled peer, which the worker reports
(``ERR_RING_STALLED``) instead of waiting forever. Market data (events, states) is acyclic and simply
applies back-pressure to the feed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hean import records
from hean.engine.placement import Placement


@dataclass(frozen=True)
class Edge:
    key: str  # short name, part of the ring name
    src: str  # producing stage ("supervisor" for control)
    dst: str  # consuming stage
    dtype: np.dtype
    feedback: bool  # True for the report path (sized for outstanding orders, never back-pressures)


EDGES: tuple[Edge, ...] = (
    Edge("ev-book", "feed", "book", records.MARKET_EVENT, False),
    Edge("ev-venue", "feed", "venue", records.MARKET_EVENT, False),
    Edge("bs-strat", "book", "strategy", records.BOOK_STATE, False),
    Edge("bs-risk", "book", "risk", records.BOOK_STATE, False),
    Edge("intents", "strategy", "risk", records.ORDER, False),
    Edge("orders", "risk", "router", records.ORDER, False),
    Edge("venue-orders", "router", "venue", records.ORDER, False),
    Edge("reports", "venue", "router", records.EXEC_REPORT, True),
    Edge("risk-reports", "router", "risk", records.EXEC_REPORT, True),
    Edge("control", "supervisor", "risk", records.CONTROL, False),
)
EDGE_INDEX = {e.key: i for i, e in enumerate(EDGES)}


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


def ring_specs(run_id: str, placement: Placement, capacity: int) -> list[RingSpec]:
    """The rings this run needs: one per edge that crosses workers."""
    return [RingSpec(e, ring_name(run_id, e), _capacity(e, capacity)) for e in EDGES if crosses(e, placement)]


def _capacity(edge: Edge, capacity: int) -> int:
    if edge.key == "control":
        return 64
    return capacity
