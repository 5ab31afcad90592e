"""The shipped strategies (plug-ins of hean.api) through the strategy stage, on crafted book states and reports."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.testing import assert_array_equal
from test_indicators import btc_trades

from hean import api as A
from hean import indicators as hi
from hean.indicators import streaming as S
from hean.records import (
    A_CANCEL,
    A_NEW,
    A_REPLACE,
    BOOK_STATE,
    BUY,
    EXEC_REPORT,
    F_POST_ONLY,
    F_REDUCE_ONLY,
    F_STALE,
    SELL,
    T_LIMIT,
    T_MARKET,
    X_ACK,
    X_CANCELED,
    X_FILL,
    BookStateKind,
)
from hean.stages import strategy as SS
from hean.stages.strategy import StrategyDriver

QUOTE, TRADE, STATUS = int(BookStateKind.QUOTE), int(BookStateKind.TRADE), int(BookStateKind.STATUS)


@pytest.fixture(autouse=True)
def _own_cache(tmp_path_factory, monkeypatch):
    """Compiled strategies in a cache folder of the test session, not the user's."""
    monkeypatch.setenv("HEAN_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "hean-cache"))


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


def report(kind, order, *, router_id=None, qty=0, price=None, leaves=0, fee=0.0, reason=0):
    """The report the router would forward about intent ``order`` (an ORDER record)."""
    r = np.zeros(1, EXEC_REPORT)[0]
    r["kind"], r["symbol"], r["side"] = kind, order["symbol"], order["side"]
    r["order_id"] = router_id if router_id is not None else 100 + int(order["client_id"])
    r["client_id"], r["strategy"] = order["client_id"], order["strategy"]
    r["price"] = order["price"] if price is None else price
    r["qty"], r["leaves_qty"], r["fee"], r["reason"] = qty, leaves, fee, reason
    return r


def reports(*rs) -> np.ndarray:
    return np.array(list(rs), dtype=EXEC_REPORT)


def fields(orders) -> list[tuple[int, int, int, int]]:
    return [(int(o["kind"]), int(o["side"]), int(o["price"]), int(o["qty"])) for o in orders]


# ---------------------------------------------------------------------------------------------------------
# market maker
# ---------------------------------------------------------------------------------------------------------
def mm(params=None, **kw):
    """The market maker on engine symbol 1 of 2, indicators on every sound mid."""
    return StrategyDriver([("market_maker", [1], params)], 2, mode="tick", tick_source="mid", **kw)


def quotes(*books, sym=1, t0=1000):
    recs = book(len(books))
    for j, (r, (bid, ask)) in enumerate(zip(recs, books, strict=True)):
        set_quote(r, sym, bid, ask, t0 + j)
    return recs


def acked(d, orders):
    """Acknowledge every NEW in ``orders`` (router ids 100 + client id)."""
    d.reports(reports(*[report(X_ACK, o) for o in orders if o["kind"] == A_NEW]))


def test_mm_quotes_both_sides_once_then_stays_quiet():
    d = mm({"half_spread_ticks": 2, "skew_ticks_per_lot": 0.5})
    orders = d.states(quotes(*[(1000, 1002)] * 5))
    assert fields(orders) == [(A_NEW, BUY, 999, 1), (A_NEW, SELL, 1003, 1)]
    assert (orders["order_type"] == T_LIMIT).all() and (orders["tif"] == A.GTC).all()
    assert (orders["flags"] == F_POST_ONLY).all() and (orders["order_id"] == 0).all()
    assert_array_equal(orders["seq"], [1, 2])
    assert_array_equal(orders["client_id"], [1, 2])
    assert (orders["strategy"] == 0).all() and (orders["venue"] == -1).all() and (orders["symbol"] == 1).all()
    assert (orders["ts_origin"] == 11_000).all() and (orders["ts_exch"] == 1_000_000_000).all()
    assert [A.PENDING, A.PENDING] == [int(d.slot().orders[c, A.OF_STATE]) for c in (1, 2)]


def test_mm_one_side_per_event_alternates_sides_the_other_side_first():
    d = mm({"half_spread_ticks": 2, "skew_ticks_per_lot": 0.0, "one_side_per_event": 1})
    orders = d.states(quotes(*[(1000, 1002)] * 3))
    assert fields(orders) == [(A_NEW, BUY, 999, 1), (A_NEW, SELL, 1003, 1)], "one side on each of two events"
    acked(d, orders)
    # both desired prices move by 2 ticks: the ask was acted on last, so the bid moves first, the ask next event
    orders = d.states(quotes((1002, 1004), (1002, 1004), (1002, 1004)))
    assert fields(orders) == [(A_REPLACE, BUY, 1001, 1), (A_REPLACE, SELL, 1005, 1)]


def test_mm_skews_against_its_own_fills():
    d = mm({"half_spread_ticks": 2, "skew_ticks_per_lot": 0.5, "quote_qty": 4})
    orders = d.states(quotes((1000, 1002)))
    acked(d, orders)
    bid = orders[0]
    d.reports(reports(report(X_FILL, bid, qty=4, price=999)))  # long 4 lots: both quotes 2 ticks lower
    assert d.slot().pos[0] == 4 and int(d.slot().orders[1, A.OF_STATE]) == A.FILLED
    orders = d.states(quotes((1000, 1002)))
    # the bid was filled (no live quote: a NEW), the ask is acknowledged (a REPLACE of its router id)
    assert fields(orders) == [(A_NEW, BUY, 997, 4), (A_REPLACE, SELL, 1001, 4)]
    assert orders[1]["order_id"] == 102 and orders[1]["client_id"] == 2


def test_mm_requotes_only_on_a_large_enough_move_and_only_an_acknowledged_quote():
    d = mm({"half_spread_ticks": 3, "skew_ticks_per_lot": 0.0, "requote_ticks": 3})
    first = d.states(quotes((1000, 1002)))
    assert len(d.states(quotes((1003, 1005)))) == 0, "not acknowledged yet: nothing to replace"
    acked(d, first)
    assert len(d.states(quotes((1002, 1004)))) == 0, "a 2-tick move is below requote_ticks"
    orders = d.states(quotes((1003, 1005), (1003, 1005)))
    assert fields(orders) == [(A_REPLACE, BUY, 1001, 1), (A_REPLACE, SELL, 1007, 1)], "sent once, then pending"


def test_mm_never_crosses_the_book():
    d = mm({"half_spread_ticks": 0, "skew_ticks_per_lot": 2.0, "quote_qty": 5})
    d.slot().pos[0] = 5  # long 5 (as after fills): center 1000.5 - 10
    assert fields(d.states(quotes((1000, 1001)))) == [(A_NEW, BUY, 990, 5), (A_NEW, SELL, 1001, 5)]
    d = mm({"half_spread_ticks": 0, "skew_ticks_per_lot": 2.0, "quote_qty": 5})
    d.slot().pos[0] = -5
    assert fields(d.states(quotes((1000, 1001)))) == [(A_NEW, BUY, 1000, 5), (A_NEW, SELL, 1011, 5)]


def test_mm_stops_quoting_the_side_that_would_breach_max_position():
    d = mm({"half_spread_ticks": 1, "skew_ticks_per_lot": 0.0, "max_position": 3, "quote_qty": 2})
    acked(d, d.states(quotes((1000, 1002))))
    d.slot().pos[0] = 2
    orders = d.states(quotes((1000, 1002), (1000, 1002)))
    assert fields(orders) == [(A_CANCEL, BUY, 1000, 2)], "long 2 + 2 > 3: the bid goes, the ask stays"
    assert orders[0]["order_id"] == 101


def test_mm_cancels_on_a_bad_book_and_resumes():
    d = mm({"half_spread_ticks": 1, "skew_ticks_per_lot": 0.0})
    acked(d, d.states(quotes((1000, 1002))))
    recs = book(6)
    set_quote(recs[0], 1, 1000, 1002, 2000, flags=F_STALE, kind=STATUS)
    set_quote(recs[1], 1, 1000, 1002, 2001, flags=F_STALE)
    set_quote(recs[2], 1, 1003, 1001, 2002)  # crossed prices without the flag: still not quotable
    set_quote(recs[3], 1, 0, 1002, 2003)  # bid side empty
    set_quote(recs[4], 1, 1000, 1002, 2004)
    set_quote(recs[5], 1, 1000, 1002, 2005)
    recs[2]["bid_px"], recs[2]["ask_px"] = 1003, 1001
    orders = d.states(recs)
    assert fields(orders) == [(A_CANCEL, BUY, 1000, 1), (A_CANCEL, SELL, 1002, 1)]
    assert_array_equal(orders["order_id"], [101, 102])
    # the cancels are pending: no new quote until they are done
    d.reports(reports(*[report(X_CANCELED, o, router_id=o["order_id"]) for o in orders]))
    assert fields(d.states(quotes((1000, 1002)))) == [(A_NEW, BUY, 1000, 1), (A_NEW, SELL, 1002, 1)]


def test_mm_cancel_before_the_acknowledgement_goes_out_with_it():
    d = mm({"half_spread_ticks": 1})
    first = d.states(quotes((1000, 1002)))
    stale = book(1)
    set_quote(stale[0], 1, 1000, 1002, 2000, flags=F_STALE, kind=STATUS)
    assert len(d.states(stale)) == 0, "no router id yet: the cancels wait"
    late = d.reports(reports(*[report(X_ACK, o) for o in first]))
    assert fields(late) == [(A_CANCEL, BUY, 1000, 1), (A_CANCEL, SELL, 1002, 1)]
    assert_array_equal(late["order_id"], [101, 102])
    assert (late["ts_origin"] == 0).all(), "caused by a report, not a market event: not tick-to-trade"


def test_mm_widens_with_atr():
    d = StrategyDriver(
        [("market_maker", [0], {"half_spread_ticks": 1, "atr_mult": 2.0, "skew_ticks_per_lot": 0.0})],
        1,
        mode="tick",
        tick_source="trades",
        indicators={"atr_period": 2},
    )
    recs = book(4)
    for j, px in enumerate([1000, 1004, 1000, 1004]):  # true range 4 ticks each: ATR(2) = 4
        set_trade(recs[j], 0, px, 1, j)
    acked(d, d.states(recs))  # quoted on the first trade's book (no ATR yet), then waiting for the acks
    assert d.slot().ind.out[0, S.OUT_ATR] == 4.0
    orders = d.states(quotes((1000, 1002), sym=0))
    assert fields(orders) == [(A_REPLACE, BUY, 993, 1), (A_REPLACE, SELL, 1009, 1)]  # 1001 -/+ 8


def test_mm_microprice():
    d = mm({"half_spread_ticks": 1, "skew_ticks_per_lot": 0.0, "use_microprice": 1})
    recs = book(1)
    set_quote(recs[0], 1, 1000, 1010, 0, bid_qty=9, ask_qty=1)  # microprice 1009: quotes floor/ceil(1009 -/+ 1)
    assert fields(d.states(recs)) == [(A_NEW, BUY, 1008, 1), (A_NEW, SELL, 1010, 1)]


# ---------------------------------------------------------------------------------------------------------
# RSI + MACD histogram turn
# ---------------------------------------------------------------------------------------------------------
SIGNAL_PARAMS = {"rsi_oversold": 40.0, "rsi_overbought": 60.0, "cooldown_ms": 0.0, "max_position": 1_000_000}
SIGNAL_INDICATORS = {"rsi_period": 5, "macd_fast": 3, "macd_slow": 8, "macd_signal": 3}


def rsi_macd(params, mode="tick"):
    return StrategyDriver([("rsi_macd", [0], params)], 1, mode=mode, indicators=SIGNAL_INDICATORS)


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
    d = rsi_macd(params)
    orders = d.states(recs)
    want = expected_signals(ticks.astype(np.float64), params, SIGNAL_INDICATORS, allow_short=True)
    assert len(want) > 20, "the crafted thresholds must produce signals on this data"
    got_t = orders["ts_origin"].tolist()
    assert list(zip(got_t, orders["side"].tolist(), strict=True)) == want
    buys, sells = orders[orders["side"] == BUY], orders[orders["side"] == SELL]
    assert_array_equal(buys["price"], recs["ask_px"][[t for t, s in want if s == BUY]] + 2)
    assert_array_equal(sells["price"], recs["bid_px"][[t for t, s in want if s == SELL]] - 2)
    assert (orders["kind"] == A_NEW).all() and (orders["tif"] == A.IOC).all()
    assert (orders["order_type"] == T_LIMIT).all() and (orders["flags"] == 0).all()
    assert_array_equal(orders["client_id"], np.arange(1, len(orders) + 1))
    assert d.slot().cfg[SS.S_SAMPLES] == len(recs)


def test_rsi_macd_respects_the_cooldown():
    recs, ticks = btc_tick_records(4000)
    params = dict(SIGNAL_PARAMS, allow_short=1.0, cooldown_ms=5000.0)
    orders = rsi_macd(params).states(recs)
    free = expected_signals(ticks.astype(np.float64), params, SIGNAL_INDICATORS, allow_short=True)
    assert 1 < len(orders) < len(free)
    assert (np.diff(orders["ts_exch"]) >= 5_000_000_000).all()


def test_rsi_macd_caps_the_position_and_only_reduces_without_short():
    recs, _ = btc_tick_records(4000)
    params = dict(SIGNAL_PARAMS, max_position=3.0, order_qty=2.0, market_orders=1.0)
    d = rsi_macd(params)
    d.slot().pos[0] = 2  # long 2 (its own fills); no fill comes back here, so it stays
    orders = d.states(recs)
    assert len(orders) > 0
    assert (orders[orders["side"] == BUY]["qty"] == 1).all(), "2 + 2 > 3: only 1 lot may be bought"
    sells = orders[orders["side"] == SELL]
    assert (sells["qty"] == 2).all() and (sells["flags"] == F_REDUCE_ONLY).all()
    assert (orders["order_type"] == T_MARKET).all() and (orders["price"] == 0).all()
    at_cap = rsi_macd(params)
    at_cap.slot().pos[0] = 3
    orders = at_cap.states(recs)
    assert (orders["side"] == SELL).all() and len(orders) > 0


def test_rsi_macd_is_silent_on_a_flat_market():
    recs = book(300)
    for j in range(300):
        set_trade(recs[j], 0, 618003, 1, j)
    d = rsi_macd(SIGNAL_PARAMS)
    assert len(d.states(recs)) == 0
    assert d.slot().ind.out[0, S.OUT_RSI] == 0.0


def test_bar_mode_feeds_closed_bars_and_decides_only_then():
    recs, ticks = btc_tick_records(6000)
    d = rsi_macd(dict(SIGNAL_PARAMS, allow_short=1.0), mode="bar")
    orders = d.states(recs)
    ts_ms = recs["ts_exch"] // 1_000_000
    bucket = ts_ms // 1000
    closes_at = np.flatnonzero(bucket[1:] != bucket[:-1]) + 1  # first record of each new second
    last_of_bar = closes_at - 1
    sl = d.slot()
    assert sl.cfg[SS.S_SAMPLES] == len(closes_at) == sl.bars.last_i[0, 2]
    close = ticks[last_of_bar].astype(np.float64)
    assert sl.ind.out[0, S.OUT_RSI] == hi.rsi(close, 5)[-1]
    want = expected_signals(close, SIGNAL_PARAMS, SIGNAL_INDICATORS, allow_short=True)
    assert orders["ts_origin"].tolist() == [int(closes_at[t]) for t, _ in want]


def test_tick_mode_on_mid_ignores_trades_and_bad_quotes():
    d = StrategyDriver([("market_maker", [0], None)], 1, mode="tick", tick_source="mid")
    recs = book(4)
    set_trade(recs[0], 0, 1000, 3, 0)
    set_quote(recs[1], 0, 1000, 1002, 1)
    set_quote(recs[2], 0, 1000, 1002, 2, flags=F_STALE)
    set_quote(recs[3], 0, 1000, 1004, 3)
    d.states(recs)
    ind = d.slot().ind
    assert ind.istate[0, S.I_COUNT] == 2
    assert ind.out[0, S.OUT_SMA] != ind.out[0, S.OUT_SMA]  # NaN: 2 samples < sma period


# ---------------------------------------------------------------------------------------------------------
# parameters
# ---------------------------------------------------------------------------------------------------------
BAD_PARAMS = [
    ("rsi_macd", {"rsi_low": 20}, "has no parameter 'rsi_low'"),
    ("rsi_macd", {"order_qty": "1"}, "must be a number"),
    ("rsi_macd", {"order_qty": float("nan")}, "must be a number"),
    ("rsi_macd", {"rsi_oversold": 80}, "rsi_oversold < rsi_overbought"),
    ("rsi_macd", {"order_qty": 1.5}, "order_qty"),
    ("rsi_macd", {"max_position": 0}, "max_position"),
    ("rsi_macd", {"allow_short": 2}, "allow_short"),
    ("market_maker", {"requote_ticks": 0}, "requote_ticks"),
    ("market_maker", {"half_spread_ticks": -1}, "half_spread_ticks"),
    ("market_maker", {"one_side_per_event": 2}, "one_side_per_event"),
]


@pytest.mark.parametrize(("name", "params", "match"), BAD_PARAMS)
def test_bad_parameters_are_a_clear_error(name, params, match):
    with pytest.raises(ValueError, match=match):
        StrategyDriver([(name, [0], params)], 1)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"mode": "candle"}, "mode"),
        ({"tick_source": "book"}, "tick_source"),
        ({"indicators": {"rsi_period": 1}}, "rsi_period"),
        ({"bar_ms": -5}, "interval_ms"),
    ],
)
def test_bad_stage_overrides_are_a_clear_error(overrides, match):
    with pytest.raises(ValueError, match=match):
        StrategyDriver([("market_maker", [0], None)], 1, **overrides)
