"""Pre-trade risk: one table row per check and per trading-state transition, plus report accounting."""

from __future__ import annotations

import numpy as np
import pytest

from hean.records import (
    BOOK_STATE,
    BUY,
    CONTROL,
    EXEC_REPORT,
    F_OPENS_ORDER,
    F_POST_ONLY,
    F_REDUCE_ONLY,
    F_STALE,
    ORDER,
    SELL,
    ControlCommand,
    ExecType,
    OrderAction,
    OrderType,
    RejectReason,
    TimeInForce,
)
from hean.stages.positions import pos_equity
from hean.stages.risk import (
    C_PASSED,
    C_REJECTED,
    TradingState,
    make_risk,
    risk_effective_state,
    risk_new_day,
    risk_on_book,
    risk_on_control,
    risk_on_intent,
    risk_on_report,
    risk_poll,
    risk_reject_counts,
)

T0 = 10_000_000_000  # ns
SEC = 1_000_000_000
R = RejectReason


def book(risk, symbol=0, bid=999, ask=1001, flags=0, now=T0, out=None):
    bs = np.zeros(1, BOOK_STATE)
    bs[0]["symbol"] = symbol
    bs[0]["bid_px"], bs[0]["ask_px"] = bid, ask
    bs[0]["bid_qty"] = bs[0]["ask_qty"] = 5
    bs[0]["mid"] = (bid + ask) / 2
    bs[0]["flags"] = flags
    out = np.zeros(4, ORDER) if out is None else out
    return risk_on_book(risk, bs[0], now, out, 0), out


def intent(**kw):
    rec = np.zeros(1, ORDER)
    fields = dict(
        kind=OrderAction.NEW, symbol=0, side=BUY, qty=1, price=1000, order_type=OrderType.LIMIT, tif=TimeInForce.GTC
    )
    fields.update(kw)
    for k, v in fields.items():
        rec[0][k] = v
    return rec


def send(risk, now=T0, **kw):
    """(n_written, reason, forwarded ORDER)"""
    out = np.zeros(2, ORDER)
    before = risk.rejects.copy()
    n = risk_on_intent(risk, intent(**kw)[0], now, out, 0)
    diff = np.nonzero(risk.rejects - before)[0]
    reason = R(int(diff[0])) if len(diff) else R.NONE
    return n, reason, out[0]


def report(risk, kind, side=BUY, qty=0, price=1000, fee=0.0, leaves=0, symbol=0):
    rep = np.zeros(1, EXEC_REPORT)
    rep[0]["kind"], rep[0]["side"], rep[0]["qty"], rep[0]["price"] = kind, side, qty, price
    rep[0]["fee"], rep[0]["leaves_qty"], rep[0]["symbol"] = fee, leaves, symbol
    return risk_on_report(risk, rep[0])


def control(risk, cmd, symbol=-1, now=T0):
    c = np.zeros(1, CONTROL)
    c[0]["kind"], c[0]["symbol"] = cmd, symbol
    out = np.zeros(4, ORDER)
    n = risk_on_control(risk, c[0], now, out, 0)
    return [(int(o["kind"]), int(o["symbol"])) for o in out[:n]]


def fresh(**kw):
    kw.setdefault("capital", 1_000_000.0)
    risk = make_risk(2, **kw)
    book(risk, 0)
    book(risk, 1)
    return risk


def fill(risk, side, qty, price, fee=0.0, symbol=0):
    """A NEW that passes risk, then its full fill."""
    n, reason, _ = send(risk, side=side, qty=qty, price=price, symbol=symbol)
    assert n == 1, reason
    report(risk, ExecType.FILL, side, qty, price, fee, symbol=symbol)


# ---------------------------------------------------------------------------------------------------------
# one row per check: (id, make_risk kwargs, setup(risk), intent fields, expected reason)
# ---------------------------------------------------------------------------------------------------------
CHECKS = [
    ("pass", {}, None, {}, R.NONE),
    ("bad_symbol", {}, None, dict(symbol=5), R.BAD_SYMBOL),
    ("bad_symbol_negative", {}, None, dict(symbol=-1), R.BAD_SYMBOL),
    ("bad_side", {}, None, dict(side=0), R.BAD_SIDE),
    ("qty_zero", {}, None, dict(qty=0), R.BAD_QTY),
    ("qty_negative", {}, None, dict(qty=-3), R.BAD_QTY),
    ("price_zero", {}, None, dict(price=0), R.BAD_PRICE),
    ("price_negative", {}, None, dict(price=-1000), R.BAD_PRICE),
    ("bad_action", {}, None, dict(kind=9), R.BAD_TYPE),
    ("bad_order_type", {}, None, dict(order_type=7), R.BAD_TYPE),
    ("bad_tif", {}, None, dict(tif=0), R.BAD_TYPE),
    ("market_post_only", {}, None, dict(order_type=OrderType.MARKET, price=0, flags=F_POST_ONLY), R.BAD_TYPE),
    ("cancel_negative_id", {}, None, dict(kind=OrderAction.CANCEL, order_id=-1), R.BAD_ORDER_ID),
    ("replace_negative_id", {}, None, dict(kind=OrderAction.REPLACE, order_id=-1), R.BAD_ORDER_ID),
    ("cancel_by_side", {}, None, dict(kind=OrderAction.CANCEL, side=SELL), R.NONE),
    ("cancel_by_side_needs_side", {}, None, dict(kind=OrderAction.CANCEL, side=0), R.BAD_SIDE),
    ("replace_by_side", {}, None, dict(kind=OrderAction.REPLACE, price=999), R.NONE),
    ("tick_misaligned", dict(price_increment=5), None, dict(price=1001), R.TICK_SIZE),
    ("tick_aligned", dict(price_increment=5), None, dict(price=1005), R.NONE),
    ("lot_misaligned", dict(qty_increment=10), None, dict(qty=15), R.LOT_SIZE),
    ("min_qty", dict(min_qty=10), None, dict(qty=9), R.MIN_QTY),
    ("max_order_qty", dict(max_order_qty=5), None, dict(qty=6), R.MAX_ORDER_QTY),
    ("max_order_qty_at_limit", dict(max_order_qty=5), None, dict(qty=5), R.NONE),
    ("max_notional", dict(max_notional=5000.0), None, dict(qty=6), R.MAX_NOTIONAL),
    ("max_notional_at_limit", dict(max_notional=5000.0), None, dict(qty=5), R.NONE),
    ("max_notional_market_uses_mid", dict(max_notional=5000.0), None,
     dict(qty=6, order_type=OrderType.MARKET, price=0), R.MAX_NOTIONAL),
    ("collar_ticks", dict(collar_ticks=10), None, dict(price=1011), R.PRICE_COLLAR),
    ("collar_ticks_at_limit", dict(collar_ticks=10), None, dict(price=990), R.NONE),
    ("collar_frac", dict(collar_frac=0.01), None, dict(price=989, side=SELL), R.PRICE_COLLAR),
    ("max_position_counts_open_orders", dict(max_position=5), lambda r: send(r, qty=3), dict(qty=3),
     R.MAX_POSITION),
    ("max_position_counts_position", dict(max_position=5), lambda r: fill(r, BUY, 4, 1000), dict(qty=2),
     R.MAX_POSITION),
    ("max_position_short", dict(max_position=5), None, dict(side=SELL, qty=6), R.MAX_POSITION),
    ("max_gross_exposure", dict(max_gross_exposure=5000.0), lambda r: fill(r, SELL, 3, 1000, symbol=1),
     dict(qty=3), R.MAX_GROSS_EXPOSURE),
    ("max_leverage", dict(capital=10_000.0, max_leverage=2.0), None, dict(qty=21), R.MAX_LEVERAGE),
    ("max_leverage_at_limit", dict(capital=10_000.0, max_leverage=2.0), None, dict(qty=20), R.NONE),
    ("daily_loss", dict(daily_loss_limit=500.0), lambda r: (fill(r, BUY, 10, 1000), book(r, 0, 899, 901)),
     dict(qty=1), R.DAILY_LOSS),
    ("drawdown", dict(capital=10_000.0, max_drawdown=500.0),
     lambda r: (fill(r, BUY, 10, 1000), book(r, 0, 1099, 1101), book(r, 0, 1039, 1041)), dict(qty=1, price=1040),
     R.DRAWDOWN),
    ("rate_symbol", dict(rate_per_symbol=2), lambda r: (send(r), send(r)), dict(), R.RATE_SYMBOL),
    ("rate_total", dict(rate_total=2), lambda r: (send(r), send(r, symbol=1)), dict(), R.RATE_TOTAL),
    ("max_open_orders", dict(max_open_orders=2), lambda r: (send(r), send(r, symbol=1)), dict(), R.MAX_OPEN_ORDERS),
    ("max_open_orders_symbol", dict(max_open_orders_symbol=1), lambda r: send(r), dict(), R.MAX_OPEN_ORDERS),
    ("state_reducing", {}, lambda r: control(r, ControlCommand.REDUCE), dict(), R.STATE_REDUCING),
    ("state_reducing_lets_reduce_pass", {}, lambda r: (fill(r, BUY, 3, 1000), control(r, ControlCommand.REDUCE)),
     dict(side=SELL, qty=3), R.NONE),
    ("state_halted", {}, lambda r: control(r, ControlCommand.HALT), dict(side=SELL), R.STATE_HALTED),
    ("book_flagged_stale", {}, lambda r: book(r, 0, flags=F_STALE), dict(), R.BOOK_STALE),
    ("book_crossed", {}, lambda r: book(r, 0, bid=1002, ask=1001), dict(), R.BOOK_STALE),
    ("book_within_age_limit", dict(stale_after_ns=SEC), None, dict(), R.NONE),
    ("reduce_only_flat", {}, None, dict(flags=F_REDUCE_ONLY), R.REDUCE_ONLY),
    ("reduce_only_too_big", {}, lambda r: fill(r, BUY, 3, 1000), dict(side=SELL, qty=4, flags=F_REDUCE_ONLY),
     R.REDUCE_ONLY),
    ("reduce_only_ok", {}, lambda r: fill(r, BUY, 3, 1000), dict(side=SELL, qty=3, flags=F_REDUCE_ONLY), R.NONE),
    ("cancel_passes_when_halted", {}, lambda r: control(r, ControlCommand.HALT),
     dict(kind=OrderAction.CANCEL, order_id=7), R.NONE),
    ("cancel_all_every_symbol", {}, lambda r: control(r, ControlCommand.HALT),
     dict(kind=OrderAction.CANCEL_ALL, symbol=-1), R.NONE),
    ("cancel_all_bad_symbol", {}, None, dict(kind=OrderAction.CANCEL_ALL, symbol=-2), R.BAD_SYMBOL),
]  # fmt: skip


@pytest.mark.parametrize("name,kwargs,setup,fields,expected", CHECKS, ids=[c[0] for c in CHECKS])
def test_risk_check(name, kwargs, setup, fields, expected):
    risk = fresh(**kwargs)
    if setup is not None:
        setup(risk)
    rejected_before = int(risk.counters[C_REJECTED])
    n, reason, order = send(risk, **fields)
    assert reason == expected
    assert n == (1 if expected == R.NONE else 0)
    assert int(risk.counters[C_REJECTED]) - rejected_before == (0 if expected == R.NONE else 1)
    if expected == R.NONE:
        assert order["kind"] == fields.get("kind", OrderAction.NEW)
        assert order["qty"] == fields.get("qty", 1) and order["reason"] == 0 and order["seq"] > 0
    else:
        assert risk_reject_counts(risk)[expected.name] >= 1


def test_every_reject_reason_of_risk_is_covered_by_a_row():
    risk_reasons = {c[4] for c in CHECKS}
    router_or_venue = {
        R.UNKNOWN_ORDER, R.ROUTER_HALTED, R.TABLE_FULL, R.NO_LIQUIDITY, R.VENUE_REJECT, R.POST_ONLY_CROSS,
        R.TOO_LATE, R.INVALID_TRANSITION, R.REPLACE_SPLIT, R.MALFORMED, R.BAD_VENUE,
    }  # fmt: skip
    assert set(R) - risk_reasons - router_or_venue == set()


def test_book_age_limit():
    risk = fresh(stale_after_ns=SEC)
    assert send(risk, now=T0 + SEC)[1] == R.NONE
    assert send(risk, now=T0 + SEC + 1)[1] == R.BOOK_STALE
    book(risk, 0, now=T0 + 2 * SEC)
    assert send(risk, now=T0 + 2 * SEC + 5)[1] == R.NONE


def test_never_seen_book_is_stale():
    risk = make_risk(1, capital=1e6)
    assert send(risk)[1] == R.BOOK_STALE


def test_rate_window_slides():
    risk = fresh(rate_per_symbol=2)
    assert send(risk, now=T0)[1] == R.NONE
    assert send(risk, now=T0 + SEC // 2)[1] == R.NONE
    assert send(risk, now=T0 + SEC - 1)[1] == R.RATE_SYMBOL
    assert send(risk, now=T0 + SEC)[1] == R.NONE  # the first pass left the window
    assert send(risk, now=T0 + SEC + 1)[1] == R.RATE_SYMBOL
    assert send(risk, now=T0 + SEC + SEC // 2)[1] == R.NONE
    # cancels do not count against the rate
    assert send(risk, now=T0 + SEC + SEC // 2, kind=OrderAction.CANCEL, order_id=3)[1] == R.NONE


# ---------------------------------------------------------------------------------------------------------
# trading-state transitions: (id, make_risk kwargs, steps(risk) -> cancel-alls emitted, state sym 0, sym 1,
#                             expected cancel-alls as (kind, symbol))
# ---------------------------------------------------------------------------------------------------------
CA = int(OrderAction.CANCEL_ALL)
A, RD, H = TradingState.ACTIVE, TradingState.REDUCING, TradingState.HALTED


def _loss(r):
    fill(r, BUY, 10, 1000)
    return book(r, 0, 899, 901)


def _silent(r):
    """Symbol 1's book keeps updating, symbol 0's goes quiet for longer than stale_after_ns."""
    out = np.zeros(4, ORDER)
    emitted = _to_list(book(r, 1, now=T0 + SEC))
    return emitted + _to_list((risk_poll(r, T0 + SEC + 1, out, 0), out))


def _to_list(res):
    n, out = res
    return [(int(o["kind"]), int(o["symbol"])) for o in out[:n]]


TRANSITIONS = [
    ("initial_active", {}, lambda r: [], A, A, []),
    ("halt_all_kill_switch", {}, lambda r: control(r, ControlCommand.HALT), H, H, [(CA, -1)]),
    ("halt_one_symbol", {}, lambda r: control(r, ControlCommand.HALT, 0), H, A, [(CA, 0)]),
    ("stop_halts", {}, lambda r: control(r, ControlCommand.STOP), H, H, [(CA, -1)]),
    ("reduce_all", {}, lambda r: control(r, ControlCommand.REDUCE), RD, RD, []),
    ("reduce_one_symbol", {}, lambda r: control(r, ControlCommand.REDUCE, 1), A, RD, []),
    ("halted_to_active", {}, lambda r: control(r, ControlCommand.HALT) + control(r, ControlCommand.RESUME),
     A, A, [(CA, -1)]),
    ("reducing_to_active", {}, lambda r: control(r, ControlCommand.REDUCE) + control(r, ControlCommand.RESUME),
     A, A, []),
    ("reducing_to_halted", {}, lambda r: control(r, ControlCommand.REDUCE) + control(r, ControlCommand.HALT),
     H, H, [(CA, -1)]),
    ("daily_loss_trips_reducing", dict(daily_loss_limit=500.0), lambda r: _to_list(_loss(r)), RD, RD, []),
    ("daily_loss_trips_halted", dict(daily_loss_limit=500.0, loss_trip_state=TradingState.HALTED),
     lambda r: _to_list(_loss(r)), H, H, [(CA, -1)]),
    ("drawdown_trips_reducing", dict(max_drawdown=500.0), lambda r: _to_list(_loss(r)), RD, RD, []),
    ("loss_trip_holds_after_recovery", dict(daily_loss_limit=500.0),
     lambda r: _to_list(_loss(r)) + _to_list(book(r, 0, 999, 1001)), RD, RD, []),
    ("resume_clears_drawdown_trip", dict(max_drawdown=500.0),
     lambda r: _to_list(_loss(r)) + control(r, ControlCommand.RESUME), A, A, []),
    ("stale_book_halts_symbol", {}, lambda r: _to_list(book(r, 0, flags=F_STALE)), H, A, [(CA, 0)]),
    ("fresh_book_unhalts_symbol", {},
     lambda r: _to_list(book(r, 0, flags=F_STALE)) + _to_list(book(r, 0)), A, A, [(CA, 0)]),
    ("silent_book_halts_symbol", dict(stale_after_ns=SEC), _silent, H, A, [(CA, 0)]),
    ("stale_does_not_override_manual_halt", {},
     lambda r: control(r, ControlCommand.HALT, 0) + _to_list(book(r, 0, flags=F_STALE)) + _to_list(book(r, 0)),
     H, A, [(CA, 0)]),
]  # fmt: skip


@pytest.mark.parametrize("name,kwargs,steps,st0,st1,cancels", TRANSITIONS, ids=[t[0] for t in TRANSITIONS])
def test_trading_state_transition(name, kwargs, steps, st0, st1, cancels):
    risk = fresh(**kwargs)
    emitted = steps(risk)
    assert risk_effective_state(risk, 0) == st0
    assert risk_effective_state(risk, 1) == st1
    assert emitted == cancels


def test_daily_loss_holds_after_resume_until_new_day():
    risk = fresh(daily_loss_limit=500.0)
    _loss(risk)
    control(risk, ControlCommand.RESUME)
    assert send(risk)[1] == R.DAILY_LOSS  # still beyond the limit: re-trips
    assert risk_effective_state(risk, 0) == RD
    risk_new_day(risk)
    control(risk, ControlCommand.RESUME)
    assert send(risk)[1] == R.NONE


def test_reports_release_open_quantity_and_count():
    risk = fresh(max_open_orders=10)
    send(risk, qty=5)
    send(risk, side=SELL, qty=4, price=1001)
    assert (risk.open_buy[0], risk.open_sell[0], risk.open_count[0]) == (5, 4, 2)
    report(risk, ExecType.ACK, BUY)
    report(risk, ExecType.PARTIAL_FILL, BUY, qty=2, price=1000)
    assert (risk.open_buy[0], risk.pos.position_lots[0], risk.open_count[0]) == (3, 2, 2)
    report(risk, ExecType.CANCELED, BUY, qty=3)  # the router says how much the cancel removed
    assert (risk.open_buy[0], risk.open_count[0]) == (0, 1)
    report(risk, ExecType.REPLACED, SELL, qty=4, leaves=6)
    assert risk.open_sell[0] == 6
    report(risk, ExecType.CANCEL_REJECTED, SELL)
    report(risk, ExecType.FILL, SELL, qty=6, price=1001)
    assert (risk.open_sell[0], risk.open_count[0], risk.pos.position_lots[0]) == (0, 0, -4)
    report(risk, 99, SELL)  # unknown kind: counted, ignored
    report(risk, ExecType.FILL, 0, qty=1)  # bad side
    assert risk.counters[4] == 2


def test_report_flagged_opens_order_counts_it_open():
    """A REPLACE-by-side the router sent as a NEW: risk counts it open on its first report."""
    risk = fresh()
    rep = np.zeros(1, EXEC_REPORT)
    r = rep[0]
    r["kind"], r["side"], r["leaves_qty"], r["flags"] = ExecType.ACK, SELL, 4, F_OPENS_ORDER
    risk_on_report(risk, r)
    assert (risk.open_sell[0], risk.open_count[0]) == (4, 1)
    r["kind"], r["qty"], r["leaves_qty"], r["flags"], r["price"] = ExecType.PARTIAL_FILL, 1, 2, F_OPENS_ORDER, 1000
    risk_on_report(risk, r)  # first report a fill: opened = leaves + qty = 3, then the fill releases 1
    assert (risk.open_sell[0], risk.open_count[0]) == (4 + 3 - 1, 2)
    report(risk, ExecType.CANCELED, SELL, qty=4)
    report(risk, ExecType.CANCELED, SELL, qty=2)
    assert (risk.open_sell[0], risk.open_count[0]) == (0, 0)


def test_halt_via_report_loss_is_emitted_by_poll():
    risk = fresh(daily_loss_limit=500.0, loss_trip_state=TradingState.HALTED)
    fill(risk, BUY, 10, 1000)
    report(risk, ExecType.FILL, SELL, qty=10, price=900)  # realized -1000
    out = np.zeros(4, ORDER)
    n = risk_poll(risk, T0, out, 0)
    assert n == 1 and out[0]["kind"] == CA and out[0]["symbol"] == -1
    assert risk_poll(risk, T0, out, 0) == 0  # owed once


def test_bad_control_counted():
    risk = fresh()
    assert control(risk, 9) == [] and control(risk, ControlCommand.HALT, 7) == []
    assert risk.counters[8] == 2
    assert risk_effective_state(risk, 0) == A


def test_caller_supplied_position_array_and_equity():
    shared = np.full(2, 99, dtype=np.int64)
    risk = make_risk(2, capital=100.0, value_per_tick_lot=0.5, position_lots=shared)
    assert shared.tolist() == [0, 0]
    book(risk, 0)
    fill(risk, SELL, 4, 1000, fee=1.0)
    assert shared[0] == -4
    book(risk, 0, 989, 991)  # mid 990: short 4 gains 10 ticks each at 0.5
    assert pos_equity(risk.pos) == pytest.approx(100.0 - 1.0 + 20.0)
    assert risk.counters[C_PASSED] == 1


@pytest.mark.parametrize(
    "kwargs",
    [dict(price_increment=0), dict(max_position=-1), dict(max_leverage=-1.0), dict(rate_total=1.5),
     dict(loss_trip_state=0), dict(value_per_tick_lot=0.0), dict(max_order_qty=[1, 2, 3]),
     dict(position_lots=np.zeros(2, dtype=np.int32)), dict(qty_increment=1.5), dict(rate_window_ns=0)],
)  # fmt: skip
def test_make_risk_rejects_bad_parameters(kwargs):
    with pytest.raises(ValueError):
        make_risk(2, **kwargs)


@pytest.mark.parametrize(
    "value, want",
    [(3, [3, 3]), (3.0, [3, 3]), (np.int64(7), [7, 7]), ([1, 2], [1, 2]), ((0, 5), [0, 5]), (np.array([4, 6]), [4, 6]),
     (True, [1, 1])],
)  # fmt: skip
def test_a_per_symbol_limit_is_one_value_for_all_or_one_per_symbol(value, want):
    limit = make_risk(2, max_position=value).max_position
    assert limit.dtype == np.int64 and limit.tolist() == want


@pytest.mark.parametrize(
    "kwargs, message",
    [(dict(max_position=1.5), "max_position must be whole numbers, got 1.5"),
     (dict(max_position=float("nan")), "max_position must be whole numbers, got nan"),
     (dict(max_position=float("inf")), "max_position must be whole numbers, got inf"),
     (dict(max_position=[1, 2.5]), r"max_position must be whole numbers, got \[1, 2.5\]"),
     (dict(max_position=-1), r"max_position must be >= 0 \(per symbol\), got -1"),
     (dict(price_increment=[1, 0]), r"price_increment must be >= 1 \(per symbol\), got \[1, 0\]"),
     (dict(max_notional=-0.5), r"max_notional must be >= 0.0 \(per symbol\), got -0.5"),
     (dict(collar_frac=float("nan")), r"collar_frac must be >= 0.0 \(per symbol\), got nan"),
     (dict(max_position=[1, 2, 3]), "broadcast"),
     (dict(value_per_tick_lot=[1.0, 0.0]), "value_per_tick_lot must be finite and > 0")],
)  # fmt: skip
def test_a_bad_per_symbol_value_is_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_risk(2, **kwargs)


def test_risk_to_telemetry_block_layout():
    from hean.stages.risk import risk_to_telemetry
    from hean.telemetry import block as tb

    risk = fresh(max_order_qty=5)
    fill(risk, BUY, 3, 1000, fee=0.5)
    send(risk, qty=9)  # MAX_ORDER_QTY
    send(risk, symbol=7)  # BAD_SYMBOL
    control(risk, ControlCommand.REDUCE, 1)
    counters = np.zeros(tb.N_COUNTERS, dtype=np.int64)
    tm = np.zeros(tb.risk_len(2), dtype=np.int64)
    tm[tb.R_N_SYMBOLS] = 2
    risk_to_telemetry(risk, counters, tm, 123)
    assert tm[tb.R_TRADING_STATE] == tb.TS_REDUCING and tm[tb.R_REJECTS] == 2 and tm[tb.R_UPDATED_NS] == 123
    assert tm[tb.R_OPEN_ORDERS] == 0
    assert tm[tb.R_FEES : tb.R_FEES + 1].view(np.float64)[0] == 0.5
    base = tb.RISK_HEADER
    assert tm[base] == 3 and tm[base + 1 : base + 2].view(np.float64)[0] == 1000.0
    assert counters[tb.C_REJECTS] == 2
    assert counters[tb.C_REJECT_BASE + R.MAX_ORDER_QTY] == 1 and counters[tb.C_REJECT_BASE + R.BAD_SYMBOL] == 1
