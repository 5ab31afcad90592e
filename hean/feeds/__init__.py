"""Readers of recorded market data, the native event file and the synthetic feed.

Every reader returns ``(events, report)``: a MARKET_EVENT array (prices in ticks, quantities in lots of
``report.symbols``) and a :class:`hean.feeds.common.ReadReport` that accounts for every line. Use
:func:`load_events` to pick the reader by format name: it is the one entry every command and the engine
use, and it is where a recording is held to what a run needs -- lenient mode's limit on skipped lines, a
book that synchronises at least once, and events that pass :func:`hean.feeds.native.validate_events`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from hean.feeds.common import ReadReport
    from hean.symbols import SymbolTable

FORMATS = ("binance-usdm", "binance-spot", "bybit", "lobster", "tardis", "dbn", "native")
DEFAULT_MAX_SKIPPED = 0.01  # lenient mode: at most 1 % of the lines may be skipped
# report counters of depth updates that were never applied (hean.feeds.binance, hean.feeds.bybit)
_UNAPPLIED = ("diffs_before_snapshot", "diffs_unsynced", "deltas_before_snapshot", "deltas_unsynced")


def lenient_share(lenient: bool | float | None) -> float | None:
    """The largest share of skipped lines ``lenient`` allows: None for strict (False), the default
    :data:`DEFAULT_MAX_SKIPPED` for True, else the number itself (a share in [0, 1])."""
    if lenient is None or lenient is False:
        return None
    if lenient is True:
        return DEFAULT_MAX_SKIPPED
    share = float(lenient)
    if not math.isfinite(share) or not 0.0 <= share <= 1.0:
        raise ValueError(f"lenient must be true, false or a share of lines in [0, 1], got {lenient!r}")
    return share


def load_events(
    path: str | Path,
    format: str,
    symbols: SymbolTable | None = None,
    lenient: bool | float = False,
    symbol: str | None = None,
    instruments: str | Path | None = None,
) -> tuple[np.ndarray, ReadReport]:
    """Read ``path`` in ``format`` (one of :data:`FORMATS`); ``symbols`` None infers/reads the table.

    ``symbol`` names the symbol where the format cannot (Binance REST snapshots, LOBSTER files).
    ``instruments``: a DBN file of instrument definitions for a ``dbn`` recording that has none.
    ``lenient``: False stops at the first bad line; True skips bad lines up to :data:`DEFAULT_MAX_SKIPPED`
    of the file, a number up to that share. Raises :class:`hean.feeds.common.FeedError` (one line naming the
    file) for a bad file, too many skipped lines, a book that never synchronises, or an invalid event.
    """
    share = lenient_share(lenient)
    if instruments is not None and format != "dbn":
        raise ValueError(f"instruments (a DBN definitions file) go with format dbn, not {format!r}")
    events, report = _read(path, format, symbols, share is not None, symbol, instruments)
    if share is not None:
        report.check_skipped(share)
    if format != "native":  # open_native validated the file's records already
        from hean.feeds.native import validate_events

        _check_synced(events, report)
        validate_events(events, len(report.symbols), path)
    return events, report


def _read(path, format: str, symbols, lenient: bool, symbol: str | None, instruments=None):
    if format in ("binance-usdm", "binance-spot"):
        from hean.feeds.binance import read_binance

        return read_binance(path, symbols, market=format.split("-")[1], lenient=lenient, symbol=symbol)
    if format == "bybit":
        from hean.feeds.bybit import read_bybit

        return read_bybit(path, symbols, lenient=lenient)
    if format == "lobster":
        from hean.feeds.lobster import read_lobster

        return read_lobster(path, symbols=symbols, lenient=lenient, symbol=symbol)
    if format == "tardis":
        from hean.feeds.tardis import read_tardis

        return read_tardis(path, symbols, lenient=lenient)
    if format == "dbn":
        from hean.feeds.databento import read_dbn

        return read_dbn(path, symbols, lenient=lenient, instruments=instruments)
    if format == "native":
        from hean.feeds.native import read_native

        return read_native(path)
    raise ValueError(f"unknown format {format!r}; one of {', '.join(FORMATS)}")


def _check_synced(events: np.ndarray, report: ReadReport) -> None:
    """A recording whose depth updates never reached a book is a failure with the reason, not an empty run
    (a replay would otherwise end "OK" with no orders, and only a counter would say why)."""
    import numpy as np

    from hean.feeds.common import FeedError
    from hean.records import EventKind

    unapplied = sum(report.counters.get(k, 0) for k in _UNAPPLIED)
    if unapplied == 0:
        return
    book_kinds = [EventKind.LEVEL_SET, EventKind.CLEAR, *range(EventKind.L3_ADD, EventKind.L3_EXECUTE + 1)]
    for a in range(0, len(events), 1 << 16):  # a synced recording has book events from the start: one look
        if np.isin(events["kind"][a : a + (1 << 16)], book_kinds).any():
            return
    if report.counters.get("snapshots", 0) == 0:
        why = f"the recording has no depth snapshot, so none of its {unapplied} depth updates could be applied"
    else:
        why = f"none of its {unapplied} depth updates could be applied (each came before the snapshot or after a gap)"
    raise FeedError(report.path, None, f"the order book never synchronised: {why}")
