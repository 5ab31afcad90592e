"""Native event files: exact round trip through a memory map; every corruption is refused by name."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from conftest import data_file

from hean.feeds import FORMATS, load_events
from hean.feeds.common import FeedError
from hean.feeds.native import open_native, write_native
from hean.feeds.synthetic import make_synthetic, synthetic_batch
from hean.records import MARKET_EVENT
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
