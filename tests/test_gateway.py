"""UDP gateway on loopback: wire round trips, malformed datagrams, order round trips through the venue."""

from __future__ import annotations

import struct
import threading

import numpy as np
import pytest

from hean.gateway.client import GatewayClient, to_exec_report
from hean.gateway.server import GatewayServer
from hean.gateway.wire import (
    HEADER,
    MAGIC,
    WIRE_VERSION,
    Ack,
    Cancel,
    Done,
    Fill,
    MsgType,
    NewOrder,
    Reject,
    WireError,
    decode,
    encode,
)
from hean.records import ASK, BID, BUY, MARKET_EVENT, ORDER, SELL, EventKind, ExecType, OrderAction, RejectReason

MESSAGES = [
    NewOrder(7, 0, -1, 1, 2, 64, 6180020, 15, 123),
    Cancel(7, 0, 124),
    Ack(7, 0, 1, 6180020, 15, 125),
    Fill(7, 0, -1, 2, 1, 6180030, 5, 0, 15, -0.25, 126),
    Reject(7, 3, 30, 1, 127),
    Done(7, 0, 4, 1, 3, 128),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=[type(m).__name__ for m in MESSAGES])
def test_wire_round_trip(msg):
    data = encode(msg)
    assert decode(data) == msg
    magic, version, mtype, length, _ = HEADER.unpack_from(data)
    assert (magic, version, length) == (MAGIC, WIRE_VERSION, len(data))
    assert data[:2] == b"HN"


GOOD = encode(MESSAGES[0])
BAD = [
    ("empty", b"", "shorter"),
    ("short", GOOD[:5], "shorter"),
    ("magic", b"XX" + GOOD[2:], "magic"),
    ("version", GOOD[:2] + bytes([9]) + GOOD[3:], "version"),
    ("length_field", GOOD[:4] + struct.pack("<H", 99) + GOOD[6:], "length"),
    ("truncated", GOOD[:-1], "length"),
    ("unknown_type", GOOD[:3] + bytes([42]) + GOOD[4:], "unknown"),
    ("body_size", HEADER.pack(MAGIC, WIRE_VERSION, MsgType.CANCEL, 8 + 40, 0) + GOOD[8:], "body"),
]


@pytest.mark.parametrize("name,data,why", BAD, ids=[b[0] for b in BAD])
def test_wire_rejects_malformed(name, data, why):
    with pytest.raises(WireError, match=why):
        decode(data)


def test_encode_rejects_out_of_range_fields():
    with pytest.raises(WireError):
        encode(NewOrder(7, 0, 300, 1, 1, 0, 1, 1, 0))  # side does not fit an i8


def _levels(*levels):
    ev = np.zeros(len(levels), MARKET_EVENT)
    for i, (kind, side, px, qty) in enumerate(levels):
        ev[i]["kind"], ev[i]["side"], ev[i]["price"], ev[i]["qty"] = kind, side, px, qty
    return ev


@pytest.fixture
def gateway():
    server = GatewayServer(1, taker_fee=0.001)
    client = GatewayClient(server.address)
    try:
        server.on_market_events(
            _levels(
                (EventKind.LEVEL_SET, BID, 99, 5),
                (EventKind.LEVEL_SET, ASK, 101, 3),
                (EventKind.LEVEL_SET, ASK, 102, 4),
            )  # fmt: skip
        )
        yield server, client
    finally:
        client.close()
        server.close()


def exchange(server, client, send, expect):
    """Send, let the server poll (bounded), collect ``expect`` replies (bounded by timeouts)."""
    if isinstance(send, bytes):
        client.send_raw(send)
    else:
        client.send(send)
    got = []
    for _ in range(20):
        server.poll(0.05)
        while (m := client.recv(0.01)) is not None:
            got.append(m)
        if len(got) >= expect:
            break
    return got


def test_marketable_order_round_trip(gateway):
    server, client = gateway
    got = exchange(server, client, NewOrder(1, 0, BUY, 1, 1, 0, 102, 5, 0), 3)
    assert [type(m).__name__ for m in got] == ["Ack", "Fill", "Fill"]
    assert [(m.price, m.qty, m.final, m.liquidity) for m in got[1:]] == [(101, 3, 0, 2), (102, 2, 1, 2)]
    assert got[2].fee == pytest.approx(102 * 2 * 0.001)
    assert server.counters["orders"] == 1 and server.counters["sent"] == 3


def test_resting_order_cancel_and_late_cancel(gateway):
    server, client = gateway
    (ack,) = exchange(server, client, NewOrder(2, 0, SELL, 1, 1, 0, 103, 1, 0), 1)
    assert isinstance(ack, Ack) and (ack.order_id, ack.side, ack.price, ack.leaves) == (2, SELL, 103, 1)
    (done,) = exchange(server, client, Cancel(2, 0, 0), 1)
    assert isinstance(done, Done) and done.exec_type == ExecType.CANCELED and done.cum == 0
    (late,) = exchange(server, client, Cancel(2, 0, 0), 1)
    assert isinstance(late, Reject) and late.reason == RejectReason.TOO_LATE and late.ref_type == MsgType.CANCEL
    (unknown,) = exchange(server, client, Cancel(555, 0, 0), 1)
    assert unknown.reason == RejectReason.UNKNOWN_ORDER


def test_resting_order_filled_by_a_print(gateway):
    server, client = gateway
    exchange(server, client, NewOrder(3, 0, BUY, 1, 1, 0, 100, 2, 0), 1)  # better than the 99 bid: 0 ahead
    server.on_market_events(_levels((EventKind.TRADE, SELL, 100, 5)))
    msg = client.recv(1.0)
    assert isinstance(msg, Fill) and (msg.price, msg.qty, msg.final, msg.liquidity) == (100, 2, 1, 1)


def test_venue_reject_reaches_the_client(gateway):
    server, client = gateway
    (rej,) = exchange(server, client, NewOrder(4, 0, BUY, 1, 1, 0, 0, 1, 0), 1)  # price 0
    assert isinstance(rej, Reject) and rej.reason == RejectReason.BAD_PRICE and rej.ref_type == MsgType.NEW_ORDER


MALFORMED = [
    ("garbage", b"\x00\x01hello world"),
    ("empty", b""),
    ("truncated_new", encode(MESSAGES[0])[:-3]),
    ("wrong_version", GOOD[:2] + bytes([2]) + GOOD[3:]),
    ("unexpected_ack", encode(MESSAGES[2])),
    ("oversized", GOOD + bytes(100)),
]


def test_malformed_datagrams_are_counted_answered_and_survived(gateway):
    server, client = gateway
    for name, data in MALFORMED:
        got = exchange(server, client, data, 1)
        assert len(got) == 1 and isinstance(got[0], Reject), name
        assert got[0].reason == RejectReason.MALFORMED, name
    assert server.counters["malformed"] == 5 and server.counters["unexpected"] == 1
    assert server.counters["datagrams"] == len(MALFORMED)
    # still serving
    got = exchange(server, client, NewOrder(9, 0, BUY, 1, 3, 0, 101, 1, 0), 2)
    assert [type(m).__name__ for m in got] == ["Ack", "Fill"]


def test_router_records_round_trip_through_the_adapter(gateway):
    server, client = gateway
    o = np.zeros(1, ORDER)
    o[0]["kind"], o[0]["order_id"], o[0]["side"], o[0]["order_type"], o[0]["tif"] = OrderAction.NEW, 11, BUY, 1, 2
    o[0]["price"], o[0]["qty"] = 101, 4
    client.send_order(o[0])
    got = []
    for _ in range(20):
        server.poll(0.05)
        while (m := client.recv(0.01)) is not None:
            got.append(to_exec_report(m)[0])
        if len(got) >= 3:
            break
    assert [ExecType(int(r["kind"])).name for r in got] == ["ACK", "PARTIAL_FILL", "EXPIRED"]
    assert (got[1]["qty"], got[1]["cum_qty"], got[1]["liquidity"]) == (3, 3, 2)
    assert got[2]["cum_qty"] == 3
    o[0]["kind"] = OrderAction.REPLACE
    with pytest.raises(ValueError):
        client.send_order(o[0])


def test_serve_forever_in_a_thread():
    server = GatewayServer(1)
    client = GatewayClient(server.address)
    stop = threading.Event()
    thread = threading.Thread(target=server.serve_forever, args=(stop, 0.01), daemon=True)
    try:
        server.on_market_events(_levels((EventKind.LEVEL_SET, ASK, 101, 3)))
        thread.start()
        client.send(NewOrder(1, 0, BUY, 1, 1, 0, 90, 1, 0))
        msg = client.recv(2.0)
        assert isinstance(msg, Ack) and msg.order_id == 1
        client.send_raw(b"nonsense")
        msg = client.recv(2.0)
        assert isinstance(msg, Reject) and msg.reason == RejectReason.MALFORMED
    finally:
        stop.set()
        thread.join(timeout=5)
        client.close()
        server.close()
    assert not thread.is_alive()


def test_loopback_only():
    with pytest.raises(ValueError):
        GatewayServer(1, host="0.0.0.0")
    with pytest.raises(ValueError):
        GatewayClient(("10.0.0.1", 9))
