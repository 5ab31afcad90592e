"""HEAN: a single-host, low-latency tick-to-trade trading engine.

Stages are numba busy-poll loops over numpy state, chained by lock-free SPSC rings in ``/dev/shm``.
See README.md for the map of the code. For research: :func:`hean.backtest` (a recording and strategies in,
orders, fills, positions and equity out; :mod:`hean.research`) and :func:`hean.sweep` (a parameter grid over
recordings, on Ray; :mod:`hean.sweeps`); for writing strategies: :mod:`hean.api`.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "backtest", "sweep"]


def __getattr__(name: str):
    """``hean.backtest`` and ``hean.sweep`` without importing numba for ``import hean`` (the CLI stays quick)."""
    if name == "backtest":
        from hean.research import backtest

        return backtest
    if name == "sweep":
        from hean.sweeps import sweep

        return sweep
    raise AttributeError(f"module 'hean' has no attribute {name!r}")
