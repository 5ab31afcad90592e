"""The engine's behaviour pinned: lockstep order and fill digests of the synthetic run and of the shared
Binance replay, without and with latencies on every leg, identical in every placement; a replay is
deterministic whatever its pace and without ``engine.lockstep`` (the feed schedules simulated time).
A change to the pipeline's structure must not move them; a change of behaviour must say so here. Last change:
the market maker became a plug-in of hean.api (issue 14): it sees its own fills and quotes both sides in one
callback, so it sends and fills more (Binance: 1037 orders and 453 fills before, 3227 and 1986 now).

Regenerate with ``.venv/bin/python tools/digests.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from digests import BINANCE, BINANCE_LATENCY, SYNTHETIC, SYNTHETIC_LATENCY, digests, groups, run_lockstep

from hean.telemetry.block import C_FILLS, C_ORDERS, C_USER_BASE

PINNED = {
    "synthetic": (SYNTHETIC, 5555, 340, 7236645266736900941, -3110773119608840971),
    "synthetic-latency": (SYNTHETIC_LATENCY, 5049, 383, 4064247427794656907, -7094599277676663277),
    "binance": (BINANCE, 3227, 1986, 753282770730297080, 3851376269842621147),
    "binance-latency": (BINANCE_LATENCY, 1633, 592, 4797451099527143124, -913600725829441823),
}
CASES = [(f, p) for f in PINNED for p in ("fused", "two", "split") if p != "two" or "latency" not in f]


def _pinned(feed: str) -> dict:
    _, orders, fills, order_digest, fill_digest = PINNED[feed]
    return {"orders": orders, "fills": fills, "order_digest": order_digest, "fill_digest": fill_digest}


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("feed", "placement"), CASES)
def test_lockstep_digests_are_pinned_in_every_placement(feed, placement):
    assert digests(PINNED[feed][0], placement) == _pinned(feed)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("pace", [{"feed.pace": "fast"}, {"feed.pace": "rate", "feed.rate": 2_000_000.0}])
def test_a_replay_gives_the_same_fills_at_any_pace_without_lockstep(pace):
    """No ``engine.lockstep``, the feed in a worker of its own: unpaced, the feed would be far ahead of the
    strategy; paced, timing decides what is in flight. Neither moves an order or a fill."""
    import msgspec

    from hean.engine.config import load_config
    from hean.engine.supervisor import Supervisor
    from hean.stages.registry import PIPELINE

    cfg = load_config(overrides={**BINANCE_LATENCY, **pace, "engine.duration_s": 0.0})
    assert not cfg.engine.lockstep
    workers = groups("two", [s.name for s in PIPELINE])
    cfg = msgspec.structs.replace(cfg, placement=msgspec.structs.replace(cfg.placement, workers=workers))
    result = Supervisor(cfg).run()
    assert result.exit_code == 0, result.error
    c = result.telemetry["router"]["counters"]
    got = {"orders": c[C_ORDERS], "fills": c[C_FILLS], "order_digest": c[C_USER_BASE]}
    got["fill_digest"] = c[C_USER_BASE + 1]
    assert {k: int(v) for k, v in got.items()} == _pinned("binance-latency")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("feed", ["binance", "binance-latency"])
def test_an_untimed_run_trades_the_same_and_records_no_latency(feed):
    """``engine.latency_stats = false`` (hean.backtest's default) only stops the stages reading the clock:
    the same digests, in the split placement, and no latency histogram has a sample."""
    from hean.telemetry.histogram import hist_count

    result = run_lockstep({**PINNED[feed][0], "engine.latency_stats": False}, "split")
    c = result.telemetry["router"]["counters"]
    got = {"orders": c[C_ORDERS], "fills": c[C_FILLS], "order_digest": c[C_USER_BASE]}
    got["fill_digest"] = c[C_USER_BASE + 1]
    assert {k: int(v) for k, v in got.items()} == _pinned(feed)
    for stage, tm in result.telemetry.items():
        for name, h in tm["hists"].items():
            assert hist_count(h) == 0, (stage, name)


def test_a_backtests_fills_do_not_depend_on_its_latency_figures():
    import hean

    rec = PINNED["binance"][0]
    runs = [hean.backtest(rec["feed.path"], "market_maker", format=rec["feed.format"], config=over)
            for over in ({}, {"engine.latency_stats": True})]  # fmt: skip
    a, b = (r.summary for r in runs)
    assert (a["order_digest"], a["fill_digest"]) == (b["order_digest"], b["fill_digest"])
