"""Readers of recorded market data, the native event file and the synthetic feed.

Every reader returns ``(events, report)``: a MARKET_EVENT array (prices in ticks, quantities in lots of
``report.symbols``) and a :class:`hean.feeds.common.ReadReport` that accounts for every line. Use
:func:`load_events` to pick the reader by format name.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from hean.feeds.common import ReadReport
    from hean.symbols import SymbolTable

FORMATS = ("binance-usdm", "binance-spot", "bybit", "lobster", "native")


def load_events(
    path: str | Path,
    format: str,
    symbols: SymbolTable | None = None,
    lenient: bool = False,
    symbol: str | None = None,
) -> tuple[np.ndarray, ReadReport]:
    """Read ``path`` in ``format`` (one of :data:`FORMATS`); ``symbols`` None infers/reads the table.

    ``symbol`` names the symbol where the format cannot (Binance REST snapshots, LOBSTER files).
    """
    if format in ("binance-usdm", "binance-spot"):
        from hean.feeds.binance import read_binance

        return read_binance(path, symbols, market=format.split("-")[1], lenient=lenient, symbol=symbol)
    if format == "bybit":
        from hean.feeds.bybit import read_bybit

        return read_bybit(path, symbols, lenient=lenient)
    if format == "lobster":
        from hean.feeds.lobster import read_lobster

        return read_lobster(path, symbols=symbols, lenient=lenient, symbol=symbol)
    if format == "native":
        from hean.feeds.native import read_native

        return read_native(path)
    raise ValueError(f"unknown format {format!r}; one of {', '.join(FORMATS)}")
