"""Print the lockstep order and fill digests of the synthetic run and of the shared Binance replay in every
placement -- the engine's behaviour in two numbers per run, for checking that a refactor changed nothing.

    .venv/bin/python tools/digests.py [--json OUT]

``tests/test_digests.py`` pins these values.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLACEMENTS = ("fused", "two", "split")
SYNTHETIC = {"feed.max_messages": 20_000, "feed.seed": 11, "feed.pace": "fast"}
BINANCE = {
    "feed.source": "replay",
    "feed.path": str(ROOT / "tests" / "data" / "binance-usdm-btcusdt-20240808.gz"),
    "feed.format": "binance-usdm",
    "feed.pace": "fast",
}
# the synthetic run with the venue's latencies (its wake-ups: hean.stages.feed)
SYNTHETIC_LATENCY = {
    **SYNTHETIC,
    "venues": [{"name": "sim", "params": {"entry_latency_ns": 30_000, "report_latency_ns": 20_000}}],
}
# the same replay with latencies on every leg: orders 1 ms to the venue, reports 0.5 ms back, the recording's
# own feed latency -- the scheduler's wake-ups and receive times at work (hean.stages.feed)
BINANCE_LATENCY = {
    **BINANCE,
    "venues": [{"name": "sim", "params": {"entry_latency_ns": 1_000_000, "report_latency_ns": 500_000}}],
    "feed.latency": "recorded",
}


def groups(placement: str, stages: list[str]) -> list[list[str]]:
    """The workers of a placement: every stage in one (fused), the source alone and the rest in one (two),
    or one worker per stage (split)."""
    if placement == "fused":
        return [list(stages)]
    if placement == "two":
        return [stages[:1], stages[1:]]
    if placement == "split":
        return [[s] for s in stages]
    raise ValueError(f"placement {placement!r}: one of {PLACEMENTS}")


def run_lockstep(feed: dict, placement: str, pipeline=None):
    """Run ``pipeline`` (the registry's by default) in lockstep to the end of the feed; the run's result."""
    import msgspec

    from hean.engine.config import load_config
    from hean.engine.supervisor import Supervisor
    from hean.stages.registry import PIPELINE

    pipeline = PIPELINE if pipeline is None else pipeline
    cfg = load_config(overrides={**feed, "engine.lockstep": True, "engine.duration_s": 0.0})
    # set after loading: the configuration's own check knows the registry's stages, not ``pipeline``'s
    workers = groups(placement, [s.name for s in pipeline])
    cfg = msgspec.structs.replace(cfg, placement=msgspec.structs.replace(cfg.placement, workers=workers))
    result = Supervisor(cfg, pipeline=pipeline).run()
    if result.exit_code:
        raise SystemExit(f"{placement}: {result.error}")
    return result


def digests(feed: dict, placement: str, pipeline=None) -> dict:
    """The router's order and fill digests and counts of a lockstep run (:func:`run_lockstep`)."""
    from hean.telemetry.block import C_FILLS, C_ORDERS, C_USER_BASE

    c = run_lockstep(feed, placement, pipeline).telemetry["router"]["counters"]
    return {
        "orders": int(c[C_ORDERS]),
        "fills": int(c[C_FILLS]),
        "order_digest": int(c[C_USER_BASE]),
        "fill_digest": int(c[C_USER_BASE + 1]),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="also write the digests as JSON")
    ap.add_argument("--placements", default=",".join(PLACEMENTS))
    args = ap.parse_args()
    out = {}
    feeds = {"synthetic": SYNTHETIC, "synthetic-latency": SYNTHETIC_LATENCY, "binance": BINANCE,
             "binance-latency": BINANCE_LATENCY}  # fmt: skip
    for name, feed in feeds.items():
        for placement in args.placements.split(","):
            t0 = time.monotonic()
            out[f"{name}/{placement}"] = d = digests(feed, placement)
            print(f"{name:17} {placement:5} {d}  ({time.monotonic() - t0:.1f} s)", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
