"""Native event files: exact round trip through a memory map; every corruption is refused by name."""

from __future__ import annotations

import re
import struct

import numpy as np
import pytest
from conftest import data_file

from hean.feeds import FORMATS, load_events
from hean.feeds.common import FeedError
from hean.feeds.native import open_native, validate_events, write_native
from hean.feeds.synthetic import make_synthetic, synthetic_batch
from hean.records import MARKET_EVENT, EventKind
from hean.symbols import SymbolTable

TABLE = SymbolTable([{"name": f"S{i}", "tick_size": "0.5", "lot_size": "0.01", "venue": "sim"} for i in range(3)])


def synthetic_events(n=500):
    st = make_synthetic(3, 1)
    out = np.zeros(n * 41, MARKET_EVENT)
    return out[: synthetic_batch(st, out, n, 0, 1000)]


def test_round_trip_is_exact_and_memory_mapped(tmp_path):
    ev = synthetic_events()
    p = tmp_path / "x.hev"
    size = write_native(p, ev, TABLE, source="synthetic")
    assert p.stat().st_size == size and size % 64 == 0
    got, table = open_native(p)
    assert isinstance(got, np.memmap) and got.dtype == MARKET_EVENT
    assert got.tobytes() == ev.tobytes() and table == TABLE
    ev2, rep = load_events(p, "native")
    assert rep.symbols == TABLE and len(ev2) == len(ev)


def test_recording_converts_losslessly(tmp_path):
    ev, rep = load_events(data_file("bybit-xrpusdt-ob500.data.zip"), "bybit")
    p = tmp_path / "bybit.hev"
    write_native(p, ev, rep.symbols)
    got, table = open_native(p)
    assert got.tobytes() == ev.tobytes() and table == rep.symbols


def test_empty_file(tmp_path):
    p = tmp_path / "e.hev"
    write_native(p, np.zeros(0, MARKET_EVENT), TABLE)
    ev, _ = open_native(p)
    assert len(ev) == 0


def corrupt(tmp_path, fn):
    p = tmp_path / "c.hev"
    write_native(p, synthetic_events(10), TABLE)
    b = bytearray(p.read_bytes())
    p.write_bytes(fn(b))
    return p


@pytest.mark.parametrize(
    "fn, reason",
    [
        (lambda b: b"NOTHEAN!" + b[8:], "not a HEAN event file"),
        (lambda b: b[:8] + struct.pack("<I", 99) + b[12:], "event file format 99"),
        (lambda b: b[:-64], "does not match"),
        (lambda b: b[:20], "too short|does not match|unreadable"),
        (lambda b: b.replace(b'"<i8"', b'"<i4"', 1), "record layout differs"),
    ],
)
def test_corruption_is_refused(tmp_path, fn, reason):
    with pytest.raises(FeedError, match=rf"c.hev: .*({reason})"):
        open_native(corrupt(tmp_path, fn))


def test_write_rejects_other_dtypes(tmp_path):
    with pytest.raises(ValueError, match="MARKET_EVENT"):
        write_native(tmp_path / "x.hev", np.zeros(3, np.int64), TABLE)


def test_dispatcher_rejects_unknown_format(tmp_path):
    assert "native" in FORMATS
    with pytest.raises(ValueError, match="unknown format"):
        load_events(tmp_path / "x", "csv")


# ---------------------------------------------------------------------------------------------------------
# every record validated at load: (field, value, kind or None to keep, message)
# ---------------------------------------------------------------------------------------------------------
I64_MIN = np.iinfo(np.int64).min
BAD_RECORDS = [
    ("kind", 0, None, "kind 0 not a known record kind (1..11)"),
    ("kind", 200, None, "kind 200 not a known record kind"),
    ("symbol", 3, None, "symbol 3 out of range [0, 3)"),
    ("symbol", -1, None, "symbol -1 out of range [0, 3)"),
    ("side", 2, None, "side 2 not a valid side"),
    ("side", 0, EventKind.LEVEL_SET, "side 0 not a valid side for its kind for kind LEVEL_SET"),
    ("side", 0, EventKind.L3_ADD, "side 0 not a valid side for its kind for kind L3_ADD"),
    ("price", -460_000_000_000_000_000, EventKind.LEVEL_SET, "price -460000000000000000 out of range [1, 2**53)"),
    ("price", 0, EventKind.TRADE, "price 0 out of range [1, 2**53) for kind TRADE"),
    ("price", 2**53, EventKind.LEVEL_SET, "price 9007199254740992 out of range"),
    ("price", -1, EventKind.TICKER, "price -1 out of range [0, 2**53) for kind TICKER"),
    ("qty", -1, None, "qty -1 out of range [0, 2**53)"),
    ("qty", 2**53, None, "qty 9007199254740992 out of range"),
    ("flags", 8, None, "flags 8 has bits a market event may not carry"),  # F_STALE: a book-state flag
    ("order_id", I64_MIN, None, f"order_id {I64_MIN} is int64's minimum"),
    ("update_id", -5, None, "update_id -5 is negative"),
    ("seq", -1, None, "seq -1 is negative"),
    ("ts_origin", -1, None, "ts_origin -1 is negative"),
    ("ts_exch", -2, None, "ts_exch -2 is negative"),
]


def with_record(tmp_path, field, value, kind=None, index=3):
    """A valid native file whose record ``index`` has ``field = value`` (and ``kind``), bypassing the writer."""
    ev = synthetic_events(10)
    ev["kind"][index] = ev["kind"][index] if kind is None else kind
    ev["side"][index] = 1
    ev["price"][index] = max(int(ev["price"][index]), 1)
    ev[field][index] = value
    p = tmp_path / "v.hev"
    good = ev.copy()
    good[index] = ev[0]
    write_native(p, good, TABLE)
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) - ev.nbytes] + ev.tobytes())
    return p, ev


@pytest.mark.parametrize(("field", "value", "kind", "message"), BAD_RECORDS)
def test_every_record_is_validated_naming_file_record_field_value(tmp_path, field, value, kind, message):
    p, ev = with_record(tmp_path, field, value, kind)
    with pytest.raises(FeedError, match=re.escape(f"v.hev: record 3: {message}")) as e:
        open_native(p)
    assert "\n" not in str(e.value)
    with pytest.raises(FeedError, match="record 3"):  # the writer refuses what the reader would refuse
        write_native(tmp_path / "w.hev", ev, TABLE)
    assert not (tmp_path / "w.hev").exists()


@pytest.mark.parametrize(
    ("field", "value", "kind"),
    [
        ("price", 0, EventKind.TICKER),  # an empty side of the exchange's own top
        ("side", 0, EventKind.TRADE),  # LOBSTER cross trades have no aggressor
        ("price", -1, EventKind.HALT),  # LOBSTER's halt indicator
        ("qty", 0, EventKind.LEVEL_SET),  # a deletion
        ("order_id", -(1 << 40), EventKind.L3_ADD),  # LOBSTER phantom orders
        ("flags", 7, None),  # every bit a market event may carry
        ("price", 2**53 - 1, EventKind.LEVEL_SET),
    ],
)
def test_valid_edge_values_are_accepted(tmp_path, field, value, kind):
    p, ev = with_record(tmp_path, field, value, kind)
    got, _ = open_native(p)
    assert got.tobytes() == ev.tobytes()


def test_validation_finds_the_first_bad_record_of_a_large_file(tmp_path):
    ev = np.tile(synthetic_events(10), 20_000)  # 200k+ records: several chunks
    ev["symbol"][150_001] = 9
    ev["symbol"][190_000] = 9
    with pytest.raises(FeedError, match=r"record 150001: symbol 9 out of range"):
        validate_events(ev, 3, "big.hev")
    validate_events(ev[:150_000], 3, "big.hev")


@pytest.mark.parametrize(
    ("fn", "reason"),
    [
        # a negative record count whose size arithmetic adds up
        (lambda b: b[:16] + struct.pack("<q", -1) + struct.pack("<q", len(b) + 64) + b[32:], "does not match"),
        (lambda b: b[:24] + struct.pack("<q", 0) + b[32:], "does not match"),  # data offset inside the header
        (lambda b: b[:32] + struct.pack("<I", 10**6) + b[36:], "header metadata truncated"),
        (lambda b: b.replace(b'{"dtype"', b'["dtype"', 1), "unreadable header metadata|not a JSON object"),
        (lambda b: b.replace(b'"tick_size": "0.5"', b'"tick_size": "abc"', 1), "bad symbol table"),
        (lambda b: b.replace(b'"symbols": [{"name"', b'"symbols": [{"nome"', 1), "bad symbol table"),
    ],
)
def test_header_corruption_is_one_feed_error(tmp_path, fn, reason):
    with pytest.raises(FeedError, match=rf"c.hev: .*({reason})"):
        open_native(corrupt(tmp_path, fn))


def test_path_problems_are_one_feed_error(tmp_path):
    with pytest.raises(FeedError, match="is a directory"):
        open_native(tmp_path)
    with pytest.raises(FeedError, match="no such file"):
        open_native(tmp_path / "missing.hev")


def test_hean_book_refuses_a_crossed_native_file(tmp_path, capsys):
    """Issue 12: a record with ask -4.6e17 made ``hean book`` write crossed books and exit 0."""
    from hean.cli import main

    p, _ = with_record(tmp_path, "price", -460_000_000_000_000_000, EventKind.LEVEL_SET)
    out = tmp_path / "top.csv"
    assert main(["book", str(p), "--format", "native", "--top-csv", str(out)]) == 1
    assert "v.hev: record 3: price -460000000000000000 out of range" in capsys.readouterr().err
    assert not out.exists()
