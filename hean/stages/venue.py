"""Simulated venues: a matching engine per venue against that venue's book from the feed.

Each venue keeps its own L2 book (:mod:`hean.stages.book`, one book row per (venue, symbol)) built from the
MARKET_EVENTs the engine feeds it, and matches HEAN's orders against it:

- **Marketable orders** (MARKET, or LIMIT at or through the opposite best) take the visible levels from the
  touch outward, one fill per level, up to the limit price; what was taken is removed from the venue's copy
  of the level until the feed next sets that level (so two orders cannot take the same lots). The rest of a
  MARKET or IOC order expires; a FOK order that the visible depth cannot fill entirely expires unfilled; a
  GTC limit rests. POST_ONLY orders that would take are rejected.
- **Resting orders** fill only from TRADE prints, after a queue-position model: on joining a price the order
  has ``queue_ahead`` = the visible quantity at that price; trades at the order's price reduce
  ``queue_ahead`` first and fill the order only with what is left of the print; a trade *through* the price
  (a sell print below a resting bid) means the level was emptied, so the order fills (up to the print's
  size). One print's size is shared by all resting orders. A replace that changes the price or increases
  the quantity loses the queue position. What a *decrease* of the level that no print explains does to
  ``queue_ahead`` is the venue's ``queue_model`` (below).
- **Queue models** (``queue_model`` per venue; the queue-position literature as hftbacktest implements it):

  - ``"risk_averse"`` (the default): a decrease is never credited -- L2 data cannot tell a cancellation
    ahead of the order from one behind it, so the careful assumption is "behind": fills are never
    optimistic, only late;
  - the probabilistic models: when the venue's copy of a level with resting orders of ours at it goes from
    ``prev`` to ``new`` lots, the part not explained by prints is ``c = prev - new - traded`` (``traded``:
    the lots printed at the price since the level was last set, which already moved the order up); with
    ``F`` = the order's ``queue_ahead`` and ``B = max(prev - traded - F, 0)`` the lots behind it (hftbacktest
    takes ``prev - F``, counting the printed lots as behind), the probability that a cancelled lot was
    *behind* the order is

    ========== ============================================ ==================================
    model      p(F, B)                                      hftbacktest
    ========== ============================================ ==================================
    power      B^n / (B^n + F^n)                            PowerProbQueueFunc(n)
    power2     B^n / (F + B)^n                              PowerProbQueueFunc2(n)
    power3     1 - (F / (F + B))^n                          PowerProbQueueFunc3(n)
    log        ln(1 + B) / (ln(1 + B) + ln(1 + F))          LogProbQueueFunc
    log2       ln(1 + B) / ln(1 + F + B)                    LogProbQueueFunc2
    ========== ============================================ ==================================

    (``n`` = ``queue_power``, default 3), and the order is credited ``c - B`` lots when ``p c >= B`` (more
    expected behind than there is: the rest came from ahead), else ``floor(c - p c)`` -- in float64,
    rounded *down*, never more than ``c`` nor than ``F``. An increase adds behind the order (no change).
    The decrease is measured against the venue's own copy of the level, which our own takes have already
    reduced (see marketable orders): lots we took are never counted as cancellations. A print reported
    *after* the level change that it caused is counted twice (as a cancellation, then as a print), as in
    hftbacktest: these models are only as good as the recording's order of prints and depth updates.
- **Latency**: an order sent at ``now`` reaches the venue at ``now + entry_latency_ns[v]``; a report made
  at venue time ``t`` is released to HEAN at ``t + report_latency_ns[v]``. Market events are applied at the
  ``now`` they are passed with, so an order is matched against the book as it was when it *arrived*.
  Orders in flight are processed before each market event that is later than their arrival. With a
  ``latency_file`` the two latencies come from recorded order round trips instead, interpolated at the send
  and report times (:mod:`hean.stages.latency`); a venue's orders and reports stay in FIFO order.
- **Fees**: ``maker_fee``/``taker_fee`` per venue, a fraction of notional (negative = rebate): fee =
  price * qty * value_per_tick_lot * rate.
- **Rejects**: ``reject_prob[v]`` rejects that fraction of NEW orders (reason VENUE_REJECT), drawn from a
  seeded generator so a run is reproducible; malformed orders are rejected with their reason.

Reports per order: ACK when accepted, then PARTIAL_FILL/FILL per fill, EXPIRED for an IOC/MARKET remainder;
CANCELED / REPLACED / CANCEL_REJECTED for requests; REJECTED. ``qty`` is the fill size (0 otherwise),
``leaves_qty``/``cum_qty`` the order's after the report, ``liquidity`` 1 maker / 2 taker.

Calls (all return how many EXEC_REPORTs they wrote to ``out[k:]``; each writes at most
``min(VENUE_MAX_REPORTS, len(out) - k)``, keeping the rest queued for the next call -- poll until 0):

- :func:`venue_on_order` -- an ORDER from the router (``order.venue`` names the venue)
- :func:`venue_on_event` -- a MARKET_EVENT of venue ``v``
- :func:`venue_poll` -- time passes: orders arrive, reports whose latency elapsed are released
- :func:`venue_replay` -- a batch of MARKET_EVENTs of venue ``v``, each at its recorded ``ts_origin``

Each call is a composition of four steps, public for a loop that wants one copy of each compiled into it
(the engine's): :func:`venue_accept` (an order enters flight), :func:`venue_advance` (time passes: arrived
orders match), :func:`venue_apply_event` (a market event) and :func:`venue_release` (due reports out).

``venue.tops`` is a :class:`hean.stages.tops.VenueTops` the venue keeps current (its only writer): the
router's view of these venues, for a backtest that routes against them directly.

Usage (the engine's venue stage, or a backtest)::

    vn = make_venue(n_symbols, n_venues, entry_latency_ns=..., report_latency_ns=..., taker_fee=...)
    n = venue_on_event(vn, v, market_event, now_ns, out, k)   # venue v's feed
    n = venue_on_order(vn, order_from_router, now_ns, out, k)  # order.venue picks the venue
    n = venue_poll(vn, now_ns, out, k)                         # until 0: latency-delayed reports
    router_tops = vn.tops                                      # what the router routes against

Every kernel here is a :func:`hean.jit.kernel`: no reference counting (none allocates), no Python wrapper.
"""

from __future__ import annotations

import math
import os
from typing import NamedTuple

import numpy as np

from hean.atomics import store_relaxed
from hean.jit import kernel
from hean.records import (
    A_CANCEL,
    A_CANCEL_ALL,
    A_NEW,
    A_REPLACE,
    EXEC_REPORT,
    F_POST_ONLY,
    MARKET_EVENT,
    N_REASONS,
    ORDER,
    R_BAD_PRICE,
    R_BAD_QTY,
    R_BAD_SIDE,
    R_BAD_SYMBOL,
    R_BAD_TYPE,
    R_BAD_VENUE,
    R_BOOK_STALE,
    R_POST_ONLY_CROSS,
    R_TABLE_FULL,
    R_TOO_LATE,
    R_UNKNOWN_ORDER,
    R_VENUE_REJECT,
    T_LIMIT,
    T_MARKET,
    X_ACK,
    X_CANCEL_REJECTED,
    X_CANCELED,
    X_EXPIRED,
    X_FILL,
    X_PARTIAL,
    X_REJECTED,
    X_REPLACED,
    EventKind,
    TimeInForce,
)
from hean.rings.layout import MASK
from hean.rings.spsc import available
from hean.stages.book import (
    L2_WINDOW,
    NO_PRICE,
    OK,
    L2Book,
    l2_best_ask,
    l2_best_bid,
    l2_clear,
    l2_level_qty,
    l2_next_level,
    l2_set_level,
    make_l2_book,
)
from hean.stages.declare import F_LOCKSTEP, Stage, Stream, parameters_of, per_item
from hean.stages.latency import latency_tables, recorded_latency
from hean.stages.ports import BATCH, age, goal_if_waiting, out, release_to, room, service, stage_clock
from hean.stages.simclock import NO_BUY, NO_SELL, NOTHING_DUE, SC_REACH, set_reach, set_venue_next
from hean.stages.tops import MAX_VENUES, VenueTops, make_venue_tops, tops_set
from hean.telemetry.block import C_EVENTS_IN, tm_add

__all__ = [
    "VENUE_MAX_REPORTS",
    "Venue",
    "make_venue",
    "venue_accept",
    "venue_advance",
    "venue_apply_event",
    "venue_on_event",
    "venue_on_order",
    "venue_pass",
    "venue_poll",
    "venue_release",
    "venue_replay",
]

VENUE_MAX_REPORTS = 64  # most EXEC_REPORTs one call writes
MAKER, TAKER = 1, 2  # EXEC_REPORT.liquidity

_LEVEL_SET = int(EventKind.LEVEL_SET)
_CLEAR = int(EventKind.CLEAR)
_TRADE = int(EventKind.TRADE)
_OUT_OF_SYNC = int(EventKind.OUT_OF_SYNC)
_CLOCK = int(EventKind.CLOCK)
_TICKER = int(EventKind.TICKER)
_IOC, _FOK = int(TimeInForce.IOC), int(TimeInForce.FOK)

# g[] indices
G_RNG = 0  # generator state
G_SEQ = 1  # seq of the last report
G_NREST = 2  # resting orders
G_TOPS = 3  # 1: keep ``tops`` current (a router of the library reads it); 0: the engine's stage, whose router
#             reads the book stage's view -- nobody reads these, so no seqlocked write per level set
G_LEN = 4
# counters[] indices
C_ORDERS = 0  # orders received
C_FILLS = 1
C_FILLED_LOTS = 2
C_REJECTS = 3
C_CANCELS = 4
C_EVENTS = 5  # market events applied
C_TRADES = 6  # TRADE events seen
C_REPORTS = 7  # reports released
C_DROPPED = 8  # reports lost: the outbound queue was full
C_IN_FULL = 9  # orders rejected: the inbound queue was full
C_LEN = 16


# o[] columns (one row per order; one 2-D array instead of eleven columns: every kernel takes the Venue
# tuple by value, and numba's compile time and call cost grow with the number of arrays in it)
O_ID = 0  # order id; 0 = free
O_LIVE = 1  # 1 while resting
O_VENUE = 2
O_SYMBOL = 3
O_SIDE = 4
O_PRICE = 5
O_LEAVES = 6
O_CUM = 7
O_AHEAD = 8  # lots ahead in the queue at O_PRICE
O_FLAGS = 9
O_TS_ORIGIN = 10
O_TRADED = 11  # lots printed at O_PRICE since the level was last set (not credited again as cancellations)
O_LEN = 12
L_ENTRY, L_REPORT, L_QUEUE = 0, 1, 2  # lat[] columns (L_QUEUE: the venue's queue model, a Q_* code)
VF_MAKER, VF_TAKER, VF_REJECT, VF_QPOW = 0, 1, 2, 3  # vf[] columns (VF_QPOW: queue_power)

# queue models (make_venue's ``queue_model``), see the module docstring
Q_RISK_AVERSE, Q_POWER, Q_POWER2, Q_POWER3, Q_LOG, Q_LOG2 = 0, 1, 2, 3, 4, 5
QUEUE_MODELS = {"risk_averse": Q_RISK_AVERSE, "power": Q_POWER, "power2": Q_POWER2, "power3": Q_POWER3,
                "log": Q_LOG, "log2": Q_LOG2}  # fmt: skip
MAX_QUEUE_POWER = 100.0


class Venue(NamedTuple):
    book: L2Book  # row v * n_symbols + s
    tops: VenueTops  # [n_venues, n_symbols] best bid/ask: the router's view
    stale: np.ndarray  # int64[n_venues * n_symbols]: 1 after OUT_OF_SYNC until the next CLEAR
    lat: np.ndarray  # int64[n_venues, 3]: L_ENTRY, L_REPORT latency, ns; L_QUEUE queue model (Q_*)
    # recorded latencies (hean.stages.latency; a venue with lat_rows 0 has the constant ones above):
    lat_entry: np.ndarray  # int64[n_venues, K, 2]: (send time, entry latency) in send order
    lat_resp: np.ndarray  # int64[n_venues, K, 2]: (exchange time, response latency) in exchange time order
    lat_rows: np.ndarray  # int64[n_venues]: rows of the two tables in use
    lat_last: np.ndarray  # int64[n_venues, 2]: the last order's arrival, the last report's release (FIFO)
    vf: np.ndarray  # float64[n_venues, 4]: VF_MAKER, VF_TAKER fee (fraction of notional), VF_REJECT probability,
    # VF_QPOW the power models' exponent
    value_per_tick_lot: np.ndarray  # float64[n_symbols]
    o: np.ndarray  # int64[capacity, O_LEN]: orders at the venues, direct-mapped by order_id & (capacity - 1)
    rest: np.ndarray  # int64[capacity]: slots of resting orders (first g[G_NREST])
    rest_pos: np.ndarray  # int64[capacity]: index of a slot in ``rest``
    # inbound (orders in flight) and outbound (reports in flight) queues, one FIFO per venue
    in_q: np.ndarray  # ORDER[n_venues, QCAP]
    in_t: np.ndarray  # int64[n_venues, QCAP]: arrival time
    in_ht: np.ndarray  # int64[n_venues, 2]: head, tail
    out_q: np.ndarray  # EXEC_REPORT[n_venues, QCAP]
    out_t: np.ndarray  # int64[n_venues, QCAP]: release time
    out_ht: np.ndarray  # int64[n_venues, 2]
    g: np.ndarray
    rejects: np.ndarray  # int64[N_REASONS]
    counters: np.ndarray  # int64[C_LEN]


def _per_venue(value, n: int, dtype, name: str, lo, hi) -> np.ndarray:
    vals = per_item(value, n, float)
    if not all(math.isfinite(x) and lo <= x <= hi for x in vals):
        raise ValueError(f"{name} must be in [{lo}, {hi}] per venue, got {value!r}")
    return np.array(vals, dtype)


def _queue_models(value, n: int) -> np.ndarray:
    """``queue_model`` (a name, or one per venue) as Q_* codes."""
    names = [value] if isinstance(value, str) else list(np.asarray(value, dtype=object).reshape(-1))
    known = " | ".join(QUEUE_MODELS)
    for name in names:
        if not isinstance(name, str) or name not in QUEUE_MODELS:
            raise ValueError(f"queue_model must be one of {known} per venue, got {name!r}")
    if len(names) not in (1, n):
        raise ValueError(f"queue_model: one name or one per venue ({n}), got {len(names)}")
    return np.broadcast_to(np.array([QUEUE_MODELS[x] for x in names], np.int64), (n,)).copy()


def _latency_files(value, n: int) -> list[str]:
    """``latency_file`` (a path, or one per venue; "" for none) as one path per venue."""
    paths = [value] if isinstance(value, (str, os.PathLike)) else list(np.asarray(value, dtype=object).reshape(-1))
    if len(paths) not in (1, n) or not all(isinstance(p, (str, os.PathLike)) for p in paths):
        raise ValueError(f"latency_file: one path or one per venue ({n}), got {value!r}")
    return [os.fspath(p) for p in (paths * n if len(paths) == 1 else paths)]


def _queue_powers(value, n: int) -> np.ndarray:
    arr = np.broadcast_to(np.asarray(value, dtype=np.float64), (n,)).copy()
    bad = [float(x) for x in arr if not (np.isfinite(x) and 0.0 < x <= MAX_QUEUE_POWER)]
    if bad:
        raise ValueError(f"queue_power must be a number in (0, {MAX_QUEUE_POWER:g}] per venue, got {bad[0]!r}")
    return arr


def make_venue(
    n_symbols: int,
    n_venues: int = 1,
    *,
    entry_latency_ns: int | np.ndarray = 0,
    report_latency_ns: int | np.ndarray = 0,
    maker_fee: float | np.ndarray = 0.0,
    taker_fee: float | np.ndarray = 0.0,
    reject_prob: float | np.ndarray = 0.0,
    value_per_tick_lot: float | np.ndarray = 1.0,
    queue_model: str | np.ndarray = "risk_averse",
    queue_power: float | np.ndarray = 3.0,
    latency_file: str | np.ndarray = "",
    seed: int = 1,
    capacity: int = 4096,
    queue_capacity: int = 4096,
    book_window: int = L2_WINDOW,
    book_overflow: int = 8192,
) -> Venue:
    """Build ``n_venues`` (1..8) simulated venues trading ``n_symbols`` symbols.

    Per venue (scalar or one per venue): ``entry_latency_ns`` and ``report_latency_ns`` (ns, default 0),
    ``maker_fee``/``taker_fee`` (fraction of notional, default 0), ``reject_prob`` (0..1, default 0).
    ``queue_model`` (``"risk_averse"`` default, ``"power"``, ``"power2"``, ``"power3"``, ``"log"``, ``"log2"``)
    and ``queue_power`` (the power models' exponent n, in (0, 100], default 3): how a resting order's queue
    position moves when its level decreases (module docstring). ``value_per_tick_lot`` (quote ccy per tick
    per lot, per symbol). ``latency_file`` (a path per venue, "" for none): recorded order round trips that
    replace the two constant latencies (:mod:`hean.stages.latency`). ``seed``: the reject generator.
    ``capacity``: orders at all venues (power of two). ``queue_capacity``: orders / reports in flight per
    venue (power of two). ``book_window``/``book_overflow``: see :func:`hean.stages.book.make_l2_book`.
    """
    if not 1 <= n_venues <= MAX_VENUES or n_symbols < 1:
        raise ValueError(f"need 1..{MAX_VENUES} venues and >= 1 symbol, got {n_venues}, {n_symbols}")
    for name, v in (("capacity", capacity), ("queue_capacity", queue_capacity)):
        if v < 2 or v & (v - 1):
            raise ValueError(f"{name} must be a power of two >= 2, got {v}")
    vptl = per_item(value_per_tick_lot, n_symbols, float)
    if not all(math.isfinite(x) and x > 0 for x in vptl):
        raise ValueError(f"value_per_tick_lot must be > 0, got {value_per_tick_lot!r}")
    g = np.zeros(G_LEN, dtype=np.int64)
    g[G_RNG] = int(seed) & 0x7FFFFFFFFFFFFFFF or 1
    g[G_TOPS] = 1

    def col():
        return np.zeros(capacity, dtype=np.int64)

    lat_entry, lat_resp, lat_rows = latency_tables(_latency_files(latency_file, n_venues))

    return Venue(
        book=make_l2_book(n_venues * n_symbols, book_window, book_overflow),
        tops=make_venue_tops(n_venues, n_symbols),
        stale=np.zeros(n_venues * n_symbols, dtype=np.int64),
        lat=np.stack(
            [
                _per_venue(entry_latency_ns, n_venues, np.int64, "entry_latency_ns", 0, 10**12),
                _per_venue(report_latency_ns, n_venues, np.int64, "report_latency_ns", 0, 10**12),
                _queue_models(queue_model, n_venues),
            ],
            axis=1,
        ),
        lat_entry=lat_entry,
        lat_resp=lat_resp,
        lat_rows=lat_rows,
        lat_last=np.zeros((n_venues, 2), dtype=np.int64),
        vf=np.stack(
            [
                _per_venue(maker_fee, n_venues, np.float64, "maker_fee", -0.1, 0.1),
                _per_venue(taker_fee, n_venues, np.float64, "taker_fee", -0.1, 0.1),
                _per_venue(reject_prob, n_venues, np.float64, "reject_prob", 0.0, 1.0),
                _queue_powers(queue_power, n_venues),
            ],
            axis=1,
        ),
        value_per_tick_lot=np.array(vptl, np.float64),
        o=np.zeros((capacity, O_LEN), dtype=np.int64),
        rest=col(),
        rest_pos=col(),
        in_q=np.zeros((n_venues, queue_capacity), dtype=ORDER),
        in_t=np.zeros((n_venues, queue_capacity), dtype=np.int64),
        in_ht=np.zeros((n_venues, 2), dtype=np.int64),
        out_q=np.zeros((n_venues, queue_capacity), dtype=EXEC_REPORT),
        out_t=np.zeros((n_venues, queue_capacity), dtype=np.int64),
        out_ht=np.zeros((n_venues, 2), dtype=np.int64),
        g=g,
        rejects=np.zeros(N_REASONS, dtype=np.int64),
        counters=np.zeros(C_LEN, dtype=np.int64),
    )


# ---------------------------------------------------------------------------------------------------------
# reports out
# ---------------------------------------------------------------------------------------------------------
# inlined by numba: tiny, and called with literal constants (one compile per constant otherwise)
@kernel(inline=True)
def _report(vn, v, t, ts_origin, symbol, kind, side, order_id, price, qty, leaves, cum, fee, reason, liq):
    """Queue a report made at venue time ``t``; released at ``t + report_latency``."""
    cap = vn.out_q.shape[1]
    head = vn.out_ht[v, 0]
    tail = vn.out_ht[v, 1]
    if tail - head >= cap:
        vn.counters[C_DROPPED] += 1
        return
    i = tail & (cap - 1)
    r = vn.out_q[v, i]
    r.seq = 0
    r.ts_origin = ts_origin
    r.ts_exch = 0
    r.symbol = symbol
    r.kind = kind
    r.side = side
    r.flags = 0
    r.order_id = order_id
    r.price = price
    r.qty = qty
    r.leaves_qty = leaves
    r.cum_qty = cum
    r.fee = fee
    r.ts_venue = t
    r.venue = v
    r.reason = reason
    r.liquidity = liq
    if vn.lat_rows[v] == 0:
        vn.out_t[v, i] = t + vn.lat[v, L_REPORT]
    else:  # recorded: never released before a report made earlier
        vn.out_t[v, i] = max(t + recorded_latency(vn.lat_resp[v], vn.lat_rows[v], t), vn.lat_last[v, 1])
        vn.lat_last[v, 1] = vn.out_t[v, i]
    vn.out_ht[v, 1] = tail + 1


@kernel
def _reject_order(vn, v, t, order, reason):
    vn.rejects[reason] += 1
    vn.counters[C_REJECTS] += 1
    kind = X_REJECTED if order.kind == A_NEW else X_CANCEL_REJECTED
    _report(vn, v, t, order.ts_origin, order.symbol, kind, order.side, order.order_id, order.price, 0, 0, 0, 0.0,
            reason, 0)  # fmt: skip


@kernel
def venue_release(vn, now_ns, out, k):
    """Copy due reports (release time <= now) into out[k:], oldest first across venues."""
    cap = vn.out_q.shape[1]
    limit = min(VENUE_MAX_REPORTS, out.shape[0] - k)
    w = 0
    while w < limit:
        best_v = -1
        best_t = now_ns + 1
        for v in range(vn.out_ht.shape[0]):
            if vn.out_ht[v, 0] < vn.out_ht[v, 1]:
                t = vn.out_t[v, vn.out_ht[v, 0] & (cap - 1)]
                if t < best_t:
                    best_t = t
                    best_v = v
        if best_v < 0:
            break
        i = vn.out_ht[best_v, 0] & (cap - 1)
        src = vn.out_q[best_v, i]
        vn.out_ht[best_v, 0] += 1
        vn.g[G_SEQ] += 1
        d = out[k + w]
        d.seq = vn.g[G_SEQ]
        d.ts_origin = src.ts_origin
        d.ts_exch = src.ts_exch
        d.symbol = src.symbol
        d.kind = src.kind
        d.side = src.side
        d.flags = src.flags
        d.order_id = src.order_id
        d.price = src.price
        d.qty = src.qty
        d.leaves_qty = src.leaves_qty
        d.cum_qty = src.cum_qty
        d.fee = src.fee
        d.ts_venue = src.ts_venue
        d.venue = src.venue
        d.reason = src.reason
        d.liquidity = src.liquidity
        w += 1
    vn.counters[C_REPORTS] += w
    return w


# ---------------------------------------------------------------------------------------------------------
# matching
# ---------------------------------------------------------------------------------------------------------
@kernel
def _rand01(vn):
    """Uniform in [0, 1) from a 64-bit LCG (int64 wrapping arithmetic; top 31 bits)."""
    x = vn.g[G_RNG] * np.int64(6364136223846793005) + np.int64(1442695040888963407)
    vn.g[G_RNG] = x
    return ((x >> np.int64(33)) & np.int64(0x7FFFFFFF)) / 2147483648.0


@kernel
def _refresh_tops(vn, v, s, now_ns):
    if vn.g[G_TOPS] == 0:
        return
    row = v * vn.tops.entries.shape[1] + s
    bp, bq = l2_best_bid(vn.book, row)
    ap, aq = l2_best_ask(vn.book, row)
    tops_set(vn.tops, v, s, bp, bq, ap, aq, now_ns)


@kernel
def _opposite_best(vn, row, side):
    if side > 0:
        return l2_best_ask(vn.book, row)
    return l2_best_bid(vn.book, row)


@kernel
def _within(side, px, limit, is_market):
    if is_market:
        return True
    return px <= limit if side > 0 else px >= limit


@kernel
def _available(vn, row, side, limit, is_market, want):
    """Visible lots on the opposite side within the limit, counted up to ``want``."""
    opp = -side
    px, q = _opposite_best(vn, row, side)
    total = np.int64(0)
    while px > 0 and q > 0 and total < want and _within(side, px, limit, is_market):
        total += q
        nxt = l2_next_level(vn.book, row, opp, px)
        if nxt == NO_PRICE:
            break
        px = nxt
        q = l2_level_qty(vn.book, row, opp, px)
    return total


@kernel
def _take(vn, v, t, slot, row, limit, is_market):
    """Fill order ``slot`` against the opposite levels within the limit; returns the lots filled."""
    side = vn.o[slot, O_SIDE]
    opp = -side
    opp_idx = 1 if side > 0 else 0  # book side index of the levels we take
    px, q = _opposite_best(vn, row, side)
    filled = np.int64(0)
    s = vn.o[slot, O_SYMBOL]
    while vn.o[slot, O_LEAVES] > 0 and px > 0 and q > 0 and _within(side, px, limit, is_market):
        take = min(vn.o[slot, O_LEAVES], q)
        l2_set_level(vn.book, row, opp_idx, px, q - take)  # our lots are gone until the feed resets the level
        vn.o[slot, O_LEAVES] -= take
        vn.o[slot, O_CUM] += take
        filled += take
        fee = px * take * vn.value_per_tick_lot[s] * vn.vf[v, VF_TAKER]
        kind = X_FILL if vn.o[slot, O_LEAVES] == 0 else X_PARTIAL
        _report(vn, v, t, vn.o[slot, O_TS_ORIGIN], s, kind, side, vn.o[slot, O_ID], px, take, vn.o[slot, O_LEAVES],
                vn.o[slot, O_CUM], fee, 0, TAKER)  # fmt: skip
        vn.counters[C_FILLS] += 1
        vn.counters[C_FILLED_LOTS] += take
        if q - take > 0:
            break  # the level still has lots: we are done
        nxt = l2_next_level(vn.book, row, opp, px)
        if nxt == NO_PRICE:
            break
        px = nxt
        q = l2_level_qty(vn.book, row, opp, px)
    return filled


@kernel
def _rest_add(vn, slot):
    n = vn.g[G_NREST]
    vn.rest[n] = slot
    vn.rest_pos[slot] = n
    vn.g[G_NREST] = n + 1
    vn.o[slot, O_LIVE] = 1


@kernel
def _rest_remove(vn, slot):
    n = vn.g[G_NREST] - 1
    i = vn.rest_pos[slot]
    last = vn.rest[n]
    vn.rest[i] = last
    vn.rest_pos[last] = i
    vn.g[G_NREST] = n
    vn.o[slot, O_LIVE] = 0


@kernel
def _marketable(vn, row, side, price, is_market):
    px, q = _opposite_best(vn, row, side)
    return px > 0 and q > 0 and _within(side, px, price, is_market)


@kernel
def _new_reason(vn, v, order, row, marketable):
    """Why a NEW is refused (0: accepted). ``row``/``marketable`` are only meaningful for valid orders."""
    ns = vn.tops.entries.shape[1]
    s = order.symbol
    side = order.side
    if s < 0 or s >= ns:
        return R_BAD_SYMBOL
    if side != 1 and side != -1:
        return R_BAD_SIDE
    if order.qty <= 0:
        return R_BAD_QTY
    otype = order.order_type
    if otype != T_LIMIT and otype != T_MARKET:
        return R_BAD_TYPE
    if otype == T_LIMIT and order.price <= 0:
        return R_BAD_PRICE
    if order.order_id <= 0:
        return R_UNKNOWN_ORDER
    if vn.o[order.order_id & (vn.o.shape[0] - 1), O_LIVE] != 0:
        return R_TABLE_FULL
    if vn.stale[row] != 0:
        return R_BOOK_STALE
    if vn.vf[v, VF_REJECT] > 0.0 and _rand01(vn) < vn.vf[v, VF_REJECT]:
        return R_VENUE_REJECT
    if marketable and (order.flags & F_POST_ONLY) != 0:
        return R_POST_ONLY_CROSS
    return 0


@kernel
def _new(vn, v, t, order):
    ns = vn.tops.entries.shape[1]
    s = order.symbol
    side = np.int64(order.side)
    is_market = order.order_type == T_MARKET
    row = v * ns + max(0, min(s, ns - 1))
    marketable = (side == 1 or side == -1) and _marketable(vn, row, side, order.price, is_market)
    reason = _new_reason(vn, v, order, row, marketable)
    if reason != 0:
        _reject_order(vn, v, t, order, reason)
        return
    slot = order.order_id & (vn.o.shape[0] - 1)
    qty = np.int64(order.qty)
    vn.o[slot, O_ID] = order.order_id
    vn.o[slot, O_VENUE] = v
    vn.o[slot, O_SYMBOL] = s
    vn.o[slot, O_SIDE] = side
    vn.o[slot, O_PRICE] = order.price
    vn.o[slot, O_LEAVES] = qty
    vn.o[slot, O_CUM] = 0
    vn.o[slot, O_FLAGS] = order.flags
    vn.o[slot, O_TS_ORIGIN] = order.ts_origin
    _report(vn, v, t, order.ts_origin, s, X_ACK, side, order.order_id, order.price, 0, qty, 0, 0.0, 0, 0)
    tif = order.tif
    if tif == _FOK and _available(vn, row, side, order.price, is_market, qty) < qty:
        vn.o[slot, O_LEAVES] = 0
        _report(vn, v, t, order.ts_origin, s, X_EXPIRED, side, order.order_id, order.price, 0, 0, 0, 0.0, 0, 0)
        return
    if marketable:
        _take(vn, v, t, slot, row, order.price, is_market)
        _refresh_tops(vn, v, s, t)
    if vn.o[slot, O_LEAVES] == 0:
        return
    if is_market or tif == _IOC or tif == _FOK:
        vn.o[slot, O_LEAVES] = 0
        _report(vn, v, t, order.ts_origin, s, X_EXPIRED, side, order.order_id, order.price, 0, 0, vn.o[slot, O_CUM],
                0.0, 0, 0)  # fmt: skip
        return
    vn.o[slot, O_AHEAD] = l2_level_qty(vn.book, row, side, order.price)
    vn.o[slot, O_TRADED] = 0
    _rest_add(vn, slot)


@kernel
def _resting_slot(vn, v, order_id):
    """Slot of a live resting order with this id at venue ``v``, -1 if none."""
    if order_id <= 0:
        return -1
    slot = order_id & (vn.o.shape[0] - 1)
    if vn.o[slot, O_ID] != order_id or vn.o[slot, O_LIVE] == 0 or vn.o[slot, O_VENUE] != v:
        return -1
    return slot


@kernel
def _known(vn, order_id):
    return order_id > 0 and vn.o[order_id & (vn.o.shape[0] - 1), O_ID] == order_id


@kernel
def _cancel_slot(vn, v, t, slot):
    _rest_remove(vn, slot)
    vn.o[slot, O_LEAVES] = 0
    vn.counters[C_CANCELS] += 1
    _report(vn, v, t, vn.o[slot, O_TS_ORIGIN], vn.o[slot, O_SYMBOL], X_CANCELED, vn.o[slot, O_SIDE], vn.o[slot, O_ID],
            vn.o[slot, O_PRICE], 0, 0, vn.o[slot, O_CUM], 0.0, 0, 0)  # fmt: skip


@kernel
def _cancel(vn, v, t, order):
    slot = _resting_slot(vn, v, order.order_id)
    if slot < 0:
        return _reject_order(vn, v, t, order, R_TOO_LATE if _known(vn, order.order_id) else R_UNKNOWN_ORDER)
    _cancel_slot(vn, v, t, slot)


@kernel
def _cancel_all(vn, v, t, symbol):
    i = 0
    while i < vn.g[G_NREST]:
        slot = vn.rest[i]
        if vn.o[slot, O_VENUE] == v and (symbol < 0 or vn.o[slot, O_SYMBOL] == symbol):
            _cancel_slot(vn, v, t, slot)  # swaps the last resting order into position i
        else:
            i += 1


@kernel
def _replace(vn, v, t, order):
    slot = _resting_slot(vn, v, order.order_id)
    ns = vn.tops.entries.shape[1]
    s = vn.o[max(slot, 0), O_SYMBOL]
    row = v * ns + s
    side = vn.o[max(slot, 0), O_SIDE]
    new_px = np.int64(order.price)
    new_qty = np.int64(order.qty)
    marketable = slot >= 0 and _marketable(vn, row, side, new_px, False)
    reason = 0
    if slot < 0:
        reason = R_TOO_LATE if _known(vn, order.order_id) else R_UNKNOWN_ORDER
    elif new_qty <= 0:
        reason = R_BAD_QTY
    elif new_px <= 0:
        reason = R_BAD_PRICE
    elif marketable and (vn.o[slot, O_FLAGS] & F_POST_ONLY) != 0:
        reason = R_POST_ONLY_CROSS
    if reason != 0:
        _reject_order(vn, v, t, order, reason)
        return
    keeps_queue = new_px == vn.o[slot, O_PRICE] and new_qty <= vn.o[slot, O_LEAVES]
    vn.o[slot, O_PRICE] = new_px
    vn.o[slot, O_LEAVES] = new_qty
    _report(vn, v, t, order.ts_origin, s, X_REPLACED, side, order.order_id, new_px, 0, new_qty, vn.o[slot, O_CUM], 0.0,
            0, 0)  # fmt: skip
    if marketable:
        _take(vn, v, t, slot, row, new_px, False)
        _refresh_tops(vn, v, s, t)
        if vn.o[slot, O_LEAVES] == 0:
            _rest_remove(vn, slot)
            return
    if not keeps_queue:
        vn.o[slot, O_AHEAD] = l2_level_qty(vn.book, row, side, new_px)
        vn.o[slot, O_TRADED] = 0


@kernel
def _arrive(vn, v, t, order):
    vn.counters[C_ORDERS] += 1
    action = order.kind
    if action == A_NEW:
        _new(vn, v, t, order)
    elif action == A_CANCEL:
        _cancel(vn, v, t, order)
    elif action == A_REPLACE:
        _replace(vn, v, t, order)
    elif action == A_CANCEL_ALL:
        _cancel_all(vn, v, t, order.symbol)
    else:
        _reject_order(vn, v, t, order, R_BAD_TYPE)


@kernel
def _on_trade(vn, v, t, ev):
    """A print at venue ``v``: fill resting orders on the passive side per the queue model.

    Orders priced better than the print fill first (the aggressor went through them), then orders at the
    print's price, each after its queue ahead; together they take at most the print's size.
    """
    s = ev.symbol
    px = ev.price
    avail = np.int64(ev.qty)
    passive = -np.int64(ev.side)  # aggressor SELL hits resting buys
    for through_pass in (True, False):
        i = 0
        while i < vn.g[G_NREST] and avail > 0:
            slot = vn.rest[i]
            i += 1
            if vn.o[slot, O_VENUE] != v or vn.o[slot, O_SYMBOL] != s or vn.o[slot, O_SIDE] != passive:
                continue
            op = vn.o[slot, O_PRICE]
            through = op > px if passive > 0 else op < px
            if through_pass:
                if not through:
                    continue
                vn.o[slot, O_AHEAD] = 0
                q = min(vn.o[slot, O_LEAVES], avail)
            else:
                if op != px:
                    continue
                vn.o[slot, O_TRADED] += ev.qty  # the level's next decrease includes this print
                ahead = vn.o[slot, O_AHEAD]
                if ev.qty <= ahead:
                    vn.o[slot, O_AHEAD] = ahead - ev.qty
                    continue
                vn.o[slot, O_AHEAD] = 0
                q = min(vn.o[slot, O_LEAVES], ev.qty - ahead, avail)
            avail -= q
            vn.o[slot, O_LEAVES] -= q
            vn.o[slot, O_CUM] += q
            fee = op * q * vn.value_per_tick_lot[s] * vn.vf[v, VF_MAKER]
            kind = X_FILL if vn.o[slot, O_LEAVES] == 0 else X_PARTIAL
            _report(vn, v, t, ev.ts_origin, s, kind, vn.o[slot, O_SIDE], vn.o[slot, O_ID], op, q, vn.o[slot, O_LEAVES],
                    vn.o[slot, O_CUM], fee, 0, MAKER)  # fmt: skip
            vn.counters[C_FILLS] += 1
            vn.counters[C_FILLED_LOTS] += q
            if vn.o[slot, O_LEAVES] == 0:
                _rest_remove(vn, slot)
                i -= 1  # the last resting order moved into position i - 1


@kernel(error_model="numpy")
def _queue_credit(model, n, front, back, c):
    """Lots of ``c`` cancelled lots that came from ahead of an order with ``front`` lots ahead and ``back``
    behind, under queue model ``model`` (exponent ``n``): the module docstring's formulas, in float64, rounded
    down; in [0, min(c, front)]."""
    if front <= 0 or c <= 0:
        return np.int64(0)
    p = 0.0  # probability that a cancelled lot was behind the order; nothing behind: every lot was ahead
    if back > 0:
        f = np.float64(front)
        b = np.float64(back)
        if model == Q_POWER:
            p = 1.0 / (1.0 + (f / b) ** n)  # = b^n / (b^n + f^n), without overflowing b^n
        elif model == Q_POWER2:
            p = (b / (f + b)) ** n
        elif model == Q_POWER3:
            p = 1.0 - (f / (f + b)) ** n
        elif model == Q_LOG:
            p = np.log1p(b) / (np.log1p(b) + np.log1p(f))
        else:  # Q_LOG2
            p = np.log1p(b) / np.log1p(f + b)
    behind = p * np.float64(c)  # expected lots from behind
    if behind >= back:
        credit = c - back  # more than there is behind: the rest came from ahead
    else:
        credit = np.int64(np.floor(np.float64(c) - behind))
    return max(np.int64(0), min(credit, c, front))


@kernel
def _queue_on_level(vn, v, s, side, px, prev, new):
    """Venue ``v``'s copy of level ``px`` of ``side`` went from ``prev`` to ``new`` lots (the feed, not our own
    takes): credit each of our resting orders there its share of the decrease under the venue's queue model.
    """
    model = vn.lat[v, L_QUEUE]
    n = vn.vf[v, VF_QPOW]
    for i in range(vn.g[G_NREST]):
        slot = vn.rest[i]
        if (vn.o[slot, O_PRICE] != px or vn.o[slot, O_VENUE] != v or vn.o[slot, O_SYMBOL] != s
                or vn.o[slot, O_SIDE] != side):  # fmt: skip
            continue
        traded = vn.o[slot, O_TRADED]
        vn.o[slot, O_TRADED] = 0  # the new quantity reflects the prints
        front = vn.o[slot, O_AHEAD]
        c = prev - new - traded
        back = max(np.int64(0), prev - traded - front)
        vn.o[slot, O_AHEAD] = front - _queue_credit(model, n, front, back, c)


@kernel
def venue_accept(vn, order, now_ns):
    """Take an ORDER from the router, sent at ``now_ns`` to venue ``order.venue``: it arrives after the venue's
    entry latency (or is rejected at once: unknown venue, in-flight queue full). Matches nothing yet."""
    v = order.venue
    nv = vn.in_ht.shape[0]
    if v < 0 or v >= nv:
        vn.counters[C_ORDERS] += 1
        _reject_order(vn, 0, now_ns, order, R_BAD_VENUE)  # answered through venue 0's report queue
        return
    cap = vn.in_q.shape[1]
    head = vn.in_ht[v, 0]
    tail = vn.in_ht[v, 1]
    if tail - head >= cap:
        vn.counters[C_IN_FULL] += 1
        _reject_order(vn, v, now_ns, order, R_TABLE_FULL)
        return
    i = tail & (cap - 1)
    d = vn.in_q[v, i]
    d.seq = order.seq
    d.ts_origin = order.ts_origin
    d.ts_exch = order.ts_exch
    d.symbol = order.symbol
    d.kind = order.kind
    d.side = order.side
    d.flags = order.flags
    d.order_id = order.order_id
    d.price = order.price
    d.qty = order.qty
    d.order_type = order.order_type
    d.tif = order.tif
    d.strategy = order.strategy
    d.client_id = order.client_id
    d.reason = order.reason
    d.venue = order.venue
    if vn.lat_rows[v] == 0:
        vn.in_t[v, i] = now_ns + vn.lat[v, L_ENTRY]
    else:  # recorded: never arrives before an order sent earlier
        vn.in_t[v, i] = max(now_ns + recorded_latency(vn.lat_entry[v], vn.lat_rows[v], now_ns), vn.lat_last[v, 0])
        vn.lat_last[v, 0] = vn.in_t[v, i]
    vn.in_ht[v, 1] = tail + 1


@kernel
def venue_advance(vn, now_ns):
    """Let time pass to ``now_ns``: match every order in flight that has arrived by then (per venue, in
    arrival order)."""
    cap = vn.in_q.shape[1]
    for v in range(vn.in_ht.shape[0]):
        while vn.in_ht[v, 0] < vn.in_ht[v, 1]:
            i = vn.in_ht[v, 0] & (cap - 1)
            t = vn.in_t[v, i]
            if t > now_ns:
                break
            vn.in_ht[v, 0] += 1
            _arrive(vn, v, t, vn.in_q[v, i])


@kernel
def venue_apply_event(vn, v, ev, now_ns):
    """A MARKET_EVENT of venue ``v`` at ``now_ns``: the book is updated (LEVEL_SET / CLEAR / OUT_OF_SYNC) or
    resting orders fill (TRADE). Call :func:`venue_advance` to ``now_ns`` first: orders that arrived before
    the event are matched before it."""
    ns = vn.tops.entries.shape[1]
    s = ev.symbol
    if 0 <= v < vn.in_ht.shape[0] and 0 <= s < ns:
        row = v * ns + s
        kind = ev.kind
        vn.counters[C_EVENTS] += 1
        if kind == _LEVEL_SET:
            side = ev.side
            if (side == 1 or side == -1) and ev.qty >= 0:
                prev = np.int64(-1)  # the level before the feed sets it: for a probabilistic queue model
                if vn.lat[v, L_QUEUE] != Q_RISK_AVERSE and vn.g[G_NREST] > 0:
                    prev = l2_level_qty(vn.book, row, side, ev.price)
                ok = l2_set_level(vn.book, row, 0 if side == 1 else 1, ev.price, ev.qty) == OK
                if ok and prev >= 0:
                    _queue_on_level(vn, v, s, side, ev.price, prev, np.int64(ev.qty))
                _refresh_tops(vn, v, s, now_ns)
        elif kind == _CLEAR:
            l2_clear(vn.book, row)
            vn.stale[row] = 0
            _refresh_tops(vn, v, s, now_ns)
        elif kind == _OUT_OF_SYNC:
            vn.stale[row] = 1
        elif kind == _TRADE:
            vn.counters[C_TRADES] += 1
            _on_trade(vn, v, now_ns, ev)


# The three calls a client makes, each composed of the steps above. The engine's loop calls the steps itself,
# so that one copy of each is compiled into it (hean.engine.pipeline.venue_step).
@kernel
def venue_on_order(vn, order, now_ns, out, k):
    """An ORDER from the router, sent at ``now_ns`` to venue ``order.venue``; returns reports written."""
    venue_accept(vn, order, now_ns)
    venue_advance(vn, now_ns)
    return venue_release(vn, now_ns, out, k)


@kernel
def venue_on_event(vn, v, ev, now_ns, out, k):
    """A MARKET_EVENT of venue ``v`` at ``now_ns``: orders that arrived first are matched first, then the
    book is updated (LEVEL_SET / CLEAR / OUT_OF_SYNC) or resting orders fill (TRADE). Returns reports written.
    """
    venue_advance(vn, now_ns)
    venue_apply_event(vn, v, ev, now_ns)
    return venue_release(vn, now_ns, out, k)


@kernel
def venue_poll(vn, now_ns, out, k):
    """Let time pass to ``now_ns``: match arrived orders, release due reports. Returns reports written."""
    venue_advance(vn, now_ns)
    return venue_release(vn, now_ns, out, k)


@kernel
def venue_replay(vn, v, events, start, stop, out, k):
    """Apply ``events[start:stop]`` of venue ``v``, each at its own ``ts_origin``, writing reports to out[k:].

    Stops early when fewer than :data:`VENUE_MAX_REPORTS` slots are left in ``out``. Returns
    ``(next_index, n_written)``: call again from ``next_index`` after draining ``out``.
    """
    w = 0
    i = start
    while i < stop and out.shape[0] - (k + w) >= VENUE_MAX_REPORTS:
        w += venue_on_event(vn, v, events[i], events[i].ts_origin, out, k + w)
        i += 1
    return i, w


@kernel
def venue_next_due(vn):
    """When the venue next has something to do by itself: the earliest arrival of an order in flight or
    release of a held-back report (NOTHING_DUE: neither). Each venue's queues are in time order."""
    t = _earliest_due(vn)
    return NOTHING_DUE if t == NEVER else t


NEVER = np.iinfo(np.int64).max  # _earliest_due: nothing due (a time of 0 is a time there, as in a unit test)


@kernel
def _earliest_due(vn):
    """:func:`venue_next_due`, NEVER when nothing is due."""
    cap = vn.in_q.shape[1]
    due = NEVER
    for v in range(vn.in_ht.shape[0]):
        if vn.in_ht[v, 0] < vn.in_ht[v, 1]:
            due = min(due, vn.in_t[v, vn.in_ht[v, 0] & (cap - 1)])
        if vn.out_ht[v, 0] < vn.out_ht[v, 1]:
            due = min(due, vn.out_t[v, vn.out_ht[v, 0] & (cap - 1)])
    return due


# ---------------------------------------------------------------------------------------------------------
# the stage
# ---------------------------------------------------------------------------------------------------------
H_AGE_MARKET = 1  # histogram row: a market event's age when the venue takes it
H_AGE_ORDERS = 2  # histogram row: an order's age when the venue takes it


class VenueStage(NamedTuple):
    """The simulated venue stage's state: the venues, each symbol's venue, its report buffer, its clock."""

    venue: Venue
    venue_of: np.ndarray  # int64[n_symbols]
    out: np.ndarray  # EXEC_REPORT[VENUE_MAX_REPORTS]
    owed: np.ndarray  # int64[1]: 1 while due reports wait for room in the report ring
    clock: np.ndarray  # int64[1]: simulated time: the latest exchange time of a market event or CLOCK it took
    sim: np.ndarray  # the simclock view (hean.stages.simclock): its next due time, for the replay's scheduler
    instrument_of: np.ndarray  # int64[n_symbols]: the instrument each symbol quotes (a listing's: another)
    listed: np.ndarray  # MARKET_EVENT[1]: a listing's event as its instrument's (listed_event)


@kernel(forceinline=True, error_model="numpy")
def publish_reach(vn, sim, venue_of, instrument_of):
    """Per symbol, the highest resting buy and the lowest resting sell that its prints meet -- the orders of
    the venue and instrument its events apply to (:func:`listed_event`) -- into the simclock view, for the
    feed's choice of one step for a message with a print (:func:`hean.stages.simclock.print_reaches`)."""
    ns = venue_of.shape[0]
    if sim.shape[0] < SC_REACH + 2 * ns:
        return  # (a stand-in view)
    listings = False
    for s in range(ns):
        set_reach(sim, s, NO_BUY, NO_SELL)
        listings = listings or instrument_of[s] != s
    for i in range(vn.g[G_NREST]):
        slot = vn.rest[i]
        v = vn.o[slot, O_VENUE]
        inst = vn.o[slot, O_SYMBOL]
        if not listings:  # a symbol's events are its own: only the order's symbol, at its own venue
            if 0 <= inst < ns and venue_of[inst] == v:
                _reach_order(vn, sim, slot, inst)
            continue
        for s in range(ns):  # listings: every symbol quoting this instrument at this venue
            if instrument_of[s] == inst and venue_of[s] == v:
                _reach_order(vn, sim, slot, s)


@kernel(forceinline=True, error_model="numpy")
def _reach_order(vn, sim, slot, s):
    """Widen symbol ``s``'s reach to resting order ``slot``."""
    k = SC_REACH + 2 * s
    px = vn.o[slot, O_PRICE]
    if vn.o[slot, O_SIDE] > 0:
        if px > sim[k]:
            store_relaxed(sim, k, px)
    elif px < sim[k + 1]:
        store_relaxed(sim, k + 1, px)


@kernel(forceinline=True, error_model="numpy")
def listed_event(V, ev):
    """``ev`` as the venue books it: under the instrument its symbol quotes. A listing's events (another
    venue's book of an instrument, ``[[symbols]] instrument``) are that instrument's at their venue, so the
    instrument's orders routed there meet them; any other event is itself, untouched (one load and compare)."""
    s = ev.symbol
    inst = V.instrument_of[s] if 0 <= s < V.instrument_of.shape[0] else s
    if inst == s:
        return ev
    V.listed[0] = ev
    V.listed[0].symbol = inst
    return V.listed[0]


@kernel(forceinline=True, error_model="numpy")
def _venue_flush(V, reports, now, tm):
    """Release the reports due by ``now`` while the report ring has room; False when it ran out of room (the
    rest is owed: retried on the next pass)."""
    while room(reports, VENUE_MAX_REPORTS, tm.counters):
        n = venue_release(V.venue, now, V.out, 0)
        if n == 0:
            V.owed[0] = 0
            return True
        out(reports, V.out, n, tm)
    V.owed[0] = 1
    return False


@kernel(forceinline=True, error_model="numpy")
def venue_step(V, ins, outs, tm, now_pass, flags):
    """Market events first (the venue's books, resting orders' fills), then orders, one at a time; after
    each, the reports that fell due. ``ins``: (market, venue orders); ``outs``: (venue reports,).
    :func:`venue_pass` with the L2 feed's event kernel."""
    return venue_pass(V, ins, outs, tm, flags, venue_stage_apply)


@kernel(forceinline=True, error_model="numpy")
def venue_stage_apply(V, v, ev, now):
    """A market event (not a CLOCK) of venue ``v`` at ``now``: :func:`venue_apply_event` (of the instrument
    it quotes: :func:`listed_event`)."""
    venue_apply_event(V.venue, v, listed_event(V, ev), now)


@kernel(forceinline=True, error_model="numpy")
def _book_changes(V, ev_in, e0, k, n, em, now, due, tm, t0, apply):
    """:func:`venue_pass`'s steps over the market events from ``k`` that only change books (level sets and
    TICKERs: no report can come of them), in a tight loop while nothing falls due by their time. The caller
    checked the room for reports and that none is owed; neither changes here, so each of these steps would
    have passed the pass's checks. Returns (the next event, the venue's clock)."""
    while k < n:
        ev = ev_in.slots[(e0 + k) & em]
        kind = ev.kind
        t = max(now, ev.ts_exch)
        if (kind != _LEVEL_SET and kind != _TICKER) or due <= t:
            break
        now = t
        age(tm.hists[H_AGE_MARKET], t0, ev.ts_origin)
        apply(V, V.venue_of[ev.symbol], ev, now)
        k += 1
    V.clock[0] = now
    return k, now


@kernel(forceinline=True, error_model="numpy")
def venue_pass(V, ins, outs, tm, flags, apply):
    """The venue stage's step (:func:`venue_step`), given the kernel that applies a market event:
    ``apply(V, v, ev, now)`` -- :func:`venue_stage_apply`, or on an L3 feed
    :func:`hean.stages.venue_l3.venue_l3_stage_apply`. A compiled function passed as an argument is a
    constant of the step's type, so each step calls (and inlines) its own kernel with no test per event.

    Simulated time only runs forward: each market event or CLOCK record moves the venue's clock to its
    exchange time unless the clock is already later (a recording's streams are not always stamped in
    order); an order is sent at the clock's time, so in a replay -- where the feed precedes the book chain's
    copy of a message with a CLOCK at its receive time -- at the time the strategy saw what caused it.

    One loop with one call of each venue step (accept, advance, apply, release) instead of the composed
    ``venue_on_event`` / ``venue_on_order`` / ``venue_poll``: each of those contains the order-matching code,
    so calling all three put three copies of it into the worker loop (a third of the loop's code, and as
    much of its compile time)."""
    ev_in, vorders = ins
    reports = outs[0][0]
    vn = V.venue
    # orders only once every event published before them is applied
    goal, o0, n_ord = goal_if_waiting(ev_in, vorders)
    e0, n_ev = available(ev_in.hdr)
    n_ev = min(n_ev, max(BATCH, goal - e0))
    n_ord = min(n_ord, BATCH)
    em = ev_in.hdr[MASK]
    om = vorders.hdr[MASK]
    k_ev = 0
    k_ord = 0
    now = V.clock[0]  # the venue's clock: the exchange time of the last market event it applied
    flush = V.owed[0] != 0  # reports that found no room on an earlier pass
    t0 = 0
    due = NEVER
    if n_ev or n_ord:  # (an idle pass reads no clock)
        t0 = stage_clock(flags)
        due = _earliest_due(vn)
    # ``due``: the earliest arrival of an order in flight or release of a report, kept current after every
    # step that can change it (an order taken, orders matched, reports released, a market event other than a
    # level set or a TICKER), so that a step with nothing due skips the match and the release (both no-ops)
    while True:
        is_event = k_ev < n_ev
        is_order = not is_event and goal >= 0 and e0 + k_ev >= goal and k_ord < n_ord
        roomy = False  # room for a step's reports was checked in this iteration
        if flush and (V.owed[0] != 0 or due <= now):
            if not _venue_flush(V, reports, now, tm):
                break
            due = _earliest_due(vn)
        elif is_event or is_order:
            if not room(reports, VENUE_MAX_REPORTS, tm.counters):
                break  # (room is asked, and a shortage counted, only with something to take)
            roomy = True
        ev = ev_in.slots[(e0 + k_ev) & em]  # a view; read only when is_event
        if is_event:
            now = max(now, ev.ts_exch)
            V.clock[0] = now
            if ev.kind != _CLOCK:
                age(tm.hists[H_AGE_MARKET], t0, ev.ts_origin)
        elif is_order:
            order = vorders.slots[(o0 + k_ord) & om]
            age(tm.hists[H_AGE_ORDERS], t0, order.ts_origin)
            venue_accept(vn, order, now)
            due = _earliest_due(vn)
            k_ord += 1
        else:
            break
        if due <= now:
            venue_advance(vn, now)
            due = _earliest_due(vn)
        if is_event:
            kind = ev.kind
            if kind != _CLOCK:
                apply(V, V.venue_of[ev.symbol], ev, now)
                if kind != _LEVEL_SET and kind != _TICKER:  # (a print can fill: reports)
                    due = _earliest_due(vn)
            k_ev += 1
            if roomy and V.owed[0] == 0 and due > now:
                k_ev, now = _book_changes(V, ev_in, e0, k_ev, n_ev, em, now, due, tm, t0, apply)
        flush = True
    done = k_ev + k_ord
    if done:  # before the records go back: the feed reads them once every ring is empty
        if (flags & F_LOCKSTEP) != 0:  # (only the deterministic feed reads the reach)
            publish_reach(vn, V.sim, V.venue_of, V.instrument_of)
        set_venue_next(V.sim, venue_next_due(vn))
    if k_ev:
        release_to(ev_in, e0 + k_ev)
    if k_ord:
        release_to(vorders, o0 + k_ord)
    if done:
        service(tm.hists, t0, done)
        tm_add(tm.counters, C_EVENTS_IN, done)
    return done


def _param_per_venue(key: str) -> bool:
    """Does make_venue take ``key`` per venue (annotated to accept an array) or once for all venues?"""
    return "ndarray" in str(parameters_of(make_venue)[key].annotation)


def venue_param(key: str):
    """make_venue's default for ``key`` (a venue's ``[venues.params]`` key the user left out)."""
    d = parameters_of(make_venue)[key].default
    return np.asarray(d).reshape(-1)[0] if isinstance(d, np.ndarray) else d


def venue_tables(ctx) -> dict:
    """make_venue's keyword arguments from every ``[[venues]]`` table's params: a per-venue key becomes an
    array with one value per venue; a key taken once (seed, capacities) must be the same for every venue."""
    venues = ctx.cfg.venues
    for i, v in enumerate(venues):
        ctx.kwargs(f"venues[{i}].params", dict(v.params), make_venue)
    out_ = {}
    for key in sorted({k for v in venues for k in v.params}):
        vals = [v.params.get(key, venue_param(key)) for v in venues]
        if not _param_per_venue(key):
            if len(set(vals)) > 1:
                raise ctx.error(f"key 'venues.params.{key}': one value for every venue, got {vals}")
            out_[key] = vals[0]
            continue
        if any(isinstance(x, str) for x in vals):  # queue_model: names
            out_[key] = np.array(vals, dtype=object)
            continue
        out_[key] = np.array(vals, np.float64 if any(isinstance(x, float) for x in vals) else np.int64)
    return out_


def make_venue_stage(ctx) -> VenueStage:
    """The simulated venues from ``[[venues]]``."""
    table = venue_tables(ctx) if ctx.real else {}
    if "value_per_tick_lot" not in table:  # fees in quote currency
        table["value_per_tick_lot"] = ctx.value_per_tick_lot
    venue = ctx.call("venues", make_venue, len(ctx.symbols), max(1, len(ctx.cfg.venues)), **table)
    venue.g[G_TOPS] = 0  # the router reads the book stage's tops (hean.stages.tops), not the venues' own
    out_ = np.zeros(VENUE_MAX_REPORTS, EXEC_REPORT)
    return VenueStage(venue, ctx.venue_of, out_, np.zeros(1, np.int64), np.zeros(1, np.int64), ctx.views["simclock"],
                      ctx.instrument_of, np.zeros(1, MARKET_EVENT))  # fmt: skip


VENUE = Stage(
    name="venue",
    module=__name__,
    step="venue_step",
    inputs=(Stream("market", MARKET_EVENT), Stream("venue_orders", ORDER)),
    outputs=(Stream("venue_reports", EXEC_REPORT),),
    build=make_venue_stage,
    hists=("service", "age:market", "age:venue_orders"),
    config="venues",
)
