"""``hean bench sweep``: cells per second of ``hean sweep`` in process (``--local``) and on a local Ray with 1
and 2 workers, Ray's cost per cell, and what a cluster would do with a month of recordings.

Each mode runs the same grid (the built-in market maker, ``--cells`` parameter sets) over the shared Binance
recording, converted to the native format once beforehand (so no mode pays parsing); a fresh sweep folder per
mode (nothing skipped). Ray's start-up (``ray.init``, timed on its own) is reported apart from the cells.
Ray's overhead per cell is ``(Ray 1-worker time - local time) / cells``: scheduling, shipping the cell and
its result, and each worker process's first import and numba cache load.

The cluster projection multiplies the measured seconds per cell by the cells of a month of recordings
(``--symbols`` x 30 days x ``--cells`` parameter sets, a day's file ``--day-factor`` times this recording's
events) and divides by ``--nodes`` x ``--cpus-per-node`` workers; its data assumption is printed with it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from hean.commands import HeanParser, emit_json, text_out

RECORDING = Path(__file__).resolve().parents[2] / "tests" / "data" / "binance-usdm-btcusdt-20240808.gz"


def _parse(argv: list[str]) -> argparse.Namespace:
    p = HeanParser(prog="hean bench sweep", description=__doc__.split("\n\n")[0])
    p.add_argument("--cells", type=int, default=8, help="parameter sets (cells), default 8")
    p.add_argument("--nodes", type=int, default=100, help="cluster size for the projection (100)")
    p.add_argument("--cpus-per-node", type=int, default=16, help="workers per node for the projection (16)")
    p.add_argument("--symbols", type=int, default=10, help="symbols recorded per day, for the projection (10)")
    p.add_argument("--day-factor", type=float, default=288.0,
                   help="a day's recording in units of the bench recording's events (288: 5 min -> 24 h)")  # fmt: skip
    p.add_argument("--json", metavar="FILE", help="write every figure as JSON ('-': to stdout, the text to stderr)")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = _parse(argv)
    try:
        import ray
    except ImportError:
        print("hean bench sweep: Ray is not installed (pip install 'hean[sweep]')", file=sys.stderr)
        return 2
    from hean.sweeps import convert_recordings, run_sweep

    grid = {"params": {"half_spread_ticks": [float(1 + k) for k in range(args.cells)]}}
    with tempfile.TemporaryDirectory(prefix="hean-bench-sweep-") as tmp:
        (rec,) = convert_recordings([str(RECORDING)], "binance-usdm", Path(tmp))
        cfg = Path(tmp) / "config.toml"
        cfg.write_text('[strategy]\nname = "market_maker"\n')
        run_sweep(cfg, {"params": {"half_spread_ticks": [1.0]}}, [rec.native], local=True)  # warm: caches loaded
        rows = {}
        for mode, workers in (("local", 0), ("ray-1", 1), ("ray-2", 2)):
            out = Path(tmp) / mode
            t_init = 0.0
            if workers:
                t0 = time.perf_counter()
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, configure_logging=False,
                         object_store_memory=256 << 20)  # fmt: skip
                t_init = time.perf_counter() - t0
            try:
                t0 = time.perf_counter()
                res = run_sweep(cfg, grid, [rec.native], out=out, local=not workers)
                wall = time.perf_counter() - t0
            finally:
                if workers:
                    ray.shutdown()
            if res.failed:
                print(f"hean bench sweep: {mode}: {len(res.failed)} cells failed: {res.failed}", file=sys.stderr)
                return 1
            rows[mode] = {"workers": max(1, workers), "cells": res.ran, "wall_s": wall, "ray_init_s": t_init,
                          "cells_per_s": res.ran / wall, "cell_s_mean": sum(res.cell_s) / len(res.cell_s),
                          "events_per_cell": int(res.table["events"].iloc[0])}  # fmt: skip
    local, one = rows["local"], rows["ray-1"]
    overhead = (one["wall_s"] - local["wall_s"]) / args.cells
    per_cell = rows["ray-2"]["wall_s"] * rows["ray-2"]["workers"] / args.cells  # CPU-seconds per cell on Ray
    month = args.symbols * 30 * args.cells
    cell_day = per_cell * args.day_factor
    workers = args.nodes * args.cpus_per_node
    projection = {
        "cells": month,
        "cpu_s_per_cell": cell_day,
        "wall_h": month * cell_day / workers / 3600,
        "workers": workers,
        "data_gb": args.symbols * 30 * args.day_factor * local["events_per_cell"] * 64 / 1e9,
    }
    out = text_out(args.json)  # with --json -, stdout is the JSON alone
    print(
        f"{'mode':<7} {'workers':>7} {'cells':>5} {'wall':>8} {'cells/s':>8} {'s/cell (own)':>12} {'ray.init':>9}",
        file=out,
    )
    for mode, r in rows.items():
        print(f"{mode:<7} {r['workers']:>7} {r['cells']:>5} {r['wall_s']:>7.2f}s {r['cells_per_s']:>8.2f} "
              f"{r['cell_s_mean']:>11.3f}s {r['ray_init_s']:>8.2f}s", file=out)  # fmt: skip
    print(
        f"Ray's overhead per cell against --local: {overhead * 1e3:.0f} ms "
        f"({one['wall_s'] / local['wall_s']:.2f}x the local wall time, 1 worker)",
        file=out,
    )
    print(f"2 workers against 1: {rows['ray-2']['cells_per_s'] / one['cells_per_s']:.2f}x cells/s", file=out)
    per_node = projection["data_gb"] / args.nodes
    print(f"projection: {args.symbols} symbols x 30 days x {args.cells} parameter sets = {month:,} cells of a day "
          f"({args.day_factor:g} x {local['events_per_cell']:,} events) at {cell_day:.0f} CPU-s each, on "
          f"{args.nodes} nodes x {args.cpus_per_node} workers: {projection['wall_h']:.2f} h of compute; data: "
          f"{projection['data_gb']:,.0f} GB of native files (64 B/event), {per_node:,.0f} GB per node if each "
          f"day's cells run on one node ({per_node:,.0f} s at 1 GB/s), every node reading all of it if not "
          f"({projection['data_gb']:,.0f} s at 1 GB/s)", file=out)  # fmt: skip
    if args.json:
        emit_json(
            args.json,
            {"modes": rows, "overhead_s_per_cell": overhead, "projection": projection, "cpus": os.cpu_count()},
        )
    return 0
