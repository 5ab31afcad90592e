"""Databento DBN reader: MBO books against a reference book built straight from the records, MBP-1 and trades
read back exactly, definitions, MBP-10, the MBO actions and F_LAST grouping, and bad records."""

from __future__ import annotations

from pathlib import Path

import databento_dbn as db
import numpy as np
import pytest
from conftest import data_file

from hean.feeds import load_events
from hean.feeds.common import FeedError
from hean.feeds.databento import read_dbn, read_definitions
from hean.records import ASK, BID, BOOK_STATE, F_CROSSED, F_LAST_IN_GROUP, F_SNAPSHOT, BookStateKind, EventKind
from hean.stages.book import book_on_event, l2_depth, make_l2_book
from hean.stages.l3book import l3_on_event, make_l3_book
from hean.stages.trades import make_trade_stats
from hean.symbols import SymbolTable

ESH4 = "databento-esh4-glbx-mdp3-20231224.mbo.dbn.zst"
ESM4, ESM4_DEF = "databento-orderbooks-mbo-20240508.dbn.zst", "databento-orderbooks-definition.dbn.zst"
MBP1, TRADES = "databento-futures-mbp1-20240701.dbn.zst", "databento-futures-trades-20240701.dbn.zst"
ES_DEF = "databento-definition-glbx-es-fut.dbn.zst"
F_LAST, F_SNAP = 1 << 7, 1 << 5
UNDEF = 2**63 - 1


def records(path) -> list:
    """The file's records (metadata left out), decoded directly by databento-dbn."""
    dec = db.DBNDecoder(compression=db.Compression.ZSTD)
    dec.write(Path(path).read_bytes())
    return dec.decode()[1:]


def nano_per_tick(report) -> int:
    s = report.symbols.by_id(0)
    return int(s.tick_mant) * 10 ** (9 - int(s.tick_scale))


def reference_tops(recs, nano: int) -> list[tuple[int, int, int, int, int]]:
    """Top of book after every F_LAST record, from a dict of order id -> (side, price, size) that follows
    Databento's documented MBO actions (no HEAN code): (sequence, bid ticks, bid size, ask ticks, ask size)."""
    orders: dict[int, tuple[str, int, int]] = {}
    tops = []
    for r in recs:
        a = str(r.action)
        if a == "R":
            orders.clear()
        elif a in ("A", "M"):
            orders[r.order_id] = (str(r.side), r.price, r.size)
        elif a == "C":
            side, px, size = orders[r.order_id]
            if size > r.size:
                orders[r.order_id] = (side, px, size - r.size)
            else:
                del orders[r.order_id]
        if r.flags & F_LAST:
            levels: dict[str, dict[int, int]] = {"B": {}, "A": {}}
            for side, px, size in orders.values():
                levels[side][px] = levels[side].get(px, 0) + size
            bb = max(levels["B"], default=0)
            ba = min(levels["A"], default=0)
            tops.append((r.sequence, bb // nano, levels["B"].get(bb, 0), ba // nano, levels["A"].get(ba, 0)))
    return tops


@pytest.mark.parametrize("name, instruments", [(ESH4, None), (ESM4, ESM4_DEF)])
def test_mbo_book_after_every_f_last_matches_a_reference_book(name, instruments):
    path = data_file(name)
    events, report = load_events(path, "dbn", instruments=data_file(instruments) if instruments else None)
    recs = records(path)
    want = reference_tops(recs, nano_per_tick(report))
    assert len(want) == sum(1 for r in recs if r.flags & F_LAST) >= 1
    book = make_l3_book(1, max_orders=1 << 15)
    stats = make_trade_stats(1)
    out = np.zeros(1, BOOK_STATE)
    got = []
    for e in events:
        if l3_on_event(book, stats, e, out, 0, 0) and e["flags"] & F_LAST_IN_GROUP:
            s = out[0]
            assert s["kind"] == BookStateKind.QUOTE and not s["flags"] & F_CROSSED, int(e["update_id"])
            got.append((int(e["update_id"]), int(s["bid_px"]), int(s["bid_qty"]), int(s["ask_px"]), int(s["ask_qty"])))
    assert got == want
    assert report.skipped == 0 and report.counters["groups_open_at_end"] == 0
    assert (events["flags"][events["kind"] == EventKind.L3_ADD][:100] & F_SNAPSHOT).all()  # the snapshot's adds


def test_mbo_event_mapping_and_counts():
    events, report = read_dbn(data_file(ESM4), instruments=data_file(ESM4_DEF))
    c = report.counters
    assert (c["adds"], c["cancels"], c["modifies"], c["clears"], c["trades"], c["fills"]) == (13678, 80, 27, 1, 5, 5)
    assert c["cancels_unknown"] == 0 and c["snapshots"] == 1
    recs = records(data_file(ESM4))
    trades = events[events["kind"] == EventKind.TRADE]
    want = [(r.price // 250_000_000, r.size, 1 if str(r.side) == "B" else -1, r.order_id, r.ts_event, r.ts_recv,
             r.sequence) for r in recs if str(r.action) == "T"]  # fmt: skip
    assert trades[["price", "qty", "side", "order_id", "ts_exch", "ts_origin", "update_id"]].tolist() == want
    assert events["kind"][0] == EventKind.CLEAR and events["flags"][0] == F_SNAPSHOT  # the snapshot's R
    assert len(events) == 13678 + 80 + 27 + 1 + 5  # a fill changes nothing: its cancel does


def test_mbp1_reads_back_exactly():
    path = data_file(MBP1)
    events, report = load_events(path, "dbn")
    recs = records(path)
    nano = nano_per_tick(report)
    assert report.counters["ticks_inferred"] == 1 and report.instruments["ESU4"]["source"] == "inferred"
    want = [(r.sequence, r.ts_recv, r.ts_event, r.bid_px_00 // nano, r.bid_sz_00, r.ask_px_00 // nano, r.ask_sz_00)
            for r in recs if r.flags & F_LAST]  # fmt: skip
    book = make_l2_book(1)
    stats = make_trade_stats(1)
    out = np.zeros(1, BOOK_STATE)
    got = []
    for e in events:
        if book_on_event(book, stats, e, out, 0, 0) and out[0]["kind"] == BookStateKind.QUOTE:
            s = out[0]
            got.append((int(s["update_id"]), int(s["ts_origin"]), int(s["ts_exch"]), int(s["bid_px"]),
                        int(s["bid_qty"]), int(s["ask_px"]), int(s["ask_qty"])))  # fmt: skip
            assert l2_depth(book, 0, BID, 5, np.zeros(5, np.int64), np.zeros(5, np.int64)) <= 1  # top 1 only
    assert got == want and len(got) == 2168
    trades = events[events["kind"] == EventKind.TRADE]
    want_t = [(r.price // nano, r.size, {"B": 1, "A": -1, "N": 0}[str(r.side)], r.ts_event, r.ts_recv, r.sequence)
              for r in recs if str(r.action) == "T"]  # fmt: skip
    assert trades[["price", "qty", "side", "ts_exch", "ts_origin", "update_id"]].tolist() == want_t


def test_trades_read_back_exactly():
    path = data_file(TRADES)
    events, report = load_events(path, "dbn")
    nano = nano_per_tick(report)
    want = [(EventKind.TRADE, r.price // nano, r.size, {"B": 1, "A": -1, "N": 0}[str(r.side)], r.ts_event, r.ts_recv,
             r.sequence, F_LAST_IN_GROUP) for r in records(path)]  # fmt: skip
    got = events[["kind", "price", "qty", "side", "ts_exch", "ts_origin", "update_id", "flags"]].tolist()
    assert got == want and len(got) == 120
    assert all(p * nano == r.price for p, r in zip(events["price"].tolist(), records(path), strict=True))  # exact


def test_definitions_give_the_tick_size():
    defs = read_definitions(data_file(ES_DEF))
    assert defs == {95414: {"raw_symbol": "ESM3", "tick": "0.25", "multiplier": "50"}}
    _, without = read_dbn(data_file(ESM4))
    assert str(without.symbols["ESM4"].tick_size) == "0.01" and without.counters["ticks_inferred"] == 1
    events, report = read_dbn(data_file(ESM4), instruments=data_file(ESM4_DEF))
    sym = report.symbols["ESM4"]
    assert str(sym.tick_size) == "0.25" and str(sym.lot_size) == "1"
    assert report.counters["ticks_from_definitions"] == 1
    assert report.instruments["ESM4"] == {"instrument_id": 5602, "tick_size": "0.25", "multiplier": "50",
                                          "source": "definition"}  # fmt: skip
    adds = events[events["kind"] == EventKind.L3_ADD]
    assert sym.ticks_to_str(int(adds["price"][0])) == "5155.50"  # the first add: 5155.5 = 20622 ticks of 0.25


def test_a_given_table_wins(tmp_path):
    table = SymbolTable([{"name": "ESU4", "tick_size": "0.25", "lot_size": "1"}])
    events, report = read_dbn(data_file(TRADES), table)
    assert report.symbols is table and report.instruments["ESU4"]["source"] == "given"
    assert events["price"][0] == 5528_75 // 25
    with pytest.raises(FeedError, match=r"trades-20240701\.dbn\.zst:1: instrument 118 is not in the symbol table"):
        read_dbn(data_file(TRADES), SymbolTable([{"name": "X", "tick_size": "0.25", "lot_size": "1"}]))


# ---------------------------------------------------------------------------------------------------------
# synthetic files: every MBO action, F_LAST grouping, MBP-10, bad records
# ---------------------------------------------------------------------------------------------------------
IID = 5602  # the instrument of ESM4_DEF: tick 0.25
PX = 5000_000_000_000  # 5000.00 in 1e-9


def write_dbn(path: Path, schema, recs: list) -> Path:
    md = db.Metadata(dataset="GLBX.MDP3", start=0, stype_in=db.SType.RAW_SYMBOL, stype_out=db.SType.INSTRUMENT_ID,
                     schema=schema, symbols=["ESM4"])  # fmt: skip
    path.write_bytes(bytes(md) + b"".join(bytes(r) for r in recs))
    return path


def mbo(seq, action, side, px, size, oid, flags=F_LAST, ts=1_000):
    return db.MBOMsg(1, IID, ts, oid, px, size, db.Action(action), db.Side(side), ts + 5, flags=flags, sequence=seq)


def test_mbo_actions_and_f_last(tmp_path):
    q = 250_000_000  # one tick
    recs = [
        mbo(1, "A", "B", PX, 5, 11, 0),  # a venue event of three records: one group
        mbo(2, "A", "B", PX - q, 3, 12, 0),
        mbo(3, "A", "A", PX + q, 4, 13),
        mbo(4, "C", "B", PX, 2, 11),  # partial cancel
        mbo(5, "M", "A", PX + 2 * q, 6, 13),  # modify: price and size
        mbo(6, "M", "B", PX - 2 * q, 1, 99),  # modify of an order never added: an add
        mbo(7, "T", "A", PX, 3, 0, 0),  # trade, fill, then the cancel that takes the filled size
        mbo(8, "F", "B", PX, 3, 11, 0),
        mbo(9, "C", "B", PX, 3, 11),
        mbo(10, "C", "A", PX, 1, 777),  # a cancel of an unknown order: nothing
        mbo(11, "F", "B", PX - q, 1, 12, F_LAST),  # F_LAST on a record that makes no event
        mbo(12, "R", "N", UNDEF, 0, 0),
    ]
    events, report = read_dbn(write_dbn(tmp_path / "a.dbn", db.Schema.MBO, recs), instruments=data_file(ESM4_DEF))
    c = report.counters
    assert (c["cancels_unknown"], c["modifies_unknown_as_add"], c["fills"], c["clears"]) == (1, 1, 2, 1)
    K = EventKind
    got = events[["kind", "side", "price", "qty", "order_id", "update_id", "flags"]].tolist()
    t = PX // q
    assert got == [
        (K.L3_ADD, 1, t, 5, 11, 1, 0),
        (K.L3_ADD, 1, t - 1, 3, 12, 2, 0),
        (K.L3_ADD, -1, t + 1, 4, 13, 3, F_LAST_IN_GROUP),
        (K.L3_CANCEL, 1, t, 2, 11, 4, F_LAST_IN_GROUP),
        (K.L3_MODIFY, -1, t + 2, 6, 13, 5, F_LAST_IN_GROUP),
        (K.L3_ADD, 1, t - 2, 1, 99, 6, F_LAST_IN_GROUP),
        (K.TRADE, -1, t, 3, 0, 7, 0),
        (K.L3_DELETE, 1, t, 3, 11, 9, F_LAST_IN_GROUP),
        (K.CLEAR, 0, 0, 0, 0, 12, F_LAST_IN_GROUP),
    ]
    assert events["ts_exch"][0] == 1_000 and events["ts_origin"][0] == 1_005
    book = make_l3_book(1)
    stats = make_trade_stats(1)
    out = np.zeros(len(events), BOOK_STATE)
    tops = []
    for e in events[:-1]:
        if l3_on_event(book, stats, e, out, 0, 0) and e["flags"] & F_LAST_IN_GROUP:
            tops.append((int(out[0]["bid_px"]), int(out[0]["bid_qty"]), int(out[0]["ask_px"]), int(out[0]["ask_qty"])))
    assert tops == [(t, 5, t + 1, 4), (t, 3, t + 1, 4), (t, 3, t + 2, 6), (t, 3, t + 2, 6), (t - 1, 3, t + 2, 6)]


def test_a_snapshot_without_r_clears_the_book_first(tmp_path):
    recs = [
        mbo(1, "A", "B", PX, 1, 1),
        mbo(2, "A", "B", PX, 2, 2, F_SNAP),
        mbo(3, "A", "A", PX * 2, 2, 3, F_SNAP | F_LAST),
    ]
    events, report = read_dbn(write_dbn(tmp_path / "s.dbn", db.Schema.MBO, recs), instruments=data_file(ESM4_DEF))
    assert events["kind"].tolist() == [EventKind.L3_ADD, EventKind.CLEAR, EventKind.L3_ADD, EventKind.L3_ADD]
    assert events["flags"].tolist() == [F_LAST_IN_GROUP, F_SNAPSHOT, F_SNAPSHOT, F_SNAPSHOT | F_LAST_IN_GROUP]
    assert report.counters["snapshots"] == 1


def mbp10(seq, bids, asks, flags=F_LAST, action="A", price=UNDEF, size=0):
    def level(i):
        b = bids[i] if i < len(bids) else (UNDEF, 0)
        a = asks[i] if i < len(asks) else (UNDEF, 0)
        return db.BidAskPair(bid_px=b[0], bid_sz=b[1], ask_px=a[0], ask_sz=a[1])

    return db.MBP10Msg(1, IID, 1_000 + seq, price, size, db.Action(action), db.Side("B"), 0, 2_000 + seq,
                       flags=flags, sequence=seq, levels=[level(i) for i in range(10)])  # fmt: skip


def test_mbp10_levels_reproduce_exactly(tmp_path):
    q = 250_000_000
    ladder = [(PX - i * q, 10 + i) for i in range(10)]
    asks = [(PX + (i + 1) * q, 20 + i) for i in range(10)]
    recs = [
        mbp10(1, ladder, asks),
        mbp10(2, [(PX, 99), *ladder[1:]], asks),  # best bid size changes
        mbp10(3, [(PX + q, 1), *ladder[:9]], asks, 0),  # a better bid pushes the 10th out (no F_LAST yet)
        mbp10(4, [(PX + q, 1), *ladder[:9]], asks[1:], F_LAST, "T", PX + q, 20),  # a trade takes the best ask
        mbp10(5, [], [], F_LAST, "R"),  # cleared
    ]
    events, report = read_dbn(write_dbn(tmp_path / "m.dbn", db.Schema.MBP_10, recs), instruments=data_file(ESM4_DEF))
    book = make_l2_book(1)
    stats = make_trade_stats(1)
    out = np.zeros(1, BOOK_STATE)
    px, qty = np.zeros(12, np.int64), np.zeros(12, np.int64)
    seen = []
    for e in events:
        if book_on_event(book, stats, e, out, 0, 0) and out[0]["kind"] == BookStateKind.QUOTE:
            r = recs[int(e["update_id"]) - 1]
            for side, name in ((BID, "bid"), (ASK, "ask")):
                n = l2_depth(book, 0, side, 12, px, qty)
                want = [(getattr(lv, f"{name}_px") // q, getattr(lv, f"{name}_sz")) for lv in r.levels
                        if getattr(lv, f"{name}_sz") > 0]  # fmt: skip
                assert list(zip(px[:n].tolist(), qty[:n].tolist(), strict=True)) == want
            seen.append(int(e["update_id"]))
    assert seen == [1, 2, 4, 5]  # record 3 has no F_LAST: its levels are published with record 4's
    trades = events[events["kind"] == EventKind.TRADE]
    assert trades[["price", "qty", "side", "update_id"]].tolist() == [((PX + q) // q, 20, 1, 4)]


@pytest.mark.parametrize(
    "bad, reason",
    [
        (mbo(2, "A", "B", PX + 10_000_000, 1, 2), r"value 5000\.01 is not a whole number of ticks/lots of ESM4"),
        (mbo(2, "A", "N", PX, 1, 2), "an add/modify without side B or A"),
        (mbo(2, "A", "B", UNDEF, 1, 2), "an add/modify/trade without a price"),
        (mbo(2, "A", "B", PX, 0, 2), "an add of size 0"),
        (mbo(2, "A", "B", PX, 1, 1), "order 1 added twice"),
        (mbo(2, "A", "B", -PX, 1, 2), r"value -5000 is not a price"),
    ],
)
def test_bad_records_name_file_and_record(tmp_path, bad, reason):
    recs = [mbo(1, "A", "B", PX, 1, 1), bad, mbo(3, "A", "A", PX * 2, 1, 3)]
    p = write_dbn(tmp_path / "bad.dbn", db.Schema.MBO, recs)
    with pytest.raises(FeedError, match=rf"bad\.dbn:2: {reason}"):
        read_dbn(p, instruments=data_file(ESM4_DEF))
    events, report = read_dbn(p, lenient=True, instruments=data_file(ESM4_DEF))
    assert report.skipped == 1 and report.messages == 2 and events["update_id"].tolist() == [1, 3]


def test_corrupt_and_truncated_files(tmp_path):
    raw = data_file(TRADES).read_bytes()
    cut = tmp_path / "cut.dbn.zst"
    cut.write_bytes(raw[:-10])
    with pytest.raises(FeedError, match=r"cut\.dbn\.zst: corrupt or truncated zstd"):
        read_dbn(cut)
    plain = write_dbn(tmp_path / "p.dbn", db.Schema.MBO, [mbo(1, "A", "B", PX, 1, 1)])
    plain.write_bytes(plain.read_bytes()[:-7])
    with pytest.raises(FeedError, match=r"p\.dbn: truncated DBN"):
        read_dbn(plain)
    junk = tmp_path / "junk.dbn"
    junk.write_bytes(b"not a dbn file at all")
    with pytest.raises(FeedError, match=r"junk\.dbn: not a valid DBN file"):
        read_dbn(junk)
    with pytest.raises(FeedError, match="no such file"):
        read_dbn(tmp_path / "missing.dbn")


def test_convert_and_book_cli_with_instruments(tmp_path):
    from hean.cli import main
    from hean.feeds.native import read_native

    src, defs = str(data_file(ESM4)), str(data_file(ESM4_DEF))
    native = tmp_path / "x.hev"
    assert main(["convert", src, "--format", "dbn", "--instruments", defs, "-o", str(native)]) == 0
    events, report = read_native(native)
    assert str(report.symbols["ESM4"].tick_size) == "0.25"
    top = tmp_path / "top.csv"
    assert main(["book", src, "--format", "dbn", "--instruments", defs, "--top-csv", str(top)]) == 0
    lines = top.read_text().splitlines()
    assert len(lines) == 1 + 185 and lines[1] == "1715126400000000000,ESM4,11051052,5214.00,26,5214.25,24"
    assert main(["book", src, "--format", "tardis", "--instruments", defs, "--top-csv", str(top)]) == 2
