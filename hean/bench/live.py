"""``hean bench live``: the live feed measured against the local exchange (hean.live.exchange).

Four parts, each side by side with its peer or baseline in one run:

1. **Receive cost per frame**: picows (HEAN's client library) and websockets, each receiving the same
   frames of the recording from a server process that writes them prebuilt with one ``sendall`` (so the
   client's cost is measured, not the server's). Frames/s, and CPU us/frame in the client.
2. **Decode cost per message**: the live decoder on chunks of 1 and 16 lines, next to the replay reader's
   cost per line on the whole capture. It is the same parser and sync machine, so the difference is the
   cost per call.
3. **Receive-to-book latency**: ``hean run`` on a live feed at fixed message rates. The book stage's
   ``age.events-book`` histogram counts from the socket read, because the live events carry their receive
   time on CLOCK_MONOTONIC. The run's own summary gives p50/p99, the rate reached and every live fault counter.
4. **Recording** (``--record-seconds``): ``hean record`` at a fixed rate. Its resident memory is sampled every
   10 s, and the frames received are compared with the lines on disk.

The server is a process of its own (``python -m hean.live.exchange``), so it does not share a GIL with
what is measured. On a 2-CPU machine it shares the CPUs with the engine, so the figures are a floor of what
one host gives, not of the code.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hean.commands import HeanParser, emit_json, text_out

RECORDING = Path(__file__).resolve().parents[2] / "tests" / "data" / "binance-usdm-btcusdt-20240808.gz"


def _parse(argv: list[str]) -> argparse.Namespace:
    p = HeanParser(prog="hean bench live", description=__doc__.split("\n\n")[0])
    p.add_argument("--recording", default=str(RECORDING), help="a Binance USD-M capture to serve (default: the repo's)")
    p.add_argument("--rates", default="10000,100000", help="messages/s of the latency runs (comma-separated)")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds of each latency run")
    p.add_argument("--frames", type=int, default=90_000, help="frames each receive-cost client takes")
    p.add_argument("--record-seconds", type=float, default=0.0, help="run the recording part for this long")
    p.add_argument("--record-rate", type=float, default=20_000.0, help="messages/s of the recording part")
    p.add_argument("--skip", default="", help="parts to leave out: receive,decode,latency (comma-separated)")
    p.add_argument("--json", metavar="FILE", help="write the figures as JSON ('-': to stdout, the text to stderr)")
    args = p.parse_args(argv)
    bad = set(filter(None, args.skip.split(","))) - {"receive", "decode", "latency"}
    if bad:
        p.error(f"--skip: receive, decode or latency, not {', '.join(sorted(bad))}")
    if args.seconds <= 0 or args.frames <= 0 or args.record_seconds < 0 or args.record_rate <= 0:
        p.error("--seconds, --frames and --record-rate must be > 0, --record-seconds >= 0")
    return args


@contextlib.contextmanager
def server(rate: float, loops: int = 0, recording: Path = RECORDING):
    """The local exchange as a process: yields its URLs; killed by its pid and reaped at the end."""
    cmd = [sys.executable, "-m", "hean.live.exchange", "--venue", "binance-usdm", "--recording", str(recording),
           "--rate", str(rate), "--loops", str(loops)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the local exchange did not start: {' '.join(cmd)}")
        yield json.loads(line)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# ---- 1. receive cost ------------------------------------------------------------------------------------
# A server that costs nothing per frame: after the handshake it writes N prebuilt frames with one sendall, so
# what the client spends is its own receive cost, not a share of the server's.
_BLAST_CHILD = r"""
import base64, gzip, hashlib, socket, sys
path, n = sys.argv[1], int(sys.argv[2])
frames = [ln.split(b" ", 1)[1] for ln in gzip.open(path).read().splitlines() if b"lastUpdateId" not in ln][:n]
def head(k):
    if k < 126:
        return bytes([0x81, k])
    if k < 65536:
        return bytes([0x81, 126]) + k.to_bytes(2, "big")
    return bytes([0x81, 127]) + k.to_bytes(8, "big")
blob = b"".join(head(len(f)) + f for f in frames)
srv = socket.create_server(("127.0.0.1", 0))
print(srv.getsockname()[1], len(frames), flush=True)
while True:
    conn, _ = srv.accept()
    req = b""
    while b"\r\n\r\n" not in req:
        req += conn.recv(4096)
    key = next(ln.split(b":", 1)[1].strip() for ln in req.split(b"\r\n") if ln.lower().startswith(b"sec-websocket-key"))
    acc = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Accept: " + acc + b"\r\n\r\n" + blob)
    while conn.recv(65536):
        pass
    conn.close()
"""


@contextlib.contextmanager
def blaster(recording: Path, n: int):
    """The prebuilt-frames server as a process: yields (its ws:// URL, frames it sends)."""
    proc = subprocess.Popen([sys.executable, "-c", _BLAST_CHILD, str(recording), str(n)], stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    try:
        port, count = proc.stdout.readline().split()
        yield f"ws://127.0.0.1:{port}/", int(count)
    finally:
        proc.kill()
        proc.wait()


async def _picows(url: str, n: int) -> tuple[int, float, float]:
    from picows import WSListener, WSMsgType, ws_connect

    done = asyncio.get_running_loop().create_future()
    got = [0, 0.0, 0.0]

    class L(WSListener):
        def on_ws_frame(self, transport, frame) -> None:
            if frame.msg_type == WSMsgType.TEXT:
                frame.get_payload_as_bytes()
                got[0] += 1
                if got[0] == 1:
                    got[1], got[2] = time.perf_counter(), time.process_time()
                if got[0] >= n and not done.done():
                    done.set_result(None)

    transport, _ = await ws_connect(L, url, max_frame_size=1 << 24)
    await asyncio.wait_for(done, 120)
    t, cpu = time.perf_counter() - got[1], time.process_time() - got[2]
    transport.disconnect()
    return got[0], t, cpu


async def _websockets(url: str, n: int) -> tuple[int, float, float]:
    from websockets.asyncio.client import connect

    async with connect(url, max_size=None, max_queue=None, compression=None) as ws:
        await ws.recv(decode=False)
        t0, c0 = time.perf_counter(), time.process_time()
        k = 1
        while k < n:
            await ws.recv(decode=False)
            k += 1
        t, cpu = time.perf_counter() - t0, time.process_time() - c0
    return k, t, cpu


def receive_cost(frames: int, recording: Path = RECORDING) -> list[dict]:
    """Each client library receiving the same ``frames`` prebuilt frames, best of 3 connections."""
    out = []
    with blaster(recording, frames) as (url, n):
        for name, fn in (("picows", _picows), ("websockets", _websockets)):
            best = min((asyncio.run(fn(url, n)) for _ in range(3)), key=lambda r: r[2])
            k, t, cpu = best
            out.append({"client": name, "frames": k, "frames_per_s": k / t, "us_per_frame": 1e6 * t / k,
                        "cpu_us_per_frame": 1e6 * cpu / k})  # fmt: skip
    base = out[0]["cpu_us_per_frame"]
    for r in out:
        r["cpu_vs_picows"] = r["cpu_us_per_frame"] / base
    return out


# ---- 2. decode cost -------------------------------------------------------------------------------------
def decode_cost(recording: Path = RECORDING) -> list[dict]:
    """The replay reader on the whole capture, and the live decoder on chunks of it."""
    from hean.feeds.binance import read_binance
    from hean.live.decode import LiveDecoder
    from hean.live.venues import venue_spec

    lines = gzip.open(recording).read().splitlines(keepends=True)
    plain = Path(tempfile.mkdtemp(prefix="hean-bench-live-")) / "capture.txt"
    plain.write_bytes(b"".join(lines))
    try:
        _, report = read_binance(plain)  # compiles/loads the kernels
        best = min(_timed(lambda: read_binance(plain, report.symbols)) for _ in range(3))
        rows = [
            {"path": "replay reader, whole file", "lines_per_call": len(lines), "ns_per_line": 1e9 * best / len(lines)}
        ]
        for chunk in (1, 16):
            take = lines[: 20_000 if chunk == 1 else None]
            dec = LiveDecoder(venue_spec("binance-usdm"), report.symbols)
            t = _timed(lambda take=take, chunk=chunk, dec=dec: [dec.decode("BTCUSDT", b"".join(take[i : i + chunk]))
                                                                 for i in range(0, len(take), chunk)])  # fmt: skip
            rows.append({"path": f"live decoder, {chunk} line(s) per call", "lines_per_call": chunk,
                         "ns_per_line": 1e9 * t / len(take)})  # fmt: skip
    finally:
        plain.unlink()
        plain.parent.rmdir()
    for r in rows:
        r["vs_replay"] = r["ns_per_line"] / rows[0]["ns_per_line"]
    return rows


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


# ---- 3. receive-to-book latency -------------------------------------------------------------------------
def latency(rate: float, seconds: float, recording: Path = RECORDING) -> dict:
    """``hean run`` on the local exchange's live feed at ``rate`` messages/s for ``seconds``."""
    with server(rate, 0, recording) as urls, tempfile.TemporaryDirectory(prefix="hean-bench-live-") as d:
        cfg = Path(d) / "live.toml"
        cfg.write_text(
            f'[engine]\nduration_s = {seconds}\nring_capacity = 65536\n[feed]\nsource = "live"\n'
            f'[live]\nws_url = "{urls["ws_url"]}"\nrest_url = "{urls["rest_url"]}"\n'
            '[[symbols]]\nname = "BTCUSDT"\ntick_size = "0.1"\nlot_size = "0.001"\n'
        )
        out = Path(d) / "s.json"
        r = subprocess.run([sys.executable, "-m", "hean", "run", "--config", str(cfg), "--json", str(out)],
                           capture_output=True, text=True, timeout=seconds + 900)  # fmt: skip
        if r.returncode != 0:
            raise RuntimeError(f"hean run failed ({r.returncode}): {r.stdout[-2000:]}{r.stderr[-2000:]}")
        s = json.loads(out.read_text())
    age = s["stages"]["book"]["age_ns"].get("events-book", {})
    late = s["stages"]["feed"].get("late_ns", {})
    c = s["live"]["counters"]
    return {
        "rate": rate,
        "messages_per_s": s["messages"] / s["feed_s"] if s["feed_s"] else 0.0,
        "messages": s["messages"],
        "receive_to_book_p50_ns": age.get("p50"),
        "receive_to_book_p99_ns": age.get("p99"),
        "receive_to_feed_p50_ns": late.get("p50"),
        "receive_to_feed_p99_ns": late.get("p99"),
        "gaps": c["live_gaps"],
        "ring_full": c["live_ring_full"],
        "disconnects": c["live_disconnects"],
        "silences": c["live_silences"],
    }


# ---- 4. recording ---------------------------------------------------------------------------------------
_RECORD_CHILD = """
import sys
from hean.live.client import LiveOptions
from hean.live.record import record
import json
st = record("binance-usdm", ["BTCUSDT"], sys.argv[1], LiveOptions(ws_url=sys.argv[2], rest_url=sys.argv[3]),
            duration_s=float(sys.argv[4]))
print(json.dumps(st))
"""


def recording(rate: float, seconds: float, capture: Path = RECORDING) -> dict:
    """``record`` in a child process at ``rate`` for ``seconds``: RSS every 10 s, frames vs lines on disk."""
    import psutil

    with server(rate, 0, capture) as urls, tempfile.TemporaryDirectory(prefix="hean-bench-record-") as d:
        proc = subprocess.Popen([sys.executable, "-c", _RECORD_CHILD, d, urls["ws_url"], urls["rest_url"],
                                 str(seconds)], stdout=subprocess.PIPE, text=True)  # fmt: skip
        ps = psutil.Process(proc.pid)
        rss = []
        t0 = time.monotonic()
        try:
            while proc.poll() is None:
                with contextlib.suppress(psutil.Error):
                    rss.append((round(time.monotonic() - t0), ps.memory_info().rss))
                time.sleep(10)
            st = json.loads(proc.stdout.read())
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        on_disk = sum(len(gzip.open(f).read().splitlines()) for f in st["files"])
        size = sum(os.path.getsize(f) for f in st["files"])
    after_1min = [m for t, m in rss if t >= 60] or [m for _, m in rss]
    return {
        "rate": rate,
        "seconds": st["seconds"],
        "frames": st["frames"],
        "lines_written": st["lines"],
        "lines_on_disk": on_disk,
        "compressed_mb": size / 1e6,
        "rss_mb": [(t, round(m / 1e6, 1)) for t, m in rss],
        "rss_growth_after_1min_mb": (max(after_1min) - min(after_1min)) / 1e6 if after_1min else 0.0,
        "gaps": st["gaps"],
        "disconnects": st["disconnects"],
    }


def main(argv: list[str]) -> int:
    args = _parse(argv)
    skip = set(filter(None, args.skip.split(",")))
    out = text_out(args.json)
    rec = Path(args.recording)
    res: dict = {"command": "hean bench live " + " ".join(argv), "cpus": os.cpu_count()}
    if "receive" not in skip:
        res["receive"] = receive_cost(args.frames, rec)
        for r in res["receive"]:
            rate, us, cpu = r["frames_per_s"], r["us_per_frame"], r["cpu_us_per_frame"]
            print(f"receive  {r['client']:<11} {rate:>10,.0f} frames/s {us:6.2f} us/frame cpu {cpu:6.2f} us/frame "
                  f"({r['cpu_vs_picows']:.2f}x picows)", file=out)  # fmt: skip
    if "decode" not in skip:
        res["decode"] = decode_cost(rec)
        for r in res["decode"]:
            print(
                f"decode   {r['path']:<34} {r['ns_per_line']:>9,.0f} ns/line ({r['vs_replay']:.1f}x replay)", file=out
            )
    if "latency" not in skip:
        res["latency"] = []
        for rate in (float(x) for x in args.rates.split(",") if x):
            r = latency(rate, args.seconds, rec)
            res["latency"].append(r)
            print(f"latency  {rate:>9,.0f}/s asked, {r['messages_per_s']:>9,.0f}/s reached: receive->book p50 "
                  f"{_us(r['receive_to_book_p50_ns'])} p99 {_us(r['receive_to_book_p99_ns'])} (gaps {r['gaps']}, "
                  f"ring full {r['ring_full']}, disconnects {r['disconnects']})", file=out)  # fmt: skip
    if args.record_seconds:
        r = recording(args.record_rate, args.record_seconds, rec)
        res["record"] = r
        print(f"record   {r['rate']:,.0f}/s for {r['seconds']:.0f} s: {r['frames']:,} frames, {r['lines_on_disk']:,} "
              f"lines on disk, RSS growth after 1 min {r['rss_growth_after_1min_mb']:.2f} MB, rss {r['rss_mb']}",
              file=out)  # fmt: skip
    if args.json:
        emit_json(args.json, res)
    return 0


def _us(ns) -> str:
    return "-" if ns is None else f"{ns / 1e3:.1f} us"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
