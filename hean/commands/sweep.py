"""``hean sweep CONFIG --grid GRID.toml --recordings PATTERN --out DIR``: a parameter sweep on Ray.

Why a command: a sweep is a long, resumable job an operator starts from a shell and re-runs after a stop; the
work itself is :func:`hean.sweeps.run_sweep` (and the Python entry point ``hean.sweep``).
"""

from __future__ import annotations

import argparse
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="backtest a strategy's parameter grid over recordings, on Ray (or --local)",
        description="Expand the grid's parameters x the recordings into deterministic backtests, run them as Ray "
        "tasks (a local Ray on this machine's CPUs, or the cluster at --address), and write DIR/results.parquet "
        "(one row per cell: parameters, recording, fills, PnL, fees, max drawdown, Sharpe, turnover, rejects by "
        "reason) and DIR/summary.txt (cells ranked by PnL). Re-running with the same DIR skips finished cells; a "
        "cell that fails is reported and the others go on.",
    )
    p.add_argument("config", metavar="CONFIG", help="configuration file: its strategies, risk limits, venue model")
    p.add_argument("--grid", required=True, metavar="GRID", help="TOML: [params] name = [values], strategy = N")
    p.add_argument("--recordings", required=True, metavar="PATTERN", help="a glob of recordings, e.g. 'data/*.gz'")
    p.add_argument("--out", required=True, metavar="DIR", help="the sweep's folder (results, finished cells)")
    p.add_argument("--format", default="", help="the recordings' format (default: the configuration's feed.format)")
    p.add_argument("--address", help="join this Ray cluster (default: start a local Ray)")
    p.add_argument("--workers", type=int, help="CPUs of the local Ray (default: all of this machine's)")
    p.add_argument("--local", action="store_true", help="run the cells in this process, one by one, without Ray")
    p.add_argument("--equity-ms", type=int, default=1000, help="equity curve sample period, event time (1000)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hean.sweeps import run_sweep

    if args.workers is not None and args.workers < 1:
        print("hean: --workers must be >= 1", file=sys.stderr)
        return 2
    try:
        res = run_sweep(
            args.config, args.grid, args.recordings, out=args.out, format=args.format, local=args.local,
            address=args.address, workers=args.workers, equity_ms=args.equity_ms, progress=sys.stderr.isatty(),
        )  # fmt: skip
    except (ValueError, OSError) as e:  # a bad grid, configuration, strategy or recording: SweepError, ...
        print(f"hean: {e}", file=sys.stderr)
        return 2
    print((res.out / "summary.txt").read_text(), end="")
    print(f"results: {res.results_path}", file=sys.stderr)
    return 1 if res.failed else 0
