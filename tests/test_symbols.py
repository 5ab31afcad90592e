"""Exact decimal <-> tick/lot conversion, in Python and in the numba kernels, and the symbol table."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hean.symbols import (
    OffGridError,
    Symbol,
    SymbolTable,
    format_units,
    parse_decimal,
    parse_decimal_str,
    step_grid,
    to_units,
    units_from_str,
)


def nb_units(text, mant, scale):
    buf = np.frombuffer(text.encode(), np.uint8)
    v, nf, ok = parse_decimal(buf, 0, len(buf))
    if not ok:
        return None
    u, ok = to_units(v, nf, mant, scale)
    return int(u) if ok else None


@pytest.mark.parametrize(
    "step, grid",
    [
        ("0.10", (1, 1)),
        ("0.1", (1, 1)),
        ("0.0001", (1, 4)),
        ("1", (1, 0)),
        ("25", (25, 0)),
        ("0.25", (25, 2)),
        ("100", (100, 0)),
        ("0.005", (5, 3)),
    ],  # fmt: skip
)
def test_step_grid(step, grid):
    assert step_grid(step) == grid


@pytest.mark.parametrize(
    "text, step, units",
    [
        ("61800.20", "0.10", 618002),
        ("61800.2", "0.1", 618002),
        ("61800", "0.10", 618000),
        ("0.001", "0.001", 1),
        ("1.9531", "0.0001", 19531),
        ("-0.05", "0.01", -5),
        ("0.75", "0.25", 3),
        ("125", "25", 5),
        ("0.000", "0.001", 0),
        ("00012.50", "0.5", 25),
        ("999999999999999999", "1", 999999999999999999),
    ],
)
def test_exact_conversion(text, step, units):
    mant, scale = step_grid(step)
    assert units_from_str(text, mant, scale) == units
    assert nb_units(text, mant, scale) == units


@pytest.mark.parametrize(
    "text, step",
    [("61800.25", "0.10"), ("0.0015", "0.001"), ("130", "25"), ("1.9531", "0.001"), ("0.3", "0.25")],
)
def test_off_grid_is_an_error_naming_the_value(text, step):
    mant, scale = step_grid(step)
    with pytest.raises(OffGridError, match=rf"'{text}' is not a whole multiple of"):
        units_from_str(text, mant, scale, "price")
    assert nb_units(text, mant, scale) is None


@pytest.mark.parametrize("text", ["", "-", ".5", "5.", "1e5", "1.2.3", " 1", "1,0", "nan", "inf", "+1",
                                  "1234567890123456789"])  # fmt: skip
def test_not_a_plain_decimal(text):
    with pytest.raises(OffGridError):
        parse_decimal_str(text)
    buf = np.frombuffer(text.encode(), np.uint8)
    assert not parse_decimal(buf, 0, len(buf))[2]


def test_float_would_land_on_the_wrong_tick():
    """The reason for all this: float division puts 61800.2 / 0.1 one tick low when truncated."""
    assert int(float("61800.2") / 0.1) == 618001
    assert units_from_str("61800.2", *step_grid("0.1")) == 618002


@given(st.integers(-(10**15), 10**15), st.integers(0, 8), st.sampled_from(["0.01", "0.5", "25", "0.0001", "1"]))
def test_round_trip(units, extra_zeros, step):
    mant, scale = step_grid(step)
    text = format_units(units, scale, mant)
    if extra_zeros and "." in text:
        text += "0" * extra_zeros
    assert units_from_str(text, mant, scale) == units
    assert nb_units(text, mant, scale) == units
    assert Decimal(text) == units * Decimal(step)


def test_table_from_config_dicts():
    t = SymbolTable(
        [
            {"name": "BTCUSDT", "tick_size": "0.10", "lot_size": "0.001", "venue": "binance"},
            {"name": "XRPUSDT", "tick_size": "0.0001", "lot_size": "1"},
        ]
    )
    assert len(t) == 2 and t.names == ["BTCUSDT", "XRPUSDT"]
    assert t["XRPUSDT"].id == 1 and t.by_id(0).name == "BTCUSDT" and t.id_of("BTCUSDT") == 0
    assert t.tick_mant.tolist() == [1, 1] and t.tick_scale.tolist() == [1, 4] and t.lot_scale.tolist() == [3, 0]
    btc = t["BTCUSDT"]
    assert btc.tick_size == Decimal("0.10") and btc.price_to_ticks("61800.20") == 618002
    assert btc.ticks_to_str(618002) == "61800.2" and btc.lots_to_str(2507) == "2.507"
    assert btc.qty_to_lots("2.507") == 2507
    assert SymbolTable.from_json(t.to_json()) == t
    with pytest.raises(KeyError, match="unknown symbol 'ETH'"):
        t["ETH"]
    with pytest.raises(KeyError):
        t.by_id(2)


@pytest.mark.parametrize(
    "entries, reason",
    [
        ([{"name": "A", "tick_size": 0.1, "lot_size": "1"}], "not the float"),
        ([{"name": "A", "tick_size": "abc", "lot_size": "1"}], "not a decimal"),
        ([{"name": "A", "tick_size": "-1", "lot_size": "1"}], "positive"),
        ([{"name": "A", "tick_size": "0.1"}], "missing"),
        ([{"name": "A", "tick_size": "1", "lot_size": "1", "colour": "red"}], "unknown keys"),
        ([{"name": "A", "tick_size": "1", "lot_size": "1", "id": 3}], "must equal its position"),
        ([{"name": "A", "tick_size": "1", "lot_size": "1"}] * 2, "duplicate"),
    ],
)
def test_bad_config(entries, reason):
    with pytest.raises(ValueError, match=reason):
        SymbolTable(entries)


def test_symbol_objects_accepted():
    s = Symbol("X", 0, "0.5", "1")
    assert SymbolTable([s])["X"].tick_mant == 5


# no deadline: on a cold numba cache the first example compiles the kernels' Python twins (hean.jit)
@settings(deadline=None)
@given(st.text(alphabet="0123456789.-", min_size=0, max_size=24))
def test_fast_and_general_parsers_agree(text):
    from hean.symbols import _parse_decimal_general

    buf = np.frombuffer(text.encode(), np.uint8)
    fast = parse_decimal(buf, 0, len(buf))
    slow = _parse_decimal_general(buf, 0, len(buf))
    assert fast[2] == slow[2]
    if fast[2]:
        assert fast == slow
        assert Decimal(text) == Decimal(int(fast[0])).scaleb(-int(fast[1]))
