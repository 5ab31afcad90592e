"""Order-by-order (L3) recordings through the engine: the L3 book stage publishes LOBSTER's own book at every
message, the strategy trades LOBSTER and Databento MBO replays, the L3 venue's queue position and fills
by hand-computed cases, and bad L3 input counted by name (hean/stages/book_l3.py, hean/stages/venue_l3.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import data_file

import hean
from hean.cli import main
from hean.feeds import load_events
from hean.feeds.native import write_native
from hean.records import (
    ASK,
    BID,
    BOOK_STATE,
    BUY,
    EXEC_REPORT,
    F_LAST_IN_GROUP,
    F_STALE,
    MARKET_EVENT,
    ORDER,
    SELL,
    EventKind,
    ExecType,
    OrderAction,
    OrderType,
    TimeInForce,
)
from hean.stages.book import ERR_OVERFLOW, ERR_QTY, ERR_SIDE, ERR_SYMBOL
from hean.stages.book_l3 import ERROR_COUNTERS, book_errors, l3_book_on_event, l3_book_tables, l3_capacity
from hean.stages.l3book import ERR_DUPLICATE, ERR_FULL, ERR_UNKNOWN_ORDER
from hean.stages.venue import O_AHEAD, make_venue, venue_on_order
from hean.stages.venue_l3 import make_venue_l3, venue_l3_on_event
from hean.symbols import SymbolTable

pytestmark = pytest.mark.timeout(900)  # the first test compiles the L3 pipeline's loop (or waits for it)


@pytest.fixture(autouse=True, scope="module")
def _l3_loop(precompiled):
    """The L3 pipeline's loop from the session's background compile (conftest), not compiled beside it."""
    precompiled("loop-l3")


LOBSTER = "lobster-AAPL-2012-06-21-message-10.csv"
LOBSTER_BOOK = "lobster-AAPL-2012-06-21-orderbook-10.csv"
MBO = "databento-esh4-glbx-mdp3-20231224.mbo.dbn.zst"
MBO_TRADES = "databento-orderbooks-mbo-20240508.dbn.zst"
K = EventKind
EMPTY_PX = 9999999999  # LOBSTER's price of an empty level

# Folds the last state of each exchange message (its update id: the message's number; that state is the
# message's consistent book, whatever its kind) into ``top`` (update id and top of book) and ``depth`` (ten
# levels per side beside it), a message behind: equal to the same folds over LOBSTER's orderbook file only if
# every message's book is that file's row. ``pt``/``pd`` are the folds with the latest message included.
RECORDER = """
from hean.api import Strategy, ask_level, bid_level, callback

STATE = [("top", "i8"), ("depth", "i8"), ("pt", "i8"), ("pd", "i8"), ("uid", "i8"), ("n", "i8")]

@callback
def on_book(ctx, s):
    b = ctx.book[s]
    st = ctx.state[s]
    if b.update_id != st.uid:  # a new message: the previous one's last state is final
        st.top = st.pt
        st.depth = st.pd
        st.uid = b.update_id
        st.n += 1
    h = st.top * 1000003 + b.update_id
    h = h * 1000003 + b.bid_px * 31 + b.bid_qty
    st.pt = h * 1000003 + b.ask_px * 31 + b.ask_qty
    d = st.depth
    for i in range(10):
        bp, bq = bid_level(ctx, s, i)
        ap, aq = ask_level(ctx, s, i)
        d = d * 1000003 + bp * 31 + bq
        d = d * 1000003 + ap * 31 + aq
    st.pd = d

STRATEGY = Strategy(on_book=on_book, state=STATE, depth=10)
"""


def wrap64(x: int) -> int:
    """Python's int as numba's int64 arithmetic leaves it (two's complement wrap-around)."""
    x &= (1 << 64) - 1
    return x - (1 << 64) if x >= 1 << 63 else x


def fold(h: int, *xs: int) -> int:
    for x in xs:
        h = wrap64(h * 1000003 + x)
    return h


def level(row: np.ndarray, side: int, i: int) -> tuple[int, int]:
    """(px in ticks of 0.01, qty) of level ``i`` of ``side`` in an orderbook row; (0, 0) when empty."""
    px, qty = int(row[4 * i + (2 if side == BID else 0)]), int(row[4 * i + (3 if side == BID else 1)])
    return (0, 0) if qty == 0 or abs(px) == EMPTY_PX else (px // 100, qty)


def reference_folds(rows: np.ndarray, uids: list[int]) -> tuple[int, int]:
    top = depth = 0
    for uid in uids:
        row = rows[uid - 1]
        (bp, bq), (ap, aq) = level(row, BID, 0), level(row, ASK, 0)
        top = fold(top, uid, bp * 31 + bq, ap * 31 + aq)
        for i in range(10):
            (bp, bq), (ap, aq) = level(row, BID, i), level(row, ASK, i)
            depth = fold(depth, bp * 31 + bq, ap * 31 + aq)
    return top, depth


def test_lobster_book_states_are_the_orderbook_file_at_every_message(tmp_path):
    path = tmp_path / "recorder.py"
    path.write_text(RECORDER)
    r = hean.backtest(str(data_file(LOBSTER)), f"{path}:STRATEGY", format="lobster")
    st = r.states[0][0]
    rows = np.loadtxt(data_file(LOBSTER_BOOK), delimiter=",", dtype=np.int64)
    assert len(rows) == 999
    # a message of prints only (LOBSTER's hidden executions) changes no level: its TRADE state carries the
    # update id of the last message that did (as the L2 book's do), and its row repeats the one before
    events, _ = load_events(str(data_file(LOBSTER)), "lobster")
    booked = sorted({int(u) for u in events["update_id"][events["kind"] != K.TRADE]})
    prints_only = sorted(set(range(1, 1000)) - set(booked))
    assert len(prints_only) == 61 and all((rows[u - 1] == rows[u - 2]).all() for u in prints_only)
    top, depth = reference_folds(rows, booked)
    assert int(st["n"]) == len(booked) == 938, "states of every message that changed the book"
    assert int(st["pt"]) == top, "each message's update id and top of book are the orderbook file's row"
    assert int(st["pd"]) == depth, "the ten levels beside each message's book are the row's ten levels"
    assert r.summary["book_errors"] == {}


def test_lobster_replay_trades_and_ends_cleanly(tmp_path):
    out = tmp_path / "summary.json"
    assert main(["replay", str(data_file(LOBSTER)), "--format", "lobster", "-q", "--json", str(out)]) == 0
    s = json.loads(out.read_text())
    assert s["reason"] == "feed-done" and s["exit_code"] == 0, s["error"]
    assert s["orders"] > 0 and s["fills"] > 0
    assert s["pnl"]["trading_state"] != "HALTED"
    assert s["book_errors"] == {}
    assert s["stages"]["book"]["events_in"] == s["events"]


def test_a_split_replay_gives_the_backtests_orders_and_fills():
    """One process per stage: each worker builds the L3 book and venue (the supervisor chose the pipeline once
    it read the recording), and the orders and fills are the in-process backtest's."""
    import msgspec

    from hean.engine.config import load_config
    from hean.engine.supervisor import Supervisor
    from hean.telemetry.block import C_FILLS, C_ORDERS, C_USER_BASE

    path = str(data_file(LOBSTER))
    b = hean.backtest(path, "market_maker", format="lobster").summary
    over = {"feed.source": "replay", "feed.path": path, "feed.format": "lobster", "feed.pace": "fast",
            "engine.duration_s": 0.0}  # fmt: skip
    cfg = load_config(overrides=over)
    split = [[s] for s in ("feed", "book", "strategy", "risk", "router", "venue")]
    cfg = msgspec.structs.replace(cfg, placement=msgspec.structs.replace(cfg.placement, workers=split))
    result = Supervisor(cfg).run()
    assert result.exit_code == 0, result.error
    c = result.telemetry["router"]["counters"]
    got = (int(c[C_ORDERS]), int(c[C_FILLS]), int(c[C_USER_BASE]), int(c[C_USER_BASE + 1]))
    assert got == (b["router_orders"], b["router_fills"], b["order_digest"], b["fill_digest"])
    assert b["router_fills"] > 0


@pytest.mark.parametrize(
    ("name", "orders", "fills"),
    [
        (MBO, 2, 0),  # a snapshot only (8,725 adds at one instant): the maker quotes both sides, nothing trades
        (MBO_TRADES, 10, 5),  # a snapshot, then modifies, cancels and 5 prints: each fills one of its quotes
    ],
)
def test_dbn_mbo_replay_quotes_and_trades(name, orders, fills):
    r = hean.backtest(str(data_file(name)), "market_maker", format="dbn")
    assert r.summary["book_errors"] == {}
    assert (r.summary["router_orders"], r.summary["router_fills"]) == (orders, fills), r.summary


def test_l2_recordings_keep_the_l2_pipeline(tmp_path):
    from hean.engine.build import prepare_replay
    from hean.engine.config import load_config
    from hean.stages.registry import PIPELINE, PIPELINE_L3, trading_pipeline

    for name, fmt, l3 in ((LOBSTER, "lobster", True), ("bybit-xrpusdt-ob500.data.zip", "bybit", False)):
        over = {"feed.source": "replay", "feed.path": str(data_file(name)), "feed.format": fmt}
        cfg, _ = prepare_replay(load_config(overrides=over), str(tmp_path))
        assert cfg.feed.l3 is l3
        assert trading_pipeline(cfg) == (PIPELINE_L3 if l3 else PIPELINE)
        assert ("l3_orders" in cfg.book) is l3


# ---------------------------------------------------------------------------------------------------------
# the L3 venue by hand
# ---------------------------------------------------------------------------------------------------------
OUT = np.zeros(256, EXEC_REPORT)


def l3(kind, oid, side=0, px=0, qty=0, symbol=0):
    e = np.zeros(1, MARKET_EVENT)[0]
    e["kind"], e["order_id"], e["side"], e["price"], e["qty"], e["symbol"] = kind, oid, side, px, qty, symbol
    e["flags"] = F_LAST_IN_GROUP
    return e


def new_order(oid, side, px, qty, otype=OrderType.LIMIT, tif=TimeInForce.GTC):
    o = np.zeros(1, ORDER)[0]
    o["kind"], o["side"], o["price"], o["qty"], o["order_type"], o["tif"] = OrderAction.NEW, side, px, qty, otype, tif
    o["order_id"], o["venue"], o["symbol"] = oid, 0, 0
    return o


def reports(n):
    return [(ExecType(int(r["kind"])).name, int(r["price"]), int(r["qty"]), int(r["leaves_qty"]), int(r["liquidity"]))
            for r in OUT[:n]]  # fmt: skip


def venue():
    vn = make_venue(1)
    return vn, make_venue_l3(vn, 64, 64)


OURS = 7  # our order's id: a BUY of 4 at 100 joining behind the 8 lots of orders 1 and 2

# (event, our queue ahead after it, our reports from it (kind, px, qty, leaves, liquidity 1 maker))
FIFO = [
    (l3(K.L3_ADD, 3, BID, 100, 6), 8, []),  # an add joins behind us
    (l3(K.L3_CANCEL, 3, qty=6), 8, []),  # order 3 was behind: nothing moves
    (l3(K.L3_CANCEL, 2, qty=1), 7, []),  # order 2 (5 lots queued before it, fewer than our 8) was ahead
    (l3(K.L3_EXECUTE, 1, qty=5), 2, []),  # a print of 5 within our 7 ahead: no fill; order 1 (ahead) is gone
    (l3(K.L3_MODIFY, 2, BID, 100, 4), 0, []),  # 2 -> 4 lots: order 2 re-queues behind us, its 2 lots leave
    (l3(K.L3_ADD, 4, BID, 100, 2), 0, []),
    (l3(K.L3_EXECUTE, 2, qty=3), 0, [("PARTIAL_FILL", 100, 3, 1, 1)]),  # an execution behind us: we were first
    (l3(K.L3_EXECUTE, 4, qty=2), None, [("FILL", 100, 1, 0, 1)]),  # the print's other lot is not ours
]
# a Databento-style trade: the print, then the cancels of the orders it filled -- counted once, not twice
PRINT_THEN_CANCELS = [
    (l3(K.TRADE, 0, SELL, 100, 6), 8, []),  # 6 printed within our 8 ahead: no fill, the cancels will say who
    (l3(K.L3_CANCEL, 1, qty=5), 3, []),
    (l3(K.L3_CANCEL, 2, qty=1), 2, []),
    (l3(K.TRADE, 0, SELL, 100, 4), 2, [("PARTIAL_FILL", 100, 2, 2, 1)]),  # 4 printed, 2 ahead: 2 are ours
    (l3(K.L3_DELETE, 2), 0, []),
    (l3(K.TRADE, 0, SELL, 99, 5), None, [("FILL", 100, 2, 0, 1)]),  # a print through our price fills the rest
]


@pytest.mark.parametrize("steps", [FIFO, PRINT_THEN_CANCELS], ids=["fifo", "print_then_cancels"])
def test_l3_venue_queue_position_and_fills(steps):
    vn, x = venue()
    assert venue_l3_on_event(vn, x, 0, l3(K.L3_ADD, 1, BID, 100, 5), 1, OUT, 0) == 0
    assert venue_l3_on_event(vn, x, 0, l3(K.L3_ADD, 2, BID, 100, 3), 2, OUT, 0) == 0
    assert reports(venue_on_order(vn, new_order(OURS, BUY, 100, 4), 3, OUT, 0)) == [("ACK", 100, 0, 4, 0)]
    slot = OURS & (vn.o.shape[0] - 1)
    assert vn.o[slot, O_AHEAD] == 8
    for t, (e, ahead, want) in enumerate(steps, 4):
        assert reports(venue_l3_on_event(vn, x, 0, e, t, OUT, 0)) == want, (t, e)
        if ahead is not None:
            assert vn.o[slot, O_AHEAD] == ahead, (t, e)


def test_l3_venue_taker_takes_the_level_totals():
    vn, x = venue()
    for t, (oid, px, qty) in enumerate([(1, 101, 2), (2, 101, 3), (3, 102, 5), (4, 103, 1)], 1):
        venue_l3_on_event(vn, x, 0, l3(K.L3_ADD, oid, ASK, px, qty), t, OUT, 0)
    order = new_order(OURS, BUY, 102, 7, tif=TimeInForce.IOC)
    assert reports(venue_on_order(vn, order, 5, OUT, 0)) == [
        ("ACK", 102, 0, 7, 0),
        ("PARTIAL_FILL", 101, 5, 2, 2),  # both orders at 101: the level's total
        ("FILL", 102, 2, 0, 2),
    ]
    assert (vn.tops.ask_px[0, 0], vn.tops.ask_qty[0, 0]) == (102, 3)  # the lots we took are gone
    # the next event at 102 publishes the level's total again (the recording's orders never saw ours)
    venue_l3_on_event(vn, x, 0, l3(K.L3_CANCEL, 3, qty=1), 6, OUT, 0)
    assert vn.tops.ask_qty[0, 0] == 4


# ---------------------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------------------
# (event, the error it is counted as or None)
BAD = [
    (l3(K.L3_ADD, 1, BID, 100, 5), None),
    (l3(K.L3_ADD, 1, BID, 100, 5), "duplicate_order"),
    (l3(K.L3_ADD, 2, ASK, 101, 5), None),
    (l3(K.L3_ADD, 3, ASK, 102, 1), "table_full"),  # two orders fit: the third is lost, the book is stale
    (l3(K.L3_CANCEL, 99, qty=1), "unknown_order"),
    (l3(K.L3_DELETE, 3), "unknown_order"),  # the order the full table lost
    (l3(K.L3_EXECUTE, 1, qty=0), "bad_qty"),
    (l3(K.L3_ADD, 5, 0, 100, 1), "bad_side"),
    (l3(K.L3_ADD, 6, BID, 100, 1, symbol=3), "bad_symbol"),
]


STATUS = {"unknown_order": ERR_UNKNOWN_ORDER, "duplicate_order": ERR_DUPLICATE, "table_full": ERR_FULL,
          "levels_lost": ERR_OVERFLOW, "bad_symbol": ERR_SYMBOL, "bad_side": ERR_SIDE, "bad_qty": ERR_QTY}  # fmt: skip


def test_bad_l3_events_are_counted_by_name_and_mark_the_book_stale():
    assert tuple(STATUS) == ERROR_COUNTERS
    book, trades = l3_book_tables(1, l3_orders=2, l3_levels=2)
    out = np.zeros(1, BOOK_STATE)
    want = dict.fromkeys(ERROR_COUNTERS, 0)
    flags = []
    for e, error in BAD:
        published = l3_book_on_event(book, trades, e, out, 0, 0)
        flags.append(int(out[0]["flags"]) & F_STALE if published else None)
        if error:
            want[error] += 1
        assert {n: int(book.errors[-st]) for n, st in STATUS.items()} == want, e
    assert flags[:3] == [0, 0, 0] and flags[3] == F_STALE, "stale from the lost order on"
    assert out[0]["bid_px"] == 100 and out[0]["bid_qty"] == 5 and out[0]["ask_px"] == 101
    clear = l3(K.CLEAR, 0)
    assert l3_book_on_event(book, trades, clear, out, 0, 0) == 1 and out[0]["flags"] & F_STALE == 0


def test_a_full_table_in_a_replay_is_counted_in_the_summary(tmp_path):
    events = np.array([e for e, _ in BAD[:6]], MARKET_EVENT)
    events["seq"] = np.arange(1, len(events) + 1)
    events["ts_origin"] = events["ts_exch"] = 1_000_000 * events["seq"]
    events["update_id"] = events["seq"]
    path = tmp_path / "bad.hev"
    write_native(path, events, SymbolTable([{"name": "X", "tick_size": "0.01", "lot_size": "1"}]))
    # the running count of adds less deletes peaks at 4 (the duplicate counts: no book is kept), a quarter and
    # 1024 more: the configuration's 2 orders make the table full
    assert l3_capacity(events) == (1029, 1029)
    r = hean.backtest(str(path), "market_maker", format="native", config={"book.l3_orders": 2})
    assert r.summary["book_errors"] == {"unknown_order": 2, "duplicate_order": 1, "table_full": 1}


def test_the_l3_capacity_of_a_read_only_recording_is_found_once(monkeypatch):
    """A sweep's backtests of one mapped (read-only) recording scan its events for L3 kinds once; an array
    that can still be written is scanned every time, so a change to it is seen."""
    import hean.stages.book_l3 as B

    scans = []
    real = B._l3_capacity
    monkeypatch.setattr(B, "_l3_capacity", lambda ev: scans.append(len(ev)) or real(ev))
    events = np.array([l3(K.LEVEL_SET, 0, 1, 100, 1)] * 3, MARKET_EVENT)
    assert [l3_capacity(events), l3_capacity(events)] == [None, None] and len(scans) == 2
    events["kind"][1] = K.L3_ADD  # written in place: the next answer is new
    assert l3_capacity(events) == (1025, 1025) and len(scans) == 3
    events.setflags(write=False)
    assert [l3_capacity(events) for _ in range(3)] == [(1025, 1025)] * 3 and len(scans) == 4
    other = events.copy()  # another array (the same contents): its own scan
    other.setflags(write=False)
    assert l3_capacity(other) == (1025, 1025) and len(scans) == 5


def test_book_errors_of_an_l2_book_are_none():
    assert book_errors(object()) == {}
