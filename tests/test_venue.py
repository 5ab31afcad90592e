"""Simulated venue: marketable fills across levels, the queue-position model, latency, fees, rejects,
cancels/replaces -- synthetic cases, then fills on the Binance USD-M recording checked against an
independent book and the recorded trades."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import data_file

from hean.feeds.binance import read_binance
from hean.records import (
    ASK,
    BID,
    BUY,
    EXEC_REPORT,
    F_LAST_IN_GROUP,
    F_POST_ONLY,
    MARKET_EVENT,
    ORDER,
    SELL,
    EventKind,
    ExecType,
    OrderAction,
    OrderType,
    RejectReason,
    TimeInForce,
)
from hean.stages.book import l2_apply_events, l2_depth, make_l2_book
from hean.stages.simclock import print_reaches, simclock_view, simclock_words
from hean.stages.venue import (
    VENUE_MAX_REPORTS,
    make_venue,
    publish_reach,
    venue_on_event,
    venue_on_order,
    venue_poll,
    venue_replay,
)

X = ExecType
R = RejectReason
OUT = np.zeros(256, EXEC_REPORT)
_ids = iter(range(1, 10**9))


def ev(kind, side=0, price=0, qty=0, symbol=0):
    e = np.zeros(1, MARKET_EVENT)
    e[0]["kind"], e[0]["side"], e[0]["price"], e[0]["qty"], e[0]["symbol"] = kind, side, price, qty, symbol
    return e[0]


def level(vn, side, px, qty, now=0, v=0):
    return reports(OUT, venue_on_event(vn, v, ev(EventKind.LEVEL_SET, side, px, qty), now, OUT, 0))


def trade(vn, aggressor, px, qty, now=0, v=0):
    return reports(OUT, venue_on_event(vn, v, ev(EventKind.TRADE, aggressor, px, qty), now, OUT, 0))


def order(kind=OrderAction.NEW, side=BUY, qty=5, price=100, otype=OrderType.LIMIT, tif=TimeInForce.GTC, venue=0,
          flags=0, order_id=None):  # fmt: skip
    o = np.zeros(1, ORDER)
    r = o[0]
    r["kind"], r["side"], r["qty"], r["price"], r["order_type"], r["tif"] = kind, side, qty, price, otype, tif
    r["venue"], r["flags"] = venue, flags
    r["order_id"] = next(_ids) if order_id is None else order_id
    return r


def send(vn, rec, now=0):
    return reports(OUT, venue_on_order(vn, rec, now, OUT, 0))


def reports(out, n):
    return [(X(int(r["kind"])).name, int(r["price"]), int(r["qty"]), int(r["leaves_qty"]), int(r["cum_qty"]))
            for r in out[:n]]  # fmt: skip


def book5(**kw):
    """bids 99x5, 98x5; asks 101x3, 102x4, 103x10"""
    vn = make_venue(1, 1, **kw)
    for side, px, q in ((BID, 99, 5), (BID, 98, 5), (ASK, 101, 3), (ASK, 102, 4), (ASK, 103, 10)):
        level(vn, side, px, q)
    return vn


# (id, order kwargs, expected reports (kind, price, qty, leaves, cum))
MATCHING = [
    ("passive_rests", dict(price=100), [("ACK", 100, 0, 5, 0)]),
    ("marketable_partial_across_levels", dict(price=102, qty=5),
     [("ACK", 102, 0, 5, 0), ("PARTIAL_FILL", 101, 3, 2, 3), ("FILL", 102, 2, 0, 5)]),
    ("marketable_remainder_rests", dict(price=101, qty=5), [("ACK", 101, 0, 5, 0), ("PARTIAL_FILL", 101, 3, 2, 3)]),
    ("ioc_remainder_expires", dict(price=101, qty=5, tif=TimeInForce.IOC),
     [("ACK", 101, 0, 5, 0), ("PARTIAL_FILL", 101, 3, 2, 3), ("EXPIRED", 101, 0, 0, 3)]),
    ("market_walks_book", dict(otype=OrderType.MARKET, price=0, qty=9),
     [("ACK", 0, 0, 9, 0), ("PARTIAL_FILL", 101, 3, 6, 3), ("PARTIAL_FILL", 102, 4, 2, 7), ("FILL", 103, 2, 0, 9)]),
    ("market_sell", dict(otype=OrderType.MARKET, price=0, qty=6, side=SELL),
     [("ACK", 0, 0, 6, 0), ("PARTIAL_FILL", 99, 5, 1, 5), ("FILL", 98, 1, 0, 6)]),
    ("fok_not_enough_expires", dict(price=102, qty=8, tif=TimeInForce.FOK),
     [("ACK", 102, 0, 8, 0), ("EXPIRED", 102, 0, 0, 0)]),
    ("fok_enough_fills", dict(price=102, qty=7, tif=TimeInForce.FOK),
     [("ACK", 102, 0, 7, 0), ("PARTIAL_FILL", 101, 3, 4, 3), ("FILL", 102, 4, 0, 7)]),
    ("post_only_cross_rejected", dict(price=101, flags=F_POST_ONLY), [("REJECTED", 101, 0, 0, 0)]),
    ("post_only_passive_rests", dict(price=100, flags=F_POST_ONLY), [("ACK", 100, 0, 5, 0)]),
    ("bad_qty", dict(qty=0), [("REJECTED", 100, 0, 0, 0)]),
    ("bad_price", dict(price=0), [("REJECTED", 0, 0, 0, 0)]),
    ("bad_venue", dict(venue=3), [("REJECTED", 100, 0, 0, 0)]),
]  # fmt: skip


@pytest.mark.parametrize("name,kw,expected", MATCHING, ids=[m[0] for m in MATCHING])
def test_matching(name, kw, expected):
    vn = book5(taker_fee=0.001)
    assert send(vn, order(**kw)) == expected


def test_taker_fee_and_liquidity_consumed_until_feed_resets_level():
    vn = book5(taker_fee=0.001, value_per_tick_lot=0.5)
    n = venue_on_order(vn, order(price=101, qty=2, tif=TimeInForce.IOC), 0, OUT, 0)
    fill = OUT[1]
    assert n == 2 and fill["fee"] == pytest.approx(101 * 2 * 0.5 * 0.001) and fill["liquidity"] == 2
    assert (vn.tops.ask_px[0, 0], vn.tops.ask_qty[0, 0]) == (101, 1)  # 2 of 3 lots taken
    assert send(vn, order(price=101, qty=2, tif=TimeInForce.IOC))[1] == ("PARTIAL_FILL", 101, 1, 1, 1)
    assert (vn.tops.ask_px[0, 0], vn.tops.ask_qty[0, 0]) == (102, 4)
    level(vn, ASK, 101, 3)  # the feed sets the level again
    assert (vn.tops.ask_px[0, 0], vn.tops.ask_qty[0, 0]) == (101, 3)


def test_reject_reasons():
    vn = book5()
    for kw, reason in ((dict(price=101, flags=F_POST_ONLY), R.POST_ONLY_CROSS), (dict(venue=3), R.BAD_VENUE),
                       (dict(qty=-1), R.BAD_QTY), (dict(side=0), R.BAD_SIDE)):  # fmt: skip
        n = venue_on_order(vn, order(**kw), 0, OUT, 0)
        assert n == 1 and OUT[0]["kind"] == X.REJECTED and OUT[0]["reason"] == reason


# queue model: a buy resting at 99 behind 5 visible lots; (id, prints [(aggressor, px, qty)], fills expected)
QUEUE = [
    ("ahead_consumed_first", [(SELL, 99, 4)], []),
    ("fills_after_ahead", [(SELL, 99, 4), (SELL, 99, 3)], [("PARTIAL_FILL", 99, 2, 1, 2)]),
    ("one_print_larger_than_ahead", [(SELL, 99, 7)], [("PARTIAL_FILL", 99, 2, 1, 2)]),
    ("trade_through_fills", [(SELL, 98, 2)], [("PARTIAL_FILL", 99, 2, 1, 2)]),
    ("trade_through_full", [(SELL, 97, 9)], [("FILL", 99, 3, 0, 3)]),
    ("buy_aggressor_does_not_fill_bid", [(BUY, 99, 50)], []),
    ("print_above_does_not_fill", [(SELL, 100, 50)], []),
]  # fmt: skip


@pytest.mark.parametrize("name,prints,fills", QUEUE, ids=[q[0] for q in QUEUE])
def test_queue_position_model(name, prints, fills):
    vn = book5(maker_fee=-0.0001)
    assert send(vn, order(price=99, qty=3)) == [("ACK", 99, 0, 3, 0)]
    got = []
    for aggressor, px, q in prints:
        got += trade(vn, aggressor, px, q)
    assert got == fills


def test_level_cancels_ahead_are_not_credited_and_print_is_shared():
    vn = book5(maker_fee=-0.0001)
    send(vn, order(price=99, qty=3))
    level(vn, BID, 99, 1)  # 4 of the 5 lots ahead cancel: not credited (conservative)
    assert trade(vn, SELL, 99, 5) == []
    send(vn, order(price=100, qty=2))  # a better bid: nothing ahead
    got = trade(vn, SELL, 99, 3)  # prints through 100 (fills it) and reaches 99 (queue now empty)
    assert got == [("FILL", 100, 2, 0, 2), ("PARTIAL_FILL", 99, 1, 2, 1)]
    assert OUT[0]["liquidity"] == 1 and OUT[0]["fee"] == pytest.approx(100 * 2 * -0.0001)


def test_cancel_replace_and_cancel_all():
    vn = book5()
    a = order(price=99, qty=3)
    send(vn, a)
    assert send(vn, order(OrderAction.CANCEL, order_id=a["order_id"])) == [("CANCELED", 99, 0, 0, 0)]
    late = send(vn, order(OrderAction.CANCEL, order_id=a["order_id"]))
    assert late[0][0] == "CANCEL_REJECTED" and OUT[0]["reason"] == R.TOO_LATE
    send(vn, order(OrderAction.CANCEL, order_id=987654))
    assert OUT[0]["reason"] == R.UNKNOWN_ORDER
    b = order(price=99, qty=4)
    send(vn, b)
    # smaller at the same price keeps the queue position (5 ahead)
    assert send(vn, order(OrderAction.REPLACE, price=99, qty=2, order_id=b["order_id"])) == [("REPLACED", 99, 0, 2, 0)]
    assert trade(vn, SELL, 99, 6) == [("PARTIAL_FILL", 99, 1, 1, 1)]  # 5 ahead, then 1 of the print
    c = order(price=98, qty=1)
    send(vn, c)
    assert send(vn, order(OrderAction.REPLACE, price=101, qty=1, order_id=c["order_id"])) == [
        ("REPLACED", 101, 0, 1, 0), ("FILL", 101, 1, 0, 1)]  # fmt: skip
    d, e = order(price=95, qty=1), order(price=96, qty=1)
    send(vn, d)
    send(vn, e)
    got = send(vn, order(OrderAction.CANCEL_ALL))
    assert sorted(got) == sorted([("CANCELED", 95, 0, 0, 0), ("CANCELED", 96, 0, 0, 0), ("CANCELED", 99, 0, 0, 1)])


def test_replace_with_new_price_loses_queue():
    vn = book5()
    b = order(price=98, qty=2)
    send(vn, b)
    send(vn, order(OrderAction.REPLACE, price=99, qty=2, order_id=b["order_id"]))  # joins 99 behind 5
    assert trade(vn, SELL, 99, 5) == []
    assert trade(vn, SELL, 99, 1) == [("PARTIAL_FILL", 99, 1, 1, 1)]


def test_latency_orders_arrive_late_and_reports_wait():
    vn = book5(entry_latency_ns=100, report_latency_ns=50)
    assert send(vn, order(price=101, qty=3, tif=TimeInForce.IOC), now=0) == []
    level(vn, ASK, 101, 1, now=60)  # the book changes while the order is in flight
    assert reports(OUT, venue_poll(vn, 149, OUT, 0)) == []  # matched at 100, reports due at 150
    got = reports(OUT, venue_poll(vn, 150, OUT, 0))
    assert got == [("ACK", 101, 0, 3, 0), ("PARTIAL_FILL", 101, 1, 2, 1), ("EXPIRED", 101, 0, 0, 1)]
    assert OUT[0]["ts_venue"] == 100


def test_order_in_flight_is_matched_before_a_later_event():
    vn = book5(entry_latency_ns=100)
    send(vn, order(price=101, qty=3, tif=TimeInForce.IOC), now=0)
    got = level(vn, ASK, 101, 0, now=200)  # the order arrived at 100, before the level went away
    assert got == [("ACK", 101, 0, 3, 0), ("FILL", 101, 3, 0, 3)]


def test_stale_book_rejects_until_clear():
    vn = book5()
    venue_on_event(vn, 0, ev(EventKind.OUT_OF_SYNC), 0, OUT, 0)
    send(vn, order(price=100))
    assert OUT[0]["kind"] == X.REJECTED and OUT[0]["reason"] == R.BOOK_STALE
    venue_on_event(vn, 0, ev(EventKind.CLEAR), 0, OUT, 0)
    assert send(vn, order(price=100)) == [("ACK", 100, 0, 5, 0)]
    assert vn.tops.ask_px[0, 0] == 0


def test_random_rejects_are_seeded():
    def run(seed):
        vn = book5(reject_prob=0.3, seed=seed)
        return [send(vn, order(price=90))[0][0] for _ in range(200)]

    a, b = run(7), run(7)
    assert a == b and 30 < a.count("REJECTED") < 90
    vn = book5(reject_prob=1.0)
    send(vn, order(price=90))
    assert OUT[0]["reason"] == R.VENUE_REJECT


def test_output_is_bounded_and_rest_is_kept():
    vn = make_venue(1, 1)
    for px in range(101, 201):
        level(vn, ASK, px, 1)
    small = np.zeros(10, EXEC_REPORT)
    n = venue_on_order(vn, order(otype=OrderType.MARKET, price=0, qty=100), 0, small, 3)
    assert n == 7  # len(out) - k
    total = n
    big = np.zeros(200, EXEC_REPORT)
    while (n := venue_poll(vn, 0, big, 0)) > 0:
        assert n <= VENUE_MAX_REPORTS
        total += n
    assert total == 101  # ACK + 100 fills


def test_a_per_venue_parameter_is_one_value_for_all_or_one_per_venue():
    from hean.stages.venue import VF_MAKER, VF_TAKER

    vn = make_venue(1, 2, maker_fee=-0.0001, taker_fee=[0.0004, 0.001])
    assert vn.vf[:, VF_MAKER].tolist() == [-0.0001, -0.0001] and vn.vf[:, VF_TAKER].tolist() == [0.0004, 0.001]
    for kw, message in (
        (dict(taker_fee=float("nan")), "taker_fee must be in \\[-0.1, 0.1\\] per venue, got nan"),
        (dict(maker_fee=[0.0, 0.2]), "maker_fee must be in \\[-0.1, 0.1\\] per venue, got \\[0.0, 0.2\\]"),
        (dict(value_per_tick_lot=-1.0), "value_per_tick_lot must be > 0, got -1.0"),
    ):
        with pytest.raises(ValueError, match=message):
            make_venue(1, 2, **kw)


def test_make_venue_validates():
    for kw in (dict(reject_prob=1.5), dict(capacity=100), dict(entry_latency_ns=-1), dict(taker_fee=0.5)):
        with pytest.raises(ValueError):
            make_venue(1, 1, **kw)
    with pytest.raises(ValueError):
        make_venue(1, 9)


# ---------------------------------------------------------------------------------------------------------
# the Binance USD-M recording
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def binance():
    events, _ = read_binance(data_file("binance-usdm-btcusdt-20240808.gz"))
    keep = np.isin(events["kind"], [EventKind.LEVEL_SET, EventKind.CLEAR, EventKind.TRADE])
    return events[keep]


def _replay(vn, events, start, stop, out):
    got = []
    i = start
    while i < stop:
        i, n = venue_replay(vn, 0, events, i, stop, out, 0)
        got.extend(out[:n].copy())
    return got


def _cut(events, frac):
    """Index just after a complete message (F_LAST_IN_GROUP) about ``frac`` into the recording."""
    i = int(len(events) * frac)
    while not (events[i]["flags"] & F_LAST_IN_GROUP and events[i]["kind"] == EventKind.LEVEL_SET):
        i += 1
    return i + 1


@pytest.mark.parametrize("side,frac", [(BUY, 0.3), (SELL, 0.6)])
def test_binance_marketable_order_walks_the_recorded_book(binance, side, frac):
    events = binance
    cut = _cut(events, frac)
    vn = make_venue(1, 1, taker_fee=0.0004, value_per_tick_lot=0.01 * 0.001)
    out = np.zeros(4 * VENUE_MAX_REPORTS, EXEC_REPORT)
    _replay(vn, events, 0, cut, out)
    ref = make_l2_book(1)  # the reference: H2's book over the same events, read by depth
    assert l2_apply_events(ref, events, 0, cut) == 0
    px, qty = np.zeros(50, np.int64), np.zeros(50, np.int64)
    nlev = l2_depth(ref, 0, -side, 50, px, qty)
    want = int(qty[:4].sum()) + 1  # through 4 levels and into the 5th
    expected, left = [], want
    for p, q in zip(px[:nlev], qty[:nlev], strict=True):
        take = min(left, int(q))
        expected.append((int(p), take))
        left -= take
        if left == 0:
            break
    rec = order(side=side, otype=OrderType.MARKET, price=0, qty=want, tif=TimeInForce.IOC)
    n = venue_on_order(vn, rec, int(events[cut - 1]["ts_origin"]), out, 0)
    fills = [(int(r["price"]), int(r["qty"])) for r in out[:n] if r["kind"] in (X.PARTIAL_FILL, X.FILL)]
    assert fills == expected and len(fills) == 5
    assert out[n - 1]["kind"] == X.FILL and out[n - 1]["cum_qty"] == want
    fee = sum(float(r["fee"]) for r in out[:n])
    assert fee == pytest.approx(sum(p * q for p, q in expected) * 1e-5 * 0.0004)


def test_binance_resting_order_fills_only_after_queue_ahead_trades(binance):
    events = binance
    cut = _cut(events, 0.25)
    vn = make_venue(1, 1, maker_fee=-0.0001)
    out = np.zeros(4 * VENUE_MAX_REPORTS, EXEC_REPORT)
    _replay(vn, events, 0, cut, out)
    bid = int(vn.tops.bid_px[0, 0])
    ahead = int(vn.tops.bid_qty[0, 0])
    qty = 50
    rec = order(side=BUY, price=bid, qty=qty)
    n = venue_on_order(vn, rec, int(events[cut - 1]["ts_origin"]), out, 0)
    assert n == 1 and out[0]["kind"] == X.ACK
    # independent expectation from the recorded prints: sell-aggressor trades at our price eat `ahead` first;
    # a sell print below our price fills us outright
    exp_first = None
    remaining_ahead = ahead
    for i in range(cut, len(events)):
        e = events[i]
        if e["kind"] != EventKind.TRADE or e["side"] != SELL:
            continue
        if e["price"] < bid or (e["price"] == bid and e["qty"] > remaining_ahead):
            exp_first = i
            break
        if e["price"] == bid:
            remaining_ahead -= int(e["qty"])
    assert exp_first is not None, "the recording never traded through this bid"
    got = _replay(vn, events, cut, len(events), out)
    mine = [r for r in got if r["order_id"] == rec["order_id"]]
    assert mine, "the resting order never filled"
    first = mine[0]
    assert first["ts_venue"] == events[exp_first]["ts_origin"] and first["liquidity"] == 1
    assert sum(int(r["qty"]) for r in mine) <= qty
    assert all(int(r["price"]) == bid for r in mine) and first["fee"] < 0


def test_risk_router_venue_loop_keeps_books_consistent():
    """intent -> risk -> router (the venues' own tops) -> venues -> router -> risk, two venues, one split."""
    from hean.records import BOOK_STATE
    from hean.stages.risk import make_risk, risk_on_book, risk_on_intent, risk_on_report
    from hean.stages.router import make_router, router_on_order, router_on_report

    vn = make_venue(1, 2, taker_fee=0.001)
    for v, (ask_qty, ask) in enumerate(((2, 101), (5, 101))):
        for side, px, q in ((BID, 99, 5), (ASK, ask, ask_qty), (ASK, 102, 10)):
            venue_on_event(vn, v, ev(EventKind.LEVEL_SET, side, px, q), 0, OUT, 0)
    risk = make_risk(1, capital=1e6, max_position=100)
    bs = np.zeros(1, BOOK_STATE)
    bs[0]["bid_px"], bs[0]["ask_px"], bs[0]["mid"] = 99, 101, 100.0
    risk_on_book(risk, bs[0], 0, np.zeros(2, ORDER), 0)
    router = make_router(1, 2, taker_fee=0.001)
    fwd, vorders, to_risk = np.zeros(1, ORDER), np.zeros(8, ORDER), np.zeros(4, EXEC_REPORT)
    intent = order(price=101, qty=6, tif=TimeInForce.IOC, venue=-1, order_id=0)
    assert risk_on_intent(risk, intent, 10, fwd, 0) == 1
    m = router_on_order(router, fwd[0], vn.tops, 10, vorders, 0)
    assert [(int(o["venue"]), int(o["qty"])) for o in vorders[:m]] == [(0, 2), (1, 4)]
    for o in vorders[:m]:
        n = venue_on_order(vn, o, 10, OUT, 0)
        for r in OUT[:n].copy():
            k = router_on_report(router, r, to_risk, 0)
            for j in range(k):
                risk_on_report(risk, to_risk[j])
    assert risk.pos.position_lots[0] == 6 and risk.pos.avg_px[0] == 101.0
    assert risk.open_buy[0] == 0 and risk.open_count[0] == 0
    assert risk.pos.fees[0] == pytest.approx(6 * 101 * 0.001)
    assert router.ot.meta[2] == 0  # no invalid transition on the way


# a print (aggressor, price) -> might it fill one of the resting orders: a buy at 100 and a sell at 102
REACH = [
    (SELL, 101, False),  # above the highest resting buy
    (SELL, 100, True),  # at it: the queue ahead decides, so it might
    (SELL, 97, True),  # through it
    (BUY, 101, False),  # below the lowest resting sell
    (BUY, 102, True),
    (BUY, 110, True),
    (0, 100, False),  # no aggressor side: fills nothing
]


@pytest.mark.parametrize(("aggressor", "px", "reaches"), REACH)
def test_the_venue_publishes_how_far_a_print_could_reach_its_resting_orders(aggressor, px, reaches):
    """What the feed reads to send a message with a print in one step (hean.stages.simclock): a print that
    does not reach makes no report when it comes."""
    vn = book5()
    assert send(vn, order(price=100))[0][0] == "ACK" and send(vn, order(side=SELL, price=102))[0][0] == "ACK"
    sim = simclock_view(np.zeros(simclock_words(1), np.int64), 1)
    publish_reach(vn, sim, np.zeros(1, np.int64), np.zeros(1, np.int64))
    assert print_reaches(sim, 0, px, aggressor) == reaches
    if not reaches:
        assert trade(vn, aggressor, px, 100) == []


def test_a_listings_prints_reach_the_orders_at_its_venue():
    """Symbol 1 lists instrument 0 on venue 1: its prints meet the orders for instrument 0 there, and symbol
    0's prints (venue 0) do not."""
    vn = make_venue(2, 2)
    level(vn, BID, 99, 5, v=1)
    assert send(vn, order(price=100, venue=1))[0][0] == "ACK"
    sim = simclock_view(np.zeros(simclock_words(2), np.int64), 2)
    publish_reach(vn, sim, np.array([0, 1], np.int64), np.array([0, 0], np.int64))
    assert print_reaches(sim, 1, 100, SELL) and not print_reaches(sim, 0, 100, SELL)
    assert not print_reaches(sim, 1, 101, SELL)
