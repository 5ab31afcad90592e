"""The simulated clock shared by the feed and the simulated venue: what a replay's scheduler needs to know.

In a deterministic run (every replay, and ``engine.lockstep``) the feed is the scheduler of simulated time
(:mod:`hean.stages.feed`): it hands out, one at a time and in time order, the recording's messages to the
venue (at their exchange time), the same messages to the book chain (at their local receive time: the feed
latency model), and *wake-ups* of the venue, when an order reaches it or a report leaves it. The venue is
the only one that knows when its next wake-up is due -- its orders in flight and its reports held back by
their latency -- so it publishes that time here, and the feed reads it before choosing what comes next.

The venue also publishes, per symbol, how far a print could reach its resting orders: the feed sends a
message with a print to the venue and the strategy in one step (:func:`hean.stages.feed._next_action`) only
when the print cannot fill any of them -- the venue could make no report from it, so nothing can come
between the two copies.

Layout: int64 words, a cache line then two words per symbol (a segment ``hean-<run>-simclock`` when the feed
and the venue run in different workers, :data:`hean.engine.topology.SHARED_VIEWS`)::

    word      name            value
    --------  --------------  -------------------------------------------------------------------------
       0      SC_VENUE_NEXT   simulated time (ns) of the venue's next due event: the earliest arrival of an
                              order in flight or release of a report; 0 (NOTHING_DUE) when it has none
     1-7      --              padding (the line is the venue's alone)
     8 + 2s   SC_REACH        the highest price (ticks) of a resting BUY that a print of symbol ``s`` meets
                              (at the venue and instrument the symbol's events apply to); NO_BUY when none
     9 + 2s   SC_REACH + 1    the lowest price of such a resting SELL; NO_SELL when none

A print at ``px`` by a seller can fill a resting buy only at or above ``px``, by a buyer a resting sell only
at or below it (:func:`hean.stages.venue._on_trade`): :func:`print_reaches` says whether one might.

Memory order: the venue stores the reach words (relaxed; in a deterministic run, the only one whose feed
reads them) and then SC_VENUE_NEXT with release order after each pass that took something, before it
releases the records it took (a release store too); the feed reads SC_VENUE_NEXT with acquire order (then
the reach words) only when the pipeline is quiescent (:func:`hean.engine.pipeline.quiescent` saw every ring
empty and every worker idle), so the values it reads are the ones the venue stored after its last record.
"""

from __future__ import annotations

import numpy as np

from hean.atomics import load_acquire, load_relaxed, store_relaxed, store_release
from hean.jit import kernel

__all__ = [
    "NOTHING_DUE",
    "NO_BUY",
    "NO_SELL",
    "SC_REACH",
    "SC_VENUE_NEXT",
    "SIMCLOCK_WORDS",
    "print_reaches",
    "set_reach",
    "set_venue_next",
    "simclock_bytes",
    "simclock_view",
    "simclock_words",
    "venue_next",
]

SC_VENUE_NEXT = 0
SIMCLOCK_WORDS = 8  # the clock's cache line
SC_REACH = SIMCLOCK_WORDS  # then (highest resting buy, lowest resting sell) per symbol
NOTHING_DUE = 0  # no event due (simulated time starts after 0: a new segment's zeros say "nothing due")
NO_BUY = np.iinfo(np.int64).min
NO_SELL = np.iinfo(np.int64).max
assert SC_VENUE_NEXT < SIMCLOCK_WORDS and SIMCLOCK_WORDS * 8 == 64


def simclock_words(n_symbols: int) -> int:
    return SC_REACH + 2 * n_symbols


def simclock_bytes(n_symbols: int) -> int:
    return simclock_words(n_symbols) * 8


def simclock_view(words: np.ndarray, n_symbols: int) -> np.ndarray:
    """The clock over ``words`` (int64, at least :func:`simclock_words`). Attaching writes nothing: a worker
    that attaches late cannot undo what the venue stored. A new segment's zeros say: nothing due, no resting
    buy (a print is at a price >= 1 tick), a resting sell at 0 (every buyer's print might fill) -- true or
    cautious until the venue's first pass that took something, which is before anything can rest."""
    need = simclock_words(n_symbols)
    if words.dtype != np.int64 or words.shape[0] < need:
        raise ValueError(f"simclock: needs {need} int64 words, got {words.shape[0]} of {words.dtype}")
    return words[:need]


@kernel(forceinline=True, error_model="numpy")
def set_reach(clock, s, buy, sell):
    """The venue: a print of symbol ``s`` meets resting buys up to ``buy`` and resting sells down to ``sell``
    (NO_BUY / NO_SELL: none). Relaxed: :func:`set_venue_next`'s release store follows."""
    store_relaxed(clock, SC_REACH + 2 * s, buy)
    store_relaxed(clock, SC_REACH + 2 * s + 1, sell)


@kernel(forceinline=True, error_model="numpy")
def print_reaches(clock, s, px, aggressor):
    """The feed, when the pipeline is quiescent (after :func:`venue_next`): might a print of symbol ``s`` at
    ``px`` by ``aggressor`` (+1 buyer, -1 seller, 0 unknown: it fills nothing) fill a resting order?"""
    k = SC_REACH + 2 * s
    if s < 0 or k + 1 >= clock.shape[0]:
        return True  # (a symbol the view does not cover: assume it might)
    if aggressor < 0:
        return load_relaxed(clock, k) >= px
    if aggressor > 0:
        return load_relaxed(clock, k + 1) <= px
    return False


@kernel(forceinline=True, error_model="numpy")
def set_venue_next(clock, t):
    """The venue: its next due event is at ``t`` (NOTHING_DUE: none). Release: before the records it took go back."""
    store_release(clock, SC_VENUE_NEXT, t)


@kernel(forceinline=True, error_model="numpy")
def venue_next(clock):
    """The feed, when the pipeline is quiescent: when the venue next has something to do (NOTHING_DUE: nothing)."""
    return load_acquire(clock, SC_VENUE_NEXT)
