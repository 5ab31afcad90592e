"""``hean top [RUN_ID]``: live, read-only view of a running engine (stages, rings, tick-to-trade, risk).

With no RUN_ID it attaches to the only running engine, and says so clearly when there is none or several.
``q`` quits; it also ends by itself when the engine stops. ``--once`` prints a single frame (two samples
``--interval`` apart) and exits, for scripts and logs; ``--list`` lists the runs found in /dev/shm and
``--clean`` unlinks every segment of runs whose engine is gone (``hean-<run_id>-*``).
Top-level imports stay light (argparse only).
"""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "top",
        help="live view of a running engine: per-stage rates and latency, rings, tick-to-trade, risk",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_id", nargs="?", metavar="RUN_ID", help="run to attach to (default: the only one)")
    p.add_argument("--refresh", type=float, default=4.0, help="refreshes per second, at most 4 (default 4)")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--once", action="store_true", help="print one frame and exit (no live screen)")
    p.add_argument("--interval", type=float, default=0.5, help="--once: seconds between the two samples")
    p.add_argument("--list", action="store_true", help="list runs (running and stale) and exit")
    p.add_argument(
        "--clean", action="store_true", help="unlink the segments of stale runs (or of RUN_ID if stale) and exit"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import time

    from rich.console import Console

    from hean.telemetry.manifest import ManifestError, cleanup_run, list_runs
    from hean.telemetry.top import TopSource, render, run_top

    console = Console()
    if args.list:
        runs = list_runs()
        if not runs:
            console.print("no HEAN runs in /dev/shm")
        for r in runs:
            what = "running" if r.alive else ("stale" if r.manifest else f"unreadable: {r.error}")
            pid = r.manifest.engine_pid if r.manifest else "-"
            console.print(f"{r.run_id}  engine pid {pid}  {what}")
        return 0
    if args.clean:
        stale = [r.run_id for r in list_runs() if not r.alive]
        targets = [args.run_id] if args.run_id else stale
        rc = 0
        for rid in targets:
            try:
                removed = cleanup_run(rid)
            except ManifestError as e:
                console.print(f"hean top --clean: {e}")
                rc = 1
                continue
            console.print(f"{rid}: removed {len(removed)} segment(s)" + (f": {', '.join(removed)}" if removed else ""))
        if not targets:
            console.print("no stale HEAN runs")
        return rc
    if args.refresh <= 0:
        console.print(f"hean top: --refresh must be > 0, got {args.refresh}")
        return 2
    if args.once:
        try:
            source = TopSource.attach(args.run_id)
        except ManifestError as e:
            console.print(f"hean top: {e}")
            return 1
        try:
            source.sample()
            time.sleep(max(0.0, args.interval))
            frame = source.sample()
            ok, why = source.alive()
            frame.status = "" if ok else why
            console.print(render(frame))
        finally:
            source.close()
        return 0
    return run_top(args.run_id, duration=args.duration, console=console, refresh_hz=args.refresh)
