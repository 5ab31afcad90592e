"""``hean bench book``: the L2 book and the readers on the shared Binance USD-M recording, beside peers.

What is measured, all in one run on the same events (the recording after sync: the REST snapshot and the
6,547 diff messages, 445,262 level updates; trades and tickers left out; JSON parsing excluded except in
the conversion figure):

* **update** -- ns per level update: each diff message is applied and best bid/ask read after it, timed
  per message with CLOCK_MONOTONIC; the figure is the median over messages of (message time / levels).
  Peers do the same work per message: a plain Python dict book (best price cached, rescanned when the best
  level goes), hftbacktest's market depths (Rust; hash map and price-indexed ROI vector) and
  NautilusTrader's ``OrderBook`` (Rust, via Python) -- each skipped with a message when not installed.
* **best bid/ask** -- ns per read of both sides (``l2_best_bid`` + ``l2_best_ask``) in a loop over 64
  populated symbols.
* **native replay** -- level updates/s replaying the whole recording from the memory-mapped native file
  through the book stage kernel, reading best bid/ask after every message, one core.
* **conversion** -- JSON lines/s and events/s of ``read_binance`` (median of ``--repeat`` runs): the capture
  gunzipped into a plain file (memory-mapped by the reader), and the ``.gz`` itself (gunzipped in a thread
  while the lines already out are parsed; with python-isal when installed, else zlib: named in the report).
* **conversion cache** -- what a replay's preparation costs (:func:`hean.feeds.cache.cached_events`, in a
  private cache folder): cold, the recording converted, checked (``load_events``) and stored; then a hit,
  the stored file mapped and verified (key, every record, checksum) without parsing.

Targets (issue #3, #20): update <= 15 ns median and below hftbacktest's vector depth in the same run; best
bid/ask <= 5 ns; replay >= 50 M level updates/s; conversion >= 1 M lines/s. The machine is shared and
noisy: compare within one run.
"""

from __future__ import annotations

import argparse
import gzip
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

import numpy as np
from numba import njit

from hean.atomics import now_ns
from hean.commands import HeanParser, emit_json, text_out
from hean.feeds.common import gzip_module
from hean.jit import entry
from hean.records import BOOK_STATE, F_LAST_IN_GROUP, EventKind
from hean.stages.book import (
    I_UPDATE_ID,
    OK,
    _set_level_fast,
    book_replay_states,
    l2_apply,
    l2_apply_events,
    l2_best_ask,
    l2_best_bid,
    l2_set_level,
    make_l2_book,
)
from hean.stages.trades import make_trade_stats

DEFAULT_FILE = Path(__file__).resolve().parents[2] / "tests" / "data" / "binance-usdm-btcusdt-20240808.gz"
TICK, LOT = "0.10", "0.001"
_LEVEL_SET = int(EventKind.LEVEL_SET)
_CLEAR = int(EventKind.CLEAR)


# ---------------------------------------------------------------------------------------------------------
# HEAN kernels under test
# ---------------------------------------------------------------------------------------------------------
@entry
def _timed_groups(book, events, g_start, g_end, out_ns):
    """Apply each group, read best bid/ask; out_ns[g] = ns for the group. Returns a checksum."""
    sink = np.int64(0)
    for g in range(g_start.shape[0]):
        t0 = now_ns()
        l2_apply_events(book, events, g_start[g], g_end[g])
        bp, bq = l2_best_bid(book, 0)
        ap, aq = l2_best_ask(book, 0)
        t1 = now_ns()
        sink += bp + bq + ap + aq
        out_ns[g] = t1 - t0
    return sink


@entry
def _replay(book, events):
    """The whole recording through the book in one pass, best bid/ask read after every group (the
    LEVEL_SET fast path expanded here, as in :func:`hean.stages.book.l2_apply_events`)."""
    sink = np.int64(0)
    info = book.info
    for i in range(events.shape[0]):
        e = events[i]
        sym = e.symbol
        if e.kind == _LEVEL_SET and (e.side == 1 or e.side == -1) and sym == 0:
            if _set_level_fast(book, sym, 0 if e.side == 1 else 1, e.price, e.qty) == OK:
                info[sym, I_UPDATE_ID] = e.update_id
        elif e.kind == _CLEAR:
            l2_apply(book, e)
        if (e.flags & F_LAST_IN_GROUP) != 0:
            bp, bq = l2_best_bid(book, sym)
            ap, aq = l2_best_ask(book, sym)
            sink += bp + bq + ap + aq
    return sink


@entry
def _read_loop(book, n):
    sink = np.int64(0)
    mask = book.best.shape[0] - 1
    for i in range(n):
        s = i & mask
        bp, bq = l2_best_bid(book, s)
        ap, aq = l2_best_ask(book, s)
        sink += bp + bq + ap + aq
    return sink


@entry
def _clock_cost(n):
    t = np.int64(0)
    for _ in range(n):
        t += now_ns() & 1
    return t


# ---------------------------------------------------------------------------------------------------------
# data preparation
# ---------------------------------------------------------------------------------------------------------
def book_groups(events: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The book events (LEVEL_SET/CLEAR) and the [start, end) of each group; first group = the snapshot."""
    ev = events[(events["kind"] == _LEVEL_SET) | (events["kind"] == _CLEAR)]
    ends = np.flatnonzero(ev["flags"] & F_LAST_IN_GROUP) + 1
    starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
    return np.ascontiguousarray(ev), starts, ends.astype(np.int64)


def per_level_median(ns: np.ndarray, levels: np.ndarray) -> float:
    return float(np.median(ns / np.maximum(levels, 1)))


# ---------------------------------------------------------------------------------------------------------
# peers
# ---------------------------------------------------------------------------------------------------------
def dict_book_run(groups: list[list[tuple[int, int, int]]]) -> np.ndarray:
    """A plain Python book: one dict per side, best cached, rescanned with max/min when the best goes."""
    bids: dict[int, int] = {}
    asks: dict[int, int] = {}
    best_bid = None
    best_ask = None
    out = np.empty(len(groups), np.int64)
    clock = time.perf_counter_ns
    for g, levels in enumerate(groups):
        t0 = clock()
        for side, px, qty in levels:
            if side == 1:
                if qty:
                    bids[px] = qty
                    if best_bid is None or px > best_bid:
                        best_bid = px
                else:
                    bids.pop(px, None)
                    if px == best_bid:
                        best_bid = max(bids) if bids else None
            else:
                if qty:
                    asks[px] = qty
                    if best_ask is None or px < best_ask:
                        best_ask = px
                else:
                    asks.pop(px, None)
                    if px == best_ask:
                        best_ask = min(asks) if asks else None
        _ = (best_bid, bids.get(best_bid), best_ask, asks.get(best_ask))
        out[g] = clock() - t0
    return out


def nautilus_run(ev: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray | str:
    """NautilusTrader's Rust OrderBook (L2_MBP) from Python: apply each level as a delta, read the top."""
    try:
        from nautilus_trader.model.book import OrderBook
        from nautilus_trader.model.data import BookOrder, OrderBookDelta
        from nautilus_trader.model.enums import BookAction, BookType, OrderSide
        from nautilus_trader.model.identifiers import InstrumentId
        from nautilus_trader.model.objects import Price, Quantity
    except ImportError:
        return "skipped: nautilus_trader not installed"
    iid = InstrumentId.from_str("BTCUSDT-PERP.BINANCE")
    book = OrderBook(iid, BookType.L2_MBP)
    # build the deltas up front (construction is not what we measure)
    groups = []
    for g in range(len(starts)):
        deltas = []
        for e in ev[starts[g] : ends[g]]:
            if e["kind"] == _CLEAR:
                deltas.append(OrderBookDelta.clear(iid, 0, 0, 0))
                continue
            side = OrderSide.BUY if e["side"] == 1 else OrderSide.SELL
            px = Price(int(e["price"]) / 10, 1)
            q = int(e["qty"])
            order = BookOrder(side, px, Quantity(q / 1000, 3), int(e["price"]))
            action = BookAction.UPDATE if q else BookAction.DELETE
            deltas.append(OrderBookDelta(iid, action, order, 0, 0, 0, 0))
        groups.append(deltas)
    out = np.empty(len(groups), np.int64)
    clock = time.perf_counter_ns
    for g, deltas in enumerate(groups):
        t0 = clock()
        for d in deltas:
            book.apply_delta(d)
        _ = (book.best_bid_price(), book.best_bid_size(), book.best_ask_price(), book.best_ask_size())
        out[g] = clock() - t0
    return out


def hftbacktest_run(ev: np.ndarray, starts: np.ndarray, ends: np.ndarray, kind: str) -> np.ndarray | str:
    """hftbacktest's market depth (``hashmap`` or ``roivec``) inside its backtester, fed the same levels as
    depth events one message per ns of simulated time; elapse(1) per message, best bid/ask read after it."""
    try:
        import hftbacktest as hb
    except ImportError:
        return "skipped: hftbacktest not installed"
    n = len(ev)
    data = np.zeros(n, hb.event_dtype)
    flags = np.where(ev["kind"] == _CLEAR, hb.DEPTH_CLEAR_EVENT, hb.DEPTH_EVENT).astype(np.uint64)
    flags |= np.uint64(hb.EXCH_EVENT | hb.LOCAL_EVENT)
    flags |= np.where(ev["side"] == 1, np.uint64(hb.BUY_EVENT), np.uint64(hb.SELL_EVENT))
    group_of = np.repeat(np.arange(len(starts)), ends - starts)
    data["ev"] = flags
    data["exch_ts"] = group_of + 1
    data["local_ts"] = group_of + 1
    data["px"] = ev["price"] / 10.0
    data["qty"] = ev["qty"] / 1000.0
    asset = (
        hb.BacktestAsset()
        .data([data])
        .linear_asset(1.0)
        .constant_order_latency(0, 0)
        .risk_adverse_queue_model()
        .no_partial_fill_exchange()
        .trading_value_fee_model(0.0, 0.0)
        .tick_size(0.1)
        .lot_size(0.001)
        .last_trades_capacity(0)
    )
    if kind == "roivec":
        asset = asset.roi_lb(40000.0).roi_ub(80000.0)
        hbt = hb.ROIVectorMarketDepthBacktest([asset])
    else:
        hbt = hb.HashMapMarketDepthBacktest([asset])
    out = np.empty(len(starts), np.int64)
    _hbt_loop(hbt, out)
    hbt.close()
    return out


# Raw numba on purpose (an exception named in hean.jit and README): it drives a peer's object
# (hftbacktest's jitclass), which needs numba's reference counting (jitclass instances are refcounted), and it
# is compiled per run rather than cached on a type that belongs to another library.
@njit
def _hbt_loop(hbt, out):
    for g in range(out.shape[0]):
        t0 = now_ns()
        hbt.elapse(1)
        d = hbt.depth(0)
        _ = d.best_bid_tick + d.best_ask_tick
        out[g] = now_ns() - t0


# ---------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = HeanParser(prog="hean bench book", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--file", default=str(DEFAULT_FILE), help="Binance USD-M raw capture")
    p.add_argument("--repeat", type=int, default=5, help="passes over the recording (median reported)")
    p.add_argument("--reads", type=int, default=20_000_000, help="best bid/ask reads")
    p.add_argument("--no-peers", action="store_true", help="HEAN only")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON ('-': to stdout, the report to stderr)")
    args = p.parse_args(argv)
    path = Path(args.file)
    if not path.exists():
        print(f"hean bench book: {path} not found (--file)", file=sys.stderr)
        return 2
    res = measure(path, args.repeat, args.reads, not args.no_peers)
    print_report(res, text_out(args.json))  # with --json -, stdout is the JSON alone
    if args.json:
        emit_json(args.json, res)
    return 0


def measure(path: Path, repeat: int, reads: int, peers: bool) -> dict:
    """Every figure of the benchmark on the recording at ``path`` (``repeat`` passes, ``reads`` best bid/ask
    reads; the peer books too when ``peers``)."""
    from hean.feeds.binance import read_binance
    from hean.feeds.native import open_native, write_native
    from hean.symbols import SymbolTable

    table = SymbolTable([{"name": "BTCUSDT", "tick_size": TICK, "lot_size": LOT, "venue": "binance"}])
    res: dict[str, object] = {}

    # conversion: warm once (numba cache load), then time; gunzip measured separately
    events, report = read_binance(path, table)
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "capture.txt"
        plain.write_bytes(raw)
        read_binance(plain, table)  # the plain file's path warm too
        conv = _timed(lambda: read_binance(plain, table), repeat)
        conv_gz = _timed(lambda: read_binance(path, table), repeat)
        native = Path(tmp) / "capture.hev"
        write_native(native, events, table)
        mm, _ = open_native(native)
        res["conversion_lines_per_s"] = report.lines / conv
        res["conversion_events_per_s"] = report.events / conv
        res["conversion_with_gunzip_lines_per_s"] = report.lines / conv_gz
        res["conversion_with_gunzip_events_per_s"] = report.events / conv_gz
        res["gunzip"] = gzip_module().__name__
        res["lines"], res["events"] = report.lines, report.events
        res.update(_cache_figures(path, Path(tmp) / "cache", repeat))

        ev, starts, ends = book_groups(np.asarray(mm))
        levels = (ends - starts)[1:]  # diff messages (group 0 is the snapshot)
        res["level_updates"] = int(len(ev) - 1)
        res["diff_messages"] = int(len(levels))

        # per-message timing
        meds = []
        for _ in range(repeat):
            book = make_l2_book(1)
            ns = np.empty(len(starts), np.int64)
            _timed_groups(book, ev, starts, ends, ns)
            meds.append(per_level_median(ns[1:], levels))
        res["hean_update_ns_median"] = float(np.median(meds))
        res["clock_ns"] = _clock_ns()

        # native replay: the whole memory-mapped file through the book, best bid/ask after every message
        rates = []
        n_level_sets = int(np.count_nonzero(mm["kind"] == _LEVEL_SET))
        for _ in range(repeat):
            book = make_l2_book(1)
            t0 = time.perf_counter()
            _replay(book, mm)
            rates.append(n_level_sets / (time.perf_counter() - t0))
        res["replay_level_updates_per_s"] = float(np.median(rates))
        res["replay_level_updates"] = n_level_sets
        # the full book stage kernel (BOOK_STATE published per group, trades with VWAP)
        out = np.ones(len(mm), BOOK_STATE)  # touched: page faults are not what we measure
        book_replay_states(make_l2_book(1), make_trade_stats(1), mm[:1000], out, 0)  # warm
        t0 = time.perf_counter()
        book_replay_states(make_l2_book(1), make_trade_stats(1), mm, out, 0)
        res["stage_events_per_s"] = len(mm) / (time.perf_counter() - t0)
        del mm

    # best bid/ask reads over 64 symbols
    book = make_l2_book(64, window=256, overflow=16)
    for s in range(64):
        l2_set_level(book, s, 0, 1000 + s, 5)
        l2_set_level(book, s, 1, 1001 + s, 7)
    _read_loop(book, 1000)
    t0 = time.perf_counter_ns()
    _read_loop(book, reads)
    res["hean_best_bid_ask_ns"] = (time.perf_counter_ns() - t0) / reads

    peer_figures: dict[str, object] = {}
    if peers:
        groups = [list(zip(ev["side"][a:b].tolist(), ev["price"][a:b].tolist(), ev["qty"][a:b].tolist(),
                           strict=True)) for a, b in zip(starts, ends, strict=True)]  # fmt: skip
        peer_figures["python dict book"] = per_level_median(dict_book_run(groups)[1:], levels)
        for kind in ("hashmap", "roivec"):
            r = hftbacktest_run(ev, starts, ends, kind)
            peer_figures[f"hftbacktest {kind}"] = r if isinstance(r, str) else per_level_median(r[1:], levels)
        r = nautilus_run(ev, starts, ends)
        peer_figures["nautilus OrderBook"] = r if isinstance(r, str) else per_level_median(r[1:], levels)
    res["peers_update_ns_median"] = peer_figures
    return res


def _timed(fn, repeat: int) -> float:
    """Median seconds of ``repeat`` calls of ``fn``."""
    times = []
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _cache_figures(path: Path, folder: Path, repeat: int) -> dict:
    """A replay's preparation through the conversion cache in ``folder``: cold (convert, check, store; the
    folder emptied before each run) and hit (map and verify), median seconds of ``repeat`` runs each."""
    import shutil

    from hean.feeds.cache import cached_events

    fmt = "binance-usdm"

    def cold():
        shutil.rmtree(folder, ignore_errors=True)
        got = cached_events(path, fmt, directory=folder, limit=1 << 40)
        assert got.converted and got.path is not None, "the bench's recording was not cached"

    def hit():
        got = cached_events(path, fmt, directory=folder, limit=1 << 40)
        assert not got.converted

    cold()  # warm: the checks' and the checksum's compiled code
    hit()
    return {"cache_miss_s": _timed(cold, repeat), "cache_hit_s": _timed(hit, repeat)}


def _clock_ns() -> float:
    _clock_cost(1000)
    n = 2_000_000
    t0 = time.perf_counter_ns()
    _clock_cost(n)
    return (time.perf_counter_ns() - t0) / n


def print_report(r: dict, out: IO[str] | None = None) -> None:
    """The report, to ``out`` (stdout by default)."""
    out = out or sys.stdout

    def row(name, value, target, ok):
        mark = "" if ok is None else ("ok" if ok else "MISS")
        print(f"  {name:<44} {value:>16}   {target:<28} {mark}", file=out)

    print(f"hean bench book: {r['level_updates']:,} level updates in {r['diff_messages']:,} diff messages "
          f"(clock read {r['clock_ns']:.0f} ns, included once per message)", file=out)  # fmt: skip
    upd = r["hean_update_ns_median"]
    peers = r["peers_update_ns_median"]
    hbt = peers.get("hftbacktest roivec")
    hbt_ok = None if not isinstance(hbt, float) else upd < hbt
    row("HEAN L2 update, median ns/level", f"{upd:.1f} ns", "<= 15 ns", upd <= 15)
    if hbt_ok is not None:
        row("  vs hftbacktest ROI vector (same run)", f"{hbt / upd:.1f}x faster", "faster", hbt_ok)
    row("HEAN best bid+ask read", f"{r['hean_best_bid_ask_ns']:.2f} ns", "<= 5 ns", r["hean_best_bid_ask_ns"] <= 5)
    rate = r["replay_level_updates_per_s"]
    row("native replay through the book", f"{rate / 1e6:.1f} M upd/s", ">= 50 M level updates/s", rate >= 50e6)
    row("  book stage kernel, all events, states out", f"{r['stage_events_per_s'] / 1e6:.1f} M ev/s", "", None)
    conv = r["conversion_lines_per_s"]
    row("JSON -> native conversion", f"{conv / 1e3:,.0f} k lines/s", ">= 1 M lines/s", conv >= 1e6)
    gz = r["conversion_with_gunzip_lines_per_s"]
    if "conversion_events_per_s" in r:  # figures added by issue 20 (a result from before lacks them)
        row("  events", f"{r['conversion_events_per_s'] / 1e6:.2f} M ev/s", "", None)
        row(f"  including gunzip ({r['gunzip']})", f"{gz / 1e3:,.0f} k lines/s", "", None)
        row("  including gunzip, events", f"{r['conversion_with_gunzip_events_per_s'] / 1e6:.2f} M ev/s", "", None)
        miss, hit = r["cache_miss_s"], r["cache_hit_s"]
        row(
            "replay's first read: convert, check, cache",
            f"{miss * 1e3:.0f} ms",
            f"{r['lines'] / miss / 1e3:,.0f} k lines/s",
            None,
        )
        row("replay's next reads: conversion cache hit", f"{hit * 1e3:.1f} ms", "no parsing", None)
    else:
        row("  including gunzip", f"{gz / 1e3:,.0f} k lines/s", "", None)
    print("  peers (same events, same run), median ns per level update:", file=out)
    for name, v in peers.items():
        if isinstance(v, str):
            print(f"    {name:<42} {v}", file=out)
        else:
            print(f"    {name:<42} {v:>10.1f} ns   ({v / upd:.1f}x HEAN)", file=out)


if __name__ == "__main__":
    sys.exit(main())
