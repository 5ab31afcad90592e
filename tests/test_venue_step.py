"""The engine's venue step (hean.engine.pipeline.venue_step), driven through the worker loop with only the
venue stage owned: the ordering rule (market events published before an order are applied before it) and
back-pressure on the report ring (no room: nothing is taken; room again: nothing was lost or repeated)."""

from __future__ import annotations

import numpy as np
import pytest

from hean.engine.build import build_local
from hean.engine.config import load_config
from hean.engine.loopgen import loop_module
from hean.records import ASK, BUY, MARKET_EVENT, ORDER, EventKind, ExecType, OrderAction, OrderType, TimeInForce
from hean.rings.layout import CAPACITY, MASK, P_WRITE, READ, WRITE
from hean.stages.registry import PIPELINE
from hean.stages.venue import VENUE_MAX_REPORTS
from hean.telemetry.block import C_RING_FULL

pytestmark = pytest.mark.timeout(300)
LOOP = loop_module(PIPELINE)


def venue_only(entry_latency_ns: int = 0):
    venues = [{"name": "sim", "params": {"entry_latency_ns": entry_latency_ns}}]
    W = build_local(load_config(overrides={"engine.duration_s": 1.0, "venues": venues}))
    W.owns[:] = 0
    W.owns[len(PIPELINE) - 1] = 1  # the venue: the pipeline's last stage
    return W


def publish(ring, recs) -> None:
    """What the ring's producer (another stage) would do: slots first, then the WRITE cursor."""
    w, m = int(ring.hdr[WRITE]), int(ring.hdr[MASK])
    for i, r in enumerate(recs):
        ring.slots[(w + i) & m] = r
    ring.hdr[WRITE] = w + len(recs)


def ask(px: int, qty: int, ts: int):
    e = np.zeros(1, MARKET_EVENT)[0]
    e["kind"], e["side"], e["price"], e["qty"], e["ts_exch"], e["ts_origin"] = EventKind.LEVEL_SET, ASK, px, qty, ts, ts
    return e


def buy(order_id: int, px: int, qty: int, tif=TimeInForce.IOC):
    o = np.zeros(1, ORDER)[0]
    o["kind"], o["side"], o["qty"], o["price"], o["order_type"] = OrderAction.NEW, BUY, qty, px, OrderType.LIMIT
    o["tif"], o["venue"], o["order_id"], o["symbol"] = tif, 0, order_id, 0
    return o


def reports(ring, start: int) -> list[tuple[str, int, int, int]]:
    """(kind, order id, price, qty) of every report published from index ``start`` on, oldest first."""
    m = int(ring.hdr[MASK])
    slots = [ring.slots[i & m] for i in range(start, int(ring.hdr[WRITE]))]
    return [(ExecType(int(r["kind"])).name, int(r["order_id"]), int(r["price"]), int(r["qty"])) for r in slots]


@pytest.mark.parametrize(
    ("event_first", "expected"),
    [
        (True, [("ACK", 7, 101, 0), ("FILL", 7, 101, 2)]),  # the ask was published first: the order takes it
        (False, [("ACK", 7, 101, 0), ("EXPIRED", 7, 101, 0)]),  # the order went first: nothing to take yet
    ],
)
def test_events_published_before_an_order_are_applied_before_it(event_first, expected):
    W = venue_only()
    R = W.rings
    if event_first:
        publish(R.market_venue, [ask(101, 3, 1_000)])
        publish(R.venue_orders_venue, [buy(7, 101, 2)])
        LOOP.run_loop(W, 3)
    else:
        publish(R.venue_orders_venue, [buy(7, 101, 2)])
        LOOP.run_loop(W, 3)
        publish(R.market_venue, [ask(101, 3, 1_000)])
        LOOP.run_loop(W, 3)
    assert reports(R.venue_reports_router, 0) == expected
    assert R.market_venue.hdr[READ] == 1 and R.venue_orders_venue.hdr[READ] == 1


def test_a_full_report_ring_holds_the_venue_back_and_loses_nothing():
    W = venue_only()
    R = W.rings
    rep = R.venue_reports_router
    full = W.tm_venue.counters
    # the router has not read the reports ring: room for 65 reports, one more than a venue call may write
    start = int(rep.hdr[CAPACITY]) - (VENUE_MAX_REPORTS + 1)
    rep.hdr[WRITE] = rep.hdr[P_WRITE] = start  # the producer's cursor and its private copy
    publish(R.market_venue, [ask(101, 10, 1_000)])
    publish(R.venue_orders_venue, [buy(1, 101, 2), buy(2, 101, 3)])
    LOOP.run_loop(W, 5)
    # the first order went through (2 reports) and left the ring without room for another call's worth:
    # the second waits, and nothing is written over
    assert reports(rep, start) == [("ACK", 1, 101, 0), ("FILL", 1, 101, 2)]
    assert R.venue_orders_venue.hdr[READ] == 1 and W.st_venue.owed[0] == 1
    assert full[C_RING_FULL] > 0
    rep.hdr[READ] = rep.hdr[WRITE]  # the router drains the ring
    LOOP.run_loop(W, 5)
    assert reports(rep, start) == [("ACK", 1, 101, 0), ("FILL", 1, 101, 2), ("ACK", 2, 101, 0), ("FILL", 2, 101, 3)]
    assert R.market_venue.hdr[READ] == 1 and R.venue_orders_venue.hdr[READ] == 2 and W.st_venue.owed[0] == 0


def test_an_idle_venue_does_not_count_a_full_report_ring():
    """Ring-full counts shortages that held something back: with nothing to take, a full ring is no event."""
    W = venue_only()
    rep = W.rings.venue_reports_router
    rep.hdr[WRITE] = rep.hdr[P_WRITE] = int(rep.hdr[CAPACITY])  # full: the router has read nothing
    LOOP.run_loop(W, 5)
    assert W.tm_venue.counters[C_RING_FULL] == 0
    publish(W.rings.market_venue, [ask(101, 3, 1_000)])
    LOOP.run_loop(W, 5)
    assert W.tm_venue.counters[C_RING_FULL] > 0 and W.rings.market_venue.hdr[READ] == 0  # held back, and counted


@pytest.mark.parametrize(
    ("arrives", "expected"),
    [
        (1_500, [("ACK", 7, 101, 0), ("FILL", 7, 101, 2)]),  # between the ask's set and its pull: it takes it
        (2_000, [("ACK", 7, 101, 0), ("FILL", 7, 101, 2)]),  # at the pull's own time: arrivals by then go first
        (2_001, [("ACK", 7, 101, 0), ("EXPIRED", 7, 101, 0)]),  # after the pull: nothing at 101 to take
    ],
)
def test_an_order_arriving_inside_a_run_of_level_sets_meets_the_book_of_its_arrival(arrives, expected):
    """One venue pass over level sets stamped before and after an order's arrival: the run of book changes the
    venue applies in a tight loop (venue._book_changes) stops at the arrival, so the order is matched against
    the book as it stood then, and the level sets after it are applied after it."""
    W = venue_only(entry_latency_ns=arrives)
    R = W.rings
    publish(R.venue_orders_venue, [buy(7, 101, 2)])  # sent at the venue's time 0: it arrives at ``arrives``
    LOOP.run_loop(W, 3)
    events = [ask(105, 1, 500), ask(101, 3, 1_000), ask(106, 1, 1_200), ask(101, 0, 2_000), ask(107, 1, 2_500)]
    publish(R.market_venue, events)
    LOOP.run_loop(W, 3)
    assert reports(R.venue_reports_router, 0) == expected
    assert R.market_venue.hdr[READ] == len(events) and W.st_venue.clock[0] == 2_500
