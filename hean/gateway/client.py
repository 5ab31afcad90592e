"""The engine side of the gateway: ORDER records out as datagrams, datagrams back as EXEC_REPORT records.

This is the shape a real exchange adapter keeps: :meth:`GatewayClient.send_order` takes the router's ORDER
record (NEW or CANCEL) and :func:`to_exec_report` turns what comes back into the EXEC_REPORT the router's
``router_on_report`` expects.
"""

from __future__ import annotations

import ipaddress
import select
import socket
import time

import numpy as np

from hean.gateway.wire import (
    MAX_DATAGRAM,
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
from hean.records import EXEC_REPORT, ExecType, OrderAction

__all__ = ["GatewayClient", "to_exec_report"]


def to_exec_report(msg: Ack | Fill | Reject | Done, venue: int = 0) -> np.ndarray:
    """One EXEC_REPORT (a 1-element array) for a gateway->client message."""
    rec = np.zeros(1, EXEC_REPORT)
    r = rec[0]
    r["order_id"], r["symbol"], r["ts_venue"], r["venue"] = msg.order_id, msg.symbol, msg.ts_venue, venue
    if isinstance(msg, Ack):
        r["kind"], r["side"], r["price"], r["leaves_qty"] = ExecType.ACK, msg.side, msg.price, msg.leaves
    elif isinstance(msg, Fill):
        r["kind"] = ExecType.FILL if msg.final else ExecType.PARTIAL_FILL
        r["side"], r["price"], r["qty"], r["leaves_qty"] = msg.side, msg.price, msg.qty, msg.leaves
        r["cum_qty"], r["fee"], r["liquidity"] = msg.cum, msg.fee, msg.liquidity
    elif isinstance(msg, Reject):
        r["kind"] = ExecType.CANCEL_REJECTED if msg.ref_type == MsgType.CANCEL else ExecType.REJECTED
        r["reason"] = msg.reason
    elif isinstance(msg, Done):
        r["kind"], r["side"], r["cum_qty"] = msg.exec_type, msg.side, msg.cum
    else:
        raise WireError(f"not a gateway->client message: {type(msg).__name__}")
    return rec


class GatewayClient:
    """A UDP client bound to an ephemeral loopback port, talking to one gateway ``server``."""

    def __init__(self, server: tuple[str, int]) -> None:
        if not ipaddress.ip_address(server[0]).is_loopback:
            raise ValueError(f"the gateway example talks to loopback addresses only, got {server[0]!r}")
        self.server = server
        self.malformed = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.bind((server[0], 0))
            self.sock.setblocking(False)
        except OSError:
            self.sock.close()
            raise

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def send(self, msg: NewOrder | Cancel) -> None:
        self.sock.sendto(encode(msg), self.server)

    def send_raw(self, data: bytes) -> None:
        """Send arbitrary bytes (tests use it for malformed datagrams)."""
        self.sock.sendto(data, self.server)

    def send_order(self, o) -> None:
        """Send the router's ORDER record (NEW or CANCEL; REPLACE/CANCEL_ALL are not on this wire)."""
        kind = int(o["kind"])
        ts = time.monotonic_ns()
        if kind == OrderAction.NEW:
            self.send(NewOrder(int(o["order_id"]), int(o["symbol"]), int(o["side"]), int(o["order_type"]),
                               int(o["tif"]), int(o["flags"]) & 0xFF, int(o["price"]), int(o["qty"]), ts))  # fmt: skip
        elif kind == OrderAction.CANCEL:
            self.send(Cancel(int(o["order_id"]), int(o["symbol"]), ts))
        else:
            raise ValueError(f"order action {kind} is not carried by the gateway wire (NEW and CANCEL only)")

    def recv(self, timeout: float = 1.0) -> Ack | Fill | Reject | Done | None:
        """The next message, or None after ``timeout`` s. Malformed datagrams are counted and skipped."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.sock], [], [], max(0.0, left))
            if not ready:
                return None
            try:
                data = self.sock.recv(MAX_DATAGRAM + 1)
            except (BlockingIOError, InterruptedError):
                continue
            try:
                return decode(data)
            except WireError:
                self.malformed += 1
                if time.monotonic() >= deadline:
                    return None
