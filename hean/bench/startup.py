"""``hean bench startup``: time from ``hean run`` to every worker ready, cold (empty numba cache) and warm.

A cold start compiles every stage kernel and the worker loop (:mod:`hean.engine.warm` spreads that over the
CPUs); a warm one loads them from numba's on-disk cache. Each cold run here gets a cache folder of its own
(``NUMBA_CACHE_DIR``, passed to the worker and helper processes; the repository's ``__pycache__`` is not
touched), then one warm run reuses it, so the two are compared on the same code in the same run. Start-up
is the supervisor's own figure: start to every worker ready (rings created, stages compiled or loaded,
every page touched), before the feed's first tick.

Targets (issue 6, two CPUs): cold <= 60 s, warm <= 3 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

from hean.bench.harness import machine_info
from hean.bench.pipeline import parse_placements, run_one

COLD_TARGET_S = 60.0
WARM_TARGET_S = 3.0


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="hean bench startup", description=__doc__.split("\n\n")[0])
    p.add_argument("--placements", default="fused,two,split", help="comma list of fused, two, split")
    p.add_argument("--runs", type=int, default=1, help="cold runs per placement (default 1), then one warm")
    p.add_argument("--json", metavar="FILE", help="write every figure as JSON")
    args = p.parse_args(argv)
    args.placements = parse_placements(p, args.placements)
    if args.runs < 1:
        p.error(f"--runs must be >= 1, got {args.runs}")
    return args


def _with_cache(cache_dir: str, placement: str) -> dict:
    """One short engine run whose processes use ``cache_dir`` as numba's cache."""
    before = os.environ.get("NUMBA_CACHE_DIR")
    os.environ["NUMBA_CACHE_DIR"] = cache_dir
    try:
        return run_one(placement, 100_000, 0.5)
    finally:
        if before is None:
            del os.environ["NUMBA_CACHE_DIR"]
        else:
            os.environ["NUMBA_CACHE_DIR"] = before


def measure(placement: str, runs: int) -> dict:
    """Cold start-up ``runs`` times (a fresh cache each), then one warm start on the last cache."""
    cold: list[float] = []
    errors: list[str] = []
    warm = None
    for i in range(runs):
        cache = tempfile.mkdtemp(prefix="hean-bench-startup-")
        try:
            row = _with_cache(cache, placement)
            cold.append(row["startup_s"])
            if row["exit_code"]:
                errors.append(f"cold run {i + 1}: {row['error']}")
            if i == runs - 1:
                row = _with_cache(cache, placement)
                warm = row["startup_s"]
                if row["exit_code"]:
                    errors.append(f"warm run: {row['error']}")
        finally:
            shutil.rmtree(cache, ignore_errors=True)
    return {"placement": placement, "cold_s": cold, "warm_s": warm, "errors": errors}


def main(argv: list[str]) -> int:
    args = _parse(argv)
    print(f"hean bench startup: {len(args.placements)} placement(s), {args.runs} cold run(s) each, then one warm; "
          f"CPUs {sorted(os.sched_getaffinity(0))}", file=sys.stderr)  # fmt: skip
    print(f"{'placement':<9} {'cold (s)':>24} {'warm (s)':>9} {'cold/warm':>10}  targets: cold <= {COLD_TARGET_S:g} s, "
          f"warm <= {WARM_TARGET_S:g} s")  # fmt: skip
    rows = []
    failed = False
    for placement in args.placements:
        row = measure(placement, args.runs)
        rows.append(row)
        cold, warm = row["cold_s"], row["warm_s"]
        ok = not row["errors"] and max(cold) <= COLD_TARGET_S and warm <= WARM_TARGET_S
        failed |= bool(row["errors"])
        print(f"{placement:<9} {', '.join(f'{c:.1f}' for c in cold):>24} {warm:>9.2f} {max(cold) / warm:>9.0f}x  "
              f"{'ok' if ok else 'MISS'}" + "".join(f"\n  FAILED {e}" for e in row["errors"]))  # fmt: skip
        sys.stdout.flush()
    machine = machine_info()
    print("machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()))
    if args.json:
        with open(args.json, "w") as f:
            command = "hean bench startup " + " ".join(argv)
            json.dump({"rows": rows, "machine": machine, "command": command}, f, indent=1)
    return 1 if failed else 0
