"""The live venues: their endpoints, stream names and framing, in one table.

Endpoints are configuration (``[live] ws_url`` / ``rest_url``): the defaults are the exchanges' public
market-data endpoints, which need no keys; tests and benchmarks point them at
:class:`hean.live.exchange.LocalExchange`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["VENUES", "VenueSpec", "venue_spec"]


@dataclass(frozen=True)
class VenueSpec:
    """One venue's public market-data interface, as the client needs it."""

    name: str  # "binance-usdm"
    reader: str  # the replay reader whose format the capture lines are in: "binance" or "bybit"
    market: str  # the reader's market: "usdm"/"spot" (binance), "linear"/"spot" (bybit)
    ws_url: str  # default WebSocket base URL
    rest_url: str  # default REST base URL ("" where the snapshot comes over the WebSocket)
    ws_path: str  # path of the public stream endpoint
    depth_path: str  # REST depth snapshot path ("" for Bybit: it sends snapshots on subscribe)
    depth_stream: str  # stream/topic name of the depth diffs, with {s} (symbol, as the venue spells it)
    other_streams: tuple[str, ...]  # trades, best bid/ask (Binance bookTicker, Bybit orderbook.1)

    @property
    def rest_snapshots(self) -> bool:
        """True when a symbol is synced from a REST snapshot (Binance); else from a WebSocket one (Bybit)."""
        return bool(self.depth_path)

    def streams(self, symbol: str) -> list[str]:
        """Every stream the feed takes for ``symbol``: depth first."""
        s = symbol.lower() if self.reader == "binance" else symbol.upper()
        return [t.format(s=s) for t in (self.depth_stream, *self.other_streams)]

    def url(self, base: str, symbols: list[str]) -> str:
        """The WebSocket URL to connect to: Binance names the streams in it (combined streams), Bybit
        subscribes after connecting (:meth:`subscribe`)."""
        base = base.rstrip("/")
        if self.reader == "binance":
            return f"{base}{self.ws_path}?streams=" + "/".join(t for s in symbols for t in self.streams(s))
        return f"{base}{self.ws_path}"

    def subscribe(self, symbols: list[str], op: str = "subscribe", req: str = "hean") -> bytes | None:
        """Bybit's subscribe (or unsubscribe) request for the symbols' topics; None for Binance."""
        if self.reader != "bybit":
            return None
        topics = ",".join(f'"{t}"' for s in symbols for t in self.streams(s))
        return f'{{"op":"{op}","args":[{topics}],"req_id":"{req}"}}'.encode()

    def depth_url(self, base: str, symbol: str, limit: int) -> str:
        return f"{base.rstrip('/')}{self.depth_path}?symbol={symbol.upper()}&limit={limit}"


VENUES: dict[str, VenueSpec] = {
    v.name: v
    for v in (
        VenueSpec(
            "binance-usdm",
            "binance",
            "usdm",
            "wss://fstream.binance.com",
            "https://fapi.binance.com",
            "/stream",
            "/fapi/v1/depth",
            "{s}@depth@0ms",
            ("{s}@trade", "{s}@bookTicker"),
        ),
        VenueSpec(
            "binance-spot",
            "binance",
            "spot",
            "wss://stream.binance.com:9443",
            "https://api.binance.com",
            "/stream",
            "/api/v3/depth",
            "{s}@depth@100ms",
            ("{s}@trade", "{s}@bookTicker"),
        ),
        VenueSpec(
            "bybit-linear",
            "bybit",
            "linear",
            "wss://stream.bybit.com",
            "",
            "/v5/public/linear",
            "",
            "orderbook.500.{s}",
            ("publicTrade.{s}", "orderbook.1.{s}"),
        ),
        VenueSpec(
            "bybit-spot",
            "bybit",
            "spot",
            "wss://stream.bybit.com",
            "",
            "/v5/public/spot",
            "",
            "orderbook.200.{s}",
            ("publicTrade.{s}", "orderbook.1.{s}"),
        ),
    )
}


def venue_spec(name: str) -> VenueSpec:
    """The venue called ``name``; a ValueError names the ones there are."""
    try:
        return VENUES[name]
    except KeyError:
        raise ValueError(f"unknown live venue {name!r}: one of {', '.join(VENUES)}") from None
