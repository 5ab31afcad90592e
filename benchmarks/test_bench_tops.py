"""The top-of-book view's cost: the book stage's write per book state and the router's read per venue, through
the seqlock (:mod:`hean.stages.tops`) against the plain view it replaced (five [venue, symbol] arrays, plain
stores and loads), side by side in one run.

Run: ``.venv/bin/pytest benchmarks/test_bench_tops.py`` (figures in ``benchmark.extra_info``), or
``.venv/bin/python benchmarks/test_bench_tops.py`` for a table. One core, in-process: both views stay in L1,
so this is the instructions' cost; across processes a read also pays the cache line's transfer from the
book stage's core, the same one line for both reads of the seqlock view (the old view's price and size were
two lines). Figures:

* **write** -- :func:`tops_on_book_state` per BOOK_STATE (4 venues x 8 symbols, symbols in random order),
  what ``book_step`` does per state; **write.plain** the old five plain stores.
* **read** -- :func:`tops_opposite` per (venue, symbol, side) in random order, what the router's ranking
  does per venue; **read.plain** the old two plain loads.

Nothing here asserts a timing (the machine is shared): compare the figures of one run.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np
import pytest
from numba import njit

from hean.records import BOOK_STATE
from hean.stages.tops import make_venue_tops, tops_on_book_state, tops_opposite

pytestmark = pytest.mark.timeout(300)

N_VENUES, N_SYMBOLS = 4, 8
BATCH = 4096  # states / reads per pass (random order, so no access pattern is loop-invariant)
CALLS = 2_000_000
ROUNDS = 7


class PlainTops(NamedTuple):
    """The view before the seqlock: one plain int64[n_venues, n_symbols] array per field."""

    bid_px: np.ndarray
    bid_qty: np.ndarray
    ask_px: np.ndarray
    ask_qty: np.ndarray
    ts_ns: np.ndarray


@njit(cache=True, nogil=True, inline="always")
def _plain_on_book_state(tops, venue, bs, now_ns):
    s = bs.symbol
    if venue < 0 or venue >= tops.bid_px.shape[0] or s < 0 or s >= tops.bid_px.shape[1]:
        return
    tops.bid_px[venue, s] = bs.bid_px
    tops.bid_qty[venue, s] = bs.bid_qty
    tops.ask_px[venue, s] = bs.ask_px
    tops.ask_qty[venue, s] = bs.ask_qty
    tops.ts_ns[venue, s] = now_ns


@njit(cache=True, nogil=True, inline="always")
def _plain_opposite(tops, v, s, side):
    if side > 0:
        return True, tops.ask_px[v, s], tops.ask_qty[v, s]
    return True, tops.bid_px[v, s], tops.bid_qty[v, s]


@njit(cache=True, nogil=True)
def _write_loop(tops, venue_of, states, passes):
    for r in range(passes):
        for j in range(states.shape[0]):
            bs = states[j]
            tops_on_book_state(tops, venue_of[bs.symbol], bs.symbol, bs, bs.ts_exch + r)


@njit(cache=True, nogil=True)
def _write_loop_plain(tops, venue_of, states, passes):
    for r in range(passes):
        for j in range(states.shape[0]):
            bs = states[j]
            _plain_on_book_state(tops, venue_of[bs.symbol], bs, bs.ts_exch + r)


@njit(cache=True, nogil=True)
def _read_loop(tops, reads, passes):
    acc = 0
    for _ in range(passes):
        for j in range(reads.shape[0]):
            ok, px, qty = tops_opposite(tops, reads[j, 0], reads[j, 1], reads[j, 2])
            if ok:
                acc += px ^ qty
    return acc


@njit(cache=True, nogil=True)
def _read_loop_plain(tops, reads, passes):
    acc = 0
    for _ in range(passes):
        for j in range(reads.shape[0]):
            ok, px, qty = _plain_opposite(tops, reads[j, 0], reads[j, 1], reads[j, 2])
            if ok:
                acc += px ^ qty
    return acc


def _inputs(seed: int = 1):
    rng = np.random.default_rng(seed)
    states = np.zeros(BATCH, BOOK_STATE)
    states["symbol"] = rng.integers(0, N_SYMBOLS, BATCH)
    states["bid_px"] = rng.integers(99_000, 100_000, BATCH)
    states["ask_px"] = states["bid_px"] + 1
    states["bid_qty"] = rng.integers(1, 100, BATCH)
    states["ask_qty"] = rng.integers(1, 100, BATCH)
    states["ts_exch"] = np.arange(BATCH)
    venue_of = np.arange(N_SYMBOLS, dtype=np.int64) % N_VENUES
    reads = np.stack(
        [rng.integers(0, N_VENUES, BATCH), rng.integers(0, N_SYMBOLS, BATCH), rng.choice([-1, 1], BATCH)], axis=1
    ).astype(np.int64)
    return states, venue_of, reads


def _views():
    plain = PlainTops(*[np.zeros((N_VENUES, N_SYMBOLS), np.int64) for _ in range(5)])
    return make_venue_tops(N_VENUES, N_SYMBOLS), plain


def _figure(run, calls: int) -> float:
    """Median ns per call of ``run(passes)`` over ROUNDS rounds of ``calls`` calls."""
    passes = max(1, calls // BATCH)
    run(1)  # compile or load
    ns = []
    for _ in range(ROUNDS):
        t0 = time.perf_counter_ns()
        run(passes)
        ns.append((time.perf_counter_ns() - t0) / (passes * BATCH))
    return float(np.median(ns))


def _runs() -> dict:
    """Each figure as ``run(passes)``, over views filled by one pass of the same states."""
    states, venue_of, reads = _inputs()
    tops, plain = _views()
    _write_loop(tops, venue_of, states, 1)
    _write_loop_plain(plain, venue_of, states, 1)
    return {
        "write": lambda p: _write_loop(tops, venue_of, states, p),
        "write.plain": lambda p: _write_loop_plain(plain, venue_of, states, p),
        "read": lambda p: _read_loop(tops, reads, p),
        "read.plain": lambda p: _read_loop_plain(plain, reads, p),
    }


def figures(calls: int = CALLS) -> dict[str, float]:
    """ns per call of each figure (see the module docstring), measured one after the other in one process."""
    return {name: _figure(run, calls) for name, run in _runs().items()}


@pytest.mark.parametrize("name", ["write", "write.plain", "read", "read.plain"])
def test_figure(benchmark, name):
    fn = _runs()[name]
    box = {}

    def once():
        box["ns"] = _figure(fn, CALLS)

    benchmark.pedantic(once, rounds=1, iterations=1)
    assert box["ns"] > 0
    benchmark.extra_info["ns_per_call"] = box["ns"]


def test_views_agree():
    """Both views hold the same tops after the same states: the comparison is like for like."""
    states, venue_of, reads = _inputs()
    tops, plain = _views()
    _write_loop(tops, venue_of, states, 1)
    _write_loop_plain(plain, venue_of, states, 1)
    for field in PlainTops._fields:
        assert np.array_equal(getattr(tops, field), getattr(plain, field))
    assert _read_loop(tops, reads, 1) == _read_loop_plain(plain, reads, 1)


if __name__ == "__main__":
    for name, ns in figures().items():
        print(f"tops.{name:<12} {ns:6.2f} ns")
