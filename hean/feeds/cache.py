"""Recordings converted once: a cache of native event files, so a second replay never parses the recording.

Why: the first ``hean replay`` (or :func:`hean.backtest`) of a JSON capture spends most of its start-up
parsing it; every later one of the same file would parse it again. :func:`cached_events` converts a
recording once (with :func:`hean.feeds.load_events`, every check included) and keeps the result as a native
event file (:mod:`hean.feeds.native`); the next call maps that file instead (no parser runs).

Where: ``<cache root>/native/<32 hex>.hev``, the cache root being ``hean cache info``'s
(:func:`hean.strategies.plugin.cache_root`: ``$HEAN_CACHE_DIR``, ``$XDG_CACHE_HOME/hean`` or
``~/.cache/hean``). ``hean cache info`` lists the entries, ``hean cache clear`` removes them.

Key: the digest of everything that decides the events -- the recording's real path, size and modification
time (ns), the format, the reader's options that change the output (the lenient share, the symbol),
HEAN's version, the native file's format version, MARKET_EVENT's layout version and a digest of the
readers' sources (an edit of a reader makes new entries; the old ones age out). Touching the file, changing
its size or asking for other options is a miss. A recording that changed while it was converted, or that
was modified less than :data:`FRESH_S` seconds before (a file still being written, or rewritten within the
file system's timestamp granularity, which size and mtime cannot tell apart), is converted but not kept.

Never trusted: each entry's header carries its key, the reader's report and a checksum of its records. On a
hit the key must match and the checksum must match -- the records are then byte for byte the ones
:func:`hean.feeds.load_events` validated when the entry was made, so they are not validated again (a third
of a cached replay's preparation); anything else (a truncated, damaged or foreign file) removes the entry,
and the recording is converted again.

Written atomically: a temp file beside the entry (named after this process and a random part), renamed over
it. Two processes converting the same recording at once each write their own temp file and the last rename
wins: both files are whole and equal, and a reader that mapped the other one keeps it.

Bounded: after each store the least recently used entries (a hit refreshes an entry's modification time)
are removed until the entries fit in ``$HEAN_NATIVE_CACHE_GB`` gigabytes (default
:data:`DEFAULT_MAX_GB`; ``0`` turns the cache off). An entry larger than the bound is not kept. Temp files
left by a crash are removed after an hour.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import re
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hean.feeds.common import FeedError, ReadReport
from hean.jit import entry

__all__ = [
    "DEFAULT_MAX_GB",
    "ENV_MAX_GB",
    "Cached",
    "cache_dir",
    "cached_events",
    "checksum",
    "clear_entries",
    "list_entries",
    "max_bytes",
]

ENV_MAX_GB = "HEAN_NATIVE_CACHE_GB"
DEFAULT_MAX_GB = 4.0  # ~60 of the shared Binance hour (38 MB each); a day of BTCUSDT depth is a few GB
SUFFIX = ".hev"
ENTRY = re.compile(r"^[0-9a-f]{32}\.hev$")
TEMP = re.compile(r"^\.\.?[0-9a-f]{32}\.hev\.[0-9]+\.[0-9a-f]+\.part(\.[0-9]+\.tmp)?$")  # ours, write_native's
STALE_TEMP_S = 3600.0
FRESH_S = 2.0  # a recording modified this recently is converted but not kept (a file system's mtime granularity)
_SCHEMA = 1  # of the header's "source" document

# Entries this process mapped and checked, by (path, inode, size, mtime): mapped once, checksummed once. A
# sweep or a benchmark replays the same file many times; an entry rewritten since is another key.
_checked: dict[tuple[str, int, int, int], tuple[np.ndarray, Any]] = {}
_CHECKED_MAX = 8
# This process's hits, by the recording's side of the key (real path, size, mtime, format, lenient share, symbol,
# cache folder): the entry, its identity (inode, size, mtime) when it was checked, and its report. A repeat (a
# sweep, a benchmark's rounds) costs a stat of the recording and one of the entry instead of the key's digest and
# the entry's header (~0.3 ms of a backtest's set-up); a recording or an entry changed since is a miss, looked
# up in full. HEAN's version and its readers' sources, the rest of the key, do not change in a process.
_hits: dict[tuple, tuple[Path, tuple[int, int, int], dict[str, Any], Any]] = {}
TOUCHED_S = 60.0  # an entry used this recently is not marked used again (_touch)


@dataclass
class Cached:
    """What :func:`cached_events` found or made: the events (a read-only map of the entry on a hit), the
    reader's report, the native file holding them (None when the cache is off or could not keep them) and
    whether the recording was parsed (False on a hit)."""

    events: np.ndarray
    report: ReadReport
    path: Path | None
    converted: bool


def cache_dir() -> Path:
    """``<cache root>/native``: where converted recordings are kept."""
    from hean.strategies.plugin import cache_root

    return cache_root() / "native"


def max_bytes() -> int:
    """The cache's bound in bytes from ``$HEAN_NATIVE_CACHE_GB`` (default :data:`DEFAULT_MAX_GB`); 0: off."""
    text = os.environ.get(ENV_MAX_GB, "").strip()
    if not text:
        return int(DEFAULT_MAX_GB * 2**30)
    try:
        gb = float(text)
    except ValueError:
        gb = -1.0
    if not math.isfinite(gb) or gb < 0:
        raise ValueError(f"{ENV_MAX_GB} must be a number of gigabytes >= 0 (0 turns the cache off), got {text!r}")
    return int(gb * 2**30)


@functools.cache
def _readers() -> str:
    """A digest of the sources whose edits change what a reader returns (computed once per process)."""
    root = Path(__file__).resolve().parents[1]  # the hean package
    h = hashlib.sha256()
    for p in sorted([*(root / "feeds").glob("*.py"), root / "symbols.py", root / "records.py"]):
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


@functools.cache
def _version() -> str:
    """HEAN's version, from its installed metadata (the feeds layer does not import the package's top); read
    once per process."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hean")
    except PackageNotFoundError:
        return "unknown"


def _key(real: str, st: os.stat_result, format: str, share: float | None, symbol: str | None) -> dict[str, Any]:
    from hean.feeds.native import FORMAT_VERSION
    from hean.records import EVENTS_VERSION

    return {
        "recording": real,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "format": format,
        "lenient": share,
        "symbol": symbol,
        "hean": _version(),
        "native_format": FORMAT_VERSION,
        "events_version": EVENTS_VERSION,
        "readers": _readers(),
    }


def _digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


@entry
def _checksum(words):
    """Four multiply-xor lanes over the uint64 words (each step a bijection of its lane: any one changed
    word changes the result), folded with the length."""
    p = np.uint64(0x100000001B3)
    h0 = np.uint64(0xCBF29CE484222325)
    h1 = np.uint64(0x84222325CBF29CE4)
    h2 = np.uint64(0x9E3779B97F4A7C15)
    h3 = np.uint64(0xC2B2AE3D27D4EB4F)
    n = words.shape[0]
    m = n - n % 4
    for i in range(0, m, 4):
        h0 = (h0 ^ words[i]) * p
        h1 = (h1 ^ words[i + 1]) * p
        h2 = (h2 ^ words[i + 2]) * p
        h3 = (h3 ^ words[i + 3]) * p
    for i in range(m, n):
        h0 = (h0 ^ words[i]) * p
    h = h0
    for x in (h1, h2, h3, np.uint64(n)):
        h = (h ^ x) * p
        h ^= h >> np.uint64(29)
    return h


def checksum(events: np.ndarray) -> str:
    """The checksum of a MARKET_EVENT array's bytes (hex), as kept in an entry's header."""
    words = np.ascontiguousarray(events).view(np.uint64) if len(events) else np.zeros(0, np.uint64)
    return f"{int(_checksum(words)):016x}"


def _report_doc(report: ReadReport) -> dict[str, Any]:
    return {k: getattr(report, k) for k in ("format", "lines", "messages", "events", "skipped", "reasons", "counters")}


def read_entry_header(path: Path) -> dict[str, Any]:
    """The document an entry's header carries (key, report, checksum); FeedError when it is not one."""
    from hean.feeds.native import _read_header

    _n, _offset, _used, meta = _read_header(path)
    try:
        doc = json.loads(meta.get("source") or "")
    except (TypeError, ValueError, RecursionError):
        doc = None
    if not isinstance(doc, dict) or doc.get("schema") != _SCHEMA or not isinstance(doc.get("key"), dict):
        raise FeedError(path, None, "not an entry of HEAN's conversion cache")
    return doc


def _load(entry_path: Path, key: dict[str, Any], shown: str) -> tuple[Cached, tuple[int, int, int]]:
    """The entry, checked (key, layout, checksum), and its identity (inode, size, mtime) as checked;
    FeedError/ValueError/OSError when it cannot be used."""
    from hean.feeds.native import _map_unvalidated

    doc = read_entry_header(entry_path)
    if doc["key"] != key:
        raise FeedError(entry_path, None, "made for another recording or another HEAN")
    st = entry_path.stat()
    ident = (str(entry_path), st.st_ino, st.st_size, st.st_mtime_ns)
    r = doc["report"]
    if ident in _checked:
        events, symbols = _checked[ident]
    else:
        events, symbols = _map_unvalidated(entry_path)  # (valid when made: the checksum says it is that file)
        if r["events"] != len(events) or doc["checksum"] != checksum(events):
            raise FeedError(entry_path, None, "records do not match their checksum")
        if len(_checked) >= _CHECKED_MAX:
            _checked.pop(next(iter(_checked)))
        _checked[ident] = (events, symbols)
    return _hit(entry_path, events, r, symbols, shown), ident[1:]


def _hit(entry_path: Path, events: np.ndarray, r: dict[str, Any], symbols: Any, shown: str) -> Cached:
    """A hit on ``entry_path``: its events and a fresh report (``r``: the header's report document)."""
    report = ReadReport(shown, r["format"], symbols, r["lines"], r["messages"], r["events"], r["skipped"],
                        list(r["reasons"]), dict(r["counters"]))  # fmt: skip
    return Cached(events, report, entry_path, False)


def _seen_before(memo: tuple, shown: str) -> Cached | None:
    """The hit this process had on the same recording (:data:`_hits`), if its entry is still the one checked."""
    seen = _hits.get(memo)
    if seen is None:
        return None
    entry_path, ident, r, symbols = seen
    try:
        st = entry_path.stat()
    except OSError:
        st = None
    checked = _checked.get((str(entry_path), *ident))
    if st is None or (st.st_ino, st.st_size, st.st_mtime_ns) != ident or checked is None:
        del _hits[memo]
        return None
    _touch(entry_path, st)
    return _hit(entry_path, checked[0], r, symbols, shown)


def _touch(path: Path, st: os.stat_result | None = None) -> None:
    """Mark an entry used now, for eviction by age of use -- unless it was within TOUCHED_S: an entry's
    mtime then stays put while a sweep replays it, so this process's check of it (:data:`_checked`) holds.
    ``st``: the entry's stat, when the caller has it."""
    with contextlib.suppress(OSError):
        if time.time() - (st or path.stat()).st_mtime > TOUCHED_S:
            os.utime(path)


def _remove(path: Path) -> None:
    """Unlink ``path``; gone already or not ours to remove (another user's cache): nothing to do."""
    try:
        path.unlink()
    except OSError:
        pass


def cached_events(
    path: str | os.PathLike,
    format: str,
    lenient: bool | float = False,
    symbol: str | None = None,
    directory: str | os.PathLike | None = None,
    limit: int | None = None,
) -> Cached:
    """:func:`hean.feeds.load_events` (``symbols=None``) through the cache: the entry when there is a valid
    one, else the recording converted and kept (see the module docstring).

    ``directory``: the cache folder (default :func:`cache_dir`); ``limit``: its bound in bytes (default
    :func:`max_bytes`; 0: no caching). Raises what ``load_events`` raises for a bad recording. A cache that
    cannot be written costs nothing but a note on stderr: the events come back with ``path`` None.
    """
    from hean.feeds import lenient_share, load_events

    limit = max_bytes() if limit is None else limit
    if format == "native" or limit <= 0:
        events, report = load_events(path, format, lenient=lenient, symbol=symbol)
        return Cached(events, report, None, True)
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
    except OSError:  # let the reader say what is wrong with the path
        events, report = load_events(path, format, lenient=lenient, symbol=symbol)
        return Cached(events, report, None, True)
    folder = Path(directory) if directory is not None else cache_dir()
    memo = (real, st.st_size, st.st_mtime_ns, format, lenient_share(lenient), symbol, str(folder))
    again = _seen_before(memo, str(path))
    if again is not None:
        return again
    key = _key(real, st, format, lenient_share(lenient), symbol)
    entry_path = folder / f"{_digest(key)}{SUFFIX}"
    if entry_path.exists():
        _touch(entry_path)  # recently used: the last to be evicted
        try:
            got, ident = _load(entry_path, key, str(path))
        except (FeedError, ValueError, KeyError, TypeError, OSError):
            _remove(entry_path)  # damaged, truncated or foreign: never trusted, made again below
        else:
            if len(_hits) >= _CHECKED_MAX:
                _hits.pop(next(iter(_hits)))
            _hits[memo] = (entry_path, ident, _report_doc(got.report), got.report.symbols)
            return got
    events, report = load_events(path, format, lenient=lenient, symbol=symbol)
    try:
        now = os.stat(real)
    except OSError:
        now = None
    if now is None or (now.st_size, now.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
        return Cached(events, report, None, True)  # changed while it was read: not a version worth keeping
    if time.time() - st.st_mtime < FRESH_S:
        return Cached(events, report, None, True)  # just written: size and mtime could not tell the next write
    if events.nbytes + 65536 > limit:
        return Cached(events, report, None, True)
    try:
        _store(folder, entry_path, key, events, report)
        evict(folder, limit, keep=entry_path)
    except OSError as e:
        print(f"hean: note: cannot keep the converted recording in {folder}: {e.strerror or e}", file=sys.stderr)
        return Cached(events, report, None, True)
    return Cached(events, report, entry_path, True)


def _store(folder: Path, entry_path: Path, key: dict[str, Any], events: np.ndarray, report: ReadReport) -> None:
    from hean.feeds.native import write_native

    folder.mkdir(parents=True, exist_ok=True)
    doc = {"schema": _SCHEMA, "key": key, "report": _report_doc(report), "checksum": checksum(events)}
    tmp = folder / f".{entry_path.name}.{os.getpid()}.{secrets.token_hex(4)}.part"
    try:
        write_native(tmp, events, report.symbols, source=json.dumps(doc))
        os.replace(tmp, entry_path)
    finally:
        _remove(tmp)


def _scan(folder: Path) -> tuple[list[tuple[Path, os.stat_result]], list[tuple[Path, os.stat_result]], list[str]]:
    """(entries, temp files, names of anything else) in ``folder``; files removed meanwhile are skipped."""
    entries, temps, foreign = [], [], []
    if not folder.is_dir():
        return entries, temps, foreign
    for p in folder.iterdir():
        try:
            st = p.lstat()
        except FileNotFoundError:
            continue
        if ENTRY.match(p.name) and p.is_file() and not p.is_symlink():
            entries.append((p, st))
        elif TEMP.match(p.name) and p.is_file() and not p.is_symlink():
            temps.append((p, st))
        else:
            foreign.append(p.name)
    return entries, temps, sorted(foreign)


def evict(folder: Path, limit: int, keep: Path | None = None) -> int:
    """Remove the least recently used entries until the rest fit in ``limit`` bytes (never ``keep``), and
    temp files older than an hour. Returns the bytes freed."""
    entries, temps, _ = _scan(folder)
    freed = 0
    old = time.time() - STALE_TEMP_S
    for p, st in temps:
        if st.st_mtime < old:
            _remove(p)
    total = sum(st.st_size for _, st in entries)
    for p, st in sorted(entries, key=lambda e: e[1].st_mtime_ns):
        if total <= limit:
            break
        if keep is not None and p == keep:
            continue
        _remove(p)
        total -= st.st_size
        freed += st.st_size
    return freed


def list_entries(folder: Path) -> tuple[list[dict[str, Any]], int, list[str]]:
    """The entries of ``folder`` (most recently used first): file, bytes, last used, the recording and its
    format, options and events, whether the recording is still there unchanged; the bytes of temp files;
    the names of what is not HEAN's. An unreadable entry is listed with ``recording`` None."""
    entries, temps, foreign = _scan(folder)
    rows = []
    for p, st in sorted(entries, key=lambda e: -e[1].st_mtime_ns):
        row: dict[str, Any] = {"file": str(p), "bytes": st.st_size, "last_used": _iso(st.st_mtime),
                               "mtime": st.st_mtime, "recording": None}  # fmt: skip
        try:
            doc = read_entry_header(p)
            key = doc["key"]
            row.update({k: key.get(k) for k in ("recording", "format", "lenient", "symbol")})
            row["events"] = doc["report"]["events"]
            try:
                rst = os.stat(key["recording"])
                row["recording_state"] = (
                    "unchanged" if (rst.st_size, rst.st_mtime_ns) == (key["size"], key["mtime_ns"]) else "changed"
                )
            except OSError:
                row["recording_state"] = "missing"
        except (FeedError, KeyError, TypeError, OSError):
            row["recording_state"] = "unreadable entry"
        rows.append(row)
    return rows, sum(st.st_size for _, st in temps), foreign


def clear_entries(folder: Path, older_than_s: float | None = None) -> tuple[int, int, int, list[str]]:
    """Remove the entries (those not used for ``older_than_s`` seconds) and every temp file; returns
    (removed, bytes freed, kept, failures as messages). Only files named like an entry or a temp file are
    touched."""
    entries, temps, _ = _scan(folder)
    cutoff = time.time() - older_than_s if older_than_s is not None else math.inf
    removed = freed = kept = 0
    failed: list[str] = []
    for p, st in [*entries, *temps]:
        is_entry = ENTRY.match(p.name) is not None
        if is_entry and st.st_mtime > cutoff:
            kept += 1
            continue
        try:
            p.unlink()
        except FileNotFoundError:
            continue
        except OSError as e:
            failed.append(f"cannot remove {p}: {e.strerror or e}")
            continue
        if is_entry:
            removed += 1
            freed += st.st_size
    return removed, freed, kept, failed


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
