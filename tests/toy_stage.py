"""A toy stage defined outside HEAN: it takes the book's ``states`` and publishes them unchanged.

It exists to show that a stage is one module plus one registry line (``tests/test_toy_stage.py`` puts it
between the book and the strategy through the registry alone). Inserted there, it takes over the ``states``
stream: the strategy and risk now take it from the toy stage, and neither they nor the book change.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from hean.jit import kernel
from hean.records import BOOK_STATE
from hean.stages.declare import Stage, Stream
from hean.stages.ports import age, put_each, slot
from hean.telemetry.block import C_USER_BASE

H_AGE_STATES = 1  # histogram row: a state's age when the toy takes it
U_PASSED = C_USER_BASE  # user counter: states passed on


class ToyStage(NamedTuple):
    """The toy's state: how many states it passed on (also in its telemetry, via its view)."""

    passed: np.ndarray  # int64[1]


@kernel(forceinline=True, error_model="numpy")
def toy_batch(S, src, dst, start, n, tm, t0):
    """Every state in, the same state out to every consumer of ``states``; returns the records published."""
    for j in range(n):
        rec = slot(src, start + j)
        age(tm.hists[H_AGE_STATES], t0, rec.ts_origin)
        put_each(dst, rec)
    S.passed[0] += n
    return n * len(dst)


@kernel(forceinline=True, error_model="numpy")
def toy_view(S, tm, now):
    tm.counters[U_PASSED] = S.passed[0]


def make_toy(ctx) -> ToyStage:
    return ToyStage(np.zeros(1, np.int64))


TOY = Stage(
    name="toy",
    module=__name__,
    batch="toy_batch",
    view="toy_view",
    inputs=(Stream("states", BOOK_STATE),),
    outputs=(Stream("states", BOOK_STATE),),
    build=make_toy,
    hists=("service", "age:states"),
    user_counters=("passed",),
)
