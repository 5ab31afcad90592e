"""LOBSTER reader + L3 book: the top 10 levels equal the orderbook file on every row."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import data_file

from hean.feeds.common import FeedError
from hean.feeds.lobster import read_lobster
from hean.records import ASK, BID, BOOK_STATE, F_HIDDEN, EventKind
from hean.stages.book import l2_depth
from hean.stages.l3book import l3_on_event, make_l3_book
from hean.stages.trades import make_trade_stats

MSG = "lobster-AAPL-2012-06-21-message-10.csv"
BOOK = "lobster-AAPL-2012-06-21-orderbook-10.csv"


def test_top10_equals_orderbook_file_on_every_row():
    events, report = read_lobster(data_file(MSG))
    c = report.counters
    assert report.messages == 999 and report.skipped == 0
    assert c["fixups_inconsistent"] == 0 and c["messages_without_events"] == 0
    assert (c["adds"], c["deletes"], c["executions"], c["hidden"]) == (471, 369, 98, 61)
    rows = np.loadtxt(data_file(BOOK), delimiter=",", dtype=np.int64)
    book = make_l3_book(1)
    stats = make_trade_stats(1)
    out = np.zeros(len(events), BOOK_STATE)
    px = np.zeros(10, np.int64)
    qty = np.zeros(10, np.int64)
    checked = 0
    k = 0
    for e in events:
        if not l3_on_event(book, stats, e, out, k, 0) or not e["flags"] & 1:
            continue
        row = rows[int(e["update_id"]) - 1]
        for side, off in ((ASK, 0), (BID, 2)):
            n = l2_depth(book.l2, 0, side, 10, px, qty)
            want_px = row[off::4] // 100
            want_qty = row[off + 1 :: 4]
            keep = want_qty > 0
            assert px[:n].tolist() == want_px[keep].tolist(), (e["update_id"], side)
            assert qty[:n].tolist() == want_qty[keep].tolist(), (e["update_id"], side)
        checked += 1
    assert checked == 999


def test_event_mapping():
    events, _ = read_lobster(data_file(MSG))
    first = events[events["update_id"] == 1]
    assert first["kind"][0] == EventKind.L3_ADD and first["order_id"][0] == 16113575
    assert (first["price"][0], first["qty"][0], first["side"][0]) == (58533, 18, BID)
    assert first["ts_exch"][0] == 1340285400004241176  # 2012-06-21 09:30:00.004241176 New York
    hidden = events[(events["flags"] & F_HIDDEN) != 0]
    assert len(hidden) == 61 and (hidden["kind"] == EventKind.TRADE).all()


@pytest.mark.parametrize(
    "bad, reason",
    [
        ("34200.1,1,5,10,5853300\n", "expected 6 columns"),
        ("34200.1,1,5,10,5853350,1\n", "not a whole multiple of 0.01"),
        ("34200.1,9,5,10,5853300,1\n", "unknown message type 9"),
        ("34200.1,1,5,10,5853300,0\n", "direction 0"),
        ("x,1,5,10,5853300,1\n", "bad time"),
    ],
)
def test_malformed(tmp_path, bad, reason):
    m = tmp_path / "X_2012-06-21_message_1.csv"
    b = tmp_path / "X_2012-06-21_orderbook_1.csv"
    m.write_text("34200.0,1,1,10,5853300,1\n" + bad)
    b.write_text("5853400,5,5853300,10\n5853400,5,5853300,10\n")
    with pytest.raises(FeedError, match=rf"message_1.csv:2: .*{reason}"):
        read_lobster(m)
    ev, rep = read_lobster(m, lenient=True)
    assert rep.skipped == 1 and rep.messages == 1


def test_missing_orderbook_file(tmp_path):
    m = tmp_path / "X_2012-06-21_message_1.csv"
    m.write_text("34200.0,1,1,10,5853300,1\n")
    with pytest.raises(FeedError, match="orderbook file .* not found"):
        read_lobster(m)
