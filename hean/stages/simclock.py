"""The simulated clock shared by the feed and the simulated venue: what a replay's scheduler needs to know.

In a deterministic run (every replay, and ``engine.lockstep``) the feed is the scheduler of simulated time
(:mod:`hean.stages.feed`): it hands out, one at a time and in time order, the recording's messages to the
venue (at their exchange time), the same messages to the book chain (at their local receive time: the feed
latency model), and *wake-ups* of the venue, when an order reaches it or a report leaves it. The venue is
the only one that knows when its next wake-up is due -- its orders in flight and its reports held back by
their latency -- so it publishes that time here, and the feed reads it before choosing what comes next.

Layout: one cache line of int64 words (a segment ``hean-<run>-simclock`` when the feed and the venue run in
different workers, :data:`hean.engine.topology.SHARED_VIEWS`)::

    word  name            value
    ----  --------------  -----------------------------------------------------------------------------
       0  SC_VENUE_NEXT   simulated time (ns) of the venue's next due event: the earliest arrival of an
                          order in flight or release of a report; 0 (NOTHING_DUE) when it has none
     1-7  --              padding (the line is the venue's alone)

Memory order: the venue stores SC_VENUE_NEXT with release order after each pass that took something, before
it releases the records it took (a release store too); the feed reads it with acquire order only when the
pipeline is quiescent (:func:`hean.engine.pipeline.quiescent` saw every ring empty and every worker idle),
so the value it reads is the one the venue stored after its last record.
"""

from __future__ import annotations

import numpy as np

from hean.atomics import load_acquire, store_release
from hean.jit import kernel

__all__ = [
    "NOTHING_DUE",
    "SC_VENUE_NEXT",
    "SIMCLOCK_WORDS",
    "set_venue_next",
    "simclock_bytes",
    "simclock_view",
    "venue_next",
]

SC_VENUE_NEXT = 0
SIMCLOCK_WORDS = 8  # one cache line
NOTHING_DUE = 0  # no event due (simulated time starts after 0: a new segment's zeros say "nothing due")
assert SC_VENUE_NEXT < SIMCLOCK_WORDS and SIMCLOCK_WORDS * 8 == 64


def simclock_bytes() -> int:
    return SIMCLOCK_WORDS * 8


def simclock_view(words: np.ndarray) -> np.ndarray:
    """The clock over ``words`` (int64, at least SIMCLOCK_WORDS; zeros: nothing due). Attaching writes nothing:
    a worker that attaches late cannot undo what the venue stored."""
    if words.dtype != np.int64 or words.shape[0] < SIMCLOCK_WORDS:
        raise ValueError(f"simclock: needs {SIMCLOCK_WORDS} int64 words, got {words.shape[0]} of {words.dtype}")
    return words[:SIMCLOCK_WORDS]


@kernel(forceinline=True, error_model="numpy")
def set_venue_next(clock, t):
    """The venue: its next due event is at ``t`` (NOTHING_DUE: none). Release: before the records it took go back."""
    store_release(clock, SC_VENUE_NEXT, t)


@kernel(forceinline=True, error_model="numpy")
def venue_next(clock):
    """The feed, when the pipeline is quiescent: when the venue next has something to do (NOTHING_DUE: nothing)."""
    return load_acquire(clock, SC_VENUE_NEXT)
