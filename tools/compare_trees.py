"""Two source trees of HEAN side by side in one run: tick-to-trade and throughput, and cold start.

    .venv/bin/python tools/compare_trees.py OLD_TREE NEW_TREE [--rounds 3] [--cold-rounds 1] [--json OUT]
        [--new-config FILE]

Why alternate: this VM's figures move from minute to minute (the host moves and preempts its vCPUs), so a
change is measured against its baseline in the same run, round after round (old, new, old, new, ...), and
reported as the median of each tree's rounds and the ratio new/old. Each round is one
``hean bench pipeline --placements fused --rates 100000,0`` in that tree (``PYTHONPATH`` = the tree: its
own code and its own numba cache); ``--cold-rounds`` adds ``hean bench startup --placements fused`` rounds
(a fresh numba cache per run). Make a tree of an older commit with ``git worktree add /tmp/old COMMIT``.
``--new-config`` runs the new tree's pipeline rounds on that configuration (``hean bench pipeline --config``):
the same program in both trees when the default changed (e.g. a strategy's behaviour).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def _bench(tree: Path, args: list[str]) -> dict:
    """Run ``hean bench ARGS --json`` with ``tree``'s code; its JSON."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        env = {**os.environ, "PYTHONPATH": str(tree)}
        cmd = [sys.executable, "-m", "hean", "bench", *args, "--json", out.name]
        proc = subprocess.run(cmd, cwd=tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        sys.stderr.write(proc.stdout)
        if proc.returncode:
            raise SystemExit(f"{tree}: {' '.join(cmd[1:])} failed (exit {proc.returncode})")
        return json.loads(Path(out.name).read_text())


def pipeline_round(tree: Path, duration: float, config: Path | None = None) -> dict:
    """Tick-to-trade p50/p99 at 100k messages/s and the unpaced rate, fused placement."""
    extra = ["--config", str(config)] if config else []
    rows = _bench(tree, ["pipeline", "--placements", "fused", "--rates", "100000,0",
                         "--duration", str(duration), "--noise-s", "0", *extra])["runs"]  # fmt: skip
    paced = next(r for r in rows if r["target_rate"])
    unpaced = next(r for r in rows if not r["target_rate"])
    return {
        "p50_ns": paced["tick_to_trade_ns"]["p50"],
        "p99_ns": paced["tick_to_trade_ns"]["p99"],
        "unpaced_msgs_per_s": unpaced["messages_per_s"],
        "startup_s": paced["startup_s"],
    }


def cold_round(tree: Path) -> dict:
    row = _bench(tree, ["startup", "--placements", "fused", "--runs", "1"])["rows"][0]
    return {"cold_s": row["cold_s"][0], "warm_s": row["warm_s"]}


def _table(results: dict, keys: list[tuple[str, str]]) -> str:
    lines = ["| figure | old (each round) | new (each round) | old median | new median | new/old |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for key, label in keys:
        old = [r[key] for r in results["old"]]
        new = [r[key] for r in results["new"]]
        if not old:
            continue
        mo, mn = statistics.median(old), statistics.median(new)
        fmt = (lambda v: f"{v / 1e6:.2f}M") if "per_s" in key else (lambda v: f"{v:g}")
        lines.append(f"| {label} | {', '.join(map(fmt, old))} | {', '.join(map(fmt, new))} | {fmt(mo)} | "
                     f"{fmt(mn)} | {mn / mo:.3f} |")  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--rounds", type=int, default=3, help="pipeline rounds per tree (default 3)")
    ap.add_argument("--cold-rounds", type=int, default=0, help="cold-start rounds per tree (default 0)")
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per pipeline run (default 3)")
    ap.add_argument("--json", help="also write every round as JSON")
    ap.add_argument("--new-config", type=Path, help="configuration for the new tree's pipeline rounds")
    args = ap.parse_args()
    configs = {"old": None, "new": args.new_config.resolve() if args.new_config else None}
    trees = {"old": args.old.resolve(), "new": args.new.resolve()}
    for name, tree in trees.items():
        if not (tree / "hean" / "__init__.py").is_file():
            ap.error(f"{name} tree {tree}: no hean/ package there")
    pipe: dict[str, list] = {"old": [], "new": []}
    cold: dict[str, list] = {"old": [], "new": []}
    for name in trees:  # one warm-up run each: both trees' numba caches filled before measuring
        pipeline_round(trees[name], 0.5, configs[name])
    for _ in range(args.rounds):
        for name, tree in trees.items():
            pipe[name].append(pipeline_round(tree, args.duration, configs[name]))
    for _ in range(args.cold_rounds):
        for name, tree in trees.items():
            cold[name].append(cold_round(tree))
    print(f"old: {trees['old']}\nnew: {trees['new']}\n")
    print(_table(pipe, [("p50_ns", "t2t p50 at 100k/s (ns)"), ("p99_ns", "t2t p99 at 100k/s (ns)"),
                        ("unpaced_msgs_per_s", "unpaced messages/s"), ("startup_s", "warm start-up (s)")]))  # fmt: skip
    if args.cold_rounds:
        print()
        print(_table(cold, [("cold_s", "cold start-up, fused (s)"), ("warm_s", "warm start-up, fused (s)")]))
    if args.json:
        Path(args.json).write_text(json.dumps({"trees": {k: str(v) for k, v in trees.items()}, "pipeline": pipe,
                                               "cold": cold}, indent=2) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
