"""Order management: the order state machine as a transition table, and the order table the router keeps.

Why a table and not ``if`` chains: every (state, event) pair has exactly one answer written down in one
place (:data:`TRANSITIONS`), the kernels look it up in O(1), and an event that is not allowed from the
current state is *counted* (per state and event, in ``OrderTable.invalid``) and leaves the order untouched
instead of corrupting it. The semantics follow NautilusTrader's order state machine, reduced to the states
HEAN's venues produce:

==================  ===========================================================================================
state               meaning
==================  ===========================================================================================
NEW                 created by the router, not yet sent
SENT                handed to the venue, no answer yet
ACKNOWLEDGED        the venue accepted it and it rests, nothing filled
PARTIALLY_FILLED    some quantity filled, the rest is open
FILLED              terminal: fully filled
CANCEL_PENDING      a cancel was sent; fills may still arrive (they crossed the cancel on the wire)
CANCELED            terminal
REJECTED            terminal: refused by the venue (or by the router before sending)
EXPIRED             terminal: IOC/FOK remainder or venue-side expiry
REPLACE_PENDING     a replace (new price/qty) was sent; fills may still arrive
==================  ===========================================================================================

A target of :data:`RESTORE` means "back to where the order was before the pending request":
ACKNOWLEDGED when nothing has filled, else PARTIALLY_FILLED (a rejected cancel, a completed replace).

Order ids are assigned here, sequentially from 1, and the table is a direct-mapped array of a power-of-two
capacity: ``slot = order_id & (capacity - 1)``. Lookup is one load and one compare. A new id whose slot is
still held by a *live* order (one that is more than ``capacity`` ids old and still open) is refused and
counted (``meta[M_FULL]``); terminal orders are overwritten, so reports for long-dead orders are unknown ids.

Kernels are compiled with ``_nrt=False``: they never allocate, and numba would otherwise reference-count
every array of a NamedTuple argument on each call (hundreds of ns; see :mod:`hean.stages.book`).
"""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple

import numpy as np

from hean.jit import kernel
from hean.records import ExecType

__all__ = [
    "EXEC_TO_EVENT",
    "INVALID",
    "MAX_CHILDREN",
    "RESTORE",
    "TRANSITIONS",
    "OrderEvent",
    "OrderState",
    "OrderTable",
    "OC_LEN",
    "make_order_table",
    "ot_allows",
    "ot_apply",
    "ot_is_live",
    "ot_new",
    "ot_slot",
]


class OrderState(IntEnum):
    NEW = 0
    SENT = 1
    ACKNOWLEDGED = 2
    PARTIALLY_FILLED = 3
    FILLED = 4
    CANCEL_PENDING = 5
    CANCELED = 6
    REJECTED = 7
    EXPIRED = 8
    REPLACE_PENDING = 9


class OrderEvent(IntEnum):
    SUBMIT = 0  # the router sent it to the venue
    ACK = 1
    PARTIAL_FILL = 2
    FILL = 3
    CANCEL_REQUEST = 4  # the router sent a cancel
    CANCELED = 5
    REJECT = 6
    EXPIRE = 7
    REPLACE_REQUEST = 8  # the router sent a replace
    REPLACED = 9
    CANCEL_REJECT = 10  # the venue refused a cancel or replace (too late, unknown)


# int constants for the kernels (numba folds module globals)
ST_NEW, ST_SENT, ST_ACKNOWLEDGED, ST_PARTIALLY_FILLED, ST_FILLED = 0, 1, 2, 3, 4
ST_CANCEL_PENDING, ST_CANCELED, ST_REJECTED, ST_EXPIRED, ST_REPLACE_PENDING = 5, 6, 7, 8, 9
EV_SUBMIT, EV_ACK, EV_PARTIAL_FILL, EV_FILL, EV_CANCEL_REQUEST, EV_CANCELED = 0, 1, 2, 3, 4, 5
EV_REJECT, EV_EXPIRE, EV_REPLACE_REQUEST, EV_REPLACED, EV_CANCEL_REJECT = 6, 7, 8, 9, 10
assert [ST_NEW, ST_SENT, ST_ACKNOWLEDGED, ST_PARTIALLY_FILLED, ST_FILLED, ST_CANCEL_PENDING, ST_CANCELED,
        ST_REJECTED, ST_EXPIRED, ST_REPLACE_PENDING] == [int(s) for s in OrderState]  # fmt: skip
assert [EV_SUBMIT, EV_ACK, EV_PARTIAL_FILL, EV_FILL, EV_CANCEL_REQUEST, EV_CANCELED, EV_REJECT, EV_EXPIRE,
        EV_REPLACE_REQUEST, EV_REPLACED, EV_CANCEL_REJECT] == [int(e) for e in OrderEvent]  # fmt: skip

N_STATES = len(OrderState)
N_EVENTS = len(OrderEvent)
INVALID = -1  # table entry: the event is not allowed in this state
RESTORE = -2  # table entry: ACKNOWLEDGED if nothing filled yet, else PARTIALLY_FILLED
MAX_CHILDREN = 8  # a routed parent order is split into at most this many venue (child) orders

S, E = OrderState, OrderEvent
_LIVE_FROM_VENUE = {  # what may happen to an order that is working at the venue
    E.PARTIAL_FILL: S.PARTIALLY_FILLED,
    E.FILL: S.FILLED,
    E.CANCEL_REQUEST: S.CANCEL_PENDING,
    E.CANCELED: S.CANCELED,  # unsolicited (venue-side) cancel
    E.EXPIRE: S.EXPIRED,
    E.REPLACE_REQUEST: S.REPLACE_PENDING,
}
_RULES: dict[OrderState, dict[OrderEvent, int]] = {
    S.NEW: {E.SUBMIT: S.SENT, E.REJECT: S.REJECTED, E.CANCEL_REQUEST: S.CANCELED},
    S.SENT: {
        E.ACK: S.ACKNOWLEDGED,
        E.REJECT: S.REJECTED,
        **_LIVE_FROM_VENUE,  # a marketable order may fill (or an IOC expire) without a separate ack
    },
    S.ACKNOWLEDGED: dict(_LIVE_FROM_VENUE),
    S.PARTIALLY_FILLED: dict(_LIVE_FROM_VENUE),
    S.CANCEL_PENDING: {
        E.ACK: S.CANCEL_PENDING,  # the ack of the order crossed our cancel on the wire
        E.PARTIAL_FILL: S.CANCEL_PENDING,  # a fill after the cancel request: real, not an error
        E.FILL: S.FILLED,
        E.CANCELED: S.CANCELED,
        E.EXPIRE: S.EXPIRED,
        E.REJECT: S.REJECTED,  # the order itself was rejected while our cancel was in flight
        E.CANCEL_REJECT: RESTORE,
    },
    S.REPLACE_PENDING: {
        E.ACK: S.REPLACE_PENDING,
        E.PARTIAL_FILL: S.REPLACE_PENDING,
        E.FILL: S.FILLED,
        E.REPLACED: RESTORE,
        E.CANCEL_REJECT: RESTORE,
        E.CANCELED: S.CANCELED,
        E.EXPIRE: S.EXPIRED,
        E.REJECT: S.REJECTED,
        E.CANCEL_REQUEST: S.CANCEL_PENDING,
    },
    # FILLED, CANCELED, REJECTED, EXPIRED are terminal: every event is invalid
}


def _build_table() -> np.ndarray:
    table = np.full((N_STATES, N_EVENTS), INVALID, dtype=np.int64)
    for state, rules in _RULES.items():
        for event, target in rules.items():
            table[state, event] = int(target)
    table.setflags(write=False)
    return table


TRANSITIONS = _build_table()
"""int64[state, event] -> next state, :data:`INVALID` or :data:`RESTORE`."""

TERMINAL = np.zeros(N_STATES, dtype=np.bool_)
TERMINAL[[S.FILLED, S.CANCELED, S.REJECTED, S.EXPIRED]] = True
TERMINAL.setflags(write=False)

EXEC_TO_EVENT = np.full(16, INVALID, dtype=np.int64)
"""ExecType (EXEC_REPORT.kind) -> OrderEvent; INVALID for unknown kinds."""
for _x, _e in (
    (ExecType.ACK, E.ACK),
    (ExecType.PARTIAL_FILL, E.PARTIAL_FILL),
    (ExecType.FILL, E.FILL),
    (ExecType.CANCELED, E.CANCELED),
    (ExecType.REJECTED, E.REJECT),
    (ExecType.EXPIRED, E.EXPIRE),
    (ExecType.REPLACED, E.REPLACED),
    (ExecType.CANCEL_REJECTED, E.CANCEL_REJECT),
):
    EXEC_TO_EVENT[_x] = _e
EXEC_TO_EVENT.setflags(write=False)

# meta[] indices
M_NEXT_ID = 0  # next order id to hand out (starts at 1; 0 means "no id")
M_FULL = 1  # new orders refused because their slot was held by a live order
M_INVALID = 2  # total invalid transitions (also per (state, event) in ``invalid``)
M_TRANSITIONS = 3  # total valid transitions applied
M_LEN = 8


# cols[] columns, one row per order (one 2-D array rather than twenty: every kernel takes the OrderTable tuple by
# value, and numba's compile time and per-call cost grow with the number of arrays in it). All int64.
OC_ID = 0  # order id; 0 = never used
OC_PARENT = 1  # slot of the parent; -1 for a parent
OC_SYMBOL = 2
OC_SIDE = 3  # +1 / -1
OC_PRICE = 4  # limit price, ticks (0 for market)
OC_QTY = 5  # order quantity, lots (cum + leaves + removed after replaces)
OC_LEAVES = 6  # open quantity
OC_CUM = 7  # filled quantity
OC_REMOVED = 8  # quantity canceled / expired / rejected
OC_STATE = 9  # OrderState
OC_VENUE = 10  # venue index (children; -1 for parents)
OC_ORDER_TYPE = 11  # OrderType
OC_TIF = 12  # TimeInForce
OC_FLAGS = 13  # ORDER flags
OC_STRATEGY = 14
OC_LIVE_CHILDREN = 15  # children not yet terminal (parents)
OC_N_CHILDREN = 16
OC_ANY_REJECTED = 17  # children rejected (parents; decides REJECTED vs CANCELED at the end)
OC_TS_CREATED = 18  # ns
OC_RISK_UNSEEN = 19  # 1 until the first report about this parent is forwarded to risk (F_OPENS_ORDER)
OC_CLIENT = 20  # ORDER.client_id (parents and their children): echoed in every report
OC_LEN = 21


class OrderTable(NamedTuple):
    """The direct-mapped order table; ``slot = order_id & (capacity - 1)``; columns ``cols[slot, OC_*]``.

    Parents (what risk and the strategy see) and children (what a venue sees) share the table: a child has
    ``OC_PARENT`` = its parent's slot, a parent has -1 there and its children's slots in ``children``.
    Quantities are lots, prices ticks, fees quote currency.
    """

    cols: np.ndarray  # int64[capacity, OC_LEN]
    children: np.ndarray  # int64[capacity, MAX_CHILDREN] child slots (parents)
    fees: np.ndarray  # float64[capacity] quote currency
    invalid: np.ndarray  # int64[N_STATES, N_EVENTS] invalid transition counts
    meta: np.ndarray  # int64[M_LEN]
    table: np.ndarray  # int64[N_STATES, N_EVENTS] = TRANSITIONS
    terminal: np.ndarray  # bool[N_STATES]


def make_order_table(capacity: int = 4096) -> OrderTable:
    """An empty table. ``capacity``: a power of two, the most orders that can be open at once."""
    if capacity < 2 or capacity & (capacity - 1):
        raise ValueError(f"order table capacity must be a power of two >= 2, got {capacity}")
    cols = np.zeros((capacity, OC_LEN), dtype=np.int64)
    cols[:, OC_PARENT] = -1
    cols[:, OC_VENUE] = -1
    cols[:, OC_STATE] = int(S.NEW)
    meta = np.zeros(M_LEN, dtype=np.int64)
    meta[M_NEXT_ID] = 1
    return OrderTable(
        cols=cols,
        children=np.full((capacity, MAX_CHILDREN), -1, dtype=np.int64),
        fees=np.zeros(capacity, dtype=np.float64),
        invalid=np.zeros((N_STATES, N_EVENTS), dtype=np.int64),
        meta=meta,
        table=TRANSITIONS.copy(),
        terminal=TERMINAL.copy(),
    )


@kernel
def ot_slot(ot, order_id):
    """Slot of ``order_id``, or -1 when the id is unknown (never issued, or its slot was reused)."""
    if order_id <= 0:
        return -1
    slot = order_id & (ot.cols.shape[0] - 1)
    if ot.cols[slot, OC_ID] != order_id:
        return -1
    return slot


@kernel
def ot_is_live(ot, slot):
    """True while the order in ``slot`` exists and is not terminal."""
    return ot.cols[slot, OC_ID] != 0 and not ot.terminal[ot.cols[slot, OC_STATE]]


@kernel
def ot_new(ot, parent, symbol, side, price, qty, venue, order_type, tif, flags, strategy, client_id, now_ns):
    """Create an order in state NEW with the next id; its slot, or -1 (counted) when the slot is live."""
    order_id = ot.meta[M_NEXT_ID]
    slot = order_id & (ot.cols.shape[0] - 1)
    if ot_is_live(ot, slot):
        ot.meta[M_FULL] += 1
        return -1
    ot.meta[M_NEXT_ID] = order_id + 1
    ot.cols[slot, OC_ID] = order_id
    ot.cols[slot, OC_PARENT] = parent
    ot.cols[slot, OC_SYMBOL] = symbol
    ot.cols[slot, OC_SIDE] = side
    ot.cols[slot, OC_PRICE] = price
    ot.cols[slot, OC_QTY] = qty
    ot.cols[slot, OC_LEAVES] = qty
    ot.cols[slot, OC_CUM] = 0
    ot.cols[slot, OC_REMOVED] = 0
    ot.cols[slot, OC_STATE] = ST_NEW
    ot.cols[slot, OC_VENUE] = venue
    ot.cols[slot, OC_ORDER_TYPE] = order_type
    ot.cols[slot, OC_TIF] = tif
    ot.cols[slot, OC_FLAGS] = flags
    ot.cols[slot, OC_STRATEGY] = strategy
    ot.cols[slot, OC_CLIENT] = client_id
    ot.cols[slot, OC_LIVE_CHILDREN] = 0
    ot.cols[slot, OC_N_CHILDREN] = 0
    ot.cols[slot, OC_ANY_REJECTED] = 0
    ot.cols[slot, OC_TS_CREATED] = now_ns
    ot.cols[slot, OC_RISK_UNSEEN] = 0
    ot.fees[slot] = 0.0
    return slot


@kernel
def ot_allows(ot, slot, event):
    """True when ``event`` is a valid transition from the state of ``slot`` (nothing is counted)."""
    return ot.table[ot.cols[slot, OC_STATE], event] != INVALID


@kernel
def ot_apply(ot, slot, event):
    """Apply ``event`` to the order in ``slot``: the new state, or -1 (counted, state kept) if invalid."""
    state = ot.cols[slot, OC_STATE]
    if event < 0 or event >= ot.table.shape[1]:
        ot.meta[M_INVALID] += 1
        return -1
    target = ot.table[state, event]
    if target == INVALID:
        ot.invalid[state, event] += 1
        ot.meta[M_INVALID] += 1
        return -1
    if target == RESTORE:
        target = ST_PARTIALLY_FILLED if ot.cols[slot, OC_CUM] > 0 else ST_ACKNOWLEDGED
    ot.cols[slot, OC_STATE] = target
    ot.meta[M_TRANSITIONS] += 1
    return target
