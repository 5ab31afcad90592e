"""Depth beside the book states: the top levels of the book as they were when each state was published.

Why a history and not the latest depth: a strategy must see the depth that goes with the book state it is
handling (``ctx.book[s]`` and ``ctx.depth[s]`` describe the same book), in every placement. When the book
and the strategy run in different processes, the book may be thousands of events ahead; a "latest depth"
view would show the strategy a book from its future. So the book stage writes, for every state it publishes,
an *entry* of the top ``N`` levels per side into row ``k & (rows - 1)`` of this view, where ``k`` counts the
states it has published (the states ring's sequence: every consumer of ``states`` receives every state, so
``k`` is also the slot's sequence in the strategy's states ring). The strategy copies row ``k`` when it takes
slot ``k``. It is a shared view (:data:`hean.engine.topology.SHARED_VIEWS`), ``hean-<run>-depth``, when the
two stages run in different workers, and process-local memory otherwise.

Layout (int64 words): ``rows`` entries of ``2 + 4 * N`` words, ``rows`` the states ring's capacity (a power
of two); ``N = 0`` (no strategy asked for depth) leaves a 2-word table the book never writes.

==========================  ==================================================================================
``e[DW_SEQ]``               the state's ``seq`` (the market event's): checked by the reader
``e[DW_SYMBOL]``            the state's symbol
``e[DW_LEVELS + r*N + i]``  row ``r``: :data:`DP_BID_PX`, :data:`DP_BID_QTY`, :data:`DP_ASK_PX`,
                            :data:`DP_ASK_QTY` of level ``i`` (0 = the touch); zeros past the book's levels
==========================  ==================================================================================

Memory order: no atomics of its own. The book writes entry ``k`` with plain stores *before* it publishes
state ``k`` (the ring's release store of WRITE); the strategy reads it *after* its acquire load of WRITE saw
``k``, so the entry is visible in full. It is never rewritten while the strategy may read it: the book writes
entry ``k + rows`` only when it may publish slot ``k + rows``, i.e. after the strategy released slot ``k``
(its copy is done by then). The reader still checks ``DW_SEQ`` and ``DW_SYMBOL`` against the state (a
mismatch -- a table smaller than the ring, say -- gives empty depth and is counted, never a wrong book).
"""

from __future__ import annotations

import numpy as np

from hean.jit import kernel

__all__ = [
    "DP_ASK_PX",
    "DP_ASK_QTY",
    "DP_BID_PX",
    "DP_BID_QTY",
    "DW_LEVELS",
    "MAX_DEPTH",
    "N_DP",
    "depth_bytes",
    "depth_copy",
    "depth_levels",
    "depth_view",
]

DW_SEQ = 0
DW_SYMBOL = 1
DW_LEVELS = 2  # first level word

# rows of an entry's levels, and of a strategy's ctx.depth[s]
DP_BID_PX = 0  # ticks
DP_BID_QTY = 1  # lots
DP_ASK_PX = 2
DP_ASK_QTY = 3
N_DP = 4

MAX_DEPTH = 64  # levels per side a strategy may ask for


def depth_bytes(rows: int, levels: int) -> int:
    """Size of the table: ``rows`` entries (the states ring's capacity) of ``levels`` levels per side."""
    assert rows > 0 and rows & (rows - 1) == 0, "rows must be a power of two (the ring's capacity)"
    assert 0 <= levels <= MAX_DEPTH
    return rows * (DW_LEVELS + N_DP * levels) * 8


def depth_view(words: np.ndarray, rows: int, levels: int) -> np.ndarray:
    """The table over ``words`` (int64, at least :func:`depth_bytes` / 8): int64[rows, 2 + 4 * levels]."""
    return words[: depth_bytes(rows, levels) // 8].reshape(rows, DW_LEVELS + N_DP * levels)


@kernel(inline=True, error_model="numpy")
def depth_levels(table):
    """Levels per side the table keeps (0: none)."""
    return (table.shape[1] - DW_LEVELS) // N_DP


@kernel(forceinline=True, error_model="numpy")
def depth_copy(table, k, seq, symbol, out):
    """Copy entry ``k`` (the states ring sequence of the state ``seq``/``symbol`` being taken) into ``out``
    (int64[N_DP, n]: a strategy's ``ctx.depth[s]``), its first ``n`` levels. Returns False -- and zeroes
    ``out`` -- when the entry is not that state's."""
    n = out.shape[1]
    m = depth_levels(table)
    e = table[k & (table.shape[0] - 1)]
    if m == 0 or e[DW_SEQ] != seq or e[DW_SYMBOL] != symbol:
        out[:, :] = 0
        return False
    c = min(n, m)
    for r in range(N_DP):
        base = DW_LEVELS + r * m
        for i in range(c):
            out[r, i] = e[base + i]
        for i in range(c, n):
            out[r, i] = 0
    return True
