"""The shipped strategies, plug-ins written against the public API (:mod:`hean.api`) exactly as a user's:

* ``market_maker`` (:mod:`hean.strategies.market_maker`) -- an inventory-skewed two-sided post-only quoter;
* ``rsi_macd`` (:mod:`hean.strategies.rsi_macd`) -- RSI extremes + MACD histogram turns, IOC orders.

Each is usable by name (``[strategy] name = "market_maker"``) or by path
(``"hean.strategies.market_maker:STRATEGY"``). Loading (:mod:`hean.strategies.plugin`) and the C calling
convention (:mod:`hean.strategies.abi`) are the engine's side of the API.
"""

from hean.strategies.plugin import BUILTIN

__all__ = ["BUILTIN"]
