"""``hean record --venue V --symbols A,B -o DIR``: record a venue's live public streams as replayable captures.

Writes ``DIR/<venue>/<SYMBOL>/<SYMBOL>-<YYYYmmddTHH>.gz``: one file per symbol and UTC hour, each line
``<receive ns> <json>`` as received, the depth snapshots included, so every file replays on its own
(``hean replay FILE --format binance-usdm``). Runs until Ctrl-C/SIGTERM or ``--duration``; a status line
goes to stderr every ``--status`` seconds and a JSON summary to stdout at the end. Disconnects, silences,
gaps and rate limits are survived (reconnect with backoff, resync from a snapshot) and counted.
"""

from __future__ import annotations

import argparse
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "record",
        help="record a venue's live market data (depth, trades, best bid/ask) into hourly capture files",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--venue", required=True, help="binance-usdm | binance-spot | bybit-linear | bybit-spot")
    p.add_argument("--symbols", required=True, help="comma-separated, as the venue names them: BTCUSDT,ETHUSDT")
    p.add_argument("-o", "--output", required=True, help="the directory to write into (created)")
    p.add_argument("--duration", type=float, default=0.0, help="seconds to record (default: until stopped)")
    p.add_argument("--ws-url", default="", help="WebSocket base URL (default: the venue's public one)")
    p.add_argument("--rest-url", default="", help="REST base URL for depth snapshots (default: the venue's)")
    p.add_argument("--silence", type=float, default=10.0, help="seconds without a message before reconnecting")
    p.add_argument("--status", type=float, default=10.0, help="seconds between status lines on stderr")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    import signal

    from hean.live.client import LiveOptions
    from hean.live.record import record
    from hean.live.venues import VENUES

    if args.venue not in VENUES:
        print(f"hean record: unknown venue {args.venue!r}: one of {', '.join(VENUES)}", file=sys.stderr)
        return 2
    symbols = [s.strip() for s in args.symbols.split(",") if s.strip()]
    if not symbols or len(set(symbols)) != len(symbols):
        print(f"hean record: --symbols: one or more distinct names, got {args.symbols!r}", file=sys.stderr)
        return 2
    for key, v in (("--duration", args.duration), ("--silence", args.silence), ("--status", args.status)):
        if not v >= 0 or (key != "--duration" and v == 0):
            print(f"hean record: {key} must be > 0, got {v}", file=sys.stderr)
            return 2
    stopped: list[int] = []
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, lambda signum, frame: stopped.append(signum))

    def status(st: dict) -> None:
        print(
            f"hean record: {st['seconds']:.0f} s, {st['lines']:,} lines, {st['bytes'] / 1e6:.1f} MB, "
            f"{len(st['files'])} files, gaps {st['gaps']}, reconnects {st['disconnects']}, "
            f"stale {','.join(st['stale']) or '-'}",
            file=sys.stderr,
            flush=True,
        )

    options = LiveOptions(ws_url=args.ws_url, rest_url=args.rest_url, silence_s=args.silence)
    try:
        stats = record(args.venue, symbols, args.output, options, args.duration, lambda: bool(stopped), status,
                       args.status)  # fmt: skip
    except OSError as e:
        print(f"hean record: cannot write {args.output}: {e.strerror or e}", file=sys.stderr)
        return 2
    print(json.dumps(stats, indent=2))
    return 0
