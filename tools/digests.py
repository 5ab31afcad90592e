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
PLACEMENTS = {
    "fused": [["feed", "book", "strategy", "risk", "router", "venue"]],
    "two": [["feed"], ["book", "strategy", "risk", "router", "venue"]],
    "split": [["feed"], ["book"], ["strategy"], ["risk"], ["router"], ["venue"]],
}
SYNTHETIC = {"feed.max_messages": 20_000, "feed.seed": 11, "feed.pace": "fast"}
BINANCE = {
    "feed.source": "replay",
    "feed.path": str(ROOT / "tests" / "data" / "binance-usdm-btcusdt-20240808.gz"),
    "feed.format": "binance-usdm",
    "feed.pace": "fast",
}


def digests(feed: dict, placement: str) -> dict:
    """Run lockstep to the end of the feed; the router's order and fill digests and the counts."""
    from hean.engine.config import load_config
    from hean.engine.supervisor import Supervisor
    from hean.telemetry.block import C_FILLS, C_ORDERS, C_USER_BASE

    over = {**feed, "engine.lockstep": True, "engine.duration_s": 0.0, "placement.workers": PLACEMENTS[placement]}
    result = Supervisor(load_config(overrides=over)).run()
    if result.exit_code:
        raise SystemExit(f"{placement}: {result.error}")
    c = result.telemetry["router"]["counters"]
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
    for name, feed in (("synthetic", SYNTHETIC), ("binance", BINANCE)):
        for placement in args.placements.split(","):
            t0 = time.monotonic()
            out[f"{name}/{placement}"] = d = digests(feed, placement)
            print(f"{name:9} {placement:5} {d}  ({time.monotonic() - t0:.1f} s)", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
