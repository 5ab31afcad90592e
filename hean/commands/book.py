"""``hean book FILE --format F [--symbol S] --top-csv OUT``: replay a recording through the book.

Writes the top of book after every applied event group (one exchange message), so an operator can check
the reconstructed book against the exchange's own view (e.g. Binance bookTicker, a LOBSTER orderbook file):

    recv_ns,symbol,update_id,bid_px,bid_qty,ask_px,ask_qty

Prices and quantities are decimal numbers in the exchange's units (an empty side leaves its two fields
empty); ``recv_ns`` is the recorded receive time (the exchange time where the recording has none);
``update_id`` is the exchange's last applied update id, or the message number for LOBSTER. L3 recordings
(LOBSTER) go through the L3 order-by-order book, the others through the L2 book. Out-of-sync markers and
the reader's report go to stderr. The output is checked before the recording is read (a directory, a missing
folder, a place that cannot be written: one line, exit 2) and written atomically (a temp file beside it,
renamed over it), so a failed run never leaves a partial CSV.
"""

from __future__ import annotations

import argparse
import sys

FORMAT_HELP = "binance-usdm, binance-spot, bybit, lobster (the message file), tardis (a Tardis.dev CSV), dbn or native"
INSTRUMENTS_HELP = "--format dbn: a DBN file of instrument definitions (ticks, names) for a recording without them"
LENIENT_HELP = (
    "skip and count malformed lines instead of failing, up to SHARE of the lines (default 0.01 = 1 %%; "
    "e.g. 0.05 or 5%%); more is a failure"
)


def parse_share(text: str) -> float:
    """``--lenient SHARE``: a share of lines in [0, 1], as ``0.05`` or ``5%``."""
    try:
        share = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a share of lines: {text!r} (e.g. 0.05 or 5%; a bare --lenient goes after the recording)"
        ) from None
    if not 0.0 <= share <= 1.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"share of lines must be in [0, 1], got {text!r}")
    return share


def add_lenient(p: argparse.ArgumentParser) -> None:
    """``--lenient [SHARE]``: bare, the default share (True); with a number, that share."""
    p.add_argument("--lenient", nargs="?", const=True, default=False, type=parse_share, metavar="SHARE",
                   help=LENIENT_HELP)  # fmt: skip


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "book",
        help="replay a recording through the order book; write the top of book as CSV",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", help="the recording")
    p.add_argument("--format", "-f", required=True, help=FORMAT_HELP)
    p.add_argument("--symbol", "-s", help="only this symbol (and the symbol of Binance REST snapshots)")
    p.add_argument("--top-csv", "-o", required=True, help="output CSV ('-' for stdout)")
    p.add_argument("--tick-size", help="tick size of --symbol (default: the finest step in the file)")
    p.add_argument("--lot-size", help="lot size of --symbol (default: the finest step in the file)")
    p.add_argument("--instruments", metavar="FILE", help=INSTRUMENTS_HELP)
    add_lenient(p)
    p.set_defaults(func=run)


def symbol_table(args: argparse.Namespace):
    """A one-symbol table from --symbol/--tick-size/--lot-size, or None to let the reader infer it."""
    if not (args.tick_size or args.lot_size):
        return None
    if not (args.symbol and args.tick_size and args.lot_size):
        raise ValueError("--tick-size/--lot-size need --symbol, --tick-size and --lot-size together")
    from hean.symbols import SymbolTable

    try:
        return SymbolTable([{"name": args.symbol, "tick_size": args.tick_size, "lot_size": args.lot_size}])
    except (ValueError, ArithmeticError) as e:
        raise ValueError(f"--tick-size/--lot-size: {e}") from None


def prepare(args: argparse.Namespace, command: str, output: str) -> tuple[int, object]:
    """The checks before any work, shared by book and convert: ``(0, symbol table or None)``, or ``(2, None)``
    after printing one line (unknown format, bad --tick-size/--lot-size, an output that cannot be written)."""
    from hean.feeds import FORMATS

    if args.format not in FORMATS:
        print(f"hean {command}: unknown --format {args.format!r} ({FORMAT_HELP})", file=sys.stderr)
        return 2, None
    if getattr(args, "instruments", None) and args.format != "dbn":
        print(f"hean {command}: --instruments goes with --format dbn", file=sys.stderr)
        return 2, None
    try:
        table = symbol_table(args)
    except ValueError as e:
        print(f"hean {command}: {e}", file=sys.stderr)
        return 2, None
    from hean.paths import output_problem

    problem = None if output == "-" else output_problem(output)
    if problem:
        print(f"hean {command}: output {output}: {problem}", file=sys.stderr)
        return 2, None
    return 0, table


def replay_top(events, n_symbols: int):
    """BOOK_STATE records after each group (QUOTE kind only), through the L2 or (for L3 events) L3 book."""
    import numpy as np

    from hean.records import BOOK_STATE, BookStateKind, EventKind
    from hean.stages.book import book_replay_states, make_l2_book
    from hean.stages.l3book import l3_replay_states, make_l3_book
    from hean.stages.trades import make_trade_stats

    out = np.zeros(max(len(events), 1), BOOK_STATE)
    stats = make_trade_stats(n_symbols)
    kinds = np.unique(events["kind"]) if len(events) else np.zeros(0, np.uint8)
    if np.isin(kinds, [EventKind.L3_ADD, EventKind.L3_CANCEL, EventKind.L3_DELETE, EventKind.L3_EXECUTE]).any():
        n = l3_replay_states(make_l3_book(n_symbols), stats, events, out, 0)
    else:
        n = book_replay_states(make_l2_book(n_symbols), stats, events, out, 0)
    states = out[:n]
    return states[states["kind"] == BookStateKind.QUOTE], int((states["kind"] == BookStateKind.STATUS).sum())


def run(args: argparse.Namespace) -> int:
    from hean.feeds import load_events
    from hean.feeds.common import FeedError

    code, table = prepare(args, "book", args.top_csv)
    if code:
        return code
    try:
        events, report = load_events(args.file, args.format, table, args.lenient, args.symbol, args.instruments)
    except FeedError as e:
        print(f"hean book: {e}", file=sys.stderr)
        return 1
    table = report.symbols
    print(report.summary(), file=sys.stderr)
    for r in report.reasons:
        print(f"  skipped {r}", file=sys.stderr)
    states, n_stale = replay_top(events, max(len(table), 1))
    if args.symbol:
        if args.symbol not in table:
            print(f"hean book: symbol {args.symbol!r} not in the recording ({', '.join(table.names)})", file=sys.stderr)
            return 1
        states = states[states["symbol"] == table.id_of(args.symbol)]
    if n_stale:
        print(f"hean book: {n_stale} out-of-sync markers (book stale until the next snapshot)", file=sys.stderr)
    if args.top_csv == "-":
        write_top_csv(sys.stdout, states, table)
    else:
        try:
            from hean.paths import write_atomically

            write_atomically(args.top_csv, lambda f: write_top_csv(f, states, table))
        except OSError as e:
            print(f"hean book: cannot write {args.top_csv}: {e.strerror or e}", file=sys.stderr)
            return 2
    print(f"hean book: {len(states)} rows -> {args.top_csv}", file=sys.stderr)
    return 0


def write_top_csv(out, states, table) -> None:
    """The CSV rows of ``states`` (BOOK_STATE), prices/quantities as exact decimal strings."""
    out.write("recv_ns,symbol,update_id,bid_px,bid_qty,ask_px,ask_qty\n")
    syms = table.symbols
    cols = [states[c].tolist() for c in ("ts_origin", "symbol", "update_id", "bid_px", "bid_qty", "ask_px", "ask_qty")]
    lines = []
    for ts, sid, uid, bp, bq, ap, aq in zip(*cols, strict=True):
        s = syms[sid]
        bid = f"{s.ticks_to_str(bp)},{s.lots_to_str(bq)}" if bq else ","
        ask = f"{s.ticks_to_str(ap)},{s.lots_to_str(aq)}" if aq else ","
        lines.append(f"{ts},{s.name},{uid},{bid},{ask}\n")
    out.writelines(lines)
