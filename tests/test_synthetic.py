"""The synthetic feed: deterministic by seed whatever the batching, well-formed groups, a consistent book."""

from __future__ import annotations

import numpy as np

from hean.feeds.synthetic import make_synthetic, max_events_per_message, synthetic_batch, synthetic_next
from hean.records import ASK, BID, F_LAST_IN_GROUP, MARKET_EVENT, EventKind
from hean.stages.book import l2_apply, l2_best_ask, l2_best_bid, l2_depth, make_l2_book

N_MSG = 3000


def generate(seed, batches):
    st = make_synthetic(3, seed)
    out = np.zeros(N_MSG * max_events_per_message(st), MARKET_EVENT)
    k = 0
    done = 0
    for b in batches:
        k += synthetic_batch(st, out[k:], b, 1_000 + done * 10, 10)
        done += b
    return out[:k]


def test_deterministic_by_seed_regardless_of_batches():
    a = generate(7, [N_MSG])
    b = generate(7, [1, 2, 997, 1000, 1000])
    assert a.tobytes() == b.tobytes()
    assert generate(8, [N_MSG]).tobytes() != a.tobytes()
    assert a["seq"].tolist() == list(range(1, len(a) + 1))


def test_groups_and_book_consistency():
    st = make_synthetic(3, 42, depth=8)
    book = make_l2_book(3, window=64, overflow=64)
    out = np.zeros(max_events_per_message(st), MARKET_EVENT)
    kinds = set()
    px = np.zeros(8, np.int64)
    qty = np.zeros(8, np.int64)
    for m in range(N_MSG):
        n = synthetic_next(st, out, 0, m)
        assert 1 <= n <= len(out)
        assert out["flags"][n - 1] & F_LAST_IN_GROUP
        for e in out[:n]:
            kinds.add(int(e["kind"]))
            assert l2_apply(book, e) >= 0
        sym = int(out["symbol"][0])
        if not st.snapped[sym]:
            continue
        bid, ask = l2_best_bid(book, sym), l2_best_ask(book, sym)
        assert bid == (st.bid_px[sym], st.bid_qty[sym, 0])
        assert ask == (st.ask_px[sym], st.ask_qty[sym, 0])
        assert 1 <= ask[0] - bid[0] <= 3  # never crossed, spread bounded
        assert l2_depth(book, sym, BID, 8, px, qty) == 8
        assert px.tolist() == [st.bid_px[sym] - i for i in range(8)] and qty.tolist() == st.bid_qty[sym].tolist()
        assert l2_depth(book, sym, ASK, 8, px, qty) == 8
        assert px.tolist() == [st.ask_px[sym] + i for i in range(8)] and qty.tolist() == st.ask_qty[sym].tolist()
    assert kinds == {EventKind.CLEAR, EventKind.LEVEL_SET, EventKind.TRADE}
    # the mid random-walks away from where it started
    assert all(st.bid_px[s] != 100_000 * (s + 1) for s in range(3))
