"""A local exchange: serves a recording over real sockets with Binance's or Bybit's framing, and injects faults.

Why: the live feeds (:mod:`hean.live.client`) must be tested and benchmarked without the internet, and the
parts of them that matter most -- the snapshot/diff sync, the resync after a gap, the reconnect, the silence
and ping handling -- only run when an exchange misbehaves. This server is that exchange, seen from the client
message by message: the recorded frames byte for byte on a WebSocket (Binance combined streams, Bybit v5
public subscribe/ack/ping), a REST depth snapshot that is consistent with what the stream has sent at the
moment it is asked for (the server keeps its own book), and faults at chosen stream positions: disconnects,
gaps, malformed frames, stalls, error messages and REST rate limits.

The stream is one global sequence, as on a real exchange: every connected client sees it from where it is when
it connects, and messages sent while nobody listens are missed. ``rate`` paces it (messages per second over
all streams); ``rate=0`` sends as fast as the clients read (transport flow control: nothing is buffered beyond
the transports' high-water marks). The server runs in a thread with its own event loop (:meth:`start`), or as
a process (``python -m hean.live.exchange``) so that a benchmark's client does not share its GIL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import itertools
import json
import operator
import os
import re
import signal
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

__all__ = ["FAULT_KINDS", "VENUES", "Fault", "LocalExchange", "main"]

VENUES = ("binance-usdm", "binance-spot", "bybit-linear", "bybit-spot")
FAULT_KINDS = ("disconnect", "gap", "malformed", "stall", "error", "rest_429")

_DEPTH_PATHS = {"binance-usdm": "/fapi/v1/depth", "binance-spot": "/api/v3/depth"}
_WS_PATHS = {"bybit-linear": "/v5/public/linear", "bybit-spot": "/v5/public/spot"}
_BINANCE_BAD_STREAM = b'{"error":{"code":2,"msg":"Invalid request"}}'
_BINANCE_RATE_ERROR = b'{"code":-1003,"msg":"Too many requests; current limit is 2400 requests per minute."}'
_REST_429 = b'{"code":-1003,"msg":"Too many requests"}'
_BAD_SYMBOL = b'{"code":-1121,"msg":"Invalid symbol."}'
_BAD_LIMIT = b'{"code":-1100,"msg":"Illegal characters found in parameter \'limit\'; legal range is 5..5000."}'
_NOT_FOUND = b'{"code":-1,"msg":"Not found."}'

_BURST = 512  # stream messages sent per event-loop tick at most (rate 0), so that I/O and requests interleave
_PACED_BURST = 8192  # the most a paced stream sends in one tick (it catches up after a stall in such steps)
_SLOW_CLIENT_S = 10.0  # a client whose transport stays paused this long holds the stream no longer: dropped

_BINANCE_STREAM = re.compile(rb'^\{"stream":"([^"]+)"')
_BYBIT_TOPIC = re.compile(rb'"topic":"([^"]+)"')
_BYBIT_TYPE = re.compile(rb'"type":"(\w+)"')
_TIME = re.compile(rb'"(?:E|T|ts)":(\d+)')
# the integers a later loop shifts: update ids and times (keys only: values of these keys are never strings)
_BINANCE_INTS = re.compile(rb'("(?:U|u|pu|E|T)":)(\d+)')
_BYBIT_INTS = re.compile(rb'("(?:u|seq|ts|cts|T)":)(\d+)')
# what each shifted integer is: 0 an update id, 1 a sequence number (Bybit seq), 2 a time (ms)
_BINANCE_CLASS = {b'"U":': 0, b'"u":': 0, b'"pu":': 0, b'"E":': 2, b'"T":': 2}
_BYBIT_CLASS = {b'"u":': 0, b'"seq":': 1, b'"ts":': 2, b'"cts":': 2, b'"T":': 2}

OTHER, DIFF, SNAP = 0, 1, 2  # frame kinds: not depth, depth diff (Binance depthUpdate, Bybit delta), Bybit snapshot


@dataclass(frozen=True)
class Fault:
    """Something going wrong at stream message ``at`` (0-based over the messages of the stream, across loops).

    ``kind``: ``disconnect`` (abort every connection before message ``at``), ``gap`` (skip ``arg`` depth diffs
    from ``at`` on, default 1; the server's book still applies them), ``malformed`` (message ``at`` is sent cut
    in half: not JSON, and lost), ``stall`` (nothing at all for ``arg`` seconds before ``at``, pings included;
    then the messages that came due are sent late), ``error`` (the venue's rate-limit error message before
    ``at``), ``rest_429`` (the next ``arg`` REST depth requests, default 1, answer HTTP 429; ``at`` ignored).
    """

    kind: str
    at: int = 0
    arg: float = 0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}: one of {', '.join(FAULT_KINDS)}")
        if self.at < 0:
            raise ValueError(f"fault {self.kind!r}: at must be >= 0, not {self.at}")

    @property
    def count(self) -> int:
        """``arg`` as a count (gap, rest_429): 1 when not given."""
        return max(1, int(self.arg))


# ----------------------------------------------------------------------------------------------------------
# The recording


@dataclass
class _Recording:
    """A recording as the server streams it: the WebSocket frames and what the server needs to know of them."""

    venue: str
    frames: list[bytes] = field(default_factory=list)  # each sent frame's JSON, as recorded
    stream_ids: list[int] = field(default_factory=list)  # per frame: index into ``streams``
    kinds: bytearray = field(default_factory=bytearray)  # per frame: OTHER, DIFF or SNAP
    streams: list[str] = field(default_factory=list)  # Binance stream names / Bybit topics, in order of appearance
    snapshots: dict[str, tuple[bytes, int]] = field(default_factory=dict)  # Binance: symbol -> (JSON, frame pos)
    id_shift: dict[int, tuple[int, int]] = field(default_factory=dict)  # stream id -> (id shift, seq shift)/loop
    time_shift: int = 0  # ms added to the times per loop
    templates: list[tuple[bytes, tuple[int, ...], int]] = field(default_factory=list)  # (see _prepare_loops)
    layouts: list[tuple[int, ...]] = field(default_factory=list)  # per layout id: each integer's class

    @property
    def binance(self) -> bool:
        return self.venue.startswith("binance")

    @property
    def depth_frames(self) -> list[int]:
        return [i for i, k in enumerate(self.kinds) if k != OTHER]


def _read_lines(path: Path) -> list[bytes]:
    if not path.is_file():
        raise FileNotFoundError(f"recording {str(path)!r} not found (or not a file)")
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] == b"\x1f\x8b":
        data = gzip.decompress(path.read_bytes())
    elif head == b"PK\x03\x04":
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if not n.endswith("/")]
            if len(names) != 1:
                raise ValueError(f"recording {str(path)!r}: a zip must hold one member, not {len(names)}")
            data = z.read(names[0])
    else:
        data = path.read_bytes()
    return data.splitlines()


def _strip_prefix(line: bytes) -> bytes:
    """The JSON of a line: after the ``<receive ns> `` prefix when there is one."""
    line = line.strip()
    if line[:1].isdigit():
        sp = line.find(b" ")
        return line[sp + 1 :].lstrip() if sp > 0 else b""
    return line


def _load(venue: str, path: Path) -> _Recording:
    rec = _Recording(venue)
    names: dict[str, int] = {}
    for no, line in enumerate(_read_lines(path), 1):
        js = _strip_prefix(line)
        if not js:
            continue
        name, kind = _classify(rec, js, path, no)
        if name is None:
            continue
        sid = names.setdefault(name, len(names))
        if sid == len(rec.streams):
            rec.streams.append(name)
        rec.frames.append(js)
        rec.stream_ids.append(sid)
        rec.kinds.append(kind)
    if not rec.frames:
        raise ValueError(f"recording {str(path)!r} holds no {venue} stream messages")
    _loop_shifts(rec)
    return rec


def _classify(rec: _Recording, js: bytes, path: Path, no: int) -> tuple[str | None, int]:
    """A line's stream name and kind; (None, _) for a Binance REST snapshot (kept aside, not streamed)."""
    if rec.binance:
        m = _BINANCE_STREAM.match(js)
        if m is not None:
            name = m.group(1).decode()
            return name, DIFF if "@depth" in name else OTHER
        obj = _decode(js, path, no)
        if "lastUpdateId" in obj:
            rec.snapshots.setdefault(_snapshot_symbol(rec), (js, len(rec.frames)))
            return None, OTHER
        if isinstance(obj.get("stream"), str):
            return obj["stream"], DIFF if "@depth" in obj["stream"] else OTHER
        raise ValueError(f"recording {str(path)!r} line {no}: not a Binance combined-stream message")
    m = _BYBIT_TOPIC.search(js)
    if m is None:
        raise ValueError(f"recording {str(path)!r} line {no}: not a Bybit message (no topic)")
    name = m.group(1).decode()
    if not name.startswith("orderbook."):
        return name, OTHER
    t = _BYBIT_TYPE.search(js)
    return name, SNAP if t is not None and t.group(1) == b"snapshot" else DIFF


def _decode(js: bytes, path: Path, no: int) -> dict:
    try:
        obj = msgspec.json.decode(js)
    except msgspec.DecodeError as e:
        raise ValueError(f"recording {str(path)!r} line {no}: not JSON ({e})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"recording {str(path)!r} line {no}: not a JSON object")
    return obj


def _snapshot_symbol(rec: _Recording) -> str:
    """The symbol a REST snapshot line belongs to: that of the last depth stream seen (else the first)."""
    for i in range(len(rec.frames) - 1, -1, -1):
        if rec.kinds[i] == DIFF:
            return rec.streams[rec.stream_ids[i]].split("@")[0].upper()
    return ""  # resolved when the first depth stream appears (_fix_snapshot_symbols)


def _loop_shifts(rec: _Recording) -> None:
    """What a later loop adds to ids and times so that chains continue: per stream, (id, seq) shifts."""
    times = [int(m.group(1)) for js in (rec.frames[0], rec.frames[-1]) for m in _TIME.finditer(js)]
    rec.time_shift = (max(times) - min(times) + 1) if times else 0
    if rec.binance:
        _fix_snapshot_symbols(rec)
        _binance_shifts(rec)
    else:
        _bybit_shifts(rec)


def _fix_snapshot_symbols(rec: _Recording) -> None:
    if "" in rec.snapshots:
        js, pos = rec.snapshots.pop("")
        sym = next((rec.streams[rec.stream_ids[i]].split("@")[0].upper() for i in rec.depth_frames), "")
        rec.snapshots.setdefault(sym, (js, pos))


def _binance_shifts(rec: _Recording) -> None:
    span: dict[str, list[int]] = {}  # symbol -> [first pu, last u]
    for i in rec.depth_frames:
        d = msgspec.json.decode(rec.frames[i])["data"]
        sym = d["s"].lower()
        first = d.get("pu", d["U"] - 1)
        span.setdefault(sym, [first, d["u"]])[1] = d["u"]
    for sid, name in enumerate(rec.streams):
        first, last = span.get(name.split("@")[0], (0, 0))
        rec.id_shift[sid] = (last - first, 0)


def _bybit_shifts(rec: _Recording) -> None:
    span: dict[int, list[int]] = {}  # stream id -> [first u, last u, first seq, last seq]
    for i in rec.depth_frames:
        d = msgspec.json.decode(rec.frames[i])["data"]
        u, seq = int(d.get("u", 0)), int(d.get("seq", 0))
        s = span.setdefault(rec.stream_ids[i], [u, u, seq, seq])
        s[1], s[3] = u, seq
    for sid in range(len(rec.streams)):
        u0, u1, s0, s1 = span.get(sid, (0, -1, 0, -1))
        rec.id_shift[sid] = (u1 - u0 + 1, s1 - s0 + 1)


def _prepare_loops(rec: _Recording) -> None:
    """Each frame as a ``%`` template of its shifted integers, for the loops after the first (which sends the
    recorded bytes as they are): a later loop then formats a frame in one C call instead of a regex callback."""
    rx, classes = (_BINANCE_INTS, _BINANCE_CLASS) if rec.binance else (_BYBIT_INTS, _BYBIT_CLASS)
    layouts: dict[tuple[int, ...], int] = {}
    for js in rec.frames:
        parts = rx.split(js.replace(b"%", b"%%") if b"%" in js else js)
        keys = tuple(classes[k] for k in parts[1::3])
        vals = tuple(map(int, parts[2::3]))
        parts[2::3] = [b"%d"] * len(vals)
        rec.templates.append((b"".join(parts), vals, layouts.setdefault(keys, len(layouts))))
    rec.layouts = list(layouts)


# ----------------------------------------------------------------------------------------------------------
# The server's books


class _Book:
    """One book as the server has it: price string -> quantity string per side, and where it is."""

    __slots__ = ("asks", "bids", "cts", "live", "seq", "ts", "u")

    def __init__(self) -> None:
        self.bids: dict[str, str] = {}
        self.asks: dict[str, str] = {}
        self.u = self.seq = self.ts = self.cts = 0
        self.live = False  # Bybit: a snapshot has been applied

    def load(self, bids: list, asks: list) -> None:
        self.bids = {p: q for p, q in bids if float(q) != 0.0}
        self.asks = {p: q for p, q in asks if float(q) != 0.0}

    def apply(self, bids: list, asks: list) -> None:
        for side, levels in ((self.bids, bids), (self.asks, asks)):
            for p, q in levels:
                if float(q) == 0.0:
                    side.pop(p, None)
                else:
                    side[p] = q

    def levels(self, limit: int) -> tuple[list[list[str]], list[list[str]]]:
        bids = sorted(self.bids.items(), key=lambda kv: -float(kv[0]))[:limit]
        asks = sorted(self.asks.items(), key=lambda kv: float(kv[0]))[:limit]
        return [list(kv) for kv in bids], [list(kv) for kv in asks]


# ----------------------------------------------------------------------------------------------------------
# Connections


class _Client(WSListener):
    """One WebSocket connection: what it subscribed to, its flow control and its pongs."""

    _ids = itertools.count(1)

    def __init__(self, ex: LocalExchange, want: set[int]) -> None:
        self.ex = ex
        self.id = next(self._ids)
        self.conn_id = f"hean-{os.getpid():x}-{self.id}"
        self.want = want  # stream ids subscribed to
        self.transport: WSTransport | None = None
        self.closing: Callable[[], bool] = lambda: True
        self.paused_since = 0.0  # monotonic time its transport paused writing (0: writable)
        self.last_pong = time.monotonic()
        self.gone = False

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self.closing = transport.underlying_transport.is_closing  # True once the socket failed or closed
        self.ex._connected(self)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        t = frame.msg_type
        if t == WSMsgType.PONG:
            self.last_pong = time.monotonic()
        elif t == WSMsgType.TEXT or t == WSMsgType.BINARY:
            self.ex._client_message(self, frame.get_payload_as_bytes())
        elif t == WSMsgType.CLOSE:
            transport.send_close(WSCloseCode.OK)
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.ex._disconnected(self, "closed")

    def pause_writing(self) -> None:
        self.paused_since = time.monotonic()
        self.ex._paused += 1

    def resume_writing(self) -> None:
        if self.paused_since:
            self.paused_since = 0.0
            self.ex._paused -= 1
            self.ex._wake.set()

    def send(self, payload: bytes) -> None:
        if self.transport is not None and not self.gone and not self.closing():
            self.transport.send(WSMsgType.TEXT, payload)
            self.ex.sent += 1

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.disconnect(graceful=False)


# ----------------------------------------------------------------------------------------------------------
# The exchange


class LocalExchange:
    """A recording served as a live exchange would serve it: WebSocket stream, REST depth, faults.

    ``venue``: one of :data:`VENUES`. ``recording``: a Binance ``<ns> <json>`` capture (.gz or plain) or a
    Bybit one (.zip, .gz or plain; the ``<ns>`` prefix optional). ``rate``: stream messages per second (0: as
    fast as the clients read). ``loops``: how many times the recording is played (0: forever), ids and times
    shifted so that chains continue. ``faults``: :class:`Fault` s at stream positions (:meth:`inject` adds one
    while running). ``ping_interval_s``: WebSocket PING every so often, and a client silent for 3 intervals is
    dropped (0: no pings). ``start_on_first_client``: the stream waits for its first subscriber (else it starts
    with :meth:`start`).

    ``log``: a list of dicts, one per event (``connect``, ``disconnect``, ``subscribe``, ``snapshot``,
    ``fault``, ``ping_timeout``), each with ``event``, ``t_ns`` and ``msg`` (the stream position then);
    ``sent``: frames sent; ``position``: the next stream message's index.
    """

    def __init__(
        self,
        venue: str,
        recording: str | Path,
        *,
        rate: float = 0.0,
        loops: int = 1,
        faults: Sequence[Fault] = (),
        ping_interval_s: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
        rest_port: int = 0,
        start_on_first_client: bool = True,
    ) -> None:
        if venue not in VENUES:
            raise ValueError(f"unknown venue {venue!r}: one of {', '.join(VENUES)}")
        if rate < 0 or loops < 0 or ping_interval_s < 0:
            raise ValueError("rate, loops and ping_interval_s must be >= 0")
        self.venue = venue
        self.rate = float(rate)
        self.loops = int(loops)
        self.ping_interval_s = float(ping_interval_s)
        self.host, self.port, self.rest_port = host, port, rest_port
        self.start_on_first_client = start_on_first_client
        self._rec = _load(venue, Path(recording))
        self._stream_index = {name: i for i, name in enumerate(self._rec.streams)}
        self._depth = self._rec.depth_frames
        self.log: list[dict[str, Any]] = []
        self.sent = 0
        self.position = 0
        self._faults: dict[int, list[Fault]] = {}
        self._rest_429 = 0
        self._gap_left = 0  # depth diffs still to skip (gap fault)
        self._gap_event: dict[str, Any] = {}
        self._clients: set[_Client] = set()
        self._subs: list[_Client] = []  # connected clients with at least one subscription
        self._paused = 0  # clients whose transport paused writing
        self._stalled = False
        self._books: dict[int | str, _Book] = {}
        self._applied = 0  # stream position up to which the books are applied
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._ws_port = self._http_port = 0
        self._rest_writers: set[asyncio.StreamWriter] = set()
        self._rewrite_loop = -1
        self._adds: dict[tuple[int, int], tuple[int, ...]] = {}
        for f in faults:
            self._add_fault(f)
        if self.loops != 1:
            _prepare_loops(self._rec)
        self._init_books()

    # -- public API ------------------------------------------------------------------------------------

    @property
    def ws_url(self) -> str:
        """``ws://host:port`` of the WebSocket endpoint (after :meth:`start`)."""
        self._check_started()
        return f"ws://{self.host}:{self._ws_port}"

    @property
    def rest_url(self) -> str:
        """``http://host:port`` of the REST endpoint (after :meth:`start`)."""
        self._check_started()
        return f"http://{self.host}:{self._http_port}"

    @property
    def streams(self) -> list[str]:
        """The recording's stream names (Binance) or topics (Bybit)."""
        return list(self._rec.streams)

    @property
    def frames(self) -> list[bytes]:
        """The recording's WebSocket frames (first loop), in stream order."""
        return self._rec.frames

    def start(self) -> LocalExchange:
        """Listen (in a thread with its own event loop); returns once both endpoints accept connections."""
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._run, name=f"LocalExchange-{self.venue}", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            self._thread = None
            raise RuntimeError(f"LocalExchange could not start: {self._error}") from self._error
        return self

    def stop(self) -> None:
        """Close every connection and the listeners, and join the thread (idempotent; within ~2 s)."""
        loop, thread = self._loop, self._thread
        if thread is None:
            return
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed between the check and the call
                loop.call_soon_threadsafe(self._stop_event.set)
        thread.join(2.0)
        self._thread = None

    def inject(self, fault: Fault) -> None:
        """Add a fault while running (thread-safe): it applies at the next message (or at ``fault.at`` if later)."""
        loop = self._loop
        if loop is None or self._thread is None:
            self._add_fault(fault)
            return
        loop.call_soon_threadsafe(lambda: self._add_fault(replace(fault, at=max(fault.at, self.position))))

    def events(self, event: str | None = None) -> list[dict[str, Any]]:
        """A copy of the log (only the ``event`` ones when given)."""
        return [e for e in list(self.log) if event is None or e["event"] == event]

    def __enter__(self) -> LocalExchange:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the server thread -----------------------------------------------------------------------------

    def _check_started(self) -> None:
        if not self._ws_port:
            raise RuntimeError("LocalExchange not started: call start() (or use it as a context manager)")

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as e:  # reported by start() when it happens before the server listens
            self._error = e
        finally:
            self._ready.set()
            loop.close()

    async def _main(self) -> None:
        self._stop_event = asyncio.Event()
        self._wake = asyncio.Event()
        self._go = asyncio.Event()
        ws = await ws_create_server(self._factory, self.host, self.port, websocket_handshake_timeout=5)
        http = await asyncio.start_server(self._rest_conn, self.host, self.rest_port)
        self._ws_port = ws.sockets[0].getsockname()[1]
        self._http_port = http.sockets[0].getsockname()[1]
        if not self.start_on_first_client:
            self._go.set()
        tasks = [asyncio.create_task(self._stream())]
        if self.ping_interval_s > 0:
            tasks.append(asyncio.create_task(self._pinger()))
        self._ready.set()
        try:
            await self._stop_event.wait()
        finally:
            await self._shutdown(ws, http, tasks)

    async def _shutdown(self, ws: asyncio.Server, http: asyncio.Server, tasks: list[asyncio.Task]) -> None:
        for t in tasks:
            t.cancel()
        ws.close()
        http.close()
        for c in list(self._clients):
            c.abort()
        for w in list(self._rest_writers):
            w.transport.abort()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0)  # let the aborted transports report their disconnects

    # -- logging and subscriptions -----------------------------------------------------------------------

    def _note(self, event: str, **kw: Any) -> dict[str, Any]:
        e = {"event": event, "t_ns": time.time_ns(), "msg": self.position, **kw}
        self.log.append(e)
        return e

    def _resubscribed(self) -> None:
        self._subs = [c for c in self._clients if c.want and not c.gone]
        if self._subs:
            self._go.set()
        self._wake.set()

    def _connected(self, c: _Client) -> None:
        self._clients.add(c)
        self._note("connect", client=c.id, conn_id=c.conn_id)
        if c.want:
            self._note("subscribe", client=c.id, streams=[self._rec.streams[i] for i in sorted(c.want)])
        self._resubscribed()

    def _disconnected(self, c: _Client, reason: str) -> None:
        if c.gone:
            return
        c.gone = True
        if c.paused_since:
            c.paused_since = 0.0
            self._paused -= 1
        self._clients.discard(c)
        self._note("disconnect", client=c.id, reason=reason)
        self._resubscribed()

    def _drop(self, c: _Client, reason: str) -> None:
        """Abort a connection (no close handshake) and log why."""
        self._disconnected(c, reason)
        c.abort()

    # -- WebSocket routing ------------------------------------------------------------------------------

    def _factory(self, request: WSUpgradeRequest) -> WSListener | None:
        target = urlsplit(request.path.decode("latin-1"))
        if self._rec.binance:
            if target.path.rstrip("/") != "/stream":
                return None
            names = [s for v in parse_qs(target.query).get("streams", []) for s in v.split("/") if s]
            want = {self._stream_index.get(n, -1) for n in names}
            if -1 in want:
                return _Rejected(self)
            return _Client(self, want)
        if target.path.rstrip("/") != _WS_PATHS[self.venue]:
            return None
        return _Client(self, set())

    def _client_message(self, c: _Client, payload: bytes) -> None:
        try:
            msg = msgspec.json.decode(payload)
        except msgspec.DecodeError:
            msg = None
        if self._rec.binance:
            self._binance_request(c, msg)
        else:
            self._bybit_request(c, msg)

    def _binance_request(self, c: _Client, msg: Any) -> None:
        """Binance's WebSocket requests: SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS (anything else: error)."""
        method = msg.get("method") if isinstance(msg, dict) else None
        rid = msg.get("id") if isinstance(msg, dict) else None
        params = msg.get("params", []) if isinstance(msg, dict) else None
        if method == "LIST_SUBSCRIPTIONS":
            c.send(json.dumps({"result": [self._rec.streams[i] for i in sorted(c.want)], "id": rid}).encode())
            return
        ids = {self._stream_index.get(p, -1) for p in params} if isinstance(params, list) else {-1}
        if method not in ("SUBSCRIBE", "UNSUBSCRIBE") or -1 in ids:
            c.send(json.dumps({"error": {"code": 2, "msg": "Invalid request"}, "id": rid}).encode())
            return
        c.want = c.want | ids if method == "SUBSCRIBE" else c.want - ids
        self._note("subscribe", client=c.id, op=method.lower(), streams=list(params))
        c.send(json.dumps({"result": None, "id": rid}).encode())
        self._resubscribed()

    def _bybit_request(self, c: _Client, msg: Any) -> None:
        op = msg.get("op") if isinstance(msg, dict) else None
        reply: dict[str, Any] = {"success": True, "ret_msg": "", "conn_id": c.conn_id}
        if isinstance(msg, dict) and "req_id" in msg:
            reply["req_id"] = msg["req_id"]
        reply["op"] = op if isinstance(op, str) else ""
        if op == "ping":
            if not self._stalled:  # a stalled exchange answers nothing
                reply["ret_msg"] = "pong"
                c.send(json.dumps(reply, separators=(",", ":")).encode())
            return
        args = msg.get("args") if op in ("subscribe", "unsubscribe") else None
        ids = {self._bybit_topic(a) for a in args} if isinstance(args, list) and args else {-1}
        ids.discard(-2)  # a real topic the recording has no messages of: accepted, nothing to send
        if -1 in ids:
            reply.update(success=False, ret_msg="Invalid topic" if isinstance(args, list) else "Invalid request")
            c.send(json.dumps(reply, separators=(",", ":")).encode())
            return
        c.send(json.dumps(reply, separators=(",", ":")).encode())
        self._note("subscribe", client=c.id, op=op, streams=list(args))
        if op == "unsubscribe":
            c.want = c.want - ids
        else:
            for sid in sorted(ids - c.want):
                self._send_bybit_snapshot(c, sid)
            c.want = c.want | ids
        self._resubscribed()

    def _bybit_topic(self, topic: Any) -> int:
        """The recording's stream index of a Bybit topic; -2 for a valid topic of a recorded symbol that the
        recording has no messages of (a trade stream of a book-only recording: Bybit accepts it, and sends
        nothing here); -1 for an invalid one."""
        if not isinstance(topic, str):
            return -1
        if topic in self._stream_index:
            return self._stream_index[topic]
        kind, _, symbol = topic.rpartition(".")
        known = {t.rpartition(".")[2] for t in self._rec.streams}
        valid = kind.split(".")[0] in ("orderbook", "publicTrade", "tickers")
        return -2 if valid and symbol in known else -1

    # -- the stream ----------------------------------------------------------------------------------------

    @property
    def _total(self) -> float:
        return float("inf") if self.loops == 0 else self.loops * len(self._rec.frames)

    async def _stream(self) -> None:
        await self._go.wait()
        t0, sent0 = time.monotonic(), self.position
        while self.position < self._total:
            if self._paused and await self._held():
                continue
            if self.rate > 0:
                due = int((time.monotonic() - t0) * self.rate) - (self.position - sent0)
                if due <= 0:
                    await asyncio.sleep((1 - due) / self.rate)
                    continue
                budget = min(due, _PACED_BURST)
            else:
                if not self._subs:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                budget = _BURST
            stall = self._burst(budget)
            if stall:
                await self._stall(stall)
            else:
                await asyncio.sleep(0)

    async def _held(self) -> bool:
        """Wait while a client's transport is paused (back-pressure); drop one paused for too long."""
        now = time.monotonic()
        for c in list(self._subs):
            if c.paused_since and now - c.paused_since > _SLOW_CLIENT_S:
                self._drop(c, "slow consumer")
        if not self._paused:
            return False
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), 0.25)
        except TimeoutError:
            pass
        return True

    async def _stall(self, seconds: float) -> None:
        self._stalled = True
        try:
            await asyncio.sleep(seconds)
        finally:
            self._stalled = False
            now = time.monotonic()
            for c in self._clients:
                c.last_pong = max(c.last_pong, now)  # the silence was the server's, not the client's

    def _frame(self, i: int, loop: int) -> bytes:
        """Frame ``i`` as loop ``loop`` sends it: ids and times shifted so that chains continue."""
        if loop != self._rewrite_loop:
            self._rewrite_loop, self._adds = loop, {}
        tmpl, vals, layout = self._rec.templates[i]
        key = (self._rec.stream_ids[i], layout)
        add = self._adds.get(key)
        if add is None:
            ids, seqs = self._rec.id_shift[key[0]]
            shift = (ids * loop, seqs * loop, self._rec.time_shift * loop)
            add = self._adds[key] = tuple(shift[c] for c in self._rec.layouts[layout])
        return tmpl % tuple(map(operator.add, vals, add))

    def _burst(self, budget: int) -> float:
        """Send up to ``budget`` stream messages now; returns a stall's seconds when one is due (else 0)."""
        frames, sids, kinds = self._rec.frames, self._rec.stream_ids, self._rec.kinds
        n, total, paced = len(frames), self._total, self.rate > 0
        text = WSMsgType.TEXT
        subs = self._subs
        sent = 0
        pos = self.position
        next_fault = min(self._faults, default=-1)
        for _ in range(budget):
            if pos >= total or (not paced and not subs) or self._paused:
                break
            mode = 0
            if pos == next_fault or 0 <= next_fault < pos:
                mode = self._fire(pos)
                next_fault = min(self._faults, default=-1)
                subs = self._subs
                if mode < 0:
                    return -mode
                if not paced and not subs:
                    break  # a disconnect: unpaced, the stream waits for the next client at this message
            loop, i = divmod(pos, n)
            js = frames[i] if loop == 0 else self._frame(i, loop)
            sid = sids[i]
            if self._gap_left and kinds[i] == DIFF:
                self._gap_left -= 1
                self._gap_event["msgs"].append(pos)
            else:
                if mode == 1:
                    js = js[: len(js) // 2]
                for c in subs:
                    if sid in c.want and not c.closing():
                        c.transport.send(text, js)
                        sent += 1
            pos += 1
            self.position = pos
        self.sent += sent
        return 0.0

    # -- faults -------------------------------------------------------------------------------------------

    def _add_fault(self, f: Fault) -> None:
        if f.kind == "rest_429":
            self._rest_429 += f.count
            if self._loop is not None:
                self._note("fault", kind="rest_429", at=f.at, count=f.count)
            return
        self._faults.setdefault(f.at, []).append(f)

    def _fire(self, pos: int) -> int:
        """Apply the faults due at ``pos``. Returns 0, 1 (send message ``pos`` malformed) or -seconds: a stall
        comes first, and the other faults due are put back to fire when it is over."""
        due = [f for at in sorted(k for k in self._faults if k <= pos) for f in self._faults.pop(at)]
        due.sort(key=lambda f: f.kind != "stall")
        if not due:
            return 0
        if due[0].kind == "stall":
            if len(due) > 1:
                self._faults[pos] = due[1:]
            self._note("fault", kind="stall", at=pos, seconds=due[0].arg)
            return -max(due[0].arg, 1e-3)
        mode = 0
        for f in due:
            mode |= self._fire_one(f, pos)
        return mode

    def _fire_one(self, f: Fault, pos: int) -> int:
        if f.kind == "disconnect":
            clients = sorted(c.id for c in self._clients)
            self._note("fault", kind="disconnect", at=pos, clients=clients)
            for c in list(self._clients):
                self._drop(c, "fault")
        elif f.kind == "gap":
            self._gap_left += f.count
            self._gap_event = self._note("fault", kind="gap", at=pos, count=f.count, msgs=[])
        elif f.kind == "malformed":
            i = pos % len(self._rec.frames)
            depth = self._rec.kinds[i] != OTHER
            self._note("fault", kind="malformed", at=pos, msgs=[pos], lost=True, depth=depth)
            return 1
        elif f.kind == "error":
            self._note("fault", kind="error", at=pos, clients=sorted(c.id for c in self._clients))
            for c in list(self._clients):
                c.send(self._error_message(c))
        return 0

    def _error_message(self, c: _Client) -> bytes:
        if self._rec.binance:
            return _BINANCE_RATE_ERROR
        msg = {"success": False, "ret_msg": "Too many requests", "conn_id": c.conn_id, "op": "subscribe"}
        return json.dumps(msg, separators=(",", ":")).encode()

    # -- pings ----------------------------------------------------------------------------------------

    async def _pinger(self) -> None:
        interval = self.ping_interval_s
        while True:
            await asyncio.sleep(interval)
            if self._stalled:
                continue
            now = time.monotonic()
            for c in list(self._clients):
                if now - c.last_pong > 3 * interval:
                    self._note("ping_timeout", client=c.id, silent_s=round(now - c.last_pong, 3))
                    self._drop(c, "ping timeout")
                elif c.transport is not None:
                    c.transport.send_ping()

    # -- the books ---------------------------------------------------------------------------------------

    def _init_books(self) -> None:
        for sym, (js, _) in self._rec.snapshots.items():
            snap = msgspec.json.decode(js)
            b = self._books[sym] = _Book()
            b.load(snap.get("bids", []), snap.get("asks", []))
            b.u, b.ts, b.cts = snap["lastUpdateId"], snap.get("E", 0), snap.get("T", 0)
        self._depth_at = 0  # next index into self._depth (of loop self._applied // n) to apply

    def _catch_up(self) -> None:
        """Apply every depth message the stream has passed (sent or not) to the server's books."""
        n, depth, frames = len(self._rec.frames), self._depth, self._rec.frames
        while depth:
            loop, j = divmod(self._depth_at, len(depth))
            pos = loop * n + depth[j]
            if pos >= self.position:
                break
            sid = self._rec.stream_ids[depth[j]]
            self._apply(msgspec.json.decode(frames[depth[j]]), sid, self._rec.kinds[depth[j]], loop)
            self._depth_at += 1

    def _apply(self, msg: dict, sid: int, kind: int, loop: int) -> None:
        d = msg["data"]
        ids, seqs = (v * loop for v in self._rec.id_shift[sid])
        ms = self._rec.time_shift * loop
        if self._rec.binance:
            b = self._books.get(d["s"].upper())
            if b is None:
                b = self._books[d["s"].upper()] = _Book()
            if d["u"] + ids > b.u:
                b.apply(d.get("b", []), d.get("a", []))
                b.u, b.ts, b.cts = d["u"] + ids, d.get("E", 0) + ms, d.get("T", 0) + ms
            return
        b = self._books.setdefault(sid, _Book())
        if kind == SNAP:
            b.load(d.get("b", []), d.get("a", []))
            b.live = True
        else:
            b.apply(d.get("b", []), d.get("a", []))
        b.u, b.seq = int(d.get("u", 0)) + ids, int(d.get("seq", 0)) + seqs
        b.ts, b.cts = int(msg.get("ts", 0)) + ms, int(msg.get("cts", 0)) + ms

    def _send_bybit_snapshot(self, c: _Client, sid: int) -> None:
        """A (re)subscriber to an orderbook topic after the stream started: the server's book as a snapshot."""
        topic = self._rec.streams[sid]
        if not topic.startswith("orderbook.") or not self._go.is_set():
            return
        self._catch_up()
        b = self._books.get(sid)
        if b is None or not b.live:
            return  # the recording's own snapshot is still to come
        bids, asks = b.levels(10**9)
        data = {"s": topic.rsplit(".", 1)[-1], "b": bids, "a": asks, "u": b.u, "seq": b.seq}
        msg = {"topic": topic, "type": "snapshot", "ts": b.ts, "data": data, "cts": b.cts}
        c.send(json.dumps(msg, separators=(",", ":")).encode())
        self._note("snapshot", client=c.id, topic=topic, u=b.u, seq=b.seq)

    # -- REST -----------------------------------------------------------------------------------------

    async def _rest_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._rest_writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                keep = await self._rest_one(head, reader, writer)
                if not keep:
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            self._rest_writers.discard(writer)
            writer.close()

    async def _rest_one(self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:] if h)}
        length = int(headers.get("content-length", "0") or 0)
        if length:
            await reader.readexactly(length)
        if len(parts) != 3:
            status, body, extra = 400, b'{"code":-1,"msg":"Bad request."}', {}
        else:
            status, body, extra = self._rest_answer(parts[0], parts[1])
        keep = parts[-1] == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}.get(status, "")
        reason = reason or ("Too Many Requests" if status == 429 else "Error")
        out = [f"HTTP/1.1 {status} {reason}", "Content-Type: application/json", f"Content-Length: {len(body)}"]
        out += [f"{k}: {v}" for k, v in extra.items()]
        out.append(f"Connection: {'keep-alive' if keep else 'close'}")
        writer.write(("\r\n".join(out) + "\r\n\r\n").encode() + body)
        await writer.drain()
        return keep

    def _rest_answer(self, method: str, target: str) -> tuple[int, bytes, dict[str, str]]:
        url = urlsplit(target)
        path = _DEPTH_PATHS.get(self.venue)
        if url.path != path:
            return 404, _NOT_FOUND, {}
        if method not in ("GET", "HEAD"):
            return 405, b'{"code":-1,"msg":"Method not allowed."}', {}
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if self._rest_429 > 0:
            self._rest_429 -= 1
            self._note("fault", kind="rest_429", at=self.position, answered=429)
            return 429, _REST_429, {"Retry-After": "1"}
        sym = q.get("symbol", "").upper()
        if sym not in self._books:
            return 400, _BAD_SYMBOL, {}
        try:
            limit = int(q.get("limit", "1000"))
        except ValueError:
            limit = -1
        if not 5 <= limit <= 5000:
            return 400, _BAD_LIMIT, {}
        return 200, self._depth_snapshot(sym, limit), {}

    def _depth_snapshot(self, sym: str, limit: int) -> bytes:
        self._catch_up()
        rec_js, rec_pos = self._rec.snapshots.get(sym, (b"", -1))
        if self.position < rec_pos:  # the stream has not reached the moment of the recorded snapshot
            snap = msgspec.json.decode(rec_js)
            u, e, t = snap["lastUpdateId"], snap.get("E", 0), snap.get("T", 0)
            bids, asks = snap["bids"][:limit], snap["asks"][:limit]
            recorded = True
        else:
            b = self._books[sym]
            u, e, t = b.u, b.ts, b.cts
            bids, asks = b.levels(limit)
            recorded = False
        out: dict[str, Any] = {"lastUpdateId": u}
        if self.venue == "binance-usdm":
            out.update(E=e, T=t)
        out.update(bids=bids, asks=asks)
        self._note("snapshot", symbol=sym, lastUpdateId=u, recorded=recorded, limit=limit)
        return json.dumps(out, separators=(",", ":")).encode()


class _Rejected(WSListener):
    """A Binance connection that asked for unknown streams: it gets the error and is closed."""

    def __init__(self, ex: LocalExchange) -> None:
        self.ex = ex

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.ex._note("connect", client=0, rejected=True)
        transport.send(WSMsgType.TEXT, _BINANCE_BAD_STREAM)
        transport.send_close(WSCloseCode.POLICY_VIOLATION, b"Invalid request")
        transport.disconnect()


# ----------------------------------------------------------------------------------------------------------
# The command line


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hean.live.exchange``: serve a recording until SIGTERM/SIGINT (prints the URLs as JSON)."""
    p = argparse.ArgumentParser(prog="python -m hean.live.exchange", description=__doc__.split("\n")[0])
    p.add_argument("--venue", required=True, choices=VENUES)
    p.add_argument("--recording", required=True)
    p.add_argument("--rate", type=float, default=0.0, help="messages per second (0: as fast as clients read)")
    p.add_argument("--loops", type=int, default=1, help="times to play the recording (0: forever)")
    p.add_argument("--ping", type=float, default=0.0, help="WebSocket ping interval, seconds (0: none)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    a = p.parse_args(argv)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})  # the server thread inherits it
    try:
        ex = LocalExchange(a.venue, a.recording, rate=a.rate, loops=a.loops, ping_interval_s=a.ping, host=a.host,
                           port=a.port).start()  # fmt: skip
    except (OSError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"ws_url": ex.ws_url, "rest_url": ex.rest_url, "pid": os.getpid()}), flush=True)
    try:
        signal.sigwait({signal.SIGTERM, signal.SIGINT})
    finally:
        ex.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
