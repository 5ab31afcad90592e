"""The numpy record dtypes that cross rings -- every one of them, in one place.

Every record starts with the same 32-byte header and is padded to a multiple of 64 bytes (one cache line),
so a ring slot never shares a line with its neighbour and any stage can read the header of any record:

=========  ======  ==========================================================================================
field      type    meaning
=========  ======  ==========================================================================================
seq        int64   sequence number assigned by the record's producer (per producer, gap-free, from 1)
ts_origin  int64   ns at which the *originating market event* entered HEAN. A live or synthetic feed stamps
                   CLOCK_MONOTONIC (:func:`hean.atomics.now_ns`); readers of recordings store the recorded
                   local receive time (epoch ns), and the replaying feed stage re-stamps it with
                   CLOCK_MONOTONIC as it publishes. Downstream records (book state, orders, reports) copy it
                   from the event that caused them, so ``now_ns() - ts_origin`` is the tick-to-here latency.
ts_exch    int64   exchange timestamp, ns since the epoch (0 when unknown)
symbol     int32   symbol id (index into the :class:`hean.symbols.SymbolTable`)
kind       uint8   what the record says; one enum per dtype below
side       int8    BUY/BID = +1, SELL/ASK = -1, NONE = 0 (book side, aggressor side, order side)
flags      uint16  bit set; the ``F_*`` constants below
=========  ======  ==========================================================================================

Prices are int64 *ticks* and quantities int64 *lots* of the symbol (see :mod:`hean.symbols` for the exact
decimal conversion); money (PnL, fees, notional) is float64 in the quote currency.

Bump :data:`RECORDS_VERSION` whenever a layout changes: rings store it and refuse to attach across versions.
Native event files hold only MARKET_EVENT records and store :data:`EVENTS_VERSION`, bumped only when that
layout changes (so a new ORDER layout does not make users convert their recordings again).
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

RECORDS_VERSION = 2  # 2: ORDER.client_id (ORDER is 128 bytes), EXEC_REPORT.client_id and .strategy
EVENTS_VERSION = 1  # the MARKET_EVENT layout (native event files)
CACHE_LINE = 64

HEADER_FIELDS: list[tuple[str, str]] = [
    ("seq", "<i8"),
    ("ts_origin", "<i8"),
    ("ts_exch", "<i8"),
    ("symbol", "<i4"),
    ("kind", "u1"),
    ("side", "i1"),
    ("flags", "<u2"),
]
HEADER_SIZE = 32


def padded_dtype(fields: list[tuple[str, str]], name: str) -> np.dtype:
    """A packed structured dtype, padded at the end to the next multiple of 64 bytes."""
    dt = np.dtype(fields)
    size = -(-dt.itemsize // CACHE_LINE) * CACHE_LINE
    if size != dt.itemsize:
        # a u1 sub-array, not a ``V`` field: numba cannot type arrays or records holding void fields
        dt = np.dtype(fields + [("_pad", "u1", (size - dt.itemsize,))])
    assert dt.itemsize % CACHE_LINE == 0, name
    return dt


def with_header(body: list[tuple[str, str]], name: str) -> np.dtype:
    """The common header followed by ``body``, padded to a cache-line multiple."""
    return padded_dtype(HEADER_FIELDS + body, name)


# ---------------------------------------------------------------------------------------------------------
# sides and flags (shared by all records)
# ---------------------------------------------------------------------------------------------------------
BUY = BID = 1
SELL = ASK = -1
NO_SIDE = 0

F_LAST_IN_GROUP = 1 << 0  # last event of one exchange message: the book is consistent after applying it
F_SNAPSHOT = 1 << 1  # the event is part of a snapshot (after a CLEAR)
F_HIDDEN = 1 << 2  # execution of a hidden order (LOBSTER type 5): no visible level changes
F_STALE = 1 << 3  # book state: the book is out of sync or has not updated within the stale window
F_CROSSED = 1 << 4  # book state: best bid >= best ask
F_REDUCE_ONLY = 1 << 5  # order: may only reduce the position
F_POST_ONLY = 1 << 6  # order: reject rather than take liquidity
F_OPENS_ORDER = 1 << 7  # exec report (router -> risk): first report of an order risk has not counted as open yet


# ---------------------------------------------------------------------------------------------------------
# market events: feed -> book
# ---------------------------------------------------------------------------------------------------------
class EventKind(IntEnum):
    """``kind`` of a :data:`MARKET_EVENT`."""

    LEVEL_SET = 1  # L2: set the level (side, price) to qty lots; qty 0 deletes it
    CLEAR = 2  # L2/L3: clear the symbol's book (a snapshot's level sets follow, flagged F_SNAPSHOT)
    TRADE = 3  # a print: price, qty, side = aggressor side, order_id = exchange trade id
    L3_ADD = 4  # L3: new order order_id at (side, price) with qty
    L3_MODIFY = 5  # L3: order order_id now has qty (and price; a price change loses queue priority)
    L3_CANCEL = 6  # L3: order order_id reduced by qty (partial cancel)
    L3_DELETE = 7  # L3: order order_id removed entirely
    L3_EXECUTE = 8  # L3: order order_id executed for qty at price
    OUT_OF_SYNC = 9  # the feed lost its sequence (gap / broken chain): the book is stale until resync
    TICKER = 10  # the exchange's own best bid or ask (Binance bookTicker), emitted as a BID/ASK pair
    HALT = 11  # trading halt on the symbol (LOBSTER type 7)
    CLOCK = 12  # simulated time passes to ts_exch (the replay's scheduler to the venue: hean.stages.feed)


MARKET_EVENT = with_header(
    [
        ("price", "<i8"),  # ticks
        ("qty", "<i8"),  # lots
        ("order_id", "<i8"),  # L3 order id; exchange trade id for TRADE
        ("update_id", "<i8"),  # exchange's update id (Binance u, Bybit u, LOBSTER message index)
    ],
    "MARKET_EVENT",
)
"""One market event, 64 bytes. kind: :class:`EventKind`.

TICKER (the exchange's own best bid/ask, used as an oracle) travels as a pair of events: (side=BID,
price=bid, qty=bid_qty) then (side=ASK, price=ask, qty=ask_qty, F_LAST_IN_GROUP); ``order_id`` is 0.
"""

# ---------------------------------------------------------------------------------------------------------
# book state: book -> indicators/strategy
# ---------------------------------------------------------------------------------------------------------
BOOK_STATE = with_header(
    [
        ("bid_px", "<i8"),  # ticks; 0 when the side is empty
        ("bid_qty", "<i8"),  # lots
        ("ask_px", "<i8"),  # ticks; 0 when the side is empty
        ("ask_qty", "<i8"),  # lots
        ("spread", "<i8"),  # ask_px - bid_px in ticks (0 when a side is empty)
        ("mid", "<f8"),  # (bid_px + ask_px) / 2 in ticks
        ("microprice", "<f8"),  # (bid_px * ask_qty + ask_px * bid_qty) / (bid_qty + ask_qty), ticks
        ("imbalance", "<f8"),  # (bid_qty - ask_qty) / (bid_qty + ask_qty), in [-1, 1]
        ("last_trade_px", "<i8"),  # ticks
        ("last_trade_qty", "<i8"),  # lots
        ("vwap", "<f8"),  # rolling trade VWAP over the configured window, ticks
        ("update_id", "<i8"),  # exchange update id of the last applied event
    ],
    "BOOK_STATE",
)
"""Top of book after one consistent event group, 128 bytes. kind: :class:`BookStateKind`."""


class BookStateKind(IntEnum):
    QUOTE = 1  # the top of book changed (or a group was applied)
    TRADE = 2  # a trade printed (last_trade_* updated)
    STATUS = 3  # staleness/crossed status changed (see flags F_STALE, F_CROSSED)


# ---------------------------------------------------------------------------------------------------------
# orders: strategy -> risk -> router -> venue
# ---------------------------------------------------------------------------------------------------------
class OrderAction(IntEnum):
    """``kind`` of an :data:`ORDER` record."""

    NEW = 1
    CANCEL = 2
    REPLACE = 3  # new price/qty for order_id
    CANCEL_ALL = 4  # cancel every open order of the symbol (symbol -1: of every symbol)


class OrderType(IntEnum):
    LIMIT = 1
    MARKET = 2


class TimeInForce(IntEnum):
    GTC = 1
    IOC = 2
    FOK = 3


ORDER = with_header(
    [
        ("order_id", "<i8"),  # assigned by the router; the target for CANCEL/REPLACE; 0 on a fresh intent
        ("price", "<i8"),  # limit price, ticks (0 for MARKET)
        ("qty", "<i8"),  # lots, > 0
        ("order_type", "u1"),  # OrderType
        ("tif", "u1"),  # TimeInForce
        ("strategy", "u1"),  # strategy index
        ("reason", "u1"),  # RejectReason when risk rejected it (telemetry copies), else 0
        ("venue", "<i2"),  # venue index chosen by the router (-1: router decides)
        ("_res", "<u2"),
        ("client_id", "<i8"),  # the strategy's own id of the order (>0), echoed in every report; 0: none
    ],
    "ORDER",
)
"""An order intent or order, 128 bytes. kind: :class:`OrderAction`; side: BUY/SELL.

``client_id`` is how a strategy knows its orders: it names a NEW (ids from 1, per strategy), and the router
copies it from the parent into every EXEC_REPORT of that order, so a strategy sees its fills without knowing
router ids. For a CANCEL/REPLACE, ``order_id`` names the target (the router's id, from the reports) and
``client_id`` repeats the target's client id.
"""


# ---------------------------------------------------------------------------------------------------------
# execution reports: venue -> router -> risk
# ---------------------------------------------------------------------------------------------------------
class ExecType(IntEnum):
    """``kind`` of an :data:`EXEC_REPORT`."""

    ACK = 1  # accepted by the venue, resting
    PARTIAL_FILL = 2
    FILL = 3  # fully filled (leaves_qty == 0)
    CANCELED = 4
    REJECTED = 5
    EXPIRED = 6  # IOC/FOK remainder, or venue-side expiry
    REPLACED = 7
    CANCEL_REJECTED = 8  # the cancel arrived too late (order already filled) or the id was unknown


EXEC_REPORT = with_header(
    [
        ("order_id", "<i8"),
        ("price", "<i8"),  # fill price (ticks) for fills; order price otherwise
        ("qty", "<i8"),  # this fill's quantity (lots); 0 for non-fill reports
        ("leaves_qty", "<i8"),  # quantity still open after this report
        ("cum_qty", "<i8"),  # total filled so far
        ("fee", "<f8"),  # fee of this fill in quote currency (negative = rebate)
        ("ts_venue", "<i8"),  # venue-side time of the event (simulated clock for the simulated venue)
        ("client_id", "<i8"),  # ORDER.client_id of the order (0 for orders without one)
        ("venue", "<i2"),
        ("reason", "u1"),  # RejectReason / venue reject code for REJECTED
        ("liquidity", "u1"),  # 1 = maker, 2 = taker
        ("strategy", "u1"),  # ORDER.strategy of the order
    ],
    "EXEC_REPORT",
)
"""An execution report, 128 bytes. kind: :class:`ExecType`; side: the order's side."""


# ---------------------------------------------------------------------------------------------------------
# control: operator/engine -> risk, router
# ---------------------------------------------------------------------------------------------------------
class ControlCommand(IntEnum):
    """``kind`` of a :data:`CONTROL` record."""

    STOP = 1  # drain and stop
    HALT = 2  # kill switch: trading state HALTED, cancel every open order
    RESUME = 3  # back to ACTIVE
    REDUCE = 4  # trading state REDUCING
    SET = 5  # a risk limit: ``side`` the key (hean.stages.risk.LIMIT_KEYS), ``arg`` the value's float64 bits
    NEW_DAY = 6  # a new trading day: the daily loss counts from the current equity again


CONTROL = with_header([("arg", "<i8"), ("issued_ns", "<i8")], "CONTROL")
"""A control command, 64 bytes. kind: :class:`ControlCommand`; symbol -1 = every symbol."""


ALL_DTYPES: dict[str, np.dtype] = {
    "MARKET_EVENT": MARKET_EVENT,
    "BOOK_STATE": BOOK_STATE,
    "ORDER": ORDER,
    "EXEC_REPORT": EXEC_REPORT,
    "CONTROL": CONTROL,
}

for _name, _dt in ALL_DTYPES.items():
    for _f, (_ft, _off) in _dt.fields.items():  # every field naturally aligned (atomic-free, one load each)
        assert _off % min(_ft.itemsize if _ft.subdtype is None else _ft.base.itemsize, 8) == 0, (_name, _f)
    assert _dt.itemsize % CACHE_LINE == 0, _name
    assert _dt.names[: len(HEADER_FIELDS)] == tuple(n for n, _ in HEADER_FIELDS), _name
    assert _dt.fields["flags"][1] + 2 == HEADER_SIZE, _name
assert MARKET_EVENT.itemsize == 64 and CONTROL.itemsize == 64
assert BOOK_STATE.itemsize == 128 and ORDER.itemsize == 128 and EXEC_REPORT.itemsize == 128


# ---------------------------------------------------------------------------------------------------------
# reject reasons: ORDER.reason, EXEC_REPORT.reason
# ---------------------------------------------------------------------------------------------------------
class RejectReason(IntEnum):
    """Why an order was refused: ``ORDER.reason`` / ``EXEC_REPORT.reason`` (risk, router, venue, gateway)."""

    NONE = 0
    BAD_SYMBOL = 1  # symbol id outside the table, or a listing of another symbol (orders name the instrument)
    BAD_SIDE = 2  # side not +1/-1
    BAD_QTY = 3  # qty <= 0
    BAD_PRICE = 4  # LIMIT price <= 0
    BAD_TYPE = 5  # unknown action / order type / tif, or an impossible combination (MARKET + POST_ONLY)
    TICK_SIZE = 6  # price not a multiple of the price increment
    LOT_SIZE = 7  # qty not a multiple of the qty increment
    MIN_QTY = 8  # qty below the minimum
    MAX_ORDER_QTY = 9
    MAX_NOTIONAL = 10
    MAX_POSITION = 11  # position after the order (with open orders) beyond the limit
    MAX_GROSS_EXPOSURE = 12
    MAX_LEVERAGE = 13  # gross exposure / equity beyond the limit (or equity <= 0)
    DAILY_LOSS = 14
    DRAWDOWN = 15
    RATE_SYMBOL = 16  # too many orders per second on the symbol
    RATE_TOTAL = 17  # too many orders per second in total
    MAX_OPEN_ORDERS = 18
    PRICE_COLLAR = 19  # limit price too far from mid
    STATE_REDUCING = 20  # trading state REDUCING and the order does not reduce
    STATE_HALTED = 21  # trading state HALTED
    BOOK_STALE = 22  # no usable book: stale, crossed, too old, or never seen
    REDUCE_ONLY = 23  # F_REDUCE_ONLY order that would not reduce
    BAD_ORDER_ID = 24  # CANCEL/REPLACE without an order id
    UNKNOWN_ORDER = 25  # router/venue: no such live order
    ROUTER_HALTED = 26  # the router was halted (a worker died)
    TABLE_FULL = 27  # the order table has no free slot
    NO_LIQUIDITY = 28  # router/venue: a market order with no price on any venue
    VENUE_REJECT = 29  # the simulated venue's random reject
    POST_ONLY_CROSS = 30  # a post-only order would have taken liquidity
    TOO_LATE = 31  # cancel/replace of an order that is no longer open at the venue
    INVALID_TRANSITION = 32  # the order state machine does not allow the request (e.g. a second cancel)
    REPLACE_SPLIT = 33  # replace of an order split across venues (not supported: cancel and re-send)
    MALFORMED = 34  # gateway: a datagram that does not decode
    BAD_VENUE = 35  # venue index outside the configured venues


# int constants for the kernels (numba folds module globals)
R_NONE = int(RejectReason.NONE)
R_BAD_SYMBOL = int(RejectReason.BAD_SYMBOL)
R_BAD_SIDE = int(RejectReason.BAD_SIDE)
R_BAD_QTY = int(RejectReason.BAD_QTY)
R_BAD_PRICE = int(RejectReason.BAD_PRICE)
R_BAD_TYPE = int(RejectReason.BAD_TYPE)
R_TICK_SIZE = int(RejectReason.TICK_SIZE)
R_LOT_SIZE = int(RejectReason.LOT_SIZE)
R_MIN_QTY = int(RejectReason.MIN_QTY)
R_MAX_ORDER_QTY = int(RejectReason.MAX_ORDER_QTY)
R_MAX_NOTIONAL = int(RejectReason.MAX_NOTIONAL)
R_MAX_POSITION = int(RejectReason.MAX_POSITION)
R_MAX_GROSS_EXPOSURE = int(RejectReason.MAX_GROSS_EXPOSURE)
R_MAX_LEVERAGE = int(RejectReason.MAX_LEVERAGE)
R_DAILY_LOSS = int(RejectReason.DAILY_LOSS)
R_DRAWDOWN = int(RejectReason.DRAWDOWN)
R_RATE_SYMBOL = int(RejectReason.RATE_SYMBOL)
R_RATE_TOTAL = int(RejectReason.RATE_TOTAL)
R_MAX_OPEN_ORDERS = int(RejectReason.MAX_OPEN_ORDERS)
R_PRICE_COLLAR = int(RejectReason.PRICE_COLLAR)
R_STATE_REDUCING = int(RejectReason.STATE_REDUCING)
R_STATE_HALTED = int(RejectReason.STATE_HALTED)
R_BOOK_STALE = int(RejectReason.BOOK_STALE)
R_REDUCE_ONLY = int(RejectReason.REDUCE_ONLY)
R_BAD_ORDER_ID = int(RejectReason.BAD_ORDER_ID)
R_UNKNOWN_ORDER = int(RejectReason.UNKNOWN_ORDER)
R_ROUTER_HALTED = int(RejectReason.ROUTER_HALTED)
R_TABLE_FULL = int(RejectReason.TABLE_FULL)
R_NO_LIQUIDITY = int(RejectReason.NO_LIQUIDITY)
R_VENUE_REJECT = int(RejectReason.VENUE_REJECT)
R_POST_ONLY_CROSS = int(RejectReason.POST_ONLY_CROSS)
R_TOO_LATE = int(RejectReason.TOO_LATE)
R_INVALID_TRANSITION = int(RejectReason.INVALID_TRANSITION)
R_REPLACE_SPLIT = int(RejectReason.REPLACE_SPLIT)
R_MALFORMED = int(RejectReason.MALFORMED)
R_BAD_VENUE = int(RejectReason.BAD_VENUE)

N_REASONS = 64  # length of every per-reason counter array


# ---------------------------------------------------------------------------------------------------------
# the codes above as plain ints, for the kernels (numba folds module globals; an IntEnum member it would not)
# ---------------------------------------------------------------------------------------------------------
A_NEW, A_CANCEL = int(OrderAction.NEW), int(OrderAction.CANCEL)
A_REPLACE, A_CANCEL_ALL = int(OrderAction.REPLACE), int(OrderAction.CANCEL_ALL)
T_LIMIT, T_MARKET = int(OrderType.LIMIT), int(OrderType.MARKET)
X_ACK, X_PARTIAL, X_FILL = int(ExecType.ACK), int(ExecType.PARTIAL_FILL), int(ExecType.FILL)
X_CANCELED, X_REJECTED, X_EXPIRED = int(ExecType.CANCELED), int(ExecType.REJECTED), int(ExecType.EXPIRED)
X_REPLACED, X_CANCEL_REJECTED = int(ExecType.REPLACED), int(ExecType.CANCEL_REJECTED)
K_STOP, K_HALT = int(ControlCommand.STOP), int(ControlCommand.HALT)
K_RESUME, K_REDUCE = int(ControlCommand.RESUME), int(ControlCommand.REDUCE)
K_SET, K_NEW_DAY = int(ControlCommand.SET), int(ControlCommand.NEW_DAY)
