"""The fast path of :func:`hean.feeds.binance.read_binance`: one numba pass over the raw capture.

Why: msgspec decodes the USD-M recording at ~2 us a line (the level arrays dominate), which caps a
conversion at ~500 k lines/s before any other work. This scanner reads each line's JSON once, in numba,
picking out only the fields HEAN uses and parsing the level arrays strictly in place (no copies, no Python
objects). It accepts exactly the message shapes Binance sends -- combined-stream ``depthUpdate``, ``trade``
and ``bookTicker`` (with or without ``e``) and the REST depth snapshot -- with every required field present.
Anything else (a malformed line, an unknown event type, a missing field, a number where a decimal string
belongs) makes :func:`scan` report "not understood", and the reader falls back to its msgspec path for the
whole file, which names the line and the problem. The two paths produce identical events (tested on the
real recording).

JSON is validated at the levels the messages have: objects' keys, colons and commas; strings (with escapes);
integers; ``true``/``false``/``null``; level arrays ``[["p","q"], ...]`` exactly; values of keys HEAN does
not read are skipped with bracket matching.
"""

from __future__ import annotations

import numpy as np

from hean.jit import entry, kernel
from hean.symbols import parse_decimal

__all__ = ["F_COUNT", "SEG_COUNT", "parse_segments", "scan"]

# per-line integer fields (columns of ``ints``)
F_E, F_T, F_U, F_u, F_PU, F_TID, F_M, F_LUID = range(8)
F_COUNT = 8
# segments (columns of ``segs``): b, a, B, A, p, q  (a snapshot's bids/asks go to b/a)
SEG_COUNT = 6
# line status
L_OK, L_BLANK, L_NO_PREFIX, L_NOT_UNDERSTOOD = 1, 0, -1, -2
# message kinds (same numbers as hean.feeds.binance)
K_DEPTH, K_TRADE, K_TICKER, K_SNAPSHOT = 1, 2, 3, 4
_NONE = np.int64(-1)


def _pack(key: str) -> int:
    v = 0
    for i, ch in enumerate(key.encode()[:8]):
        v |= ch << (8 * i)
    return v | (len(key) << 56)


# key codes: first 8 bytes packed little-endian, length in the top byte
KEY_STREAM, KEY_DATA, KEY_LUID, KEY_BIDS, KEY_ASKS = (_pack(k) for k in ("stream", "data", "lastUpdateId", "bids",
                                                                          "asks"))  # fmt: skip
KEY_e, KEY_E, KEY_T, KEY_s, KEY_U, KEY_u, KEY_pu = (_pack(k) for k in ("e", "E", "T", "s", "U", "u", "pu"))
KEY_b, KEY_a, KEY_B, KEY_A, KEY_t, KEY_p, KEY_q, KEY_m = (_pack(k) for k in ("b", "a", "B", "A", "t", "p", "q", "m"))
E_DEPTH, E_TRADE, E_TICKER = (_pack(k) for k in ("depthUpdate", "trade", "bookTicker"))


@kernel
def _ws(buf, j, end):
    while j < end and (buf[j] == 32 or buf[j] == 9 or buf[j] == 13):
        j += 1
    return j


@kernel
def _string_end(buf, j, end):
    """``buf[j]`` is '"': index after the closing quote, or -1."""
    j += 1
    while j < end:
        c = buf[j]
        if c == 92:  # backslash
            j += 2
            continue
        if c == 34:
            return j + 1
        if c < 32:
            return -1
        j += 1
    return -1


@kernel
def _pack_span(buf, a, b):
    """Key code of the string contents ``buf[a:b]``."""
    v = np.int64(0)
    n = b - a
    for i in range(min(n, 8)):
        v |= np.int64(buf[a + i]) << (8 * i)
    return v | (np.int64(n) << 56)


@kernel
def _skip_value(buf, j, end):
    """Index after the JSON value starting at ``j`` (containers by bracket matching), or -1."""
    c = buf[j]
    if c == 34:
        return _string_end(buf, j, end)
    if c == 123 or c == 91:
        depth = 0
        while j < end:
            c = buf[j]
            if c == 34:
                j = _string_end(buf, j, end)
                if j < 0:
                    return -1
                continue
            if c == 123 or c == 91:
                depth += 1
            elif c == 125 or c == 93:
                depth -= 1
                if depth == 0:
                    return j + 1
            j += 1
        return -1
    if c == 45 or 48 <= c <= 57:
        k = j + 1 if c == 45 else j
        digits = 0
        while k < end and (48 <= buf[k] <= 57 or buf[k] == 46 or buf[k] == 101 or buf[k] == 69 or buf[k] == 43
                           or buf[k] == 45):  # fmt: skip
            if 48 <= buf[k] <= 57:
                digits += 1
            k += 1
        return k if digits > 0 else -1
    if j + 4 <= end and buf[j] == 116 and buf[j + 1] == 114 and buf[j + 2] == 117 and buf[j + 3] == 101:
        return j + 4  # true
    if j + 4 <= end and buf[j] == 110 and buf[j + 1] == 117 and buf[j + 2] == 108 and buf[j + 3] == 108:
        return j + 4  # null
    if (j + 5 <= end and buf[j] == 102 and buf[j + 1] == 97 and buf[j + 2] == 108 and buf[j + 3] == 115
            and buf[j + 4] == 101):  # fmt: skip
        return j + 5  # false
    return -1


@kernel
def _level_array_end(buf, j, end):
    """End of a level array ``[["p","q"],...]`` at ``j``: after the first ``]]`` (or ``[]``). Only a guess
    for anything else -- :func:`parse_segments` validates the span strictly, and a wrong guess fails there
    or in the rest of the object (the file then goes to the msgspec path)."""
    k = j + 1
    while k < end and (buf[k] == 32 or buf[k] == 9):
        k += 1
    if k < end and buf[k] == 93:
        return k + 1
    while k + 1 < end:
        if buf[k] == 93 and buf[k + 1] == 93:
            return k + 2
        k += 1
    return -1


@kernel
def _int_value(buf, j, end):
    """A JSON integer at ``j``: (value, next index) or (0, -1) for anything else."""
    k = j
    neg = False
    if k < end and buf[k] == 45:
        neg = True
        k += 1
    v = np.int64(0)
    start = k
    while k < end and 48 <= buf[k] <= 57 and k - start < 18:
        v = v * 10 + np.int64(buf[k] - 48)
        k += 1
    if k == start or (k < end and (buf[k] == 46 or buf[k] == 101 or buf[k] == 69 or 48 <= buf[k] <= 57)):
        return np.int64(0), -1
    return (-v if neg else v), k


@kernel(forceinline=True)
def _member_key(buf, j, end):
    """The packed key of the object member at ``j`` and the index of its value, or (0, -1) when malformed."""
    if j >= end or buf[j] != 34:
        return np.int64(0), -1
    k = _string_end(buf, j, end)
    if k < 0:
        return np.int64(0), -1
    key = _pack_span(buf, j + 1, k - 1)
    j = _ws(buf, k, end)
    if j >= end or buf[j] != 58:  # ':'
        return np.int64(0), -1
    j = _ws(buf, j + 1, end)
    if j >= end:
        return np.int64(0), -1
    return key, j


@kernel
def _data_object(buf, j, end, ints, segs, line, sym_span, e_code):
    """Parse the ``data`` object of a combined-stream message; returns the index after it or -1."""
    if j >= end or buf[j] != 123:
        return -1
    j = _ws(buf, j + 1, end)
    if j < end and buf[j] == 125:
        return j + 1
    while True:
        key, j = _member_key(buf, j, end)
        if j < 0:
            return -1
        v_end = -2
        col = -1
        if key == KEY_b:
            col = 0
        elif key == KEY_a:
            col = 1
        elif key == KEY_B:
            col = 2
        elif key == KEY_A:
            col = 3
        elif key == KEY_p:
            col = 4
        elif key == KEY_q:
            col = 5
        if col >= 0:
            v_end = _level_array_end(buf, j, end) if buf[j] == 91 else _skip_value(buf, j, end)
            segs[line, col, 0] = j
            segs[line, col, 1] = v_end
        elif key == KEY_E:
            iv, v_end = _int_value(buf, j, end)
            ints[line, F_E] = iv
        elif key == KEY_T:
            iv, v_end = _int_value(buf, j, end)
            ints[line, F_T] = iv
        elif key == KEY_U:
            iv, v_end = _int_value(buf, j, end)
            ints[line, F_U] = iv
        elif key == KEY_u:
            iv, v_end = _int_value(buf, j, end)
            ints[line, F_u] = iv
        elif key == KEY_pu:
            iv, v_end = _int_value(buf, j, end)
            ints[line, F_PU] = iv
        elif key == KEY_t:
            iv, v_end = _int_value(buf, j, end)
            ints[line, F_TID] = iv
        elif key == KEY_m:
            if buf[j] == 116:  # true
                ints[line, F_M] = 1
            v_end = _skip_value(buf, j, end)
            if v_end > 0 and buf[j] != 116 and buf[j] != 102:
                return -1
        elif key == KEY_e or key == KEY_s:
            if buf[j] != 34:
                return -1
            v_end = _string_end(buf, j, end)
            if v_end > 0:
                if key == KEY_e:
                    e_code[line] = _pack_span(buf, j + 1, v_end - 1)
                else:
                    sym_span[line, 0] = j + 1
                    sym_span[line, 1] = v_end - 1
        if v_end == -2:
            v_end = _skip_value(buf, j, end)
        if v_end < 0:
            return -1
        j = _ws(buf, v_end, end)
        if j >= end:
            return -1
        if buf[j] == 44:  # ','
            j = _ws(buf, j + 1, end)
            continue
        if buf[j] == 125:
            return j + 1
        return -1


@kernel
def _top_object(buf, j, end, ints, segs, line, sym_span, e_code, data_seen):
    """Parse the message object at ``j``; returns the index after it or -1. Fields HEAN reads land in
    ``ints[line]``, ``segs[line]``, ``sym_span[line]``, ``e_code[line]``."""
    if j >= end or buf[j] != 123:
        return -1
    j = _ws(buf, j + 1, end)
    if j < end and buf[j] == 125:
        return j + 1
    while True:
        key, j = _member_key(buf, j, end)
        if j < 0:
            return -1
        v_end = -2
        if key == KEY_DATA and buf[j] == 123:
            v_end = _data_object(buf, j, end, ints, segs, line, sym_span, e_code)
            data_seen[line] = 1
        elif key == KEY_LUID:
            iv, v_end = _int_value(buf, j, end)
            ints[line, F_LUID] = iv
        elif key == KEY_E:
            iv, v_end = _int_value(buf, j, end)
            ints[line, F_E] = iv
        elif key == KEY_T:
            iv, v_end = _int_value(buf, j, end)
            ints[line, F_T] = iv
        elif key == KEY_BIDS or key == KEY_ASKS:
            v_end = _level_array_end(buf, j, end) if buf[j] == 91 else _skip_value(buf, j, end)
            col = 0 if key == KEY_BIDS else 1
            segs[line, col, 0] = j
            segs[line, col, 1] = v_end
        if v_end == -2:
            v_end = _skip_value(buf, j, end)
        if v_end < 0:
            return -1
        j = _ws(buf, v_end, end)
        if j >= end:
            return -1
        if buf[j] == 44:  # ','
            j = _ws(buf, j + 1, end)
            continue
        if buf[j] == 125:
            return j + 1
        return -1


@entry
def scan(buf, starts, ends, spot, status, recv, kind, ints, segs, sym_span, sym_hash, e_code, data_seen):
    """Scan every line; returns the number of lines not understood (0: the fast path can be used).
    ``e_code``/``data_seen``: zeroed int64 scratch, one per line."""
    n = starts.shape[0]
    bad = 0
    for i in range(n):
        a = _ws(buf, starts[i], ends[i])
        end = ends[i]
        if a == end:
            status[i] = L_BLANK
            continue
        v = np.int64(0)
        j = a
        while j < end and 48 <= buf[j] <= 57 and j - a < 19:
            v = v * 10 + np.int64(buf[j] - 48)
            j += 1
        if j == a or j >= end or buf[j] != 32:
            status[i] = L_NO_PREFIX
            bad += 1
            continue
        recv[i] = v
        for f in range(F_COUNT):
            ints[i, f] = _NONE
        ints[i, F_M] = 0
        ints[i, F_E] = 0
        ints[i, F_T] = 0
        for c in range(SEG_COUNT):
            segs[i, c, 0] = 0
            segs[i, c, 1] = 0
        sym_span[i, 0] = 0
        sym_span[i, 1] = 0
        j = _top_object(buf, _ws(buf, j + 1, end), end, ints, segs, i, sym_span, e_code, data_seen)
        ok = j >= 0 and _ws(buf, j, end) == end
        k = 0
        if ok:
            h0 = segs[i, 0, 1] > segs[i, 0, 0]
            h1 = segs[i, 1, 1] > segs[i, 1, 0]
            h2 = segs[i, 2, 1] > segs[i, 2, 0]
            h3 = segs[i, 3, 1] > segs[i, 3, 0]
            h4 = segs[i, 4, 1] > segs[i, 4, 0]
            h5 = segs[i, 5, 1] > segs[i, 5, 0]
            has_sym = sym_span[i, 1] > sym_span[i, 0]
            if data_seen[i] == 0:
                if ints[i, F_LUID] >= 0 and h0 and h1:
                    k = K_SNAPSHOT
                    ints[i, F_U] = ints[i, F_LUID]
                    ints[i, F_u] = ints[i, F_LUID]
                    ints[i, F_PU] = 0
            elif has_sym:
                e = e_code[i]
                if e == E_DEPTH:
                    if ints[i, F_U] >= 0 and ints[i, F_u] >= 0 and h0 and h1 and (spot or ints[i, F_PU] >= 0):
                        k = K_DEPTH
                elif e == E_TRADE:
                    if ints[i, F_TID] >= 0 and h4 and h5:
                        k = K_TRADE
                elif e == E_TICKER or (e == 0 and h2 and h3):
                    if ints[i, F_u] >= 0 and h0 and h1 and h2 and h3:
                        k = K_TICKER
        if k == 0:
            status[i] = L_NOT_UNDERSTOOD
            bad += 1
            continue
        status[i] = L_OK
        kind[i] = k
        # FNV-1a of the symbol name
        h = np.int64(-3750763034362895579)  # 0xcbf29ce484222325
        for c in range(sym_span[i, 0], sym_span[i, 1]):
            h = (h ^ np.int64(buf[c])) * np.int64(1099511628211)
        sym_hash[i] = h
    return bad


@kernel
def _decimal_string(buf, j, end):
    """A quoted decimal at ``j``: (value, nfrac, next index) or next index -1."""
    if j >= end or buf[j] != 34:
        return np.int64(0), np.int64(0), -1
    k = j + 1
    while k < end and buf[k] != 34:
        k += 1
    if k >= end:
        return np.int64(0), np.int64(0), -1
    v, nf, ok = parse_decimal(buf, j + 1, k)
    if not ok:
        return np.int64(0), np.int64(0), -1
    return v, nf, k + 1


@entry
def parse_segments(buf, seg_start, seg_end, seg_role, tok_first, tok_count, status, val, nfrac):
    """Strictly parse each segment in place: role 0 ``[["p","q"], ...]``, roles 1/2 ``"x"``; an empty span
    has no tokens. ``status[i]`` 0 ok, 1 malformed. Returns the number of tokens."""
    t = 0
    for i in range(seg_start.shape[0]):
        tok_first[i] = t
        status[i] = 0
        j = seg_start[i]
        end = seg_end[i]
        if j >= end:
            tok_count[i] = 0
            continue
        good = True
        if seg_role[i] != 0:
            v, nf, k = _decimal_string(buf, j, end)
            if k != end:
                good = False
            else:
                val[t] = v
                nfrac[t] = nf
                t += 1
        else:
            if buf[j] != 91:
                good = False
            else:
                j = _ws(buf, j + 1, end)
                if j < end and buf[j] == 93:
                    j += 1
                else:
                    while good:
                        if j >= end or buf[j] != 91:
                            good = False
                            break
                        j = _ws(buf, j + 1, end)
                        v, nf, j = _decimal_string(buf, j, end)
                        if j < 0:
                            good = False
                            break
                        val[t] = v
                        nfrac[t] = nf
                        j = _ws(buf, j, end)
                        if j >= end or buf[j] != 44:
                            good = False
                            break
                        j = _ws(buf, j + 1, end)
                        v, nf, j = _decimal_string(buf, j, end)
                        if j < 0:
                            good = False
                            break
                        val[t + 1] = v
                        nfrac[t + 1] = nf
                        t += 2
                        j = _ws(buf, j, end)
                        if j >= end or buf[j] != 93:
                            good = False
                            break
                        j = _ws(buf, j + 1, end)
                        if j < end and buf[j] == 44:
                            j = _ws(buf, j + 1, end)
                            continue
                        if j < end and buf[j] == 93:
                            j += 1
                            break
                        good = False
                if good and j != end:
                    good = False
        if not good:
            status[i] = 1
            t = tok_first[i]
        tok_count[i] = t - tok_first[i]
    return t
