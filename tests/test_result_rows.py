"""The compiled rows of a backtest's orders and fills tables (``hean.result_rows``) against hand-computed cases:
each order's final state, filled lots and reject reason from the reports it received, and the fills' rows.
(``tests/test_backtest.py`` checks the tables of whole backtests against the reports and fills.)"""

from __future__ import annotations

import numpy as np
import pytest

from hean import api as A
from hean.records import (
    A_CANCEL,
    A_NEW,
    A_REPLACE,
    EXEC_REPORT,
    ORDER,
    X_ACK,
    X_CANCEL_REJECTED,
    X_CANCELED,
    X_EXPIRED,
    X_FILL,
    X_PARTIAL,
    X_REJECTED,
    X_REPLACED,
)
from hean.research import FILLS, ORDERS, _final_states
from hean.result_rows import fill_rows, n_fills, order_rows


def _reports(rows: list[tuple]) -> np.ndarray:
    """EXEC_REPORTs from (client id, kind, qty, reason, ts_venue) rows, in order."""
    r = np.zeros(len(rows), EXEC_REPORT)
    for i, (cid, kind, qty, reason, ts_venue) in enumerate(rows):
        r[i]["client_id"], r[i]["kind"], r[i]["qty"], r[i]["reason"] = cid, kind, qty, reason
        r[i]["ts_venue"], r[i]["ts_exch"], r[i]["order_id"] = ts_venue, 1_000 + i, 100 + cid
        r[i]["price"], r[i]["leaves_qty"], r[i]["fee"], r[i]["symbol"] = 50 + i, 9 - i, 0.25 * i, i % 2
    return r


REPORTS = _reports(
    [
        (1, X_ACK, 0, 0, 10),
        (2, X_ACK, 0, 0, 11),
        (1, X_PARTIAL, 2, 0, 12),
        (3, X_REJECTED, 0, 7, 0),  # no venue time: the fill table would take ts_exch (not a fill here)
        (1, X_FILL, 3, 0, 0),  # a fill without a venue time: its exchange stamp
        (2, X_CANCELED, 0, 0, 15),
        (5, X_ACK, 0, 0, 16),
        (6, X_ACK, 0, 0, 17),
        (6, X_REPLACED, 0, 0, 18),
        (6, X_REJECTED, 0, 4, 19),  # a replace refused: the order's last final report is this rejection
        (6, X_CANCELED, 0, 0, 20),  # ... then it was cancelled: CANCELED, the reason of its last rejection kept
        (7, X_ACK, 0, 0, 21),
        (7, X_CANCEL_REJECTED, 0, 0, 22),  # not final: still OPEN
        (8, X_EXPIRED, 0, 0, 23),
        (99, X_FILL, 1, 0, 24),  # a report of no order in the log (a lost row): counted nowhere
    ]
)

# client id -> (state, filled lots, reject reason)
EXPECTED = {
    1: (A.FILLED, 5, 0),
    2: (A.CANCELED, 0, 0),
    3: (A.REJECTED, 0, 7),
    4: (A.PENDING, 0, 0),  # no report at all
    5: (A.OPEN, 0, 0),
    6: (A.CANCELED, 0, 4),
    7: (A.OPEN, 0, 0),
    8: (A.EXPIRED, 0, 0),
}


SPREAD = 10**12  # client ids this far apart take the sorted-ids path (the engine's, a short range: a row each)


@pytest.mark.parametrize("spread", [1, SPREAD], ids=["dense-ids", "sparse-ids"])
@pytest.mark.parametrize("cid", sorted(EXPECTED))
def test_each_orders_outcome_comes_from_its_reports(cid, spread):
    cids = np.array([4, cid, 1, cid], np.int64) * spread  # repeated ids (a NEW and its REPLACEs): one answer
    reports = REPORTS.copy()
    reports["client_id"] *= spread
    out = _final_states(cids, reports)
    assert out[1].tolist() == list(EXPECTED[cid]) == out[3].tolist()
    assert out[0].tolist() == list(EXPECTED[4])


def test_reports_outside_the_orders_ids_are_counted_nowhere():
    """A report whose id is below, between or above the logged orders' (dense range) changes no outcome."""
    stray = _reports([(0, X_FILL, 9, 0, 1), (3, X_REJECTED, 0, 5, 2), (10**6, X_CANCELED, 0, 0, 3)])
    cids = np.array([2, 4], np.int64)
    assert _final_states(cids, stray).tolist() == [[A.PENDING, 0, 0]] * 2


def test_no_reports_at_all_leaves_every_order_pending_and_no_order_gives_an_empty_table():
    assert _final_states(np.array([3, 1], np.int64), REPORTS[:0]).tolist() == [[A.PENDING, 0, 0]] * 2
    assert _final_states(np.zeros(0, np.int64), REPORTS).shape == (0, 3)


def test_order_rows_copy_each_action_and_give_only_a_new_its_outcome():
    sent = np.zeros(3, ORDER)
    for i, (cid, kind, sym) in enumerate([(1, A_NEW, 0), (1, A_REPLACE, 1), (2, A_CANCEL, 1)]):
        sent[i]["client_id"], sent[i]["kind"], sent[i]["symbol"], sent[i]["ts_exch"] = cid, kind, sym, 500 + i
        sent[i]["side"], sent[i]["price"], sent[i]["qty"], sent[i]["tif"] = 1 - 2 * (i % 2), 70 + i, 1 + i, 2
    final = np.array([[A.FILLED, 5, 0], [A.FILLED, 5, 0], [A.CANCELED, 0, 0]], np.int64)
    out = np.zeros(3, ORDERS)
    order_rows(sent, np.array([0.1, 0.5]), final, 3, out)
    assert out["strategy"].tolist() == [3, 3, 3] and out["action"].tolist() == [A_NEW, A_REPLACE, A_CANCEL]
    assert out["ts"].tolist() == [500, 501, 502] and out["price"].tolist() == [70, 71, 72]
    assert out["side"].tolist() == [1, -1, 1] and out["qty"].tolist() == [1, 2, 3] and out["tif"].tolist() == [2] * 3
    assert out["tick_size"].tolist() == [0.1, 0.5, 0.5]
    assert out[["state", "filled", "reason"]].tolist() == [(A.FILLED, 5, 0), (0, 0, 0), (0, 0, 0)]


def test_fill_rows_are_the_fills_in_order_at_the_venues_time_else_the_exchange_stamp():
    assert n_fills(REPORTS) == 3
    out = np.zeros(3, FILLS)
    fill_rows(REPORTS, np.array([0.1, 0.5]), np.array([0.001, 1.0]), 2, out)
    assert out["client_id"].tolist() == [1, 1, 99] and out["qty"].tolist() == [2, 3, 1]
    assert out["ts"].tolist() == [12, 1_004, 24], "PARTIAL at its venue time, the FILL without one at ts_exch"
    assert out["order_id"].tolist() == [101, 101, 199] and out["leaves"].tolist() == [7, 5, -5]
    assert out["price"].tolist() == [52, 54, 64] and out["fee"].tolist() == [0.5, 1.0, 3.5]
    assert out["tick_size"].tolist() == [0.1, 0.1, 0.1] and out["lot_size"].tolist() == [0.001, 0.001, 0.001]
    assert out["strategy"].tolist() == [2, 2, 2]
