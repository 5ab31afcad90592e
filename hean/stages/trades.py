"""Trade statistics per symbol: the last print and a rolling VWAP over a time window.

State is a :class:`TradeStats` NamedTuple of numpy arrays; logic is ``@kernel`` functions that never allocate.
The VWAP window is a per-symbol ring of the prints inside the window with running integer sums
(``sum(px * qty)`` in tick-lots and ``sum(qty)`` in lots), so adding and evicting a print is O(1) and exact:
float sums would drift as prints are subtracted again. When more prints fall inside the window than the
ring holds, the oldest is evicted early and ``counts[sym, C_TRUNCATED]`` says how often that happened (the
VWAP then covers a shorter window) -- size ``capacity`` for the busiest symbol's prints per window.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from hean.jit import kernel

__all__ = [
    "TradeStats",
    "make_trade_stats",
    "trade_on",
    "trade_vwap",
]

# ``last`` columns
L_PX, L_QTY, L_SIDE, L_TS = 0, 1, 2, 3
# ``counts`` columns: next write slot, prints in the window, prints evicted early (ring full), prints seen
C_HEAD, C_COUNT, C_TRUNCATED, C_SEEN = 0, 1, 2, 3


class TradeStats(NamedTuple):
    last: np.ndarray  # int64[n, 4]: last print's px (ticks), qty (lots), aggressor side, ts (ns)
    ring_ts: np.ndarray  # int64[n, C]: ts of the prints in the window (ring, oldest at head - count)
    ring_px: np.ndarray  # int64[n, C]
    ring_qty: np.ndarray  # int64[n, C]
    counts: np.ndarray  # int64[n, 4]: C_HEAD, C_COUNT, C_TRUNCATED, C_SEEN
    sums: np.ndarray  # int64[n, 2]: sum(px * qty), sum(qty) over the prints in the window
    window_ns: np.ndarray  # int64[1]: VWAP window length


def make_trade_stats(n_symbols: int, window_ns: int = 60_000_000_000, capacity: int = 4096) -> TradeStats:
    """Zeroed stats for ``n_symbols``; VWAP over the last ``window_ns`` (default 60 s), ``capacity`` prints."""
    if n_symbols < 1 or capacity < 1 or window_ns < 1:
        raise ValueError("n_symbols, capacity and window_ns must be positive")
    z = np.zeros
    return TradeStats(
        last=z((n_symbols, 4), np.int64),
        ring_ts=z((n_symbols, capacity), np.int64),
        ring_px=z((n_symbols, capacity), np.int64),
        ring_qty=z((n_symbols, capacity), np.int64),
        counts=z((n_symbols, 4), np.int64),
        sums=z((n_symbols, 2), np.int64),
        window_ns=np.array([window_ns], np.int64),
    )


@kernel(forceinline=True)
def _tail(c, cap):
    """Ring index of the oldest print: ``(head - count) mod cap`` without a division (``count <= cap`` and
    ``0 <= head < cap``, so one wrap at most; an integer ``%`` by a run-time capacity is a ~40-cycle divide,
    paid per print and per book state)."""
    t = c[C_HEAD] - c[C_COUNT]
    return t + cap if t < 0 else t


@kernel
def _evict_oldest(st, sym):
    cap = st.ring_ts.shape[1]
    c = st.counts[sym]
    tail = _tail(c, cap)
    st.sums[sym, 0] -= st.ring_px[sym, tail] * st.ring_qty[sym, tail]
    st.sums[sym, 1] -= st.ring_qty[sym, tail]
    c[C_COUNT] -= 1


@kernel
def _evict_before(st, sym, now):
    """Drop prints older than ``now - window``."""
    cap = st.ring_ts.shape[1]
    c = st.counts[sym]
    horizon = now - st.window_ns[0]
    while c[C_COUNT] > 0:
        tail = _tail(c, cap)
        if st.ring_ts[sym, tail] >= horizon:
            break
        _evict_oldest(st, sym)


@kernel
def trade_on(st, sym, ts, px, qty, side):
    """Record a print of ``qty`` lots at ``px`` ticks at time ``ts`` (ns); ``side`` = aggressor side."""
    cap = st.ring_ts.shape[1]
    c = st.counts[sym]
    st.last[sym, L_PX] = px
    st.last[sym, L_QTY] = qty
    st.last[sym, L_SIDE] = side
    st.last[sym, L_TS] = ts
    c[C_SEEN] += 1
    _evict_before(st, sym, ts)
    if c[C_COUNT] == cap:
        _evict_oldest(st, sym)
        c[C_TRUNCATED] += 1
    h = c[C_HEAD]
    st.ring_ts[sym, h] = ts
    st.ring_px[sym, h] = px
    st.ring_qty[sym, h] = qty
    c[C_HEAD] = h + 1 if h + 1 < cap else 0
    c[C_COUNT] += 1
    st.sums[sym, 0] += px * qty
    st.sums[sym, 1] += qty


@kernel
def trade_vwap(st, sym, now):
    """VWAP in ticks of the prints in ``(now - window, now]``; 0.0 when there are none."""
    _evict_before(st, sym, now)
    q = st.sums[sym, 1]
    if q <= 0:
        return 0.0
    return st.sums[sym, 0] / q
