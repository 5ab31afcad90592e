"""The rows of a backtest's orders and fills tables (:mod:`hean.research`), filled by compiled loops.

Why compiled: the tables are built from each strategy's logs of the actions it sent and the reports it
received (:mod:`hean.stages.strategy`), field by field. As numpy column copies that was ~25 array operations
per table and ~0.5 ms of every backtest's read-out (a tenth of what a backtest of the Binance sample spends
outside its loop); one pass over the log rows does it in a few microseconds. The column layouts are
:data:`hean.research.ORDERS` and :data:`hean.research.FILLS`.
"""

from __future__ import annotations

import numpy as np

from hean.api import CANCELED, EXPIRED, FILLED, OPEN, PENDING, REJECTED
from hean.jit import entry, kernel
from hean.records import A_NEW, X_CANCELED, X_EXPIRED, X_FILL, X_PARTIAL, X_REJECTED

__all__ = ["fill_rows", "n_fills", "order_outcomes", "order_rows"]

# order_outcomes' scratch columns, per distinct client id; a _STATE of 0 is "no final report yet" (no order
# state has the code 0)
_SEEN, _STATE, _FILLED, _REASON = 0, 1, 2, 3
N_SCRATCH = 4
assert 0 not in (OPEN, PENDING, FILLED, CANCELED, EXPIRED, REJECTED)


@kernel(forceinline=True)
def _row_of(cid, ids, lo, n):
    """``cid``'s scratch row: ``cid - lo`` when ``ids`` is empty (a dense range of ids from ``lo``), else its
    place among the sorted ``ids``; -1 when it has none."""
    if ids.shape[0] == 0:
        g = cid - lo
        return g if 0 <= g < n else -1
    g = np.searchsorted(ids, cid)
    return g if g < n and ids[g] == cid else -1


@entry
def order_outcomes(cids, ids, lo, reports, scratch, out):
    """``out[i]`` = (state, filled lots, reject reason) of the order with client id ``cids[i]``, from the
    reports it received, in their order: the state of its last final report (FILLED, CANCELED, EXPIRED,
    REJECTED; else OPEN, and PENDING with no report at all), the lots of its fills, the reason of its last
    rejection (else 0). A client id's row of ``scratch`` (int64[rows, N_SCRATCH], zeroed): ``id - lo`` when
    ``ids`` is empty -- the ids the engine hands out run from 1 without gaps, so a strategy's lie in a short
    range -- else its place in ``ids``, the sorted distinct ``cids``. ``out``: int64[len(cids), 3]."""
    n = scratch.shape[0]
    for i in range(reports.shape[0]):
        p = reports[i]
        g = _row_of(p.client_id, ids, lo, n)
        if g < 0:
            continue  # (a report of no order in the log: a row the log lost)
        a = scratch[g]
        a[_SEEN] = 1
        k = p.kind
        if k == X_PARTIAL:
            a[_FILLED] += p.qty
        elif k == X_FILL:
            a[_FILLED] += p.qty
            a[_STATE] = FILLED
        elif k == X_CANCELED:
            a[_STATE] = CANCELED
        elif k == X_EXPIRED:
            a[_STATE] = EXPIRED
        elif k == X_REJECTED:
            a[_STATE] = REJECTED
            a[_REASON] = p.reason
    for i in range(cids.shape[0]):
        a = scratch[_row_of(cids[i], ids, lo, n)]
        if a[_SEEN] == 0:
            out[i, 0] = PENDING
            out[i, 1] = 0
            out[i, 2] = 0
        else:
            out[i, 0] = a[_STATE] if a[_STATE] != 0 else OPEN
            out[i, 1] = a[_FILLED]
            out[i, 2] = a[_REASON]


@entry
def order_rows(sent, tick, final, strategy, out):
    """``out[i]`` (an ORDERS row, zeroed) for each action ``sent[i]`` of strategy ``strategy``: as sent, at
    its event time, priced in ticks of ``tick[symbol]``; a NEW with its final state, filled lots and reject
    reason from ``final[i]`` (:func:`hean.research._final_states`)."""
    for i in range(sent.shape[0]):
        s = sent[i]
        r = out[i]
        r.strategy = strategy
        r.client_id = s.client_id
        r.ts = s.ts_exch
        r.symbol = s.symbol
        r.action = s.kind
        r.side = s.side
        r.price = s.price
        r.qty = s.qty
        r.order_type = s.order_type
        r.tif = s.tif
        r.flags = s.flags
        r.tick_size = tick[s.symbol]
        if s.kind == A_NEW:
            r.state = final[i, 0]
            r.filled = final[i, 1]
            r.reason = final[i, 2]


@entry
def n_fills(reports):
    """How many of ``reports`` are fills (FILL or PARTIAL)."""
    n = 0
    for i in range(reports.shape[0]):
        k = reports[i].kind
        if k == X_FILL or k == X_PARTIAL:
            n += 1
    return n


@entry
def fill_rows(reports, tick, lot, strategy, out):
    """One FILLS row of ``out`` (zeroed, :func:`n_fills` long) per fill among ``reports``, in their order: at
    the venue's time of the fill when the venue gave one, else the report's exchange stamp."""
    w = 0
    for i in range(reports.shape[0]):
        p = reports[i]
        if p.kind != X_FILL and p.kind != X_PARTIAL:
            continue
        r = out[w]
        w += 1
        r.strategy = strategy
        r.client_id = p.client_id
        r.order_id = p.order_id
        r.ts = p.ts_venue if p.ts_venue > 0 else p.ts_exch
        r.symbol = p.symbol
        r.side = p.side
        r.price = p.price
        r.qty = p.qty
        r.leaves = p.leaves_qty
        r.fee = p.fee
        r.liquidity = p.liquidity
        r.venue = p.venue
        r.tick_size = tick[p.symbol]
        r.lot_size = lot[p.symbol]
