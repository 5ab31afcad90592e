"""The L3 book against a dict-of-lists reference: queues, aggregation, queue position, status codes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hean.records import ASK, BID, BOOK_STATE, F_LAST_IN_GROUP, MARKET_EVENT, BookStateKind, EventKind
from hean.stages.book import ERR_QTY, ERR_SIDE, ERR_SYMBOL, l2_best_ask, l2_best_bid, l2_depth, l2_level_qty
from hean.stages.l3book import (
    ERR_DUPLICATE,
    ERR_FULL,
    ERR_UNKNOWN_ORDER,
    OK,
    l3_add,
    l3_apply,
    l3_cancel,
    l3_clear,
    l3_delete,
    l3_execute,
    l3_modify,
    l3_on_event,
    l3_order,
    l3_queue_position,
    make_l3_book,
)
from hean.stages.trades import make_trade_stats


class Ref:
    """Orders in FIFO lists per (side, price)."""

    def __init__(self):
        self.orders = {}  # oid -> [side, px, qty]
        self.queues = {}  # (side, px) -> [oid, ...]

    def add(self, side, oid, px, qty):
        self.orders[oid] = [side, px, qty]
        self.queues.setdefault((side, px), []).append(oid)

    def remove(self, oid):
        side, px, _ = self.orders.pop(oid)
        q = self.queues[(side, px)]
        q.remove(oid)
        if not q:
            del self.queues[(side, px)]

    def reduce(self, oid, qty):
        if qty >= self.orders[oid][2]:
            self.remove(oid)
        else:
            self.orders[oid][2] -= qty

    def modify(self, oid, px, qty):
        side, old_px, old_qty = self.orders[oid]
        if qty == 0:
            self.remove(oid)
        elif px == old_px and qty <= old_qty:
            self.orders[oid][2] = qty
        else:
            self.remove(oid)
            self.add(side, oid, px, qty)

    def levels(self, side):
        lv = {px: sum(self.orders[o][2] for o in q) for (s, px), q in self.queues.items() if s == side}
        return sorted(lv.items(), reverse=(side == BID))

    def position(self, oid):
        side, px, _ = self.orders[oid]
        q = self.queues[(side, px)]
        ahead = q[: q.index(oid)]
        return sum(self.orders[o][2] for o in ahead), len(ahead)


def check(book, ref):
    for side in (BID, ASK):
        lv = ref.levels(side)
        px = np.zeros(len(lv) + 2, np.int64)
        qty = np.zeros(len(lv) + 2, np.int64)
        n = l2_depth(book.l2, 0, side, len(px), px, qty)
        assert list(zip(px[:n].tolist(), qty[:n].tolist(), strict=True)) == lv
    for oid, (side, px, qty) in ref.orders.items():
        assert l3_order(book, oid) == (side, px, qty)
        assert l3_queue_position(book, oid) == ref.position(oid)


def test_queue_priority_table():
    b = make_l3_book(1, max_orders=16, max_levels=8)
    ref = Ref()
    for oid, side, px, q in [(1, BID, 100, 5), (2, BID, 100, 3), (3, BID, 100, 2), (4, ASK, 101, 7), (5, BID, 99, 1)]:
        assert l3_add(b, 0, side, oid, px, q) == OK
        ref.add(side, oid, px, q)
    check(b, ref)
    assert l3_queue_position(b, 3) == (8, 2)
    assert l3_modify(b, 1, 100, 4) == OK  # smaller at the same price: keeps its place
    ref.modify(1, 100, 4)
    assert l3_queue_position(b, 1) == (0, 0)
    assert l3_modify(b, 1, 100, 9) == OK  # larger: to the back
    ref.modify(1, 100, 9)
    assert l3_queue_position(b, 1) == (5, 2)
    assert l3_execute(b, 2, 3) == OK  # fully executed
    ref.reduce(2, 3)
    assert l3_cancel(b, 3, 1) == OK
    ref.reduce(3, 1)
    assert l3_modify(b, 5, 102, 1) == OK  # price change moves the order to another level
    ref.modify(5, 102, 1)
    check(b, ref)
    assert l2_best_bid(b.l2, 0) == (102, 1) and l2_best_ask(b.l2, 0) == (101, 7)
    assert l3_delete(b, 4) == OK
    ref.remove(4)
    check(b, ref)
    l3_clear(b, 0)
    assert l2_best_bid(b.l2, 0) == (0, 0) and l3_order(b, 1) == (0, 0, 0)
    assert b.counts.tolist() == [16, 8]  # every slot back on the free lists


def test_status_codes():
    b = make_l3_book(1, max_orders=2, max_levels=2)
    assert l3_add(b, 0, 0, 1, 100, 1) == ERR_SIDE
    assert l3_add(b, 0, BID, 1, 100, 0) == ERR_QTY
    assert l3_add(b, 1, BID, 1, 100, 1) == ERR_SYMBOL
    assert l3_add(b, 0, BID, 1, 100, 1) == OK
    assert l3_add(b, 0, BID, 1, 100, 1) == ERR_DUPLICATE
    assert l3_add(b, 0, BID, 2, 99, 1) == OK
    assert l3_add(b, 0, BID, 3, 98, 1) == ERR_FULL
    for f in (lambda: l3_cancel(b, 9, 1), lambda: l3_delete(b, 9), lambda: l3_modify(b, 9, 1, 1)):
        assert f() == ERR_UNKNOWN_ORDER
    assert l3_queue_position(b, 9) == (-1, -1)


def test_stage_kernel_groups_and_executions():
    b = make_l3_book(1)
    stats = make_trade_stats(1)
    ev = np.zeros(4, MARKET_EVENT)
    ev["kind"] = [EventKind.L3_ADD, EventKind.L3_ADD, EventKind.L3_EXECUTE, EventKind.L3_DELETE]
    ev["side"] = [BID, ASK, 0, 0]
    ev["price"] = [100, 102, 0, 0]
    ev["qty"] = [5, 4, 2, 0]
    ev["order_id"] = [1, 2, 1, 2]
    ev["flags"] = [0, F_LAST_IN_GROUP, F_LAST_IN_GROUP, F_LAST_IN_GROUP]
    out = np.zeros(4, BOOK_STATE)
    k = 0
    for e in ev:
        k += l3_on_event(b, stats, e, out, k, 0)
    assert k == 3
    assert out["bid_qty"].tolist()[:3] == [5, 3, 3] and out["ask_px"].tolist()[:3] == [102, 102, 0]
    assert out["last_trade_px"][1] == 100 and out["last_trade_qty"][1] == 2
    assert stats.last[0, 2] == ASK  # the aggressor sold into the resting bid
    assert out["kind"][1] == BookStateKind.QUOTE  # the execute ended its group
    assert l3_apply(b, ev[0]) == ERR_DUPLICATE or l2_level_qty(b.l2, 0, BID, 100) == 3


ops = st.lists(
    st.tuples(
        st.sampled_from(["add", "cancel", "delete", "modify", "exec"]),
        st.integers(1, 40),
        st.sampled_from([BID, ASK]),
        st.integers(90, 110),
        st.integers(1, 9),
    ),  # fmt: skip
    max_size=300,
)


@settings(max_examples=60, deadline=None)
@given(ops)
def test_random_against_reference(stream):
    b = make_l3_book(1, max_orders=64, max_levels=64, window=16, overflow=64)
    ref = Ref()
    for op, oid, side, px, q in stream:
        known = oid in ref.orders
        if op == "add":
            assert l3_add(b, 0, side, oid, px, q) == (ERR_DUPLICATE if known else OK)
            if not known:
                ref.add(side, oid, px, q)
        elif not known:
            continue
        elif op == "cancel":
            assert l3_cancel(b, oid, q) == OK
            ref.reduce(oid, q)
        elif op == "exec":
            assert l3_execute(b, oid, q) == OK
            ref.reduce(oid, q)
        elif op == "delete":
            assert l3_delete(b, oid) == OK
            ref.remove(oid)
        else:
            assert l3_modify(b, oid, px, q) == OK
            ref.modify(oid, px, q)
    check(b, ref)


@pytest.mark.parametrize("n", [1, 1000])
def test_hash_maps_survive_churn(n):
    """Many adds/deletes through the same slots: backward-shift deletion keeps every id findable."""
    b = make_l3_book(1, max_orders=max(n, 8), max_levels=max(n, 8))
    rng = np.random.default_rng(n)
    live = set()
    for _ in range(5000):
        oid = int(rng.integers(1, 3 * max(n, 8)))
        if oid in live:
            assert l3_delete(b, oid) == OK
            live.remove(oid)
        elif len(live) < max(n, 8):
            assert l3_add(b, 0, BID, oid, 100 + oid % 7, 1) == OK
            live.add(oid)
    for oid in live:
        assert l3_order(b, oid)[2] == 1
