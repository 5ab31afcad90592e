"""Time bars (OHLCV) per symbol, built tick by tick from trades or from the mid price.

Why bars live in the strategy stage: indicators configured "on bar close" must see exactly one sample per
interval, in the same process that runs the strategy, with no allocation. The state is a :class:`BarState`
(NamedTuple of numpy arrays, one row per symbol); two kernels, inlined into the caller's IR, advance it:

* :func:`bar_roll` ``(bars, sym, ts)`` -- called with the time of *every* event of the symbol: if ``ts`` has
  reached the end of the open bar's interval, the bar closes (it is copied to ``last``) and 1 is returned.
  A bar therefore closes at the first event after its interval -- a trade, a quote, a status change --
  not only at the next trade.
* :func:`bar_add` ``(bars, sym, ts, price, qty)`` -- adds one tick (a trade: price and quantity; a mid
  update: the mid and quantity 0) to the open bar, opening one if none is open.

Bars are aligned to the interval: a bar covers ``[k * interval, (k + 1) * interval)`` ns. An interval with no
tick produces no bar (the next bar simply starts later); TA-Lib-style series of bars are the closed bars in
order. Timestamps must not go backwards per symbol: a tick older than the open bar's start is added to the
open bar (a closed bar is never reopened).

A closed bar is (open, high, low, close, volume, vwap, start, ticks); its vwap is ``sum(price * qty) /
sum(qty)``, or the close when the bar has no volume (mid bars).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from hean.jit import entry, kernel

SOURCE_TRADES = 0
SOURCE_MID = 1
SOURCES = {"trades": SOURCE_TRADES, "mid": SOURCE_MID}

# bar columns, float64: cur[sym, B_*] (open bar) and last[sym, B_*] (last closed bar)
B_OPEN = 0
B_HIGH = 1
B_LOW = 2
B_CLOSE = 3
B_VOLUME = 4
B_PV = 5  # sum(price * qty) of the open bar; in `last`, the closed bar's vwap
N_BAR = 6
B_VWAP = B_PV

# integer columns: cur_i[sym, J_*] and last_i[sym, J_*]
J_START = 0  # bar start, ns; -1: no bar open (cur_i) / none closed yet (last_i)
J_TICKS = 1  # ticks in the bar
J_CLOSED = 2  # last_i only: bars closed so far
N_BAR_I = 3

# params[K_*]
K_INTERVAL_NS = 0
K_SOURCE = 1
N_BAR_PARAMS = 2


class BarConfig(NamedTuple):
    """``[bars]`` configuration: the bar interval and what builds the bars."""

    interval_ms: int = 1000
    source: str = "trades"  # "trades" (price, qty of prints) or "mid" (the book's mid, volume 0)

    @classmethod
    def from_mapping(cls, cfg: dict | None) -> BarConfig:
        cfg = dict(cfg or {})
        unknown = sorted(set(cfg) - set(cls._fields))
        if unknown:
            raise ValueError(f"unknown bar config keys {unknown}; known: {list(cls._fields)}")
        return cls(**cfg)

    def validated(self) -> BarConfig:
        ms = self.interval_ms
        if isinstance(ms, bool) or not isinstance(ms, int) or not 1 <= ms <= 86_400_000:
            raise ValueError(f"bars interval_ms must be an int in [1, 86400000], got {ms!r}")
        if self.source not in SOURCES:
            raise ValueError(f"bars source must be one of {sorted(SOURCES)}, got {self.source!r}")
        return self


class BarState(NamedTuple):
    params: np.ndarray  # int64[N_BAR_PARAMS]
    cur: np.ndarray  # float64[n_symbols, N_BAR]: the open bar
    cur_i: np.ndarray  # int64[n_symbols, N_BAR_I]
    last: np.ndarray  # float64[n_symbols, N_BAR]: the last closed bar
    last_i: np.ndarray  # int64[n_symbols, N_BAR_I]


def make_bar_state(n_symbols: int, config: BarConfig | None = None) -> BarState:
    """Allocate bar state for ``n_symbols`` symbols; no bar is open and none has closed."""
    if isinstance(n_symbols, bool) or not isinstance(n_symbols, int) or n_symbols < 1:
        raise ValueError(f"n_symbols must be a positive int, got {n_symbols!r}")
    c = (config or BarConfig()).validated()
    params = np.array([c.interval_ms * 1_000_000, SOURCES[c.source]], dtype=np.int64)
    cur_i = np.zeros((n_symbols, N_BAR_I), dtype=np.int64)
    last_i = np.zeros((n_symbols, N_BAR_I), dtype=np.int64)
    cur_i[:, J_START] = -1
    last_i[:, J_START] = -1
    return BarState(
        params=params,
        cur=np.zeros((n_symbols, N_BAR)),
        cur_i=cur_i,
        last=np.full((n_symbols, N_BAR), np.nan),
        last_i=last_i,
    )


# No allocation, so no reference counting, and inlined into the caller's IR (the strategy stage): the
# NamedTuple is not copied per call. Call them from functions compiled without reference counting too.
@kernel(inline=True, error_model="numpy")
def bar_roll(bars, sym, ts):
    """Close the open bar of ``sym`` if ``ts`` (ns) is at or past its end; 1 if a bar closed, else 0."""
    start = bars.cur_i[sym, J_START]
    if start < 0 or ts < start + bars.params[K_INTERVAL_NS]:
        return 0
    for j in range(N_BAR):
        bars.last[sym, j] = bars.cur[sym, j]
    volume = bars.cur[sym, B_VOLUME]
    bars.last[sym, B_VWAP] = bars.cur[sym, B_PV] / volume if volume > 0.0 else bars.cur[sym, B_CLOSE]
    bars.last_i[sym, J_START] = start
    bars.last_i[sym, J_TICKS] = bars.cur_i[sym, J_TICKS]
    bars.last_i[sym, J_CLOSED] += 1
    bars.cur_i[sym, J_START] = -1
    bars.cur_i[sym, J_TICKS] = 0
    return 1


@kernel(inline=True, error_model="numpy")
def bar_add(bars, sym, ts, price, qty):
    """Add one tick to the open bar of ``sym`` (opening one aligned to the interval if none is open)."""
    if bars.cur_i[sym, J_START] < 0:
        interval = bars.params[K_INTERVAL_NS]
        bars.cur_i[sym, J_START] = ts - ts % interval
        bars.cur[sym, B_OPEN] = price
        bars.cur[sym, B_HIGH] = price
        bars.cur[sym, B_LOW] = price
        bars.cur[sym, B_VOLUME] = 0.0
        bars.cur[sym, B_PV] = 0.0
    else:
        if price > bars.cur[sym, B_HIGH]:
            bars.cur[sym, B_HIGH] = price
        if price < bars.cur[sym, B_LOW]:
            bars.cur[sym, B_LOW] = price
    bars.cur[sym, B_CLOSE] = price
    bars.cur[sym, B_VOLUME] += qty
    bars.cur[sym, B_PV] += price * qty
    bars.cur_i[sym, J_TICKS] += 1


@entry(error_model="numpy")
def build_bars(bars, sym, ts, price, qty, out, out_start):
    """Feed arrays of ticks of one symbol; write each closed bar to ``out[i]`` (open, high, low, close, volume,
    vwap) and its start to ``out_start[i]``; returns the number of closed bars (the bar still open at the
    end is not written: nothing has closed it). For research and tests."""
    n = 0
    for t in range(ts.shape[0]):
        if bar_roll(bars, sym, ts[t]):
            for j in range(N_BAR):
                out[n, j] = bars.last[sym, j]
            out_start[n] = bars.last_i[sym, J_START]
            n += 1
        bar_add(bars, sym, ts[t], price[t], qty[t])
    return n
