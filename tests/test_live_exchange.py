"""hean.live.exchange: the local exchange serves the recordings with the venues' framing, a REST snapshot
consistent with its stream, and the faults the live client must survive -- checked with plain clients
(websockets' sync client, urllib, a raw socket), never the internet."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

import pytest
from conftest import ROOT, data_file
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from hean.live.exchange import FAULT_KINDS, Fault, LocalExchange

BINANCE = "binance-usdm-btcusdt-20240808.gz"
BYBIT = "bybit-xrpusdt-ob500.data.zip"
ALL = "btcusdt@depth@0ms/btcusdt@trade/btcusdt@bookTicker"
DEPTH = "btcusdt@depth@0ms"


@lru_cache(maxsize=1)
def binance_lines() -> tuple[list[bytes], dict]:
    """The recording's stream frames (the JSON after ``<ns> ``) and its REST snapshot, read independently."""
    frames, snapshot = [], None
    for line in gzip.decompress(data_file(BINANCE).read_bytes()).splitlines():
        js = line.split(b" ", 1)[1]
        if b'"lastUpdateId"' in js[:20]:
            snapshot = json.loads(js)
        else:
            frames.append(js)
    return frames, snapshot


@lru_cache(maxsize=1)
def bybit_lines() -> list[bytes]:
    with zipfile.ZipFile(data_file(BYBIT)) as z:
        return z.read(z.namelist()[0]).splitlines()


@contextmanager
def serve(venue: str, name: str, **kw) -> Iterator[LocalExchange]:
    ex = LocalExchange(venue, data_file(name), **kw).start()
    try:
        yield ex
    finally:
        ex.stop()


def ws_binance(ex: LocalExchange, streams: str = ALL, **kw):
    url = f"{ex.ws_url}/stream?streams={streams}"
    return connect(url, max_size=None, open_timeout=5, close_timeout=0.2, **kw)


def recv(ws, timeout: float = 5.0) -> bytes:
    return ws.recv(timeout=timeout, decode=False)


def get(url: str) -> tuple[int, dict, dict]:
    """(status, JSON body, headers) of a GET, error statuses included."""
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read()), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), dict(e.headers)


def depth(ex: LocalExchange, query: str = "symbol=BTCUSDT&limit=5") -> tuple[int, dict, dict]:
    return get(f"{ex.rest_url}/fapi/v1/depth?{query}")


def apply_levels(side: dict[str, str], levels: list) -> None:
    for p, q in levels:
        if float(q) == 0.0:
            side.pop(p, None)
        else:
            side[p] = q


def top(side: dict[str, str], n: int, bids: bool) -> list[list[str]]:
    return [list(kv) for kv in sorted(side.items(), key=lambda kv: float(kv[0]), reverse=bids)[:n]]


def depth_chain_breaks(frames: list[bytes]) -> list[int]:
    """Indices (in ``frames``) of the depth diffs whose ``pu`` is not the previous diff's ``u``."""
    breaks, prev = [], None
    for i, f in enumerate(frames):
        try:
            msg = json.loads(f)
        except ValueError:
            continue
        d = msg.get("data", {})
        if d.get("e") != "depthUpdate":
            continue
        if prev is not None and d["pu"] != prev:
            breaks.append(i)
        prev = d["u"]
    return breaks


# ------------------------------------------------------------------------------------------------------------
# Binance: framing, filtering, REST


@pytest.mark.timeout(60)
def test_binance_frames_are_the_recording_byte_for_byte():
    frames, _ = binance_lines()
    with serve("binance-usdm", BINANCE) as ex, ws_binance(ex) as ws:
        got = [recv(ws) for _ in range(2000)]
    assert got == frames[:2000]
    assert not any(b"lastUpdateId" in g for g in got)  # the REST snapshot line is not streamed


@pytest.mark.timeout(60)
@pytest.mark.parametrize("stream", ["btcusdt@trade", DEPTH, "btcusdt@bookTicker"])
def test_binance_streams_filter_what_is_sent(stream):
    frames, _ = binance_lines()
    want = [f for f in frames if f.startswith(b'{"stream":"%s"' % stream.encode())][:300]
    with serve("binance-usdm", BINANCE) as ex, ws_binance(ex, stream) as ws:
        got = [recv(ws) for _ in range(len(want))]
    assert got == want


@pytest.mark.timeout(60)
def test_binance_unknown_stream_gets_the_error_and_is_closed():
    with serve("binance-usdm", BINANCE) as ex, ws_binance(ex, "btcusdt@trade/btcusdt@nonsense") as ws:
        assert json.loads(recv(ws)) == {"error": {"code": 2, "msg": "Invalid request"}}
        with pytest.raises(ConnectionClosed):
            recv(ws)


@pytest.mark.timeout(60)
def test_rest_before_the_stream_reaches_the_snapshot_is_the_recorded_snapshot():
    _, snap = binance_lines()
    with serve("binance-usdm", BINANCE) as ex:
        status, body, headers = depth(ex, "symbol=btcusdt&limit=1000")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert body == snap  # ahead of the stream: the client buffers diffs and waits, as with Binance
    assert ex.events("snapshot")[0]["lastUpdateId"] == snap["lastUpdateId"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("k", [200, 3000])
def test_rest_snapshot_is_consistent_with_the_stream(k):
    """Whenever asked, the REST book is the recorded snapshot with the diffs streamed so far applied
    (Binance's rules): a client that syncs with it gets the same top of book."""
    _, snap = binance_lines()
    with serve("binance-usdm", BINANCE) as ex, ws_binance(ex) as ws:
        got = [json.loads(recv(ws)) for _ in range(k)]
        status, rest, _ = depth(ex)
        assert status == 200 and set(rest) == {"lastUpdateId", "E", "T", "bids", "asks"}
        served = rest["lastUpdateId"]
        assert ex.events("snapshot")[-1]["lastUpdateId"] == served
        diffs = [m["data"] for m in got if m["data"]["e"] == "depthUpdate"]
        while not diffs or diffs[-1]["u"] < served:  # the server may have sent more than we read yet
            m = json.loads(recv(ws))
            if m["data"]["e"] == "depthUpdate":
                diffs.append(m["data"])
    assert served in [snap["lastUpdateId"]] + [d["u"] for d in diffs]  # the u of the last diff it applied
    bids = {p: q for p, q in snap["bids"]}
    asks = {p: q for p, q in snap["asks"]}
    for d in diffs:
        if snap["lastUpdateId"] < d["u"] <= served:
            apply_levels(bids, d["b"])
            apply_levels(asks, d["a"])
    assert rest["bids"] == top(bids, 5, True) and rest["asks"] == top(asks, 5, False)
    assert rest["bids"][0][0] == top(bids, 1, True)[0][0] and rest["asks"][0][0] == top(asks, 1, False)[0][0]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "venue, query, status, code",
    [
        ("binance-usdm", "/fapi/v1/depth?symbol=ETHUSDT&limit=5", 400, -1121),
        ("binance-usdm", "/fapi/v1/depth?limit=5", 400, -1121),
        ("binance-usdm", "/fapi/v1/depth?symbol=BTCUSDT&limit=2", 400, -1100),
        ("binance-usdm", "/api/v3/depth?symbol=BTCUSDT", 404, -1),
        ("binance-spot", "/api/v3/depth?symbol=BTCUSDT&limit=5", 200, None),
        ("binance-usdm", "/nothing", 404, -1),
    ],
)
def test_rest_answers(venue, query, status, code):
    with serve(venue, BINANCE) as ex:
        got, body, _ = get(ex.rest_url + query)
    assert got == status
    if code is None:
        assert set(body) == {"lastUpdateId", "bids", "asks"} and len(body["bids"]) == 5  # spot: no E/T
    else:
        assert body["code"] == code


# ------------------------------------------------------------------------------------------------------------
# Faults


def read_until_closed(ws, limit: int = 100_000) -> list[bytes]:
    got = []
    try:
        while len(got) < limit:
            got.append(recv(ws))
    except ConnectionClosed:
        pass
    return got


@pytest.mark.timeout(60)
def test_fault_disconnect_then_reconnect_continues_the_stream():
    frames, _ = binance_lines()
    with serve("binance-usdm", BINANCE, faults=[Fault("disconnect", at=100)]) as ex:
        with ws_binance(ex) as ws:
            got = read_until_closed(ws)
        assert len(got) <= 100 and got == frames[: len(got)]  # an abort may drop what was still buffered
        with ws_binance(ex) as ws:
            first = recv(ws)
        assert first == frames[100]  # unpaced: the stream waited for a client; it did not restart
        (fault,) = ex.events("fault")
        assert fault["kind"] == "disconnect" and fault["at"] == 100 and len(fault["clients"]) == 1
        assert [e["reason"] for e in ex.events("disconnect")][0] == "fault"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["gap", "malformed"])
def test_fault_breaks_the_depth_chain_once(kind):
    frames, _ = binance_lines()
    at = [i for i, f in enumerate(frames) if b"@depth" in f[:40]][5]  # a depth diff
    with serve("binance-usdm", BINANCE, faults=[Fault(kind, at=at, arg=2 if kind == "gap" else 0)]) as ex:
        with ws_binance(ex) as ws:
            got = [recv(ws) for _ in range(at + 300)]
        (fault,) = ex.events("fault")
    bad = [i for i, g in enumerate(got) if not _is_json(g)]
    if kind == "malformed":
        assert bad == [at] and got[at] == frames[at][: len(frames[at]) // 2]
        assert fault["msgs"] == [at] and fault["lost"] and fault["depth"]
        assert len(depth_chain_breaks(got)) == 1
    else:
        assert bad == [] and len(fault["msgs"]) == 2 and fault["msgs"][0] == at
        assert all(frames[i] not in got for i in fault["msgs"])
        (brk,) = depth_chain_breaks(got)
        assert brk > at


def _is_json(b: bytes) -> bool:
    try:
        json.loads(b)
    except ValueError:
        return False
    return True


@pytest.mark.timeout(60)
def test_fault_stall_sends_nothing_then_resumes():
    frames, _ = binance_lines()
    with serve("binance-usdm", BINANCE, faults=[Fault("stall", at=50, arg=0.6)]) as ex, ws_binance(ex) as ws:
        got = [recv(ws) for _ in range(50)]
        t = time.monotonic()
        nxt = recv(ws)
        waited = time.monotonic() - t
    assert got == frames[:50] and nxt == frames[50]
    assert waited >= 0.5


@pytest.mark.timeout(60)
def test_fault_error_message_arrives_before_the_message():
    frames, _ = binance_lines()
    with serve("binance-usdm", BINANCE, faults=[Fault("error", at=10)]) as ex, ws_binance(ex) as ws:
        got = [recv(ws) for _ in range(12)]
    assert got[:10] == frames[:10] and got[11] == frames[10]
    assert json.loads(got[10])["code"] == -1003


@pytest.mark.timeout(60)
def test_fault_rest_429_then_200():
    with serve("binance-usdm", BINANCE, faults=[Fault("rest_429", arg=2)]) as ex:
        answers = [depth(ex) for _ in range(3)]
    assert [a[0] for a in answers] == [429, 429, 200]
    assert answers[0][1] == {"code": -1003, "msg": "Too many requests"} and answers[0][2]["Retry-After"] == "1"


@pytest.mark.timeout(60)
def test_inject_applies_at_the_next_message():
    with serve("binance-usdm", BINANCE, rate=2000) as ex, ws_binance(ex) as ws:
        for _ in range(20):
            recv(ws)
        ex.inject(Fault("error", at=0))
        got = [recv(ws) for _ in range(200)]
        errors = [i for i, g in enumerate(got) if b"-1003" in g]
        (fault,) = ex.events("fault")
    assert len(errors) == 1 and fault["kind"] == "error" and fault["at"] >= 20


@pytest.mark.timeout(60)
def test_faults_are_checked():
    with pytest.raises(ValueError, match="disconnect"):
        Fault("explode", at=1)
    assert set(FAULT_KINDS) == {"disconnect", "gap", "malformed", "stall", "error", "rest_429"}


# ------------------------------------------------------------------------------------------------------------
# Bybit


def bybit_ws(ex: LocalExchange):
    return connect(f"{ex.ws_url}/v5/public/linear", max_size=None, open_timeout=5, close_timeout=0.2)


def op(ws, name: str, args=None, req: str = "r1") -> None:
    msg = {"op": name, "req_id": req} if args is None else {"op": name, "args": args, "req_id": req}
    ws.send(json.dumps(msg))


@pytest.mark.timeout(60)
def test_bybit_subscribe_ack_stream_and_ping():
    lines = bybit_lines()
    with serve("bybit-linear", BYBIT) as ex, bybit_ws(ex) as ws:
        op(ws, "subscribe", ["orderbook.500.XRPUSDT"])
        ack = json.loads(recv(ws))
        assert ack["success"] is True and ack["op"] == "subscribe" and ack["req_id"] == "r1" and ack["conn_id"]
        got = [recv(ws) for _ in range(50)]
        assert got == lines
        op(ws, "ping", req="p")
        pong = json.loads(recv(ws))
        assert pong == {"success": True, "ret_msg": "pong", "conn_id": ack["conn_id"], "req_id": "p", "op": "ping"}
        op(ws, "subscribe", ["orderbook.1.NOPE"], req="bad")
        bad = json.loads(recv(ws))
        assert bad["success"] is False and bad["ret_msg"] == "Invalid topic" and bad["req_id"] == "bad"


@pytest.mark.timeout(60)
def test_bybit_resubscribe_gets_the_servers_book_as_snapshot():
    msgs = [json.loads(x) for x in bybit_lines()]
    with serve("bybit-linear", BYBIT, rate=200) as ex, bybit_ws(ex) as ws:
        topic = ["orderbook.500.XRPUSDT"]
        op(ws, "subscribe", topic)
        recv(ws)  # ack
        got = [json.loads(recv(ws)) for _ in range(20)]
        op(ws, "unsubscribe", topic, req="u")
        op(ws, "subscribe", topic, req="s")
        rest = []
        with pytest.raises(TimeoutError):
            while True:  # the rest of the 50 messages (at 200/s), with the acks and the snapshot
                rest.append(json.loads(recv(ws, timeout=1.0)))
    rest = [m for m in rest if "topic" in m or m.get("req_id") == "s"]
    i = next(i for i, m in enumerate(rest) if m.get("req_id") == "s")
    snap = rest[i + 1]
    assert snap["type"] == "snapshot" and snap["topic"] == topic[0]
    upto = next(k for k, m in enumerate(msgs) if m["data"]["u"] == snap["data"]["u"])
    bids, asks = {}, {}
    for m in msgs[: upto + 1]:
        if m["type"] == "snapshot":
            bids, asks = {}, {}
        apply_levels(bids, m["data"]["b"])
        apply_levels(asks, m["data"]["a"])
    assert snap["data"]["b"] == top(bids, 10**6, True) and snap["data"]["a"] == top(asks, 10**6, False)
    assert snap["data"]["seq"] == msgs[upto]["data"]["seq"] and snap["ts"] == msgs[upto]["ts"]
    after = [m for m in rest[i + 2 :] if m.get("topic")]
    assert after and after[0]["data"]["u"] == snap["data"]["u"] + 1  # then the deltas that follow
    assert got[0]["type"] == "snapshot" and ex.events("snapshot")[0]["u"] == snap["data"]["u"]


# ------------------------------------------------------------------------------------------------------------
# Looping, pacing, pings, lifecycle


@pytest.mark.timeout(60)
def test_binance_loops_keep_the_depth_chain():
    frames, _ = binance_lines()
    n_depth = sum(1 for f in frames if b"@depth" in f[:40])
    with serve("binance-usdm", BINANCE, loops=2) as ex, ws_binance(ex, DEPTH) as ws:
        got = [recv(ws) for _ in range(2 * n_depth)]
        with pytest.raises(TimeoutError):
            recv(ws, timeout=0.3)  # two loops, then nothing
    assert got[:n_depth] == [f for f in frames if b"@depth" in f[:40]]
    assert depth_chain_breaks(got) == []
    e = [json.loads(g)["data"]["E"] for g in got]
    assert e[n_depth] > e[n_depth - 1] and got[n_depth] != got[0]  # times shifted by the recording's span


@pytest.mark.timeout(60)
def test_bybit_loops_continue_u_and_seq():
    lines = bybit_lines()
    with serve("bybit-linear", BYBIT, loops=2) as ex, bybit_ws(ex) as ws:
        op(ws, "subscribe", ["orderbook.500.XRPUSDT"])
        recv(ws)
        got = [json.loads(recv(ws)) for _ in range(2 * len(lines))]
    u = [m["data"]["u"] for m in got]
    assert u == list(range(u[0], u[0] + len(u)))
    seq = [m["data"]["seq"] for m in got]
    assert seq == sorted(seq) and len(set(seq)) == len(seq)
    assert got[len(lines)]["ts"] > got[len(lines) - 1]["ts"]


@pytest.mark.timeout(60)
def test_rate_paces_the_stream():
    with serve("binance-usdm", BINANCE, rate=1000) as ex, ws_binance(ex) as ws:
        recv(ws)
        n, end = 0, time.monotonic() + 0.5
        while (left := end - time.monotonic()) > 0:
            try:
                recv(ws, timeout=left)
                n += 1
            except TimeoutError:
                break
    assert 350 <= n <= 650, n


@pytest.mark.timeout(60)
def test_ping_timeout_drops_a_silent_client_and_spares_a_live_one():
    with serve("binance-usdm", BINANCE, rate=200, ping_interval_s=0.2) as ex:
        # websockets answers pings by itself, as long as its reader runs (its queue is not full)
        with ws_binance(ex, "btcusdt@bookTicker", max_queue=None) as live:
            raw = socket.create_connection(("127.0.0.1", int(ex.ws_url.rsplit(":", 1)[1])), timeout=5)
            raw.sendall(
                b"GET /stream?streams=btcusdt@trade HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n"
            )
            t = time.monotonic()
            try:
                while raw.recv(65536):  # read (never answer): the server must drop it after 3 intervals
                    pass
            except ConnectionResetError:
                pass
            dropped_after = time.monotonic() - t
            raw.close()
            recv(live)
        (timeout,) = ex.events("ping_timeout")
    assert 0.4 <= dropped_after <= 3.0 and timeout["client"] != 1


@pytest.mark.timeout(60)
def test_stop_is_quick_and_idempotent_with_clients_connected():
    ex = LocalExchange("binance-usdm", data_file(BINANCE), rate=100)
    with ex, ws_binance(ex) as ws:
        recv(ws)
        t = time.monotonic()
        ex.stop()
        assert time.monotonic() - t < 2.0
        ex.stop()
        with pytest.raises(ConnectionClosed):
            while True:  # what was sent before the stop, then the end
                recv(ws, timeout=2)
    assert ex.events("connect") and ex.events("disconnect")


@pytest.mark.timeout(60)
def test_bad_venue_and_missing_recording():
    with pytest.raises(ValueError, match="binance-usdm.*bybit-spot"):
        LocalExchange("kraken", data_file(BINANCE))
    with pytest.raises(FileNotFoundError, match="nope.gz"):
        LocalExchange("binance-usdm", ROOT / "tests" / "data" / "nope.gz")
    with pytest.raises(ValueError, match="no bybit-linear stream messages|not a Bybit message"):
        LocalExchange("bybit-linear", data_file(BINANCE))
    with pytest.raises(RuntimeError, match="not started"):
        _ = LocalExchange("bybit-linear", data_file(BYBIT)).ws_url


# ------------------------------------------------------------------------------------------------------------
# The command line, and how fast it sends (printed, not asserted)


@contextmanager
def cli(*args: str) -> Iterator[dict]:
    cmd = [sys.executable, "-m", "hean.live.exchange", "--venue", "binance-usdm", "--recording"]
    p = subprocess.Popen([*cmd, str(data_file(BINANCE)), *args], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        info = json.loads(p.stdout.readline())
        yield info
    finally:
        p.terminate()
        info["rc"] = p.wait(10)


@pytest.mark.timeout(60)
def test_cli_serves_until_sigterm():
    frames, _ = binance_lines()
    with cli("--rate", "5000") as info:
        with connect(info["ws_url"] + "/stream?streams=" + ALL, open_timeout=5, max_size=None, close_timeout=0.2) as ws:
            assert recv(ws) == frames[0]
        assert get(info["rest_url"] + "/fapi/v1/depth?symbol=BTCUSDT&limit=5")[0] == 200
    assert info["rc"] == 0 and info["pid"] > 0


@pytest.mark.timeout(60)
def test_measure_unpaced_frames_per_second():
    """How fast the server (its own process) sends unpaced to a picows client: printed, not asserted."""
    from picows import WSListener, WSMsgType, ws_connect

    n = 90_000

    class Count(WSListener):
        def __init__(self) -> None:
            self.n, self.t0 = 0, 0.0
            self.done = asyncio.get_running_loop().create_future()

        def on_ws_frame(self, transport, frame) -> None:
            if frame.msg_type == WSMsgType.TEXT:
                self.n += 1
                if self.n == 1:
                    self.t0 = time.perf_counter()
                elif self.n == n and not self.done.done():
                    self.done.set_result(time.perf_counter())

    async def run(url: str) -> float:
        transport, c = await ws_connect(Count, url + "/stream?streams=" + ALL, max_frame_size=1 << 24)
        t1 = await asyncio.wait_for(c.done, 30)
        transport.disconnect()
        return (n - 1) / (t1 - c.t0)

    with cli() as info:
        rate = asyncio.run(run(info["ws_url"]))
    print(f"\nLocalExchange unpaced: {rate:,.0f} frames/s to a picows client in another process")
    assert rate > 0
