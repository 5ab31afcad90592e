"""Binance reader: the real USD-M recording against the exchange's own bookTicker, and the sync rules."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import data_file
from numba import njit

from hean.feeds.binance import read_binance
from hean.feeds.common import FeedError
from hean.records import F_LAST_IN_GROUP, F_SNAPSHOT, EventKind
from hean.stages.book import I_UPDATE_ID, l2_apply, l2_best_ask, l2_best_bid, make_l2_book
from hean.symbols import SymbolTable

BTC = SymbolTable([{"name": "BTCUSDT", "tick_size": "0.10", "lot_size": "0.001", "venue": "binance"}])
TICKER = int(EventKind.TICKER)
CLEAR = int(EventKind.CLEAR)
LEVEL_SET = int(EventKind.LEVEL_SET)


@njit(cache=True)
def _check_tickers(book, events, tick_u, tick_bid, tick_ask, result):
    """After every applied diff/snapshot group, compare the top of book with every bookTicker (sorted by
    ``tick_u``) whose update id equals the book's exactly. result: [compared, mismatches, first bad event]."""
    for i in range(events.shape[0]):
        e = events[i]
        if e.kind == TICKER:
            continue
        l2_apply(book, e)
        if (e.kind == LEVEL_SET or e.kind == CLEAR) and (e.flags & F_LAST_IN_GROUP) != 0:
            u = book.info[e.symbol, I_UPDATE_ID]
            j = np.searchsorted(tick_u, u)
            while j < tick_u.shape[0] and tick_u[j] == u:
                bid = l2_best_bid(book, e.symbol)
                ask = l2_best_ask(book, e.symbol)
                result[0] += 1
                if (
                    bid[0] != tick_bid[j, 0]
                    or bid[1] != tick_bid[j, 1]
                    or ask[0] != tick_ask[j, 0]
                    or (ask[1] != tick_ask[j, 1])
                ):
                    result[1] += 1
                    if result[2] < 0:
                        result[2] = i
                j += 1


def test_usdm_recording_matches_exchange_book_ticker():
    events, report = read_binance(data_file("binance-usdm-btcusdt-20240808.gz"), BTC, market="usdm")
    c = report.counters
    assert report.lines == 93_954 and report.skipped == 0
    assert c["gaps"] == 0 and c["diffs_unsynced"] == 0 and c["snapshots"] == 1
    assert c["diffs_applied"] == 6_547
    snapshot_levels = int(np.count_nonzero(events["flags"] & F_SNAPSHOT)) - 1  # minus the CLEAR
    assert c["level_updates"] + snapshot_levels == 445_262
    assert (events["kind"] == EventKind.OUT_OF_SYNC).sum() == 0
    tick = events[events["kind"] == TICKER]
    bids, asks = tick[0::2], tick[1::2]
    assert (bids["side"] == 1).all() and (asks["side"] == -1).all()
    order = np.argsort(bids["update_id"], kind="stable")
    tick_u = bids["update_id"][order]
    tick_bid = np.stack([bids["price"][order], bids["qty"][order]], axis=1)
    tick_ask = np.stack([asks["price"][order], asks["qty"][order]], axis=1)
    # every ticker whose u is the u of an applied group must be checked
    applied = events[(events["kind"] == LEVEL_SET) & ((events["flags"] & F_LAST_IN_GROUP) != 0)]
    expected = int(np.isin(tick_u, applied["update_id"]).sum())
    book = make_l2_book(1)
    result = np.array([0, 0, -1], np.int64)
    _check_tickers(book, events, tick_u, tick_bid, tick_ask, result)
    compared, mismatches, first = result.tolist()
    assert mismatches == 0, f"first mismatch after event {first}: {events[first]}"
    assert compared == expected and compared > 500  # the oracle really was consulted


def test_inferred_table_is_exact():
    events, report = read_binance(data_file("binance-usdm-btcusdt-20240808.gz"))
    sym = report.symbols["BTCUSDT"]
    assert (str(sym.tick_size), str(sym.lot_size)) == ("0.1", "0.001")
    # trailing zeros do not count: the same events as with the configured tick 0.10
    ref, _ = read_binance(data_file("binance-usdm-btcusdt-20240808.gz"), BTC)
    assert np.array_equal(events["price"], ref["price"])
    assert np.array_equal(events["qty"], ref["qty"])


# ---------------------------------------------------------------------------------------------------------
# sync rules on small hand-written captures
# ---------------------------------------------------------------------------------------------------------
def depth(U, u, pu=None, b=(), a=(), E=1):
    d = {"e": "depthUpdate", "E": E, "T": E, "s": "BTCUSDT", "U": U, "u": u, "b": list(b), "a": list(a)}
    if pu is not None:
        d["pu"] = pu
    return {"stream": "btcusdt@depth", "data": d}


def snap(L, bids, asks):
    return {"lastUpdateId": L, "E": 1, "T": 1, "bids": bids, "asks": asks}


def write(tmp_path, msgs, name="cap.txt"):
    p = tmp_path / name
    lines = [m if isinstance(m, str) else f"{1000 + i} {json.dumps(m)}" for i, m in enumerate(msgs)]
    p.write_text("\n".join(lines) + "\n")
    return p


def applied_ids(events):
    last = events[(events["flags"] & F_LAST_IN_GROUP) != 0]
    return [(EventKind(k).name, int(u)) for k, u in zip(last["kind"], last["update_id"], strict=True)]


def test_usdm_buffered_diffs_filtered_against_snapshot(tmp_path):
    msgs = [
        depth(1, 5, 0, b=[["10.0", "1"]]),  # u < L: dropped
        depth(6, 9, 5, b=[["10.0", "2"]]),  # U <= L=8 <= u: first applied
        snap(8, [["10.0", "3"]], [["11.0", "1"]]),
        depth(10, 12, 9, a=[["11.0", "0"], ["11.1", "4"]]),  # pu == previous u
    ]
    events, rep = read_binance(write(tmp_path, msgs), BTC)
    assert applied_ids(events) == [("LEVEL_SET", 8), ("LEVEL_SET", 9), ("LEVEL_SET", 12)]
    assert rep.counters["diffs_before_snapshot"] == 1 and rep.counters["diffs_applied"] == 2
    book = make_l2_book(1)
    for e in events:
        l2_apply(book, e)
    assert l2_best_bid(book, 0) == (100, 2000) and l2_best_ask(book, 0) == (111, 4000)
    # the buffered diff is applied when the snapshot arrives
    assert events["ts_origin"][-4] == 1002


def test_usdm_broken_chain_out_of_sync_then_resync(tmp_path):
    msgs = [
        snap(8, [["10.0", "3"]], [["11.0", "1"]]),
        depth(7, 9, 6, b=[["10.0", "2"]]),
        depth(11, 12, 10, b=[["10.0", "5"]]),  # pu 10 != 9: gap
        depth(13, 14, 12, b=[["10.0", "6"]]),  # buffered, older than the next snapshot
        depth(15, 16, 14, b=[["10.0", "7"]]),  # buffered, first after the next snapshot
        snap(15, [["10.0", "9"]], [["11.0", "1"]]),
        depth(17, 18, 16, b=[["10.0", "8"]]),
    ]
    events, rep = read_binance(write(tmp_path, msgs), BTC)
    assert applied_ids(events) == [
        ("LEVEL_SET", 8),
        ("LEVEL_SET", 9),
        ("OUT_OF_SYNC", 12),
        ("LEVEL_SET", 15),
        ("LEVEL_SET", 16),
        ("LEVEL_SET", 18),
    ]
    assert rep.counters["gaps"] == 1 and rep.counters["diffs_before_snapshot"] == 2


def test_usdm_first_diff_must_straddle_snapshot(tmp_path):
    msgs = [snap(8, [["10.0", "3"]], []), depth(10, 12, 9, b=[["10.0", "2"]])]  # U=10 > L=8: gap
    events, rep = read_binance(write(tmp_path, msgs), BTC)
    assert applied_ids(events) == [("LEVEL_SET", 8), ("OUT_OF_SYNC", 12)]
    assert rep.counters["gaps"] == 1 and rep.counters["diffs_unsynced"] == 1


def test_spot_rules(tmp_path):
    msgs = [
        depth(1, 8, b=[["10.0", "1"]]),  # u <= L: dropped
        depth(9, 10, b=[["10.0", "2"]]),  # U <= L+1 <= u
        snap(8, [["10.0", "3"]], [["11.0", "1"]]),
        depth(11, 12, a=[["11.0", "2"]]),  # U == previous u + 1
        depth(14, 15, a=[["11.0", "3"]]),  # gap
    ]
    events, rep = read_binance(write(tmp_path, msgs), BTC, market="spot")
    assert applied_ids(events) == [("LEVEL_SET", 8), ("LEVEL_SET", 10), ("LEVEL_SET", 12), ("OUT_OF_SYNC", 15)]
    with pytest.raises(FeedError, match=r"cap.txt:1: depthUpdate without pu"):
        read_binance(write(tmp_path, msgs), BTC, market="usdm")


def test_trade_and_ticker_events(tmp_path):
    msgs = [
        {
            "stream": "x@trade",
            "data": {"e": "trade", "E": 5, "T": 4, "s": "BTCUSDT", "t": 77, "p": "10.5", "q": "0.002", "m": True},
        },  # fmt: skip
        {
            "stream": "x@bookTicker",
            "data": {
                "e": "bookTicker",
                "u": 3,
                "s": "BTCUSDT",
                "b": "10.4",
                "B": "1",
                "a": "10.6",
                "A": "2",
                "T": 6,
                "E": 6,
            },
        },  # fmt: skip
    ]
    ev, _ = read_binance(write(tmp_path, msgs), BTC)
    t = ev[0]
    assert (t["kind"], t["side"], t["price"], t["qty"], t["order_id"], t["ts_exch"]) == (
        EventKind.TRADE, -1, 105, 2, 77, 4_000_000)  # fmt: skip
    assert ev["kind"][1:].tolist() == [EventKind.TICKER] * 2
    assert ev["side"][1:].tolist() == [1, -1] and ev["price"][1:].tolist() == [104, 106]
    assert ev["qty"][1:].tolist() == [1000, 2000] and ev["update_id"][1:].tolist() == [3, 3]


@pytest.mark.parametrize(
    "line, reason",
    [
        ("garbage", "expected '<receive time ns> <json>'"),
        ('123 {"stream": "x", "data": {"e": "depthUpdate"', "bad JSON"),
        ('123 {"foo": 1}', "neither a combined-stream message nor a depth snapshot"),
        ('123 {"stream": "x", "data": {"e": "kline", "s": "BTCUSDT"}}', "unsupported event type 'kline'"),
        ('123 {"stream":"x","data":{"e":"trade","s":"ETHUSDT","t":1,"p":"1","q":"1"}}', "unknown symbol 'ETHUSDT'"),
        (
            '123 {"stream":"x","data":{"e":"trade","s":"BTCUSDT","t":1,"p":"1.05","q":"1"}}',
            r"value 1.05 is not a whole number of ticks/lots of BTCUSDT",
        ),  # fmt: skip
        (
            '123 {"stream":"x","data":{"e":"trade","s":"BTCUSDT","t":1,"p":"1e5","q":"1"}}',
            "not a plain decimal string",
        ),  # fmt: skip
        ('123 {"stream":"x","data":{"e":"trade","s":"BTCUSDT","t":1,"p":1.5,"q":"1"}}', "bare JSON value"),
        (
            '123 {"stream":"x","data":{"e":"depthUpdate","s":"BTCUSDT","U":1,"u":2,"pu":0,"b":[["1"]],"a":[]}}',
            "odd number",
        ),  # fmt: skip
        ('123 {"stream":"x","data":{"e":"trade","s":"BTCUSDT","p":"1","q":"1"}}', "trade without p, q or t"),
    ],
)
def test_malformed_line_strict_and_lenient(tmp_path, line, reason):
    good = depth(1, 2, 0, b=[["10.0", "1"]])
    p = write(tmp_path, [good, line, good])
    with pytest.raises(FeedError, match=rf"cap.txt:2: .*{reason}"):
        read_binance(p, BTC)
    events, rep = read_binance(p, BTC, lenient=True)
    assert rep.skipped == 1 and rep.messages == 2 and "line 2" in rep.reasons[0]


def test_fast_path_equals_msgspec_path():
    """The numba scanner and the msgspec decoder give byte-identical events and the same counters."""
    path = data_file("binance-usdm-btcusdt-20240808.gz")
    fast, rf = read_binance(path, BTC)
    ref, rr = read_binance(path, BTC, engine="msgspec")
    assert fast.tobytes() == ref.tobytes() and rf.counters == rr.counters


@pytest.mark.parametrize(
    "line",
    [
        '123 {"stream":"x","data":{"e":"trade","s":"BTCUSDT","t":1,"p":"1.0","q":"1","m":true},}',  # trailing comma
        '123 {"stream":"x","data":{"e":"depthUpdate","s":"BTCUSDT","U":1,"u":2,"pu":0,"b":[["1.0" "1"]],"a":[]}}',
        '123 {"stream":"x","data":{"e":"depthUpdate","s":"BTCUSDT","U":1.5,"u":2,"pu":0,"b":[],"a":[]}}',
        '123 {"stream":"x","data":{"e":"trade","s":"BTCUSDT","t":1,"p":"1.0","q":"1","m":maybe}}',
    ],
)
def test_fast_path_defers_malformed_json_to_msgspec(tmp_path, line):
    """Whatever the scanner does not fully understand goes to the msgspec path, which names the line."""
    good = json.dumps(depth(1, 2, 0, b=[["10.0", "1"]]))
    p = write(tmp_path, [f"100 {good}", line])
    with pytest.raises(FeedError, match=r"cap.txt:2: "):
        read_binance(p, BTC)
    _, rep = read_binance(p, BTC, lenient=True)
    assert rep.skipped == 1
