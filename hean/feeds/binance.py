"""Binance raw captures -> MARKET_EVENT arrays, with the diff-depth sync rules exactly as Binance documents.

Input: one message per line, ``<local receive time ns> <json>``; each JSON is a combined-stream message
``{"stream": ..., "data": {...}}`` (``depthUpdate``, ``trade``, ``bookTicker``) or a REST depth snapshot
``{"lastUpdateId": ..., "bids": [...], "asks": [...]}`` recorded while the stream was buffering.

Sync (per symbol; ``L`` = the snapshot's lastUpdateId):

* USD-M futures (``market="usdm"``): drop diffs with ``u < L``; the first applied diff has
  ``U <= L <= u``; every next diff's ``pu`` equals the previous ``u``.
* spot (``market="spot"``): drop ``u <= L``; the first applied has ``U <= L + 1 <= u``; then
  ``U == previous u + 1``.

Diffs that arrive before a snapshot are buffered and, when the snapshot arrives, filtered against it and
applied (stamped with the snapshot's receive time: that is when a live client applies them). A broken chain
emits an OUT_OF_SYNC event, and the symbol buffers again until the next snapshot in the stream. Every diff
is accounted for in the report's counters: ``diffs_applied``, ``diffs_before_snapshot`` (older than the
snapshot: dropped by the rules), ``diffs_unsynced`` (buffered, no later snapshot), ``gaps``.

Events: a snapshot is CLEAR then LEVEL_SETs (all F_SNAPSHOT), a diff is its bid then ask LEVEL_SETs; the
last event of each message carries F_LAST_IN_GROUP and every event of a message carries its update id ``u``
(``lastUpdateId`` for a snapshot). ``trade`` -> TRADE (side = aggressor: SELL when the buyer is the maker,
order_id = trade id). ``bookTicker`` -> TICKER pair (BID, ASK) with the ticker's ``u``. ``ts_origin`` = the
recorded receive time, ``ts_exch`` = event time ``E`` (trade time ``T`` for trades) in ns.

Speed: a numba scanner (:mod:`hean.feeds.binance_fast`) reads the capture in one pass -- lines, JSON,
decimal strings to exact tokens, symbols -- and the tokens are converted to ticks/lots and run through the
sync state machine in numba too: ~1.5 M lines/s on the shared USD-M capture (a plain file is memory-mapped;
a ``.gz`` is decompressed in a thread while the lines already out are scanned, ~1.2 M lines/s with zlib,
more with python-isal). A capture the scanner does not fully understand is read by the msgspec path
instead: msgspec decodes all lines in one call into flat Structs whose price fields stay ``msgspec.Raw``,
the numbers are tokenised in numba (see :mod:`hean.feeds.common`); it names every bad line.
"""

from __future__ import annotations

import threading
from itertools import chain
from operator import attrgetter
from pathlib import Path
from typing import Annotated

import msgspec
import numpy as np

from hean.feeds import binance_fast as bf
from hean.feeds.common import (
    ROLE_PAIRS,
    ROLE_PRICE,
    ROLE_QTY,
    FeedError,
    LineErrors,
    ReadReport,
    convert_all,
    convert_tokens,
    frac_digits_by_msg,
    gunzip,
    gunzip_pieces,
    gunzip_size_hint,
    infer_symbols,
    read_raw,
    split_lines,
    tokenise_buffer,
)
from hean.feeds.common import (
    split_zero as _split_zero,
)
from hean.jit import entry, kernel
from hean.records import F_LAST_IN_GROUP, F_SNAPSHOT, MARKET_EVENT, EventKind
from hean.symbols import SymbolTable

__all__ = ["BinanceLive", "BinanceSync", "decode_binance", "read_binance"]

_NONE = -1
_EMPTY = msgspec.Raw(b"")
# integers of a message: int64 with room (an update id or a time beyond this is a bad line, not an overflow)
_Int = Annotated[int, msgspec.Meta(ge=-(2**62), le=2**62)]
_MAX_MS = (2**63 - 1) // 1_000_000  # the largest event time in ms whose ns still fits in int64


class _Data(msgspec.Struct):
    """The ``data`` of any combined-stream message we read (fields absent from a type keep defaults)."""

    e: str = ""
    E: _Int = 0
    T: _Int = 0
    s: str = ""
    U: _Int = _NONE
    u: _Int = _NONE
    pu: _Int = _NONE
    b: msgspec.Raw = _EMPTY
    a: msgspec.Raw = _EMPTY
    B: msgspec.Raw = _EMPTY
    A: msgspec.Raw = _EMPTY
    t: _Int = _NONE
    p: msgspec.Raw = _EMPTY
    q: msgspec.Raw = _EMPTY
    m: bool = False


class _Line(msgspec.Struct):
    stream: str = ""
    data: _Data | None = None
    lastUpdateId: _Int = _NONE
    E: _Int = 0
    T: _Int = 0
    bids: msgspec.Raw = _EMPTY
    asks: msgspec.Raw = _EMPTY


_DECODER = msgspec.json.Decoder(_Line)

# message kinds
K_DEPTH, K_TRADE, K_TICKER, K_SNAPSHOT, K_MAYBE = 1, 2, 3, 4, 5
_SNAP = "\x00snapshot"
_KINDS = {"depthUpdate": K_DEPTH, "trade": K_TRADE, "bookTicker": K_TICKER, _SNAP: K_SNAPSHOT, "": K_MAYBE}
# the six raw fields of every message, in segment order, and their default roles
_get_raws = attrgetter("b", "a", "B", "A", "p", "q")
_ROLES = (ROLE_PAIRS, ROLE_PAIRS, ROLE_QTY, ROLE_QTY, ROLE_PRICE, ROLE_QTY)
_get_ints = attrgetter("E", "T", "U", "u", "pu", "t")
_get_e = attrgetter("e")
_get_s = attrgetter("s")
_get_m = attrgetter("m")
_LEVEL_SET = int(EventKind.LEVEL_SET)
_CLEAR = int(EventKind.CLEAR)
_TRADE = int(EventKind.TRADE)
_TICKER = int(EventKind.TICKER)
_OUT_OF_SYNC = int(EventKind.OUT_OF_SYNC)
# counters
C_APPLIED, C_STALE, C_UNSYNCED, C_GAPS, C_SNAPSHOTS, C_TRADES, C_TICKERS, C_LEVELS = range(8)
_COUNTER_NAMES = [
    "diffs_applied",
    "diffs_before_snapshot",
    "diffs_unsynced",
    "gaps",
    "snapshots",
    "trades",
    "tickers",
    "level_updates",
]
# sync states
S_UNSYNCED, S_WAIT_FIRST, S_SYNCED = 0, 1, 2


@entry
def _strip_recv(buf, starts, ends, out, json_start, recv, ok):
    """Parse each line's leading receive time; copy the JSON parts, one per line, into ``out``.

    ``ok[i]``: 1 good, 0 blank, -1 no ``<int> `` prefix. Returns the bytes written to ``out``.
    """
    w = 0
    for i in range(starts.shape[0]):
        a = starts[i]
        b = ends[i]
        while a < b and (buf[a] == 32 or buf[a] == 9):
            a += 1
        if a == b:
            ok[i] = 0
            continue
        v = np.int64(0)
        j = a
        while j < b and 48 <= buf[j] <= 57 and j - a < 19:
            v = v * 10 + np.int64(buf[j] - 48)
            j += 1
        if j == a or j >= b or buf[j] != 32:
            ok[i] = -1
            continue
        recv[i] = v
        json_start[i] = w
        for k in range(j + 1, b):
            out[w] = buf[k]
            w += 1
        out[w] = 10
        w += 1
        ok[i] = 1
    return w


@kernel
def _put(out, n, kind, sym, side, flags, px, qty, oid, uid, ts, tsx):
    r = out[n]
    r.seq = n + 1
    r.kind = kind
    r.symbol = sym
    r.side = side
    r.flags = flags
    r.price = px
    r.qty = qty
    r.order_id = oid
    r.update_id = uid
    r.ts_origin = ts
    r.ts_exch = tsx
    return n + 1


@kernel
def _put_levels(out, n, sym, msg, seg0, tok_first, tok_count, units, uid, ts, tsx, flags):
    """The bid then ask level sets of a depth message/snapshot; the last one gets F_LAST_IN_GROUP."""
    start = n
    for k in range(2):
        side = 1 if k == 0 else -1
        sg = seg0[msg] + k
        t0 = tok_first[sg]
        for j in range(0, tok_count[sg], 2):
            n = _put(out, n, _LEVEL_SET, sym, side, flags, units[t0 + j], units[t0 + j + 1], 0, uid, ts, tsx)
    if n > start:
        out[n - 1].flags = out[n - 1].flags | F_LAST_IN_GROUP
    return n


@kernel
def _apply_diff(j, ts, spot, mU, mu, mpu, msym, mexch, seg0, tok_first, tok_count, units,
                state, last_u, snap_id, pending, out, n, cnt):  # fmt: skip
    """Run diff message ``j`` through its symbol's sync state; returns the new event count."""
    sym = msym[j]
    U = mU[j]
    u = mu[j]
    st = state[sym]
    L = snap_id[sym]
    if st == S_WAIT_FIRST:
        if (not spot and u < L) or (spot and u <= L):
            cnt[C_STALE] += 1
            return n
        first_ok = (U <= L and u >= L) if not spot else (U <= L + 1 and u >= L + 1)
        if not first_ok:
            st = S_UNSYNCED
    elif st == S_SYNCED:
        chained = (mpu[j] == last_u[sym]) if not spot else (U == last_u[sym] + 1)
        if not chained:
            st = S_UNSYNCED
    if st == S_UNSYNCED:
        cnt[C_GAPS] += 1
        n = _put(out, n, _OUT_OF_SYNC, sym, 0, F_LAST_IN_GROUP, 0, 0, 0, u, ts, mexch[j])
        state[sym] = S_UNSYNCED
        pending[sym] = j
        return n
    before = n
    n = _put_levels(out, n, sym, j, seg0, tok_first, tok_count, units, u, ts, mexch[j], 0)
    cnt[C_LEVELS] += n - before
    cnt[C_APPLIED] += 1
    state[sym] = S_SYNCED
    last_u[sym] = u
    return n


@entry
def _events(mk, mrecv, mexch, mU, mu, mpu, msym, mtid, mside, mok, seg0, tok_first, tok_count, units,
            n_sym, spot, out, cnt, state, last_u, snap_id, pending):  # fmt: skip
    """The sync state machine over all messages in stream order; returns the number of events written.
    ``state``/``last_u``/``snap_id``: zeroed int64[n_sym]; ``pending``: int64[n_sym] of -1."""
    n = 0
    for i in range(mk.shape[0]):
        if not mok[i]:
            continue
        k = mk[i]
        sym = msym[i]
        if k == K_DEPTH:
            if state[sym] == S_UNSYNCED:
                if pending[sym] < 0:
                    pending[sym] = i
            else:
                n = _apply_diff(i, mrecv[i], spot, mU, mu, mpu, msym, mexch, seg0, tok_first, tok_count,
                                units, state, last_u, snap_id, pending, out, n, cnt)  # fmt: skip
        elif k == K_SNAPSHOT:
            cnt[C_SNAPSHOTS] += 1
            L = mu[i]
            flags = F_SNAPSHOT | (F_LAST_IN_GROUP if tok_count[seg0[i]] + tok_count[seg0[i] + 1] == 0 else 0)
            n = _put(out, n, _CLEAR, sym, 0, flags, 0, 0, 0, L, mrecv[i], mexch[i])
            n = _put_levels(out, n, sym, i, seg0, tok_first, tok_count, units, L, mrecv[i], mexch[i], F_SNAPSHOT)
            state[sym] = S_WAIT_FIRST
            snap_id[sym] = L
            last_u[sym] = L
            p = pending[sym]
            pending[sym] = -1
            if p >= 0:
                for j in range(p, i):
                    if mok[j] and mk[j] == K_DEPTH and msym[j] == sym:
                        if state[sym] == S_UNSYNCED:
                            continue  # a gap inside the buffer: pending stays at the gap
                        n = _apply_diff(j, mrecv[i], spot, mU, mu, mpu, msym, mexch, seg0, tok_first,
                                        tok_count, units, state, last_u, snap_id, pending, out, n, cnt)  # fmt: skip
        elif k == K_TRADE:
            cnt[C_TRADES] += 1
            t0 = tok_first[seg0[i] + 4]
            t1 = tok_first[seg0[i] + 5]
            n = _put(out, n, _TRADE, sym, mside[i], F_LAST_IN_GROUP, units[t0], units[t1], mtid[i], 0, mrecv[i],
                     mexch[i])  # fmt: skip
        elif k == K_TICKER:
            cnt[C_TICKERS] += 1
            s0 = seg0[i]
            n = _put(out, n, _TICKER, sym, 1, 0, units[tok_first[s0]], units[tok_first[s0 + 2]], 0, mu[i],
                     mrecv[i], mexch[i])  # fmt: skip
            n = _put(out, n, _TICKER, sym, -1, F_LAST_IN_GROUP, units[tok_first[s0 + 1]],
                     units[tok_first[s0 + 3]], 0, mu[i], mrecv[i], mexch[i])  # fmt: skip
    # diffs buffered with no snapshot after them
    for sym in range(n_sym):
        p = pending[sym]
        if p >= 0:
            for j in range(p, mk.shape[0]):
                if mok[j] and mk[j] == K_DEPTH and msym[j] == sym:
                    cnt[C_UNSYNCED] += 1
    return n


class _Scan:
    """The numba scanner's (:func:`hean.feeds.binance_fast.scan_lines`) arrays and position across calls:
    :meth:`feed` scans a longer prefix of the capture each time (a gzip capture is scanned as it is
    decompressed), :meth:`columns` gives the per-message columns and tokens.

    The arrays start small and grow (doubling) when the scanner reports one full; it resumes where it
    stopped."""

    def __init__(self, size: int, spot: bool) -> None:
        cap_m = size // 256 + 64
        cap_t = size // 16 + 64
        self.spot = spot
        self.msg = np.empty((bf.N_COLS, cap_m), np.int64)
        self.segs = np.empty((4, bf.SEG_COUNT * cap_m), np.int64)  # tok_first, tok_count, seg_role, seg_msg
        self.val = np.empty(cap_t, np.int64)
        self.nfrac = np.empty(cap_t, np.int64)
        self.sym = np.empty((2, 16), np.int64)  # start, end of each symbol name's first occurrence
        self.state = np.zeros(bf.STATE_LEN, np.int64)
        self.state[bf.S_LAST_SYM] = -1
        self.f = np.empty(bf.F_LEN, np.int64)
        self.stack = np.empty(bf.STACK, np.int64)

    @property
    def pos(self) -> int:
        return int(self.state[bf.S_POS])

    def feed(self, buf: np.ndarray) -> bool:
        """Scan ``buf`` (the capture so far, ending after a newline or at the end of the file) from where
        the last call stopped; False when a line is not understood."""
        if buf.flags.writeable:  # one compiled scanner: a read-only view, as of a file's bytes or map
            buf = buf.view()
            buf.flags.writeable = False
        st = self.state
        while True:
            sg = self.segs
            r = bf.scan_lines(buf, self.spot, st, self.msg, sg[0], sg[1], sg[2], sg[3], self.val, self.nfrac,
                              self.sym, self.f, self.stack)  # fmt: skip
            if r == bf.DONE:
                return True
            if r == bf.NOT_UNDERSTOOD:
                return False
            if r == bf.FULL_MSGS:
                n = int(st[bf.S_MSGS])
                self.msg = _grown(self.msg, n)
                self.segs = _grown(sg, bf.SEG_COUNT * n, 2 * sg.shape[1])
            elif r == bf.FULL_TOKS:
                t = int(st[bf.S_TOKS])
                self.val, self.nfrac = _grown(self.val, t), _grown(self.nfrac, t)
            else:
                self.sym = _grown(self.sym, int(st[bf.S_SYMS]))

    def columns(self, buf: np.ndarray, symbols: SymbolTable | None):
        """The columns of everything scanned in ``buf``, or None when a symbol is not in ``symbols``."""
        st, sym, msg = self.state, self.sym, self.msg
        M = int(st[bf.S_MSGS])
        found = [bytes(buf[sym[0, i] : sym[1, i]]).decode("ascii") for i in range(int(st[bf.S_SYMS]))]
        msym = msg[bf.C_SYM, :M]
        if symbols is None:
            names = {nm: i for i, nm in enumerate(found)}
        else:
            names = {sy.name: sy.id for sy in symbols}
            if any(nm not in names for nm in found):
                return None
            if found:
                lut = np.array([names[nm] for nm in found], np.int64)
                msym = np.where(msym >= 0, lut[np.maximum(msym, 0)], -1)
        col = [msg[c, :M] for c in (bf.C_LINE, bf.C_RECV, bf.C_KIND, bf.C_E, bf.C_T, bf.C_U, bf.C_u, bf.C_PU,
                                     bf.C_TID, bf.C_SIDE)]  # fmt: skip
        S = bf.SEG_COUNT * M
        T = int(st[bf.S_TOKS])
        tokens = (*self.segs[:, :S], self.val[:T], self.nfrac[:T])
        return int(st[bf.S_LINES]), *col, np.array(msym), names, tokens


def _fast_columns(buf: np.ndarray, spot: bool, symbols: SymbolTable | None):
    """Per-message columns and tokens from the numba scanner, or None when any line is not understood (the
    msgspec path then reads the file and names the problem)."""
    scan = _Scan(len(buf), spot)
    return scan.columns(buf, symbols) if scan.feed(buf) else None


_PIECE = 1 << 22  # bytes of a gzip capture decompressed at a time while the scanner reads the previous ones


@entry
def _after_last_newline(buf, a, b):
    """The index after the last newline in ``buf[a:b]``, or ``a`` when there is none."""
    for i in range(b - 1, a - 1, -1):
        if buf[i] == 10:
            return i + 1
    return a


def _gunzip_scanning(path: Path, raw: bytes, spot: bool) -> tuple[np.ndarray, _Scan | None]:
    """A gzip capture decompressed in a thread while the scanner reads the complete lines already out
    (zlib/isal and the scanner both release the GIL, so the two overlap: the conversion takes about the
    longer of the two rather than their sum). Returns (the decompressed bytes, the scan, or None when a
    line was not understood). Raises the FeedError of a corrupt gzip."""
    out = np.empty(gunzip_size_hint(raw) + 1, np.uint8)
    shared = {"filled": 0, "done": False, "error": None, "out": out}
    cond = threading.Condition()

    def produce() -> None:
        try:
            for piece in gunzip_pieces(path, raw, piece=_PIECE):
                n = len(piece)
                dst, filled = shared["out"], shared["filled"]
                if filled + n > len(dst):  # the trailer's size was wrong: only this thread grows the buffer
                    dst = _grown(dst, filled, max(2 * len(dst), filled + n))
                dst[filled : filled + n] = np.frombuffer(piece, np.uint8)
                with cond:
                    shared["out"], shared["filled"] = dst, filled + n
                    cond.notify()
        except BaseException as e:  # a FeedError for a corrupt file; anything else is re-raised below too
            shared["error"] = e
        finally:
            with cond:
                shared["done"] = True
                cond.notify()

    worker = threading.Thread(target=produce, name="hean-gunzip", daemon=True)
    worker.start()
    scan: _Scan | None = _Scan(len(out), spot)
    seen = 0
    while True:
        with cond:
            while shared["filled"] == seen and not shared["done"]:
                cond.wait()
            buf, filled, done = shared["out"], shared["filled"], shared["done"]
        if scan is not None:
            end = filled if done else _after_last_newline(buf, scan.pos, filled)
            if end > scan.pos or done:
                scan = scan if scan.feed(buf[:end]) else None
        seen = filled
        if done:
            break
    worker.join()
    if shared["error"] is not None:
        raise shared["error"]
    return buf[:filled], scan


def _grown(a: np.ndarray, used: int, cap: int | None = None) -> np.ndarray:
    """``a`` (1-D, or rows along the last axis) with twice the room, its first ``used`` entries kept."""
    cap = 2 * a.shape[-1] if cap is None else cap
    out = np.empty((*a.shape[:-1], cap), a.dtype)
    out[..., :used] = a[..., :used]
    return out


def _check_times(lines, recv, mE, mT, mok, errors: LineErrors) -> None:
    """Receive times must be >= 0 (a 19-digit prefix can wrap) and event times E/T in [0, _MAX_MS] ms, so
    every timestamp is a non-negative int64 in ns; a message outside is a bad line."""
    bad = (recv < 0) | (mE < 0) | (mE > _MAX_MS) | (mT < 0) | (mT > _MAX_MS)
    for i in np.flatnonzero(bad & mok):
        errors.bad(int(lines[i]), f"time out of range: receive {recv[i]} ns, E {mE[i]} ms, T {mT[i]} ms")
    mok &= ~bad


def read_binance(
    path: str | Path,
    symbols: SymbolTable | None = None,
    market: str = "usdm",
    lenient: bool = False,
    symbol: str | None = None,
    engine: str = "auto",
) -> tuple[np.ndarray, ReadReport]:
    """Read a Binance raw capture into MARKET_EVENTs.

    ``engine``: ``"auto"`` scans the file with the numba fast path (:mod:`hean.feeds.binance_fast`) and
    falls back to msgspec for a file the scanner does not fully understand (which is where errors are
    named); ``"msgspec"`` always decodes with msgspec. Both give identical events.

    ``symbols``: the table to convert prices with (every symbol in the file must be in it); None infers one
    with tick/lot = the finest decimal step seen per symbol. ``symbol`` names the symbol of the REST
    snapshots (they do not carry one); by default the file's only symbol. ``lenient`` skips bad lines
    (counted in the report) instead of raising :class:`FeedError`.
    """
    if market not in ("usdm", "spot"):
        raise ValueError(f"market must be 'usdm' or 'spot', got {market!r}")
    if engine not in ("auto", "msgspec"):
        raise ValueError(f"engine must be 'auto' or 'msgspec', got {engine!r}")
    kind, data = read_raw(path)
    ev, report, _ = _read(str(path), kind, data, symbols, market, lenient, symbol, engine, None)
    return ev, report


class BinanceSync:
    """The diff-depth sync state of every symbol, kept across calls of :func:`decode_binance`: how a live feed
    runs the very state machine a replay does (:func:`_events`), one chunk of capture lines at a time."""

    def __init__(self, n_symbols: int) -> None:
        self.state = np.zeros(n_symbols, np.int64)  # S_UNSYNCED / S_WAIT_FIRST / S_SYNCED
        self.last_u = np.zeros(n_symbols, np.int64)
        self.snap_id = np.zeros(n_symbols, np.int64)

    def synced(self, sym: int) -> bool:
        """True once a diff has chained on a snapshot, and every diff since on the one before."""
        return int(self.state[sym]) == S_SYNCED

    def broken(self, sym: int) -> bool:
        """True while the symbol waits for a snapshot (none yet, or the chain broke since); False from a
        snapshot on, while its first diff is awaited."""
        return int(self.state[sym]) == S_UNSYNCED

    def lose(self, sym: int) -> None:
        """The stream was cut (a disconnect, a silence): the symbol waits for a new snapshot."""
        self.state[sym] = S_UNSYNCED


def decode_binance(
    data: bytes,
    symbols: SymbolTable,
    sync: BinanceSync,
    market: str = "usdm",
    symbol: str | None = None,
    label: str = "live",
) -> tuple[np.ndarray, ReadReport, list[int]]:
    """One chunk of capture lines (``<receive ns> <json>``, each ending in a newline) through the replay's
    parser and sync state machine, the state carried in ``sync``. Returns the events, the chunk's report
    (bad lines are counted, never raised) and the 1-based numbers of the chunk's depth lines that wait for a
    snapshot: the caller hands them in again, ahead of the next chunk, as a replay keeps them buffered."""
    return _read(label, "plain", data, symbols, market, True, symbol, "auto", sync)


@entry
def _live_chunk(msg, M, tok_first, tok_count, seg_role, seg_msg, val, nfrac, sym_id, spot,
                tick_mant, tick_scale, lot_mant, lot_scale, units, status, bad_tok, mexch, mok, seg0,
                out, cnt, state, last_u, snap_id, pending, waiting):  # fmt: skip
    """One scanned chunk of one symbol's lines through the checks, the conversion and :func:`_events`, in
    one compiled call (:class:`BinanceLive`). Returns ``(events, waiting lines)``, or ``(-1, 0)`` -- before
    the sync state is touched -- when a line has a time out of range or a value that does not convert: the
    caller then reads the chunk the ordinary way, which names the line."""
    for i in range(M):
        msg[bf.C_SYM, i] = sym_id  # the chunk is one symbol's (checked by the caller); snapshots too
        t_e = msg[bf.C_E, i]
        t_t = msg[bf.C_T, i]
        if msg[bf.C_RECV, i] < 0 or t_e < 0 or t_e > _MAX_MS or t_t < 0 or t_t > _MAX_MS:
            return -1, 0
        status[i] = 0
        k = msg[bf.C_KIND, i]
        mexch[i] = (t_t if (k == K_TRADE or k == K_TICKER) and t_t > 0 else t_e) * 1_000_000
        mok[i] = True
        seg0[i] = i * bf.SEG_COUNT
    S = bf.SEG_COUNT * M
    convert_tokens(seg_msg[:S], seg_role[:S], tok_first[:S], tok_count[:S], val, nfrac, msg[bf.C_SYM, :M],
                   tick_mant, tick_scale, lot_mant, lot_scale, units, status, bad_tok)  # fmt: skip
    for i in range(M):
        if status[i] != 0:
            return -1, 0
    kind, recv, u_first, u_last = msg[bf.C_KIND, :M], msg[bf.C_RECV, :M], msg[bf.C_U, :M], msg[bf.C_u, :M]
    pu, sym, tid, side = msg[bf.C_PU, :M], msg[bf.C_SYM, :M], msg[bf.C_TID, :M], msg[bf.C_SIDE, :M]
    n = _events(kind, recv, mexch[:M], u_first, u_last, pu, sym, tid, side, mok[:M], seg0[:M], tok_first, tok_count,
                units, state.shape[0], spot, out, cnt, state, last_u, snap_id, pending)  # fmt: skip
    w = 0
    p = pending[sym_id]
    if p >= 0:
        for j in range(p, M):
            if msg[bf.C_KIND, j] == K_DEPTH:
                waiting[w] = msg[bf.C_LINE, j]
                w += 1
    return n, w


class BinanceLive:
    """:func:`decode_binance` for a live feed's chunks of one symbol, in two compiled calls and no
    allocation per call (the scanner's arrays and the conversion's are kept and grown): the same events,
    at a fraction of the cost of a general call, which a frame at a time pays every time.

    A chunk the scanner does not fully understand, or with a bad value, goes through
    :func:`decode_binance` instead, which names the line; the sync state is the same ``sync``."""

    def __init__(self, symbols: SymbolTable, symbol: str, sync: BinanceSync, market: str = "usdm") -> None:
        self.symbols = symbols
        self.symbol = symbol
        self.sym_id = symbols.id_of(symbol)
        self.name = symbol.encode("ascii")
        self.sync = sync
        self.market = market
        self.scan = _Scan(1 << 16, market == "spot")
        self._grow(256, 4096)
        self.cnt = np.zeros(len(_COUNTER_NAMES), np.int64)

    def _grow(self, m: int, t: int) -> None:
        self.status = np.zeros(m, np.int64)
        self.bad_tok = np.zeros(m, np.int64)
        self.mexch = np.zeros(m, np.int64)
        self.mok = np.ones(m, np.bool_)
        self.seg0 = np.zeros(m, np.int64)
        self.waiting = np.zeros(m, np.int64)
        self.units = np.zeros(t, np.int64)
        self.out = np.zeros(t // 2 + 2 * m + 1, MARKET_EVENT)
        self.pending = np.full(len(self.symbols), -1, np.int64)

    def decode(self, data: bytes) -> tuple[np.ndarray, dict[str, int], ReadReport | None, list[int]]:
        """(events, counters, the general path's report when it was taken, waiting line numbers)."""
        buf = np.frombuffer(data, np.uint8)
        scan = self.scan
        st = scan.state
        st[:] = 0
        st[bf.S_LAST_SYM] = -1
        if not scan.feed(buf) or not self._one_symbol(buf):
            return self._general(data)
        M, T = int(st[bf.S_MSGS]), int(st[bf.S_TOKS])
        if M > len(self.mok) or T > len(self.units) or T // 2 + 2 * M + 1 > len(self.out):
            self._grow(2 * max(M, len(self.mok)), 2 * max(T, len(self.units)))
        self.cnt[:] = 0
        self.pending[:] = -1
        sg = scan.segs
        tb = self.symbols
        n, w = _live_chunk(scan.msg, M, sg[0], sg[1], sg[2], sg[3], scan.val, scan.nfrac, self.sym_id, scan.spot,
                           tb.tick_mant, tb.tick_scale, tb.lot_mant, tb.lot_scale, self.units, self.status,
                           self.bad_tok, self.mexch, self.mok, self.seg0, self.out, self.cnt, self.sync.state,
                           self.sync.last_u, self.sync.snap_id, self.pending, self.waiting)  # fmt: skip
        if n < 0:
            return self._general(data)
        counters = dict(zip(_COUNTER_NAMES, self.cnt.tolist(), strict=True))
        return self.out[:n].copy(), counters, None, self.waiting[:w].tolist()

    def _one_symbol(self, buf: np.ndarray) -> bool:
        """Every symbol the chunk names is this one's (a snapshot names none)."""
        st, sym = self.scan.state, self.scan.sym
        return all(bytes(buf[sym[0, i] : sym[1, i]]) == self.name for i in range(int(st[bf.S_SYMS])))

    def _general(self, data: bytes):
        ev, report, waiting = decode_binance(data, self.symbols, self.sync, self.market, self.symbol)
        return ev, report.counters, report, waiting


def _read(path, kind, data, symbols, market, lenient, symbol, engine, sync):
    """The body of :func:`read_binance` over bytes already read; ``sync`` None: a whole recording."""
    spot = market == "spot"
    report = ReadReport(str(path), f"binance-{market}")
    errors = LineErrors(report, lenient)
    if kind == "gzip" and engine == "auto":
        buf, scan = _gunzip_scanning(Path(path), data, spot)
        data = buf
        fast = scan.columns(buf, symbols) if scan is not None else None
    else:
        if kind == "gzip":
            data = gunzip(path, data)
        buf = np.frombuffer(data, np.uint8)
        fast = _fast_columns(buf, spot, symbols) if engine == "auto" else None
    if fast is not None:
        (report.lines, lines, recv, mk, mE, mT, mU, mu, mpu, mtid, mside, msym, names, tokens) = fast
        M = len(mk)
        mok = np.ones(M, np.bool_)
        snap = mk == K_SNAPSHOT
    else:
        if not isinstance(data, bytes):  # a memory map or the decompressed array
            data = bytes(data)
            buf = np.frombuffer(data, np.uint8)
        starts, ends = split_lines(data)
        report.lines = len(starts)
        out = np.empty(len(buf) + 1, np.uint8)
        json_start = np.zeros(len(starts), np.int64)
        recv = np.zeros(len(starts), np.int64)
        okl = np.zeros(len(starts), np.int64)
        w = _strip_recv(buf, starts, ends, out, json_start, recv, okl)
        for i in np.flatnonzero(okl < 0):
            errors.bad(int(i) + 1, "expected '<receive time ns> <json>'")
        good = np.flatnonzero(okl > 0)
        jbuf = memoryview(out[:w])
        try:
            msgs = _DECODER.decode_lines(jbuf)
        except (msgspec.DecodeError, msgspec.ValidationError):
            msgs = []
            keep = []
            jbuf = bytes(jbuf)
            for idx in good:
                a = int(json_start[idx])
                b = jbuf.index(b"\n", a)
                try:
                    msgs.append(_DECODER.decode(jbuf[a:b]))
                    keep.append(idx)
                except (msgspec.DecodeError, msgspec.ValidationError) as e:
                    errors.bad(int(idx) + 1, f"bad JSON: {e}")
            good = np.array(keep, np.int64)
        lines = good + 1
        recv = np.ascontiguousarray(recv[good])

        M = len(msgs)
        D = [m.data for m in msgs]
        for i in [i for i, d in enumerate(D) if d is None]:
            m = msgs[i]
            if m.lastUpdateId < 0:
                D[i] = _Data(e="\x00bad")
            else:
                D[i] = _Data(e=_SNAP, E=m.E, T=m.T, U=m.lastUpdateId, u=m.lastUpdateId, pu=0, b=m.bids, a=m.asks)
        mk = np.array([_KINDS.get(e, 0) for e in map(_get_e, D)], np.int64)
        ints = np.array(list(map(_get_ints, D)), np.int64).reshape(M, 6)
        mE, mT, mU, mu, mpu, mtid = (np.ascontiguousarray(ints[:, i]) for i in range(6))
        mside = np.where(np.fromiter(map(_get_m, D), np.bool_, M), -1, 1).astype(np.int64)
        sym_names = list(map(_get_s, D))
        if symbols is None:
            names = {n: i for i, n in enumerate(n for n in dict.fromkeys(sym_names) if n)}
        else:
            names = {sy.name: sy.id for sy in symbols}
        msym = np.array([names.get(n, -1) for n in sym_names], np.int64)

        joined = b"\x00".join(chain.from_iterable(map(_get_raws, D)))
        jb = np.frombuffer(joined, np.uint8)
        seg_start = np.empty(6 * M, np.int64)
        seg_end = np.empty(6 * M, np.int64)
        _split_zero(jb, seg_start, seg_end)
        seglen = (seg_end - seg_start).reshape(M, 6)
        has = seglen > 0
        maybe = mk == K_MAYBE
        mk[maybe & has[:, 2] & has[:, 3]] = K_TICKER
        mk[mk == K_MAYBE] = 0

        # validation, all at once; reasons reported in line order
        snap = mk == K_SNAPSHOT
        checks = [
            (mk == 0, None),
            ((mk == K_DEPTH) & ((mU < 0) | (mu < 0) | ~has[:, 0] | ~has[:, 1]), "depthUpdate without U, u, b or a"),
            ((mk == K_TRADE) & (~has[:, 4] | ~has[:, 5] | (mtid < 0)), "trade without p, q or t"),
            ((mk == K_TICKER) & ((mu < 0) | ~has[:, :4].all(axis=1)), "bookTicker without u, b, B, a or A"),
            (~snap & (mk != 0) & (msym < 0), None),
        ]
        if not spot:
            checks.append(
                ((mk == K_DEPTH) & (mpu < 0), "depthUpdate without pu: a spot recording? (use market='spot')")
            )
        mok = np.ones(M, np.bool_)
        bad_reason: dict[int, str] = {}
        for mask, reason in checks:
            for i in np.flatnonzero(mask & mok):
                i = int(i)
                if reason is not None:
                    bad_reason[i] = reason
                elif mk[i] == 0:
                    e = D[i].e
                    bad_reason[i] = (
                        "neither a combined-stream message nor a depth snapshot"
                        if e == "\x00bad"
                        else f"unsupported event type {e!r} (stream {msgs[i].stream!r})"
                    )
                else:
                    bad_reason[i] = f"unknown symbol {sym_names[i]!r}"
                mok[i] = False
        for i in sorted(bad_reason):
            errors.bad(int(lines[i]), bad_reason[i])

    _check_times(lines, recv, mE, mT, mok, errors)
    if snap.any():
        if symbol is not None:
            if symbol not in names:
                raise FeedError(path, None, f"symbol {symbol!r} does not occur in the recording")
            msym[snap] = names[symbol]
        elif len(names) == 1:
            msym[snap] = 0
        else:
            first = int(lines[np.flatnonzero(snap)[0]])
            raise FeedError(path, first, "a depth snapshot does not name its symbol: pass symbol=")
    msym[msym < 0] = 0  # rows already rejected; keep the index valid
    mexch = np.where(((mk == K_TRADE) | (mk == K_TICKER)) & (mT > 0), mT, mE) * 1_000_000
    mline = lines
    seg0 = np.arange(M, dtype=np.int64) * 6
    if fast is not None:
        tok_first, tok_count, seg_role, seg_msg, val, nfrac = tokens
    else:
        seg_msg = np.repeat(np.arange(M, dtype=np.int64), 6)
        roles = np.tile(np.array(_ROLES, np.int64), (M, 1))
        roles[mk == K_TICKER, 0:2] = ROLE_PRICE
        seg_role = roles.reshape(-1)
        tok_first, tok_count, val, nfrac, seg_ok = tokenise_buffer(jb, seg_start, seg_end, mline[seg_msg], errors)
        mok &= seg_ok.reshape(M, 6).all(axis=1)

    if symbols is None:
        pf = np.zeros(M, np.int64)
        qf = np.zeros(M, np.int64)
        frac_digits_by_msg(seg_msg, seg_role, tok_first, tok_count, nfrac, pf, qf)
        pmax = {n: int(pf[mok & (msym == i)].max(initial=0)) for n, i in names.items()}
        qmax = {n: int(qf[mok & (msym == i)].max(initial=0)) for n, i in names.items()}
        symbols = infer_symbols(list(names), pmax, qmax, "binance")
    units, conv_ok = convert_all(seg_msg, seg_role, tok_first, tok_count, val, nfrac, msym, mline, symbols, errors)
    mok &= conv_ok

    cnt = np.zeros(len(_COUNTER_NAMES), np.int64)
    ev = np.empty(len(val) // 2 + 2 * M + 1, MARKET_EVENT)
    ns = max(len(symbols), 1)
    if sync is None:
        sync = BinanceSync(ns)
    pending = np.full(ns, -1, np.int64)
    n = _events(mk, recv, mexch, mU, mu, mpu, msym, mtid, mside, mok, seg0, tok_first, tok_count, units,
                ns, spot, ev, cnt, sync.state, sync.last_u, sync.snap_id, pending)  # fmt: skip
    ev = ev[:n]
    report.symbols = symbols
    report.messages = int(mok.sum())
    report.events = n
    report.counters = dict(zip(_COUNTER_NAMES, cnt.tolist(), strict=True))
    waiting = [
        int(lines[j])
        for s in range(ns)
        if pending[s] >= 0
        for j in range(int(pending[s]), M)
        if mok[j] and mk[j] == K_DEPTH and msym[j] == s
    ]
    return ev, report, sorted(waiting)
