"""``hean convert IN --format F -o OUT``: convert a recording into HEAN's native event file.

The native file (see :mod:`hean.feeds.native`) holds the MARKET_EVENT records and the symbol table and is
memory-mapped on replay, so a recording is parsed once. The reader's report (lines, messages, events,
skipped lines, sync counters) and the conversion speed go to stderr. The output is checked before the
recording is read and written atomically (temp file + rename; see :mod:`hean.paths`).
"""

from __future__ import annotations

import argparse
import sys

from hean.commands.book import FORMAT_HELP, INSTRUMENTS_HELP, add_lenient, prepare


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert a recording (Binance, Bybit, LOBSTER, Tardis, Databento) into a native event file",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", help="the recording")
    p.add_argument("--format", "-f", required=True, help=FORMAT_HELP)
    p.add_argument("-o", "--output", required=True, help="the native event file to write")
    p.add_argument("--symbol", "-s", help="symbol of Binance REST snapshots / LOBSTER files")
    p.add_argument("--tick-size", help="tick size of --symbol (default: the finest step in the file)")
    p.add_argument("--lot-size", help="lot size of --symbol (default: the finest step in the file)")
    p.add_argument("--instruments", metavar="FILE", help=INSTRUMENTS_HELP)
    add_lenient(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import time

    from hean.feeds import load_events
    from hean.feeds.common import FeedError
    from hean.feeds.native import write_native

    code, table = prepare(args, "convert", args.output)
    if code:
        return code
    t0 = time.perf_counter()
    try:
        events, report = load_events(args.file, args.format, table, args.lenient, args.symbol, args.instruments)
    except FeedError as e:
        print(f"hean convert: {e}", file=sys.stderr)
        return 1
    dt = time.perf_counter() - t0
    try:
        size = write_native(args.output, events, report.symbols, source=f"{args.format}:{args.file}")
    except OSError as e:
        print(f"hean convert: cannot write {args.output}: {e.strerror or e}", file=sys.stderr)
        return 2
    print(report.summary(), file=sys.stderr)
    for r in report.reasons:
        print(f"  skipped {r}", file=sys.stderr)
    rate = report.lines / dt if dt > 0 else 0.0
    print(
        f"hean convert: {len(events)} events, {size} bytes -> {args.output} "
        f"({dt:.3f} s, {rate:,.0f} lines/s including numba warm-up)",
        file=sys.stderr,
    )
    return 0
