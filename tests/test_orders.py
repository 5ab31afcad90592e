"""The order state machine (every valid transition, a sample of invalid ones) and the direct-mapped table."""

from __future__ import annotations

import numpy as np
import pytest

from hean.records import ExecType
from hean.stages.orders import (
    EXEC_TO_EVENT,
    M_FULL,
    M_INVALID,
    M_TRANSITIONS,
    OC_CUM,
    OC_ID,
    OC_PARENT,
    OC_STATE,
    TRANSITIONS,
    OrderEvent,
    OrderState,
    make_order_table,
    ot_apply,
    ot_is_live,
    ot_new,
    ot_slot,
)

S, E = OrderState, OrderEvent
RESTORED = "restored"  # ACKNOWLEDGED when nothing filled, PARTIALLY_FILLED otherwise

# The specification, written out independently of hean.stages.orders._RULES: every allowed transition.
VALID = [
    (S.NEW, E.SUBMIT, S.SENT),
    (S.NEW, E.REJECT, S.REJECTED),
    (S.NEW, E.CANCEL_REQUEST, S.CANCELED),
    (S.SENT, E.ACK, S.ACKNOWLEDGED),
    (S.SENT, E.REJECT, S.REJECTED),
    (S.SENT, E.PARTIAL_FILL, S.PARTIALLY_FILLED),
    (S.SENT, E.FILL, S.FILLED),
    (S.SENT, E.CANCEL_REQUEST, S.CANCEL_PENDING),
    (S.SENT, E.CANCELED, S.CANCELED),
    (S.SENT, E.EXPIRE, S.EXPIRED),
    (S.SENT, E.REPLACE_REQUEST, S.REPLACE_PENDING),
    (S.ACKNOWLEDGED, E.PARTIAL_FILL, S.PARTIALLY_FILLED),
    (S.ACKNOWLEDGED, E.FILL, S.FILLED),
    (S.ACKNOWLEDGED, E.CANCEL_REQUEST, S.CANCEL_PENDING),
    (S.ACKNOWLEDGED, E.CANCELED, S.CANCELED),
    (S.ACKNOWLEDGED, E.EXPIRE, S.EXPIRED),
    (S.ACKNOWLEDGED, E.REPLACE_REQUEST, S.REPLACE_PENDING),
    (S.PARTIALLY_FILLED, E.PARTIAL_FILL, S.PARTIALLY_FILLED),
    (S.PARTIALLY_FILLED, E.FILL, S.FILLED),
    (S.PARTIALLY_FILLED, E.CANCEL_REQUEST, S.CANCEL_PENDING),
    (S.PARTIALLY_FILLED, E.CANCELED, S.CANCELED),
    (S.PARTIALLY_FILLED, E.EXPIRE, S.EXPIRED),
    (S.PARTIALLY_FILLED, E.REPLACE_REQUEST, S.REPLACE_PENDING),
    (S.CANCEL_PENDING, E.ACK, S.CANCEL_PENDING),
    (S.CANCEL_PENDING, E.PARTIAL_FILL, S.CANCEL_PENDING),  # a fill after the cancel request
    (S.CANCEL_PENDING, E.FILL, S.FILLED),  # filled before the cancel arrived
    (S.CANCEL_PENDING, E.CANCELED, S.CANCELED),
    (S.CANCEL_PENDING, E.EXPIRE, S.EXPIRED),
    (S.CANCEL_PENDING, E.REJECT, S.REJECTED),
    (S.CANCEL_PENDING, E.CANCEL_REJECT, RESTORED),
    (S.REPLACE_PENDING, E.ACK, S.REPLACE_PENDING),
    (S.REPLACE_PENDING, E.PARTIAL_FILL, S.REPLACE_PENDING),
    (S.REPLACE_PENDING, E.FILL, S.FILLED),
    (S.REPLACE_PENDING, E.REPLACED, RESTORED),
    (S.REPLACE_PENDING, E.CANCEL_REJECT, RESTORED),
    (S.REPLACE_PENDING, E.CANCELED, S.CANCELED),
    (S.REPLACE_PENDING, E.EXPIRE, S.EXPIRED),
    (S.REPLACE_PENDING, E.REJECT, S.REJECTED),
    (S.REPLACE_PENDING, E.CANCEL_REQUEST, S.CANCEL_PENDING),
]

INVALID_SAMPLE = [
    (S.NEW, E.ACK),  # never sent
    (S.NEW, E.FILL),
    (S.SENT, E.SUBMIT),  # sent twice
    (S.SENT, E.REPLACED),
    (S.SENT, E.CANCEL_REJECT),
    (S.ACKNOWLEDGED, E.ACK),  # duplicate ack
    (S.ACKNOWLEDGED, E.REJECT),
    (S.ACKNOWLEDGED, E.REPLACED),  # no replace was requested
    (S.PARTIALLY_FILLED, E.SUBMIT),
    (S.CANCEL_PENDING, E.CANCEL_REQUEST),  # a second cancel
    (S.CANCEL_PENDING, E.REPLACE_REQUEST),
    (S.REPLACE_PENDING, E.REPLACE_REQUEST),
    (S.FILLED, E.PARTIAL_FILL),  # terminal states take nothing
    (S.FILLED, E.CANCEL_REQUEST),
    (S.CANCELED, E.FILL),
    (S.CANCELED, E.CANCELED),
    (S.REJECTED, E.ACK),
    (S.EXPIRED, E.REPLACE_REQUEST),
]


def _order_in(state, cum=0):
    ot = make_order_table(8)
    slot = ot_new(ot, -1, 0, 1, 100, 5, 0, 1, 1, 0, 0, 0, 123)
    ot.cols[slot, OC_STATE] = state
    ot.cols[slot, OC_CUM] = cum
    return ot, slot


@pytest.mark.parametrize("state,event,target", VALID, ids=[f"{s.name}-{e.name}" for s, e, _ in VALID])
def test_valid_transition(state, event, target):
    for cum in (0, 2):
        ot, slot = _order_in(state, cum)
        expect = (S.PARTIALLY_FILLED if cum else S.ACKNOWLEDGED) if target == RESTORED else target
        assert ot_apply(ot, slot, event) == expect
        assert ot.cols[slot, OC_STATE] == expect
        assert ot.meta[M_TRANSITIONS] == 1 and ot.meta[M_INVALID] == 0


def test_the_table_holds_exactly_the_specified_transitions():
    allowed = {(int(s), int(e)) for s, e, _ in VALID}
    table_allowed = {(s, e) for s in range(len(S)) for e in range(len(E)) if TRANSITIONS[s, e] != -1}
    assert table_allowed == allowed


@pytest.mark.parametrize("state,event", INVALID_SAMPLE, ids=[f"{s.name}-{e.name}" for s, e in INVALID_SAMPLE])
def test_invalid_transition_is_counted_and_ignored(state, event):
    ot, slot = _order_in(state)
    assert ot_apply(ot, slot, event) == -1
    assert ot.cols[slot, OC_STATE] == state
    assert ot.invalid[state, event] == 1 and ot.meta[M_INVALID] == 1
    assert ot.invalid.sum() == 1


def test_out_of_range_event_is_counted():
    ot, slot = _order_in(S.ACKNOWLEDGED)
    assert ot_apply(ot, slot, 99) == -1 and ot_apply(ot, slot, -1) == -1
    assert ot.meta[M_INVALID] == 2 and ot.cols[slot, OC_STATE] == S.ACKNOWLEDGED


def test_exec_type_maps_to_events():
    assert EXEC_TO_EVENT[ExecType.ACK] == E.ACK
    assert EXEC_TO_EVENT[ExecType.FILL] == E.FILL
    assert EXEC_TO_EVENT[ExecType.CANCEL_REJECTED] == E.CANCEL_REJECT
    assert EXEC_TO_EVENT[0] == -1 and EXEC_TO_EVENT[15] == -1


def test_lifecycle_through_fills():
    ot = make_order_table(8)
    slot = ot_new(ot, -1, 1, -1, 250, 10, 2, 1, 1, 0, 3, 0, 5)
    for ev, st in ((E.SUBMIT, S.SENT), (E.ACK, S.ACKNOWLEDGED), (E.PARTIAL_FILL, S.PARTIALLY_FILLED),
                   (E.CANCEL_REQUEST, S.CANCEL_PENDING), (E.PARTIAL_FILL, S.CANCEL_PENDING),
                   (E.FILL, S.FILLED)):  # fmt: skip
        assert ot_apply(ot, slot, ev) == st
    assert not ot_is_live(ot, slot)
    assert ot.meta[M_INVALID] == 0


def test_ids_are_sequential_and_slots_direct_mapped():
    ot = make_order_table(4)
    slots = [ot_new(ot, -1, 0, 1, 100, 1, 0, 1, 1, 0, 0, 0, 0) for _ in range(4)]
    ids = [int(ot.cols[s, OC_ID]) for s in slots]
    assert ids == [1, 2, 3, 4] and slots == [1, 2, 3, 0]
    assert [ot_slot(ot, i) for i in ids] == slots
    assert ot_slot(ot, 0) == -1 and ot_slot(ot, 5) == -1 and ot_slot(ot, -3) == -1
    # id 5 maps to the slot of id 1, which is live (NEW): refused and counted, the id is not consumed
    assert ot_new(ot, -1, 0, 1, 100, 1, 0, 1, 1, 0, 0, 0, 0) == -1
    assert ot.meta[M_FULL] == 1
    ot_apply(ot, slots[0], E.CANCEL_REQUEST)  # NEW -> CANCELED: terminal, the slot may be reused
    s5 = ot_new(ot, -1, 0, 1, 100, 1, 0, 1, 1, 0, 0, 0, 0)
    assert s5 == slots[0] and ot.cols[s5, OC_ID] == 5 and ot_slot(ot, 1) == -1 and ot_slot(ot, 5) == s5


def test_capacity_must_be_power_of_two():
    for bad in (0, 1, 6, 1000):
        with pytest.raises(ValueError):
            make_order_table(bad)
    assert make_order_table(1024).children.shape == (1024, 8)
    assert np.all(make_order_table(2).cols[:, OC_PARENT] == -1)
