"""A synthetic L2 feed for ``hean run`` without a recording: numba, deterministic by seed.

Why its own generator instead of numpy's: the feed runs inside a busy-poll compiled loop, in whichever
process the placement puts it, and must produce the same stream for the same seed no matter how the caller
batches calls. The state (a splitmix64 PRNG word plus a small book model per symbol) lives in a
:class:`SyntheticState` NamedTuple of numpy arrays and advances only through :func:`synthetic_next`.

The model per symbol: ``depth`` price levels per side, contiguous from the touch (``bid_px - i`` and
``ask_px + i``), random lot sizes. Each message is one of:

* the first message of a symbol: a snapshot (CLEAR, then every level, F_SNAPSHOT);
* a quote change at a level near the touch (geometric in the distance from it);
* one side's touch moving by a tick, away (touch deleted, a new far level) or towards the other side (a new
  touch, the farthest level deleted), keeping ``1 <= spread <= max_spread`` -- a random walk of the mid;
* a trade: a TRADE print against one side's touch (its own group), then that touch shrinking or, when the
  print takes all of it, the touch moving away.

Each group ends with F_LAST_IN_GROUP, so the book stage publishes one state per group; the book is never
crossed. Prices are ticks, quantities lots; ``ts_origin``/``ts_exch`` are the caller's stamp, ``seq`` counts
events from 1 and ``update_id`` counts messages per symbol.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from hean.jit import kernel
from hean.records import F_LAST_IN_GROUP, F_SNAPSHOT, EventKind

__all__ = ["SyntheticState", "make_synthetic", "max_events_per_message", "synthetic_batch", "synthetic_next"]

_LEVEL_SET = int(EventKind.LEVEL_SET)
_CLEAR = int(EventKind.CLEAR)
_TRADE = int(EventKind.TRADE)

# ``iparams`` columns
P_DEPTH, P_MAX_SPREAD, P_MAX_QTY = 0, 1, 2
# ``fparams`` columns: probability of a trade, of a touch move (else a quote change)
P_TRADE, P_MOVE = 0, 1


class SyntheticState(NamedTuple):
    rng: np.ndarray  # uint64[1]: splitmix64 state
    iparams: np.ndarray  # int64[3]: P_DEPTH, P_MAX_SPREAD, P_MAX_QTY
    fparams: np.ndarray  # float64[2]: P_TRADE, P_MOVE
    bid_px: np.ndarray  # int64[n]: best bid, ticks
    ask_px: np.ndarray  # int64[n]: best ask, ticks
    bid_qty: np.ndarray  # int64[n, depth]: lots at bid_px - i
    ask_qty: np.ndarray  # int64[n, depth]: lots at ask_px + i
    snapped: np.ndarray  # int64[n]: 1 once the symbol's snapshot went out
    update_id: np.ndarray  # int64[n]: messages per symbol
    seq: np.ndarray  # int64[1]: events written


def make_synthetic(
    n_symbols: int,
    seed: int,
    depth: int = 20,
    start_px: int = 100_000,
    max_spread: int = 3,
    max_qty: int = 1_000,
    p_trade: float = 0.1,
    p_move: float = 0.25,
) -> SyntheticState:
    """A feed for ``n_symbols``: symbol ``s`` starts at bid ``start_px * (s + 1)`` ticks, ask one tick up."""
    if n_symbols < 1 or depth < 2 or max_spread < 1 or max_qty < 1 or start_px <= depth:
        raise ValueError("n_symbols >= 1, depth >= 2, max_spread >= 1, max_qty >= 1, start_px > depth")
    if not (0 <= p_trade <= 1 and 0 <= p_move <= 1 and p_trade + p_move <= 1):
        raise ValueError("p_trade, p_move must be probabilities with p_trade + p_move <= 1")
    st = SyntheticState(
        rng=np.array([seed & (2**64 - 1)], np.uint64),
        iparams=np.array([depth, max_spread, max_qty], np.int64),
        fparams=np.array([p_trade, p_move], np.float64),
        bid_px=np.array([start_px * (s + 1) for s in range(n_symbols)], np.int64),
        ask_px=np.array([start_px * (s + 1) + 1 for s in range(n_symbols)], np.int64),
        bid_qty=np.zeros((n_symbols, depth), np.int64),
        ask_qty=np.zeros((n_symbols, depth), np.int64),
        snapped=np.zeros(n_symbols, np.int64),
        update_id=np.zeros(n_symbols, np.int64),
        seq=np.zeros(1, np.int64),
    )
    _init_levels(st)
    return st


def max_events_per_message(state: SyntheticState) -> int:
    """The most events one :func:`synthetic_next` call writes (a snapshot: CLEAR plus both sides)."""
    return 2 * int(state.iparams[P_DEPTH]) + 1


@kernel
def _next_u64(st):
    """splitmix64: one 64-bit word; the whole state is st.rng[0]."""
    z = st.rng[0] + np.uint64(0x9E3779B97F4A7C15)
    st.rng[0] = z
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@kernel
def _uniform(st):
    """A float in [0, 1)."""
    return np.float64(_next_u64(st) >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@kernel
def _below(st, n):
    """An int64 in [0, n)."""
    return np.int64(_next_u64(st) >> np.uint64(1)) % n


@kernel
def _qty(st):
    return 1 + _below(st, st.iparams[P_MAX_QTY])


@kernel
def _init_levels(st):
    for s in range(st.bid_px.shape[0]):
        for i in range(st.bid_qty.shape[1]):
            st.bid_qty[s, i] = _qty(st)
            st.ask_qty[s, i] = _qty(st)


# inlined by numba: tiny, and called with literal constants (one compile per constant otherwise)
@kernel(inline=True)
def _put(st, out, k, kind, sym, side, flags, px, qty, ts):
    r = out[k]
    st.seq[0] += 1
    r.seq = st.seq[0]
    r.ts_origin = ts
    r.ts_exch = ts
    r.symbol = sym
    r.kind = kind
    r.side = side
    r.flags = flags
    r.price = px
    r.qty = qty
    r.order_id = st.seq[0] if kind == _TRADE else 0
    r.update_id = st.update_id[sym]
    return k + 1


@kernel(forceinline=True)  # per message, from two places: a call would copy the state tuple
def _move(st, out, k, sym, s, toward, ts, flags):
    """Side ``s`` (0 bid, 1 ask) of ``sym``: the touch moves one tick towards the other side or away."""
    depth = st.bid_qty.shape[1]
    q = st.bid_qty[sym] if s == 0 else st.ask_qty[sym]
    side = 1 if s == 0 else -1
    touch = st.bid_px[sym] if s == 0 else st.ask_px[sym]
    if toward:
        # a new touch one tick better; the farthest level is deleted
        far = touch - side * (depth - 1)
        for i in range(depth - 1, 0, -1):
            q[i] = q[i - 1]
        q[0] = _qty(st)
        touch += side
        k = _put(st, out, k, _LEVEL_SET, sym, side, 0, touch, q[0], ts)
        k = _put(st, out, k, _LEVEL_SET, sym, side, flags, far, 0, ts)
    else:
        # the touch is deleted; a new level appears beyond the farthest one
        old = touch
        for i in range(depth - 1):
            q[i] = q[i + 1]
        q[depth - 1] = _qty(st)
        touch -= side
        k = _put(st, out, k, _LEVEL_SET, sym, side, 0, old, 0, ts)
        k = _put(st, out, k, _LEVEL_SET, sym, side, flags, touch - side * (depth - 1), q[depth - 1], ts)
    if s == 0:
        st.bid_px[sym] = touch
    else:
        st.ask_px[sym] = touch
    return k


@kernel
def _snapshot(st, out, k, sym, ts):
    depth = st.bid_qty.shape[1]
    k = _put(st, out, k, _CLEAR, sym, 0, F_SNAPSHOT, 0, 0, ts)
    for i in range(depth):
        k = _put(st, out, k, _LEVEL_SET, sym, 1, F_SNAPSHOT, st.bid_px[sym] - i, st.bid_qty[sym, i], ts)
    for i in range(depth):
        f = F_SNAPSHOT | (F_LAST_IN_GROUP if i == depth - 1 else 0)
        k = _put(st, out, k, _LEVEL_SET, sym, -1, f, st.ask_px[sym] + i, st.ask_qty[sym, i], ts)
    st.snapped[sym] = 1
    return k


@kernel(forceinline=True)  # per message in the feed's loop
def synthetic_next(st, out, k, ts_origin_ns):
    """Write the next message into ``out[k:]`` (room for :func:`max_events_per_message` needed).

    Returns the number of events written (>= 1); the last one carries F_LAST_IN_GROUP.
    """
    n_sym = st.bid_px.shape[0]
    depth = st.bid_qty.shape[1]
    sym = _below(st, n_sym)
    st.update_id[sym] += 1
    k0 = k
    ts = ts_origin_ns
    if st.snapped[sym] == 0:
        return _snapshot(st, out, k, sym, ts) - k0
    u = _uniform(st)
    spread = st.ask_px[sym] - st.bid_px[sym]
    if u < st.fparams[P_TRADE]:
        # aggressor buys (takes the ask, s = 1) or sells (takes the bid, s = 0)
        s = _below(st, 2)
        q = st.bid_qty[sym] if s == 0 else st.ask_qty[sym]
        touch = st.bid_px[sym] if s == 0 else st.ask_px[sym]
        take = 1 + _below(st, q[0])
        aggressor = -1 if s == 0 else 1
        k = _put(st, out, k, _TRADE, sym, aggressor, F_LAST_IN_GROUP, touch, take, ts)
        if take < q[0]:
            q[0] -= take
            k = _put(st, out, k, _LEVEL_SET, sym, -aggressor, F_LAST_IN_GROUP, touch, q[0], ts)
        elif spread < st.iparams[P_MAX_SPREAD]:
            k = _move(st, out, k, sym, s, False, ts, F_LAST_IN_GROUP)
        else:
            # the spread is already at its widest: the touch is refilled rather than moving away
            q[0] = _qty(st)
            k = _put(st, out, k, _LEVEL_SET, sym, -aggressor, F_LAST_IN_GROUP, touch, q[0], ts)
    elif u < st.fparams[P_TRADE] + st.fparams[P_MOVE]:
        s = _below(st, 2)
        toward = _below(st, 2) == 0
        if toward and spread <= 1:
            toward = False
        if not toward and spread >= st.iparams[P_MAX_SPREAD]:
            toward = True
        k = _move(st, out, k, sym, s, toward, ts, F_LAST_IN_GROUP)
    else:
        # a quote change: level i with probability ~ 2^-(i+1), new size
        s = _below(st, 2)
        i = 0
        while i < depth - 1 and _below(st, 2) == 1:
            i += 1
        q = st.bid_qty[sym] if s == 0 else st.ask_qty[sym]
        q[i] = _qty(st)
        side = 1 if s == 0 else -1
        px = st.bid_px[sym] - i if s == 0 else st.ask_px[sym] + i
        k = _put(st, out, k, _LEVEL_SET, sym, side, F_LAST_IN_GROUP, px, q[i], ts)
    return k - k0


@kernel
def synthetic_batch(st, out, n_messages, ts0, dt):
    """Write ``n_messages`` messages stamped ``ts0, ts0 + dt, ...``; returns the number of events.

    ``out`` needs ``n_messages * max_events_per_message`` slots in the worst case.
    """
    k = 0
    for m in range(n_messages):
        k += synthetic_next(st, out, k, ts0 + m * dt)
    return k
