"""The gateway server: the simulated venue behind a UDP socket on loopback.

One socket, one simulated venue (:mod:`hean.stages.venue`, venue index 0). Each datagram is decoded
(:mod:`hean.gateway.wire`), turned into an ORDER record and handed to the venue kernels; the venue's
execution reports are encoded and sent to the address that sent the order. Market data reaches the venue
through :meth:`GatewayServer.on_market_events` (in-process: in a real deployment the exchange has its own).

Nothing a client sends can crash it: a datagram that does not decode is counted (``malformed``), one of a
gateway->client type is counted (``unexpected``), and both are answered with REJECT(reason MALFORMED).

Single-threaded by design: :meth:`poll` handles what has arrived and returns, so a test or an engine loop
can interleave it with feeding market data; :meth:`serve_forever` loops over it until a stop event is set.
"""

from __future__ import annotations

import ipaddress
import select
import socket
import threading
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
    peek_type,
)
from hean.records import EXEC_REPORT, ORDER, ExecType, OrderAction, RejectReason
from hean.stages.venue import VENUE_MAX_REPORTS, make_venue, venue_on_event, venue_on_order, venue_poll

__all__ = ["GatewayServer", "report_to_message"]

MAX_DATAGRAMS_PER_POLL = 64  # bounded work per poll() call


def report_to_message(r) -> Ack | Fill | Reject | Done | None:
    """The wire message for one EXEC_REPORT record (None for kinds the wire does not carry: REPLACED)."""
    kind = int(r["kind"])
    oid, sym, side, ts = int(r["order_id"]), int(r["symbol"]), int(r["side"]), int(r["ts_venue"])
    if kind == ExecType.ACK:
        return Ack(oid, sym, side, int(r["price"]), int(r["leaves_qty"]), ts)
    if kind in (ExecType.PARTIAL_FILL, ExecType.FILL):
        return Fill(oid, sym, side, int(r["liquidity"]), int(kind == ExecType.FILL), int(r["price"]), int(r["qty"]),
                    int(r["leaves_qty"]), int(r["cum_qty"]), float(r["fee"]), ts)  # fmt: skip
    if kind == ExecType.REJECTED:
        return Reject(oid, sym, int(r["reason"]), int(MsgType.NEW_ORDER), ts)
    if kind == ExecType.CANCEL_REJECTED:
        return Reject(oid, sym, int(r["reason"]), int(MsgType.CANCEL), ts)
    if kind in (ExecType.CANCELED, ExecType.EXPIRED):
        return Done(oid, sym, kind, side, int(r["cum_qty"]), ts)
    return None


class GatewayServer:
    """UDP venue gateway on a loopback address; ``port=0`` picks an ephemeral port (see ``address``).

    ``venue_kwargs`` go to :func:`hean.stages.venue.make_venue` (latencies, fees, reject_prob, ...).
    """

    def __init__(self, n_symbols: int = 1, host: str = "127.0.0.1", port: int = 0, **venue_kwargs) -> None:
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"the gateway example binds loopback addresses only, got {host!r}")
        self.venue = make_venue(n_symbols, 1, **venue_kwargs)
        self.n_symbols = n_symbols
        self.counters = {
            "datagrams": 0,
            "orders": 0,
            "cancels": 0,
            "malformed": 0,
            "unexpected": 0,
            "sent": 0,
            "send_errors": 0,
            "unrouted": 0,
        }
        self._owner: dict[int, tuple[str, int]] = {}
        self._order = np.zeros(1, ORDER)
        self._out = np.zeros(VENUE_MAX_REPORTS, EXEC_REPORT)
        self._seq = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.bind((host, port))
            self.sock.setblocking(False)
        except OSError:
            self.sock.close()
            raise
        self.address: tuple[str, int] = self.sock.getsockname()

    # -- lifecycle -------------------------------------------------------------------------------------
    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> GatewayServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- market data -----------------------------------------------------------------------------------
    def on_market_events(self, events: np.ndarray, now_ns: int | None = None) -> int:
        """Apply MARKET_EVENTs to the venue's book at ``now_ns`` (default: CLOCK_MONOTONIC now) and send
        the reports they cause (resting orders filled by prints). Returns reports sent."""
        now = time.monotonic_ns() if now_ns is None else int(now_ns)
        sent = 0
        for i in range(len(events)):
            n = venue_on_event(self.venue, 0, events[i], now, self._out, 0)
            sent += self._dispatch(n)
        return sent

    # -- datagrams -------------------------------------------------------------------------------------
    def poll(self, timeout: float = 0.0) -> int:
        """Wait up to ``timeout`` s for datagrams, handle at most MAX_DATAGRAMS_PER_POLL, then release the
        venue's due reports. Returns the datagrams handled."""
        handled = 0
        ready, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        while ready and handled < MAX_DATAGRAMS_PER_POLL:
            try:
                data, addr = self.sock.recvfrom(MAX_DATAGRAM + 1)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # e.g. ICMP port unreachable reported by Linux for an earlier send
                continue
            handled += 1
            self._handle(data, addr)
        while (n := venue_poll(self.venue, time.monotonic_ns(), self._out, 0)) > 0:
            self._dispatch(n)
        return handled

    def serve_forever(self, stop: threading.Event, tick: float = 0.01) -> None:
        """poll() until ``stop`` is set (checked every ``tick`` seconds at the latest)."""
        while not stop.is_set():
            self.poll(tick)

    def _handle(self, data: bytes, addr: tuple[str, int]) -> None:
        self.counters["datagrams"] += 1
        try:
            msg = decode(data)
        except WireError:
            self.counters["malformed"] += 1
            self._send(Reject(0, -1, int(RejectReason.MALFORMED), peek_type(data), time.monotonic_ns()), addr)
            return
        if isinstance(msg, NewOrder):
            self.counters["orders"] += 1
            self._submit(OrderAction.NEW, msg, addr)
        elif isinstance(msg, Cancel):
            self.counters["cancels"] += 1
            self._submit(OrderAction.CANCEL, msg, addr)
        else:
            self.counters["unexpected"] += 1
            self._send(Reject(msg.order_id, msg.symbol, int(RejectReason.MALFORMED), peek_type(data),
                              time.monotonic_ns()), addr)  # fmt: skip

    def _submit(self, action: OrderAction, msg: NewOrder | Cancel, addr: tuple[str, int]) -> None:
        o = self._order[0]
        o.fill(0)
        self._seq += 1
        o["seq"] = self._seq
        o["ts_origin"] = msg.ts_client
        o["symbol"] = msg.symbol
        o["kind"] = int(action)
        o["order_id"] = msg.order_id
        o["venue"] = 0
        if isinstance(msg, NewOrder):
            o["side"], o["order_type"], o["tif"] = msg.side, msg.order_type, msg.tif
            o["flags"], o["price"], o["qty"] = msg.flags, msg.price, msg.qty
            if msg.order_id not in self._owner:
                self._owner[msg.order_id] = addr
        n = venue_on_order(self.venue, o, time.monotonic_ns(), self._out, 0)
        if action == OrderAction.CANCEL and msg.order_id not in self._owner:
            self._owner[msg.order_id] = addr  # so its CANCEL_REJECTED finds the sender
            self._dispatch(n)
            self._owner.pop(msg.order_id, None)
        else:
            self._dispatch(n)

    def _dispatch(self, n: int) -> int:
        sent = 0
        for r in self._out[:n]:
            msg = report_to_message(r)
            oid = int(r["order_id"])
            addr = self._owner.get(oid)
            if msg is None:
                continue
            if addr is None:
                self.counters["unrouted"] += 1
                continue
            sent += self._send(msg, addr)
            kind = int(r["kind"])
            if kind in (ExecType.FILL, ExecType.CANCELED, ExecType.EXPIRED, ExecType.REJECTED):
                self._owner.pop(oid, None)  # terminal: the id may be reused
        return sent

    def _send(self, msg, addr: tuple[str, int]) -> int:
        try:
            self.sock.sendto(encode(msg), addr)
        except (OSError, WireError):
            self.counters["send_errors"] += 1
            return 0
        self.counters["sent"] += 1
        return 1
