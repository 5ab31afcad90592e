"""``hean book FILE --format F [--symbol S] --top-csv OUT``: replay a recording through the book.

Writes the top of book after every applied event group (one exchange message), so an operator can check
the reconstructed book against the exchange's own view (e.g. Binance bookTicker, a LOBSTER orderbook file):

    recv_ns,symbol,update_id,bid_px,bid_qty,ask_px,ask_qty

Prices and quantities are decimal numbers in the exchange's units (an empty side leaves its two fields
empty); ``recv_ns`` is the recorded receive time (the exchange time where the recording has none);
``update_id`` is the exchange's last applied update id, or the message number for LOBSTER. L3 recordings
(LOBSTER) go through the L3 order-by-order book, the others through the L2 book. Out-of-sync markers and
the reader's report go to stderr. Top-level imports stay light (argparse only).
"""

from __future__ import annotations

import argparse
import sys

FORMAT_HELP = "binance-usdm, binance-spot, bybit, lobster (the message file) or native"


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
    p.add_argument("--lenient", action="store_true", help="skip and count malformed lines instead of failing")
    p.set_defaults(func=run)


def symbol_table(args: argparse.Namespace):
    """A one-symbol table from --symbol/--tick-size/--lot-size, or None to let the reader infer it."""
    if not (args.tick_size or args.lot_size):
        return None
    if not (args.symbol and args.tick_size and args.lot_size):
        raise SystemExit("hean: --tick-size/--lot-size need --symbol, --tick-size and --lot-size together")
    from hean.symbols import SymbolTable

    return SymbolTable([{"name": args.symbol, "tick_size": args.tick_size, "lot_size": args.lot_size}])


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
    from hean.feeds import FORMATS, load_events
    from hean.feeds.common import FeedError

    if args.format not in FORMATS:
        print(f"hean book: unknown --format {args.format!r} ({FORMAT_HELP})", file=sys.stderr)
        return 2
    try:
        events, report = load_events(args.file, args.format, symbol_table(args), args.lenient, args.symbol)
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
    out = sys.stdout if args.top_csv == "-" else open(args.top_csv, "w")
    try:
        write_top_csv(out, states, table)
    finally:
        if out is not sys.stdout:
            out.close()
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
