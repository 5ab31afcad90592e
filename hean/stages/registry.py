"""The pipeline: its stages, in order. The one place the pipeline is written down.

The engine derives everything else from this list (:mod:`hean.engine.loopgen`): the edges between stages
(by the streams each stage declares), the rings, the telemetry blocks and their histogram rows, the worker
loop, the placements' stage groups, warm-up and the summary. Adding a stage is one module -- its state,
kernels, step and :class:`hean.stages.declare.Stage` -- and one line here.

Order matters: it is the order in which a worker runs its stages in every pass (the data flow: the venue,
standing for the exchange, last), and the order that joins streams (a stage takes a stream from the nearest
stage before it that publishes it).
"""

from __future__ import annotations

import importlib

from hean.stages.book import BOOK
from hean.stages.book_l3 import BOOK_L3
from hean.stages.declare import Stage
from hean.stages.feed import FEED
from hean.stages.risk import RISK
from hean.stages.router import ROUTER
from hean.stages.strategy import STRATEGY
from hean.stages.venue import VENUE
from hean.stages.venue_l3 import VENUE_L3

__all__ = ["PIPELINE", "PIPELINE_L3", "load", "pipeline_for", "refs", "trading_pipeline"]

PIPELINE: tuple[Stage, ...] = (FEED, BOOK, STRATEGY, RISK, ROUTER, VENUE)
# an order-by-order feed: the same stages, names and streams, with the L3 book and the L3 venue
PIPELINE_L3: tuple[Stage, ...] = (FEED, BOOK_L3, STRATEGY, RISK, ROUTER, VENUE_L3)


def trading_pipeline(cfg) -> tuple[Stage, ...]:
    """:data:`PIPELINE_L3` when the feed is order by order (``feed.l3``, set from the recording by
    :func:`hean.engine.build.prepare_replay`), else :data:`PIPELINE`. Chosen once, when the pipeline is
    assembled: the L2 stages' loops never test for L3 events."""
    return PIPELINE_L3 if cfg.feed.l3 else PIPELINE


def pipeline_for(cfg) -> tuple[Stage, ...]:
    """The pipeline a configuration runs: :func:`trading_pipeline`, and the journal after it when
    ``journal.dir`` is set (a background stage: its own worker, off the hot path; :mod:`hean.stages.journal`)."""
    base = trading_pipeline(cfg)
    if not cfg.journal.dir:
        return base
    from hean.stages.journal import JOURNAL, JOURNAL_MARKET

    return (*base, JOURNAL_MARKET if cfg.journal.market else JOURNAL)


def refs(pipeline: tuple[Stage, ...]) -> list[str]:
    """``module:NAME`` of each stage's declaration: how a worker process finds the same pipeline."""
    out = []
    for stage in pipeline:
        module = importlib.import_module(stage.module)
        names = [k for k, v in vars(module).items() if v is stage]
        if not names:
            raise ValueError(f"stage {stage.name!r}: its declaration is not a name in {stage.module}")
        out.append(f"{stage.module}:{names[0]}")
    return out


def load(references: list[str]) -> tuple[Stage, ...]:
    """The pipeline named by :func:`refs` (imported in this process)."""
    stages = []
    for ref in references:
        module, _, name = ref.partition(":")
        stage = getattr(importlib.import_module(module), name)
        if not isinstance(stage, Stage):
            raise TypeError(f"{ref} is not a hean.stages.declare.Stage")
        stages.append(stage)
    return tuple(stages)
