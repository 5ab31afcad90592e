"""HdrHistogram interval logs (``.hlog``, log format 1.3) written from HEAN histograms, no extra dependency.

Why write it ourselves: the ``.hlog`` format is HdrHistogram's lingua franca (HistogramLogAnalyzer, the
``hdrhistogram`` package, wrk2 tooling), and HEAN's bucket layout *is* HdrHistogram's (see
:mod:`hean.telemetry.histogram`), so the counters can be encoded directly -- the ``hdrhistogram`` package
is only needed to read the log back (the tests do).

Encoding of one histogram (the "V2" compressed format, all integers big-endian):

* payload: cookie ``0x1c849313`` (u32), length of the counts part (u32), normalizing index offset 0 (u32),
  significant figures 3 (u32), lowest trackable value 1 (u64), highest trackable value 10 s (u64),
  integer-to-double conversion ratio 1.0 (f64), then the counters from index 0 up to the index of the
  maximum as ZigZag LEB128 varints, where a run of ``k >= 2`` zero counters is written as ``-k``;
* the payload is zlib-compressed and prefixed with cookie ``0x1c849314`` (u32) and the compressed length
  (u32); the whole is base64-encoded onto one line.

A log line is ``[Tag=<tag>,]<start s>,<length s>,<max in ms>,<base64 histogram>``; start times are seconds
relative to the ``#[StartTime: ...]`` header. Values are nanoseconds (so the max column is ns / 1e6 = ms,
HdrHistogram's usual ``maxValueUnitRatio``).

It lives with the telemetry (not with the benchmarks, which use it too) because the run's own interval
recorder (:mod:`hean.telemetry.intervals`, driven by the supervisor) writes these logs, and the engine may
not import the command-line layer.
"""

from __future__ import annotations

import base64
import os
import struct
import zlib
from datetime import UTC, datetime
from typing import NamedTuple

import numpy as np

from hean.telemetry.histogram import (
    H_BASE,
    HIST_HIGHEST,
    HIST_LOWEST,
    HIST_SIG_FIGS,
    check_histogram,
    hist_index,
    hist_max,
)

__all__ = ["HLOG_VERSION", "EncodedHistogram", "encode_histogram", "encode_interval", "write_hlog"]

HLOG_VERSION = "1.3"
_ENCODING_COOKIE = 0x1C849303 | 0x10
_COMPRESSION_COOKIE = 0x1C849304 | 0x10
_PAYLOAD_HEADER = struct.Struct(">IIIIqqd")
_OUTER_HEADER = struct.Struct(">II")


def _varint(value: int, out: bytearray) -> None:
    """ZigZag + LEB128 (7 bits per byte, low first; at most 9 bytes as in HdrHistogram). The reference
    for :func:`_varints`, which encodes a whole array at once."""
    z = ((value << 1) ^ (value >> 63)) & 0xFFFFFFFFFFFFFFFF
    for _ in range(8):
        if z < 0x80:
            out.append(z)
            return
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z & 0xFF)  # the 9th byte carries the last 8 bits


def _varints(values: np.ndarray) -> bytes:
    """:func:`_varint` of every int64 in ``values``, concatenated -- in numpy, because a second's interval
    of a busy stage has thousands of non-empty buckets and the supervisor encodes every stage's interval
    every second (about 7x faster than the loop: ~0.4 ms instead of ~3 ms for 3,500 buckets)."""
    z = values.astype(np.int64)
    z = ((z << 1) ^ (z >> 63)).view(np.uint64)  # ZigZag
    nbytes = np.ones(len(z), dtype=np.int64)
    for k in range(1, 9):  # a value needs byte k when it has bits at or above 7k
        more = z >= np.uint64(1 << (7 * k))
        if not more.any():
            break
        nbytes += more
    width = int(nbytes.max(initial=1))  # columns only as wide as the largest value (counts are small)
    out = np.empty((len(z), width), dtype=np.uint8)
    for k in range(width):
        if k == 8:  # the 9th byte carries the last 8 bits
            out[:, k] = (z >> np.uint64(56)).astype(np.uint8)
        else:
            out[:, k] = ((z >> np.uint64(7 * k)) & np.uint64(0x7F)).astype(np.uint8) | np.where(
                nbytes > k + 1, 0x80, 0
            ).astype(np.uint8)
    return out[np.arange(width)[None, :] < nbytes[:, None]].tobytes()


def _encode_counts(counts: np.ndarray, limit: int) -> bytes:
    """The counters below ``limit`` as varints, a run of ``k >= 2`` zero counters written as ``-k``."""
    nz = np.flatnonzero(counts[:limit])
    if not len(nz):
        return b""
    gaps = np.diff(nz, prepend=-1) - 1  # zero counters before each non-zero one
    tokens = np.empty((len(nz), 2), dtype=np.int64)
    tokens[:, 0] = np.where(gaps == 1, 0, -gaps)  # one zero is written as 0, a run of k as -k
    tokens[:, 1] = counts[nz]
    keep = np.ones((len(nz), 2), dtype=bool)
    keep[:, 0] = gaps > 0  # no gap token where the counter follows a non-zero one
    return _varints(tokens[keep])


def encode_histogram(hist: np.ndarray) -> str:
    """The base64 "compressed histogram" string HdrHistogram decoders accept."""
    check_histogram(hist, "encode_histogram")
    counts = hist[H_BASE:]
    n = int(counts.sum())
    limit = int(hist_index(int(hist_max(hist)))) + 1 if n else 0
    last = np.flatnonzero(counts)
    if n:
        limit = max(limit, int(last[-1]) + 1)  # a torn copy may hold a count above its recorded max
    body = _encode_counts(counts, limit)
    payload = _PAYLOAD_HEADER.pack(_ENCODING_COOKIE, len(body), 0, HIST_SIG_FIGS, HIST_LOWEST, HIST_HIGHEST, 1.0) + body
    packed = zlib.compress(payload)
    return base64.b64encode(_OUTER_HEADER.pack(_COMPRESSION_COOKIE, len(packed)) + packed).decode("ascii")


class EncodedHistogram(NamedTuple):
    """A histogram already encoded for a log line: its exact maximum (ns) and its base64 text.

    Why: a recorder that keeps many intervals (:class:`hean.telemetry.intervals.LatencyIntervals`) holds
    these few kilobytes each instead of the 200 KiB array, and :func:`write_hlog` takes either."""

    max_ns: int
    text: str


def encode_interval(hist: np.ndarray) -> EncodedHistogram:
    """``hist`` as an :class:`EncodedHistogram` (what its log line will hold)."""
    return EncodedHistogram(int(hist_max(hist)), encode_histogram(hist))


def hlog_line(tag: str | None, start_s: float, length_s: float, hist: np.ndarray | EncodedHistogram) -> str:
    """One interval's line of a log (no newline): ``[Tag=<tag>,]<start>,<length>,<max ms>,<histogram>``."""
    if tag is not None and (not tag or any(c in tag for c in ", \n\t")):
        raise ValueError(f"hlog tag {tag!r}: must be non-empty without commas or whitespace")
    prefix = f"Tag={tag}," if tag else ""
    enc = hist if isinstance(hist, EncodedHistogram) else encode_interval(hist)
    return f"{prefix}{start_s:.3f},{length_s:.3f},{enc.max_ns / 1e6:.3f},{enc.text}"


def write_hlog(
    path: str | os.PathLike,
    intervals: list[tuple[str | None, float, float, np.ndarray | EncodedHistogram]],
    start_unix: float,
    comment: str = "",
) -> int:
    """Write an interval log: ``intervals`` are ``(tag, start_s, length_s, hist)`` (start relative to
    ``start_unix``; ``hist`` an array or an :class:`EncodedHistogram`). Tags may use ``[A-Za-z0-9_.-]``
    (no commas or spaces). Returns intervals written."""
    lines = [f"#[Histogram log format version {HLOG_VERSION}]"]
    if comment:
        lines += [f"#{c}" for c in comment.splitlines()]
    when = datetime.fromtimestamp(start_unix, tz=UTC).isoformat(sep=" ")
    lines.append(f"#[StartTime: {start_unix:.3f} (seconds since epoch), {when}]")
    lines.append('"StartTimestamp","Interval_Length","Interval_Max","Interval_Compressed_Histogram"')
    lines += [hlog_line(tag, start_s, length_s, hist) for tag, start_s, length_s, hist in intervals]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return len(intervals)
