"""``hean top [RUN_ID]``: live, read-only view of a running engine (stages, rings, tick-to-trade, risk).

With no RUN_ID it attaches to the only running engine, and says so clearly when there is none or several.
``q`` quits; it also ends by itself when the engine stops. ``--once`` prints a single frame (two samples
``--interval`` apart) and exits, for scripts and logs; ``--list`` lists the runs found in /dev/shm and
``--clean`` removes every segment and temp folder of runs none of whose processes is left (as
``hean rings clean``).
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
    p.add_argument("--json", metavar="OUT", help="--once: also write the frame as JSON to OUT ('-': to stdout, "
                   "the frame to stderr)")  # fmt: skip
    p.add_argument("--list", action="store_true", help="list runs (running and stale) and exit")
    p.add_argument(
        "--clean", action="store_true", help="unlink the segments of stale runs (or of RUN_ID if stale) and exit"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # sampling the run is hean.telemetry.top's (TopSource); drawing it is hean.commands.views.top's
    import time

    from rich.console import Console

    from hean.commands.views.top import render, run_top
    from hean.telemetry.manifest import BadRunId, ManifestError
    from hean.telemetry.top import TopSource

    console = Console()
    if args.list:
        from hean.engine.runs import scan_runs

        found = scan_runs()
        if not found:
            console.print("no HEAN runs in /dev/shm", markup=False)
        for r in found:
            console.print(f"{r.run_id}  {r.describe()}", markup=False)
        return 0
    if args.clean:
        import sys

        from hean.commands.rings import clean

        return clean({args.run_id} if args.run_id else None, dry_run=False, out=sys.stdout)
    errors = Console(stderr=True)  # errors to stderr, as every command's
    if args.json and not args.once:
        errors.print("hean top: --json needs --once (a live screen has no single frame to write)")
        return 2
    if args.refresh <= 0:
        errors.print(f"hean top: --refresh must be > 0, got {args.refresh}")
        return 2
    if args.once:
        try:
            source = TopSource.attach(args.run_id)
        except ManifestError as e:
            errors.print(f"hean top: {e}", markup=False)
            return 2 if isinstance(e, BadRunId) else 1
        try:
            source.sample()
            time.sleep(max(0.0, args.interval))
            frame = source.sample()
            ok, why = source.alive()
            frame.status = "" if ok else why
            (errors if args.json == "-" else console).print(render(frame))  # --json -: stdout is the JSON alone
            if args.json:
                import msgspec

                from hean.commands import emit_json

                def plain(o):  # numpy scalars in the stats
                    return o.item() if hasattr(o, "item") else str(o)

                emit_json(args.json, msgspec.to_builtins(frame, str_keys=True, enc_hook=plain))
        finally:
            source.close()
        return 0
    return run_top(args.run_id, duration=args.duration, console=console, refresh_hz=args.refresh)
