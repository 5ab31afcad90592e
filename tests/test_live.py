"""Live feeds (hean.live) without sockets: the decoder is the replay readers' own, and the recorder's files
replay on their own. The socket-level tests are in tests/test_live_feed.py."""

from __future__ import annotations

import gzip
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

from hean.feeds.binance import read_binance
from hean.feeds.bybit import read_bybit
from hean.live.decode import LiveDecoder
from hean.live.record import Recorder, follow_table
from hean.live.venues import VENUES, venue_spec
from hean.records import F_LAST_IN_GROUP, EventKind

DATA = Path(__file__).parent / "data"
BINANCE = DATA / "binance-usdm-btcusdt-20240808.gz"
BYBIT = DATA / "bybit-xrpusdt-ob500.data.zip"
COLUMNS = [c for c in read_binance(BINANCE)[0].dtype.names if c != "seq"]  # seq is per call


def _binance_lines() -> list[bytes]:
    return gzip.open(BINANCE).read().splitlines(keepends=True)


def _bybit_lines() -> list[bytes]:
    with zipfile.ZipFile(BYBIT) as z:
        text = z.read(z.namelist()[0])
    # as a live client writes them: each line prefixed by its receive time
    return [b"%d %s\n" % (1_733_011_200_000_000_000 + i, ln) for i, ln in enumerate(text.splitlines()) if ln]


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return len(a) == len(b) and all((a[c] == b[c]).all() for c in COLUMNS)


@pytest.mark.parametrize("chunk", [1, 7, 5000])
def test_binance_lines_decoded_in_chunks_are_the_replay(chunk: int, tmp_path: Path) -> None:
    """However the received lines are cut into chunks, the events are a replay's of the same capture: the
    diffs before the snapshot wait for it across chunks, exactly as the reader buffers them."""
    lines = _binance_lines()[: 3000 if chunk == 1 else None]
    path = tmp_path / "capture.txt"
    path.write_bytes(b"".join(lines))
    whole, report = read_binance(path)
    dec = LiveDecoder(venue_spec("binance-usdm"), report.symbols)
    got = np.concatenate([dec.decode("BTCUSDT", b"".join(lines[i : i + chunk])) for i in range(0, len(lines), chunk)])
    assert _same(whole, got)
    assert dec.counters["snapshots"] == 1
    assert dec.counters["gaps"] == 0 and dec.counters["malformed"] == 0
    assert dec.counters["stale_drops"] == report.counters["diffs_before_snapshot"] == 4
    assert dec.synced("BTCUSDT")


def test_bybit_lines_decoded_in_chunks_are_the_replay(tmp_path: Path) -> None:
    lines = _bybit_lines()
    path = tmp_path / "bybit.txt"
    path.write_bytes(b"".join(lines))
    whole, report = read_bybit(path)
    dec = LiveDecoder(venue_spec("bybit-linear"), report.symbols)
    got = np.concatenate([dec.decode("XRPUSDT", b"".join(lines[i : i + 3])) for i in range(0, len(lines), 3)])
    assert _same(whole, got)
    assert dec.synced("XRPUSDT") and dec.counters["snapshots"] == 1


@pytest.mark.parametrize("venue", ["binance-usdm", "bybit-linear"])
def test_a_lost_stream_is_stale_until_the_next_snapshot(venue: str, tmp_path: Path) -> None:
    """lose(): an OUT_OF_SYNC for the symbol, and no book event from its diffs until a snapshot applies."""
    if venue == "binance-usdm":
        lines = _binance_lines()
        table = read_binance(BINANCE)[1].symbols
        snap = next(i for i, ln in enumerate(lines) if b"lastUpdateId" in ln)
        symbol = "BTCUSDT"
    else:
        lines = _bybit_lines()
        path = tmp_path / "b.txt"
        path.write_bytes(b"".join(lines))
        table = read_bybit(path)[1].symbols
        snap = 0
        symbol = "XRPUSDT"
    dec = LiveDecoder(venue_spec(venue), table)
    dec.decode(symbol, b"".join(lines[: snap + 40]))
    assert dec.synced(symbol)
    marker = dec.lose(symbol, 123)
    assert marker["kind"].tolist() == [EventKind.OUT_OF_SYNC] and marker["ts_origin"][0] == 123
    assert not dec.synced(symbol)
    after = dec.decode(symbol, b"".join(lines[snap + 40 : snap + 60]))
    book = np.isin(after["kind"], [EventKind.LEVEL_SET, EventKind.CLEAR])
    assert not book.any(), "diffs of a lost stream must not reach the book"
    assert dec.broken(symbol)
    dec.decode(symbol, lines[snap])  # a snapshot again: no longer broken (its first diff is awaited)
    assert not dec.broken(symbol)


def test_malformed_lines_are_counted_with_their_reason() -> None:
    table = read_binance(BINANCE)[1].symbols
    dec = LiveDecoder(venue_spec("binance-usdm"), table)
    dec.decode("BTCUSDT", b'1 {"stream":"btcusdt@depth@0ms","data":{"e":"depthUp\n')
    assert dec.counters["malformed"] == 1
    assert dec.reasons and dec.reasons[0].startswith("BTCUSDT: line 1")


def test_venue_table() -> None:
    assert set(VENUES) == {"binance-usdm", "binance-spot", "bybit-linear", "bybit-spot"}
    b = venue_spec("binance-usdm")
    assert b.url("ws://h:1", ["BTCUSDT", "ETHUSDT"]) == (
        "ws://h:1/stream?streams=btcusdt@depth@0ms/btcusdt@trade/btcusdt@bookTicker/"
        "ethusdt@depth@0ms/ethusdt@trade/ethusdt@bookTicker"
    )
    assert b.depth_url("http://h:2/", "btcusdt", 1000) == "http://h:2/fapi/v1/depth?symbol=BTCUSDT&limit=1000"
    y = venue_spec("bybit-linear")
    assert y.url("ws://h:1", ["XRPUSDT"]) == "ws://h:1/v5/public/linear"
    assert y.subscribe(["XRPUSDT"]) == (
        b'{"op":"subscribe","args":["orderbook.500.XRPUSDT","publicTrade.XRPUSDT","orderbook.1.XRPUSDT"],'
        b'"req_id":"hean"}'
    )
    with pytest.raises(ValueError, match="unknown live venue 'kraken': one of binance-usdm"):
        venue_spec("kraken")


def test_recorder_rotates_hourly_and_asks_each_new_file_for_a_snapshot(tmp_path: Path) -> None:
    """A new UTC hour: the symbol's file is finished, the next one opened, and the client is asked for a
    fresh snapshot for it (so it replays on its own: tests/test_live_feed.py replays such files)."""
    lines = _binance_lines()
    snap = next(i for i, ln in enumerate(lines) if b"lastUpdateId" in ln)
    now = [1_732_996_800.0]  # 2024-11-30T20:00:00Z
    asked: list[str] = []
    rec = Recorder(tmp_path, "binance-usdm", resnapshot=asked.append, clock=lambda: now[0], member_s=0.0)
    cut = 20_000
    for i in range(0, cut, 100):
        rec.on_lines("BTCUSDT", b"".join(lines[i : i + 100]))
    assert asked == []  # the first file has the start's snapshot (line 55 here)
    now[0] += 3600
    rec.on_lines("BTCUSDT", b"".join(lines[cut : cut + 50]))
    assert asked == ["BTCUSDT"]
    rec.on_lines("BTCUSDT", lines[snap])  # the client's answer comes after those diffs
    rec.close()
    first, second = rec.paths()
    assert (first.name, second.name) == ("BTCUSDT-20241130T20.gz", "BTCUSDT-20241130T21.gz")
    assert first.parent == tmp_path / "binance-usdm" / "BTCUSDT"
    a, ra = read_binance(first)
    assert ra.lines == cut and ra.counters["snapshots"] == 1 and ra.counters["diffs_applied"] > 1000
    assert gzip.open(second).read() == b"".join(lines[cut : cut + 50]) + lines[snap]
    assert rec.lines == cut + 51


def test_recorder_files_are_gzip_members_complete_on_disk(tmp_path: Path) -> None:
    """Each member is finished as it ends: what was written before the last member's end is readable while
    the file is still open (a recorder killed there loses only the unfinished member)."""
    lines = _binance_lines()[:2000]
    rec = Recorder(tmp_path, "binance-usdm", clock=lambda: 0.0, member_s=0.0)
    rec.on_lines("BTCUSDT", b"".join(lines[:1000]))  # member_s = 0: each write ends its member
    path = rec.paths()[0]
    assert gzip.decompress(path.read_bytes()) == b"".join(lines[:1000])
    rec.on_lines("BTCUSDT", b"".join(lines[1000:]))
    rec.close()
    assert gzip.decompress(path.read_bytes()) == b"".join(lines)


def test_follow_table_takes_any_exchange_decimal() -> None:
    t = follow_table(["BTCUSDT"])
    assert t["BTCUSDT"].price_to_ticks("61800.12345678") == 6_180_012_345_678


SYMBOL = '[[symbols]]\nname = "BTCUSDT"\ntick_size = "0.1"\nlot_size = "0.001"\n'


@pytest.mark.parametrize(
    ("feed", "extra", "why"),
    [
        ("", '[live]\nvenue = "kraken"\n', "key 'live.venue': one of binance-usdm, binance-spot, bybit-linear"),
        ("", '[live]\nws_url = "ftp://x"\n', "key 'live.ws_url': a ws://, wss://, http:// or https:// URL"),
        ("", '[live]\nrest_url = "fapi.binance.com"\n', "key 'live.rest_url'"),
        ("", "[live]\nsilence_s = 0\n", "key 'live.silence_s': must be >= 0.1"),
        ("", "[live]\nbackoff_min_s = 2.0\nbackoff_max_s = 1.0\n", "key 'live.backoff_max_s': must be >= 2.0"),
        ("", "[live]\ndepth_limit = 1\n", "key 'live.depth_limit': must be >= 5"),
        ("", "[engine]\nlockstep = true\n", "key 'engine.lockstep': a live feed cannot wait"),
        ("", "[engine]\nring_capacity = 1024\n", "key 'engine.ring_capacity': 1024 slots cannot take a snapshot"),
        ("latency_ns = 5\n", "", "the live feed's messages are received as they are made"),
    ],
)
def test_bad_live_configuration_is_one_clear_error(tmp_path: Path, feed: str, extra: str, why: str) -> None:
    from hean.engine.config import ConfigError, load_config

    path = tmp_path / "c.toml"
    path.write_text(f'[feed]\nsource = "live"\n{feed}{extra}{SYMBOL}')
    with pytest.raises(ConfigError, match=re.escape(why)):
        load_config(path)


def test_a_live_feed_needs_symbols(tmp_path: Path) -> None:
    from hean.engine.config import ConfigError, load_config

    path = tmp_path / "c.toml"
    path.write_text('[feed]\nsource = "live"\n')
    with pytest.raises(ConfigError, match=r"a live feed needs \[\[symbols\]\] entries"):
        load_config(path)
    path.write_text(f'[feed]\nsource = "live"\n[live]\nvenue = "bybit-spot"\nrecord = "{tmp_path}"\n{SYMBOL}')
    cfg = load_config(path)
    assert (cfg.feed.source, cfg.live.venue, cfg.live.silence_s) == ("live", "bybit-spot", 10.0)


def test_bybit_best_bid_ask_beside_a_book_is_the_exchanges_own_top(tmp_path: Path) -> None:
    """``orderbook.1`` beside the symbol's deeper book (Bybit sends only snapshots of it) -> a TICKER per side
    present, as Binance's bookTicker, never applied to the book; alone, ``orderbook.1`` is the book."""
    head = '{"topic": "orderbook.%s.XRPUSDT","type":"snapshot","ts":%d,"data":{"s":"XRPUSDT",'
    book = head % ("500", 5) + '"b":[["1.50","10"]],"a":[["1.53","7"]],"u":9,"seq":1}}'
    top = head % ("1", 6) + '"b":[["1.50","10"]],"a":[["1.52","7"]],"u":40,"seq":2}}'
    one = head % ("1", 7) + '"b":[],"a":[["1.51","3"]],"u":41,"seq":3}}'
    path = tmp_path / "top.txt"
    path.write_text(f"100 {book}\n200 {top}\n300 {one}\n")
    ev, rep = read_bybit(path)
    t = ev[ev["kind"] == EventKind.TICKER]
    assert t[["side", "price", "qty", "update_id", "ts_origin"]].tolist() == [
        (1, 150, 10, 40, 200),
        (-1, 152, 7, 40, 200),
        (-1, 151, 3, 41, 300),
    ]
    assert [bool(f & F_LAST_IN_GROUP) for f in t["flags"]] == [False, True, True]
    assert rep.counters["tickers"] == 2 and rep.counters["snapshots"] == 1
    assert (ev[ev["kind"] == EventKind.LEVEL_SET]["price"] == [150, 153]).all()  # the book is the 500-level one
    path.write_text(f"200 {top}\n300 {one}\n")  # alone: orderbook.1 is the book
    ev, rep = read_bybit(path)
    assert rep.counters["snapshots"] == 2 and rep.counters["tickers"] == 0
    dec = LiveDecoder(venue_spec("bybit-linear"), rep.symbols)  # live: the client takes both topics
    got = dec.decode("XRPUSDT", f"200 {top}\n".encode())
    assert got["kind"].tolist() == [EventKind.TICKER, EventKind.TICKER]
