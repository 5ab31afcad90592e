"""``hean run`` and ``hean replay``: start the engine, print (or write) the summary.

``hean run`` uses the configuration's feed (by default the synthetic feed and the simulated venue);
``hean replay FILE --format F`` runs a recording through the same pipeline.
"""

from __future__ import annotations

import argparse
import sys


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", metavar="FILE", help="TOML configuration (default: the embedded one)")
    p.add_argument("--duration", type=float, metavar="S", help="seconds to run (0: until the feed ends)")
    p.add_argument("--json", metavar="OUT", help="also write the summary as JSON to OUT ('-' for stdout)")
    p.add_argument("--lockstep", action="store_true", help="deterministic mode: one message in flight at a time")
    p.add_argument("--top", action="store_true", help="show the live `hean top` view while running")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress line, summary only")


def add_parser(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="run the engine (default: synthetic feed, simulated venue)")
    _common(run)
    run.add_argument("--rate", type=float, metavar="R", help="feed messages per second")
    run.add_argument("--fast", action="store_true", help="unpaced feed: as fast as the pipeline takes it")
    run.add_argument("--seed", type=int, help="synthetic feed seed")
    run.set_defaults(func=run_command)

    rep = sub.add_parser("replay", help="replay a recording through the pipeline")
    rep.add_argument("file", help="the recording")
    rep.add_argument(
        "--format", "-f", required=True, choices=["binance-usdm", "binance-spot", "bybit", "lobster", "native"]
    )
    rep.add_argument("--symbol", help="the symbol's name where the recording cannot tell (LOBSTER)")
    from hean.commands.book import add_lenient

    add_lenient(rep)  # --lenient [SHARE]: skip (and count) malformed lines, up to a share of the file
    _common(rep)
    pace = rep.add_mutually_exclusive_group()
    pace.add_argument("--rate", type=float, metavar="R", help="messages per second")
    pace.add_argument("--pace", choices=["recorded"], help="the recording's own inter-arrival times")
    pace.add_argument("--fast", action="store_true", help="unpaced (the default for replay)")
    rep.set_defaults(func=replay_command)


def _overrides(args: argparse.Namespace) -> dict:
    o: dict = {}
    if args.duration is not None:
        o["engine.duration_s"] = args.duration
    if args.lockstep:
        o["engine.lockstep"] = True
    if getattr(args, "rate", None) is not None:
        o["feed.rate"] = args.rate
        o["feed.pace"] = "rate"
    if getattr(args, "fast", False):
        o["feed.pace"] = "fast"
    if getattr(args, "seed", None) is not None:
        o["feed.seed"] = args.seed
    return o


def run_command(args: argparse.Namespace) -> int:
    return _run(args, _overrides(args))


def replay_command(args: argparse.Namespace) -> int:
    o = _overrides(args)
    o.update({"feed.source": "replay", "feed.path": args.file, "feed.format": args.format})
    if args.symbol:
        o["feed.symbol"] = args.symbol
    if args.lenient is not False:
        o["feed.lenient"] = args.lenient  # True (the default share) or the share given
    if args.pace == "recorded":
        o["feed.pace"] = "recorded"
    elif args.rate is None:
        o["feed.pace"] = "fast"
    if args.duration is None:
        o["engine.duration_s"] = 0.0
    return _run(args, o)


def _run(args: argparse.Namespace, overrides: dict) -> int:
    from hean.engine.config import ConfigError, load_config
    from hean.engine.run import run_engine

    try:
        cfg = load_config(args.config, overrides)
    except ConfigError as e:
        print(f"hean: configuration error: {e}", file=sys.stderr)
        return 2
    return run_engine(cfg, json_out=args.json, top=args.top, quiet=args.quiet)
