"""What a run leaves behind, end to end: ``hean replay --out DIR`` on the shared Binance recording -- its
journal and tables against ``hean.backtest``'s arrays and the run's own counts, its HdrHistogram interval logs
against the summary's percentiles, ``hean journal`` on it, and ``hean report`` making every plot.

(The kill -9 of the router's worker with a journal is in tests/test_faults.py; the journal's own files and
the reader's verdicts on torn ones in tests/test_journal.py.)
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import hean
from hean.journal.reader import read_journal
from hean.records import BUY

ROOT = Path(__file__).resolve().parents[1]
RECORDING = str(ROOT / "tests" / "data" / "binance-usdm-btcusdt-20240808.gz")


def hean_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hean", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def replay(tmp_path_factory) -> tuple[Path, dict]:
    """A lockstep replay of the recording with the default market maker, its results in ``out``."""
    base = tmp_path_factory.mktemp("outputs")
    out = base / "run"
    p = hean_cli("replay", RECORDING, "-f", "binance-usdm", "--lockstep", "--out", str(out), "-q",
                 "--json", str(base / "summary.json"))  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert f"result files in {out}" in p.stderr
    return out, json.loads((base / "summary.json").read_text())


def _table(out: Path, name: str):
    import pyarrow.parquet as pq

    return pq.read_table(out / f"{name}.parquet").to_pydict()


@pytest.mark.timeout(900)
def test_the_fills_of_a_replay_are_the_runs_and_equal_the_backtests(replay):
    out, summary = replay
    fills, orders = _table(out, "fills"), _table(out, "orders")
    assert summary["fills"] > 100 and len(fills["ts"]) == summary["fills"]
    # every record the rings carried to the journal is in it
    j = read_journal(next((out / "journal").iterdir()))
    assert j.closed and j.warnings == []
    rings = summary["rings"]
    assert len(j["orders"]) == rings["orders-journal"]["written"] == rings["orders-journal"]["read"]
    assert len(j["reports"]) == rings["reports-journal"]["written"]
    assert len(orders["ts"]) == len(j["orders"]) + len(j["rejects"])
    bt = hean.backtest(RECORDING, "market_maker", format="binance-usdm").fills.data
    assert len(bt) == len(fills["ts"])
    np.testing.assert_array_equal(np.array(fills["client_id"]), bt["client_id"])
    np.testing.assert_array_equal(np.array(fills["order_id"]), bt["order_id"])
    np.testing.assert_array_equal(np.array(fills["price_ticks"]), bt["price"])
    np.testing.assert_array_equal(np.array(fills["qty_lots"]), bt["qty"])
    np.testing.assert_array_equal(np.array(fills["leaves_lots"]), bt["leaves"])
    np.testing.assert_array_equal(np.array(fills["fee"]), bt["fee"])
    assert fills["side"] == ["buy" if s == BUY else "sell" for s in bt["side"].tolist()]
    ts = np.array([t.value for t in _table_ts(out, "fills")], np.int64)
    np.testing.assert_array_equal(ts, bt["ts"])
    # the decimal prices are the ticks times the tick size, exactly
    tick = j.meta["symbols"][0]["tick_size"]
    from decimal import Decimal

    assert all(
        Decimal(p) == Decimal(t) * Decimal(tick) for p, t in zip(fills["price"], fills["price_ticks"], strict=True)
    )


def _table_ts(out: Path, name: str):
    import pyarrow.parquet as pq

    col = pq.read_table(out / f"{name}.parquet").column("ts")
    assert str(col.type) == "timestamp[ns, tz=UTC]"
    import pandas as pd

    return [pd.Timestamp(x) for x in col.to_pylist()]


def test_summary_json_has_the_run_the_config_and_every_figure(replay):
    out, summary = replay
    doc = json.loads((out / "summary.json").read_text())
    assert doc["hean_version"] == hean.__version__ and doc["run_id"] == summary["run_id"]
    assert doc["config"]["feed"]["path"] and doc["config"]["engine"]["lockstep"] is True
    assert doc["machine"] and doc["start_utc"] < doc["end_utc"] and doc["end_utc"].endswith("Z")
    for key in ("events", "orders", "fills", "tick_to_trade_ns", "stages"):
        assert doc["summary"][key] == summary[key], key


def test_the_interval_logs_decode_to_the_summarys_percentiles(replay):
    from hdrh.histogram import HdrHistogram
    from hdrh.log import HistogramLogReader

    from hean.telemetry.histogram import HIST_HIGHEST, hist_highest_equivalent, hist_lowest_equivalent

    out, summary = replay
    names = {p.name for p in (out / "latency").glob("*.hlog")}
    assert {"tick_to_trade.hlog", "book.service.hlog", "journal.service.hlog"} <= names
    total = HdrHistogram(1, HIST_HIGHEST, 3)
    reader = HistogramLogReader(str(out / "latency" / "tick_to_trade.hlog"), HdrHistogram(1, HIST_HIGHEST, 3))
    while (h := reader.get_next_interval_histogram()) is not None:
        total.add(h)
    want = summary["tick_to_trade_ns"]
    assert total.get_total_count() == want["count"] > 0
    for pct, key in ((50, "p50"), (99, "p99"), (100, "max")):
        v = total.get_value_at_percentile(pct)
        assert hist_lowest_equivalent(want[key]) <= v <= hist_highest_equivalent(want[key]), (key, v, want[key])


def test_hean_journal_info_and_export_from_the_output_directory(replay, tmp_path):
    out, summary = replay
    p = hean_cli("journal", "info", str(out), "--json", "-", timeout=120)
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)
    assert info["closed"] and info["records"]["orders"] == summary["rings"]["orders-journal"]["written"]
    p = hean_cli("journal", "export", str(out), "--format", "csv", "-o", str(tmp_path), timeout=120)
    assert p.returncode == 0, p.stderr
    rows = (tmp_path / "fills.csv").read_text().splitlines()
    assert len(rows) == summary["fills"] + 1
    assert rows[0].split(",")[:7] == ["ts", "strategy", "client_id", "order_id", "symbol", "side", "price"]
    parquet = _table(out, "fills")
    first = rows[1].split(",")
    assert first[6] == parquet["price"][0] and int(first[3]) == parquet["order_id"][0]
    p = hean_cli("journal", "tail", str(out), "--no-follow", "--kinds", "risk,orders", timeout=120)
    lines = p.stdout.splitlines()
    risk = [x for x in lines if x.startswith("risk ")]
    assert p.returncode == 0 and lines[0] == risk[0] and "arg=-1" in risk[0]  # the state first seen, first
    assert "kind=0" in risk[-1]  # ACTIVE while it traded
    assert sum(x.startswith("orders ") for x in lines) == info["records"]["orders"]


def test_hean_report_on_the_replay_writes_every_plot(replay):
    out, _ = replay
    p = hean_cli("report", str(out), timeout=300)
    assert p.returncode == 0, p.stderr
    html = (out / "report.html").read_text()
    images = re.findall(r'<img[^>]+src="data:image/png;base64,([^"]+)"', html)
    assert len(images) >= 4  # equity, position, fills on the price (one symbol), latency spectrum
    for img in images:
        png = base64.b64decode(img)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000


@pytest.mark.parametrize(
    "args, message",
    [
        (["replay", RECORDING, "-f", "binance-usdm", "--out", "{file}"], "exists and is not a folder"),
        (["replay", RECORDING, "-f", "binance-usdm", "--out", "{full}"], "not empty"),
        (["journal", "info", "{empty}"], "no journal in it"),
        (["journal", "info", "{missing}"], "neither a journal folder nor a running engine"),
    ],
)
def test_bad_output_and_journal_paths_are_refused_before_anything_runs(tmp_path, args, message):
    (tmp_path / "file").write_text("x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "old.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    paths = {k: str(tmp_path / k) for k in ("file", "full", "empty", "missing")}
    p = hean_cli(*[a.format(**paths) for a in args], timeout=120)
    assert p.returncode == 2 and message in p.stderr, p.stderr
