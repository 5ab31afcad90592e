"""The run summary's screen (``hean.commands.views.summary``): every figure of the summary dict is on it, it
fits an 80-column pipe as plain text, and it draws what it is given without reading it as markup."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from hean.commands.run import print_summary
from hean.commands.views.summary import summary_view
from hean.commands.views.units import fmt_ns

STAGES = ("feed", "book", "strategy", "risk", "router", "venue")


def _hist(base: int) -> dict:
    return {"count": 1000, "p50": base, "p90": 3 * base, "p99": 9 * base, "p999": 27 * base, "p9999": 81 * base,
            "max": 100 * base}  # fmt: skip


def _summary(**over) -> dict:
    stages = {
        name: {"events_in": 1000 + i, "events_out": 2000 + i, "ring_full": 0, "drops": 0, "busy_pct": 1.5 + i,
               "preempted": 40 + i, "service_ns": _hist(60 + 10 * i), "age_ns": {}}
        for i, name in enumerate(STAGES)
    }  # fmt: skip
    s = {
        "run_id": "20261203_065247_22557",
        "exit_code": 0,
        "reason": "duration",
        "error": None,
        "elapsed_s": 3.17,
        "startup_s": 51.91,
        "feed_s": 2.0,
        "events": 262_503,
        "messages": 194_306,
        "orders": 50_593,
        "fills": 3_024,
        "rejects": {"MAX_POSITION": 1_234, "RATE_SYMBOL": 5},
        "rejects_total": 1_239,
        "router_refusals": {"TOO_LATE": 291},
        "pnl": {
            "trading_state": "ACTIVE",
            "open_orders": 2,
            "realized": 665.01,
            "unrealized": -12.5,
            "fees": 1.25,
            "total": 651.26,
            "positions": {"SYN-A": {"lots": 3}, "SYN-B": {"lots": -2}},
        },
        "tick_to_trade_ns": _hist(990),
        "stages": stages,
        "placement": {
            "workers": [{"stages": ["feed", "book", "strategy", "risk", "router", "venue"], "cpu": 1, "wait": "spin"}]
        },
        "wall_s": 53.2,
    }
    s.update(over)
    return s


def _text(s: dict, width: int = 80) -> str:
    console = Console(file=io.StringIO(), width=width, record=True)
    console.print(summary_view(s))
    return console.export_text()


def test_every_figure_is_on_the_screen():
    s = _summary()
    text = _text(s)
    lines = text.splitlines()
    assert lines[0] == "HEAN run 20261203_065247_22557: OK"
    for figure in (
        "by duration after 3.17 s (start-up 51.91 s)",
        "[feed+book+strategy+risk+router+venue] cpu 1 spin",  # brackets drawn, not taken for markup
        "262,503 (131,252/s) in 194,306 messages (97,153/s)",
        "50,593",
        "3,024",
        "1,239 (MAX_POSITION 1,234, RATE_SYMBOL 5)",
        "TOO_LATE 291",
        "total 651.26 = realized 665.01 + unrealized -12.50 - fees 1.25",
        "ACTIVE",
        "SYN-A +3 lots, SYN-B -2 lots",
    ):
        assert figure in text, figure
    t2t = lines[lines.index(next(x for x in lines if x.startswith("tick-to-trade"))) + 3].split()
    assert t2t == ["1,000", *(fmt_ns(990 * k) for k in (1, 3, 9, 27, 81)), fmt_ns(99_000)]
    rows = {x.split()[0]: x.split()[1:] for x in lines if x.split() and x.split()[0] in STAGES}
    for i, name in enumerate(STAGES):
        count = 2000 + i if name == "feed" else 1000 + i  # the feed's records are the ones it sent
        base = 60 + 10 * i
        service = [fmt_ns(base * k) for k in (1, 9, 27, 100)]
        assert rows[name] == [f"{count:,}", f"{1.5 + i:.1f}", *service, f"{40 + i}"], name


def test_fits_an_80_column_pipe_as_plain_text():
    workers = [{"stages": [n], "cpu": i + 1, "wait": "spin"} for i, n in enumerate(STAGES)]
    s = _summary(
        exit_code=3, reason="worker-died", error="worker w3 (risk) stopped heart-beating for 2.0 s: the run is halted",
        placement={"workers": workers}, events=123_456_789, messages=98_765_432,
    )  # fmt: skip
    out = io.StringIO()
    print_summary(s, out)  # not a terminal: no colours, rich's default width
    text = out.getvalue()
    assert "\x1b[" not in text
    assert text.startswith("HEAN run 20261203_065247_22557: FAILED (exit 3)\n")
    assert "worker w3 (risk) stopped heart-beating" in text and "[venue] cpu 6 spin" in text
    for line in text.splitlines():
        assert len(line) <= 80 and line == line.rstrip(), repr(line)
    assert "123,456,789" in text


def test_a_run_without_risk_has_no_pnl_rows():
    text = _text(_summary(pnl={}, router_refusals={}, rejects={}, rejects_total=0), width=100)
    assert "PnL" not in text and "positions" not in text and "router refusals" not in text
    assert re.search(r"^risk rejects +0 \(none\)$", text, re.M)


# configuration -> the models the summary states (hean.engine.summary.models_used)
MODEL_CASES = [
    ({}, "none: the synthetic feed's messages are received as they are made",
     "constant: entry 0 ns, response 0 ns", "risk_averse", "maker 0, taker 0 of notional"),
    ({"feed.source": "replay", "feed.path": __file__, "feed.format": "native", "feed.latency_ns": 1_500,
      "venues": [{"name": "sim", "params": {"entry_latency_ns": 1_000_000, "report_latency_ns": 250,
                                            "queue_model": "power2", "queue_power": 2.5, "taker_fee": 0.0004}}]},
     "constant: exchange time + 1.5 us", "constant: entry 1 ms, response 250 ns", "power2 (n = 2.5)",
     "maker 0, taker 0.0004 of notional"),
    ({"feed.source": "replay", "feed.path": __file__, "feed.format": "native", "feed.latency": "recorded",
      "venues": [{"name": "sim", "params": {"latency_file": "rtt.csv", "queue_model": "log"}}]},
     "recorded receive stamps (clock offset removed) + 0 ns",
     "recorded round trips from rtt.csv, interpolated (FIFO per venue)", "log", "maker 0, taker 0 of notional"),
]  # fmt: skip


@pytest.mark.parametrize(("overrides", "feed", "latency", "queue", "fees"), MODEL_CASES)
def test_the_summary_states_the_models_used(overrides, feed, latency, queue, fees):
    from hean.engine.config import load_config
    from hean.engine.summary import models_used

    m = models_used(load_config(overrides=overrides))
    assert m["feed_latency"] == feed
    v = m["venues"]["sim"]
    assert (v["order_latency"], v["queue"], v["fees"]) == (latency, queue, fees)
    text = _text(_summary(models=m), width=200)
    assert re.search(rf"\nfeed latency +{re.escape(feed)}\n", text)
    assert re.search(rf"\nvenue sim +{re.escape(f'order latency {latency}; queue {queue}; fees {fees}')}\n", text)
