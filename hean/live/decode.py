"""Received lines -> MARKET_EVENTs through the replay readers' own parsers and sync state machines.

Why not a decoder of its own: a live book must be built by exactly the rules a replay of its recording
uses, or a backtest of the capture would trade a different book. So a live feed hands the lines it
receives -- in the capture format, ``<receive ns> <json>`` -- to :func:`hean.feeds.binance.decode_binance` or
:func:`hean.feeds.bybit.decode_bybit` a chunk at a time, with the sync state kept between chunks. Binance
diffs that wait for a snapshot are handed in again ahead of the next chunk, as a replay keeps them
buffered, so the events are the replay's own.
"""

from __future__ import annotations

import numpy as np

from hean.feeds.binance import BinanceLive, BinanceSync
from hean.feeds.bybit import BybitSync, decode_bybit
from hean.live.venues import VenueSpec
from hean.records import F_LAST_IN_GROUP, MARKET_EVENT, EventKind
from hean.symbols import SymbolTable

__all__ = ["LiveDecoder"]


class LiveDecoder:
    """One venue's received lines -> events, per symbol; counts what it could not use."""

    def __init__(self, spec: VenueSpec, symbols: SymbolTable) -> None:
        self.spec = spec
        self.symbols = symbols
        self.sync = BinanceSync(len(symbols)) if spec.reader == "binance" else BybitSync()
        # Binance: the reader's compiled path per symbol, over the one sync state (hean.feeds.binance)
        self.fast = (
            {s.name: BinanceLive(symbols, s.name, self.sync, spec.market) for s in symbols}
            if spec.reader == "binance"
            else {}
        )
        self.waiting: dict[str, list[bytes]] = {s.name: [] for s in symbols}  # Binance diffs before a snapshot
        # applied: diffs the book took; stale_drops: diffs the sync rules dropped (older than the snapshot, or
        # after a break before the next one): with the ones waiting, every diff received is one of these
        # Bybit: the symbols whose orderbook.1 the client takes beside the depth book (as their ticker)
        self.deep = frozenset(s.name for s in symbols) if spec.reader == "bybit" else frozenset()
        self.counters = {"lines": 0, "malformed": 0, "gaps": 0, "snapshots": 0, "applied": 0, "stale_drops": 0}
        self.reasons: list[str] = []  # the first few malformed lines' reasons

    def synced(self, symbol: str) -> bool:
        """True while the symbol's book follows the stream: a snapshot applied, the diffs chained on it."""
        return self.sync.synced(self.symbols.id_of(symbol))

    def broken(self, symbol: str) -> bool:
        """True while the symbol needs a snapshot (False while one applied awaits its first diff)."""
        return self.sync.broken(self.symbols.id_of(symbol))

    def decode(self, symbol: str, lines: bytes) -> np.ndarray:
        """``lines`` (complete lines of one symbol's streams, in receive order) -> their events."""
        self.counters["lines"] += lines.count(b"\n")
        if self.spec.reader == "binance":
            held = self.waiting[symbol]
            data = b"".join(held) + lines if held else lines
            ev, c, report, waiting = self.fast[symbol].decode(data)
            if waiting:
                all_lines = data.splitlines(keepends=True)
                self.waiting[symbol] = [all_lines[i - 1] for i in waiting]
            else:
                self.waiting[symbol] = []
            self.counters["stale_drops"] += c.get("diffs_before_snapshot", 0)
            self.counters["applied"] += c.get("diffs_applied", 0)
        else:
            ev, report = decode_bybit(lines, self.symbols, self.sync, deep=self.deep)
            c = report.counters
            self.counters["stale_drops"] += c.get("deltas_before_snapshot", 0) + c.get("deltas_unsynced", 0)
            self.counters["applied"] += c.get("deltas_applied", 0)
        self.counters["gaps"] += c.get("gaps", 0)
        self.counters["snapshots"] += c.get("snapshots", 0)
        if report is not None:
            self.counters["malformed"] += report.skipped
            if report.reasons and len(self.reasons) < 8:
                self.reasons += [f"{symbol}: {r}" for r in report.reasons[: 8 - len(self.reasons)]]
        return ev

    def lose(self, symbol: str, recv_ns: int) -> np.ndarray:
        """The stream of ``symbol`` was cut (a disconnect, a silence, a dropped event): its book is stale until
        the next snapshot. Returns the OUT_OF_SYNC event that says so downstream (risk stops trading it)."""
        sym = self.symbols.id_of(symbol)
        self.sync.lose(sym)
        self.counters["stale_drops"] += len(self.waiting[symbol])  # diffs that waited for a snapshot: dropped
        self.waiting[symbol] = []
        ev = np.zeros(1, MARKET_EVENT)
        ev[0]["kind"] = EventKind.OUT_OF_SYNC
        ev[0]["symbol"] = sym
        ev[0]["flags"] = F_LAST_IN_GROUP
        ev[0]["ts_origin"] = recv_ns
        return ev
