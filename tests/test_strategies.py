"""The strategy stage and the shipped strategies on crafted BOOK_STATE sequences."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numba import njit
from numpy.testing import assert_array_equal
from test_indicators import btc_trades

from hean import indicators as hi
from hean.indicators import streaming as S
from hean.jit import kernel
from hean.records import BOOK_STATE, BUY, F_CROSSED, F_POST_ONLY, F_REDUCE_ONLY, F_STALE, ORDER, SELL, BookStateKind
from hean.stages import strategy as SS
from hean.strategies.intent import (
    CANCEL,
    CANCEL_ALL,
    GTC,
    IOC,
    LIMIT,
    MARKET,
    NEW,
    REPLACE,
    intent,
    no_order,
)

QUOTE, TRADE, STATUS = int(BookStateKind.QUOTE), int(BookStateKind.TRADE), int(BookStateKind.STATUS)


def book(n: int) -> np.ndarray:
    return np.zeros(n, BOOK_STATE)


def set_quote(r, sym, bid, ask, ts_ms, bid_qty=5, ask_qty=5, flags=0, kind=QUOTE):
    r["kind"], r["symbol"], r["flags"] = kind, sym, flags
    r["ts_exch"] = ts_ms * 1_000_000
    r["ts_origin"] = 10_000 + ts_ms
    r["bid_px"], r["ask_px"], r["bid_qty"], r["ask_qty"] = bid, ask, bid_qty, ask_qty
    r["spread"] = ask - bid
    r["mid"] = (bid + ask) / 2
    r["microprice"] = (bid * ask_qty + ask * bid_qty) / (bid_qty + ask_qty)


def set_trade(r, sym, px, qty, ts_ms):
    set_quote(r, sym, px - 1, px + 1, ts_ms, kind=TRADE)
    r["last_trade_px"], r["last_trade_qty"] = px, qty


def run(stage, records, position=None, capacity=None):
    pos = np.zeros(stage.strat.i.shape[0], np.int64) if position is None else position
    out = np.zeros(capacity or len(records), ORDER)
    n = SS.run_book_states(stage.strat, stage.ind, stage.bars, stage.params, pos, records, out)
    return out[:n]


def fields(orders) -> list[tuple[int, int, int, int]]:
    return [(int(o["kind"]), int(o["side"]), int(o["price"]), int(o["qty"])) for o in orders]


# ---------------------------------------------------------------------------------------------------------
# market maker
# ---------------------------------------------------------------------------------------------------------
def mm(params=None, **kw):
    return SS.make_strategy_stage("market_maker", 2, params, mode="tick", tick_source="mid", **kw)


def quotes(*books):
    recs = book(len(books))
    for r, (bid, ask) in zip(recs, books, strict=True):
        set_quote(r, 1, bid, ask, 1000)
    return recs


def test_mm_quotes_both_sides_once_then_stays_quiet():
    stage = mm({"half_spread_ticks": 2, "skew_ticks_per_lot": 0.5}, index=7)
    orders = run(stage, quotes(*[(1000, 1002)] * 5))
    assert fields(orders) == [(NEW, BUY, 999, 1), (NEW, SELL, 1003, 1)]
    assert (orders["order_type"] == LIMIT).all() and (orders["tif"] == GTC).all()
    assert (orders["flags"] == F_POST_ONLY).all() and (orders["order_id"] == 0).all()
    assert_array_equal(orders["seq"], [1, 2])
    assert (orders["strategy"] == 7).all() and (orders["venue"] == -1).all() and (orders["symbol"] == 1).all()
    assert (orders["ts_origin"] == 11_000).all() and (orders["ts_exch"] == 1_000_000_000).all()


def test_mm_skews_against_inventory():
    stage = mm({"half_spread_ticks": 2, "skew_ticks_per_lot": 0.5})
    assert fields(run(stage, quotes((1000, 1002), (1000, 1002)))) == [(NEW, BUY, 999, 1), (NEW, SELL, 1003, 1)]
    long4 = np.array([0, 4], np.int64)  # long 4 lots: both quotes 2 ticks lower
    orders = run(stage, quotes(*[(1000, 1002)] * 4), position=long4)
    assert fields(orders) == [(REPLACE, BUY, 997, 1), (REPLACE, SELL, 1001, 1)]
    short4 = np.array([0, -4], np.int64)
    orders = run(stage, quotes(*[(1000, 1002)] * 4), position=short4)
    assert fields(orders) == [(REPLACE, BUY, 1001, 1), (REPLACE, SELL, 1005, 1)]


def test_mm_requotes_only_on_a_large_enough_move():
    stage = mm({"half_spread_ticks": 3, "skew_ticks_per_lot": 0.0, "requote_ticks": 3})
    run(stage, quotes((1000, 1002), (1000, 1002)))
    assert len(run(stage, quotes(*[(1002, 1004)] * 4))) == 0, "a 2-tick move is below requote_ticks"
    orders = run(stage, quotes(*[(1003, 1005)] * 4))
    assert fields(orders) == [(REPLACE, BUY, 1001, 1), (REPLACE, SELL, 1007, 1)]


def test_mm_never_crosses_the_book():
    stage = mm({"half_spread_ticks": 0, "skew_ticks_per_lot": 2.0})
    orders = run(stage, quotes(*[(1000, 1001)] * 2), position=np.array([0, 5], np.int64))
    assert fields(orders) == [(NEW, BUY, 990, 1), (NEW, SELL, 1001, 1)]  # ask clamped to best bid + 1
    stage = mm({"half_spread_ticks": 0, "skew_ticks_per_lot": 2.0})
    orders = run(stage, quotes(*[(1000, 1001)] * 2), position=np.array([0, -5], np.int64))
    assert fields(orders) == [(NEW, BUY, 1000, 1), (NEW, SELL, 1011, 1)]  # bid clamped to best ask - 1


def test_mm_stops_quoting_the_side_that_would_breach_max_position():
    stage = mm({"half_spread_ticks": 1, "skew_ticks_per_lot": 0.0, "max_position": 3, "quote_qty": 2})
    run(stage, quotes((1000, 1002), (1000, 1002)))
    orders = run(stage, quotes(*[(1000, 1002)] * 3), position=np.array([0, 2], np.int64))
    assert fields(orders) == [(CANCEL, BUY, 0, 0)], "long 2 + 2 > 3: the bid goes, the ask stays"
    assert len(run(stage, quotes((1000, 1002)), position=np.array([0, 2], np.int64))) == 0


def test_mm_cancels_all_once_on_a_bad_book_and_resumes():
    stage = mm({"half_spread_ticks": 1, "skew_ticks_per_lot": 0.0})
    run(stage, quotes((1000, 1002), (1000, 1002)))
    recs = book(6)
    set_quote(recs[0], 1, 1000, 1002, 2000, flags=F_STALE, kind=STATUS)
    set_quote(recs[1], 1, 1000, 1002, 2001, flags=F_STALE)
    set_quote(recs[2], 1, 1003, 1001, 2002)  # crossed prices without the flag: still not quotable
    set_quote(recs[3], 1, 0, 1002, 2003)  # bid side empty
    set_quote(recs[4], 1, 1000, 1002, 2004)
    set_quote(recs[5], 1, 1000, 1002, 2005)
    recs[2]["bid_px"], recs[2]["ask_px"] = 1003, 1001
    recs[2]["flags"] = 0
    orders = run(stage, recs)
    assert fields(orders) == [(CANCEL_ALL, 0, 0, 0), (NEW, BUY, 1000, 1), (NEW, SELL, 1002, 1)]


def test_mm_widens_with_atr():
    stage = SS.make_strategy_stage(
        "market_maker",
        1,
        {"half_spread_ticks": 1, "atr_mult": 2.0, "skew_ticks_per_lot": 0.0},
        mode="tick",
        tick_source="trades",
        indicators={"atr_period": 2},
    )
    recs = book(6)
    for j, px in enumerate([1000, 1004, 1000, 1004]):  # true range 4 ticks each: ATR(2) = 4
        set_trade(recs[j], 0, px, 1, j)
    set_quote(recs[4], 0, 1000, 1002, 10)
    set_quote(recs[5], 0, 1000, 1002, 11)
    orders = run(stage, recs)
    assert stage.ind.out[0, S.OUT_ATR] == 4.0
    assert [(int(o["side"]), int(o["price"])) for o in orders[-2:]] == [(BUY, 993), (SELL, 1009)]  # 1001 -/+ 8


def test_mm_microprice():
    stage = mm({"half_spread_ticks": 1, "skew_ticks_per_lot": 0.0, "use_microprice": 1})
    recs = book(2)
    for r in recs:
        set_quote(r, 1, 1000, 1010, 0, bid_qty=9, ask_qty=1)  # microprice 1009: quotes floor/ceil(1009 -/+ 1)
    assert fields(run(stage, recs)) == [(NEW, BUY, 1008, 1), (NEW, SELL, 1010, 1)]


# ---------------------------------------------------------------------------------------------------------
# RSI + MACD histogram turn
# ---------------------------------------------------------------------------------------------------------
SIGNAL_PARAMS = {"rsi_oversold": 40.0, "rsi_overbought": 60.0, "cooldown_ms": 0.0, "max_position": 1_000_000}
SIGNAL_INDICATORS = {"rsi_period": 5, "macd_fast": 3, "macd_slow": 8, "macd_signal": 3}


def btc_tick_records(n: int) -> tuple[np.ndarray, np.ndarray]:
    px, qty, ts = btc_trades()
    ticks = np.round(px[:n] * 10).astype(np.int64)  # BTCUSDT tick size 0.1
    recs = book(n)
    for j in range(n):
        set_trade(recs[j], 0, ticks[j], max(1, round(qty[j] * 1000)), int(ts[j]))
    recs["ts_origin"] = np.arange(n)  # unique: an order's ts_origin names the record that caused it
    return recs, ticks


def expected_signals(close, params, ind_cfg, position=0, allow_short=False):
    """The rules of hean.strategies.rsi_macd in plain Python over the batch indicators."""
    rsi = hi.rsi(close, ind_cfg["rsi_period"])
    hist = hi.macd(close, ind_cfg["macd_fast"], ind_cfg["macd_slow"], ind_cfg["macd_signal"])[2]
    out, prev, prev_delta, seen = [], 0.0, 0.0, 0
    for t in range(len(close)):
        if math.isnan(hist[t]) or math.isnan(rsi[t]):
            continue
        turn = 0
        if seen >= 1:
            delta = hist[t] - prev
            if seen >= 2:
                turn = 1 if (prev_delta < 0 < delta) else (-1 if (prev_delta > 0 > delta) else 0)
            prev_delta = delta if delta != 0 else prev_delta
        seen = min(seen + 1, 2)
        prev = hist[t]
        if turn > 0 and rsi[t] < params["rsi_oversold"]:
            out.append((t, BUY))
        elif turn < 0 and rsi[t] > params["rsi_overbought"] and (allow_short or position > 0):
            out.append((t, SELL))
    return out


def test_rsi_macd_fires_exactly_on_the_reference_signals():
    recs, ticks = btc_tick_records(4000)
    params = dict(SIGNAL_PARAMS, allow_short=1.0, slippage_ticks=2.0)
    stage = SS.make_strategy_stage("rsi_macd", 1, params, mode="tick", indicators=SIGNAL_INDICATORS, index=3)
    orders = run(stage, recs)
    want = expected_signals(ticks.astype(np.float64), params, SIGNAL_INDICATORS, allow_short=True)
    assert len(want) > 20, "the crafted thresholds must produce signals on this data"
    got_t = orders["ts_origin"].tolist()
    assert list(zip(got_t, orders["side"].tolist(), strict=True)) == want
    buys, sells = orders[orders["side"] == BUY], orders[orders["side"] == SELL]
    assert_array_equal(buys["price"], recs["ask_px"][[t for t, s in want if s == BUY]] + 2)
    assert_array_equal(sells["price"], recs["bid_px"][[t for t, s in want if s == SELL]] - 2)
    assert (orders["kind"] == NEW).all() and (orders["tif"] == IOC).all() and (orders["order_type"] == LIMIT).all()
    assert (orders["strategy"] == 3).all() and (orders["flags"] == 0).all()
    assert stage.strat.cfg[SS.C_SAMPLES] == len(recs)


def test_rsi_macd_respects_the_cooldown():
    recs, ticks = btc_tick_records(4000)
    params = dict(SIGNAL_PARAMS, allow_short=1.0, cooldown_ms=5000.0)
    stage = SS.make_strategy_stage("rsi_macd", 1, params, mode="tick", indicators=SIGNAL_INDICATORS)
    orders = run(stage, recs)
    free = expected_signals(ticks.astype(np.float64), params, SIGNAL_INDICATORS, allow_short=True)
    assert 1 < len(orders) < len(free)
    assert (np.diff(orders["ts_exch"]) >= 5_000_000_000).all()


def test_rsi_macd_caps_the_position_and_only_reduces_without_short():
    recs, ticks = btc_tick_records(4000)
    params = dict(SIGNAL_PARAMS, max_position=3.0, order_qty=2.0, market_orders=1.0)
    stage = SS.make_strategy_stage("rsi_macd", 1, params, mode="tick", indicators=SIGNAL_INDICATORS)
    orders = run(stage, recs, position=np.array([2], np.int64))
    assert len(orders) > 0
    assert (orders[orders["side"] == BUY]["qty"] == 1).all(), "2 + 2 > 3: only 1 lot may be bought"
    sells = orders[orders["side"] == SELL]
    assert (sells["qty"] == 2).all() and (sells["flags"] == F_REDUCE_ONLY).all()
    assert (orders["order_type"] == MARKET).all() and (orders["price"] == 0).all()
    at_cap = SS.make_strategy_stage("rsi_macd", 1, params, mode="tick", indicators=SIGNAL_INDICATORS)
    orders = run(at_cap, recs, position=np.array([3], np.int64))
    assert (orders["side"] == SELL).all() and len(orders) > 0


def test_rsi_macd_is_silent_on_a_flat_market():
    recs = book(300)
    for j in range(300):
        set_trade(recs[j], 0, 618003, 1, j)
    stage = SS.make_strategy_stage("rsi_macd", 1, SIGNAL_PARAMS, mode="tick", indicators=SIGNAL_INDICATORS)
    assert len(run(stage, recs)) == 0
    assert stage.ind.out[0, S.OUT_RSI] == 0.0


def test_bar_mode_feeds_closed_bars_and_decides_only_then():
    recs, ticks = btc_tick_records(6000)
    stage = SS.make_strategy_stage(
        "rsi_macd", 1, dict(SIGNAL_PARAMS, allow_short=1.0), mode="bar", indicators=SIGNAL_INDICATORS
    )
    orders = run(stage, recs)
    ts_ms = recs["ts_exch"] // 1_000_000
    bucket = ts_ms // 1000
    closes_at = np.flatnonzero(bucket[1:] != bucket[:-1]) + 1  # first record of each new second
    last_of_bar = closes_at - 1
    assert stage.strat.cfg[SS.C_SAMPLES] == len(closes_at) == stage.bars.last_i[0, 2]
    close = ticks[last_of_bar].astype(np.float64)
    assert stage.ind.out[0, S.OUT_RSI] == hi.rsi(close, 5)[-1]
    want = expected_signals(close, SIGNAL_PARAMS, SIGNAL_INDICATORS, allow_short=True)
    got_t = orders["ts_origin"].tolist()
    assert got_t == [int(closes_at[t]) for t, _ in want]


def test_tick_mode_on_mid_ignores_trades_and_bad_quotes():
    stage = SS.make_strategy_stage("market_maker", 1, None, mode="tick", tick_source="mid")
    recs = book(4)
    set_trade(recs[0], 0, 1000, 3, 0)
    set_quote(recs[1], 0, 1000, 1002, 1)
    set_quote(recs[2], 0, 1000, 1002, 2, flags=F_STALE)
    set_quote(recs[3], 0, 1000, 1004, 3)
    run(stage, recs)
    assert stage.ind.istate[0, S.I_COUNT] == 2
    assert stage.ind.out[0, S.OUT_SMA] != stage.ind.out[0, S.OUT_SMA]  # NaN: 2 samples < sma period


def test_output_capacity_is_respected():
    stage = mm({"half_spread_ticks": 1})
    orders = run(stage, quotes(*[(1000, 1002)] * 4), capacity=1)
    assert len(orders) == 1


# ---------------------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------------------
def test_stage_from_config():
    cfg = {
        "strategy": {"name": "market_maker", "index": 2, "mode": "tick", "tick_source": "mid", "params": {}},
        "indicators": {"atr_period": 5},
        "bars": {"interval_ms": 250},
    }
    stage = SS.stage_from_config(cfg, 3)
    spec = SS.strategies.get("market_maker")
    assert stage.strat.cfg[SS.C_STRATEGY] == spec.id and stage.strat.cfg[SS.C_INDEX] == 2
    assert stage.strat.cfg[SS.C_MODE] == SS.MODE_TICK and stage.ind.iparams[S.P_ATR] == 5
    assert stage.bars.params[0] == 250_000_000 and stage.strat.i.shape[0] == 3
    assert tuple(spec.module.PARAMS)[0] == "half_spread_ticks" and stage.params[0] == 1.0


BAD_STAGES = [
    (lambda: SS.make_strategy_stage("nope", 1), "unknown strategy 'nope'"),
    (lambda: SS.make_strategy_stage("rsi_macd", 1, {"rsi_low": 20}), "has no parameter 'rsi_low'"),
    (lambda: SS.make_strategy_stage("rsi_macd", 1, {"order_qty": "1"}), "must be a number"),
    (lambda: SS.make_strategy_stage("rsi_macd", 1, {"order_qty": float("nan")}), "must be a number"),
    (lambda: SS.make_strategy_stage("rsi_macd", 1, {"rsi_oversold": 80}), "rsi_oversold < rsi_overbought"),
    (lambda: SS.make_strategy_stage("rsi_macd", 1, {"order_qty": 1.5}), "order_qty"),
    (lambda: SS.make_strategy_stage("rsi_macd", 1, {"max_position": 0}), "max_position"),
    (lambda: SS.make_strategy_stage("rsi_macd", 1, {"allow_short": 2}), "allow_short"),
    (lambda: SS.make_strategy_stage("market_maker", 1, {"requote_ticks": 0}), "requote_ticks"),
    (lambda: SS.make_strategy_stage("market_maker", 1, {"half_spread_ticks": -1}), "half_spread_ticks"),
    (lambda: SS.make_strategy_stage("market_maker", 1, mode="candle"), "mode"),
    (lambda: SS.make_strategy_stage("market_maker", 1, tick_source="book"), "tick_source"),
    (lambda: SS.make_strategy_stage("market_maker", 1, index=256), "index"),
    (lambda: SS.make_strategy_stage("market_maker", 1, indicators={"rsi_period": 1}), "rsi_period"),
    (lambda: SS.make_strategy_stage("market_maker", 1, bars={"interval_ms": 0}), "interval_ms"),
    (lambda: SS.stage_from_config({"strategy": {"params": {}}}, 1), "needs a name"),
    (lambda: SS.stage_from_config({"strategy": {"name": "rsi_macd", "speed": 1}}, 1), "unknown \\[strategy\\]"),
]


def test_a_registered_strategy_without_a_branch_is_refused(monkeypatch):
    from hean import strategies

    spec = strategies.REGISTRY["market_maker"]
    monkeypatch.setitem(strategies.REGISTRY, "copy", strategies.StrategySpec(9, spec.module, "no branch"))
    with pytest.raises(ValueError, match="decide_by_id does not run"):
        SS.make_strategy_stage("copy", 1)


@pytest.mark.parametrize(("build", "match"), BAD_STAGES)
def test_bad_stage_config_is_a_clear_error(build, match):
    with pytest.raises(ValueError, match=match):
        build()


# ---------------------------------------------------------------------------------------------------------
# the example of docs/strategies.md (keep the two in sync)
# ---------------------------------------------------------------------------------------------------------
@kernel(inline=True, error_model="numpy")
def breakout_decide(strat, params, ind, sym, bs, position, fresh):
    if not fresh:
        return no_order()
    strat.i[sym, 0] += 1
    upper = ind.out[sym, S.OUT_BB_UPPER]
    if upper != upper or (bs.flags & (F_STALE | F_CROSSED)) != 0 or bs.ask_px <= bs.bid_px:
        return no_order()
    qty = min(np.int64(params[0]), np.int64(params[1]) - position)
    if bs.last_trade_px > upper and qty > 0:
        return intent(NEW, BUY, qty, bs.ask_px, LIMIT, IOC, 0)
    return no_order()


@njit(_nrt=False)
def _call_breakout(strat, params, ind, sym, bs, position, fresh):
    return breakout_decide(strat, params, ind, sym, bs, position, fresh)


def test_doc_example_strategy():
    stage = SS.make_strategy_stage("rsi_macd", 1, None, indicators={"bb_period": 2})
    for px in (1000.0, 1002.0):  # bands over (1000, 1002): upper = 1001 + 2 * 1 = 1003
        S.indicators_update(stage.ind, 0, px, px, px, px, 1.0)
    params = np.array([2.0, 5.0])
    recs = book(2)
    set_trade(recs[0], 0, 1004, 1, 0)
    set_trade(recs[1], 0, 1003, 1, 0)
    assert _call_breakout(stage.strat, params, stage.ind, 0, recs[0], 0, True) == (NEW, BUY, 2, 1005, LIMIT, IOC, 0)
    assert _call_breakout(stage.strat, params, stage.ind, 0, recs[0], 4, True)[2] == 1, "capped at 5 lots"
    assert _call_breakout(stage.strat, params, stage.ind, 0, recs[0], 0, False)[0] == 0, "not a fresh sample"
    assert _call_breakout(stage.strat, params, stage.ind, 0, recs[1], 0, True)[0] == 0, "not above the band"
    assert stage.strat.i[0, 0] == 3


def test_a_registered_strategy_without_a_branch_says_what_to_add(monkeypatch):
    """The docs' recipe has three steps; forgetting the branch is one message naming both places to edit."""
    from hean import strategies
    from hean.stages.strategy import make_strategy_stage
    from hean.strategies import market_maker

    monkeypatch.setitem(strategies.REGISTRY, "copy", strategies.StrategySpec(2, market_maker, "a copy"))
    with pytest.raises(
        ValueError, match=r"id 2, which decide_by_id does not run: .* 2: market_maker to DECIDE_BRANCHES"
    ):
        make_strategy_stage("copy", 1, {})
