"""The gateway's wire format: fixed-size little-endian binary messages, one per UDP datagram.

Every datagram starts with an 8-byte header::

    offset size type  field
    0      2    u16   magic    0x4E48 (bytes b"HN")
    2      1    u8    version  WIRE_VERSION (1)
    3      1    u8    type     MsgType
    4      2    u16   length   total datagram length in bytes, header included
    6      2    u16   reserved 0

followed by the body of its type (offsets below are from the start of the body; ``x`` = padding, zero):

=================  ====  ===================================================================================
type               body  layout (struct format, then fields)
=================  ====  ===================================================================================
NEW_ORDER   1      40    ``<qibBBBqqq``  order_id i64, symbol i32, side i8 (+1/-1), order_type u8 (1 LIMIT,
                         2 MARKET), tif u8 (1 GTC, 2 IOC, 3 FOK), flags u8 (ORDER flags, low byte), price
                         i64 ticks, qty i64 lots, ts_client i64 ns
CANCEL      2      24    ``<qi4xq``      order_id i64, symbol i32, pad 4, ts_client i64
ACK         3      40    ``<qib3xqqq``   order_id, symbol, side, pad 3, price i64, leaves i64, ts_venue i64
FILL        4      64    ``<qibBBxqqqqdq`` order_id, symbol, side, liquidity u8 (1 maker, 2 taker), final u8
                         (1: FILL, nothing left; 0: PARTIAL_FILL), pad 1, price, qty, leaves, cum i64,
                         fee f64 (quote ccy), ts_venue i64
REJECT      5      24    ``<qiBB2xq``    order_id, symbol, reason u8 (RejectReason), ref_type u8 (the MsgType
                         refused; 0 when the datagram did not decode), pad 2, ts_venue i64
DONE        6      32    ``<qiBb2xqq``   order_id, symbol, exec_type u8 (4 CANCELED, 6 EXPIRED), side i8,
                         pad 2, cum i64, ts_venue i64
=================  ====  ===================================================================================

Client -> gateway: NEW_ORDER, CANCEL. Gateway -> client: ACK, FILL, REJECT, DONE. A refused cancel (the
order already filled, or unknown) is a REJECT with ``ref_type`` CANCEL. Anything else the gateway receives
is *malformed* (it does not decode) or *unexpected* (a valid gateway->client type): both are counted and
answered with REJECT(reason MALFORMED).

:func:`decode` never trusts the datagram: it checks size, magic, version, the length field, the type and
the body size, and raises :class:`WireError` naming what is wrong.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import NamedTuple

__all__ = [
    "BODY",
    "HEADER",
    "MAGIC",
    "WIRE_VERSION",
    "Ack",
    "Cancel",
    "Done",
    "Fill",
    "MsgType",
    "NewOrder",
    "Reject",
    "WireError",
    "decode",
    "encode",
]

MAGIC = 0x4E48
WIRE_VERSION = 1
HEADER = struct.Struct("<HBBHH")
assert HEADER.size == 8


class MsgType(IntEnum):
    NEW_ORDER = 1
    CANCEL = 2
    ACK = 3
    FILL = 4
    REJECT = 5
    DONE = 6


class NewOrder(NamedTuple):
    order_id: int
    symbol: int
    side: int
    order_type: int
    tif: int
    flags: int
    price: int
    qty: int
    ts_client: int


class Cancel(NamedTuple):
    order_id: int
    symbol: int
    ts_client: int


class Ack(NamedTuple):
    order_id: int
    symbol: int
    side: int
    price: int
    leaves: int
    ts_venue: int


class Fill(NamedTuple):
    order_id: int
    symbol: int
    side: int
    liquidity: int
    final: int
    price: int
    qty: int
    leaves: int
    cum: int
    fee: float
    ts_venue: int


class Reject(NamedTuple):
    order_id: int
    symbol: int
    reason: int
    ref_type: int
    ts_venue: int


class Done(NamedTuple):
    order_id: int
    symbol: int
    exec_type: int
    side: int
    cum: int
    ts_venue: int


# type -> (body layout, message class)
BODY: dict[MsgType, tuple[struct.Struct, type]] = {
    MsgType.NEW_ORDER: (struct.Struct("<qibBBBqqq"), NewOrder),
    MsgType.CANCEL: (struct.Struct("<qi4xq"), Cancel),
    MsgType.ACK: (struct.Struct("<qib3xqqq"), Ack),
    MsgType.FILL: (struct.Struct("<qibBBxqqqqdq"), Fill),
    MsgType.REJECT: (struct.Struct("<qiBB2xq"), Reject),
    MsgType.DONE: (struct.Struct("<qiBb2xqq"), Done),
}
_SIZES = {MsgType.NEW_ORDER: 40, MsgType.CANCEL: 24, MsgType.ACK: 40, MsgType.FILL: 64, MsgType.REJECT: 24,
          MsgType.DONE: 32}  # fmt: skip
assert all(BODY[t][0].size == n for t, n in _SIZES.items()), "wire layout sizes changed: update the table"
_TYPE_OF = {cls: t for t, (_, cls) in BODY.items()}
MAX_DATAGRAM = HEADER.size + max(_SIZES.values())


class WireError(ValueError):
    """A datagram that does not decode; ``reason`` says why."""


def encode(msg: NewOrder | Cancel | Ack | Fill | Reject | Done) -> bytes:
    """The datagram for ``msg`` (header + body). Out-of-range fields raise :class:`WireError`."""
    t = _TYPE_OF.get(type(msg))
    if t is None:
        raise WireError(f"not a gateway message: {type(msg).__name__}")
    body, _ = BODY[t]
    try:
        payload = body.pack(*msg)
    except struct.error as e:
        raise WireError(f"{t.name}: field out of range ({e})") from None
    return HEADER.pack(MAGIC, WIRE_VERSION, int(t), HEADER.size + body.size, 0) + payload


def decode(data: bytes) -> NewOrder | Cancel | Ack | Fill | Reject | Done:
    """The message in ``data``; :class:`WireError` when it is not exactly one well-formed message."""
    if len(data) < HEADER.size:
        raise WireError(f"datagram of {len(data)} bytes is shorter than the {HEADER.size}-byte header")
    magic, version, mtype, length, _ = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise WireError(f"bad magic 0x{magic:04x}")
    if version != WIRE_VERSION:
        raise WireError(f"wire version {version}, expected {WIRE_VERSION}")
    if length != len(data):
        raise WireError(f"length field {length} but datagram has {len(data)} bytes")
    try:
        t = MsgType(mtype)
    except ValueError:
        raise WireError(f"unknown message type {mtype}") from None
    body, cls = BODY[t]
    if len(data) - HEADER.size != body.size:
        raise WireError(f"{t.name} body is {len(data) - HEADER.size} bytes, expected {body.size}")
    return cls(*body.unpack_from(data, HEADER.size))


def peek_type(data: bytes) -> int:
    """The type byte of a datagram that at least has a header with the right magic, else 0."""
    if len(data) >= HEADER.size:
        magic, _, mtype, _, _ = HEADER.unpack_from(data)
        if magic == MAGIC:
            return mtype
    return 0
