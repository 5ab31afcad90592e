"""The recorder: what a live feed receives, written as the capture files ``hean replay`` reads.

Layout: ``DIR/<venue>/<SYMBOL>/<SYMBOL>-<YYYYmmddTHH>.gz``, one file per symbol and UTC hour, each line
``<receive ns> <json>`` exactly as received. One file per symbol, because a Binance REST snapshot does not
name its symbol: a file of one symbol's streams needs no ``symbol=`` to replay. Each new file asks the client
for a fresh snapshot (:meth:`hean.live.client.LiveClient.resnapshot`), so every file replays on its own
(the diffs before it wait for it, as the sync rules say).

Why gzip *members*: the file is written as a series of complete gzip members (one every ``member_s``
seconds or ``member_bytes`` of input), which every gzip reader concatenates. A recorder killed at any
moment leaves every finished member intact on disk (``zcat`` recovers them); only the last ``member_s`` of
data is in the unfinished one. Memory stays flat whatever the run's length: one compressor per open file,
no buffering beyond a member's compressor state.
"""

from __future__ import annotations

import os
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["CaptureFile", "Recorder", "hour_of"]


def hour_of(t_s: float) -> str:
    """The UTC hour a file covers, as its name spells it: ``20261204T08``."""
    return time.strftime("%Y%m%dT%H", time.gmtime(t_s))


@dataclass
class CaptureFile:
    """One open capture file: gzip members appended as the lines come."""

    path: Path
    level: int = 6
    member_s: float = 5.0
    member_bytes: int = 8 << 20
    _f: object = None
    _z: object = None
    _member_in: int = 0
    _member_t: float = 0.0
    lines: int = 0
    raw_bytes: int = 0

    def __post_init__(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "ab")

    def write(self, data: bytes) -> None:
        if self._z is None:
            self._z = zlib.compressobj(self.level, zlib.DEFLATED, 31)  # 31: a gzip member
            self._member_t = time.monotonic()
            self._member_in = 0
        self._f.write(self._z.compress(data))
        self._member_in += len(data)
        self.raw_bytes += len(data)
        self.lines += data.count(b"\n")
        if self._member_in >= self.member_bytes or time.monotonic() - self._member_t >= self.member_s:
            self.end_member()

    def end_member(self) -> None:
        """Finish the gzip member (its trailer written) and hand the bytes to the OS."""
        if self._z is not None:
            self._f.write(self._z.flush())
            self._z = None
            self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self.end_member()
            os.fsync(self._f.fileno())
            self._f.close()
            self._f = None


@dataclass
class Recorder:
    """The ``on_lines`` sink of a :class:`hean.live.client.LiveClient`: each symbol's lines to its hourly file.

    ``resnapshot(symbol)`` is called when a symbol's new file is opened (the client's
    :meth:`~hean.live.client.LiveClient.resnapshot`), ``clock`` gives the wall time that names the hour
    (a test's clock moves it)."""

    directory: Path
    venue: str
    resnapshot: Callable[[str], None] | None = None
    clock: Callable[[], float] = time.time
    level: int = 6
    member_s: float = 5.0
    files: dict[str, tuple[str, CaptureFile]] = field(default_factory=dict)  # symbol -> (hour, file)
    closed: list[Path] = field(default_factory=list)  # every file finished so far
    lines: int = 0
    raw_bytes: int = 0

    def path(self, symbol: str, hour: str) -> Path:
        return Path(self.directory) / self.venue / symbol / f"{symbol}-{hour}.gz"

    def on_lines(self, symbol: str, data: bytes) -> None:
        hour = hour_of(self.clock())
        cur = self.files.get(symbol)
        if cur is None or cur[0] != hour:
            if cur is not None:
                cur[1].close()
                self.closed.append(cur[1].path)
            f = CaptureFile(self.path(symbol, hour), self.level, self.member_s)
            self.files[symbol] = (hour, f)
            if cur is not None and self.resnapshot is not None:
                self.resnapshot(symbol)  # the new file starts its own sync (the first one has the start's)
            cur = self.files[symbol]
        cur[1].write(data)
        self.lines += data.count(b"\n")
        self.raw_bytes += len(data)

    def close(self) -> None:
        for _, f in self.files.values():
            f.close()
            self.closed.append(f.path)
        self.files.clear()

    def paths(self) -> list[Path]:
        """Every file written, finished or open."""
        return [*self.closed, *(f.path for _, f in self.files.values())]


def follow_table(names: list[str]):
    """A symbol table fine enough for any exchange's decimals (1e-8 ticks and lots): the recorder decodes
    what it receives only to follow the sync rules (a gap asks for a new snapshot), not to trade on it."""
    from hean.symbols import SymbolTable

    return SymbolTable([{"name": n, "tick_size": "0.00000001", "lot_size": "0.00000001"} for n in names])


def record(
    venue: str,
    symbols: list[str],
    directory: str | Path,
    options=None,
    duration_s: float = 0.0,
    stop: Callable[[], bool] | None = None,
    status: Callable[[dict], None] | None = None,
    status_s: float = 10.0,
) -> dict:
    """Record ``symbols`` of ``venue`` into ``directory`` until ``duration_s`` passes (0: no limit) or
    ``stop()`` says so; ``status(stats)`` every ``status_s``. Returns the final stats."""
    from hean.live.client import LiveClient, LiveOptions
    from hean.live.venues import venue_spec

    spec = venue_spec(venue)
    table = follow_table(symbols)
    client = LiveClient(spec, table, options or LiveOptions(), on_events=lambda s, ev: None)
    rec = Recorder(Path(directory), spec.name, resnapshot=client.resnapshot)
    client.on_lines = rec.on_lines
    t0 = time.monotonic()
    client.start_thread()
    next_status = t0 + status_s
    try:
        while not (duration_s and time.monotonic() - t0 >= duration_s) and not (stop and stop()):
            time.sleep(0.05)
            if status is not None and time.monotonic() >= next_status:
                next_status += status_s
                status(_stats(client, rec, t0))
    finally:
        client.join()
        rec.close()
    return _stats(client, rec, t0)


def _stats(client, rec: Recorder, t0: float) -> dict:
    c = client.snapshot_counters()
    return {
        "seconds": round(time.monotonic() - t0, 3),
        "lines": rec.lines,
        "bytes": rec.raw_bytes,
        "files": [str(p) for p in rec.paths()],
        "frames": c["frames"],
        "connects": c["connects"],
        "disconnects": c["disconnects"],
        "silences": c["silences"],
        "gaps": c.get("decode_gaps", 0),
        "malformed": c.get("decode_malformed", 0),
        "exchange_errors": c["exchange_errors"],
        "rate_limited": c["rate_limited"],
        "snapshots": c["snapshots"],
        "stale": client.stale(),
        "last_error": client.last_error,
    }
