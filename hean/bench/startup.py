"""``hean bench startup``: time from ``hean run`` to every worker ready, cold (empty numba cache) and warm.

A cold start compiles every stage kernel and the worker loop (:mod:`hean.engine.warm` spreads that over the
CPUs); a warm one loads them from numba's on-disk cache. Each cold run here gets a cache folder of its own
(``NUMBA_CACHE_DIR``, passed to the worker and helper processes; the repository's ``__pycache__`` is not
touched), then one warm run reuses it, so the two are compared on the same code in the same run. Start-up
is the supervisor's own figure: start to every worker ready (rings created, stages compiled or loaded,
every page touched), before the feed's first tick.

Then the edit-run loop of a user strategy: a copy of the market maker in a folder of its own replays the
Binance recording twice -- first run, then after an edit of its file -- on the warm HEAN caches. Only the
strategy recompiles (its cache folder is keyed by its source's hash); start-up is again to every worker
ready, the first tick's time.

Targets (two CPUs): cold <= 60 s, warm <= 3 s, edit a user strategy then replay <= 10 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

from hean.bench.harness import machine_info
from hean.bench.pipeline import parse_placements, run_one
from hean.commands import HeanParser, emit_json, text_out

COLD_TARGET_S = 60.0
WARM_TARGET_S = 3.0
EDIT_TARGET_S = 10.0
RECORDING = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "data", "binance-usdm-btcusdt-20240808.gz")


def _parse(argv: list[str]) -> argparse.Namespace:
    p = HeanParser(prog="hean bench startup", description=__doc__.split("\n\n")[0])
    p.add_argument("--placements", default="fused,two,split", help="comma list of fused, two, split")
    p.add_argument("--runs", type=int, default=1, help="cold runs per placement (default 1), then one warm")
    p.add_argument("--json", metavar="FILE", help="write every figure as JSON ('-': to stdout, the table to stderr)")
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


def _replay_startup(spec: str, placement: str) -> dict:
    """Start-up of a lockstep replay of the Binance recording with strategy ``spec``, in ``placement``."""
    from hean.bench.pipeline import PLACEMENTS
    from hean.engine.config import load_config
    from hean.engine.supervisor import Supervisor

    overrides = {
        "feed.source": "replay",
        "feed.path": os.path.abspath(RECORDING),
        "feed.format": "binance-usdm",
        "feed.pace": "fast",
        "engine.duration_s": 0.0,
        "placement.workers": PLACEMENTS[placement],
        "strategies": [{"path": spec}],
    }
    result = Supervisor(load_config(overrides=overrides)).run()
    return {"startup_s": result.startup_s, "exit_code": result.exit_code, "error": result.error}


def measure_edit(placement: str) -> dict:
    """A user strategy's first replay, then the replay after an edit of its file (HEAN's caches warm)."""
    from hean.strategies import market_maker

    folder = tempfile.mkdtemp(prefix="hean-bench-edit-")
    try:
        path = os.path.join(folder, "my_quoter.py")
        shutil.copy(market_maker.__file__, path)
        spec = f"{path}:STRATEGY"
        first = _replay_startup(spec, placement)
        with open(path, "a") as f:
            f.write("\n# edited\n")  # a new source hash: the strategy compiles again, nothing else does
        edited = _replay_startup(spec, placement)
        errors = [f"{what}: {r['error']}" for what, r in (("first", first), ("edited", edited)) if r["exit_code"]]
        return {"placement": placement, "first_s": first["startup_s"], "edit_s": edited["startup_s"], "errors": errors}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str]) -> int:
    args = _parse(argv)
    out = text_out(args.json)  # with --json -, stdout is the JSON alone
    print(f"hean bench startup: {len(args.placements)} placement(s), {args.runs} cold run(s) each, then one warm; "
          f"CPUs {sorted(os.sched_getaffinity(0))}", file=sys.stderr)  # fmt: skip
    print(f"{'placement':<9} {'cold (s)':>24} {'warm (s)':>9} {'cold/warm':>10}  targets: cold <= {COLD_TARGET_S:g} s, "
          f"warm <= {WARM_TARGET_S:g} s", file=out)  # fmt: skip
    rows = []
    failed = False
    for placement in args.placements:
        row = measure(placement, args.runs)
        rows.append(row)
        cold, warm = row["cold_s"], row["warm_s"]
        ok = not row["errors"] and max(cold) <= COLD_TARGET_S and warm <= WARM_TARGET_S
        failed |= bool(row["errors"])
        print(f"{placement:<9} {', '.join(f'{c:.1f}' for c in cold):>24} {warm:>9.2f} {max(cold) / warm:>9.0f}x  "
              f"{'ok' if ok else 'MISS'}" + "".join(f"\n  FAILED {e}" for e in row["errors"]), file=out)  # fmt: skip
        out.flush()
    print(f"{'placement':<9} {'user strategy: first replay (s)':>32} {'after an edit (s)':>18}  target: edit <= "
          f"{EDIT_TARGET_S:g} s", file=out)  # fmt: skip
    edits = []
    for placement in args.placements:
        row = measure_edit(placement)
        edits.append(row)
        ok = not row["errors"] and row["edit_s"] <= EDIT_TARGET_S
        failed |= bool(row["errors"])
        print(f"{placement:<9} {row['first_s']:>32.2f} {row['edit_s']:>18.2f}  {'ok' if ok else 'MISS'}"
              + "".join(f"\n  FAILED {e}" for e in row["errors"]), file=out)  # fmt: skip
        out.flush()
    machine = machine_info()
    print("machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()), file=out)
    if args.json:
        command = "hean bench startup " + " ".join(argv)
        emit_json(args.json, {"rows": rows, "edits": edits, "machine": machine, "command": command})
    return 1 if failed else 0
