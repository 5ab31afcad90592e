"""Streaming indicators: the whole configured set, for every symbol, advanced one sample at a time in O(1).

State is an :class:`IndicatorSet` -- a NamedTuple of numpy arrays with one row per symbol, allocated once by
:func:`make_indicator_set` -- and :func:`indicators_update` is the one kernel the engine calls
per tick or per closed bar. It runs the step functions of :mod:`hean.indicators.kernels` (the same ones the
batch API runs), so a series fed one value at a time equals :mod:`hean.indicators`' batch output on the whole
series, bit for bit, and TA-Lib to ~1e-13.

A sample is (price, high, low, close, volume): SMA, EMA, RSI, MACD and Bollinger Bands run on ``close``, ATR
on (high, low, close), the rolling VWAP on (price, volume). On ticks pass the trade (or mid) price as all four
prices; on bars pass the bar's VWAP (or close), high, low, close and volume.

A NaN or an infinity in any input, or a negative volume, rejects the whole sample: the state is unchanged,
the latest outputs stay, ``istate[sym, I_REJECTED]`` counts it and the update returns False. A live feed must
not be able to poison an indicator for the rest of the session with one bad print (TA-Lib's running sums
would turn NaN for good); the batch API treats such a sample the same way (a missing sample).

Latest outputs live in ``out[sym, OUT_*]`` (NaN until each indicator's first output); ``istate[sym, I_COUNT]``
counts accepted samples, which a strategy can watch to see that new values arrived.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from hean.indicators import kernels as K
from hean.indicators.batch import check_period, check_real
from hean.jit import entry, kernel

# outputs: out[sym, OUT_*]
OUT_SMA = 0
OUT_EMA = 1
OUT_RSI = 2
OUT_MACD = 3
OUT_MACD_SIGNAL = 4
OUT_MACD_HIST = 5
OUT_ATR = 6
OUT_BB_UPPER = 7
OUT_BB_MIDDLE = 8
OUT_BB_LOWER = 9
OUT_VWAP = 10
N_OUT = 11
OUTPUT_NAMES = (
    "sma",
    "ema",
    "rsi",
    "macd",
    "macd_signal",
    "macd_hist",
    "atr",
    "bb_upper",
    "bb_middle",
    "bb_lower",
    "vwap",
)

# integer parameters: iparams[P_*]
P_SMA = 0
P_EMA = 1
P_RSI = 2
P_MACD_FAST = 3
P_MACD_SLOW = 4
P_MACD_SIGNAL = 5
P_ATR = 6
P_BB = 7
P_VWAP = 8
N_IPARAMS = 9

# float parameters derived once: fparams[Q_*]
Q_EMA_K = 0
Q_RSI_INV = 1
Q_MACD_KF = 2
Q_MACD_KS = 3
Q_MACD_KG = 4
Q_BB_INV = 5
Q_BB_UP = 6
Q_BB_DN = 7
Q_ATR_KEEP = 8
Q_ATR_TAKE = 9
N_FPARAMS = 10

# float state: fstate[sym, F_*]
F_SMA_TOTAL = 0
F_EMA = 1
F_RSI_PREV = 2
F_RSI_GAIN = 3
F_RSI_LOSS = 4
F_MACD_FAST = 5
F_MACD_SLOW = 6
F_MACD_SIGNAL = 7
F_ATR_PREV_CLOSE = 8
F_ATR = 9
F_BB_TOTAL = 10
F_BB_ANCHOR = 11
F_BB_S = 12
F_BB_S2 = 13
F_BB_PREV = 14
F_VWAP_PV = 15
F_VWAP_V = 16
N_FSTATE = 17

# integer state: istate[sym, I_*]
I_COUNT = 0  # accepted samples
I_POS_SMA = 1
I_POS_BB = 2
I_POS_VWAP = 3
I_BB_RUN = 4
I_REJECTED = 5  # samples rejected: NaN/inf input or negative volume
N_ISTATE = 6


class IndicatorConfig(NamedTuple):
    """Periods and band widths of the streaming set (TA-Lib's defaults; VWAP has no TA-Lib peer)."""

    sma_period: int = 30
    ema_period: int = 30
    rsi_period: int = 14
    macd_fast: int = 12
    macd_slow: int = 26
    macd_signal: int = 9
    atr_period: int = 14
    bb_period: int = 20
    bb_nbdevup: float = 2.0
    bb_nbdevdn: float = 2.0
    vwap_period: int = 20

    @classmethod
    def from_mapping(cls, cfg: dict | None) -> IndicatorConfig:
        """Build from a config table (``[indicators]``); unknown keys are an error, not silently ignored."""
        cfg = dict(cfg or {})
        unknown = sorted(set(cfg) - set(cls._fields))
        if unknown:
            raise ValueError(f"unknown indicator config keys {unknown}; known: {list(cls._fields)}")
        return cls(**cfg)

    def validated(self) -> IndicatorConfig:
        """Check every period against TA-Lib's range; MACD fast/slow are swapped when fast > slow (TA-Lib)."""
        fast = check_period("macd_fast", self.macd_fast, 2)
        slow = check_period("macd_slow", self.macd_slow, 2)
        if slow < fast:
            fast, slow = slow, fast
        return IndicatorConfig(
            sma_period=check_period("sma_period", self.sma_period, 1),
            ema_period=check_period("ema_period", self.ema_period, 1),
            rsi_period=check_period("rsi_period", self.rsi_period, 2),
            macd_fast=fast,
            macd_slow=slow,
            macd_signal=check_period("macd_signal", self.macd_signal, 1),
            atr_period=check_period("atr_period", self.atr_period, 1),
            bb_period=check_period("bb_period", self.bb_period, 2),
            bb_nbdevup=check_real("bb_nbdevup", self.bb_nbdevup),
            bb_nbdevdn=check_real("bb_nbdevdn", self.bb_nbdevdn),
            vwap_period=check_period("vwap_period", self.vwap_period, 1),
        )


class IndicatorSet(NamedTuple):
    """The streaming state of every symbol (one row each); see the ``OUT_*``/``F_*``/``I_*`` columns."""

    iparams: np.ndarray  # int64[N_IPARAMS]
    fparams: np.ndarray  # float64[N_FPARAMS]
    fstate: np.ndarray  # float64[n_symbols, N_FSTATE]
    istate: np.ndarray  # int64[n_symbols, N_ISTATE]
    sma_ring: np.ndarray  # float64[n_symbols, sma_period]
    bb_ring: np.ndarray  # float64[n_symbols, bb_period]
    vwap_pv: np.ndarray  # float64[n_symbols, vwap_period]: price * volume
    vwap_v: np.ndarray  # float64[n_symbols, vwap_period]: volume
    out: np.ndarray  # float64[n_symbols, N_OUT]: latest outputs, NaN before each one's first


def make_indicator_set(n_symbols: int, config: IndicatorConfig | None = None) -> IndicatorSet:
    """Allocate the state of ``n_symbols`` symbols for ``config`` (validated; TA-Lib defaults if None)."""
    if isinstance(n_symbols, bool) or not isinstance(n_symbols, int) or n_symbols < 1:
        raise ValueError(f"n_symbols must be a positive int, got {n_symbols!r}")
    c = (config or IndicatorConfig()).validated()
    iparams = np.array(
        [
            c.sma_period,
            c.ema_period,
            c.rsi_period,
            c.macd_fast,
            c.macd_slow,
            c.macd_signal,
            c.atr_period,
            c.bb_period,
            c.vwap_period,
        ],
        dtype=np.int64,
    )
    fparams = np.array(
        [
            K.ema_k(c.ema_period),
            1.0 / c.rsi_period,
            K.ema_k(c.macd_fast),
            K.ema_k(c.macd_slow),
            K.ema_k(c.macd_signal),
            1.0 / c.bb_period,
            c.bb_nbdevup,
            c.bb_nbdevdn,
            (c.atr_period - 1.0) / c.atr_period,
            1.0 - (c.atr_period - 1.0) / c.atr_period,
        ]
    )
    st = IndicatorSet(
        iparams=iparams,
        fparams=fparams,
        fstate=np.zeros((n_symbols, N_FSTATE)),
        istate=np.zeros((n_symbols, N_ISTATE), dtype=np.int64),
        sma_ring=np.zeros((n_symbols, c.sma_period)),
        bb_ring=np.zeros((n_symbols, c.bb_period)),
        vwap_pv=np.zeros((n_symbols, c.vwap_period)),
        vwap_v=np.zeros((n_symbols, c.vwap_period)),
        out=np.full((n_symbols, N_OUT), np.nan),
    )
    return st


def reset_symbol(st: IndicatorSet, sym: int) -> None:
    """Forget everything about ``sym`` (e.g. after a resync gap): the next sample starts a fresh series."""
    for a in (st.fstate, st.istate, st.sma_ring, st.bb_ring, st.vwap_pv, st.vwap_v):
        a[sym] = 0
    st.out[sym] = np.nan


def config_of(st: IndicatorSet) -> IndicatorConfig:
    """The configuration ``st`` was built with."""
    p = st.iparams
    return IndicatorConfig(
        sma_period=int(p[P_SMA]),
        ema_period=int(p[P_EMA]),
        rsi_period=int(p[P_RSI]),
        macd_fast=int(p[P_MACD_FAST]),
        macd_slow=int(p[P_MACD_SLOW]),
        macd_signal=int(p[P_MACD_SIGNAL]),
        atr_period=int(p[P_ATR]),
        bb_period=int(p[P_BB]),
        bb_nbdevup=float(st.fparams[Q_BB_UP]),
        bb_nbdevdn=float(st.fparams[Q_BB_DN]),
        vwap_period=int(p[P_VWAP]),
    )


# The hot-path kernels are compiled without numba's reference counting (``_nrt=False``): they never allocate,
# and with it on, every array argument (or NamedTuple field) costs an atomic incref/decref pair per call that
# numba's refcount pruning cannot remove once the function has an early return -- measured at ~80 ns per call
# for three arrays on the development VM, against ~3 ns without (hean.jit's default).
@kernel(inline=True, error_model="numpy")
def _advance(pos, period):
    pos += 1
    return 0 if pos == period else pos


@kernel(inline=True, error_model="numpy")
def update_inline(st, sym, price, high, low, close, volume):
    """The body of :func:`indicators_update`, inlined into the caller's IR (for fused ``_nrt=False`` loops).

    Inlining keeps the NamedTuple of arrays from being passed by value on every call, but the inlined body
    is compiled with the *caller's* options: call it only from functions compiled with ``_nrt=False``
    (reference counting on would add an atomic incref/decref per array access). Elsewhere call
    :func:`indicators_update`.
    """
    if not (
        math.isfinite(price)
        and math.isfinite(high)
        and math.isfinite(low)
        and math.isfinite(close)
        and math.isfinite(volume)
        and volume >= 0.0
    ):
        st.istate[sym, I_REJECTED] += 1
        return False
    ip = st.iparams
    fp = st.fparams
    f = st.fstate
    i = st.istate
    o = st.out
    n = i[sym, I_COUNT]

    pos = i[sym, I_POS_SMA]
    nxt = _advance(pos, ip[P_SMA])
    st.sma_ring[sym, pos] = close
    # after the store, the next slot holds the sample that leaves the window (this one, for period 1)
    leaving = st.sma_ring[sym, nxt]
    f[sym, F_SMA_TOTAL], o[sym, OUT_SMA] = K.sma_step(f[sym, F_SMA_TOTAL], n, close, leaving, ip[P_SMA])
    i[sym, I_POS_SMA] = nxt

    f[sym, F_EMA], o[sym, OUT_EMA] = K.ema_step(f[sym, F_EMA], n, close, ip[P_EMA], fp[Q_EMA_K])

    f[sym, F_RSI_PREV], f[sym, F_RSI_GAIN], f[sym, F_RSI_LOSS], o[sym, OUT_RSI] = K.rsi_step(
        f[sym, F_RSI_PREV], f[sym, F_RSI_GAIN], f[sym, F_RSI_LOSS], n, close, ip[P_RSI], fp[Q_RSI_INV]
    )

    (
        f[sym, F_MACD_FAST],
        f[sym, F_MACD_SLOW],
        f[sym, F_MACD_SIGNAL],
        o[sym, OUT_MACD],
        o[sym, OUT_MACD_SIGNAL],
        o[sym, OUT_MACD_HIST],
    ) = K.macd_step(
        f[sym, F_MACD_FAST],
        f[sym, F_MACD_SLOW],
        f[sym, F_MACD_SIGNAL],
        n,
        close,
        ip[P_MACD_FAST],
        ip[P_MACD_SLOW],
        ip[P_MACD_SIGNAL],
        fp[Q_MACD_KF],
        fp[Q_MACD_KS],
        fp[Q_MACD_KG],
    )

    f[sym, F_ATR_PREV_CLOSE], f[sym, F_ATR], o[sym, OUT_ATR] = K.atr_step(
        f[sym, F_ATR_PREV_CLOSE], f[sym, F_ATR], n, high, low, close, ip[P_ATR], fp[Q_ATR_KEEP], fp[Q_ATR_TAKE]
    )

    pos = i[sym, I_POS_BB]
    (
        f[sym, F_BB_TOTAL],
        f[sym, F_BB_ANCHOR],
        f[sym, F_BB_S],
        f[sym, F_BB_S2],
        i[sym, I_BB_RUN],
        o[sym, OUT_BB_UPPER],
        o[sym, OUT_BB_MIDDLE],
        o[sym, OUT_BB_LOWER],
    ) = K.bbands_step(
        f[sym, F_BB_TOTAL],
        f[sym, F_BB_ANCHOR],
        f[sym, F_BB_S],
        f[sym, F_BB_S2],
        i[sym, I_BB_RUN],
        f[sym, F_BB_PREV],
        n,
        close,
        st.bb_ring,
        sym,
        pos,
        ip[P_BB],
        fp[Q_BB_INV],
        fp[Q_BB_UP],
        fp[Q_BB_DN],
    )
    f[sym, F_BB_PREV] = close
    i[sym, I_POS_BB] = _advance(pos, ip[P_BB])

    pos = i[sym, I_POS_VWAP]
    f[sym, F_VWAP_PV], f[sym, F_VWAP_V], o[sym, OUT_VWAP] = K.vwap_step(
        f[sym, F_VWAP_PV], f[sym, F_VWAP_V], n, price, volume, st.vwap_pv, st.vwap_v, sym, pos, ip[P_VWAP]
    )
    i[sym, I_POS_VWAP] = _advance(pos, ip[P_VWAP])

    i[sym, I_COUNT] = n + 1
    return True


@kernel(error_model="numpy")
def indicators_update(st, sym, price, high, low, close, volume):
    """Advance symbol ``sym`` by one sample; True if accepted (False: NaN/inf input or negative volume).

    O(1), no allocation: every indicator of the set takes one step and writes its latest value to
    ``st.out[sym]``. 2-D state is indexed in place (a row view would be a new array per update).
    """
    return update_inline(st, sym, price, high, low, close, volume)


@entry(error_model="numpy")
def feed_series(st, sym, price, high, low, close, volume, out):
    """Feed whole arrays to ``sym`` one sample at a time, copying ``st.out[sym]`` into ``out[t]`` after each.

    For tests and research: what the engine sees, sample by sample. Returns the number of accepted samples.
    """
    accepted = 0
    for t in range(close.shape[0]):
        if indicators_update(st, sym, price[t], high[t], low[t], close[t], volume[t]):
            accepted += 1
        for j in range(N_OUT):
            out[t, j] = st.out[sym, j]
    return accepted
