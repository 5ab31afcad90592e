"""The fast path of :func:`hean.feeds.binance.read_binance`: one numba pass over the raw capture.

Why: msgspec decodes the USD-M recording at ~2 us a line (the level arrays dominate), which caps a
conversion at ~500 k lines/s before any other work. :func:`scan_lines` reads the whole file once, in numba:
it finds the lines itself (no separate split), reads each line's JSON once, picks out only the fields HEAN
uses, parses every decimal string of the level arrays and prices in place into exact ``(value, nfrac)``
tokens (no copies, no Python objects, no second pass) and interns the symbol names. What it hands back is
already the per-message columns and tokens the rest of the reader works on.

It accepts exactly the message shapes Binance sends -- combined-stream ``depthUpdate``, ``trade`` and
``bookTicker`` (with or without ``e``) and the REST depth snapshot -- with every required field present and
strictly valid JSON (plain ASCII strings without escapes; values of keys HEAN does not read are validated
too, with a bracket stack). Anything else -- a malformed line, an unknown event type, a missing or
duplicated field, a number where a decimal string belongs, an escape, a non-ASCII byte -- stops the scan
with "not understood", and the reader falls back to its msgspec path for the whole file, which names the
line and the problem. The two paths produce identical events (tested on the real recording).

The scan is resumable: it stops with a "full" status when an output array is full and continues from the
line it stopped at once the caller has grown that array (:class:`hean.feeds.binance._Scan`), so the first
allocation can be small; and it may be given a longer prefix of the capture each time (a gzip capture is
scanned while it is decompressed).

Speed (the shared USD-M hour, 27.7 MB, 93,954 lines): ~35-45 ms for the scan on the development VM, about
650 MB/s. What it took (each measured on the capture): byte reads through :func:`_at`, a load without
numba's negative-index fix-up (a third of a byte loop); integers and strings eight bytes at a time (SWAR:
digit runs found and converted with three multiplies, a string's end found with four bit tricks; the short
decimals of the level arrays stay byte by byte, where SWAR was slower); every helper inlined into one loop
(``forceinline``); symbols compared with the last one found instead of hashed.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

from hean.jit import entry, kernel
from hean.symbols import parse_decimal

__all__ = ["N_COLS", "SEG_COUNT", "scan_lines"]

# per-message columns (rows of the column-major table ``msg``)
C_LINE, C_RECV, C_KIND, C_E, C_T, C_U, C_u, C_PU, C_TID, C_SIDE, C_SYM = range(11)
N_COLS = 11
# segments of a message: b, a, B, A, p, q (a snapshot's bids/asks go to b/a)
SEG_COUNT = 6
# segment roles (hean.feeds.common.ROLE_*)
_PAIRS, _PRICE, _QTY = 0, 1, 2
# scan state words (``state``)
S_POS, S_LINES, S_MSGS, S_TOKS, S_SYMS, S_LAST_SYM = range(6)
STATE_LEN = 8
# scan results
DONE, FULL_MSGS, FULL_TOKS, FULL_SYMS, NOT_UNDERSTOOD = 0, 1, 2, 3, 4
# message kinds (same numbers as hean.feeds.binance)
K_DEPTH, K_TRADE, K_TICKER, K_SNAPSHOT = 1, 2, 3, 4
# scratch words of one line (``f``)
F_TE, F_TT, F_LUID, F_DATA, F_E, F_T, F_U, F_u, F_PU, F_TID, F_M, F_EK, F_SA, F_SB, F_SEEN, F_TOK = range(16)
F_SEG = 16  # + 3 * segment: type (0 absent, 1 string, 2 array), first token, token count
F_LEN = F_SEG + 3 * SEG_COUNT
STACK = 64  # nesting depth of a skipped value (deeper: not understood)
# "e" values
EK_NONE, EK_DEPTH, EK_TRADE, EK_TICKER, EK_OTHER = 0, 1, 2, 3, 4
# key codes (bit numbers of the line's seen-key mask); top-level keys from 16
K_UNKNOWN = 0
K_e, K_E, K_T, K_s, K_U, K_u, K_PU, K_t, K_m = 1, 2, 3, 4, 5, 6, 7, 8, 9
K_B0 = 10  # b a B A p q -> 10..15
K_STREAM, K_DATA, K_LUID, K_BIDS, K_ASKS, K_TOP_E, K_TOP_T = 16, 17, 18, 19, 20, 21, 22

# one-byte keys: the key code by the byte
_KEY1 = np.zeros(256, np.int64)
for _ch, _code in {"e": K_e, "E": K_E, "T": K_T, "s": K_s, "U": K_U, "u": K_u, "t": K_t, "m": K_m, "b": K_B0,
                   "a": K_B0 + 1, "B": K_B0 + 2, "A": K_B0 + 3, "p": K_B0 + 4, "q": K_B0 + 5}.items():  # fmt: skip
    _KEY1[ord(_ch)] = _code
_DEPTH_UPDATE = np.frombuffer(b"depthUpdate", np.uint8)
_TRADE = np.frombuffer(b"trade", np.uint8)
_BOOK_TICKER = np.frombuffer(b"bookTicker", np.uint8)
_STREAM = np.frombuffer(b"stream", np.uint8)
_LAST_UPDATE_ID = np.frombuffer(b"lastUpdateId", np.uint8)
_POW10 = np.array([10**i for i in range(19)], np.int64)


@intrinsic
def _at(typingctx, buf, j):
    """``buf[j]`` as an int64, for ``0 <= j < len(buf)`` (the caller's loop bound): a plain load, without
    numba's negative-index fix-up, which costs a third of a byte loop's time (measured: 9.0 -> 6.8 ms for a
    string scan of the tickers)."""
    sig = types.int64(buf, j)

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        ptr = builder.gep(ary.data, [args[1]], inbounds=True)
        return builder.zext(builder.load(ptr), ir.IntType(64))

    return sig, codegen


@intrinsic
def _load8(typingctx, buf, j):
    """The 8 bytes ``buf[j:j+8]`` as one little-endian uint64 (an unaligned load), for ``j + 8 <= len(buf)``."""
    sig = types.uint64(buf, j)

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        ptr = builder.bitcast(builder.gep(ary.data, [args[1]], inbounds=True), ir.IntType(64).as_pointer())
        return builder.load(ptr, align=1)

    return sig, codegen


@intrinsic
def _ctz(typingctx, x):
    """Trailing zero bits of the uint64 ``x`` (x != 0) as an int64."""
    sig = types.int64(x)

    def codegen(context, builder, sig, args):
        return builder.cttz(args[0], ir.Constant(ir.IntType(1), 1))

    return sig, codegen


# SWAR (eight bytes per step) constants
_ONES = np.uint64(0x0101010101010101)
_HIGH = np.uint64(0x8080808080808080)
_NIBBLE_HI = np.uint64(0xF0F0F0F0F0F0F0F0)
_ZEROS = np.uint64(0x3030303030303030)  # '0' * 8
_SIXES = np.uint64(0x0606060606060606)
_SPACES = np.uint64(0x2020202020202020)
_QUOTES = np.uint64(0x2222222222222222)
_BSLASHES = np.uint64(0x5C5C5C5C5C5C5C5C)
_POW10U = np.array([10**i for i in range(20)], np.uint64)


@kernel(forceinline=True)
def _swar_value(x, m):
    """The value of the first ``m`` (1..8) digits in ``x`` (bytes 0..9, the first digit in the low byte)."""
    x = x << np.uint64(8 * (8 - m))
    x = ((x & np.uint64(0x0F0F0F0F0F0F0F0F)) * np.uint64(2561)) >> np.uint64(8)
    x = ((x & np.uint64(0x00FF00FF00FF00FF)) * np.uint64(6553601)) >> np.uint64(16)
    return ((x & np.uint64(0x0000FFFF0000FFFF)) * np.uint64(42949672960001)) >> np.uint64(32)


@kernel(forceinline=True)
def _digits(buf, k, end):
    """The run of ASCII digits at ``k``: (its value mod 2**64 as int64, its length; a length > 19 only says
    "longer than 19"). Eight bytes per step where eight are left."""
    v = np.uint64(0)
    n = 0
    while k + n + 8 <= end:
        x = _load8(buf, k + n) ^ _ZEROS  # a digit becomes 0..9
        flag = (x & _NIBBLE_HI) | ((x + _SIXES) & _NIBBLE_HI)  # non-zero in (and above) a non-digit byte
        m = 8 if flag == 0 else _ctz(flag) >> 3
        if m > 0:
            v = v * _POW10U[m] + _swar_value(x, m)
            n += m
        if m < 8 or n > 19:
            return np.int64(v), n
    while k + n < end and n <= 19:
        d = _at(buf, k + n) - 48
        if d < 0 or d > 9:
            break
        v = v * np.uint64(10) + np.uint64(d)
        n += 1
    return np.int64(v), n


@kernel(forceinline=True)
def _ws(buf, j, end):
    while j < end and (_at(buf, j) == 32 or _at(buf, j) == 9 or _at(buf, j) == 13):
        j += 1
    return j


@kernel(forceinline=True)
def _str_end(buf, j, end):
    """``buf[j]`` is '"': the index after the closing quote of a plain string (bytes 0x20-0x7f, no escape),
    or -1 (an escape or a non-ASCII byte is left to msgspec). Eight bytes per step where eight are left."""
    j += 1
    while j + 8 <= end:
        w = _load8(buf, j)
        q = w ^ _QUOTES
        b = w ^ _BSLASHES
        hit = (w | ((w - _SPACES) & ~w) | ((q - _ONES) & ~q) | ((b - _ONES) & ~b)) & _HIGH
        if hit == 0:
            j += 8
            continue
        j += _ctz(hit) >> 3  # the first '"', '\\', control or non-ASCII byte (exact for the lowest one)
        return j + 1 if _at(buf, j) == 34 else -1
    while j < end:
        c = _at(buf, j)
        if c == 34:
            return j + 1
        if c < 32 or c == 92 or c > 127:
            return -1
        j += 1
    return -1


@kernel(forceinline=True)
def _same(buf, a, b, lit):
    """Is ``_at(buf, a:b)`` the byte string ``lit``?"""
    if b - a != lit.shape[0]:
        return False
    for i in range(lit.shape[0]):
        if _at(buf, a + i) != lit[i]:
            return False
    return True


@kernel(forceinline=True)
def _digits_end(buf, j, end):
    while j < end and 48 <= _at(buf, j) <= 57:
        j += 1
    return j


@kernel
def _number_end(buf, j, end):
    """Index after the strict JSON number at ``j`` (``-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?``), or -1."""
    if j < end and _at(buf, j) == 45:
        j += 1
    if j >= end or not 48 <= _at(buf, j) <= 57:
        return -1
    if _at(buf, j) == 48:
        j += 1
    else:
        j = _digits_end(buf, j, end)
    if j < end and _at(buf, j) == 46:
        k = _digits_end(buf, j + 1, end)
        if k == j + 1:
            return -1
        j = k
    if j < end and (_at(buf, j) == 101 or _at(buf, j) == 69):
        j += 1
        if j < end and (_at(buf, j) == 43 or _at(buf, j) == 45):
            j += 1
        k = _digits_end(buf, j, end)
        if k == j:
            return -1
        j = k
    return j


@kernel
def _literal_end(buf, j, end):
    """Index after ``true``/``false``/``null`` at ``j``, or -1."""
    c = _at(buf, j)
    if c == 116 and j + 4 <= end and _at(buf, j + 1) == 114 and _at(buf, j + 2) == 117 and _at(buf, j + 3) == 101:
        return j + 4
    if c == 110 and j + 4 <= end and _at(buf, j + 1) == 117 and _at(buf, j + 2) == 108 and _at(buf, j + 3) == 108:
        return j + 4
    if (c == 102 and j + 5 <= end and _at(buf, j + 1) == 97 and _at(buf, j + 2) == 108 and _at(buf, j + 3) == 115
            and _at(buf, j + 4) == 101):  # fmt: skip
        return j + 5
    return -1


@kernel(forceinline=True)
def _colon(buf, j, end):
    """After a key's closing quote: skip ``ws : ws``; the value's index or -1."""
    j = _ws(buf, j, end)
    if j >= end or _at(buf, j) != 58:
        return -1
    j = _ws(buf, j + 1, end)
    return j if j < end else -1


@kernel
def _skip_value(buf, j, end, stack):
    """Index after the JSON value at ``j``, validated strictly (containers with a bracket stack), or -1."""
    depth = 0
    while True:
        if j >= end:
            return -1
        c = _at(buf, j)
        if c == 123 or c == 91:  # '{' '['
            if depth == stack.shape[0]:
                return -1
            j = _ws(buf, j + 1, end)
            if j < end and _at(buf, j) == c + 2:  # '{}' '[]'
                j += 1
            else:
                stack[depth] = c
                depth += 1
                if c == 123:
                    if j >= end or _at(buf, j) != 34:
                        return -1
                    j = _str_end(buf, j, end)
                    if j < 0:
                        return -1
                    j = _colon(buf, j, end)
                    if j < 0:
                        return -1
                continue  # the first member's value
        elif c == 34:
            j = _str_end(buf, j, end)
        elif c == 45 or 48 <= c <= 57:
            j = _number_end(buf, j, end)
        else:
            j = _literal_end(buf, j, end)
        if j < 0:
            return -1
        # after a value: close containers, or a comma and the next value
        while depth > 0:
            j = _ws(buf, j, end)
            if j >= end:
                return -1
            c = _at(buf, j)
            top = stack[depth - 1]
            if c == top + 2:
                depth -= 1
                j += 1
                continue
            if c != 44:
                return -1
            j = _ws(buf, j + 1, end)
            if top == 123:
                if j >= end or _at(buf, j) != 34:
                    return -1
                j = _str_end(buf, j, end)
                if j < 0:
                    return -1
                j = _colon(buf, j, end)
                if j < 0:
                    return -1
            break
        if depth == 0:
            return j


@kernel(forceinline=True)
def _int_value(buf, j, end):
    """A JSON integer of at most 18 digits at ``j`` (no leading zero): (value, next index), or (0, -1)."""
    k = j
    neg = False
    if k < end and _at(buf, k) == 45:
        neg = True
        k += 1
    v, n = _digits(buf, k, end)
    if n == 0 or n > 18 or (n > 1 and _at(buf, k) == 48):
        return np.int64(0), -1
    k += n
    if k < end and (_at(buf, k) == 46 or _at(buf, k) == 101 or _at(buf, k) == 69):
        return np.int64(0), -1
    return (-v if neg else v), k


@kernel(forceinline=True)
def _decimal(buf, j, end, val, nfrac, t):
    """The quoted decimal at ``j`` into token ``t`` (exactly :func:`hean.symbols.parse_decimal`'s answer);
    the index after its closing quote, or -1."""
    if j >= end or _at(buf, j) != 34:
        return -1
    a = j + 1
    k = a
    v = np.int64(0)
    while k < end and 48 <= _at(buf, k) <= 57:
        v = v * 10 + np.int64(_at(buf, k) - 48)
        k += 1
    if k > a and k < end and k - a <= 18:
        if _at(buf, k) == 34:  # an integer
            val[t] = v
            nfrac[t] = 0
            return k + 1
        if _at(buf, k) == 46:
            k += 1
            f0 = k
            last_nz = k
            while k < end and 48 <= _at(buf, k) <= 57:
                d = np.int64(_at(buf, k) - 48)
                v = v * 10 + d
                k += 1
                if d != 0:
                    last_nz = k
            if k > f0 and k < end and _at(buf, k) == 34 and k - a <= 18:
                val[t] = v // _POW10[k - last_nz]
                nfrac[t] = last_nz - f0
                return k + 1
    # anything else: the string's end, and parse_decimal decides
    k = _str_end(buf, j, end)
    if k < 0:
        return -1
    v, nf, ok = parse_decimal(buf, a, k - 1)
    if not ok:
        return -1
    val[t] = v
    nfrac[t] = nf
    return k


@kernel(forceinline=True)
def _pairs(buf, j, end, val, nfrac, f):
    """The level array ``[["p","q"], ...]`` at ``j`` into tokens from ``f[F_TOK]`` (advanced); the index
    after it, -1 when malformed, -2 when the token arrays are full."""
    cap = val.shape[0]
    t = f[F_TOK]
    if _at(buf, j) != 91:
        return -1
    j = _ws(buf, j + 1, end)
    if j < end and _at(buf, j) == 93:
        return j + 1
    while True:
        if j >= end or _at(buf, j) != 91:
            return -1
        if t + 2 > cap:
            return -2
        j = _decimal(buf, _ws(buf, j + 1, end), end, val, nfrac, t)
        if j < 0:
            return -1
        j = _ws(buf, j, end)
        if j >= end or _at(buf, j) != 44:
            return -1
        j = _decimal(buf, _ws(buf, j + 1, end), end, val, nfrac, t + 1)
        if j < 0:
            return -1
        t += 2
        f[F_TOK] = t
        j = _ws(buf, j, end)
        if j >= end or _at(buf, j) != 93:
            return -1
        j = _ws(buf, j + 1, end)
        if j < end and _at(buf, j) == 44:
            j = _ws(buf, j + 1, end)
            continue
        if j < end and _at(buf, j) == 93:
            return j + 1
        return -1


@kernel(forceinline=True)
def _segment(buf, j, end, val, nfrac, f, seg):
    """A price/quantity field's value at ``j`` (a decimal string or a level array) as segment ``seg``;
    the index after it, -1 malformed, -2 token arrays full."""
    base = F_SEG + 3 * seg
    t0 = f[F_TOK]
    if _at(buf, j) == 34:
        if t0 >= val.shape[0]:
            return -2
        j = _decimal(buf, j, end, val, nfrac, t0)
        if j < 0:
            return -1
        f[F_TOK] = t0 + 1
        f[base] = 1
    elif _at(buf, j) == 91:
        j = _pairs(buf, j, end, val, nfrac, f)
        if j < 0:
            return j
        f[base] = 2
    else:
        return -1
    f[base + 1] = t0
    f[base + 2] = f[F_TOK] - t0
    return j


@kernel(forceinline=True)
def _key(buf, j, end, top):
    """The key at ``j`` (a '"' expected): (code, index of its value), code K_UNKNOWN for a key HEAN does
    not read; (0, -1) when malformed."""
    if j >= end or _at(buf, j) != 34:
        return 0, -1
    k = _str_end(buf, j, end)
    if k < 0:
        return 0, -1
    n = k - j - 2
    code = K_UNKNOWN
    if n == 1:
        c = _at(buf, j + 1)
        if top:
            code = K_TOP_E if c == 69 else (K_TOP_T if c == 84 else K_UNKNOWN)
        else:
            code = _KEY1[c]
    elif top:
        if n == 4:
            a, b, c, d = _at(buf, j + 1), _at(buf, j + 2), _at(buf, j + 3), _at(buf, j + 4)
            if a == 100 and b == 97 and c == 116 and d == 97:  # data
                code = K_DATA
            elif a == 98 and b == 105 and c == 100 and d == 115:  # bids
                code = K_BIDS
            elif a == 97 and b == 115 and c == 107 and d == 115:  # asks
                code = K_ASKS
        elif n == 6 and _same(buf, j + 1, k - 1, _STREAM):
            code = K_STREAM
        elif n == 12 and _same(buf, j + 1, k - 1, _LAST_UPDATE_ID):
            code = K_LUID
    elif n == 2 and _at(buf, j + 1) == 112 and _at(buf, j + 2) == 117:  # pu
        code = K_PU
    return code, _colon(buf, k, end)


@kernel(forceinline=True)
def _value(buf, j, end, val, nfrac, f, stack, code):
    """The value of key ``code`` at ``j`` (any key but ``data``) into ``f``; the index after it, -1 when not
    understood, -2 when the token arrays are full."""
    if code != K_UNKNOWN:
        bit = np.int64(1) << code
        if f[F_SEEN] & bit:
            return -1  # a duplicated field: msgspec decides
        f[F_SEEN] |= bit
    c = _at(buf, j)
    if code == K_UNKNOWN:
        return _skip_value(buf, j, end, stack)
    if code >= K_B0 and code < K_B0 + SEG_COUNT:
        return _segment(buf, j, end, val, nfrac, f, code - K_B0)
    if code == K_BIDS or code == K_ASKS:
        return _segment(buf, j, end, val, nfrac, f, 0 if code == K_BIDS else 1)
    if code == K_e or code == K_s or code == K_STREAM:
        if c != 34:
            return -1
        k = _str_end(buf, j, end)
        if k > 0 and code == K_e:
            ek = EK_OTHER
            if k == j + 2:
                ek = EK_NONE
            elif _same(buf, j + 1, k - 1, _DEPTH_UPDATE):
                ek = EK_DEPTH
            elif _same(buf, j + 1, k - 1, _TRADE):
                ek = EK_TRADE
            elif _same(buf, j + 1, k - 1, _BOOK_TICKER):
                ek = EK_TICKER
            f[F_EK] = ek
        elif k > 0 and code == K_s:
            f[F_SA] = j + 1
            f[F_SB] = k - 1
        return k
    if code == K_m:
        if c != 116 and c != 102:
            return -1
        f[F_M] = 1 if c == 116 else 0
        return _literal_end(buf, j, end)
    # an integer field
    v, j = _int_value(buf, j, end)
    if code == K_E:
        f[F_E] = v
    elif code == K_T:
        f[F_T] = v
    elif code == K_U:
        f[F_U] = v
    elif code == K_u:
        f[F_u] = v
    elif code == K_PU:
        f[F_PU] = v
    elif code == K_t:
        f[F_TID] = v
    elif code == K_LUID:
        f[F_LUID] = v
    elif code == K_TOP_E:
        f[F_TE] = v
    else:
        f[F_TT] = v
    return j


@kernel(forceinline=True)
def _after_member(buf, j, end):
    """After a member's value: (index of the next key, False) after a comma, (index after '}', True) at the
    object's end, or (-1, True)."""
    j = _ws(buf, j, end)
    if j < end and _at(buf, j) == 44:  # ','
        return _ws(buf, j + 1, end), False
    if j < end and _at(buf, j) == 125:
        return j + 1, True
    return -1, True


@kernel(forceinline=True)
def _data_object(buf, j, end, val, nfrac, f, stack):
    """The ``data`` object at ``j`` (a '{'); its fields to ``f``. The index after it, -1 or -2 (as _value)."""
    f[F_DATA] = 1
    j = _ws(buf, j + 1, end)
    if j < end and _at(buf, j) == 125:
        return j + 1
    while True:
        code, j = _key(buf, j, end, False)
        if j < 0:
            return -1
        j = _value(buf, j, end, val, nfrac, f, stack, code)
        if j < 0:
            return j
        j, last = _after_member(buf, j, end)
        if last:
            return j


@kernel(forceinline=True)
def _top_object(buf, j, end, val, nfrac, f, stack):
    """The message object at ``j``; the fields HEAN reads go to ``f``. The index after it, -1 when not
    understood, -2 when the token arrays are full."""
    if j >= end or _at(buf, j) != 123:
        return -1
    j = _ws(buf, j + 1, end)
    if j < end and _at(buf, j) == 125:
        return j + 1
    while True:
        code, j = _key(buf, j, end, True)
        if j < 0:
            return -1
        if code == K_DATA:
            if _at(buf, j) != 123 or f[F_DATA] != 0:
                return -1  # data that is not an object, or twice: msgspec decides
            j = _data_object(buf, j, end, val, nfrac, f, stack)
        else:
            j = _value(buf, j, end, val, nfrac, f, stack, code)
        if j < 0:
            return j
        j, last = _after_member(buf, j, end)
        if last:
            return j


@kernel(forceinline=True)
def _kind(f, spot):
    """The message kind of a parsed line (0: not one HEAN understands); its segments' types checked."""
    has0 = f[F_SEG] != 0
    has1 = f[F_SEG + 3] != 0
    has2 = f[F_SEG + 6] != 0
    has3 = f[F_SEG + 9] != 0
    k = 0
    if f[F_DATA] == 0:
        if f[F_LUID] >= 0 and has0 and has1:
            k = K_SNAPSHOT
    elif f[F_SEEN] & ((np.int64(1) << K_BIDS) | (np.int64(1) << K_ASKS)):
        return 0  # bids/asks beside data: msgspec decides
    elif f[F_SB] > f[F_SA]:
        e = f[F_EK]
        if e == EK_DEPTH:
            if f[F_U] >= 0 and f[F_u] >= 0 and has0 and has1 and (spot or f[F_PU] >= 0):
                k = K_DEPTH
        elif e == EK_TRADE:
            if f[F_TID] >= 0 and f[F_SEG + 12] != 0 and f[F_SEG + 15] != 0:
                k = K_TRADE
        elif e == EK_TICKER or (e == EK_NONE and has2 and has3):
            if f[F_u] >= 0 and has0 and has1 and has2 and has3:
                k = K_TICKER
    if k == 0:
        return 0
    # every present segment must have the type its role reads: level arrays for b/a of depth, snapshot
    # and trade messages, decimal strings for everything else
    for s in range(SEG_COUNT):
        ty = f[F_SEG + 3 * s]
        if ty != 0 and (ty == 2) != (s < 2 and k != K_TICKER):
            return 0
    return k


@kernel(forceinline=True)
def _intern(buf, a, b, sym, state):
    """The id of the symbol name ``buf[a:b]`` (ids in first-seen order; ``sym`` holds each one's first
    occurrence, ``state[S_SYMS]`` their number); -1 when ``sym`` is full. A name must be printable ASCII
    (else -2: msgspec decides). The last name found is tried first (a capture is mostly one symbol)."""
    n = state[S_SYMS]
    last = state[S_LAST_SYM]
    for r in range(n + 1):
        i = last if r == 0 else r - 1
        if i < 0 or (r > 0 and i == last) or sym[1, i] - sym[0, i] != b - a:
            continue
        same = True
        for c in range(b - a):
            if _at(buf, sym[0, i] + c) != _at(buf, a + c):
                same = False
                break
        if same:
            state[S_LAST_SYM] = i
            return i
    for c in range(a, b):
        ch = _at(buf, c)
        if ch < 33 or ch > 126:
            return -2
    if n == sym.shape[1]:
        return -1
    sym[0, n] = a
    sym[1, n] = b
    state[S_SYMS] = n + 1
    state[S_LAST_SYM] = n
    return n


@entry
def scan_lines(buf, spot, state, msg, tok_first, tok_count, seg_role, seg_msg, val, nfrac, sym, f, stack):
    """Scan the capture from ``state[S_POS]`` to its end, a line at a time.

    Every line is blank or a message HEAN understands; a message's columns go to ``msg[:, n]`` (C_*), its six
    segments' tokens to ``tok_first/tok_count/seg_role/seg_msg[6n:6n+6]`` and ``val``/``nfrac``, its symbol name is
    interned in ``sym`` (start, end of its first occurrence). ``state`` carries the position, lines,
    messages, tokens and symbols so far. Returns DONE, NOT_UNDERSTOOD (the line ``state[S_LINES] + 1``), or
    FULL_* when an array is full: grow it and call again (the line is read again).
    """
    size = buf.shape[0]
    pos = state[S_POS]
    line = state[S_LINES]
    n = state[S_MSGS]
    cap_m = msg.shape[1]
    while pos < size:
        a = _ws(buf, pos, size)
        if a == size or _at(buf, a) == 10:  # a blank line
            line += 1
            pos = a + 1
            state[S_POS] = pos
            state[S_LINES] = line
            continue
        if n == cap_m:
            return FULL_MSGS
        # the receive time: up to 19 digits and one space
        v, nd = _digits(buf, a, size)
        j = a + nd
        if nd == 0 or nd > 19 or j >= size or _at(buf, j) != 32:
            return NOT_UNDERSTOOD
        for i in range(F_LEN):
            f[i] = -1
        f[F_TE] = 0
        f[F_TT] = 0
        f[F_E] = 0
        f[F_T] = 0
        f[F_M] = 0
        f[F_DATA] = 0
        f[F_EK] = EK_NONE
        f[F_SA] = 0
        f[F_SB] = 0
        f[F_SEEN] = 0
        f[F_TOK] = state[S_TOKS]
        for s in range(SEG_COUNT):
            f[F_SEG + 3 * s] = 0
        j = _top_object(buf, _ws(buf, j + 1, size), size, val, nfrac, f, stack)
        if j == -2:
            return FULL_TOKS
        if j < 0:
            return NOT_UNDERSTOOD
        j = _ws(buf, j, size)
        if j < size and _at(buf, j) != 10:
            return NOT_UNDERSTOOD
        k = _kind(f, spot)
        if k == 0:
            return NOT_UNDERSTOOD
        sid = -1
        if k != K_SNAPSHOT:
            sid = _intern(buf, f[F_SA], f[F_SB], sym, state)
            if sid == -1:
                return FULL_SYMS
            if sid < 0:
                return NOT_UNDERSTOOD
        data = f[F_DATA] != 0
        msg[C_LINE, n] = line + 1
        msg[C_RECV, n] = v
        msg[C_KIND, n] = k
        msg[C_E, n] = f[F_E] if data else f[F_TE]
        msg[C_T, n] = f[F_T] if data else f[F_TT]
        if k == K_SNAPSHOT:
            msg[C_U, n] = f[F_LUID]
            msg[C_u, n] = f[F_LUID]
            msg[C_PU, n] = 0
        else:
            msg[C_U, n] = f[F_U]
            msg[C_u, n] = f[F_u]
            msg[C_PU, n] = f[F_PU]
        msg[C_TID, n] = f[F_TID]
        msg[C_SIDE, n] = -1 if f[F_M] == 1 else 1
        msg[C_SYM, n] = sid
        for s in range(SEG_COUNT):
            g = SEG_COUNT * n + s
            if f[F_SEG + 3 * s] != 0:
                tok_first[g] = f[F_SEG + 3 * s + 1]
                tok_count[g] = f[F_SEG + 3 * s + 2]
            else:
                tok_first[g] = f[F_TOK]
                tok_count[g] = 0
            seg_msg[g] = n
            if s < 2:
                seg_role[g] = _PRICE if k == K_TICKER else _PAIRS
            else:
                seg_role[g] = _PRICE if s == 4 else _QTY
        n += 1
        line += 1
        pos = j + 1
        state[S_POS] = pos
        state[S_LINES] = line
        state[S_MSGS] = n
        state[S_TOKS] = f[F_TOK]
    return DONE
