"""Tardis.dev CSV reader: real samples read back exactly (book snapshots level by level through the L2 book,
trades and quotes field by field), a hand-written incremental_book_L2 file, and the bad-row rules."""

from __future__ import annotations

import csv
import gzip
import io
from decimal import Decimal

import numpy as np
import pytest
from conftest import data_file

from hean.feeds import load_events
from hean.feeds.common import FeedError
from hean.feeds.tardis import read_tardis
from hean.records import ASK, BID, BOOK_STATE, F_LAST_IN_GROUP, F_SNAPSHOT, BookStateKind, EventKind
from hean.stages.book import book_on_event, l2_depth, make_l2_book
from hean.stages.trades import make_trade_stats
from hean.symbols import SymbolTable

SNAPSHOT = "tardis-binance-futures_book_snapshot_{}_BTCUSDT.csv.gz"
TRADES = "tardis-bitmex_trades_XBTUSD.csv.gz"
QUOTES = "tardis-huobi-dm-swap_quotes_BTC-USD.csv.gz"
HEADER_L2 = "exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount\n"
HEADER_TRADES = "exchange,symbol,timestamp,local_timestamp,id,side,price,amount\n"


def csv_rows(name: str) -> list[dict[str, str]]:
    with gzip.open(data_file(name), "rt") as f:
        return list(csv.DictReader(f))


def replay_depth(events: np.ndarray, n_symbols: int, depth: int):
    """Yield ``(event, {BID: [(px, qty)...], ASK: [...]})`` after every group the L2 book (the one ``hean
    book`` replays through) publishes a QUOTE for, levels best first, as ticks/lots."""
    book = make_l2_book(n_symbols)
    stats = make_trade_stats(n_symbols)
    out = np.zeros(len(events), BOOK_STATE)
    px = np.zeros(depth, np.int64)
    qty = np.zeros(depth, np.int64)
    for e in events:
        if book_on_event(book, stats, e, out, 0, 0) and out[0]["kind"] == BookStateKind.QUOTE:
            levels = {}
            for side in (BID, ASK):
                n = l2_depth(book, int(e["symbol"]), side, depth, px, qty)
                levels[side] = list(zip(px[:n].tolist(), qty[:n].tolist(), strict=True))
            yield e, levels


def decimals(sym, levels):
    return [(Decimal(sym.ticks_to_str(p)), Decimal(sym.lots_to_str(q))) for p, q in levels]


@pytest.mark.parametrize("n", [5, 25])
def test_book_snapshot_levels_reproduce_exactly(n):
    rows = csv_rows(SNAPSHOT.format(n))
    events, report = read_tardis(data_file(SNAPSHOT.format(n)))
    assert report.format == f"tardis book_snapshot_{n}" and report.messages == len(rows) == 10
    sym = report.symbols["BTCUSDT"]
    assert (str(sym.tick_size), str(sym.lot_size)) == ("0.01", "0.001")  # inferred: finest steps in the file
    seen = []
    for e, levels in replay_depth(events, 1, n + 5):  # deeper than N: nothing beyond the row may remain
        row = rows[int(e["update_id"]) - 2]  # update_id is the CSV line; line 1 is the header
        assert e["ts_exch"] == int(row["timestamp"]) * 1000 and e["ts_origin"] == int(row["local_timestamp"]) * 1000
        for side, name in ((BID, "bids"), (ASK, "asks")):
            want = [(Decimal(row[f"{name}[{i}].price"]), Decimal(row[f"{name}[{i}].amount"])) for i in range(n)]
            assert decimals(sym, levels[side]) == want, (e["update_id"], name)
        seen.append(int(e["update_id"]))
    assert seen == list(range(2, 12))  # one book state per row
    first = events[events["update_id"] == 2]
    assert first["kind"][0] == EventKind.CLEAR and (first["flags"] & F_SNAPSHOT).all()
    later = events[events["update_id"] > 2]
    assert len(later) < 9 * 2 * n and not (later["flags"] & F_SNAPSHOT).any()  # only what changed


def l2_file(tmp_path, body: str, name: str = "l2.csv"):
    p = tmp_path / name
    p.write_text(HEADER_L2 + body)
    return p


# Tardis's documented incremental_book_L2 layout, written by hand: a snapshot run, updates in two messages
# (a level changed, a level added, a level deleted with amount 0), a second snapshot run that replaces the
# whole book, and an update after it.
INCREMENTAL = """\
bitmex,XBTUSD,1000,1100,true,ask,101.5,10
bitmex,XBTUSD,1000,1100,true,ask,102,20
bitmex,XBTUSD,1000,1100,true,bid,100.5,30
bitmex,XBTUSD,1000,1100,true,bid,100,40
bitmex,XBTUSD,2000,2100,false,bid,100.5,35
bitmex,XBTUSD,2000,2100,false,ask,101,5
bitmex,XBTUSD,3000,3100,false,ask,102,0
bitmex,XBTUSD,3000,3100,false,bid,99.5,1.5
bitmex,XBTUSD,4000,4100,true,ask,105,7
bitmex,XBTUSD,4000,4100,true,bid,104,8
bitmex,XBTUSD,5000,5100,false,bid,104.5,2
"""
EXPECTED = [  # (last line of the group, bids, asks) as decimals, best first
    (5, [("100.5", "30"), ("100", "40")], [("101.5", "10"), ("102", "20")]),
    (7, [("100.5", "35"), ("100", "40")], [("101", "5"), ("101.5", "10"), ("102", "20")]),
    (9, [("100.5", "35"), ("100", "40"), ("99.5", "1.5")], [("101", "5"), ("101.5", "10")]),
    (11, [("104", "8")], [("105", "7")]),
    (12, [("104.5", "2"), ("104", "8")], [("105", "7")]),
]


def test_incremental_book_l2_by_hand(tmp_path):
    events, report = read_tardis(l2_file(tmp_path, INCREMENTAL))
    assert report.format == "tardis incremental_book_L2" and report.messages == 11 and report.skipped == 0
    assert report.counters["snapshots"] == 2 and report.counters["updates_before_snapshot"] == 0
    sym = report.symbols["XBTUSD"]
    assert (str(sym.tick_size), str(sym.lot_size)) == ("0.1", "0.1")  # the finest decimal steps of the file
    got = [
        (int(e["update_id"]), decimals(sym, lv[BID]), decimals(sym, lv[ASK])) for e, lv in replay_depth(events, 1, 10)
    ]
    want = [(line, [(Decimal(p), Decimal(q)) for p, q in b], [(Decimal(p), Decimal(q)) for p, q in a])
            for line, b, a in EXPECTED]  # fmt: skip
    assert got == want
    clears = events[events["kind"] == EventKind.CLEAR]
    assert clears["update_id"].tolist() == [2, 10] and (clears["flags"] & F_SNAPSHOT).all()
    snap = (events["kind"] == EventKind.LEVEL_SET) & (events["update_id"] >= 10) & (events["update_id"] <= 11)
    assert (events["flags"][snap] & F_SNAPSHOT).all()
    assert events["ts_exch"][-1] == 5_000_000 and events["ts_origin"][-1] == 5_100_000


def test_incremental_updates_before_a_snapshot_and_two_symbols(tmp_path):
    body = (
        "x,A,1,1,false,bid,10,1\n"  # A: updates before any snapshot are applied, and counted
        "x,B,1,1,true,bid,20,1\n"
        "x,A,2,2,true,ask,11,2\n"
        "x,B,2,2,true,ask,21,2\n"  # B's run goes on: no second CLEAR for B
        "x,A,3,3,false,bid,10,0\n"
    )
    events, report = read_tardis(l2_file(tmp_path, body))
    assert report.symbols.names == ["A", "B"]
    assert report.counters == {"rows": 5, "snapshots": 2, "updates_before_snapshot": 1}
    clears = events[events["kind"] == EventKind.CLEAR]
    assert clears["symbol"].tolist() == [1, 0]
    tops = {int(e["symbol"]): (lv[BID], lv[ASK]) for e, lv in replay_depth(events, 2, 5)}
    assert tops == {0: ([], [(11, 2)]), 1: ([(20, 1)], [(21, 2)])}


def test_trades_read_back_exactly():
    rows = csv_rows(TRADES)
    events, report = load_events(data_file(TRADES), "tardis")
    sym = report.symbols["XBTUSD"]
    assert report.format == "tardis trades" and len(events) == len(rows) == 10
    assert (events["kind"] == EventKind.TRADE).all() and (events["flags"] == F_LAST_IN_GROUP).all()
    got = [(sym.ticks_to_str(e["price"]), sym.lots_to_str(e["qty"]), int(e["side"]), int(e["ts_exch"]),
            int(e["ts_origin"]), int(e["order_id"])) for e in events]  # fmt: skip
    want = [
        (
            r["price"],
            r["amount"],
            {"buy": 1, "sell": -1}[r["side"]],
            int(r["timestamp"]) * 1000,
            int(r["local_timestamp"]) * 1000,
            0,
        )
        for r in rows
    ]  # fmt: skip (ids are UUIDs: order_id 0)
    assert [(Decimal(a), Decimal(b), *c) for a, b, *c in got] == [(Decimal(a), Decimal(b), *c) for a, b, *c in want]


def test_trade_ids_and_unknown_side(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text(HEADER_TRADES + "x,S,1,2,123,unknown,1.25,3\nx,S,1,2,,buy,1.5,1\n")
    events, _ = read_tardis(p)
    assert events["order_id"].tolist() == [123, 0] and events["side"].tolist() == [0, 1]


def test_quotes_read_back_exactly():
    rows = csv_rows(QUOTES)
    events, report = load_events(data_file(QUOTES), "tardis")
    sym = report.symbols["BTC-USD"]
    got = [(int(e["update_id"]), decimals(sym, lv[BID] + lv[ASK])) for e, lv in replay_depth(events, 1, 3)]
    want = [(i + 2, [(Decimal(r[f"{s}_price"]), Decimal(r[f"{s}_amount"])) for s in ("bid", "ask")])
            for i, r in enumerate(rows)]  # fmt: skip
    assert got == want


def test_an_empty_quote_side_has_no_level(tmp_path):
    p = tmp_path / "q.csv"
    p.write_text("exchange,symbol,timestamp,local_timestamp,ask_amount,ask_price,bid_price,bid_amount\n"
                 "x,S,1,1,5,10.5,10,3\nx,S,2,2,,,10,4\n")  # fmt: skip
    events, _ = read_tardis(p)
    assert [(lv[BID], lv[ASK]) for _, lv in replay_depth(events, 1, 3)] == [
        ([(100, 3)], [(105, 5)]),
        ([(100, 4)], []),
    ]


GOOD = "bitmex,XBTUSD,1000,1100,true,bid,100.5,30\n"


@pytest.mark.parametrize(
    "bad, reason",
    [
        ("bitmex,XBTUSD,2000,2100,false,bid,100.5x,1\n", "price '100.5x' is not a plain decimal number"),
        ("bitmex,XBTUSD,2000,2100,false,bid,100.25,1\n", "value 100.25 is not a whole number of ticks/lots of XBTUSD"),
        ("bitmex,XBTUSD,2000,2100,false,bid,100.5,1.25\n", "value 1.25 is not a whole number of ticks/lots"),
        ("bitmex,XBTUSD,2000,2100,false,buy,100.5,1\n", "side 'buy' is not bid/ask"),
        ("bitmex,XBTUSD,2000,2100,maybe,bid,100.5,1\n", "is_snapshot 'maybe' is not true/false"),
        ("bitmex,XBTUSD,2000,2100,false,bid,100.5\n", "expected 8 columns, got 7"),
        ("bitmex,XBTUSD,2000,2100,false,bid,,1\n", "price is empty"),
        ("bitmex,XBTUSD,20.5,2100,false,bid,100.5,1\n", "timestamp '20.5' is not whole µs"),
        ("bitmex,ETHUSD,2000,2100,false,bid,100.5,1\n", "unknown symbol 'ETHUSD'"),
        ("bitmex,XBTUSD,2000,2100,false,bid,0,1\n", "value 0 is not a price"),
        ("bitmex,XBTUSD,2000,2100,false,bid,100.5,-1\n", "value -1 is a negative quantity"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path, bad, reason):
    table = SymbolTable([{"name": "XBTUSD", "tick_size": "0.5", "lot_size": "1"}])
    p = l2_file(tmp_path, GOOD + bad + GOOD.replace("true", "false"), "bad.csv")
    with pytest.raises(FeedError, match=rf"bad\.csv:3: .*{reason}"):
        read_tardis(p, table)
    events, report = read_tardis(p, table, lenient=True)
    assert report.skipped == 1 and report.messages == 2 and report.reasons[0].startswith("line 3: ")
    assert events["update_id"].tolist() == [2, 2, 4]  # the CLEAR and level of line 2, then line 4


def test_strict_mode_names_the_first_bad_line_of_the_file(tmp_path):
    # line 3 is off the tick grid (found by a later pass), line 4 has a bad number (found earlier)
    p = l2_file(tmp_path, GOOD + GOOD.replace("100.5", "100.3") + GOOD.replace("100.5", "x"))
    with pytest.raises(FeedError, match=r"l2\.csv:3: "):
        read_tardis(p, SymbolTable([{"name": "XBTUSD", "tick_size": "0.5", "lot_size": "1"}]))


def test_lenient_share_through_load_events(tmp_path):
    p = l2_file(tmp_path, GOOD + "bitmex,XBTUSD,2000,2100,false,bid,1e5,1\n" + GOOD)
    with pytest.raises(FeedError, match="1 of 3 lines skipped"):
        load_events(p, "tardis", lenient=True)  # 1 % by default
    events, report = load_events(p, "tardis", lenient=0.5)
    assert report.skipped == 1 and events["update_id"].tolist() == [2, 2, 4]  # lines 2 and 4: one snapshot run


@pytest.mark.parametrize(
    "row, reason",
    [
        ("x,S,1,1,5,10.5,10,\n", "bid_price and bid_amount must both be set or both be empty"),
        ("x,S,1,1,5,10.5,10,3,9\n", "expected 8 columns, got 9"),
    ],
)
def test_malformed_quotes(tmp_path, row, reason):
    p = tmp_path / "q.csv"
    p.write_text("exchange,symbol,timestamp,local_timestamp,ask_amount,ask_price,bid_price,bid_amount\n" + row)
    with pytest.raises(FeedError, match=rf"q\.csv:2: {reason}"):
        read_tardis(p)


def test_snapshot_levels_out_of_order(tmp_path):
    text = gzip.decompress(data_file(SNAPSHOT.format(5)).read_bytes()).decode().splitlines()
    cells = text[2].split(",")
    cells[6], cells[10] = cells[10], cells[6]  # bids[0].price <-> bids[1].price
    p = tmp_path / "s.csv"
    p.write_text("\n".join([text[0], text[1], ",".join(cells), *text[3:]]) + "\n")
    with pytest.raises(FeedError, match=r"s\.csv:3: bid levels are not best first"):
        read_tardis(p)
    _, report = read_tardis(p, lenient=True)
    assert report.skipped == 1 and report.messages == 9


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "empty file"),
        ("exchange,symbol,timestamp,local_timestamp,open,high\nx,S,1,1,2,3\n", r":1: not a Tardis CSV header"),
        ("symbol,timestamp,local_timestamp,price,price,side,amount,id\n", r":1: the header names a column twice"),
    ],
)
def test_bad_headers(tmp_path, text, match):
    p = tmp_path / "h.csv"
    p.write_text(text)
    with pytest.raises(FeedError, match=match):
        read_tardis(p)


def test_given_table_wins_and_columns_go_by_name(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("symbol,local_timestamp,timestamp,price,amount,side,id,exchange\nS,9,8,1.5,2,sell,7,x\n")
    table = SymbolTable([{"name": "S", "tick_size": "0.25", "lot_size": "0.5"}])
    events, report = read_tardis(p, table)
    assert report.symbols is table
    assert events[["price", "qty", "side", "ts_exch", "ts_origin", "order_id"]].tolist() == [(6, 4, -1, 8000, 9000, 7)]


def test_gzip_and_plain_give_the_same_events(tmp_path):
    p = tmp_path / "plain.csv"
    p.write_bytes(gzip.decompress(data_file(TRADES).read_bytes()))
    a, _ = read_tardis(p)
    b, _ = read_tardis(data_file(TRADES))
    assert a.tobytes() == b.tobytes()


def test_book_cli_writes_one_row_per_snapshot(tmp_path):
    from hean.cli import main

    out = tmp_path / "top.csv"
    assert main(["book", str(data_file(SNAPSHOT.format(5))), "--format", "tardis", "--top-csv", str(out)]) == 0
    top = list(csv.DictReader(io.StringIO(out.read_text())))
    rows = csv_rows(SNAPSHOT.format(5))
    assert [(t["bid_px"], t["ask_qty"]) for t in top] == [(r["bids[0].price"], r["asks[0].amount"]) for r in rows]


def test_rows_converted_in_chunks_give_the_same_events(monkeypatch):
    import hean.feeds.topn as topn

    whole, _ = read_tardis(data_file(SNAPSHOT.format(5)))
    monkeypatch.setattr(topn, "_CHUNK_EVENTS", 1)  # one row per call: the book state crosses every boundary
    chunked, _ = read_tardis(data_file(SNAPSHOT.format(5)))
    assert chunked.tobytes() == whole.tobytes()
