"""``hean bench indicators`` runs end to end on tiny sizes and reports every measurement (no timing asserted)."""

from __future__ import annotations

import json

from hean.bench import indicators as bench
from hean.commands.bench import BENCHES


def test_bench_indicators_smoke(tmp_path, capsys):
    out = tmp_path / "ind.json"
    argv = ["--samples", "1000", "--reps", "1", "--sizes", "100,300", "--min-time", "0", "--no-latency"]
    assert bench.main([*argv, "--results", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["stream_ns"]) == {"1", "8"} and all(v > 0 for v in report["stream_ns"].values())
    assert set(report["stage_ns"]) == {"rsi_macd", "market_maker"}
    rows = {(r["indicator"], r["n"]) for r in report["batch"]}
    assert rows == {(i, n) for i in ("rsi", "macd", "bbands", "sma", "ema", "atr") for n in (100, 300)}
    assert all(r["talib_us"] > 0 and r["hean_us"] > 0 for r in report["batch"])
    text = capsys.readouterr().out
    assert "streaming, full indicator set" in text and "batch vs TA-Lib" in text


def test_registered_as_a_bench_target():
    assert BENCHES["indicators"][0] == "hean.bench.indicators"
