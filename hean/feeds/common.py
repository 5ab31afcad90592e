"""What every reader of a recording shares: opening (plain, .gz, single-member .zip), splitting lines,
tokenising decimal strings inside raw JSON fragments, errors that name file and line, lenient mode.

Why a tokeniser here: a Binance depth message carries dozens of ``["price","qty"]`` pairs. Building a Python
string per number and converting it costs more than decoding the JSON. The readers let msgspec validate the
JSON and hand back the level arrays as ``msgspec.Raw`` fragments, join them into one byte buffer and run
:func:`tokenise_segments` (numba) over it: every quoted string becomes an exact ``(value, nfrac)`` pair
(:func:`hean.symbols.parse_decimal`), converted to ticks/lots per symbol by :func:`hean.symbols.to_units`.

Gunzip: :func:`gunzip` uses python-isal (``pip install -e '.[gzip]'``, 3-5x faster) when it is installed,
else zlib; both allocate the output once, at the size the gzip trailer announces.

Errors: a reader in strict mode (the default) raises :class:`FeedError` at the first bad line, naming file,
line number and the reason. With ``lenient=True`` it skips bad lines and counts them in the
:class:`ReadReport` (the first few reasons kept), which ``hean convert``/``hean book`` print. Nothing is
dropped without being counted.
"""

from __future__ import annotations

import io
import mmap
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hean.jit import entry, kernel
from hean.symbols import SymbolTable, format_units, parse_decimal, to_units

__all__ = [
    "FeedError",
    "LineErrors",
    "ReadReport",
    "check_input",
    "infer_symbols",
    "gunzip",
    "gunzip_pieces",
    "gunzip_size_hint",
    "gzip_module",
    "read_buffer",
    "read_bytes",
    "read_raw",
    "split_lines",
    "tokenise_segments",
]

MAX_REASONS = 20  # skipped-line reasons kept verbatim in a report


class FeedError(ValueError):
    """A recording cannot be read: the message names the file and the 1-based line (or record)."""

    def __init__(self, path: str | Path, line: int | None, reason: str) -> None:
        self.path = str(path)
        self.line = line
        self.reason = reason
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {reason}")


@dataclass
class ReadReport:
    """What a reader did with a recording. ``counters`` hold reader-specific counts (e.g. gaps)."""

    path: str
    format: str
    symbols: SymbolTable | None = None
    lines: int = 0
    messages: int = 0
    events: int = 0
    skipped: int = 0
    reasons: list[str] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)

    def skipped_share(self) -> float:
        """Skipped lines as a share of all lines (0 for an empty file)."""
        return self.skipped / self.lines if self.lines else 0.0

    def check_skipped(self, max_share: float) -> None:
        """Lenient mode's limit: raise :class:`FeedError` when more than ``max_share`` of the lines were
        skipped, naming the share and the first few reasons (a file that is mostly garbage is not a run)."""
        share = self.skipped_share()
        if share > max_share:
            first = "; ".join(self.reasons[:3])
            raise FeedError(
                self.path,
                None,
                f"{self.skipped} of {self.lines} lines skipped ({share:.1%}), more than the {max_share:.1%} "
                f"lenient mode allows (feed.lenient / --lenient SHARE); first: {first}",
            )

    def summary(self) -> str:
        parts = [f"{self.path} ({self.format}): {self.lines} lines, {self.messages} messages, {self.events} events"]
        if self.skipped:
            parts.append(f"{self.skipped} lines skipped")
        parts += [f"{k}={v}" for k, v in self.counters.items()]
        return ", ".join(parts)


class LineErrors:
    """Strict: raise at the first bad line. Lenient: count it, keep the first :data:`MAX_REASONS` reasons."""

    def __init__(self, report: ReadReport, lenient: bool) -> None:
        self.report = report
        self.lenient = lenient
        self.lines: set[int] = set()

    def bad(self, line: int, reason: str) -> None:
        if not self.lenient:
            raise FeedError(self.report.path, line, reason)
        if line in self.lines:
            return
        self.lines.add(line)
        self.report.skipped += 1
        if len(self.report.reasons) < MAX_REASONS:
            self.report.reasons.append(f"line {line}: {reason}")


def check_input(path: str | Path) -> Path:
    """``path`` as a Path when it names an existing file that is not a directory, else a FeedError."""
    p = Path(path)
    if not p.exists():
        raise FeedError(p, None, "no such file")
    if p.is_dir():
        raise FeedError(p, None, "is a directory, not a recording")
    return p


def read_bytes(path: str | Path) -> bytes:
    """The whole file as bytes; ``.gz`` is gunzipped, a ``.zip`` must hold exactly one member.

    Every way a path or an archive can fail (missing, a directory, unreadable, truncated or corrupt
    archive) is one :class:`FeedError` naming the file.
    """
    p = check_input(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise FeedError(p, None, f"cannot read: {e.strerror or e}") from None
    if raw[:2] == b"\x1f\x8b":
        return gunzip(p, raw)
    if raw[:4] == b"PK\x03\x04":
        return _unzip(p, raw)
    return raw


def read_buffer(path: str | Path) -> bytes | mmap.mmap:
    """:func:`read_bytes`, except that a plain file is memory-mapped read-only instead of copied (copying the
    shared 28 MB capture into a fresh bytes object took 15 ms, a fifth of the fast Binance reader's time).
    The result supports the buffer protocol (``np.frombuffer``); call ``bytes()`` on it for the methods of
    bytes."""
    kind, data = read_raw(path)
    return gunzip(path, data) if kind == "gzip" else data


def _map_read_only(f) -> mmap.mmap | None:
    """The open file memory-mapped read-only, or None where it cannot be (a pipe, a special file)."""
    try:
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):
        return None


def read_raw(path: str | Path) -> tuple[str, bytes | mmap.mmap]:
    """The file as it is stored: ``("gzip", compressed bytes)`` (the caller gunzips: :func:`gunzip`,
    :func:`gunzip_pieces`), ``("zip", the one member's bytes)`` or ``("plain", a read-only memory map)``
    (bytes for a short or unmappable file). FeedError naming the file when it cannot be read."""
    p = check_input(path)
    try:
        with open(p, "rb") as f:
            head = f.read(4)
            if len(head) == 4 and head[:2] != b"\x1f\x8b" and head != b"PK\x03\x04":
                mapped = _map_read_only(f)
                if mapped is not None:
                    return "plain", mapped
        raw = p.read_bytes()  # compressed, short, or not mappable (a pipe, a special file)
    except OSError as e:
        raise FeedError(p, None, f"cannot read: {e.strerror or e}") from None
    if raw[:2] == b"\x1f\x8b":
        return "gzip", raw
    if raw[:4] == b"PK\x03\x04":
        return "zip", _unzip(p, raw)
    return "plain", raw


def gzip_module():
    """python-isal's zlib (igzip: gunzips several times faster, ``pip install -e '.[gzip]'``), else zlib."""
    try:
        from isal import isal_zlib

        return isal_zlib
    except ImportError:
        return zlib


def gunzip(p: str | Path, raw: bytes, z=None) -> bytes:
    """Every member of the gzip data ``raw`` (of file ``p``), decompressed; FeedError when corrupt or truncated.

    ``z``: a zlib-like module (``decompressobj``, ``error``), by default isal's when installed, else zlib.
    Members follow each other as in :func:`gzip.decompress` (zero padding between them is skipped).
    """
    parts = list(gunzip_pieces(p, raw, z))
    return parts[0] if len(parts) == 1 else b"".join(parts)


def gunzip_size_hint(raw: bytes) -> int:
    """The decompressed size the gzip trailer announces (mod 2**32: a hint), bounded by 64 times the
    compressed size so that a damaged trailer cannot ask for gigabytes."""
    return min(int.from_bytes(raw[-4:], "little"), 64 * len(raw)) if len(raw) >= 4 else 0


def gunzip_pieces(p: str | Path, raw: bytes, z=None, piece: int = 0):
    """:func:`gunzip` as successive pieces of at most ``piece`` bytes (0: as large as the trailer's size,
    so one piece for one member). Each output is allocated once at its size (letting the output grow
    doubled the time with isal); a wrong or wrapped size hint only means more pieces."""
    z = z or gzip_module()
    errors = (OSError, EOFError, ValueError, zlib.error, z.error)
    step = piece or gunzip_size_hint(raw) + 1
    data = raw
    try:
        while True:
            d = z.decompressobj(31)
            out = d.decompress(data, max(step, 1 << 16))
            while True:
                if out:
                    yield out
                if d.eof:
                    break
                if d.unconsumed_tail:
                    out = d.decompress(d.unconsumed_tail, piece or 1 << 24)
                else:
                    out = d.flush()
                    if not d.eof:
                        raise EOFError("compressed file ended before the end-of-stream marker was reached")
            data = d.unused_data.lstrip(b"\x00")
            if not data:
                return
            step = piece or 1 << 20
    except errors as e:
        raise FeedError(p, None, f"corrupt gzip: {e}") from None


def _unzip(p: Path, raw: bytes) -> bytes:
    """The one member of a zip archive; a truncated or corrupt archive is a FeedError."""
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as z:
            names = [n for n in z.namelist() if not n.endswith("/")]
            if len(names) != 1:
                raise FeedError(p, None, f"zip must hold exactly one file, holds {names[:5]}")
            return z.read(names[0])
    except FeedError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, zlib.error, ValueError) as e:
        raise FeedError(p, None, f"corrupt or truncated zip: {e}") from None
    except (RuntimeError, NotImplementedError) as e:  # encrypted member, unsupported compression
        raise FeedError(p, None, f"unsupported zip: {e}") from None


@entry
def _line_bounds(buf, starts, ends):
    n = 0
    start = 0
    size = buf.shape[0]
    for i in range(size):
        if buf[i] == 10:
            end = i
            if end > start and buf[end - 1] == 13:
                end -= 1
            starts[n] = start
            ends[n] = end
            n += 1
            start = i + 1
    if start < size:
        starts[n] = start
        ends[n] = size
        n += 1
    return n


def split_lines(data: bytes | bytearray) -> tuple[np.ndarray, np.ndarray]:
    """``(starts, ends)`` byte offsets of every line (``\\n`` or ``\\r\\n``; a last line without newline)."""
    buf = np.frombuffer(data, np.uint8)
    cap = data.count(b"\n") + 1
    starts = np.empty(cap, np.int64)
    ends = np.empty(cap, np.int64)
    n = _line_bounds(buf, starts, ends)
    return starts[:n], ends[:n]


# token parse status
TOK_OK = 0
TOK_BAD_NUMBER = 1  # a quoted string that is not a plain decimal
TOK_NOT_STRING = 2  # a bare JSON number/literal where a decimal string was expected


@entry
def tokenise_segments(buf, seg_start, seg_end, tok_first, tok_count, seg_status, val, nfrac):
    """Parse every quoted decimal string of each segment ``buf[seg_start[i]:seg_end[i]]``.

    A segment is a raw JSON fragment: ``"61800.2"`` or ``[["61800.2","0.5"],...]``. Token values and
    fraction digits go to ``val``/``nfrac``; segment ``i``'s tokens are ``tok_first[i] ...
    + tok_count[i]``. A segment that fails gets ``seg_status[i]`` != TOK_OK and no tokens; parsing goes on.
    Returns the number of tokens.
    """
    t = 0
    for i in range(seg_start.shape[0]):
        tok_first[i] = t
        seg_status[i] = TOK_OK
        j = seg_start[i]
        end = seg_end[i]
        while j < end:
            c = buf[j]
            if c == 34:  # '"'
                k = j + 1
                while k < end and buf[k] != 34:
                    k += 1
                v, nf, ok = parse_decimal(buf, j + 1, k)
                if not ok:
                    seg_status[i] = TOK_BAD_NUMBER
                    break
                val[t] = v
                nfrac[t] = nf
                t += 1
                j = k + 1
            elif c == 91 or c == 93 or c == 44 or c == 32 or c == 10 or c == 13 or c == 9:  # [ ] , ws
                j += 1
            else:
                seg_status[i] = TOK_NOT_STRING
                break
        if seg_status[i] != TOK_OK:
            t = tok_first[i]
        tok_count[i] = t - tok_first[i]
    return t


_TOK_REASON = {
    TOK_BAD_NUMBER: "a price/quantity is not a plain decimal string",
    TOK_NOT_STRING: "expected decimal strings, got a bare JSON value",
}


@entry
def split_zero(buf, seg_start, seg_end):
    """Segments of ``buf`` separated by NUL bytes (raw JSON fragments joined with ``b"\\x00"``: a NUL
    cannot occur inside valid JSON). Returns the number of segments."""
    n = 0
    start = 0
    for i in range(buf.shape[0]):
        if buf[i] == 0:
            seg_start[n] = start
            seg_end[n] = i
            n += 1
            start = i + 1
    seg_start[n] = start
    seg_end[n] = buf.shape[0]
    return n + 1


def tokenise_buffer(buf: np.ndarray, seg_start: np.ndarray, seg_end: np.ndarray, seg_line, errors: LineErrors):
    """Tokenise segments of ``buf``; see :func:`tokenise`."""
    n = len(seg_start)
    cap = int(np.count_nonzero(buf == 34)) // 2 + 1
    val = np.empty(cap, np.int64)
    nfrac = np.empty(cap, np.int64)
    tok_first = np.empty(n, np.int64)
    tok_count = np.empty(n, np.int64)
    status = np.empty(n, np.int64)
    tokenise_segments(buf, seg_start, seg_end, tok_first, tok_count, status, val, nfrac)
    seg_ok = status == TOK_OK
    for i in np.flatnonzero(~seg_ok):
        frag = bytes(buf[seg_start[i] : seg_end[i]][:80])
        errors.bad(int(seg_line[i]), f"{_TOK_REASON[int(status[i])]}: {frag!r}")
    return tok_first, tok_count, val, nfrac, seg_ok


def tokenise(raws: list, seg_line: np.ndarray, errors: LineErrors):
    """Tokenise a list of raw fragments (``msgspec.Raw``/bytes), one segment per fragment.

    Returns ``(tok_first, tok_count, val, nfrac, seg_ok)``. A bad segment raises through ``errors`` naming
    its line ``seg_line[i]``, or (lenient) is counted and has ``seg_ok[i] == False``.
    """
    n = len(raws)
    lens = np.fromiter((len(r) for r in raws), np.int64, n)
    seg_end = np.cumsum(lens)
    seg_start = seg_end - lens
    buf = np.frombuffer(b"".join(raws), np.uint8)
    return tokenise_buffer(buf, seg_start, seg_end, seg_line, errors)


def infer_symbols(names: list[str], price_frac: dict[str, int], qty_frac: dict[str, int], venue: str):
    """A table whose tick/lot is the finest decimal step seen per symbol (exact for every value seen)."""
    return SymbolTable(
        [
            {
                "name": n,
                "tick_size": format_units(1, price_frac.get(n, 0)),
                "lot_size": format_units(1, qty_frac.get(n, 0)),
                "venue": venue,
            }
            for n in names
        ]
    )


# segment roles for :func:`convert_tokens`
ROLE_PAIRS = 0  # [["price","qty"], ...]
ROLE_PRICE = 1  # "price"
ROLE_QTY = 2  # "qty"

CONV_OK = 0
CONV_OFF_GRID = 1  # not a whole number of ticks/lots
CONV_NEGATIVE = 2  # a negative quantity
CONV_ODD = 3  # a level array with an odd number of strings
CONV_PRICE = 4  # a price that is not in (0, MAX_UNITS) ticks
CONV_QTY = 5  # a quantity that is not below MAX_UNITS lots
MAX_UNITS = 1 << 53  # hean.feeds.native.MAX_UNITS: the bound every event's price and qty must keep


@kernel
def _too_big(value, nfrac, scale):
    """Is ``value * 10**-nfrac`` at least MAX_UNITS steps of ``10**-scale`` (so a failed conversion was an
    overflow, not an off-grid value)? Float arithmetic is exact enough to tell at this magnitude."""
    return abs(np.float64(value)) * 10.0 ** (scale - nfrac) >= MAX_UNITS


_POW10 = np.array([10**i for i in range(19)], np.int64)
_POW10_LIMIT = np.array([(2**63 - 1) // 10**i for i in range(19)], np.int64)


@kernel(forceinline=True)
def _units(value, nfrac, mant, scale):
    """:func:`hean.symbols.to_units`, without its divisions in the common case (a step of ``10**-scale``
    and a value with at most ``scale`` fraction digits: a multiply and a bound from tables): the same answers."""
    if mant == 1 and 0 <= scale - nfrac < 19:
        k = scale - nfrac
        if -_POW10_LIMIT[k] <= value <= _POW10_LIMIT[k]:
            return value * _POW10[k], True
    return to_units(value, nfrac, mant, scale)


@entry
def convert_tokens(
    seg_msg, seg_role, tok_first, tok_count, val, nfrac, msg_sym,
    tick_mant, tick_scale, lot_mant, lot_scale, units, msg_status, msg_bad_tok,
):  # fmt: skip
    """Convert every token to ticks (prices) or lots (quantities) of its message's symbol, exactly.

    ``units[t]`` gets token ``t``'s value. Prices must be in ``(0, MAX_UNITS)`` ticks and quantities in
    ``[0, MAX_UNITS)`` lots (the bounds :mod:`hean.feeds.native` validates), so a bad value is a bad line
    here, named and skippable, rather than a refused file later. A message with a bad token gets
    ``msg_status`` != CONV_OK and ``msg_bad_tok`` = that token (the reader reports it and skips the message).
    """
    for i in range(seg_msg.shape[0]):
        m = seg_msg[i]
        sym = msg_sym[m]
        role = seg_role[i]
        t0 = tok_first[i]
        n = tok_count[i]
        if role == ROLE_PAIRS and n % 2 != 0:
            if msg_status[m] == CONV_OK:
                msg_status[m] = CONV_ODD
                msg_bad_tok[m] = t0
            continue
        for j in range(n):
            t = t0 + j
            is_price = role == ROLE_PRICE or (role == ROLE_PAIRS and j % 2 == 0)
            if is_price:
                u, ok = _units(val[t], nfrac[t], tick_mant[sym], tick_scale[sym])
                code = CONV_OFF_GRID
                if (ok and (u <= 0 or u >= MAX_UNITS)) or (not ok and _too_big(val[t], nfrac[t], tick_scale[sym])):
                    ok = False
                    code = CONV_PRICE
            else:
                u, ok = _units(val[t], nfrac[t], lot_mant[sym], lot_scale[sym])
                code = CONV_OFF_GRID
                if ok and u < 0:
                    ok = False
                    code = CONV_NEGATIVE
                elif (ok and u >= MAX_UNITS) or (not ok and _too_big(val[t], nfrac[t], lot_scale[sym])):
                    ok = False
                    code = CONV_QTY
            if not ok:
                if msg_status[m] == CONV_OK:
                    msg_status[m] = code
                    msg_bad_tok[m] = t
                units[t] = 0
            else:
                units[t] = u


@entry
def frac_digits_by_msg(seg_msg, seg_role, tok_first, tok_count, nfrac, price_frac, qty_frac):
    """Most fraction digits of the prices and of the quantities in each message (for tick/lot inference)."""
    for i in range(seg_msg.shape[0]):
        m = seg_msg[i]
        role = seg_role[i]
        for j in range(tok_count[i]):
            f = nfrac[tok_first[i] + j]
            if role == ROLE_PRICE or (role == ROLE_PAIRS and j % 2 == 0):
                if f > price_frac[m]:
                    price_frac[m] = f
            elif f > qty_frac[m]:
                qty_frac[m] = f


_CONV_REASON = {
    CONV_OFF_GRID: "is not a whole number of ticks/lots of",
    CONV_NEGATIVE: "is a negative quantity for",
    CONV_ODD: "starts a level array with an odd number of strings for",
    CONV_PRICE: "is not a price in (0, 2**53) ticks of",
    CONV_QTY: "is not a quantity below 2**53 lots of",
}


def convert_all(seg_msg, seg_role, tok_first, tok_count, val, nfrac, msg_sym, msg_line, table, errors):
    """Run :func:`convert_tokens`; report bad messages through ``errors``. Returns ``(units, msg_ok)``."""
    m = msg_sym.shape[0]
    units = np.zeros(max(len(val), 1), np.int64)
    status = np.zeros(m, np.int64)
    bad_tok = np.zeros(m, np.int64)
    convert_tokens(
        seg_msg, seg_role, tok_first, tok_count, val, nfrac, msg_sym,
        table.tick_mant, table.tick_scale, table.lot_mant, table.lot_scale, units, status, bad_tok,
    )  # fmt: skip
    for i in np.flatnonzero(status != CONV_OK):
        t = int(bad_tok[i])
        sym = table.by_id(int(msg_sym[i]))
        text = format_units(int(val[t]), int(nfrac[t]))
        errors.bad(
            int(msg_line[i]),
            f"value {text} {_CONV_REASON[int(status[i])]} {sym.name} (tick {sym.tick_size}, lot {sym.lot_size})",
        )
    return units, status == CONV_OK
