"""What a strategy returns: zero or one order intent, as a fixed tuple of int64 (no allocation, no objects).

An intent is ``(action, side, qty, price, order_type, tif, flags)``:

===========  ===========================================================================================
action       :class:`hean.records.OrderAction` (NEW, CANCEL, REPLACE, CANCEL_ALL); 0 = no order
side         BUY = +1, SELL = -1 (0 for CANCEL_ALL)
qty          lots, > 0 for NEW/REPLACE
price        limit price in ticks (0 for MARKET and cancels)
order_type   :class:`hean.records.OrderType` (LIMIT, MARKET)
tif          :class:`hean.records.TimeInForce` (GTC, IOC, FOK)
flags        ``hean.records.F_POST_ONLY`` / ``F_REDUCE_ONLY`` bits for the ORDER record
===========  ===========================================================================================

The strategy stage copies it into an ORDER record (with ``order_id`` 0: the router assigns ids). A CANCEL or
REPLACE with ``order_id`` 0 means "this strategy's resting order on ``side`` of this symbol" -- strategies do
not see router ids; the router resolves the target (the lead's router contract).
"""

from __future__ import annotations

import numpy as np

from hean.jit import kernel
from hean.records import OrderAction, OrderType, TimeInForce

NEW = int(OrderAction.NEW)
CANCEL = int(OrderAction.CANCEL)
REPLACE = int(OrderAction.REPLACE)
CANCEL_ALL = int(OrderAction.CANCEL_ALL)
LIMIT = int(OrderType.LIMIT)
MARKET = int(OrderType.MARKET)
GTC = int(TimeInForce.GTC)
IOC = int(TimeInForce.IOC)
FOK = int(TimeInForce.FOK)

# A strategy's functions are ``@kernel(inline=True, error_model="numpy")`` (hean.jit): inlined into the
# stage's IR, which saves passing its NamedTuples by value per event, and so compiled like the stage, without
# reference counting (a strategy must not allocate) and with numpy's division (x / 0 is inf or nan, no
# exception path). These helpers are inlined the same way.


@kernel(inline=True)
def no_order():
    """The empty intent."""
    z = np.int64(0)
    return (z, z, z, z, z, z, z)


@kernel(inline=True)
def intent(action, side, qty, price, order_type, tif, flags):
    """An intent tuple with every field int64 (numba unifies the return type of all branches on this)."""
    return (
        np.int64(action),
        np.int64(side),
        np.int64(qty),
        np.int64(price),
        np.int64(order_type),
        np.int64(tif),
        np.int64(flags),
    )


@kernel(inline=True)
def event_time(bs):
    """The event's time in ns: the exchange's when known (deterministic in replay), else the origin stamp."""
    return bs.ts_exch if bs.ts_exch > 0 else bs.ts_origin
