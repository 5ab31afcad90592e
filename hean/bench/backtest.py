"""``hean bench backtest``: a whole backtest of HEAN's market maker on the shared Binance USD-M recording, beside
the same market maker on hftbacktest and on NautilusTrader, on the same events with the same order latency.

What is timed: one backtest from events already in each system's own form to its results -- the wall time of
:func:`hean.backtest` (the conversion of the JSON capture is cached by the first, untimed call; that first call
also loads or compiles HEAN's kernels), of building hftbacktest's backtest over its event array and running its
strategy loop to the end, and of building, loading and running NautilusTrader's ``BacktestEngine`` over its
data objects. Turning the recording into hftbacktest's array or NautilusTrader's objects is done once, before
the rounds, and not timed (as HEAN's conversion cache is not). Each system runs in a process of its own
(spawned, so that one system's libraries and heap do not slow another's), once untimed first (compiles, caches,
imports), then ``--rounds`` rounds with the systems interleaved in each round, one running at a time; every
figure is the median over the rounds. ns/event = wall time / the recording's events: every record of HEAN's
native events of the file (each level set, the snapshot's clear, each trade and each side of each bookTicker
quote: 598,754 for the shared recording). "loop" is the part of it spent in the run itself (HEAN's worker loop,
hftbacktest's strategy loop, NautilusTrader's ``engine.run()``). Orders counts every order action sent (new, replace or
modify, cancel); fills counts fills. "vs HEAN" is a system's ns/event over HEAN's (below 1: faster than HEAN).

The same inputs everywhere: HEAN's native events of the recording (the Binance sync rules applied: the REST
snapshot, then the diffs that chain on it). A message's events keep its exchange time, clamped so time never
runs back (what HEAN's venue does with the recording's 1,092 steps back between its streams); for the peers
the k-th message of one clamped time gets k ns more, so each message is its own step in their clocks as it is
in HEAN's. Feed latency 0 (a message reaches the strategy at its exchange time), order entry latency
``--latency-us`` (1 ms), reports back at once, zero fees; one symbol. The market maker is HEAN's
``market_maker`` with its default parameters (``hean/strategies/market_maker.py``): a post-only 1-lot quote
per side at the mid -/+ 1 tick, both skewed 0.5 tick per lot of position, no quote on a side that would take
|position| past 10 lots, a side re-quoted (replace) when its price moved and its quote is acknowledged, both
quotes cancelled while the book is crossed or a side empty; it acts on every book message and every trade,
not on the bookTicker quotes.

The models each system uses:

* HEAN: ``hean.backtest`` (the replay pipeline in process, lockstep); L2 book; risk-averse queue (an order
  joins behind the visible quantity at its price; only prints at its price reduce that, a print through its
  price fills it; cancellations are never credited); partial fills; the default pre-trade risk limits.
  "HEAN merged": the same events as two native files (cut where they chain in time), replayed as one by
  ``hean.backtest([b, a])``: the k-way merge by receive time into the run's folder is in its time, and its
  orders and fills must be HEAN's.
* hftbacktest: ``ROIVectorMarketDepthBacktest`` (price-indexed vector depth over the traded prices -/+ 20 %:
  levels beyond are not kept), ``risk_adverse_queue_model`` (as HEAN's, except that a level's quantity
  falling below the queue ahead shortens the queue), ``no_partial_fill_exchange`` (the quotes are one lot, so
  partial fills cannot happen; a resting order also fills when the opposite best reaches its price),
  ``constant_order_latency`` (entry ``--latency-us``, response 0), ``trading_value_fee_model(0, 0)``. The
  bookTicker rows are in its data as exchange-side rows of a kind it skips.
* NautilusTrader: ``BacktestEngine``, an L2_MBP venue book from ``OrderBookDeltas`` (one per message), trades
  as ``TradeTick`` with ``trade_execution``, bookTicker quotes as ``QuoteTick`` (not used by an L2 book); no
  queue position: a resting limit fills when the opposite side reaches its price (from the book or a trade);
  ``LatencyModel`` (base ``--latency-us``), ``FillModel`` (no slippage), a crypto perpetual with zero maker
  and taker fees, a netting margin account.

How the copies differ from HEAN's market maker: hftbacktest refuses a request for an order that has one in
flight, so a quote that is still unacknowledged when its side must go is cancelled after its acknowledgement
(HEAN cancels it at once); NautilusTrader's copy is Python called through its ``Strategy`` (HEAN's and the
hftbacktest copy are compiled); neither peer has HEAN's pre-trade risk stage in the path. Positions are read
from each system (hftbacktest's and NautilusTrader's in BTC, turned into lots). Only the default parameters'
path is copied (no ATR widening, no microprice, both sides per event).

A system that is not installed is left out with a message (``pip install -e '.[bench-peers]'``). The machine
is shared and noisy: compare the figures of one run.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import numpy as np
from numba import njit

from hean.commands import HeanParser, emit_json, text_out

DEFAULT_FILE = Path(__file__).resolve().parents[2] / "tests" / "data" / "binance-usdm-btcusdt-20240808.gz"
PEERS = ("hftbacktest", "nautilus_trader")
HOUR_NS = 3_600_000_000_000

# HEAN's market maker, default parameters (hean/strategies/market_maker.py PARAMS)
HALF_SPREAD, SKEW, QUOTE_LOTS, MAX_POS, REQUOTE = 1.0, 0.5, 1, 10, 1

# hean.records.EventKind / F_LAST_IN_GROUP, repeated so this module imports without the engine
_LEVEL_SET, _CLEAR, _TRADE, _TICKER = 1, 2, 3, 10
_F_LAST_IN_GROUP = 1


# ---------------------------------------------------------------------------------------------------------
# the recording, once
# ---------------------------------------------------------------------------------------------------------
def load(path: Path, fmt: str) -> tuple[np.ndarray, Any]:
    """HEAN's native events of the recording (through the conversion cache) and the reader's report."""
    from hean.feeds.cache import cached_events

    got = cached_events(path, fmt)
    return np.asarray(got.events), got.report


def count_events(ev: np.ndarray) -> dict[str, int]:
    """The recording's events by kind, and ``total``: every native record (a level set, the snapshot's clear,
    a trade, one side of a bookTicker quote)."""
    from hean.records import EventKind

    kinds = {int(k): k.name.lower() for k in EventKind}
    got = np.bincount(ev["kind"].astype(np.int64), minlength=max(kinds) + 1)
    out = {kinds.get(k, str(k)): int(n) for k, n in enumerate(got) if n}
    out["total"] = int(len(ev))
    return out


def message_times(ev: np.ndarray) -> tuple[np.ndarray, int]:
    """Each event's time for the peers: its exchange time, never before an earlier one's, plus the rank (ns) of
    its message among the messages of that same time; and the largest rank."""
    ts = np.maximum.accumulate(ev["ts_exch"])
    last = (ev["flags"] & _F_LAST_IN_GROUP) != 0
    msg = np.concatenate([[0], np.cumsum(last)[:-1]]).astype(np.int64)  # each event's message
    new = np.concatenate([[True], ts[1:] != ts[:-1]])
    first = np.maximum.accumulate(np.where(new, msg, 0))
    rank = msg - first
    return ts + rank, int(rank.max()) if len(rank) else 0


# ---------------------------------------------------------------------------------------------------------
# HEAN
# ---------------------------------------------------------------------------------------------------------
def hean_config(latency_ns: int) -> dict:
    return {
        "venues": [
            {
                "name": "sim",
                "params": {
                    "entry_latency_ns": int(latency_ns),
                    "report_latency_ns": 0,
                    "maker_fee": 0.0,
                    "taker_fee": 0.0,
                },
            }
        ]
    }


def split_recording(events: np.ndarray, symbols: Any, folder: Path) -> list[Path]:
    """The recording as two native files (``a.hev``, ``b.hev``), cut at a message's end past its middle where
    everything before was received no later than everything after: two files that chain in time, whose
    merged replay is the whole one's (``tests/test_recordings.py`` checks the fills)."""
    from hean.feeds.native import write_native
    from hean.records import F_LAST_IN_GROUP

    ts = events["ts_origin"]
    clean = np.maximum.accumulate(ts)[:-1] <= np.minimum.accumulate(ts[::-1])[::-1][1:]
    ends = (events["flags"] & F_LAST_IN_GROUP) != 0
    cuts = np.flatnonzero(clean & ends[:-1])
    cut = int(cuts[cuts >= len(events) // 2][0]) + 1
    paths = [folder / "a.hev", folder / "b.hev"]
    write_native(paths[0], events[:cut], symbols)
    write_native(paths[1], events[cut:], symbols)
    return paths


def hean_run(path: Path | list[Path], fmt: str, latency_ns: int) -> dict:
    """One ``hean.backtest`` of the market maker: wall time, the worker loop's share, orders and fills (a list
    of recordings: merged by receive time, the merge included)."""
    import hean
    import hean.research as research
    from hean.records import OrderAction

    loop_s = []
    inner = research._run_to_the_end

    def timed(*a, **k):
        t0 = time.perf_counter()
        try:
            return inner(*a, **k)
        finally:
            loop_s.append(time.perf_counter() - t0)

    research._run_to_the_end = timed
    try:
        t0 = time.perf_counter()
        rec = [str(p) for p in path] if isinstance(path, list) else str(path)
        r = hean.backtest(rec, "market_maker", format=fmt, config=hean_config(latency_ns))
        wall = time.perf_counter() - t0
    finally:
        research._run_to_the_end = inner
    action = r.orders["action"]
    return {
        "wall_s": wall,
        "loop_s": loop_s[0],
        "new": int(np.count_nonzero(action == int(OrderAction.NEW))),
        "replace": int(np.count_nonzero(action == int(OrderAction.REPLACE))),
        "cancel": int(np.count_nonzero((action == int(OrderAction.CANCEL)) | (action == int(OrderAction.CANCEL_ALL)))),
        "orders": len(r.orders),
        "fills": len(r.fills),
        "pnl": float(r.summary["pnl"]),
    }


# ---------------------------------------------------------------------------------------------------------
# hftbacktest
# ---------------------------------------------------------------------------------------------------------
def hbt_data(ev: np.ndarray, tick: float, lot: float) -> np.ndarray:
    """The native events as hftbacktest's event rows: level sets as depth events, the clear as a depth clear
    (both sides), trades by aggressor side, bookTicker sides as exchange-side rows of a kind it skips."""
    import hftbacktest as hb

    t, _ = message_times(ev)
    kind = ev["kind"]
    keep = (kind == _LEVEL_SET) | (kind == _CLEAR) | (kind == _TRADE) | (kind == _TICKER)
    ev, t, kind = ev[keep], t[keep], kind[keep]
    side = np.where(ev["side"] == 1, np.uint64(hb.BUY_EVENT), np.uint64(hb.SELL_EVENT))
    both = np.uint64(hb.EXCH_EVENT | hb.LOCAL_EVENT)
    flags = np.zeros(len(ev), np.uint64)
    m = kind == _LEVEL_SET
    flags[m] = np.uint64(hb.DEPTH_EVENT) | both | side[m]
    flags[kind == _CLEAR] = np.uint64(hb.DEPTH_CLEAR_EVENT) | both
    m = kind == _TRADE
    flags[m] = np.uint64(hb.TRADE_EVENT) | both | side[m]
    m = kind == _TICKER
    flags[m] = (
        np.uint64(103) | np.uint64(hb.EXCH_EVENT) | side[m]
    )  # 103: what hftbacktest's Binance converter gives bookTicker
    out = np.zeros(len(ev), hb.event_dtype)
    out["ev"] = flags
    out["exch_ts"] = t
    out["local_ts"] = t
    out["px"] = ev["price"] * tick
    out["qty"] = ev["qty"] * lot
    return out


def hbt_roi(ev: np.ndarray, tick: float) -> tuple[float, float]:
    """The price range of hftbacktest's vector depth: the traded prices -/+ 20 %."""
    px = ev["price"][ev["kind"] == _TRADE]
    if not len(px):
        px = ev["price"][ev["kind"] == _LEVEL_SET]
    return math.floor(px.min() * tick * 0.8), math.ceil(px.max() * tick * 1.2)


def hbt_run(data: np.ndarray, tick: float, lot: float, roi: tuple[float, float], latency_ns: int) -> dict:
    """Build hftbacktest's backtest over ``data`` and run the market maker to the end of the data."""
    import hftbacktest as hb

    t0 = time.perf_counter()
    asset = (
        hb.BacktestAsset()
        .data([data])
        .linear_asset(1.0)
        .constant_order_latency(int(latency_ns), 0)
        .risk_adverse_queue_model()
        .no_partial_fill_exchange()
        .trading_value_fee_model(0.0, 0.0)
        .tick_size(tick)
        .lot_size(lot)
        .roi_lb(roi[0])
        .roi_ub(roi[1])
        .last_trades_capacity(0)
    )
    hbt = hb.ROIVectorMarketDepthBacktest([asset])
    t1 = time.perf_counter()
    k = np.zeros(_K_N, np.int64)
    _hbt_market_maker(hbt, HALF_SPREAD, SKEW, QUOTE_LOTS, MAX_POS, REQUOTE, k)
    t2 = time.perf_counter()
    fills = int(hbt.state_values(0).num_trades)
    hbt.close()
    return {
        "wall_s": t2 - t0,
        "loop_s": t2 - t1,
        "new": int(k[_K_NEW]),
        "replace": int(k[_K_MODIFY]),
        "cancel": int(k[_K_CANCEL]),
        "orders": int(k[_K_NEW] + k[_K_MODIFY] + k[_K_CANCEL]),
        "fills": fills,
        "calls": int(k[_K_CALLS]),
    }


# hftbacktest's order status and request codes (hftbacktest.order), sides, time in force, order type
_NONE, _NEW, _PARTIAL = 0, 1, 5
_BUY, _SELL, _GTX, _LIMIT = 1, -1, 1, 0
_K_NEW, _K_MODIFY, _K_CANCEL, _K_CALLS, _K_N = 0, 1, 2, 3, 4
_END_OF_DATA, _MARKET_FEED = 1, 2


# Raw numba on purpose, as hean.bench.book._hbt_loop (an exception named in hean.jit): these drive hftbacktest's
# jitclass, which needs numba's reference counting, and are compiled per run, not cached on another library's type.
@njit
def _hbt_quote_side(hbt, side, oid, have, want, next_id, requote, qty, tick, k):
    """HEAN's ``quote_side``: move the quote ``oid`` (at ``have`` ticks, 0: none) to ``want`` (0: none);
    returns (order id, price, next order id)."""
    orders = hbt.orders(0)
    acked = False
    live = False
    if oid > 0 and orders.__contains__(oid):
        o = orders.get(oid)
        if o.req != _NONE and o.req != _NEW:
            return oid, have, next_id  # a cancel or modify is on its way: wait for its answer
        if o.req == _NEW:
            live = True  # sent, not acknowledged yet (HEAN: PENDING)
        elif o.status == _NEW or o.status == _PARTIAL:
            live = True
            acked = True
    if not live:
        have = 0  # filled, cancelled, expired (post-only that would take) or none yet
    if want == have or (want != 0 and have != 0 and abs(want - have) < requote):
        return oid, have, next_id
    if want == 0:
        if acked:
            hbt.cancel(0, oid, False)
            k[_K_CANCEL] += 1
            return oid, 0, next_id
        return oid, have, next_id  # hftbacktest takes no request before the ack: cancel it then
    if have == 0:
        if side == _BUY:
            hbt.submit_buy_order(0, next_id, want * tick, qty, _GTX, _LIMIT, False)
        else:
            hbt.submit_sell_order(0, next_id, want * tick, qty, _GTX, _LIMIT, False)
        k[_K_NEW] += 1
        return next_id, want, next_id + 1
    if acked:
        hbt.modify(0, oid, want * tick, qty, False)
        k[_K_MODIFY] += 1
        return oid, want, next_id
    return oid, have, next_id  # not acknowledged yet: move it once it is


@njit
def _hbt_market_maker(hbt, half_spread, skew, qty_lots, max_pos, requote, k):
    """HEAN's ``market_maker.on_event`` on hftbacktest: woken by every market message (``wait_next_feed``)."""
    depth = hbt.depth(0)
    tick = depth.tick_size
    lot = depth.lot_size
    qty = qty_lots * lot
    bid_id = 0
    ask_id = 0
    bid_px = 0
    ask_px = 0
    halted = 0
    next_id = 1
    while True:
        r = hbt.wait_next_feed(False, HOUR_NS)
        if r == _END_OF_DATA:
            break
        if r != _MARKET_FEED:
            continue  # an hour without a message
        k[_K_CALLS] += 1
        depth = hbt.depth(0)
        bb = depth.best_bid_tick
        ba = depth.best_ask_tick
        if bb <= 0 or ba >= 1 << 62 or ba <= bb:  # a side empty (hftbacktest's INVALID_MIN/MAX) or crossed
            if halted == 0:
                halted = 1
                orders = hbt.orders(0)
                for oid in (bid_id, ask_id):
                    if oid > 0 and orders.__contains__(oid):
                        o = orders.get(oid)
                        if o.req == _NONE and (o.status == _NEW or o.status == _PARTIAL):
                            hbt.cancel(0, oid, False)
                            k[_K_CANCEL] += 1
            continue
        halted = 0
        pos = np.int64(np.round(hbt.position(0) / lot))
        center = (bb + ba) / 2.0 - skew * pos
        bid = min(np.int64(np.floor(center - half_spread)), ba - 1)
        ask = max(np.int64(np.ceil(center + half_spread)), bb + 1)
        if pos + qty_lots > max_pos or bid <= 0:
            bid = 0
        if pos - qty_lots < -max_pos:
            ask = 0
        hbt.clear_inactive_orders(0)
        bid_id, bid_px, next_id = _hbt_quote_side(hbt, _BUY, bid_id, bid_px, bid, next_id, requote, qty, tick, k)
        ask_id, ask_px, next_id = _hbt_quote_side(hbt, _SELL, ask_id, ask_px, ask, next_id, requote, qty, tick, k)


# ---------------------------------------------------------------------------------------------------------
# NautilusTrader
# ---------------------------------------------------------------------------------------------------------
NT_INSTRUMENT = "BTCUSDT-PERP.BINANCE"


def _precision(step: Decimal) -> int:
    return max(0, -step.normalize().as_tuple().exponent)


def nt_data(ev: np.ndarray, tick: Decimal, lot: Decimal) -> tuple[list, list, list]:
    """The native events as NautilusTrader's data: one ``OrderBookDeltas`` per book message (the snapshot: a
    clear and its levels as adds, flagged F_SNAPSHOT), a ``TradeTick`` per trade, a ``QuoteTick`` per bookTicker
    quote; the last delta of a message flagged F_LAST."""
    from nautilus_trader.model.data import BookOrder, OrderBookDelta, OrderBookDeltas, QuoteTick, TradeTick
    from nautilus_trader.model.enums import AggressorSide, BookAction, OrderSide, RecordFlag
    from nautilus_trader.model.identifiers import InstrumentId, TradeId
    from nautilus_trader.model.objects import Price, Quantity

    iid = InstrumentId.from_str(NT_INSTRUMENT)
    pp, sp = _precision(tick), _precision(lot)
    tk, lt = float(tick), float(lot)
    t, _ = message_times(ev)
    cols = [c.tolist() for c in (t, ev["kind"], ev["side"], ev["price"], ev["qty"], ev["flags"], ev["order_id"])]
    f_last, f_snap = int(RecordFlag.F_LAST), int(RecordFlag.F_SNAPSHOT)
    books, trades, quotes, pending = [], [], [], []
    snap = False
    bid = None
    for ts, kind, side, px, qty, flags, oid in zip(*cols, strict=True):
        last = (flags & _F_LAST_IN_GROUP) != 0
        if kind == _CLEAR:
            snap = True
            pending.append(OrderBookDelta.clear(iid, 0, ts, ts))
        elif kind == _LEVEL_SET:
            order = BookOrder(
                OrderSide.BUY if side == 1 else OrderSide.SELL, Price(px * tk, pp), Quantity(qty * lt, sp), 0
            )
            action = (BookAction.ADD if snap else BookAction.UPDATE) if qty else BookAction.DELETE
            pending.append(
                OrderBookDelta(iid, action, order, (f_snap if snap else 0) | (f_last if last else 0), 0, ts, ts)
            )
        elif kind == _TRADE:
            aggressor = AggressorSide.BUYER if side == 1 else AggressorSide.SELLER
            trades.append(
                TradeTick(iid, Price(px * tk, pp), Quantity(qty * lt, sp), aggressor, TradeId(str(oid)), ts, ts)
            )
        elif kind == _TICKER:
            if side == 1:
                bid = (px, qty)
            elif bid is not None:
                quotes.append(
                    QuoteTick(
                        iid,
                        Price(bid[0] * tk, pp),
                        Price(px * tk, pp),
                        Quantity(bid[1] * lt, sp),
                        Quantity(qty * lt, sp),
                        ts,
                        ts,
                    )
                )
                bid = None
        if last and pending and kind in (_CLEAR, _LEVEL_SET):
            books.append(OrderBookDeltas(iid, pending))
            pending = []
            snap = False
    return books, trades, quotes


def _nt_strategy(tick: Decimal, lot: Decimal) -> Any:
    """HEAN's market maker as a NautilusTrader ``Strategy`` (a class made here: nautilus_trader is imported
    only when it is measured)."""
    from nautilus_trader.model.enums import BookType, OrderSide, OrderStatus, TimeInForce
    from nautilus_trader.model.identifiers import InstrumentId
    from nautilus_trader.model.objects import Price, Quantity
    from nautilus_trader.trading.strategy import Strategy

    pp = _precision(tick)
    tk, lt = float(tick), float(lot)
    live = (OrderStatus.INITIALIZED, OrderStatus.SUBMITTED, OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED)
    cancellable = (OrderStatus.SUBMITTED, OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED)
    waiting = (OrderStatus.PENDING_CANCEL, OrderStatus.PENDING_UPDATE)

    class HeanMarketMaker(Strategy):
        def __init__(self) -> None:
            super().__init__()
            self.iid = InstrumentId.from_str(NT_INSTRUMENT)
            self.qty = Quantity(QUOTE_LOTS * lt, _precision(lot))
            self.bid = self.ask = None  # the quotes (orders)
            self.bid_px = self.ask_px = 0  # their prices, ticks
            self.halted = 0
            self.counts = {"new": 0, "replace": 0, "cancel": 0, "fills": 0, "calls": 0}

        def on_start(self) -> None:
            self.subscribe_order_book_deltas(self.iid, BookType.L2_MBP)
            self.subscribe_trade_ticks(self.iid)

        def on_order_book_deltas(self, deltas) -> None:
            self.act()

        def on_trade_tick(self, tick) -> None:
            self.act()

        def on_order_filled(self, event) -> None:
            self.counts["fills"] += 1

        def cancel(self, order) -> None:
            if order is not None and order.status in cancellable:
                self.cancel_order(order)
                self.counts["cancel"] += 1

        def quote_side(self, side, order, have: int, want: int):
            status = None if order is None else order.status
            if status in waiting:
                return order, have
            if status not in live:
                have = 0
            if want == have or (want != 0 and have != 0 and abs(want - have) < REQUOTE):
                return order, have
            if want == 0:
                self.cancel(order)
                return order, 0
            if have == 0:
                new = self.order_factory.limit(
                    self.iid, side, self.qty, Price(want * tk, pp), time_in_force=TimeInForce.GTC, post_only=True
                )
                self.submit_order(new)
                self.counts["new"] += 1
                return new, want
            if status == OrderStatus.ACCEPTED:
                self.modify_order(order, self.qty, Price(want * tk, pp))
                self.counts["replace"] += 1
                return order, want
            return order, have

        def act(self) -> None:
            """HEAN's ``on_event``: every book message and trade."""
            self.counts["calls"] += 1
            book = self.cache.order_book(self.iid)
            bb = None if book is None else book.best_bid_price()
            ba = None if book is None else book.best_ask_price()
            if bb is None or ba is None or ba <= bb:
                if self.halted == 0:
                    self.halted = 1
                    self.cancel(self.bid)
                    self.cancel(self.ask)
                return
            self.halted = 0
            bbt, bat = round(bb.as_double() / tk), round(ba.as_double() / tk)
            pos = round(float(self.portfolio.net_position(self.iid)) / lt)
            center = (bbt + bat) / 2.0 - SKEW * pos
            bid = min(math.floor(center - HALF_SPREAD), bat - 1)
            ask = max(math.ceil(center + HALF_SPREAD), bbt + 1)
            if pos + QUOTE_LOTS > MAX_POS or bid <= 0:
                bid = 0
            if pos - QUOTE_LOTS < -MAX_POS:
                ask = 0
            self.bid, self.bid_px = self.quote_side(OrderSide.BUY, self.bid, self.bid_px, bid)
            self.ask, self.ask_px = self.quote_side(OrderSide.SELL, self.ask, self.ask_px, ask)

    return HeanMarketMaker()


def nt_run(data: tuple[list, list, list], tick: Decimal, lot: Decimal, latency_ns: int) -> dict:
    """Build a ``BacktestEngine`` over ``data`` with the market maker and run it to the end."""
    from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
    from nautilus_trader.backtest.models import FillModel, LatencyModel
    from nautilus_trader.config import LoggingConfig
    from nautilus_trader.model.currencies import BTC, USDT
    from nautilus_trader.model.enums import AccountType, BookType, OmsType
    from nautilus_trader.model.identifiers import InstrumentId, Symbol, TraderId, Venue
    from nautilus_trader.model.instruments import CryptoPerpetual
    from nautilus_trader.model.objects import Money, Price, Quantity

    iid = InstrumentId.from_str(NT_INSTRUMENT)
    instrument = CryptoPerpetual(
        iid,
        Symbol(iid.symbol.value.split("-")[0]),
        BTC,
        USDT,
        USDT,
        False,
        _precision(tick),
        _precision(lot),
        Price.from_str(str(tick)),
        Quantity.from_str(str(lot)),
        0,
        0,
        margin_init=Decimal(0),
        margin_maint=Decimal(0),
        maker_fee=Decimal(0),
        taker_fee=Decimal(0),
    )
    books, trades, quotes = data
    t0 = time.perf_counter()
    engine = BacktestEngine(
        BacktestEngineConfig(trader_id=TraderId("BENCH-001"), logging=LoggingConfig(bypass_logging=True))
    )
    engine.add_venue(
        Venue(iid.venue.value),
        OmsType.NETTING,
        AccountType.MARGIN,
        [Money(10_000_000, USDT)],
        base_currency=USDT,
        book_type=BookType.L2_MBP,
        latency_model=LatencyModel(int(latency_ns), 0, 0, 0),
        fill_model=FillModel(prob_fill_on_limit=1.0, prob_slippage=0.0, random_seed=1),
        trade_execution=True,
    )
    engine.add_instrument(instrument)
    # the book data first: the engine takes a venue's L2 book data from the type of a list's first element
    engine.add_data(books, sort=False)
    engine.add_data(trades, sort=False)
    engine.add_data(quotes, sort=True)
    strategy = _nt_strategy(tick, lot)
    engine.add_strategy(strategy)
    t1 = time.perf_counter()
    engine.run()
    t2 = time.perf_counter()
    c = strategy.counts
    engine.dispose()
    return {
        "wall_s": t2 - t0,
        "loop_s": t2 - t1,
        "new": c["new"],
        "replace": c["replace"],
        "cancel": c["cancel"],
        "orders": c["new"] + c["replace"] + c["cancel"],
        "fills": c["fills"],
        "calls": c["calls"],
    }


# ---------------------------------------------------------------------------------------------------------
# the bench
# ---------------------------------------------------------------------------------------------------------
def models(latency_ns: int, roi: tuple[float, float] | None = None) -> dict[str, str]:
    """One line per system: the models of its backtest here."""
    lat = f"{latency_ns / 1e6:g} ms"
    vec = f" [{roi[0]:g}, {roi[1]:g}]" if roi else ""
    return {
        "HEAN": f"L2 book, risk-averse queue (prints only), partial fills, entry latency {lat}, reports 0, feed "
        "latency 0, zero fees, default risk limits",
        "hftbacktest": f"ROI vector depth{vec}, risk-averse queue (prints; depth drops shorten it), no partial "
        f"fills, order latency {lat} / response 0, feed latency 0, zero fees",
        "nautilus_trader": f"L2_MBP book, trade execution, no queue position, LatencyModel {lat}, no slippage, "
        "feed latency 0, zero fees",
    }


def _peer_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def check_peers(peers: list[str]) -> None:
    """ValueError naming the peers this bench does not know."""
    unknown = sorted(set(peers) - set(PEERS))
    if unknown:
        raise ValueError(f"unknown peers {', '.join(unknown)} (known: {', '.join(PEERS)})")


def _system_runs(system: str, path: Path, fmt: str, latency_ns: int, halves: list[Path]) -> tuple[dict, dict]:
    """The runs one system's process serves (name -> a call returning one run's figures), with its data made
    (untimed), and what the parent reports of it (hftbacktest's price range). ImportError: not installed."""
    if system == "HEAN":
        return {
            "HEAN": lambda: hean_run(path, fmt, latency_ns),
            # the same events as two files merged by receive time (the k-way merge into the run's folder included)
            "HEAN merged": lambda: hean_run(halves[::-1], "native", latency_ns),
        }, {}
    ev, report = load(path, fmt)
    sym = report.symbols[0]
    tick, lot = Decimal(str(sym.tick_size)), Decimal(str(sym.lot_size))
    if system == "hftbacktest":
        import hftbacktest  # noqa: F401

        roi = hbt_roi(ev, float(tick))
        data = hbt_data(ev, float(tick), float(lot))
        return {system: lambda: hbt_run(data, float(tick), float(lot), roi, latency_ns)}, {"roi": roi}
    if system == "nautilus_trader":
        import nautilus_trader  # noqa: F401

        nt = nt_data(ev, tick, lot)
        return {system: lambda: nt_run(nt, tick, lot, latency_ns)}, {}
    raise ValueError(f"unknown peer {system!r} (one of {', '.join(PEERS)})")


def _serve(system: str, path: str, fmt: str, latency_ns: int, halves: list[str], conn: Any) -> None:
    """A system's own process: make its data, say so, then run what the parent names, one run per message,
    until it sends None. Every answer is ``(status, value)``."""
    try:
        runs, info = _system_runs(system, Path(path), fmt, latency_ns, [Path(h) for h in halves])
    except ImportError as e:
        conn.send(("skip", f"not measured (not installed: {e.name}; pip install -e '.[bench-peers]')"))
        return
    except Exception as e:
        conn.send(("skip", f"not measured (failed: {type(e).__name__}: {e})"))
        return
    conn.send(("ready", {**info, "runs": list(runs)}))
    while (name := conn.recv()) is not None:
        try:
            conn.send(("ok", runs[name]()))
        except Exception as e:  # reported; the process goes on serving (the parent drops the system)
            conn.send(("failed", f"{type(e).__name__}: {e}"))


class _SystemProcess:
    """One system's process (:func:`_serve`) and the pipe to it.

    Why a process each: libraries and heaps of one system slow another in a shared process. With
    NautilusTrader's data objects and one of its runs in the bench's process, HEAN's backtest took ~6 ms more
    (36.8 -> 42.8 ms, its worker loop 30.6 -> 33.7 ms; not the garbage collector: the same with it off), so
    each system is measured in a process of its own, spawned (nothing inherited), the rounds still
    interleaved: one system runs at a time while the others wait on their pipes."""

    def __init__(self, ctx: Any, system: str, path: Path, fmt: str, latency_ns: int, halves: list[Path]) -> None:
        self.system = system
        self.conn, child = ctx.Pipe()
        args = (system, str(path), fmt, latency_ns, [str(h) for h in halves], child)
        self.proc = ctx.Process(target=_serve, args=args, name=f"hean-bench-{system}", daemon=True)
        self.proc.start()
        child.close()

    def answer(self) -> tuple[str, Any]:
        """The process's next answer; ``("failed", why)`` when it died instead."""
        try:
            return self.conn.recv()
        except (EOFError, OSError):
            return self._died()

    def run(self, name: str) -> tuple[str, Any]:
        """One run of ``name`` in the process: its answer."""
        try:
            self.conn.send(name)
        except OSError:  # (BrokenPipeError included) the process is gone
            return self._died()
        return self.answer()

    def _died(self) -> tuple[str, str]:
        self.proc.join(timeout=5)
        return "failed", f"its process died (exit code {self.proc.exitcode})"

    def close(self) -> None:
        """Stop the process: asked to (a dead one cannot be), then killed by its pid if it has not left within
        30 s."""
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.proc.join(timeout=30)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.conn.close()


def measure(
    path: Path, fmt: str, rounds: int, peers: list[str], latency_ns: int, log: Callable[[str], None] = lambda s: None
) -> dict:
    """Every figure: each system in a process of its own (:class:`_SystemProcess`), the systems interleaved in
    each of ``rounds`` rounds after one untimed run of each."""
    import multiprocessing

    check_peers(peers)
    ev, report = load(path, fmt)
    if len(report.symbols) != 1:
        raise ValueError(f"{path}: {len(report.symbols)} symbols; the bench takes a recording of one")
    # first, before the other processes exist: the conversion has the machine to itself
    converted = conversion(path, fmt, rounds) if fmt != "native" else None
    counts = count_events(ev)
    n = counts["total"]
    _, max_rank = message_times(ev)
    split_dir = tempfile.TemporaryDirectory(prefix="hean-bench-split-")
    halves = split_recording(np.asarray(ev), report.symbols, Path(split_dir.name))
    del ev
    ctx = multiprocessing.get_context("spawn")
    procs = [_SystemProcess(ctx, system, path, fmt, latency_ns, halves) for system in ("HEAN", *peers)]
    try:
        log("  building each system's data in its own process (not timed)")
        runs: dict[str, _SystemProcess] = {}
        skipped: dict[str, str] = {}
        roi = None
        for sp in procs:
            status, got = sp.answer()
            if status != "ready":
                if sp.system == "HEAN":
                    raise RuntimeError(f"HEAN could not be measured: {got}")
                skipped[sp.system] = got if status == "skip" else f"not measured (failed: {got})"
                continue
            roi = got.get("roi", roi)
            runs.update({name: sp for name in got["runs"]})
        for name, sp in list(runs.items()):
            log(f"  {name}: first run (untimed: compiles, caches, imports)")
            status, got = sp.run(name)
            if status != "ok":
                if name.startswith("HEAN"):
                    raise RuntimeError(f"{name} failed: {got}")
                skipped[name] = f"not measured (failed: {got})"
                del runs[name]
        results: dict[str, list[dict]] = {name: [] for name in runs}
        for i in range(rounds):
            for name, sp in runs.items():
                status, got = sp.run(name)
                if status != "ok":
                    raise RuntimeError(f"{name} failed in round {i + 1}: {got}")
                results[name].append(got)
            log(
                f"  round {i + 1}/{rounds}: "
                + ", ".join(f"{k} {v[-1]['wall_s'] * 1e3:.0f} ms" for k, v in results.items())
            )
    finally:
        for sp in procs:
            sp.close()
        split_dir.cleanup()
    versions = {"HEAN": _peer_version("hean"), **{peer: _peer_version(peer) for peer in peers}}
    systems = []
    for name, rs in results.items():
        wall = statistics.median(r["wall_s"] for r in rs)
        loop = statistics.median(r["loop_s"] for r in rs)
        last = rs[-1]
        same = all({k: r[k] for k in ("orders", "fills")} == {k: last[k] for k in ("orders", "fills")} for r in rs)
        systems.append(
            {
                "system": name,
                "version": versions.get(name),
                "ns_per_event": wall / n * 1e9,
                "events_per_s": n / wall,
                "loop_ns_per_event": loop / n * 1e9,
                "wall_s": [r["wall_s"] for r in rs],
                "loop_s": [r["loop_s"] for r in rs],
                **{k: last[k] for k in ("orders", "new", "replace", "cancel", "fills")},
                "same_every_round": same,
                "models": models(latency_ns, roi)[name.split()[0]],
            }
        )
    hean_ns = systems[0]["ns_per_event"]
    for s in systems:
        s["ratio_to_hean"] = s["ns_per_event"] / hean_ns
    return {
        "conversion": converted,
        "file": str(path),
        "events": counts,
        "rounds": rounds,
        "latency_ns": latency_ns,
        "peer_time_tiebreak_max_ns": max_rank,
        "systems": systems,
        "skipped": skipped,
    }


def conversion(path: Path, fmt: str, rounds: int) -> dict:
    """The recording converted to native events, uncached (what a first replay pays): the first conversion in
    this process apart (it also loads the parsers' compiled kernels), then ``rounds`` more; their median
    lines/s and events/s."""
    from hean.feeds import load_events

    times = []
    for _ in range(rounds + 1):
        t0 = time.perf_counter()
        events, report = load_events(path, fmt)
        times.append(time.perf_counter() - t0)
    dt = statistics.median(times[1:])
    return {"lines": report.lines, "events": len(events), "first_s": times[0], "s": times[1:],
            "lines_per_s": report.lines / dt, "events_per_s": len(events) / dt}  # fmt: skip


def print_report(r: dict, out: IO[str] | None = None) -> None:
    """The table, to ``out`` (stdout by default)."""
    out = out or sys.stdout
    ev = r["events"]
    names = {"level_set": "level sets", "trade": "trades", "ticker": "quote sides"}
    parts = ", ".join(f"{ev[k]:,} {names.get(k, k.replace('_', ' '))}" for k in ev if k != "total")
    print(
        f"hean bench backtest: {Path(r['file']).name}, {ev['total']:,} events ({parts}); order latency "
        f"{r['latency_ns'] / 1e6:g} ms; medians of {r['rounds']} interleaved rounds",
        file=out,
    )
    head = (
        f"  {'system':<24} {'ns/event':>9} {'events/s':>9} {'loop ns/ev':>10} {'orders':>7} {'new/repl/canc':>15} "
        f"{'fills':>6} {'vs HEAN':>8}"
    )
    print(head, file=out)
    for s in r["systems"]:
        name = s["system"] + (f" {s['version']}" if s.get("version") and s["system"] != "HEAN" else "")
        split = f"{s['new']}/{s['replace']}/{s['cancel']}"
        figures = (
            f"{s['ns_per_event']:>9,.0f} {s['events_per_s'] / 1e6:>8.2f}M {s['loop_ns_per_event']:>10,.0f} "
            f"{s['orders']:>7,} {split:>15} {s['fills']:>6,} {s['ratio_to_hean']:>7.2f}x"
        )
        print(f"  {name:<24} {figures}", file=out)
    for name, why in r["skipped"].items():
        print(f"  {name}: {why}", file=out)
    print("  models:", file=out)
    for s in r["systems"]:
        print(f"    {s['system']}: {s['models']}", file=out)
    c = r.get("conversion")
    if c:
        print(
            f"  JSON to native (hean.feeds.load_events, uncached: a first replay): {c['lines']:,} lines in "
            f"{statistics.median(c['s']) * 1e3:.0f} ms = {c['lines_per_s'] / 1e6:.2f}M lines/s, "
            f"{c['events_per_s'] / 1e6:.1f}M events/s (median of {len(c['s'])}; the process's first "
            f"conversion, which also loads the parsers' kernels: {c['first_s'] * 1e3:.0f} ms)",
            file=out,
        )
    if not all(s["same_every_round"] for s in r["systems"]):
        print("  note: orders or fills differed between rounds (the last round's are shown)", file=out)


def main(argv: list[str] | None = None) -> int:
    p = HeanParser(
        prog="hean bench backtest", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--file", default=str(DEFAULT_FILE), help="the recording (default: the shared Binance USD-M one)")
    p.add_argument("--format", default="binance-usdm", help="its format (hean convert --help), default binance-usdm")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds, the systems interleaved in each (default 3)")
    p.add_argument(
        "--peers",
        default=",".join(PEERS),
        help=f"peers to run beside HEAN, comma-separated ('' for none; default {','.join(PEERS)})",
    )
    p.add_argument(
        "--latency-us", type=float, default=1000.0, help="order entry latency in microseconds (default 1000)"
    )
    p.add_argument("--json", metavar="FILE", help="write the results as JSON ('-': to stdout, the report to stderr)")
    args = p.parse_args(argv)
    path = Path(args.file)
    if not path.exists():
        print(f"hean bench backtest: {path} not found (--file)", file=sys.stderr)
        return 2
    if args.rounds < 1:
        print("hean bench backtest: --rounds must be >= 1", file=sys.stderr)
        return 2
    peers = [s.strip() for s in args.peers.split(",") if s.strip()]
    try:
        check_peers(peers)
    except ValueError as e:
        print(f"hean bench backtest: {e}", file=sys.stderr)
        return 2
    out = text_out(args.json)  # with --json -, stdout is the JSON alone

    def log(line: str) -> None:
        print(line, file=out, flush=True)

    res = measure(path, args.format, args.rounds, peers, int(round(args.latency_us * 1000)), log)
    print_report(res, out)
    if args.json:
        emit_json(args.json, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
