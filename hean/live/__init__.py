"""Live market data: WebSocket feeds for Binance and Bybit, the recorder, and a local exchange for tests.

:mod:`hean.live.venues` names each venue's endpoints and streams, :mod:`hean.live.decode` runs received
lines through the replay readers' own parsers and sync state machines (one implementation for replay and
live), :mod:`hean.live.client` is the connection (reconnect, resync, silence, counters),
:mod:`hean.live.record` writes the capture files ``hean replay`` reads, :mod:`hean.live.ingest` puts a live
feed in front of the engine's feed stage, and :mod:`hean.live.exchange` serves recordings over real sockets
with the exchanges' framing so all of it is tested without the internet.
"""
