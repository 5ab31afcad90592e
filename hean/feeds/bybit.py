"""Bybit v5 public WebSocket recordings -> MARKET_EVENT arrays.

Input: JSON lines as the WebSocket sends them, optionally each prefixed by ``<local receive time ns> ``:

* ``orderbook.{depth}.{symbol}``: ``type`` ``snapshot`` resets the book (CLEAR, then every level flagged
  F_SNAPSHOT); ``delta`` sets levels (size ``"0"`` deletes, an unknown price inserts, a known one updates).
  A delta with ``u == 1`` is a snapshot after a service restart and resets the book as well.
  ``u`` is a sequence per topic: a delta whose ``u`` is not the previous ``u + 1`` emits OUT_OF_SYNC and the
  symbol's deltas are dropped (counted) until the next snapshot; deltas before the first snapshot are
  counted as ``deltas_before_snapshot``.
* ``orderbook.1.{symbol}`` beside a deeper ``orderbook.N.{symbol}`` of the same symbol is the best bid/ask
  (Bybit sends only snapshots of it): a TICKER per side present, as Binance's bookTicker -- the exchange's
  own top, the oracle of the book, not applied to it. Alone, ``orderbook.1`` is the symbol's book.
* ``publicTrade.{symbol}``: each trade -> TRADE (side = aggressor ``S``; ``order_id`` = the trade id ``i``
  when numeric, else 0: Bybit's ids are UUIDs).

``ts_exch`` = the message ``ts`` (ms) for book messages and the trade time ``T`` for trades; ``ts_origin`` =
the receive-time prefix when present, else ``ts``. ``update_id`` = ``u``.
"""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import numpy as np

from hean.feeds.common import (
    ROLE_PAIRS,
    ROLE_PRICE,
    ROLE_QTY,
    FeedError,
    LineErrors,
    ReadReport,
    convert_all,
    frac_digits_by_msg,
    infer_symbols,
    read_bytes,
    split_lines,
    tokenise,
)
from hean.records import F_LAST_IN_GROUP, F_SNAPSHOT, MARKET_EVENT, EventKind
from hean.symbols import SymbolTable

__all__ = ["BybitSync", "decode_bybit", "read_bybit"]

_EMPTY = msgspec.Raw(b"")


class _Line(msgspec.Struct):
    topic: str = ""
    type: str = ""
    ts: int = 0
    cts: int = 0
    data: msgspec.Raw = _EMPTY


class _Book(msgspec.Struct):
    s: str = ""
    b: msgspec.Raw = _EMPTY
    a: msgspec.Raw = _EMPTY
    u: int = -1
    seq: int = -1


class _Trade(msgspec.Struct):
    T: int = 0
    s: str = ""
    S: str = ""
    v: msgspec.Raw = _EMPTY
    p: msgspec.Raw = _EMPTY
    i: str = ""


_LINE = msgspec.json.Decoder(_Line)
_BOOK = msgspec.json.Decoder(_Book)
_TRADES = msgspec.json.Decoder(list[_Trade])
K_SNAPSHOT, K_DELTA, K_TRADE, K_TICKER = 1, 2, 3, 4
_COUNTERS = ["snapshots", "deltas_applied", "deltas_before_snapshot", "deltas_unsynced", "gaps", "trades", "tickers"]
_DEEP_BOOK = re.compile(rb'"topic":\s*"orderbook\.(?!1\.)\d+\.([^"]+)"')


_MAX_MS = (2**63 - 1) // 1_000_000  # the largest time in ms whose ns still fits in int64


def _check_ranges(parsed: list[tuple]) -> None:
    """Times in [0, _MAX_MS] ms and update ids in [0, 2**62]: every stamp a non-negative int64 in ns (msgspec
    hands back any integer JSON holds, up to 2**64)."""
    for _kind, _s, ts, u, _side, _tid in parsed:
        if not 0 <= ts <= _MAX_MS:
            raise ValueError(f"time {ts} ms out of range")
        if not 0 <= u <= 2**62:
            raise ValueError(f"update id {u} out of range")


def _split_recv(line: bytes) -> tuple[int | None, bytes]:
    """``(receive ns, json)`` when the line starts with ``<digits> ``, else ``(None, line)``."""
    head, sep, rest = line.partition(b" ")
    if sep and head.isdigit():
        return int(head), rest
    return None, line


def read_bybit(
    path: str | Path, symbols: SymbolTable | None = None, lenient: bool = False
) -> tuple[np.ndarray, ReadReport]:
    """Read a Bybit v5 recording (orderbook and publicTrade topics) into MARKET_EVENTs.

    ``symbols`` None infers a table (finest decimal step seen per symbol); ``lenient`` skips and counts bad
    lines instead of raising :class:`hean.feeds.common.FeedError`.
    """
    return _read(str(path), read_bytes(path), symbols, lenient, None)


class BybitSync:
    """Each symbol's sync state kept across calls of :func:`decode_bybit` (a live feed's chunks): whether a
    snapshot has been applied since the last break, and the last applied ``u``."""

    def __init__(self) -> None:
        self.is_synced: dict[int, bool] = {}
        self.last_u: dict[int, int] = {}

    def synced(self, sym: int) -> bool:
        """True from a snapshot on, while every delta chains on the one before."""
        return self.is_synced.get(sym, False)

    def broken(self, sym: int) -> bool:
        """True while the symbol waits for a snapshot."""
        return not self.synced(sym)

    def lose(self, sym: int) -> None:
        """The stream was cut: the symbol's deltas are dropped until its next snapshot."""
        if sym in self.is_synced:
            self.is_synced[sym] = False


def decode_bybit(
    data: bytes, symbols: SymbolTable, sync: BybitSync, label: str = "live", deep: frozenset[str] = frozenset()
) -> tuple[np.ndarray, ReadReport]:
    """One chunk of lines (``<receive ns> <json>``) through the replay's parser and sync rules, the state
    carried in ``sync``; bad lines are counted in the report, never raised. ``deep``: the symbols the stream
    also has a deeper book of (their ``orderbook.1`` is a ticker: a chunk may not show the deeper topic)."""
    return _read(label, data, symbols, True, sync, deep)


def _read(path: str, data: bytes, symbols, lenient: bool, sync: BybitSync | None, deep=None):
    """The body of :func:`read_bybit` over bytes already read; ``sync`` None: a whole recording; ``deep``
    None: the symbols with a deeper book than ``orderbook.1`` are the recording's own."""
    if deep is None:
        deep = {m.decode("utf-8", "replace") for m in _DEEP_BOOK.findall(data)}
    report = ReadReport(path, "bybit")
    errors = LineErrors(report, lenient)
    starts, ends = split_lines(data)
    report.lines = len(starts)
    names: dict[str, int] = {} if symbols is None else {s.name: s.id for s in symbols}

    # one "message" per book line and per trade; each has a list of raw segments
    rows: list[tuple[int, int, int, int, int, int, int, int]] = []  # kind, line, sym, recv, exch, u, side, id
    raws: list = []
    roles: list[int] = []
    for li, (a, b) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True), 1):
        raw = data[a:b]
        if not raw.strip():
            continue
        recv, body = _split_recv(raw)
        try:
            if recv is not None and recv >= 2**63:
                raise ValueError(f"receive time {recv} ns is beyond int64")
            msg = _LINE.decode(body)
            topic = msg.topic
            if topic.startswith("orderbook.1.") and topic[12:] in deep:  # the best bid/ask beside a book
                d = _BOOK.decode(msg.data)
                if msg.type not in ("snapshot", "delta") or d.u < 0 or not d.s:
                    errors.bad(li, f"orderbook message without type snapshot/delta, s or u: {msg.type!r}")
                    continue
                parsed = [(K_TICKER, d.s, msg.ts, d.u, 0, 0)]
                segs = [[d.b or b"[]", d.a or b"[]"]]
                seg_roles = (ROLE_PAIRS, ROLE_PAIRS)
            elif topic.startswith("orderbook."):
                d = _BOOK.decode(msg.data)
                if msg.type not in ("snapshot", "delta") or d.u < 0 or not d.s:
                    errors.bad(li, f"orderbook message without type snapshot/delta, s or u: {msg.type!r}")
                    continue
                parsed = [(K_SNAPSHOT if msg.type == "snapshot" or d.u == 1 else K_DELTA, d.s, msg.ts, d.u, 0, 0)]
                segs = [[d.b or b"[]", d.a or b"[]"]]
                seg_roles = (ROLE_PAIRS, ROLE_PAIRS)
            elif topic.startswith("publicTrade."):
                trades = _TRADES.decode(msg.data)
                parsed = []
                segs = []
                for t in trades:
                    if t.S not in ("Buy", "Sell") or not t.p or not t.v or not t.s:
                        raise ValueError("trade without s, S (Buy/Sell), p or v")
                    tid = int(t.i) if t.i.isdigit() and len(t.i) < 19 else 0
                    parsed.append((K_TRADE, t.s, t.T or msg.ts, 0, 1 if t.S == "Buy" else -1, tid))
                    segs.append([t.p, t.v])
                seg_roles = (ROLE_PRICE, ROLE_QTY)
            else:
                errors.bad(li, f"unsupported topic {topic!r}")
                continue
            _check_ranges(parsed)
        except FeedError:
            raise  # strict mode's own error for this line (errors.bad above): already names file and line
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as e:
            errors.bad(li, f"bad message: {e}")
            continue
        ok = True
        for _, s, *_rest in parsed:
            if s not in names:
                if symbols is not None:
                    errors.bad(li, f"unknown symbol {s!r}")
                    ok = False
                    break
                names[s] = len(names)
        if not ok:
            continue
        for (kind, s, ts, u, side, tid), seg in zip(parsed, segs, strict=True):
            rows.append((kind, li, names[s], ts * 1_000_000 if recv is None else recv, ts * 1_000_000, u, side, tid))
            raws += seg
            roles += seg_roles

    M = len(rows)
    cols = np.array(rows, np.int64).reshape(M, 8).T if M else np.zeros((8, 0), np.int64)
    mk, mline, msym, mrecv, mexch, mu, mside, mtid = (np.ascontiguousarray(c) for c in cols)
    seg_msg = np.repeat(np.arange(M, dtype=np.int64), 2)
    seg_role = np.array(roles, np.int64)
    tok_first, tok_count, val, nfrac, seg_ok = tokenise(raws, mline[seg_msg] if M else mline, errors)
    mok = seg_ok.reshape(M, 2).all(axis=1) if M else np.ones(0, np.bool_)
    if symbols is None:
        pf = np.zeros(M, np.int64)
        qf = np.zeros(M, np.int64)
        frac_digits_by_msg(seg_msg, seg_role, tok_first, tok_count, nfrac, pf, qf)
        symbols = infer_symbols(
            list(names),
            {n: int(pf[mok & (msym == i)].max(initial=0)) for n, i in names.items()},
            {n: int(qf[mok & (msym == i)].max(initial=0)) for n, i in names.items()},
            "bybit",
        )
    units, conv_ok = convert_all(seg_msg, seg_role, tok_first, tok_count, val, nfrac, msym, mline, symbols, errors)
    mok &= conv_ok

    cnt = dict.fromkeys(_COUNTERS, 0)
    n_events = len(val) // 2 + 2 * M + 1
    ev = np.zeros(n_events, MARKET_EVENT)
    n = 0
    if sync is None:
        sync = BybitSync()
    synced, last_u = sync.is_synced, sync.last_u
    for i in np.flatnonzero(mok).tolist():
        kind, sym, u = int(mk[i]), int(msym[i]), int(mu[i])
        head = dict(symbol=sym, ts_origin=mrecv[i], ts_exch=mexch[i], update_id=u)
        if kind == K_TRADE:
            t0 = tok_first[2 * i]
            t1 = tok_first[2 * i + 1]
            _fill(ev[n : n + 1], EventKind.TRADE, head, mside[i], units[t0], units[t1], F_LAST_IN_GROUP)
            ev["order_id"][n] = mtid[i]
            n += 1
            cnt["trades"] += 1
            continue
        if kind == K_TICKER:  # the exchange's own top, as Binance's bookTicker: a TICKER per side present
            start = n
            for k, side in ((0, 1), (1, -1)):
                sg = 2 * i + k
                if tok_count[sg] >= 2:
                    t = tok_first[sg]
                    _fill(ev[n : n + 1], EventKind.TICKER, head, side, units[t], units[t + 1], 0)
                    n += 1
            if n > start:
                ev["flags"][n - 1] |= F_LAST_IN_GROUP
            cnt["tickers"] += 1
            continue
        if kind == K_DELTA:
            if not synced.get(sym, False):
                cnt["deltas_before_snapshot" if sym not in synced else "deltas_unsynced"] += 1
                continue
            if u != last_u[sym] + 1:
                _fill(ev[n : n + 1], EventKind.OUT_OF_SYNC, head, 0, 0, 0, F_LAST_IN_GROUP)
                n += 1
                cnt["gaps"] += 1
                cnt["deltas_unsynced"] += 1
                synced[sym] = False
                continue
            cnt["deltas_applied"] += 1
            flags = 0
        else:
            _fill(ev[n : n + 1], EventKind.CLEAR, head, 0, 0, 0, F_SNAPSHOT)
            n += 1
            cnt["snapshots"] += 1
            flags = F_SNAPSHOT
        start = n
        for k, side in ((0, 1), (1, -1)):
            sg = 2 * i + k
            t = tok_first[sg] + np.arange(0, tok_count[sg], 2)
            m = len(t)
            _fill(ev[n : n + m], EventKind.LEVEL_SET, head, side, units[t], units[t + 1], flags)
            n += m
        if n > start or kind == K_SNAPSHOT:  # an empty snapshot: the CLEAR ends the group
            ev["flags"][n - 1] |= F_LAST_IN_GROUP
        synced[sym] = True
        last_u[sym] = u
    ev = ev[:n]
    ev["seq"] = np.arange(1, n + 1)
    report.symbols = symbols
    report.messages = int(mok.sum())
    report.events = n
    report.counters = cnt
    return ev, report


def _fill(out: np.ndarray, kind: int, head: dict, side, price, qty, flags: int) -> None:
    out["kind"] = kind
    out["side"] = side
    out["price"] = price
    out["qty"] = qty
    out["flags"] = flags
    for k, v in head.items():
        out[k] = v
