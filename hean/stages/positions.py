"""Positions and PnL from execution reports, per symbol and in total.

Accounting method: **average cost**. Adding to a position moves the average entry price to the
quantity-weighted mean of the old average and the fill price; reducing a position realizes
``(fill - average) * closed_qty * sign(position)`` and leaves the average unchanged; a fill that flips the
position through zero realizes the whole old position and opens the remainder at the fill price.

Units: positions are int64 lots (signed: long > 0), prices are ticks (the average is float64 ticks because
a weighted mean of ticks is not a whole tick), money is float64 quote currency. One lot moving one tick is
worth ``value_per_tick_lot[s] = tick_size * lot_size * contract_multiplier`` of quote currency.

``realized`` is *gross* of fees; fees (negative = rebates) are kept apart, so

    equity = capital + sum(realized) - sum(fees) + sum(unrealized)

Unrealized PnL is marked to the mid (``mark``, float ticks) that risk receives from the book stage. The
totals (``totals[T_*]``) are kept incrementally so reading equity is O(1) on the hot path.

Shared with the strategy: ``position_lots`` may be the segment ``hean-<run>-pos`` (declared in
:data:`hean.engine.topology.SHARED_VIEWS`), which risk writes and the strategy stage reads from another
process. Each symbol's position is one aligned int64 word, and an aligned 8-byte access is a single
indivisible access on x86-64 (and atomic in LLVM's model when it is an atomic access): it cannot tear, so no
seqlock is needed. Risk, the only writer, stores it with :func:`~hean.atomics.store_relaxed`
(:func:`pos_fill`) and the strategy loads it with :func:`~hean.atomics.load_relaxed`. Relaxed is enough:
the strategy uses the number on its own -- no other data is published with it that a reader would need to
see first -- and a relaxed atomic access still may not be elided, merged or cached in a register across
loop iterations, so the strategy sees each new position as soon as the store reaches it. Risk reads its own
word back with plain loads: no other process writes it (:func:`position_bytes` gives the segment's size).

Kernels are compiled with ``_nrt=False``: they never allocate, and numba would otherwise reference-count
every array of a NamedTuple argument on each call (hundreds of ns; see :mod:`hean.stages.book`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from hean.atomics import store_relaxed
from hean.jit import kernel
from hean.stages.declare import per_item

__all__ = [
    "Positions",
    "make_positions",
    "position_bytes",
    "position_view",
    "pos_equity",
    "pos_fill",
    "pos_mark",
]

T_REALIZED = 0  # sum of realized PnL over symbols (gross of fees)
T_FEES = 1  # sum of fees paid (negative: rebates)
T_UNREALIZED = 2  # sum of unrealized PnL marked to mid
T_CAPITAL = 3  # starting capital (quote currency)
T_LEN = 4


class Positions(NamedTuple):
    position_lots: np.ndarray  # int64[n]: signed position; may be shared (relaxed store here, relaxed load in
    # the strategy: see the module docstring)
    avg_px: np.ndarray  # float64[n]: average entry price, ticks (0 when flat)
    realized: np.ndarray  # float64[n]: realized PnL, quote ccy, gross of fees
    fees: np.ndarray  # float64[n]: fees paid, quote ccy
    unrealized: np.ndarray  # float64[n]: (mark - avg_px) * position * value_per_tick_lot
    mark: np.ndarray  # float64[n]: last mid, ticks (0 = never marked)
    volume_lots: np.ndarray  # int64[n]: traded volume
    value_per_tick_lot: np.ndarray  # float64[n]: quote currency per (1 tick x 1 lot)
    totals: np.ndarray  # float64[T_LEN]


def position_bytes(n_symbols: int) -> int:
    """Bytes of a shared position array of ``n_symbols`` int64 words (at least one cache line)."""
    if n_symbols < 1:
        raise ValueError(f"n_symbols must be >= 1, got {n_symbols}")
    return max(64, 8 * n_symbols)


def position_view(words: np.ndarray, n_symbols: int) -> np.ndarray:
    """The int64[n_symbols] position array over ``words`` (e.g. a shared segment's int64 view)."""
    if words.dtype != np.int64 or words.ndim != 1 or words.shape[0] < n_symbols:
        raise ValueError(f"need int64[>= {n_symbols}] for the positions, got {words.dtype}{words.shape}")
    return words[:n_symbols]


def make_positions(
    n_symbols: int,
    value_per_tick_lot: float | np.ndarray = 1.0,
    capital: float = 0.0,
    position_lots: np.ndarray | None = None,
) -> Positions:
    """Flat positions for ``n_symbols``.

    ``value_per_tick_lot``: quote currency per tick per lot, scalar or one per symbol (default 1.0).
    ``capital``: starting equity in quote currency. ``position_lots``: an int64[n_symbols] array to hold the
    positions (e.g. a view into shared memory the strategy reads); it is zeroed.
    """
    if n_symbols < 1:
        raise ValueError(f"n_symbols must be >= 1, got {n_symbols}")
    vptl = per_item(value_per_tick_lot, n_symbols, float)
    if not all(math.isfinite(x) and x > 0 for x in vptl):
        raise ValueError(f"value_per_tick_lot must be finite and > 0, got {value_per_tick_lot!r}")
    if position_lots is None:
        position_lots = np.zeros(n_symbols, dtype=np.int64)
    elif position_lots.dtype != np.int64 or position_lots.shape != (n_symbols,):
        raise ValueError(f"position_lots must be int64[{n_symbols}], got {position_lots.dtype}{position_lots.shape}")
    position_lots[:] = 0
    totals = np.zeros(T_LEN, dtype=np.float64)
    totals[T_CAPITAL] = capital

    def f64():
        return np.zeros(n_symbols, dtype=np.float64)

    return Positions(
        position_lots=position_lots,
        avg_px=f64(),
        realized=f64(),
        fees=f64(),
        unrealized=f64(),
        mark=f64(),
        volume_lots=np.zeros(n_symbols, dtype=np.int64),
        value_per_tick_lot=np.array(vptl, np.float64),
        totals=totals,
    )


@kernel
def _remark(pos, s):
    """Recompute the unrealized PnL of ``s`` and carry the change into the total."""
    upnl = 0.0
    if pos.mark[s] > 0.0 and pos.position_lots[s] != 0:
        upnl = (pos.mark[s] - pos.avg_px[s]) * pos.position_lots[s] * pos.value_per_tick_lot[s]
    pos.totals[2] += upnl - pos.unrealized[s]
    pos.unrealized[s] = upnl


@kernel
def pos_fill(pos, s, side, price, qty, fee):
    """Apply a fill of ``qty`` lots at ``price`` ticks on ``side`` (+1 buy, -1 sell) with ``fee``.

    Returns the PnL realized by this fill (gross of the fee).
    """
    p = pos.position_lots[s]
    q = side * qty
    realized = 0.0
    if p == 0 or (p > 0) == (side > 0):  # opening or adding
        ap = abs(p)
        pos.avg_px[s] = (pos.avg_px[s] * ap + price * qty) / (ap + qty)
    else:  # reducing, closing or flipping
        closing = min(qty, abs(p))
        sign = 1 if p > 0 else -1
        realized = (price - pos.avg_px[s]) * closing * sign * pos.value_per_tick_lot[s]
        if qty > abs(p):
            pos.avg_px[s] = float(price)  # the remainder opens a new position at the fill price
        elif qty == abs(p):
            pos.avg_px[s] = 0.0
    store_relaxed(pos.position_lots, s, p + q)  # the strategy may read it from another process
    pos.realized[s] += realized
    pos.fees[s] += fee
    pos.volume_lots[s] += qty
    pos.totals[0] += realized
    pos.totals[1] += fee
    _remark(pos, s)
    return realized


@kernel
def pos_mark(pos, s, mid):
    """Mark symbol ``s`` to ``mid`` (float ticks); ignored when ``mid`` is not positive."""
    if mid > 0.0:
        pos.mark[s] = mid
        _remark(pos, s)


@kernel
def pos_equity(pos):
    """capital + realized - fees + unrealized, quote currency."""
    t = pos.totals
    return t[3] + t[0] - t[1] + t[2]
