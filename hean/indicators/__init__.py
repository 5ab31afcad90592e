"""Technical indicators: O(1) streaming updates per tick or bar, and a batch API matching TA-Lib.

Batch (research): :func:`sma`, :func:`ema`, :func:`rsi`, :func:`macd`, :func:`atr`, :func:`bbands`,
:func:`vwap` take numpy arrays with TA-Lib's parameter names and defaults and return float64 arrays, NaN
before the first output. Streaming (the engine): :class:`~hean.indicators.streaming.IndicatorSet` holds the
state of the whole configured set for every symbol, and
:func:`~hean.indicators.streaming.indicators_update` advances one symbol by one sample in O(1).

Both run the same step functions (:mod:`hean.indicators.kernels`), which reproduce TA-Lib's seeding,
lookbacks and update order; the oracle is the ``TA-Lib==0.8.2`` Python wheel (C library 0.8.1) pinned in the
``test`` extra. A NaN or infinite input is a missing sample (see :mod:`hean.indicators.batch`).
"""

from hean.indicators.batch import atr, bbands, ema, macd, rsi, sma, vwap

__all__ = ["atr", "bbands", "ema", "macd", "rsi", "sma", "vwap"]
