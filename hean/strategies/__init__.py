"""Strategies: numba functions that turn book state + indicators + position into zero or one order intent.

Shipped: ``rsi_macd`` (:mod:`hean.strategies.rsi_macd`) and ``market_maker``
(:mod:`hean.strategies.market_maker`). The strategy stage (:mod:`hean.stages.strategy`) runs the one chosen
by name in the configuration. How to write one is in ``docs/strategies.md``; in short:

A strategy is a module with

* ``PARAMS`` -- ``{name: default}`` (floats, in a fixed order: the compiled code reads ``params[i]``),
* ``STATE_F`` / ``STATE_I`` -- how many float64 / int64 state columns it keeps per symbol,
* ``validate(params: dict) -> None`` -- raise ValueError on a parameter set it cannot trade with,
* ``decide(strat, params, ind, sym, bs, position, fresh) -> intent`` -- decorated with
  ``@kernel(inline=True, error_model="numpy")`` (:mod:`hean.jit`: inlined into the stage), returning
  :func:`~hean.strategies.intent.no_order` or an :func:`~hean.strategies.intent.intent` tuple.
  ``strat.f[sym]``/``strat.i[sym]`` is its state, ``params`` a float64 array in ``PARAMS`` order, ``ind`` the
  :class:`~hean.indicators.streaming.IndicatorSet` (``ind.out[sym, OUT_*]``), ``bs`` the BOOK_STATE record,
  ``position`` the symbol's position in lots (a value the stage loads, relaxed, from the array risk writes:
  :mod:`hean.stages.positions`) and ``fresh`` True when the indicators took a new sample on this event.

and an entry in :data:`REGISTRY` plus one branch in :func:`hean.stages.strategy.decide_by_id` (the compiled
switch that makes selection by name work inside one cached, fused loop).
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import NamedTuple

from hean.strategies import market_maker, rsi_macd


class StrategySpec(NamedTuple):
    id: int  # the branch of hean.stages.strategy.decide_by_id
    module: ModuleType
    description: str

    @property
    def params(self) -> dict[str, float]:
        return dict(self.module.PARAMS)


REGISTRY: dict[str, StrategySpec] = {
    "rsi_macd": StrategySpec(0, rsi_macd, "RSI oversold/overbought + MACD histogram turn, IOC orders"),
    "market_maker": StrategySpec(1, market_maker, "inventory-skewed two-sided post-only quoter"),
}


def get(name: str) -> StrategySpec:
    """The registered strategy ``name``; a clear error listing the known ones otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; known: {sorted(REGISTRY)}") from None


def resolve_params(name: str, overrides: dict | None) -> dict[str, float]:
    """The strategy's defaults updated with ``overrides``, checked: unknown names, non-numbers, its rules."""
    spec = get(name)
    params = spec.params
    for key, value in (overrides or {}).items():
        if key not in params:
            raise ValueError(f"strategy {name!r} has no parameter {key!r}; known: {list(params)}")
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"strategy {name!r} parameter {key!r} must be a number, got {value!r}")
        params[key] = float(value)
    spec.module.validate(params)
    return params
