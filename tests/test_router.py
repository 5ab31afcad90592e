"""Router: smart routing choices across venues, parent/child state tracking, cancels, replaces, halting."""

from __future__ import annotations

import numpy as np
import pytest

from hean.records import (
    BUY,
    EXEC_REPORT,
    F_POST_ONLY,
    ORDER,
    SELL,
    ExecType,
    OrderAction,
    OrderType,
    RejectReason,
    TimeInForce,
)
from hean.rings.seqlock import SEQ
from hean.stages.orders import (
    M_INVALID,
    OC_ID,
    OC_LIVE_CHILDREN,
    OC_PARENT,
    OC_PRICE,
    OC_QTY,
    OC_STATE,
    OrderEvent,
    OrderState,
    ot_slot,
)
from hean.stages.risk import make_risk, risk_on_book, risk_on_intent, risk_on_report
from hean.stages.router import (
    C_SPLITS,
    C_TOPS_UNAVAILABLE,
    C_UNKNOWN_REPORTS,
    ROUTER_MAX_ORDERS,
    make_router,
    router_halt,
    router_on_order,
    router_on_report,
    router_poll,
)
from hean.stages.tops import make_venue_tops, tops_set

R = RejectReason
X = ExecType
S = OrderState
NOW = 1_000


def order(kind=OrderAction.NEW, side=BUY, qty=5, price=100, otype=OrderType.LIMIT, tif=TimeInForce.GTC, venue=-1,
          flags=0, order_id=0, symbol=0):  # fmt: skip
    rec = np.zeros(1, ORDER)
    r = rec[0]
    r["kind"], r["side"], r["qty"], r["price"], r["order_type"], r["tif"] = kind, side, qty, price, otype, tif
    r["venue"], r["flags"], r["order_id"], r["symbol"], r["ts_origin"] = venue, flags, order_id, symbol, 77
    return r


def setup(books, maker=0.0, taker=0.0, enabled=None, capacity=64):
    """books: per venue (bid, bid_qty, ask, ask_qty) for symbol 0."""
    nv = len(books)
    router = make_router(2, nv, maker_fee=maker, taker_fee=taker, enabled=enabled, capacity=capacity)
    tops = make_venue_tops(nv, 2)
    for v, (b, bq, a, aq) in enumerate(books):
        tops_set(tops, v, 0, b, bq, a, aq, 0)
    return router, tops


def route(router, tops, rec):
    out = np.zeros(ROUTER_MAX_ORDERS, ORDER)
    n = router_on_order(router, rec, tops, NOW, out, 0)
    return out[:n]


def pending(router):
    out = np.zeros(8, EXEC_REPORT)
    n = router_poll(router, out, 0)
    return out[:n]


def venue_report(child, kind, qty=0, price=None, leaves=0, fee=0.0):
    rec = np.zeros(1, EXEC_REPORT)
    r = rec[0]
    r["kind"], r["order_id"], r["symbol"], r["side"] = kind, child["order_id"], child["symbol"], child["side"]
    r["qty"], r["price"], r["leaves_qty"], r["fee"], r["venue"] = (
        qty,
        child["price"] if price is None else price,
        leaves,
        fee,
        child["venue"],
    )
    return r


def to_risk(router, rep):
    out = np.zeros(4, EXEC_REPORT)
    n = router_on_report(router, rep, out, 0)
    return out[:n]


def kinds(reports):
    return [(X(int(r["kind"])).name, int(r["qty"]), int(r["leaves_qty"]), int(r["cum_qty"])) for r in reports]


BOOKS3 = [(99, 5, 100, 4), (99, 5, 100, 3), (98, 5, 101, 10)]

# (id, venue books, maker fees, taker fees, order kwargs, expected [(venue, qty)] or a RejectReason)
ROUTES = [
    ("passive_cheapest_maker", BOOKS3, [0.0002, -0.0001, 0.0], 0.0, dict(price=98), [(1, 5)]),
    ("passive_tie_lowest_index", BOOKS3, 0.0, 0.0, dict(price=98), [(0, 5)]),
    ("marketable_best_price", [(99, 5, 101, 9), (99, 5, 100, 9)], 0.0, 0.0, dict(price=101), [(1, 5)]),
    ("taker_fee_changes_rank", [(99, 5, 100, 9), (99, 5, 101, 9)], 0.0, [0.02, 0.0], dict(price=101), [(1, 5)]),
    ("split_where_size_lacks", BOOKS3, 0.0, 0.0, dict(price=100, qty=10), [(0, 7), (1, 3)]),
    ("split_market_three_venues", BOOKS3, 0.0, 0.0, dict(otype=OrderType.MARKET, price=0, qty=10),
     [(0, 4), (1, 3), (2, 3)]),
    ("sell_best_bid", [(98, 5, 101, 5), (99, 2, 101, 5)], 0.0, 0.0, dict(side=SELL, price=98, qty=4),
     [(1, 2), (0, 2)]),
    ("post_only_never_takes", BOOKS3, [0.0, -0.0001, 0.0], 0.0, dict(price=100, flags=F_POST_ONLY), [(1, 5)]),
    ("directed_venue", BOOKS3, 0.0, 0.0, dict(venue=2, price=100), [(2, 5)]),
    ("directed_bad_venue", BOOKS3, 0.0, 0.0, dict(venue=3), R.BAD_VENUE),
    ("market_no_liquidity", [(99, 5, 0, 0), (99, 5, 0, 0)], 0.0, 0.0, dict(otype=OrderType.MARKET, price=0),
     R.NO_LIQUIDITY),
    ("bad_side", BOOKS3, 0.0, 0.0, dict(side=0), R.BAD_SIDE),
    ("bad_qty", BOOKS3, 0.0, 0.0, dict(qty=0), R.BAD_QTY),
    ("bad_symbol", BOOKS3, 0.0, 0.0, dict(symbol=9), R.BAD_SYMBOL),
]  # fmt: skip


@pytest.mark.parametrize("name,books,maker,taker,kw,expected", ROUTES, ids=[r[0] for r in ROUTES])
def test_routing_choice(name, books, maker, taker, kw, expected):
    router, tops = setup(books, maker, taker)
    sent = route(router, tops, order(**kw))
    if isinstance(expected, RejectReason):
        assert len(sent) == 0
        (rej,) = pending(router)
        assert rej["kind"] == X.REJECTED and rej["reason"] == expected and rej["qty"] == kw.get("qty", 5)
        assert router.rejects[expected] == 1
        return
    assert [(int(o["venue"]), int(o["qty"])) for o in sent] == expected
    assert all(o["kind"] == OrderAction.NEW and o["order_id"] > 0 and o["ts_origin"] == 77 for o in sent)
    assert len({int(o["order_id"]) for o in sent}) == len(sent)
    assert router.counters[C_SPLITS] == (1 if len(expected) > 1 else 0)
    assert len(pending(router)) == 0


def test_disabled_venue_is_skipped():
    router, tops = setup([(99, 5, 100, 9), (99, 5, 99, 9)], enabled=np.array([[1, 1], [0, 1]]))
    assert [int(o["venue"]) for o in route(router, tops, order(price=100))] == [0]


def test_venue_quote_mid_write_counts_as_no_quote():
    """A venue whose top-of-book entry stays mid-write (its writer died between the two sequence stores) is
    routed around as if it had no quote, and counted; the split uses the sizes of one consistent read."""
    router, tops = setup([(99, 5, 100, 9), (99, 5, 101, 2), (99, 5, 102, 9)])
    tops.entries[0, 0, SEQ] += 1  # venue 0's entry, odd for ever
    sent = route(router, tops, order(price=102, qty=5))
    assert [(int(o["venue"]), int(o["qty"])) for o in sent] == [(1, 2), (2, 3)]
    assert router.counters[C_TOPS_UNAVAILABLE] == 1


def _parent(router, child):
    ot = router.ot
    return ot.cols[ot_slot(ot, int(child["order_id"])), OC_PARENT]


def test_lifecycle_ack_partial_fill():
    router, tops = setup([(99, 5, 101, 5)])
    (child,) = route(router, tops, order(price=100, qty=5))
    ot = router.ot
    p = _parent(router, child)
    assert ot.cols[p, OC_STATE] == S.SENT and ot.cols[ot_slot(ot, int(child["order_id"])), OC_STATE] == S.SENT
    assert kinds(to_risk(router, venue_report(child, X.ACK, leaves=5))) == [("ACK", 0, 5, 0)]
    assert kinds(to_risk(router, venue_report(child, X.PARTIAL_FILL, 2, leaves=3))) == [("PARTIAL_FILL", 2, 3, 2)]
    fwd = to_risk(router, venue_report(child, X.FILL, 3, leaves=0, fee=0.25))
    assert kinds(fwd) == [("FILL", 3, 0, 5)]
    assert fwd[0]["order_id"] == ot.cols[p, OC_ID] and fwd[0]["fee"] == 0.25 and fwd[0]["side"] == BUY
    assert ot.cols[p, OC_STATE] == S.FILLED and ot.cols[p, OC_LIVE_CHILDREN] == 0 and ot.meta[M_INVALID] == 0


def test_split_children_aggregate_into_one_parent():
    router, tops = setup(BOOKS3)
    a, b = route(router, tops, order(price=100, qty=10, tif=TimeInForce.IOC))
    assert kinds(to_risk(router, venue_report(a, X.FILL, 7))) == [("PARTIAL_FILL", 7, 3, 7)]
    # venue 1's size was gone: the IOC child expires; the parent ends EXPIRED, releasing the 3 unfilled lots
    assert kinds(to_risk(router, venue_report(b, X.EXPIRED))) == [("EXPIRED", 3, 0, 7)]
    assert router.ot.cols[_parent(router, a), OC_STATE] == S.EXPIRED


def test_split_all_filled_is_one_fill():
    router, tops = setup(BOOKS3)
    a, b = route(router, tops, order(price=100, qty=10))
    assert kinds(to_risk(router, venue_report(b, X.FILL, 3))) == [("PARTIAL_FILL", 3, 7, 3)]
    assert kinds(to_risk(router, venue_report(a, X.PARTIAL_FILL, 4, leaves=3))) == [("PARTIAL_FILL", 4, 3, 7)]
    assert kinds(to_risk(router, venue_report(a, X.FILL, 3))) == [("FILL", 3, 0, 10)]


def test_cancel_then_fill_then_canceled():
    router, tops = setup([(99, 5, 101, 5)])
    (child,) = route(router, tops, order(price=100, qty=5))
    to_risk(router, venue_report(child, X.ACK, leaves=5))
    pid = router.ot.cols[_parent(router, child), OC_ID]
    (c,) = route(router, tops, order(kind=OrderAction.CANCEL, order_id=pid))
    assert c["kind"] == OrderAction.CANCEL and c["order_id"] == child["order_id"] and c["venue"] == 0
    # a fill crossed the cancel on the wire: valid, forwarded
    assert kinds(to_risk(router, venue_report(child, X.PARTIAL_FILL, 1, leaves=4))) == [("PARTIAL_FILL", 1, 4, 1)]
    assert kinds(to_risk(router, venue_report(child, X.CANCELED))) == [("CANCELED", 4, 0, 1)]
    assert router.ot.cols[_parent(router, child), OC_STATE] == S.CANCELED
    assert router.ot.meta[M_INVALID] == 0


def test_second_cancel_is_refused_and_counted():
    router, tops = setup([(99, 5, 101, 5)])
    (child,) = route(router, tops, order(price=100))
    pid = router.ot.cols[_parent(router, child), OC_ID]
    assert len(route(router, tops, order(kind=OrderAction.CANCEL, order_id=pid))) == 1
    assert len(route(router, tops, order(kind=OrderAction.CANCEL, order_id=pid))) == 0
    (rej,) = pending(router)
    assert rej["kind"] == X.CANCEL_REJECTED and rej["reason"] == R.INVALID_TRANSITION
    assert router.ot.invalid[S.CANCEL_PENDING, OrderEvent.CANCEL_REQUEST] == 1


def test_cancel_rejected_by_venue_restores_state():
    router, tops = setup([(99, 5, 101, 5)])
    (child,) = route(router, tops, order(price=100))
    to_risk(router, venue_report(child, X.ACK, leaves=5))
    pid = router.ot.cols[_parent(router, child), OC_ID]
    route(router, tops, order(kind=OrderAction.CANCEL, order_id=pid))
    assert kinds(to_risk(router, venue_report(child, X.CANCEL_REJECTED, leaves=5))) == [("CANCEL_REJECTED", 0, 5, 0)]
    assert router.ot.cols[_parent(router, child), OC_STATE] == S.ACKNOWLEDGED


@pytest.mark.parametrize("action", [OrderAction.CANCEL, OrderAction.REPLACE])
def test_unknown_order_id_is_refused(action):
    router, tops = setup([(99, 5, 101, 5)])
    assert len(route(router, tops, order(kind=action, order_id=12345))) == 0
    (rej,) = pending(router)
    assert rej["kind"] == X.CANCEL_REJECTED and rej["reason"] == R.UNKNOWN_ORDER and rej["qty"] == 0


def test_replace_single_child():
    router, tops = setup([(99, 5, 101, 5)])
    (child,) = route(router, tops, order(price=98, qty=5))
    to_risk(router, venue_report(child, X.ACK, leaves=5))
    pid = router.ot.cols[_parent(router, child), OC_ID]
    (r,) = route(router, tops, order(kind=OrderAction.REPLACE, order_id=pid, price=97, qty=8))
    assert (r["kind"], r["order_id"], r["price"], r["qty"]) == (OrderAction.REPLACE, child["order_id"], 97, 8)
    p = _parent(router, child)
    assert router.ot.cols[p, OC_STATE] == S.REPLACE_PENDING
    fwd = to_risk(router, venue_report(child, X.REPLACED, price=97, leaves=8))
    assert kinds(fwd) == [("REPLACED", 5, 8, 0)] and fwd[0]["price"] == 97
    assert (
        router.ot.cols[p, OC_STATE] == S.ACKNOWLEDGED
        and router.ot.cols[p, OC_QTY] == 8
        and router.ot.cols[p, OC_PRICE] == 97
    )


def test_replace_split_order_is_refused():
    router, tops = setup(BOOKS3)
    a, _b = route(router, tops, order(price=100, qty=10))
    pid = router.ot.cols[_parent(router, a), OC_ID]
    assert len(route(router, tops, order(kind=OrderAction.REPLACE, order_id=pid, price=99, qty=10))) == 0
    assert pending(router)[0]["reason"] == R.REPLACE_SPLIT


def test_cancel_all_one_per_venue():
    router, tops = setup(BOOKS3)
    route(router, tops, order(price=100, qty=10))
    route(router, tops, order(price=90, qty=1, side=BUY, symbol=1))
    sent = route(router, tops, order(kind=OrderAction.CANCEL_ALL, symbol=0))
    assert [(int(o["kind"]), int(o["venue"]), int(o["symbol"])) for o in sent] == [(4, 0, 0), (4, 1, 0), (4, 2, 0)]
    ot = router.ot
    parents = [i for i in range(len(ot.cols)) if ot.cols[i, OC_ID] and ot.cols[i, OC_PARENT] == -1]
    assert sorted(int(ot.cols[p, OC_STATE]) for p in parents) == [S.SENT, S.CANCEL_PENDING]


def test_all_children_rejected_rejects_parent():
    router, tops = setup(BOOKS3)
    a, b = route(router, tops, order(price=100, qty=10))
    assert to_risk(router, venue_report(a, X.REJECTED)).size == 0
    assert kinds(to_risk(router, venue_report(b, X.REJECTED))) == [("REJECTED", 10, 0, 0)]
    assert router.ot.cols[_parent(router, a), OC_STATE] == S.REJECTED


def test_halted_router_sends_nothing():
    router, tops = setup([(99, 5, 101, 5)])
    (child,) = route(router, tops, order(price=100))
    router_halt(router)
    assert len(route(router, tops, order(price=100))) == 0
    assert len(route(router, tops, order(kind=OrderAction.CANCEL_ALL, symbol=-1))) == 0
    rej = pending(router)
    assert [(int(r["kind"]), int(r["reason"]), int(r["qty"])) for r in rej] == [
        (X.REJECTED, R.ROUTER_HALTED, 5), (X.CANCEL_REJECTED, R.ROUTER_HALTED, 0)]  # fmt: skip
    # reports for orders already out are still processed
    assert kinds(to_risk(router, venue_report(child, X.FILL, 5))) == [("FILL", 5, 0, 5)]


def test_unknown_and_invalid_reports_are_counted_not_forwarded():
    router, tops = setup([(99, 5, 101, 5)])
    (child,) = route(router, tops, order(price=100))
    fake = venue_report(child, X.ACK)
    fake["order_id"] = 999
    assert to_risk(router, fake).size == 0 and router.counters[C_UNKNOWN_REPORTS] == 1
    to_risk(router, venue_report(child, X.CANCELED))
    assert to_risk(router, venue_report(child, X.FILL, 5)).size == 0  # a fill after CANCELED: invalid
    assert router.ot.invalid[S.CANCELED, OrderEvent.FILL] == 1


def test_table_full_refuses():
    router, tops = setup([(99, 5, 101, 5)], capacity=4)
    route(router, tops, order(price=100))  # parent id 1 + child id 2: both live
    assert len(route(router, tops, order(price=100))) == 1  # parent 3, child 4 (slots 3, 0)
    assert len(route(router, tops, order(price=100))) == 0  # id 5 -> slot 1 (live parent 1)
    assert pending(router)[-1]["reason"] == R.TABLE_FULL


def test_risk_open_quantity_returns_to_zero_through_the_router():
    """risk -> router -> (venue reports) -> router -> risk: the open quantity risk holds is released exactly."""
    from hean.records import BOOK_STATE

    risk = make_risk(2, capital=1e6)
    bs = np.zeros(1, BOOK_STATE)
    bs[0]["bid_px"], bs[0]["ask_px"], bs[0]["mid"] = 99, 100, 99.5
    risk_on_book(risk, bs[0], NOW, np.zeros(2, ORDER), 0)
    router, tops = setup(BOOKS3)
    fwd = np.zeros(1, ORDER)
    assert risk_on_intent(risk, order(price=100, qty=10), NOW, fwd, 0) == 1
    a, b = route(router, tops, fwd[0])
    assert risk.open_buy[0] == 10 and risk.open_count[0] == 1
    for rep in (venue_report(a, X.PARTIAL_FILL, 2, leaves=5), venue_report(b, X.CANCELED),
                venue_report(a, X.FILL, 5)):  # fmt: skip
        for r in to_risk(router, rep):
            risk_on_report(risk, r)
    assert risk.open_buy[0] == 0 and risk.open_count[0] == 0 and risk.pos.position_lots[0] == 7


def test_cancel_by_side_resolves_the_strategys_live_order():
    router, tops = setup([(99, 5, 101, 5)])
    (child,) = route(router, tops, order(price=100))
    (c,) = route(router, tops, order(kind=OrderAction.CANCEL, order_id=0, side=BUY))
    assert c["kind"] == OrderAction.CANCEL and c["order_id"] == child["order_id"]
    assert len(route(router, tops, order(kind=OrderAction.CANCEL, order_id=0, side=SELL))) == 0
    assert pending(router)[0]["reason"] == R.UNKNOWN_ORDER


def test_replace_by_side_resolves_the_live_order():
    router, tops = setup([(99, 5, 101, 5)])
    (child,) = route(router, tops, order(price=98))
    to_risk(router, venue_report(child, X.ACK, leaves=5))
    (r,) = route(router, tops, order(kind=OrderAction.REPLACE, order_id=0, side=BUY, price=97, qty=5))
    assert (r["kind"], r["order_id"], r["price"]) == (OrderAction.REPLACE, child["order_id"], 97)


def test_replace_by_side_with_nothing_live_is_a_new_order_risk_counts_once():
    from hean.records import BOOK_STATE, F_OPENS_ORDER

    risk = make_risk(2, capital=1e6)
    bs = np.zeros(1, BOOK_STATE)
    bs[0]["bid_px"], bs[0]["ask_px"], bs[0]["mid"] = 99, 101, 100.0
    risk_on_book(risk, bs[0], NOW, np.zeros(2, ORDER), 0)
    router, tops = setup([(99, 5, 101, 5)])
    fwd = np.zeros(1, ORDER)

    def through_risk(rec):
        assert risk_on_intent(risk, rec, NOW, fwd, 0) == 1
        return route(router, tops, fwd[0])

    (child,) = through_risk(order(price=98, qty=2))
    for r in to_risk(router, venue_report(child, X.FILL, 2)):  # the quote is filled: nothing live on BUY
        risk_on_report(risk, r)
    assert risk.open_count[0] == 0 and risk.pos.position_lots[0] == 2
    (new,) = through_risk(order(kind=OrderAction.REPLACE, order_id=0, side=BUY, price=97, qty=3))
    assert new["kind"] == OrderAction.NEW and new["qty"] == 3 and new["order_id"] != child["order_id"]
    (ack,) = to_risk(router, venue_report(new, X.ACK, leaves=3))
    assert ack["flags"] & F_OPENS_ORDER
    risk_on_report(risk, ack)
    assert (risk.open_buy[0], risk.open_count[0]) == (3, 1)
    (fill,) = to_risk(router, venue_report(new, X.FILL, 3))
    assert not fill["flags"] & F_OPENS_ORDER
    risk_on_report(risk, fill)
    assert (risk.open_buy[0], risk.open_count[0], risk.pos.position_lots[0]) == (0, 0, 5)


def test_refused_upsert_is_a_cancel_reject():
    router, tops = setup([(99, 5, 0, 0)])
    rec = order(kind=OrderAction.REPLACE, order_id=0, side=BUY, otype=OrderType.MARKET, price=0)
    assert len(route(router, tops, rec)) == 0
    (rej,) = pending(router)
    assert rej["kind"] == X.CANCEL_REJECTED and rej["reason"] == R.NO_LIQUIDITY and rej["qty"] == 0


def test_fees_are_one_for_all_venues_or_one_per_venue_and_a_bad_one_is_named():
    r = make_router(1, 2, maker_fee=-0.0001, taker_fee=[0.0004, 0.001])
    assert r.fees.tolist() == [[-0.0001, -0.0001], [0.0004, 0.001]]
    for kw, message in (
        (dict(maker_fee=[0.0, 0.2]), r"maker_fee must be finite fractions of notional below 10 %, got \[0.0, 0.2\]"),
        (dict(taker_fee=float("nan")), "taker_fee must be finite fractions of notional below 10 %, got nan"),
        (dict(taker_fee=[0.1, 0.0, 0.0]), "broadcast"),
    ):
        with pytest.raises(ValueError, match=message):
            make_router(1, 2, **kw)
