"""One live venue connection: connect, subscribe, sync every symbol from a snapshot, and survive faults.

What it does, in order, for as long as it runs:

1. connects to the venue's public WebSocket (picows: frames are handed over in the socket read's own
   callback, so the receive time is taken at the read, and the bytes are not copied into a message object);
2. subscribes (Binance: the combined-stream URL names the streams; Bybit: a ``subscribe`` request);
3. syncs each symbol: Binance from a REST depth snapshot (diffs received before it wait, as the rules say),
   Bybit from the snapshot it sends on subscribe;
4. hands every received message on as a capture line, ``<receive ns> <json>``, the format ``hean replay``
   reads: to the recorder (``on_lines``) and/or through :class:`hean.live.decode.LiveDecoder` to the
   engine (``on_events``).

Faults and what they do -- each one counted in :attr:`LiveClient.counters`, none silent:

* **disconnect** (the socket closes) or **silence** (no frame for ``silence_s``: the socket is dropped):
  every symbol is marked stale at once (an OUT_OF_SYNC event: risk sends nothing on a stale book), then the
  client reconnects after a capped exponential backoff and resyncs;
* **a gap** in update ids, or **a malformed frame** (which breaks the chain at the next diff): the readers'
  sync rules emit OUT_OF_SYNC; the client fetches a fresh snapshot (Binance) or resubscribes (Bybit);
* **an exchange error or rate-limit message** (WebSocket error JSON, HTTP 429/418): counted, the last one
  kept in :attr:`LiveClient.last_error`; a rate-limited snapshot is retried after ``Retry-After`` or the
  backoff;
* **a full ring** is the caller's to count (:mod:`hean.live.ingest`): it calls :meth:`LiveClient.lose`,
  which marks the symbol stale and resyncs it, so a dropped event never corrupts a book.

Every stale window -- when a symbol's book stopped following the stream, when it resynced, and why -- is
kept in :attr:`LiveClient.stale_windows`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from picows import WSListener, WSMsgType, ws_connect

from hean.live.decode import LiveDecoder
from hean.live.venues import VenueSpec
from hean.symbols import SymbolTable

__all__ = ["LiveClient", "LiveOptions", "StaleWindow"]

COUNTERS = (
    "frames",  # text frames received
    "bytes",
    "connects",
    "connect_failures",
    "disconnects",
    "silences",  # connections dropped for silence
    "snapshots",  # snapshots requested (REST) or resubscriptions (Bybit)
    "rest_errors",  # a snapshot request that failed (not a rate limit)
    "rate_limited",  # HTTP 429/418 or a rate-limit message
    "exchange_errors",  # error messages from the venue on the WebSocket
    "unrouted",  # frames that name no symbol we take (malformed, or an unknown message)
    "resyncs",  # stale windows closed by a snapshot
    "pongs",  # Bybit: answers to the client's pings
)


@dataclass(frozen=True)
class LiveOptions:
    """The client's settings (``[live]`` in the configuration)."""

    ws_url: str = ""  # "" = the venue's public endpoint
    rest_url: str = ""
    silence_s: float = 10.0  # no frame for this long: the connection is dropped and made again
    backoff_min_s: float = 0.1  # first reconnect/retry delay; doubles up to the max
    backoff_max_s: float = 5.0
    depth_limit: int = 1000  # levels per side of a REST snapshot
    ping_s: float = 20.0  # Bybit: a {"op":"ping"} this often (Binance pings; picows answers)
    rest_timeout_s: float = 5.0


@dataclass
class StaleWindow:
    """A time a symbol's book did not follow the stream: from ``start_ns`` to ``end_ns`` (0: still stale)."""

    symbol: str
    reason: str
    start_ns: int
    end_ns: int = 0


class _Listener(WSListener):
    """picows's callbacks, forwarded to the client (the receive time is taken here, at the read)."""

    def __init__(self, client: LiveClient) -> None:
        self.client = client

    def on_ws_frame(self, transport, frame) -> None:
        t = frame.msg_type
        if t == WSMsgType.TEXT or t == WSMsgType.BINARY:
            self.client._on_frame(time.time_ns(), frame.get_payload_as_bytes(), frame.last_in_buffer)
        elif t == WSMsgType.CLOSE:
            transport.disconnect()

    def on_ws_disconnected(self, transport) -> None:
        self.client._flush()


class LiveClient:
    """One venue, many symbols (see the module docstring). ``run`` in an asyncio loop, or
    :meth:`start_thread` for a thread of its own."""

    def __init__(
        self,
        spec: VenueSpec,
        symbols: SymbolTable,
        options: LiveOptions = LiveOptions(),
        on_events: Callable[[str, np.ndarray], None] | None = None,
        on_lines: Callable[[str, bytes], None] | None = None,
    ) -> None:
        self.spec = spec
        self.symbols = symbols
        self.names = [s.name for s in symbols]
        self.options = options
        self.on_events = on_events
        self.on_lines = on_lines
        self.decoder = LiveDecoder(spec, symbols) if on_events is not None else None
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.last_error = ""
        self.stale_windows: list[StaleWindow] = []
        self._open: dict[str, StaleWindow] = {}  # symbol -> its open stale window
        self._route = {s.lower() if spec.reader == "binance" else s: s for s in self.names}
        self._pending: dict[str, list[bytes]] = {s: [] for s in self.names}
        self._resyncing: set[str] = set()
        self._transport = None
        self._last_frame = 0.0
        self._flush_soon = False  # a _flush is scheduled for the end of the loop's current callbacks
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self.failed = ""  # set when the thread of start_thread ended on an error (the run ends: hean.live.ingest)
        for s in self.names:
            self._open[s] = StaleWindow(s, "start", time.time_ns())
            self.stale_windows.append(self._open[s])

    # ---- the connection -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect and reconnect until :meth:`stop`."""
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        o = self.options
        delay = o.backoff_min_s
        url = self.spec.url(o.ws_url or self.spec.ws_url, self.names)
        while not self._stop.is_set():
            try:
                transport, _ = await ws_connect(lambda: _Listener(self), url, enable_auto_pong=True)
            except Exception as e:  # refused, reset, a handshake error or timeout: all are retried
                self.counters["connect_failures"] += 1
                self.last_error = f"connect {url}: {e}"
                await self._sleep(delay)
                delay = min(2 * delay, o.backoff_max_s)
                continue
            self.counters["connects"] += 1
            self._transport = transport
            self._last_frame = time.monotonic()
            healthy = await self._session(transport)
            self._transport = None
            if not self._stop.is_set():
                self.counters["disconnects"] += 1
                self._lose_all("disconnect")
            delay = o.backoff_min_s if healthy else min(2 * delay, o.backoff_max_s)
            if not self._stop.is_set():
                await self._sleep(delay)

    async def _session(self, transport) -> bool:
        """One connection's life: subscribe, sync, watch for silence. True when every symbol got synced."""
        o = self.options
        sub = self.spec.subscribe(self.names)
        if sub is not None:
            transport.send(WSMsgType.TEXT, sub)
            self.counters["snapshots"] += len(self.names)
            self._resyncing.update(self.names)  # the snapshots come with the subscription
        else:
            for s in self.names:
                self._request_snapshot(s)
        ping_at = time.monotonic() + o.ping_s
        synced_once = False
        tick = min(0.05, o.silence_s / 4)
        # one waiter for the whole connection: a new wait_disconnected() per tick leaves a waiter behind each
        # time (measured: RSS grew 33 KB/s at 20 waits/s, whatever the message rate)
        gone = asyncio.ensure_future(transport.wait_disconnected())
        while not self._stop.is_set() and not transport.is_disconnected:
            await asyncio.wait({gone}, timeout=tick)
            now = time.monotonic()
            if now - self._last_frame > o.silence_s and not transport.is_disconnected:
                self.counters["silences"] += 1
                self.last_error = f"no frame for {o.silence_s:g} s"
                transport.disconnect(graceful=False)
            if sub is not None and now >= ping_at and not transport.is_disconnected:
                transport.send(WSMsgType.TEXT, b'{"op":"ping","req_id":"hean"}')
                ping_at = now + o.ping_s
            synced_once = synced_once or not self._open
        transport.disconnect(graceful=False)
        if not gone.done():
            gone.cancel()
        return synced_once

    async def _sleep(self, s: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stop.wait(), s)

    def stop(self) -> None:
        """Ask :meth:`run` to end (thread-safe); the connection is closed."""
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has ended already
                self._loop.call_soon_threadsafe(self._stop.set)

    def start_thread(self) -> threading.Thread:
        """Run in a daemon thread with an event loop of its own; :meth:`join` ends it."""
        ready = threading.Event()

        def main() -> None:
            async def go() -> None:
                task = asyncio.ensure_future(self.run())
                await asyncio.sleep(0)
                ready.set()
                await task

            try:
                asyncio.run(go())
            except Exception as e:  # a bug must not end the feed unseen: the owner checks `failed`
                self.failed = f"the live client stopped on an error: {e!r}"
                self.last_error = self.failed
            finally:
                ready.set()

        self._thread = threading.Thread(target=main, name=f"hean-live-{self.spec.name}", daemon=True)
        self._thread.start()
        ready.wait(5)
        return self._thread

    def join(self, timeout: float = 5.0) -> None:
        """Stop and wait for the thread of :meth:`start_thread`."""
        self.stop()
        if self._thread is not None:
            self._thread.join(timeout)

    # ---- frames ---------------------------------------------------------------------------------------

    def _on_frame(self, recv_ns: int, payload: bytes, last: bool) -> None:
        self._last_frame = time.monotonic()
        self.counters["frames"] += 1
        self.counters["bytes"] += len(payload)
        symbol = self._symbol_of(payload)
        if symbol is None:
            self._control(payload)
        else:
            if b"\n" in payload:  # one line per message: a frame never holds a newline in valid JSON output
                payload = payload.replace(b"\n", b" ")
            self._pending[symbol].append(b"%d %s\n" % (recv_ns, payload))
        if last:
            self._flush()
        elif not self._flush_soon:  # the rest of this read is handed on once the loop is done with it
            self._flush_soon = True
            self._loop.call_soon(self._flush)

    def _symbol_of(self, payload: bytes) -> str | None:
        """The symbol a stream message is about, from its first bytes; None for anything else."""
        if self.spec.reader == "binance":
            if not payload.startswith(b'{"stream":"'):
                return None
            end = payload.find(b"@", 11, 64)
            return self._route.get(payload[11:end].decode("ascii", "replace")) if end > 0 else None
        if not payload.startswith(b'{"topic":"'):
            return None
        end = payload.find(b'"', 10, 96)
        if end < 0:
            return None
        return self._route.get(payload[10:end].decode("ascii", "replace").rsplit(".", 1)[-1])

    def _control(self, payload: bytes) -> None:
        """A message that is not a symbol's: an acknowledgement, a pong, an error or something malformed."""
        low = payload[:200].lower()
        if b'"success":true' in low:
            if b'"op":"ping"' in low:
                self.counters["pongs"] += 1
            return
        if b"error" in low or b'"code"' in low or b'"success":false' in low:
            self.counters["exchange_errors"] += 1
            if b"too many" in low or b"-1003" in low or b"rate" in low:
                self.counters["rate_limited"] += 1
            self.last_error = payload[:200].decode("utf-8", "replace")
            return
        self.counters["unrouted"] += 1

    def _flush(self) -> None:
        """Hand on every symbol's received lines: to the recorder, and decoded to the engine."""
        self._flush_soon = False
        for symbol, lines in self._pending.items():
            if not lines:
                continue
            data = b"".join(lines)
            lines.clear()
            self._emit(symbol, data)

    def _emit(self, symbol: str, data: bytes) -> None:
        if self.on_lines is not None:
            self.on_lines(symbol, data)
        if self.decoder is None:
            return
        ev = self.decoder.decode(symbol, data)
        if len(ev):
            self.on_events(symbol, ev)
        self._after_decode(symbol)

    def _after_decode(self, symbol: str) -> None:
        """Open or close the symbol's stale window by what the sync rules say now; resync when it broke."""
        synced = self.decoder.synced(symbol)
        w = self._open.get(symbol)
        if synced and w is not None:
            w.end_ns = time.time_ns()
            del self._open[symbol]
            self._resyncing.discard(symbol)
            self.counters["resyncs"] += 1
        elif not synced and w is None:
            self._open_window(symbol, "gap")
        if self.decoder.broken(symbol) and symbol not in self._resyncing and self._transport is not None:
            self._request_snapshot(symbol)

    def _open_window(self, symbol: str, reason: str) -> None:
        w = StaleWindow(symbol, reason, time.time_ns())
        self._open[symbol] = w
        self.stale_windows.append(w)

    # ---- staleness and resync -------------------------------------------------------------------------

    def lose(self, symbol: str, reason: str, emit: bool = True) -> None:
        """Mark ``symbol`` stale now (its events were cut: a disconnect, a full ring) and resync it;
        ``emit``: hand on the OUT_OF_SYNC event (False: the caller took it from the decoder itself)."""
        if emit and self.decoder is not None:
            ev = self.decoder.lose(symbol, time.time_ns())
            self.on_events(symbol, ev)
        if symbol not in self._open:
            self._open_window(symbol, reason)
        self._resyncing.discard(symbol)
        if self._transport is not None:
            self._request_snapshot(symbol)

    def _lose_all(self, reason: str) -> None:
        self._flush()
        for s in self.names:
            if self.decoder is not None:
                self.on_events(s, self.decoder.lose(s, time.time_ns()))
            if s not in self._open:
                self._open_window(s, reason)
        self._resyncing.clear()

    def resnapshot(self, symbol: str) -> None:
        """A fresh snapshot of ``symbol`` into the stream, synced or not (the recorder starts each file
        with one, so every file replays on its own). Thread-safe."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._request_snapshot, symbol, True)

    def _request_snapshot(self, symbol: str, force: bool = False) -> None:
        if symbol in self._resyncing and not force:
            return
        self._resyncing.add(symbol)
        self.counters["snapshots"] += 1
        if self.spec.rest_snapshots:
            asyncio.ensure_future(self._rest_snapshot(symbol, self._transport))
        elif self._transport is not None:
            self._transport.send(WSMsgType.TEXT, self.spec.subscribe([symbol], "unsubscribe"))
            self._transport.send(WSMsgType.TEXT, self.spec.subscribe([symbol]))

    async def _rest_snapshot(self, symbol: str, transport) -> None:
        """GET the depth snapshot until it comes or the connection goes; its line enters the stream at its
        receive time, after the diffs received before it (which the sync rules then filter)."""
        o = self.options
        url = self.spec.depth_url(o.rest_url or self.spec.rest_url, symbol, o.depth_limit)
        delay = o.backoff_min_s
        loop = asyncio.get_running_loop()
        while self._transport is transport and transport is not None and not transport.is_disconnected:
            status, body, retry = await loop.run_in_executor(None, _http_get, url, o.rest_timeout_s)
            if self._transport is not transport:
                return
            if status == 200:
                self._resyncing.discard(symbol)  # from here the sync rules say whether it took
                self._flush()  # the diffs received before it go first
                body = body.strip().replace(b"\n", b"")
                self._emit(symbol, b"%d %s\n" % (time.time_ns(), body))
                return
            if status in (418, 429):
                self.counters["rate_limited"] += 1
                wait = retry if retry > 0 else delay
            else:
                self.counters["rest_errors"] += 1
                wait = delay
            self.last_error = f"GET {url}: HTTP {status} {body[:120].decode('utf-8', 'replace')}"
            await self._sleep(min(wait, o.backoff_max_s))
            delay = min(2 * delay, o.backoff_max_s)
        self._resyncing.discard(symbol)

    # ---- what observers read --------------------------------------------------------------------------

    def stale(self) -> list[str]:
        """The symbols whose books do not follow the stream now."""
        return sorted(self._open)

    def snapshot_counters(self) -> dict[str, int]:
        """The client's counters with the decoder's (malformed lines, gaps, ...), for telemetry."""
        out = dict(self.counters)
        if self.decoder is not None:
            for k, v in self.decoder.counters.items():
                out[f"decode_{k}"] = v
        out["stale_symbols"] = len(self._open)
        out["stale_windows"] = len(self.stale_windows)
        return out


def _http_get(url: str, timeout: float) -> tuple[int, bytes, float]:
    """(status, body, Retry-After seconds or 0); status 0 for a failure to connect."""
    req = urllib.request.Request(url, headers={"User-Agent": "hean"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read(), 0.0
    except urllib.error.HTTPError as e:
        retry = e.headers.get("Retry-After", "") if e.headers else ""
        try:
            wait = float(retry)
        except ValueError:
            wait = 0.0
        return e.code, e.read() or b"", wait
    except (OSError, ValueError) as e:
        return 0, str(e).encode(), 0.0
