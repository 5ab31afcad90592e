"""The book stage on an order-by-order (L3) feed: the L3 book of :mod:`hean.stages.l3book` behind the same
BOOK_STATE records, depth entries and tops the L2 book stage (:mod:`hean.stages.book`) publishes.

Why a stage of its own rather than a branch in the L2 stage: the L2 book's loop must not pay, per event, for
a feed it is not running. The engine picks one of the two declarations when it assembles the pipeline
(:func:`hean.stages.registry.pipeline_for`: :data:`BOOK_L3` when ``feed.l3``, which
:func:`hean.engine.build.prepare_replay` sets when the recording holds L3 events -- LOBSTER, Databento MBO);
both are named ``book``, take ``events`` and publish ``states``, so nothing downstream can tell them apart.

Per event (:func:`l3_book_on_event`): L3_* and CLEAR go to the L3 book, which aggregates into its L2 book
(``book.l2``: the states, tops and depth are read from it exactly as from the L2 stage's book); every other
kind (LEVEL_SET, TRADE, OUT_OF_SYNC, TICKER) goes to the L2 kernel over that same L2 book -- so a replay
merging an L3 recording with an L2 one (each symbol its own) books both. A state is published, as the L2
stage does, after each consistent group (F_LAST_IN_GROUP: a QUOTE state), each trade (a TRADE, or an
L3_EXECUTE of a known order: a TRADE state, also when it ends its group -- so ``on_trade`` and trade-driven
indicators see executions) and each OUT_OF_SYNC (a STATUS state). Every state carries the top of book as it
stands after its event: the last state of an exchange message is its consistent book.

Capacity: the order and level tables are sized once, from ``[book]`` ``l3_orders`` / ``l3_levels``, which the
engine fills in from the recording when they are 0 (:func:`l3_capacity`). An add the tables cannot hold is
an error, never a crash: counted, and the symbol is stale (F_STALE) until its next snapshot. The errors by
kind are the stage's telemetry counters (:data:`ERROR_COUNTERS`, named in its telemetry block) and the run
summary's ``book_errors``.
"""

from __future__ import annotations

import weakref
from typing import NamedTuple

import numpy as np

from hean.atomics import store_relaxed
from hean.jit import entry, kernel
from hean.records import BOOK_STATE, MARKET_EVENT, BookStateKind, EventKind
from hean.stages.book import (
    ERR_OVERFLOW,
    ERR_QTY,
    ERR_SIDE,
    ERR_SYMBOL,
    H_AGE_EVENTS,
    book_on_event,
    book_tables,
    publish_state,
)
from hean.stages.declare import Stage, Stream
from hean.stages.depth import DW_LEVELS
from hean.stages.l3book import (
    ERR_DUPLICATE,
    ERR_FULL,
    ERR_UNKNOWN_ORDER,
    L3Book,
    l3_on_event,
    l3_order,
    make_l3_book,
)
from hean.stages.ports import age, slot
from hean.stages.trades import TradeStats
from hean.telemetry.block import C_USER_BASE

__all__ = [
    "BOOK_L3",
    "ERROR_COUNTERS",
    "L3BookStage",
    "book_errors",
    "l3_book_batch",
    "l3_book_on_event",
    "l3_book_tables",
    "l3_capacity",
    "l3_table_sizes",
]

_ADD = int(EventKind.L3_ADD)
_MODIFY = int(EventKind.L3_MODIFY)
_DELETE = int(EventKind.L3_DELETE)
_EXECUTE = int(EventKind.L3_EXECUTE)
_CLEAR = int(EventKind.CLEAR)
_Q_TRADE = int(BookStateKind.TRADE)

# the stage's telemetry counters (C_USER_BASE + i): L3Book.errors[-status] of each status, in this order
ERROR_COUNTERS = ("unknown_order", "duplicate_order", "table_full", "levels_lost", "bad_symbol", "bad_side",
                  "bad_qty")  # fmt: skip
_ERROR_STATUS = np.array([ERR_UNKNOWN_ORDER, ERR_DUPLICATE, ERR_FULL, ERR_OVERFLOW, ERR_SYMBOL, ERR_SIDE, ERR_QTY],
                         np.int64)  # fmt: skip

_CHUNK = 1 << 22  # events l3_capacity reads at a time
MIN_ORDERS = 1024  # the smallest order table sized from a recording (and the headroom above its estimate)


class L3BookStage(NamedTuple):
    """The L3 book stage's state: :class:`hean.stages.book.BookStage` with an L3 book in place of the L2 one."""

    book: L3Book
    trades: TradeStats
    tops: object  # hean.stages.tops.VenueTops: a view shared with the router (written here)
    venue_of: np.ndarray  # int64[n_symbols]: each symbol's venue
    out: np.ndarray  # BOOK_STATE[1]: the state l3_book_on_event writes
    stale_ns: np.ndarray  # int64[1]: a book older than this is stale (0: off)
    depth: np.ndarray  # int64[rows, 2 + 4N]: the depth beside each state published (hean.stages.depth)
    published: np.ndarray  # int64[1]: states published (the states rings' sequence)
    status: np.ndarray  # int64[len(ERROR_COUNTERS)]: the status code each telemetry counter counts
    instrument_of: np.ndarray  # int64[n_symbols]: the instrument each symbol's book quotes (hean.stages.book)


@kernel(forceinline=True)
def l3_book_on_event(b, stats, ev, out, k, stale_ns):
    """Apply ``ev`` to L3 book ``b`` and maybe publish one BOOK_STATE into ``out[k]``; returns 1 when it did.

    L3_* and CLEAR: :func:`hean.stages.l3book.l3_on_event`; anything else: the L2 stage's kernel over the L3
    book's own L2 book (module docstring). A symbol out of range is counted and ignored."""
    kind = ev.kind
    if (kind >= _ADD and kind <= _EXECUTE) or kind == _CLEAR:
        sym = ev.symbol
        if sym < 0 or sym >= b.n_sym[0]:
            b.errors[-ERR_SYMBOL] += 1
            return 0
        if kind != _EXECUTE:
            return l3_on_event(b, stats, ev, out, k, stale_ns)
        side, _px, _q = l3_order(b, ev.order_id)
        if l3_on_event(b, stats, ev, out, k, stale_ns) == 0:
            return 0
        if side != 0:  # an execution of a known order is a trade, also when it ends its group
            out[k].kind = _Q_TRADE
        return 1
    return book_on_event(b.l2, stats, ev, out, k, stale_ns)


@kernel(forceinline=True, error_model="numpy")
def l3_book_batch(B, src, states, start, n, tm, t0):
    """:func:`hean.stages.book.book_batch` over the L3 book: market events in, a book state per consistent
    group (and per trade) out, with its depth entry first when a strategy reads depth."""
    published = 0
    stale_ns = B.stale_ns[0]  # once per batch
    deep = B.depth.shape[1] > DW_LEVELS
    for j in range(n):
        ev = slot(src, start + j)
        age(tm.hists[H_AGE_EVENTS], t0, ev.ts_origin)
        if l3_book_on_event(B.book, B.trades, ev, B.out, 0, stale_ns):
            published += publish_state(B, B.book.l2, states, deep)
    return published


@kernel(forceinline=True, error_model="numpy")
def l3_book_view(B, tm, now):
    """The book's errors by kind into the stage's telemetry counters (at every heartbeat and at the end)."""
    for i in range(B.status.shape[0]):
        store_relaxed(tm.counters, C_USER_BASE + i, B.book.errors[-B.status[i]])


def book_errors(state) -> dict[str, int]:
    """The errors by kind (:data:`ERROR_COUNTERS`) of a book stage's state that happened; {} for the L2 stage."""
    if not isinstance(state, L3BookStage):
        return {}
    errors = state.book.errors
    return {n: int(errors[-st]) for n, st in zip(ERROR_COUNTERS, _ERROR_STATUS, strict=True) if errors[-st]}


@entry(error_model="numpy")
def _any_l3(events):
    """Is any event an L3 kind? One pass that stops at the first (every backtest asks: 0.3 ms for 600k L2
    events, where numpy's masks over the strided kind column took 3.5 ms)."""
    for i in range(events.shape[0]):
        k = events[i].kind
        if k >= _ADD and k <= _EXECUTE:
            return True
    return False


def l3_capacity(events: np.ndarray) -> tuple[int, int] | None:
    """``(orders, levels)`` the L3 tables need for ``events`` (MARKET_EVENTs), or None when there is no L3
    event in them (an L2 recording).

    Orders: the peak of the running count of adds less deletes (and modifies to 0), plus a quarter and
    :data:`MIN_ORDERS` of headroom. It is an upper bound of the orders resting at once on a consistent
    recording -- an order emptied by a cancel or an execution is not subtracted (LOBSTER says "delete" only
    for some), nor are the orders a CLEAR removes -- so nothing a consistent recording adds is lost. Levels:
    as many (a level holds at least one order). Each order of capacity costs about 250 bytes (its slot, a
    level's, their hash maps) in the book stage and as much in the venue. One pass of numpy over the kinds,
    no book."""
    if not events.flags.writeable:  # a mapped recording: its contents cannot change under this process
        hit = _capacities.get(id(events))
        if hit is not None and hit[0]() is events:
            return hit[1]
    cap = _l3_capacity(events)
    if not events.flags.writeable:
        if len(_capacities) >= _CAPACITIES_MAX:
            _capacities.pop(next(iter(_capacities)))
        _capacities[id(events)] = (weakref.ref(events), cap)
    return cap


# l3_capacity's answers for read-only event arrays, by id (the weak reference tells a reused id): a sweep's
# backtests of one mapped recording scan its 38 MB (~2 ms, bound by memory) once, not once per backtest.
_capacities: dict[int, tuple[weakref.ref, tuple[int, int] | None]] = {}
_CAPACITIES_MAX = 8


def _l3_capacity(events: np.ndarray) -> tuple[int, int] | None:
    if not len(events) or not _any_l3(events):
        return None  # (an L2 recording: told by one look at the kinds)
    chunks = [events[i : i + _CHUNK] for i in range(0, len(events), _CHUNK)]  # a busy day: 10^8 events
    peak = running = 0
    for part in chunks:
        kind = part["kind"]
        step = (kind == _ADD).astype(np.int64)
        step -= kind == _DELETE
        step -= (kind == _MODIFY) & (part["qty"] == 0)
        total = np.cumsum(step)
        if len(total):
            peak = max(peak, running + int(total.max()))
            running += int(total[-1])
    orders = peak + peak // 4 + MIN_ORDERS
    return orders, orders


def l3_table_sizes(table: dict) -> tuple[int, int]:
    """``(orders, levels)`` of the L3 tables from a ``[book]`` table (0 or absent: :data:`MIN_ORDERS`; levels
    default to the orders: a level holds at least one order)."""
    orders = int(table.get("l3_orders", 0)) or MIN_ORDERS
    return orders, int(table.get("l3_levels", 0)) or orders


def l3_book_tables(
    n_symbols: int,
    *,
    window: int = 4096,
    overflow: int = 8192,
    stale_ns: int = 0,
    vwap_window_ns: int = 60_000_000_000,
    trades_capacity: int = 4096,
    l3_orders: int = 0,
    l3_levels: int = 0,
):
    """``[book]`` on an L3 feed: the L2 stage's keys (:func:`hean.stages.book.book_tables`) size the aggregated
    L2 book; ``l3_orders`` and ``l3_levels`` the order and level tables (0: :data:`MIN_ORDERS`; the engine
    fills them in from the recording)."""
    _, trades = book_tables(n_symbols, window=16, overflow=1, stale_ns=stale_ns, vwap_window_ns=vwap_window_ns,
                            trades_capacity=trades_capacity, l3_orders=l3_orders, l3_levels=l3_levels)  # fmt: skip
    orders, levels = l3_table_sizes({"l3_orders": l3_orders, "l3_levels": l3_levels})
    book = make_l3_book(n_symbols, orders, levels, window=window, overflow=overflow)
    return book, trades


def make_l3_book_stage(ctx) -> L3BookStage:
    """The L3 book stage from the configuration's ``[book]`` table (a small stand-in where it does not run)."""
    table = ctx.kwargs("book", dict(ctx.cfg.book), l3_book_tables) if ctx.real else {"l3_orders": 1, "window": 16,
                                                                                        "overflow": 1}  # fmt: skip
    book, trades = ctx.call("book", l3_book_tables, len(ctx.symbols), **table)
    stale = np.array([int(table.get("stale_ns", 0))], np.int64)
    depth = ctx.views["depth"] if ctx.real else np.zeros((1, DW_LEVELS), np.int64)
    return L3BookStage(book, trades, ctx.views["tops"], ctx.venue_of, np.zeros(1, BOOK_STATE), stale, depth,
                       np.zeros(1, np.int64), _ERROR_STATUS.copy(), ctx.instrument_of)  # fmt: skip


BOOK_L3 = Stage(
    name="book",
    module=__name__,
    batch="l3_book_batch",
    inputs=(Stream("events", MARKET_EVENT),),
    outputs=(Stream("states", BOOK_STATE),),
    build=make_l3_book_stage,
    hists=("service", "age:events"),
    view="l3_book_view",
    user_counters=ERROR_COUNTERS,
    config="book",
)
