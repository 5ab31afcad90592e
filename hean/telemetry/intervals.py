r"""A run's latency histograms as HdrHistogram interval logs: one ``<name>.hlog`` per histogram, one interval
per snapshot.

Why: the run summary gives each histogram over the whole run, which hides *when* a tail happened (a
stall at second 40, a slow first second while caches warm). The supervisor already copies every
histogram from shared memory about once a second; :class:`LatencyIntervals` turns consecutive
cumulative copies into interval histograms (:func:`~hean.telemetry.histogram.hist_sub`) and writes them
in the format every HdrHistogram tool reads (HistogramLogAnalyzer, the ``hdrhistogram`` package), values
in ns, log format 1.3 (:mod:`hean.telemetry.hlog`).

Memory, for a run of any length: per histogram name one previous cumulative copy (a histogram is an
``int64[HIST_LEN]`` array: 204,864 bytes, ``new_histogram().nbytes``), two scratch copies shared by all
names, and per *non-empty* interval only its encoded log line: the compressed counters, measured at
about 0.3 KB for 100 values, 2 KB for 10,000, 4 KB for 100,000 and 7 KB for 1,000,000 values spread over
a latency distribution, plus about 0.2 KB of Python objects -- never the 200 KiB array. Empty intervals
(nothing recorded between two snapshots: an idle stage, a quiet market) cost nothing. What is held is
therefore what the logs will hold on disk: at one snapshot a second, 20 busy histograms for an hour are
about 300 MB (:meth:`LatencyIntervals.bytes_held` says how much at any time) -- unless the caller
:meth:`~LatencyIntervals.flush`\ es them to disk as it goes: the supervisor of a run with ``--out`` does every
10 s, so it holds 10 s of intervals however long the run. Encoding costs about 0.5 ms
per busy histogram per snapshot (numpy), on the supervisor's CPU, never a worker's.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from numbers import Real
from pathlib import Path

import numpy as np

from hean.telemetry.histogram import H_BASE, check_histogram, hist_sub, new_histogram
from hean.telemetry.hlog import EncodedHistogram, encode_interval, hlog_line, write_hlog

__all__ = ["NAME_PATTERN", "LatencyIntervals"]

NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]+")
"""What a histogram name may be: it becomes a file name (``<name>.hlog``), so no separators or spaces."""

_OBJECT_BYTES = 200  # the tuple, two floats and the EncodedHistogram around each interval's text


@dataclass
class _Series:
    """One histogram name: its previous cumulative copy and its non-empty intervals so far."""

    prev: np.ndarray
    intervals: list[tuple[float, float, EncodedHistogram]] = field(default_factory=list)
    before: int = 0  # values already in the histogram at the first snapshot (in no interval)


class LatencyIntervals:
    """Interval histograms of a run from cumulative snapshots, written as one ``.hlog`` per name.

    Call :meth:`add` at every snapshot (about once a second) and once more when the run ends: each call
    closes the interval since the previous one, so that last call is what writes the final, partial
    interval (values recorded after the last :meth:`add` are in no interval). Then :meth:`write`.

    The log starts at ``start_unix`` when given -- the first :meth:`add` then closes the interval from it,
    every histogram taken as empty at ``start_unix`` -- else at the first :meth:`add`, which is then only
    the baseline: what the histograms already hold is in no interval (the logs say how many values, in a
    comment line; the supervisor should take its first snapshot before any traffic, or pass the run's
    start). A name first seen at a later snapshot is taken as empty at the snapshot before. Intervals start
    relative to the log's start; a wall clock that stepped back gives a zero-length interval, never a
    negative one. Not thread-safe: one caller (the supervisor).
    """

    def __init__(self, start_unix: float | None = None) -> None:
        if start_unix is not None:
            _check_time(start_unix, "start_unix")
        self._start: float | None = start_unix
        self._last: float | None = start_unix  # time of the previous snapshot
        self._baseline = start_unix is None  # the next add only takes the baseline
        self._series: dict[str, _Series] = {}
        self._cur = new_histogram()  # scratch: the copy of the current cumulative histogram
        self._interval = new_histogram()  # scratch: current - previous
        self._flushed: set[str] = set()  # names whose log flush() has started

    @property
    def start_unix(self) -> float | None:
        """Where the logs start (seconds since the epoch); None before the first :meth:`add`."""
        return self._start

    @property
    def names(self) -> list[str]:
        """Every histogram name seen so far, in the order first seen (each gets a log, empty or not)."""
        return list(self._series)

    def add(self, now_unix: float, hists: Mapping[str, np.ndarray]) -> None:
        """Snapshot ``hists`` (name -> cumulative histogram, e.g. a live view into shared memory: it is
        copied once, here) taken at ``now_unix``, closing the interval since the previous snapshot.

        Raises ValueError, before anything is recorded, for a name outside ``[A-Za-z0-9_.-]`` or a value
        that is not a histogram (``int64[HIST_LEN]``)."""
        _check_time(now_unix, "now_unix")
        for name, hist in hists.items():
            _check_name(name)
            check_histogram(hist, f"LatencyIntervals: histogram {name!r}")
        if self._start is None:
            self._start = self._last = float(now_unix)
        t0 = self._last
        t1 = max(float(now_unix), t0)
        for name, hist in hists.items():
            s = self._series.get(name)
            if s is None:
                s = self._series[name] = _Series(prev=new_histogram())
            np.copyto(self._cur, hist)  # one read of memory the workers may be writing
            if self._baseline:
                s.before = int(self._cur[H_BASE:].sum())
            else:
                hist_sub(self._interval, self._cur, s.prev)
                if self._interval[H_BASE:].any():
                    s.intervals.append((t0 - self._start, t1 - t0, encode_interval(self._interval)))
            s.prev, self._cur = self._cur, s.prev  # keep this copy as the previous one, reuse the old
        self._baseline = False
        self._last = t1

    def interval_count(self, name: str) -> int:
        """Non-empty intervals of ``name`` so far (0 for a name never seen)."""
        s = self._series.get(name)
        return len(s.intervals) if s else 0

    def bytes_held(self) -> int:
        """Approximate memory held: the arrays (previous copies and scratch) and every interval's line."""
        arrays = (len(self._series) + 2) * self._cur.nbytes
        lines = sum(len(enc.text) + _OBJECT_BYTES for s in self._series.values() for *_, enc in s.intervals)
        return arrays + lines

    def write(self, directory: str | os.PathLike) -> list[Path]:
        """Write ``<directory>/<name>.hlog`` for every name seen (the directory is created); a name with no
        non-empty interval gets a log with only its headers. Returns the paths, in :attr:`names` order.
        May be called again after more snapshots (the files are rewritten). Not after :meth:`flush`, which
        has let go of the intervals it wrote."""
        if self._flushed:
            raise ValueError("LatencyIntervals.write after flush: the flushed intervals are only on disk")
        paths = []
        for name, s, path in self._logs(directory):
            write_hlog(path, [(None, start, length, enc) for start, length, enc in s.intervals], self._start,
                       self._comment(name, s))  # fmt: skip
            paths.append(path)
        return paths

    def flush(self, directory: str | os.PathLike) -> list[Path]:
        """Append the intervals closed since the last flush to ``<directory>/<name>.hlog`` (created with its
        headers at its first flush) and let go of them: flushed every few seconds, a run of any length holds
        only what one period closed. Returns the paths, in :attr:`names` order."""
        paths = []
        for name, s, path in self._logs(directory):
            if name not in self._flushed:
                write_hlog(path, [], self._start, self._comment(name, s))
                self._flushed.add(name)
            if s.intervals:
                with open(path, "a", encoding="utf-8") as f:
                    f.write("".join(hlog_line(None, start, length, enc) + "\n" for start, length, enc in s.intervals))
                s.intervals.clear()
            paths.append(path)
        return paths

    def _logs(self, directory: str | os.PathLike) -> list[tuple[str, _Series, Path]]:
        """``(name, series, <directory>/<name>.hlog)`` of every name seen (the directory created when any)."""
        if not self._series:
            return []
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        assert self._start is not None
        return [(name, s, out / f"{name}.hlog") for name, s in self._series.items()]

    def _comment(self, name: str, s: _Series) -> str:
        assert self._start is not None
        when = datetime.fromtimestamp(self._start, tz=UTC).isoformat(sep=" ", timespec="milliseconds")
        comment = f"hean {name}: latency in ns, one interval per snapshot of the run (empty ones left out)"
        if s.before:
            comment += f"\n{s.before} value(s) recorded before the first snapshot ({when}) are in no interval"
        return comment


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"LatencyIntervals: histogram name {name!r}: only letters, digits, '_', '.' and '-' "
            "(it becomes the file name <name>.hlog)"
        )


def _check_time(t: object, what: str) -> None:
    if not isinstance(t, Real) or isinstance(t, bool) or not math.isfinite(t):
        raise ValueError(f"LatencyIntervals: {what} must be a finite number of seconds since the epoch, got {t!r}")
