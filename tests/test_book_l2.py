"""The L2 book kernels against a plain dict reference book: table-driven cases and random update streams."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hean.records import (
    ASK,
    BID,
    BOOK_STATE,
    F_CROSSED,
    F_LAST_IN_GROUP,
    F_STALE,
    MARKET_EVENT,
    BookStateKind,
    EventKind,
)
from hean.stages.book import (
    ERR_OVERFLOW,
    ERR_QTY,
    ERR_SIDE,
    ERR_SYMBOL,
    I_LOST,
    IGNORED,
    LO_NONE,
    NO_PRICE,
    OK,
    book_on_event,
    book_replay_states,
    l2_apply,
    l2_best_ask,
    l2_best_bid,
    l2_clear,
    l2_depth,
    l2_fill_state,
    l2_level_qty,
    l2_n_levels,
    l2_next_level,
    l2_set_level,
    make_l2_book,
)
from hean.stages.trades import make_trade_stats


def ev(kind, sym=0, side=0, px=0, qty=0, flags=0, uid=0, ts=0):
    e = np.zeros(1, MARKET_EVENT)[0]
    e["kind"], e["symbol"], e["side"], e["price"], e["qty"] = kind, sym, side, px, qty
    e["flags"], e["update_id"], e["ts_origin"] = flags, uid, ts
    return e


class RefBook:
    """The simplest correct book: one dict per side."""

    def __init__(self):
        self.side = {BID: {}, ASK: {}}

    def set(self, side, px, q):
        if q:
            self.side[side][px] = q
        else:
            self.side[side].pop(px, None)

    def levels(self, side):
        return sorted(self.side[side].items(), reverse=(side == BID))


def check_against(book, sym, ref):
    for side in (BID, ASK):
        lv = ref.levels(side)
        best = (l2_best_bid if side == BID else l2_best_ask)(book, sym)
        assert best == (lv[0] if lv else (0, 0))
        px = np.zeros(len(lv) + 4, np.int64)
        qty = np.zeros(len(lv) + 4, np.int64)
        n = l2_depth(book, sym, side, len(px), px, qty)
        assert list(zip(px[:n].tolist(), qty[:n].tolist(), strict=True)) == lv
        assert l2_n_levels(book, sym, side) == len(lv)
        walk = []
        p = l2_next_level(book, sym, side, 10**12 if side == BID else -(10**12))
        while p != NO_PRICE:
            walk.append(p)
            assert l2_level_qty(book, sym, side, p) == ref.side[side][p]
            p = l2_next_level(book, sym, side, p)
        assert walk == [p for p, _ in lv]


@pytest.mark.parametrize(
    "ops, bid, ask",
    [
        ([(BID, 100, 5)], (100, 5), (0, 0)),
        ([(ASK, 101, 7)], (0, 0), (101, 7)),
        ([(BID, 100, 5), (BID, 99, 3), (BID, 100, 0)], (99, 3), (0, 0)),
        ([(BID, 100, 5), (BID, 100, 9)], (100, 9), (0, 0)),
        ([(ASK, 101, 1), (ASK, 90_000, 2), (ASK, 101, 0)], (0, 0), (90_000, 2)),  # far level from overflow
        ([(BID, 100, 1), (BID, 100_000, 2)], (100_000, 2), (0, 0)),  # jump far up
        ([(BID, 100, 1), (BID, 50, 1), (BID, 100, 0), (BID, 50, 0)], (0, 0), (0, 0)),
        ([(ASK, 10, 1), (ASK, 10, 0), (ASK, 10, 0)], (0, 0), (0, 0)),  # deleting a missing level is a no-op
        ([(BID, -5, 2), (ASK, -3, 1)], (-5, 2), (-3, 1)),  # negative prices are prices
    ],
)
def test_table(ops, bid, ask):
    book = make_l2_book(1, window=16, overflow=64)
    ref = RefBook()
    for side, px, q in ops:
        assert l2_set_level(book, 0, 0 if side == BID else 1, px, q) == OK
        ref.set(side, px, q)
    assert l2_best_bid(book, 0) == bid
    assert l2_best_ask(book, 0) == ask
    check_against(book, 0, ref)


def test_status_codes():
    book = make_l2_book(2, window=16, overflow=2)
    assert l2_apply(book, ev(EventKind.LEVEL_SET, sym=2, side=BID, px=1, qty=1)) == ERR_SYMBOL
    assert l2_apply(book, ev(EventKind.LEVEL_SET, sym=-1, side=BID, px=1, qty=1)) == ERR_SYMBOL
    assert l2_apply(book, ev(EventKind.LEVEL_SET, side=0, px=1, qty=1)) == ERR_SIDE
    assert l2_apply(book, ev(EventKind.LEVEL_SET, side=BID, px=1, qty=-1)) == ERR_QTY
    assert l2_apply(book, ev(EventKind.TRADE, side=BID, px=1, qty=1)) == IGNORED
    assert l2_apply(book, ev(EventKind.TICKER, side=BID, px=1, qty=1)) == IGNORED
    # the direct kernel checks its indices too (it would otherwise write outside the book's arrays)
    assert l2_set_level(book, 2, 0, 1, 1) == ERR_SYMBOL
    assert l2_set_level(book, -1, 0, 1, 1) == ERR_SYMBOL
    assert l2_set_level(book, 0, 2, 1, 1) == ERR_SIDE
    assert l2_set_level(book, 0, -1, 1, 1) == ERR_SIDE
    assert l2_best_bid(book, 0) == (0, 0)
    # overflow full: the third far level is lost, counted, and the book is stale until the next CLEAR
    assert l2_apply(book, ev(EventKind.LEVEL_SET, side=ASK, px=100, qty=1)) == OK
    for px in (1000, 2000):
        assert l2_apply(book, ev(EventKind.LEVEL_SET, side=ASK, px=px, qty=1)) == OK
    assert l2_apply(book, ev(EventKind.LEVEL_SET, side=ASK, px=3000, qty=1)) == ERR_OVERFLOW
    assert book.info[0, I_LOST] == 1
    out = np.zeros(1, BOOK_STATE)
    assert l2_fill_state(book, 0, out, 0, 0, 0) & F_STALE
    l2_apply(book, ev(EventKind.CLEAR, flags=0))
    assert not l2_fill_state(book, 0, out, 0, 0, 0) & F_STALE


def test_recenter_spills_to_overflow_and_back():
    """Levels pushed out of the window when the touch moves far are kept and come back in order."""
    book = make_l2_book(1, window=16, overflow=64)
    ref = RefBook()
    for px in range(100, 90, -1):
        l2_set_level(book, 0, 0, px, px)
        ref.set(BID, px, px)
    l2_set_level(book, 0, 0, 200, 1)  # new best 100 ticks above: the old window spills into the overflow
    ref.set(BID, 200, 1)
    check_against(book, 0, ref)
    l2_set_level(book, 0, 0, 200, 0)  # best drops back: the window moves down and reloads them
    ref.set(BID, 200, 0)
    check_against(book, 0, ref)
    for px in range(100, 90, -1):
        l2_set_level(book, 0, 0, px, 0)
        ref.set(BID, px, 0)
    check_against(book, 0, ref)


def test_fill_state_derived_values_and_flags():
    book = make_l2_book(1)
    stats = make_trade_stats(1)
    out = np.zeros(4, BOOK_STATE)
    group = [
        ev(EventKind.CLEAR, uid=7, ts=10),
        ev(EventKind.LEVEL_SET, side=BID, px=100, qty=3, uid=7, ts=10),
        ev(EventKind.LEVEL_SET, side=ASK, px=102, qty=1, uid=7, ts=10, flags=F_LAST_IN_GROUP),
    ]
    assert [book_on_event(book, stats, e, out, 0, 0) for e in group] == [0, 0, 1]
    r = out[0]
    assert (r["bid_px"], r["bid_qty"], r["ask_px"], r["ask_qty"], r["spread"]) == (100, 3, 102, 1, 2)
    assert r["mid"] == 101.0 and r["kind"] == BookStateKind.QUOTE and r["update_id"] == 7
    assert r["microprice"] == pytest.approx((100 * 1 + 102 * 3) / 4)
    assert r["imbalance"] == pytest.approx(0.5)
    assert r["flags"] == 0 and r["ts_origin"] == 10
    # a trade prints: TRADE state with last trade and VWAP
    assert book_on_event(book, stats, ev(EventKind.TRADE, side=BID, px=102, qty=1, ts=11), out, 1, 0) == 1
    assert book_on_event(book, stats, ev(EventKind.TRADE, side=ASK, px=100, qty=3, ts=12), out, 2, 0) == 1
    assert out[2]["kind"] == BookStateKind.TRADE and out[2]["last_trade_px"] == 100
    assert out[2]["vwap"] == pytest.approx((102 + 300) / 4)
    # crossed, then out of sync
    l2_apply(book, ev(EventKind.LEVEL_SET, side=BID, px=103, qty=1))
    assert l2_fill_state(book, 0, out, 3, 0, 0) == F_CROSSED
    assert book_on_event(book, stats, ev(EventKind.OUT_OF_SYNC, ts=13), out, 3, 0) == 1
    assert out[3]["kind"] == BookStateKind.STATUS and out[3]["flags"] & F_STALE
    # time-based staleness: last update at ts 13, window 5 ns
    assert l2_fill_state(book, 0, out, 3, 100, 5) & F_STALE
    l2_apply(book, ev(EventKind.CLEAR, ts=100))
    assert l2_fill_state(book, 0, out, 3, 104, 5) == 0
    assert l2_fill_state(book, 0, out, 3, 106, 5) == F_STALE


def test_replay_states_counts_groups():
    events = np.zeros(5, MARKET_EVENT)
    events["kind"] = [EventKind.LEVEL_SET, EventKind.LEVEL_SET, EventKind.TICKER, EventKind.TRADE, 1]
    events["side"] = [BID, ASK, BID, BID, BID]
    events["price"] = [10, 11, 10, 11, 9]
    events["qty"] = [1, 1, 1, 1, 1]
    events["flags"] = [0, F_LAST_IN_GROUP, F_LAST_IN_GROUP, 0, F_LAST_IN_GROUP]
    out = np.zeros(5, BOOK_STATE)
    n = book_replay_states(make_l2_book(1), make_trade_stats(1), events, out, 0)
    assert n == 3
    assert out["kind"][:3].tolist() == [BookStateKind.QUOTE, BookStateKind.TRADE, BookStateKind.QUOTE]
    assert out["bid_px"][2] == 10 and out["bid_qty"][2] == 1


ops = st.lists(
    st.tuples(
        st.integers(0, 2),  # symbol
        st.sampled_from([BID, ASK]),
        st.integers(-300, 300),  # price: a wide range so the window (16) moves and spills often
        st.one_of(st.just(0), st.integers(1, 5)),
        st.booleans(),  # occasionally clear the symbol instead
    ),
    max_size=400,
)


@settings(max_examples=60, deadline=None)
@given(ops)
def test_random_streams_match_reference(stream):
    book = make_l2_book(3, window=16, overflow=700)
    refs = [RefBook() for _ in range(3)]
    for i, (sym, side, px, q, clear) in enumerate(stream):
        if clear and i % 37 == 0:
            l2_clear(book, sym)
            refs[sym] = RefBook()
            continue
        assert l2_set_level(book, sym, 0 if side == BID else 1, px, q) == OK
        refs[sym].set(side, px, q)
        lv = refs[sym].levels(side)
        assert (l2_best_bid if side == BID else l2_best_ask)(book, sym) == (lv[0] if lv else (0, 0))
    for sym in range(3):
        check_against(book, sym, refs[sym])


def test_batch_kernel_equals_per_event_kernel():
    """book_on_events (the expanded fast path) writes exactly what book_on_event writes, event by event."""
    from hean.feeds.synthetic import make_synthetic, synthetic_batch
    from hean.stages.book import book_on_events

    st = make_synthetic(4, 3, depth=30)
    events = np.zeros(4000 * 61, MARKET_EVENT)
    events = events[: synthetic_batch(st, events, 4000, 0, 7)]
    events["price"][::97] += 20_000  # some levels far outside the window (the overflow path)
    out_a = np.zeros(len(events), BOOK_STATE)
    out_b = np.zeros(len(events), BOOK_STATE)
    book_a, book_b = make_l2_book(4, window=64, overflow=4096), make_l2_book(4, window=64, overflow=4096)
    stats_a, stats_b = make_trade_stats(4), make_trade_stats(4)
    n_a = book_on_events(book_a, stats_a, events, 0, len(events), out_a, 0, 0)
    n_b = 0
    for e in events:
        n_b += book_on_event(book_b, stats_b, e, out_b, n_b, 0)
    assert n_a == n_b > 4000
    assert out_a[:n_a].tobytes() == out_b[:n_b].tobytes()
    for a, b in zip(book_a, book_b, strict=True):
        assert np.array_equal(a, b)


def test_apply_events_equals_per_event_apply_including_info():
    """l2_apply_events writes the info columns once per run of one symbol's level sets: the book and every
    info column (update id, stamps, applied and error counts) end exactly as with l2_apply per event, with
    runs broken by CLEARs, bad sides, negative quantities and symbol changes."""
    from hean.feeds.synthetic import make_synthetic, synthetic_batch
    from hean.stages.book import l2_apply_events

    st = make_synthetic(3, 5, depth=20)
    events = np.zeros(3000 * 41, MARKET_EVENT)
    events = events[: synthetic_batch(st, events, 3000, 0, 11)]
    events["update_id"] = np.arange(len(events))
    events["ts_origin"] = np.arange(len(events)) * 7
    events["ts_exch"] = np.arange(len(events)) * 3
    events["side"][::211] = 5  # bad side
    events["qty"][::307] = -1  # negative quantity
    events["kind"][::499] = int(EventKind.CLEAR)
    events["price"][::97] += 20_000  # far levels: the overflow path
    book_a, book_b = make_l2_book(3, window=64, overflow=4096), make_l2_book(3, window=64, overflow=4096)
    bad = l2_apply_events(book_a, events, -5, len(events) + 5)  # a range past either end is clipped
    statuses = [l2_apply(book_b, e) for e in events]
    assert bad == sum(s < 0 for s in statuses) > 0
    for name, a, b in zip(book_a._fields, book_a, book_b, strict=True):
        assert np.array_equal(a, b), name


@pytest.mark.parametrize("side", [BID, ASK])
def test_an_emptied_side_places_its_window_afresh(side):
    """After its last level goes, a side takes its next level through the slow path, which centres the
    window on it (best W/8 above the window's low end), wherever the old window was."""
    book = make_l2_book(1, window=64, overflow=16)
    s = 0 if side == BID else 1
    for px in (1000, 5000, 100_000):
        l2_set_level(book, 0, s, px, 3)
        l2_set_level(book, 0, s, px, 0)
        assert (l2_best_bid if side == BID else l2_best_ask)(book, 0) == (0, 0)
        assert l2_n_levels(book, 0, side) == 0 and book.lo[0, s] == LO_NONE
    l2_set_level(book, 0, s, 7777, 2)
    key = -7777 if side == BID else 7777
    assert book.best[0, s] == key and book.lo[0, s] == key - 64 // 8
    assert (l2_best_bid if side == BID else l2_best_ask)(book, 0) == (7777, 2)
