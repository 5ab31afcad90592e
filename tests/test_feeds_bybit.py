"""Bybit reader: the real XRPUSDT recording against a plain dict book, and the snapshot/delta rules."""

from __future__ import annotations

import json
import zipfile
from decimal import Decimal

import numpy as np
import pytest
from conftest import data_file

from hean.feeds.bybit import read_bybit
from hean.feeds.common import FeedError
from hean.records import BOOK_STATE, F_CROSSED, EventKind
from hean.stages.book import book_on_event, make_l2_book
from hean.stages.trades import make_trade_stats
from hean.symbols import SymbolTable

XRP = SymbolTable([{"name": "XRPUSDT", "tick_size": "0.0001", "lot_size": "1", "venue": "bybit"}])


def reference_tops(lines):
    """Top of book after each message, from a dict book over Decimal prices (no HEAN code involved)."""
    bids: dict[Decimal, Decimal] = {}
    asks: dict[Decimal, Decimal] = {}
    tops = []
    for line in lines:
        m = json.loads(line)
        d = m["data"]
        if m["type"] == "snapshot":
            bids.clear()
            asks.clear()
        for book, levels in ((bids, d["b"]), (asks, d["a"])):
            for px, sz in levels:
                if Decimal(sz) == 0:
                    book.pop(Decimal(px), None)
                else:
                    book[Decimal(px)] = Decimal(sz)
        bb = max(bids)
        ba = min(asks)
        tops.append((d["u"], bb, bids[bb], ba, asks[ba]))
    return tops


def test_recording_top_of_book_matches_dict_book():
    path = data_file("bybit-xrpusdt-ob500.data.zip")
    with zipfile.ZipFile(path) as z:
        lines = z.read(z.namelist()[0]).decode().splitlines()
    expected = reference_tops(lines)
    events, report = read_bybit(path, XRP)
    assert report.counters["snapshots"] == 1 and report.counters["deltas_applied"] == 49
    assert report.counters["gaps"] == 0 and report.skipped == 0
    book = make_l2_book(1)
    stats = make_trade_stats(1)
    out = np.zeros(len(events), BOOK_STATE)
    k = 0
    for e in events:
        k += book_on_event(book, stats, e, out, k, 0)
    states = out[:k]
    assert k == len(lines) == 50
    assert not (states["flags"] & F_CROSSED).any()
    sym = XRP["XRPUSDT"]
    got = [
        (
            int(s["update_id"]),
            Decimal(sym.ticks_to_str(s["bid_px"])),
            Decimal(sym.lots_to_str(s["bid_qty"])),
            Decimal(sym.ticks_to_str(s["ask_px"])),
            Decimal(sym.lots_to_str(s["ask_qty"])),
        )
        for s in states
    ]
    assert got == expected


def write(tmp_path, msgs):
    p = tmp_path / "bybit.jsonl"
    p.write_text("\n".join(m if isinstance(m, str) else json.dumps(m) for m in msgs) + "\n")
    return p


def ob(kind, u, b=(), a=(), ts=1):
    return {"topic": "orderbook.50.XRPUSDT", "type": kind, "ts": ts, "data": {"s": "XRPUSDT", "b": list(b),
            "a": list(a), "u": u, "seq": u}}  # fmt: skip


def groups(events):
    last = events[(events["flags"] & 1) != 0]
    return [(EventKind(k).name, int(u)) for k, u in zip(last["kind"], last["update_id"], strict=True)]


def test_snapshot_delta_gap_and_restart(tmp_path):
    msgs = [
        ob("delta", 4, b=[["1.0", "1"]]),  # before any snapshot: counted, dropped
        ob("snapshot", 5, b=[["1.0", "2"]], a=[["1.1", "3"]]),
        ob("delta", 6, b=[["1.0", "0"], ["0.9", "1"]]),
        ob("delta", 8, a=[["1.1", "4"]]),  # gap: out of sync
        ob("delta", 9, a=[["1.1", "5"]]),  # dropped until a snapshot
        ob("delta", 1, b=[["2.0", "1"]], a=[["2.1", "1"]]),  # u == 1: a restart snapshot
        ob("delta", 2, a=[["2.1", "0"], ["2.2", "7"]]),
    ]
    ev, rep = read_bybit(write(tmp_path, msgs), XRP)
    assert groups(ev) == [("LEVEL_SET", 5), ("LEVEL_SET", 6), ("OUT_OF_SYNC", 8), ("LEVEL_SET", 1), ("LEVEL_SET", 2)]
    c = rep.counters
    assert (c["deltas_before_snapshot"], c["deltas_unsynced"], c["gaps"], c["snapshots"]) == (1, 2, 1, 2)
    assert ev["kind"].tolist().count(EventKind.CLEAR) == 2


def test_trades(tmp_path):
    msgs = [
        {
            "topic": "publicTrade.XRPUSDT",
            "type": "snapshot",
            "ts": 9,
            "data": [
                {"T": 7, "s": "XRPUSDT", "S": "Sell", "v": "12", "p": "1.9531", "i": "abc-uuid"},
                {"T": 8, "s": "XRPUSDT", "S": "Buy", "v": "3", "p": "1.9532", "i": "42"},
            ],
        },  # fmt: skip
    ]
    ev, rep = read_bybit(write(tmp_path, msgs), XRP)
    assert ev["kind"].tolist() == [EventKind.TRADE] * 2
    assert ev["side"].tolist() == [-1, 1] and ev["price"].tolist() == [19531, 19532]
    assert ev["qty"].tolist() == [12, 3] and ev["order_id"].tolist() == [0, 42]
    assert ev["ts_exch"].tolist() == [7_000_000, 8_000_000] and rep.counters["trades"] == 2


@pytest.mark.parametrize(
    "line, reason",
    [
        ("{not json", "bad message"),
        ('{"topic": "tickers.XRPUSDT", "data": {}}', "unsupported topic"),
        ('{"topic":"orderbook.1.XRPUSDT","type":"delta","data":{"s":"XRPUSDT","b":[],"a":[]}}', "without type"),
        (
            '{"topic":"orderbook.1.BTCUSDT","type":"delta","data":{"s":"BTCUSDT","b":[],"a":[],"u":3}}',
            "unknown symbol",
        ),  # fmt: skip
        (
            '{"topic":"orderbook.1.XRPUSDT","type":"delta","data":{"s":"XRPUSDT","b":[["1.00001","1"]],"a":[],"u":3}}',
            "not a whole number",
        ),  # fmt: skip
        ('{"topic":"publicTrade.XRPUSDT","data":[{"s":"XRPUSDT","S":"Hold","v":"1","p":"1"}]}', "Buy/Sell"),
    ],
)
def test_malformed(tmp_path, line, reason):
    p = write(tmp_path, [ob("snapshot", 1, b=[["1.0", "1"]]), line])
    with pytest.raises(FeedError, match=rf"bybit.jsonl:2: .*{reason}"):
        read_bybit(p, XRP)
    ev, rep = read_bybit(p, XRP, lenient=True)
    assert rep.skipped == 1 and rep.reasons[0].startswith("line 2")
