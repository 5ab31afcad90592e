"""``hean report DIR``: an output directory built by hand (Parquet and CSV tables, .hlog files, summary.json)
turns into a terminal summary and a self-contained report.html; bad input exits 2 naming the file."""

from __future__ import annotations

import base64
import csv
import json
import re
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hean.cli import main
from hean.report import SCHEMAS, load_output, percentile_label, spectrum
from hean.telemetry.histogram import (
    hist_add,
    hist_highest_equivalent,
    hist_lowest_equivalent,
    hist_max,
    hist_record,
    hist_value_at_percentile,
    new_histogram,
)
from hean.telemetry.hlog import write_hlog  # moved from hean.bench.hlog in the working tree

T0 = 1_714_564_800_000_000_000  # 2024-05-01T12:00:00Z in ns
MS = 1_000_000
IMG = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="([^"]*)">')
PNG = b"\x89PNG\r\n\x1a\n"
MISSING_MPL = "hean report: the HTML report needs matplotlib: pip install 'hean[plot]'"
SYMBOLS = ("BTCUSDT", "ETHUSDT")


def _rows() -> dict[str, list[dict]]:
    """A small run: two strategies, two symbols, a few fills, the book sampled every 10 ms."""
    rng = np.random.default_rng(7)
    marks, fills, orders, equity = [], [], [], []
    for k, sym in enumerate(SYMBOLS):
        mid = 64_000.0 if k == 0 else 3_100.0
        for i in range(300):
            mid += float(rng.normal(0, 0.5))
            bid = round(mid, 1)
            marks.append({"ts": T0 + i * 10 * MS, "symbol": sym, "bid": f"{bid:.2f}", "ask": f"{bid + 0.1:.2f}",
                          "bid_ticks": int(round(bid * 10)), "ask_ticks": int(round(bid * 10)) + 1})  # fmt: skip
        pos = 0
        for j in range(12):
            strategy, side = j % 2, ("buy" if j % 3 else "sell")
            ts = T0 + (j * 250 + 5) * MS
            px = float(marks[k * 300 + j * 25]["bid"])
            pos += 1 if side == "buy" else -1
            common = {"ts": ts, "strategy": strategy, "client_id": j, "order_id": 100 + j, "symbol": sym,
                      "side": side, "price": f"{px:.2f}", "price_ticks": int(round(px * 10)), "qty": "0.001",
                      "qty_lots": 1}  # fmt: skip
            orders.append({**common, "ts": ts - MS, "action": "new", "state": "filled", "reason": ""})
            fills.append({**common, "leaves_lots": 0, "fee": 0.01, "liquidity": "maker"})
            equity.append({"ts": ts, "strategy": strategy, "symbol": sym, "position_lots": pos,
                           "pnl": float(rng.normal(0, 5)), "fees": 0.01 * (j + 1)})  # fmt: skip
    positions = [
        {"strategy": s, "symbol": sym, "position": "0.002", "position_lots": 2, "cash": -10.0, "fees": 0.06,
         "mark": 64_000.0, "pnl": 1.25}
        for s in (0, 1) for sym in SYMBOLS
    ]  # fmt: skip
    return {"orders": orders, "fills": fills, "positions": positions, "equity": equity, "marks": marks}


def _write_parquet(path, name: str, rows: list[dict]) -> None:
    cols = {}
    for col, kind in SCHEMAS[name].items():
        values = [r[col] for r in rows]
        typ = {"ts": pa.timestamp("ns", tz="UTC"), "int": pa.int64(), "float": pa.float64(), "str": pa.string()}[kind]
        cols[col] = pa.array(values, type=typ)
    pq.write_table(pa.table(cols), path / f"{name}.parquet")


def _iso(ns: int) -> str:
    return np.datetime_as_string(np.datetime64(ns, "ns"), unit="ns") + "Z"


def _write_csv(path, name: str, rows: list[dict]) -> None:
    kinds = SCHEMAS[name]
    with open(path / f"{name}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(kinds)
        for r in rows:
            w.writerow([_iso(r[c]) if kinds[c] == "ts" else r[c] for c in kinds])


def _hist(values) -> np.ndarray:
    h = new_histogram()
    for v in values:
        hist_record(h, int(v))
    return h


HLOG_VALUES = {  # name -> the values of each 1 s interval
    "tick_to_trade": [np.random.default_rng(i).lognormal(10.0, 0.6, 2_000) for i in range(3)],
    "book.service": [np.random.default_rng(10 + i).lognormal(5.0, 0.4, 5_000) for i in range(2)],
    "risk.service": [np.random.default_rng(20).lognormal(6.0, 0.5, 800)],
    "risk.age.states-risk": [np.random.default_rng(30).lognormal(7.0, 0.5, 800)],
}


def _write_hlogs(path, empty: bool) -> dict[str, np.ndarray]:
    """One .hlog per histogram as the writer makes them; returns each one's whole-run histogram."""
    (path / "latency").mkdir()
    totals = {}
    for name, intervals in HLOG_VALUES.items():
        hists = [_hist([] if empty else values) for values in intervals]
        total = new_histogram()
        for h in hists:
            hist_add(total, h)
        write_hlog(path / "latency" / f"{name}.hlog", [(None, float(i), 1.0, h) for i, h in enumerate(hists)], T0 / 1e9)
        totals[name] = total
    return totals


def _summary(empty: bool) -> dict:
    lat = {"count": 0 if empty else 6_000, "p50": None if empty else 22_000, "p90": None, "p99": None if empty
           else 80_000, "p999": None, "p9999": None, "max": None if empty else 150_000}  # fmt: skip
    return {
        "run_id": "r-test", "exit_code": 0, "reason": "duration", "error": None, "elapsed_s": 5.2,
        "startup_s": 0.8, "feed_s": 3.0, "events": 0 if empty else 12_345, "messages": 0 if empty else 4_000,
        "orders": 0 if empty else 24, "fills": 0 if empty else 24, "rejects": {}, "rejects_total": 0,
        "pnl": {"trading_state": "ACTIVE", "open_orders": 0, "realized": 3.0, "unrealized": 1.0, "fees": 0.5,
                "total": 3.5, "positions": {}},
        "strategies": [{"id": 0, "path": "market_maker", "orders": 12, "fills": 12, "pnl": 2.0, "fault": ""},
                       {"id": 1, "path": "momentum", "orders": 12, "fills": 12, "pnl": 1.5, "fault": ""}],
        "tick_to_trade_ns": lat,
        "stages": {s: {"service_ns": lat, "age_ns": {}} for s in ("feed", "book", "risk")},
    }  # fmt: skip


def make_output(path, fmt: str = "parquet", empty: bool = False) -> dict[str, np.ndarray]:
    """An output directory as hean run --out writes it; returns the histograms behind its .hlog files."""
    rows = _rows()
    for name in SCHEMAS:
        (_write_parquet if fmt == "parquet" else _write_csv)(path, name, [] if empty else rows[name])
    meta = {"hean_version": "0.1.0", "run_id": "r-test", "command": ["hean", "run", "--out", str(path)],
            "start_utc": "2024-05-01T12:00:00Z", "end_utc": "2024-05-01T12:00:05Z", "machine": {"cpus": 4},
            "config": {"engine": {"duration": 5}}, "summary": _summary(empty)}  # fmt: skip
    (path / "summary.json").write_text(json.dumps(meta))
    return _write_hlogs(path, empty)


def _images(html: str) -> list[tuple[bytes, str]]:
    return [(base64.b64decode(data), alt) for data, alt in IMG.findall(html)]


@pytest.mark.parametrize(
    ("fmt", "empty", "alts"),
    [
        ("parquet", False, ["PnL per strategy", "position per strategy and symbol", "fills BTCUSDT",
                            "fills ETHUSDT", "latency by percentile"]),
        ("csv", False, ["PnL per strategy", "position per strategy and symbol", "fills BTCUSDT",
                        "fills ETHUSDT", "latency by percentile"]),
        ("parquet", True, ["PnL per strategy", "position per strategy and symbol", "fills on the price",
                           "latency by percentile"]),
        ("csv", True, ["PnL per strategy", "position per strategy and symbol", "fills on the price",
                       "latency by percentile"]),
    ],
)  # fmt: skip
def test_report_html_has_one_png_per_plot(tmp_path, capsys, fmt, empty, alts):
    make_output(tmp_path, fmt, empty)
    assert main(["report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "r-test: OK" in out and "tick-to-trade" in out and f"report: {tmp_path / 'report.html'}" in out
    html = (tmp_path / "report.html").read_text(encoding="ascii")
    images = _images(html)
    assert [alt for _, alt in images] == alts
    for png, alt in images:
        assert png.startswith(PNG) and len(png) > 1024, alt
    assert html.count("<img") == len(alts)
    assert "http://" not in html.replace("http://www.w3.org", "") and "<script" not in html  # self-contained
    for text in ("tick-to-trade", "book service", "risk service", "market_maker", "momentum"):
        assert text in html, text
    if not empty:
        assert "risk.age.states-risk.hlog" in html  # the age rows are listed, not drawn


def test_csv_and_parquet_tables_read_the_same(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    make_output(a, "parquet")
    make_output(b, "csv")
    ta, tb = load_output(a).tables, load_output(b).tables
    for name, kinds in SCHEMAS.items():
        for col, kind in kinds.items():
            x, y = ta[name][col], tb[name][col]
            assert x.dtype == y.dtype and np.array_equal(x, y, equal_nan=kind == "float"), (name, col)
    assert ta["marks"]["ts"][0] == np.datetime64(T0, "ns")


@pytest.mark.parametrize("name", list(HLOG_VALUES))
def test_spectrum_from_the_hlog_matches_the_histogram(tmp_path, name):
    totals = make_output(tmp_path, "csv")
    s = spectrum(tmp_path / "latency" / f"{name}.hlog")
    h = totals[name]
    assert s.count == sum(len(v) for v in HLOG_VALUES[name])
    assert s.max_ns == hist_highest_equivalent(hist_max(h))
    for p in (50.0, 90.0, 99.0, 99.9, 100.0):
        want = int(hist_value_at_percentile(h, p))
        got = s.value_at(p)
        if p == 99.9 and s.count < 1000:
            assert got is None  # the count does not support it: not a point of the spectrum
            continue
        assert hist_lowest_equivalent(want) <= got <= hist_highest_equivalent(want), (p, got, want)
    assert np.all(np.diff(s.pcts) > 0) and np.all(np.diff(s.values_ns) >= 0)


def _drop(path, name):
    (path / name).unlink()


def _garble(path, name):
    (path / name).write_text("{not json")


def _no_summary_object(path, _):
    (path / "summary.json").write_text('{"run_id": "x"}')


def _drop_column(path, _):
    text = (path / "fills.csv").read_text().replace("liquidity", "liq", 1)
    (path / "fills.csv").write_text(text)


def _bad_int(path, _):
    lines = (path / "equity.csv").read_text().splitlines()
    lines[1] = lines[1].replace(",0,", ",zero,", 1)
    (path / "equity.csv").write_text("\n".join(lines) + "\n")


def _bad_ts(path, _, ts="yesterday"):
    lines = (path / "marks.csv").read_text().splitlines()
    lines[1] = ts + lines[1][lines[1].index(",") :]
    (path / "marks.csv").write_text("\n".join(lines) + "\n")


def _no_ts(path, name):
    _bad_ts(path, name, ts="")


def _garble_hlog(path, _):
    (path / "latency" / "book.service.hlog").write_text("0.000,1.000,0.100,HISTFAAAAnotbase64!!\n")


# (what is broken, the file the message names, a word of the message)
BAD_INPUTS = [
    (_drop, "summary.json", "missing"),
    (_garble, "summary.json", "JSON"),
    (_no_summary_object, "summary.json", "'summary'"),
    (_drop, "fills.csv", "table 'fills' missing"),
    (_drop_column, "fills.csv", "liquidity"),
    (_bad_int, "equity.csv", "not an integer"),
    (_bad_ts, "marks.csv", "'yesterday' is not an ISO-8601"),
    (_no_ts, "marks.csv", "'' is not an ISO-8601"),
    (_garble_hlog, "book.service.hlog", "HdrHistogram"),
]


@pytest.mark.parametrize(("breaker", "name", "word"), BAD_INPUTS, ids=[f"{b.__name__}-{n}" for b, n, _ in BAD_INPUTS])
def test_bad_input_exits_2_naming_the_file(tmp_path, capsys, breaker, name, word):
    make_output(tmp_path, "csv")
    breaker(tmp_path, name)
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hean report: ") and err.count("\n") == 1, err
    assert name in err and word in err and "Traceback" not in err, err


def test_not_a_directory_exits_2(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "nowhere: not a directory" in capsys.readouterr().err


def test_without_matplotlib_the_summary_is_printed_then_exit_2(tmp_path, capsys, monkeypatch):
    make_output(tmp_path, "parquet")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    assert main(["report", str(tmp_path)]) == 2
    cap = capsys.readouterr()
    assert "r-test: OK" in cap.out and "tick-to-trade" in cap.out
    assert cap.err == MISSING_MPL + "\n"
    assert not (tmp_path / "report.html").exists()
    assert main(["report", str(tmp_path), "--no-html"]) == 0  # the summary alone needs no matplotlib


def test_html_option_writes_elsewhere_and_no_html_writes_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    make_output(run, "csv", empty=True)
    assert main(["report", str(run), "--no-html"]) == 0 and not (run / "report.html").exists()
    assert main(["report", str(run), "--html", str(tmp_path / "r.html")]) == 0
    assert (tmp_path / "r.html").read_text().startswith("<!doctype html>") and not (run / "report.html").exists()
    with pytest.raises(SystemExit) as e:
        main(["report", str(run), "--html", "x.html", "--no-html"])
    assert e.value.code == 2
    capsys.readouterr()


@pytest.mark.parametrize(("decade", "label"), [(0, "0%"), (1, "90%"), (2, "99%"), (3, "99.9%"), (5, "99.999%")])
def test_percentile_axis_labels(decade, label):
    assert percentile_label(decade) == label
