"""Run-time controls: what a request means (hean.engine.requests), limits in instrument units and per symbol
(hean.stages.risk.risk_limits), the risk kernel applying SET and NEW_DAY, and the daily reset's clock."""

from __future__ import annotations

import calendar

import numpy as np
import pytest

from hean.engine.config import load_config
from hean.engine.requests import next_day_start, resolve
from hean.records import CONTROL, ControlCommand
from hean.stages import risk as R
from hean.symbols import to_lots

SYMBOLS = load_config().symbols  # SYN-A (lot 0.001), SYN-B (lot 1)
SET, HALT = int(ControlCommand.SET), int(ControlCommand.HALT)


def f64(bits: int) -> float:
    return float(np.array([bits], np.int64).view(np.float64)[0])


# request -> [(kind, symbol, key code, value)] or an error
REQUESTS = [
    ({"op": "halt", "symbol": "SYN-B"}, [(HALT, 1, 0, None)], "halt symbol SYN-B"),
    ({"op": "resume", "symbol": None}, [(int(ControlCommand.RESUME), -1, 0, None)], "resume every symbol"),
    ({"op": "set", "symbol": "SYN-A", "key": "max_position", "value": "25"}, [(SET, 0, 2, 25.0)], "max_position"),
    (
        {"op": "set", "symbol": None, "key": "max_position_units", "value": "0.5"},
        [(SET, 0, 2, 500.0), (SET, 1, 2, None)],
        "instrument units",
    ),  # fmt: skip
    ({"op": "set", "symbol": "SYN-A", "key": "max_order_qty_units", "value": "0.25"}, [(SET, 0, 1, 250.0)], "units"),
    ({"op": "set", "symbol": None, "key": "daily_loss_limit", "value": "2500.5"}, [(SET, -1, 12, 2500.5)], "daily"),
]


@pytest.mark.parametrize(("req", "want", "what"), REQUESTS[:3] + REQUESTS[4:])
def test_a_request_becomes_the_controls_it_stands_for(req, want, what):
    controls, text = resolve(req, SYMBOLS)
    assert [(k, s, side) for k, s, side, _ in controls] == [(k, s, side) for k, s, side, _ in want]
    for (_, _, _, bits), (_, _, _, v) in zip(controls, want, strict=True):
        if v is not None:
            assert f64(bits) == v
    assert what in text


def test_instrument_units_need_whole_lots_of_every_symbol():
    with pytest.raises(ValueError, match="0.5 is not a whole number of lots of 1"):
        resolve(REQUESTS[3][0], SYMBOLS)  # SYN-B trades whole units
    controls, _ = resolve({**REQUESTS[3][0], "value": "2"}, SYMBOLS)
    assert [f64(c[3]) for c in controls] == [2000.0, 2.0]
    assert to_lots("0.003", "0.001", "x") == 3


BAD_REQUESTS = [
    ({"op": "explode"}, "unknown request 'explode'"),
    ({"op": "halt", "symbol": "BTCUSDT"}, "no symbol 'BTCUSDT' in this run; its symbols: \\['SYN-A', 'SYN-B'\\]"),
    ({"op": "set", "key": "max_speed", "value": 1}, "unknown limit 'max_speed'"),
    ({"op": "set", "key": "max_position", "value": "-1"}, "must be a finite number >= 0"),
    ({"op": "set", "key": "max_position", "value": "1.5"}, "must be a whole number"),
    ({"op": "set", "key": "max_position", "value": "abc"}, "'abc' is not a number"),
    ({"op": "set", "symbol": "SYN-A", "key": "rate_total", "value": 5}, "one limit for the whole account"),
]


@pytest.mark.parametrize(("req", "match"), BAD_REQUESTS)
def test_a_bad_request_is_refused_with_the_reason(req, match):
    with pytest.raises(ValueError, match=match):
        resolve({"symbol": None, **req}, SYMBOLS)


# [risk] table -> per-symbol max_position and max_order_qty (lots)
TABLES = [
    ({"max_position": 100}, [100, 100], [1000, 1000]),
    ({"max_position_units": 2}, [2000, 2], [1000, 1000]),
    ({"max_position": 100, "symbols": {"SYN-B": {"max_position": 7}}}, [100, 7], [1000, 1000]),
    ({"symbols": {"SYN-A": {"max_order_qty_units": 0.5, "max_position_units": 1}}}, [1000, 1000], [500, 1000]),
]


@pytest.mark.parametrize(("table", "position", "order_qty"), TABLES)
def test_limits_in_instrument_units_and_per_symbol(table, position, order_qty):
    t = R.risk_limits(table, SYMBOLS)
    risk = R.make_risk(2, **t)
    assert risk.max_position.tolist() == position and risk.max_order_qty.tolist() == order_qty


BAD_TABLES = [
    ({"symbols": {"BTC": {"max_position": 1}}}, "key 'risk.symbols.BTC': no symbol 'BTC'"),
    ({"symbols": {"SYN-A": {"rate_total": 1}}}, "key 'risk.symbols.SYN-A.rate_total': not a per-symbol limit"),
    ({"symbols": {"SYN-A": {"max_position": -2}}}, "key 'risk.symbols.SYN-A.max_position': a number >= 0"),
    ({"max_order_qty_units": 0.0005}, "key 'risk.max_order_qty_units': 0.0005 is not a whole number of lots"),
]


@pytest.mark.parametrize(("table", "match"), BAD_TABLES)
def test_a_bad_risk_table_names_the_key(table, match):
    with pytest.raises(ValueError, match=match):
        R.risk_limits(table, SYMBOLS)


def _control(kind, symbol=-1, side=0, value=0.0):
    c = np.zeros(1, CONTROL)
    c["kind"], c["symbol"], c["side"] = kind, symbol, side
    c["arg"] = np.array([value], np.float64).view(np.int64)[0]
    return c[0]


def test_risk_applies_a_set_to_one_symbol_or_all_and_refuses_an_unknown_key():
    risk = R.make_risk(2)
    out = np.zeros(8, R.ORDER)
    code = R.LIMIT_KEYS["max_position"][0]
    R.risk_on_control(risk, _control(SET, 1, code, 25.0), 0, out, 0)
    assert risk.max_position.tolist() == [1000, 25]
    R.risk_on_control(risk, _control(SET, -1, R.LIMIT_KEYS["max_notional"][0], 5e5), 0, out, 0)
    assert risk.max_notional.tolist() == [5e5, 5e5]
    R.risk_on_control(risk, _control(SET, -1, R.LIMIT_KEYS["daily_loss_limit"][0], 250.0), 0, out, 0)
    assert risk.lim_f[R.LF_DAILY_LOSS] == 250.0
    bad = int(risk.counters[R.C_BAD_CONTROLS])
    R.risk_on_control(risk, _control(SET, -1, 99, 1.0), 0, out, 0)
    R.risk_on_control(risk, _control(SET, -1, code, -3.0), 0, out, 0)
    assert risk.counters[R.C_BAD_CONTROLS] == bad + 2 and risk.max_position.tolist() == [1000, 25]


def test_a_new_day_counts_the_daily_loss_from_the_current_equity():
    from hean.stages.positions import T_REALIZED

    risk = R.make_risk(1, capital=1000.0)
    risk.pos.totals[T_REALIZED] = -300.0  # lost 300 yesterday
    assert R.pos_equity(risk.pos) == 700.0 and risk.gf[R.GF_DAY_START] == 1000.0
    R.risk_on_control(risk, _control(int(ControlCommand.NEW_DAY)), 0, np.zeros(4, R.ORDER), 0)
    assert risk.gf[R.GF_DAY_START] == 700.0


# (now as UTC "YYYY-mm-dd HH:MM:SS", reset time) -> the next day start
DAYS = [
    ("2026-12-03 15:00:00", "00:00", "2026-12-04 00:00:00"),
    ("2026-12-03 15:00:00", "17:30", "2026-12-03 17:30:00"),
    ("2026-12-03 17:30:00", "17:30", "2026-12-04 17:30:00"),  # exactly at the time: the next one
    ("2026-12-31 23:59:59", "00:00:00", "2027-01-01 00:00:00"),
]


def _unix(text: str) -> int:
    import time

    return calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M:%S"))


@pytest.mark.parametrize(("now", "at", "want"), DAYS)
def test_the_next_trading_day_starts_at_the_configured_utc_time(now, at, want):
    assert next_day_start(_unix(now), at) == _unix(want)


def test_a_bad_daily_reset_time_is_a_configuration_error():
    from hean.engine.config import ConfigError

    with pytest.raises(ConfigError, match="key 'engine.daily_reset_utc': a UTC time HH:MM or HH:MM:SS"):
        load_config(None, {"engine.daily_reset_utc": "25:00"})
