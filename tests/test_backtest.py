"""A user strategy outside the package, end to end: ``hean.backtest`` against ``hean replay`` (identical fills) and
across placements (identical digests), several strategies attributed in one run, the result tables."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

import hean
from hean import api as A
from hean.records import A_NEW, BUY, SELL

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from digests import run_lockstep  # noqa: E402

RECORDING = str(ROOT / "tests" / "data" / "binance-usdm-btcusdt-20240808.gz")
FEED = {"feed.source": "replay", "feed.path": RECORDING, "feed.format": "binance-usdm", "feed.pace": "fast"}

# A quoter written in a user's folder: one post-only quote per side, ``offset`` ticks outside the price of
# depth level ``level`` (0: the touch), moved when that level moves; it counts its fills in its state. Its
# orders depend on the depth it reads, so equal digests across placements mean equal depth in each.
QUOTER = """
import numpy as np
from hean.api import (BUY, SELL, GTC, OPEN, POST_ONLY, Strategy, callback, limit, order_price, order_state,
                      position, replace, is_live, bid_level, ask_level, X_FILL, X_PARTIAL)

STATE = [("bid", "i8"), ("ask", "i8"), ("fills", "i8")]

@callback
def side(ctx, s, cid, want, sd):
    if not is_live(ctx, cid):
        if abs(position(ctx, s)) < np.int64(ctx.params.max_position):
            return limit(ctx, s, sd, want, 1, GTC, POST_ONLY)
        return cid
    if order_state(ctx, cid) == OPEN and order_price(ctx, cid) != want:
        replace(ctx, cid, want, 1)
    return cid

@callback
def on_book(ctx, s):
    b = ctx.book[s]
    if b.bid_px <= 0 or b.ask_px <= b.bid_px:
        return
    level = np.int64(ctx.params.level)
    bid, _ = bid_level(ctx, s, level)
    ask, _ = ask_level(ctx, s, level)
    if bid <= 0 or ask <= 0:
        return
    st = ctx.state[s]
    st.bid = side(ctx, s, st.bid, bid - np.int64(ctx.params.offset), BUY)
    st.ask = side(ctx, s, st.ask, ask + np.int64(ctx.params.offset), SELL)

@callback
def on_report(ctx, s, r):
    if r.kind == X_FILL or r.kind == X_PARTIAL:
        ctx.state[s].fills += r.qty

STRATEGY = Strategy(on_book=on_book, on_report=on_report, state=STATE, depth=3,
                    params={"offset": 0, "level": 1, "max_position": 5})
"""


@pytest.fixture(scope="module")
def quoter(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("user-strategies")
    (folder / "quoter.py").write_text(QUOTER)
    return f"{folder / 'quoter.py'}:STRATEGY"


@pytest.fixture(scope="module")
def result(quoter):
    return hean.backtest(RECORDING, quoter, format="binance-usdm")


def test_the_backtest_trades_and_its_tables_agree(result):
    orders, fills = result.orders, result.fills
    assert len(fills) > 50, "the quoter must trade on this recording"
    assert result.summary["router_fills"] >= len(fills) and result.summary["lost_rows"] == 0
    new = orders["action"] == A_NEW
    # every fill belongs to a NEW the strategy sent, and each order's filled lots are the sum of its fills
    filled = {int(c): 0 for c in orders["client_id"][new]}
    for f in fills.data:
        filled[int(f["client_id"])] += int(f["qty"])
    assert [filled[int(c)] for c in orders["client_id"][new]] == orders["filled"][new].tolist()
    assert set(np.unique(orders["state"][new])) <= {A.OPEN, A.PENDING, A.FILLED, A.CANCELED, A.REJECTED, A.EXPIRED}
    # the position is the signed sum of the fills; the PnL adds up
    pos = result.positions.data
    signed = int((fills["qty"] * fills["side"]).sum())
    assert pos["position"].sum() == signed and abs(signed) <= 5
    assert result.summary["pnl"] == pytest.approx(float(pos["pnl"].sum()))
    assert result.equity["ts"].tolist() == sorted(result.equity["ts"].tolist()) and len(result.equity) > len(fills)


def test_the_empty_slot_shared_by_free_positions_is_left_as_made(result):
    """Backtests of one process share the empty slot of each free strategy position (strategy._EMPTY): the
    run must not have written to it."""
    from hean.stages import strategy as SS

    assert SS._EMPTY, "the backtest used a shared empty slot"
    for (j, n), (sl, row) in SS._EMPTY.items():
        fresh = SS.make_slot(None, j, [], n)
        assert np.array_equal(row, SS.slot_addresses(sl)), "its arrays are where they were"
        for name in SS.SLOT_ARRAYS:
            got, want = sl, fresh
            for part in name.split("."):
                got, want = getattr(got, part), getattr(want, part)
            assert got.tobytes() == want.tobytes(), f"empty slot {j}: {name} was written"


def test_recorder_logs_go_to_the_next_backtest_and_change_no_table(quoter, monkeypatch):
    """A backtest gives its strategy's recorder logs back for the next one in the process
    (strategy.give_back_logs). A reused log still holds the earlier run's rows; a run reads only the rows it
    wrote, so its tables are those of a run on fresh logs -- and no table shares memory with a log."""
    from hean.stages import strategy as SS

    monkeypatch.setattr(SS, "_FREE_LOGS", {})
    fresh = hean.backtest(RECORDING, quoter, format="binance-usdm")
    assert sum(len(v) for v in SS._FREE_LOGS.values()) == 3, "orders, reports and equity given back"
    other = hean.backtest(RECORDING, quoter, format="binance-usdm", params={"offset": 2, "level": 0})
    assert len(other.orders) != len(fresh.orders), "the run in between writes other rows"
    given = {id(log): log for logs in SS._FREE_LOGS.values() for log in logs}
    taken = []
    take = SS._take_log
    monkeypatch.setattr(SS, "_take_log", lambda rows, dtype: taken.append(take(rows, dtype)) or taken[-1])
    again = hean.backtest(RECORDING, quoter, format="binance-usdm")
    assert {id(log) for log in taken} == set(given), "the logs of the run in between, dirty"
    for name in ("orders", "fills", "positions", "equity"):
        got = getattr(again, name).data
        assert got.tobytes() == getattr(fresh, name).data.tobytes(), name
        assert not any(np.shares_memory(got, log) for log in taken), name


def test_a_log_kept_for_reuse_is_bounded(monkeypatch):
    """At most LOGS_KEPT logs of a size are kept, and none whose rows in use held more than LOG_KEPT_BYTES."""
    from hean.stages import strategy as SS

    monkeypatch.setattr(SS, "_FREE_LOGS", {})
    monkeypatch.setattr(SS, "LOG_KEPT_BYTES", 10 * SS.ORDER.itemsize)
    slots = [SS.make_slot(None, 0, [0], 1, record=100) for _ in range(SS.LOGS_KEPT + 1)]
    slots[0].rec_n[SS.R_ORDERS] = 11  # past the bound
    for sl in slots:
        SS.give_back_logs(sl)
    kept = SS._FREE_LOGS[(SS.ORDER, 100)]
    assert len(kept) == SS.LOGS_KEPT and not any(log is slots[0].rec_orders for log in kept)
    assert len(SS._FREE_LOGS[(SS.EQUITY, 100)]) == SS.LOGS_KEPT


def test_the_tables_convert_to_dataframes(result):
    df = result.fills.to_pandas()
    assert list(df.columns) == list(result.fills.columns) and len(df) == len(result.fills)
    assert int(df["qty"].sum()) == int(result.fills["qty"].sum())
    pl = result.orders.to_polars()
    assert pl.shape == (len(result.orders), len(result.orders.columns))


@pytest.mark.timeout(900)
def test_replay_and_backtest_give_identical_fills_and_every_placement_the_same_digests(quoter, result):
    feed = {**FEED, "strategies": [{"path": quoter}]}
    seen = {}
    for placement in ("fused", "two", "split"):
        r = run_lockstep(feed, placement)
        c = r.telemetry["router"]["counters"]
        from hean.telemetry.block import C_FILLS, C_ORDERS, C_USER_BASE

        seen[placement] = (int(c[C_ORDERS]), int(c[C_FILLS]), int(c[C_USER_BASE]), int(c[C_USER_BASE + 1]))
    s = result.summary
    want = (s["router_orders"], s["router_fills"], s["order_digest"], s["fill_digest"])
    assert seen == {"fused": want, "two": want, "split": want}


# (strategy, its symbols, params): two strategies on the synthetic feed's two symbols, one quoting on both
ATTRIBUTION = [
    ("a", ["SYN-A"], {"offset": 0, "level": 0}),
    ("b", ["SYN-B"], {"offset": 0, "level": 0}),
    ("c", ["SYN-A", "SYN-B"], {"offset": 1, "level": 1}),
]


@pytest.mark.timeout(600)
def test_several_strategies_in_one_run_orders_and_fills_are_attributed(quoter):
    entries = [{"path": quoter, "symbols": syms, "params": p} for _, syms, p in ATTRIBUTION]
    r = hean.backtest(None, entries, config={"feed.max_messages": 20_000, "feed.seed": 3})
    symbols = r.symbols
    assert r.summary["router_fills"] == len(r.fills) and len(r.fills) > 0
    for j, (name, syms, _) in enumerate(ATTRIBUTION):
        mine = r.orders.data[r.orders["strategy"] == j]
        assert {symbols[k] for k in np.unique(mine["symbol"])} == set(syms), name
        new = mine[mine["action"] == A_NEW]
        assert len(new) > 0 and set(np.unique(new["side"])) == {BUY, SELL}, name
        f = r.fills.data[r.fills["strategy"] == j]
        assert set(f["client_id"]) <= set(new["client_id"]), name
        assert r.summary["strategies"][j]["fills"] == len(f), name
    assert sum(s["fills"] for s in r.summary["strategies"]) == len(r.fills)
    assert len({(int(o["strategy"]), int(o["client_id"])) for o in r.orders.data[r.orders["action"] == A_NEW]}) == int(
        (r.orders["action"] == A_NEW).sum()
    )


BYBIT = str(ROOT / "tests" / "data" / "bybit-xrpusdt-ob500.data.zip")


@pytest.mark.timeout(600)
def test_several_recordings_are_merged_by_receive_time_each_symbol_its_own_strategy(quoter):
    entries = [{"path": quoter, "symbols": ["BTCUSDT"]}, {"path": quoter, "symbols": ["XRPUSDT"]}]
    r = hean.backtest([RECORDING, BYBIT], entries, format=["binance-usdm", "bybit"])
    assert r.symbols == ["BTCUSDT", "XRPUSDT"]
    for j, name in enumerate(r.symbols):
        mine = r.orders.data[r.orders["strategy"] == j]
        assert len(mine) > 0 and set(np.unique(mine["symbol"]).tolist()) == {j}, name
    alone = hean.backtest(RECORDING, quoter, format="binance-usdm")
    btc = r.fills.data[r.fills["strategy"] == 0]
    assert (
        btc[["client_id", "price", "qty", "side"]].tolist()
        == alone.fills.data[["client_id", "price", "qty", "side"]].tolist()
    ), "the other recording's events change nothing for BTCUSDT's strategy"


def test_a_backtest_makes_a_run_folder_only_to_merge_into_and_removes_it(quoter, tmp_path, monkeypatch):
    """One recording, mapped from the conversion cache, needs no folder in process; a merge of two writes its
    file into a temporary folder, which is gone after the run."""
    made = []
    real = tempfile.TemporaryDirectory

    def counted(*a, **k):
        made.append(real(*a, **k))
        return made[-1]

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(tempfile, "TemporaryDirectory", counted)
    one = hean.backtest(RECORDING, quoter, format="binance-usdm")
    assert made == [] and len(one.fills) > 0
    two = hean.backtest([RECORDING, BYBIT], quoter, format=["binance-usdm", "bybit"])
    assert len(made) == 1 and Path(made[0].name).parent == tmp_path and len(two.fills) > 0
    assert list(tmp_path.iterdir()) == [], "the merge's folder is removed"


def test_two_recordings_of_one_symbol_over_the_same_time_are_refused():
    with pytest.raises(ValueError, match="symbol BTCUSDT is also in .* over the same time"):
        hean.backtest([RECORDING, RECORDING], "market_maker", format="binance-usdm")


# Folds every level it sees into a hash, state by state: equal to the hash of an independent replay of the
# recording through an L2 book only if the depth beside each state is exactly the book's at that state.
DEPTH_HASH = """
import numpy as np
from hean.api import Strategy, ask_level, bid_level, callback

STATE = [("h", "i8"), ("n", "i8"), ("top_ok", "i8"), ("past", "i8")]

@callback
def on_book(ctx, s):
    st = ctx.state[s]
    h = st.h
    for i in range(ctx.params.levels):
        bp, bq = bid_level(ctx, s, i)
        ap, aq = ask_level(ctx, s, i)
        h = h * 1000003 + bp * 31 + bq
        h = h * 1000003 + ap * 31 + aq
    st.h = h
    st.n += 1
    b = ctx.book[s]
    bp, bq = bid_level(ctx, s, 0)
    ap, aq = ask_level(ctx, s, 0)
    if bp == b.bid_px and bq == b.bid_qty and ap == b.ask_px and aq == b.ask_qty:
        st.top_ok += 1
    p, q = bid_level(ctx, s, 1000)
    st.past += p + q

STRATEGY = Strategy(on_book=on_book, state=STATE, depth=DEPTH, params={"levels": DEPTH})
"""


def _reference_depth_hash(levels: int) -> tuple[int, int]:
    """(hash, states) of the recording replayed through an L2 book alone, folded as DEPTH_HASH folds."""
    from numba import njit

    from hean.feeds import load_events
    from hean.records import BOOK_STATE
    from hean.stages.book import book_on_event, l2_depth, make_l2_book, make_trade_stats

    @njit
    def fold(book, stats, events, out, bpx, bq, apx, aq):
        h = np.int64(0)
        n = 0
        for i in range(events.shape[0]):
            if book_on_event(book, stats, events[i], out, 0, 0):
                sym = out[0].symbol
                bpx[:] = 0
                bq[:] = 0
                apx[:] = 0
                aq[:] = 0
                l2_depth(book, sym, 1, bpx.shape[0], bpx, bq)
                l2_depth(book, sym, -1, apx.shape[0], apx, aq)
                for k in range(bpx.shape[0]):
                    h = h * 1000003 + bpx[k] * 31 + bq[k]
                    h = h * 1000003 + apx[k] * 31 + aq[k]
                n += 1
        return h, n

    events, _ = load_events(RECORDING, "binance-usdm")
    z = [np.zeros(levels, np.int64) for _ in range(4)]
    h, n = fold(make_l2_book(1, 4096, 8192), make_trade_stats(1), events, np.zeros(1, BOOK_STATE), *z)
    return int(h), int(n)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("levels", [1, 10])
def test_depth_beside_each_state_is_the_books_depth_at_that_state(tmp_path, levels):
    path = tmp_path / f"depth{levels}.py"
    path.write_text(DEPTH_HASH.replace("DEPTH", str(levels)))
    r = hean.backtest(RECORDING, f"{path}:STRATEGY", format="binance-usdm")
    st = r.states[0][0]
    want_h, want_n = _reference_depth_hash(levels)
    assert int(st["n"]) == want_n and int(st["top_ok"]) == want_n, "level 0 is the state's own top of book"
    assert int(st["h"]) == want_h, "every level of every state equals the book replayed on its own"
    assert int(st["past"]) == 0, "a level past the declared depth reads as (0, 0)"
