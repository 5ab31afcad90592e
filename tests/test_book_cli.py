"""``hean book`` and ``hean convert`` end to end, in-process through the CLI entry point."""

from __future__ import annotations

import csv
import json
from decimal import Decimal

import numpy as np
from conftest import data_file

from hean.cli import main


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_book_bybit_top_csv_matches_recording(tmp_path):
    out = tmp_path / "top.csv"
    assert main(["book", str(data_file("bybit-xrpusdt-ob500.data.zip")), "--format", "bybit",
                 "--top-csv", str(out)]) == 0  # fmt: skip
    rows = read_csv(out)
    assert len(rows) == 50
    assert list(rows[0]) == ["recv_ns", "symbol", "update_id", "bid_px", "bid_qty", "ask_px", "ask_qty"]
    first = rows[0]
    assert (first["symbol"], first["update_id"], first["bid_px"], first["bid_qty"]) == (
        "XRPUSDT", "20254869", "1.9531", "6203")  # fmt: skip
    assert first["recv_ns"] == str(1733011200691 * 1_000_000)
    for r in rows:
        assert Decimal(r["bid_px"]) < Decimal(r["ask_px"])


def test_book_lobster_uses_the_l3_book(tmp_path, precompiled):
    precompiled("book-l3")  # the L3 book's kernels, from the session's background compile (conftest)
    out = tmp_path / "top.csv"
    msg = data_file("lobster-AAPL-2012-06-21-message-10.csv")
    assert main(["book", str(msg), "--format", "lobster", "--top-csv", str(out)]) == 0
    rows = read_csv(out)
    book = np.loadtxt(data_file("lobster-AAPL-2012-06-21-orderbook-10.csv"), delimiter=",", dtype=np.int64)
    assert len(rows) == 999
    for r in rows:
        ref = book[int(r["update_id"]) - 1]
        assert Decimal(r["ask_px"]) == Decimal(int(ref[0])) / 10000 and int(r["ask_qty"]) == ref[1]
        assert Decimal(r["bid_px"]) == Decimal(int(ref[2])) / 10000 and int(r["bid_qty"]) == ref[3]


def test_convert_then_book_from_native_is_identical(tmp_path):
    src = str(data_file("bybit-xrpusdt-ob500.data.zip"))
    native = tmp_path / "x.hev"
    assert main(["convert", src, "--format", "bybit", "-o", str(native)]) == 0
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    assert main(["book", src, "--format", "bybit", "--top-csv", str(a)]) == 0
    assert main(["book", str(native), "--format", "native", "--symbol", "XRPUSDT", "--top-csv", str(b)]) == 0
    assert a.read_text() == b.read_text()


def test_configured_tick_size_and_symbol_filter(tmp_path):
    lines = [
        {"topic": "orderbook.1.XRPUSDT", "type": "snapshot", "ts": 1,
         "data": {"s": "XRPUSDT", "b": [["1.95", "10"]], "a": [["1.96", "5"]], "u": 1, "seq": 1}},
        {"topic": "orderbook.1.XRPUSDT", "type": "delta", "ts": 2,
         "data": {"s": "XRPUSDT", "b": [["1.95", "0"]], "a": [], "u": 2, "seq": 2}},
    ]  # fmt: skip
    src = tmp_path / "b.jsonl"
    src.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    out = tmp_path / "top.csv"
    args = ["book", str(src), "--format", "bybit", "--symbol", "XRPUSDT", "--tick-size", "0.0001",
            "--lot-size", "1", "--top-csv", str(out)]  # fmt: skip
    assert main(args) == 0
    rows = read_csv(out)
    assert [(r["bid_px"], r["bid_qty"], r["ask_px"]) for r in rows] == [("1.9500", "10", "1.9600"), ("", "", "1.9600")]


def test_errors_name_file_and_line(tmp_path, capsys):
    src = tmp_path / "bad.txt"
    src.write_text('123 {"stream":"x","data":{"e":"trade","s":"BTCUSDT","t":1,"p":"1","q":"1"}}\n123 {oops\n')
    assert main(["book", str(src), "--format", "binance-usdm", "--top-csv", str(tmp_path / "o.csv")]) == 1
    assert "bad.txt:2: bad JSON" in capsys.readouterr().err
    # half the file is bad: more than lenient mode's default 1 %, within an explicit 50 %
    assert main(["convert", str(src), "--format", "binance-usdm", "--lenient", "-o", str(tmp_path / "o.hev")]) == 1
    assert "bad.txt: 1 of 2 lines skipped (50.0%), more than the 1.0%" in capsys.readouterr().err
    assert main(["convert", str(src), "--format", "binance-usdm", "--lenient", "0.5", "-o",
                 str(tmp_path / "o.hev")]) == 0  # fmt: skip
    assert "1 lines skipped" in capsys.readouterr().err
    assert main(["book", str(src), "--format", "nope", "--top-csv", "-"]) == 2
