"""The recordings of a replay: each read once (cached), its symbols made exact instruments on their venues,
and several merged into the one native file the feed maps.

Why one place: ``feed.path`` may name one recording or several (venues, symbols or days of their own), and
each symbol must end up with the instrument rules and the venue the user gave, whichever file it came from.
What happens, in :func:`prepare_recordings`:

1. each recording is read through HEAN's conversion cache (:mod:`hean.feeds.cache`; a native file is mapped
   where it is) -- its own symbol table, with the ticks and lots it was converted in;
2. each symbol's instrument (:mod:`hean.feeds.instruments`): its ``[[symbols]]`` entry (tick, lot, venue),
   else the first instrument file (``feed.instruments``) that has it, else the recording's own -- a guess for
   every format but Databento with definitions, and the summary says so (``feed.guessed``). A symbol without
   an entry trades on the first venue;
3. a symbol in several files on one venue is one symbol: its days chain in time order, and files that overlap
   in time on it are refused. On another venue (``feed.venues``: each recording's venue) it is another
   listing of the same instrument, ``NAME@VENUE``, whose book is that venue's quote of it: the router splits
   the instrument's orders over its listings' books;
4. one recording whose symbols keep their units is mapped as it is; otherwise the recordings are merged by
   receive time into a new native file in the run's folder (:mod:`hean.feeds.merge`: a k-way merge over the
   mapped files, each price and quantity re-expressed exactly in its instrument's units).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from decimal import Decimal
from math import gcd

import numpy as np

from hean.feeds.common import FeedError, ReadReport

__all__ = ["Recordings", "prepare_recordings"]


@dataclass
class Recordings:
    """What :func:`prepare_recordings` made: the native file the feed maps and its events, the run's symbol
    table (``[[symbols]]`` entries, in the file's ids), and how each symbol's units were found."""

    path: str
    events: np.ndarray
    symbols: list[dict]
    reports: list[ReadReport]
    guessed: list[str] = field(default_factory=list)  # symbols whose tick and lot are the recording's guess
    merged: bool = False

    def summary(self) -> str:
        """The readers' one-line summaries (one line per recording), and what the merge made."""
        lines = [r.summary() for r in self.reports]
        if self.merged:
            lines.append(f"merged: {len(self.events)} events of {len(self.symbols)} symbols -> {self.path}")
        return "\n".join(lines)


def prepare_recordings(cfg, directory: str | os.PathLike, in_process: bool = False) -> Recordings:
    """The recordings of ``cfg.feed`` ready for the feed (module docstring); FeedError names the file.
    ``in_process``: only this process replays them, from the events returned (an in-process backtest), so a
    single recording kept as it is needs nothing in ``directory`` (:func:`_mapped`)."""
    from hean.engine.config import as_list

    f = cfg.feed
    paths = as_list(f.path)
    formats = as_list(f.format)
    if len(formats) == 1:
        formats = formats * len(paths)
    loaded = [_load(p, fmt, f) for p, fmt in zip(paths, formats, strict=True)]
    instruments = _instrument_files([p for p in as_list(f.instruments) if p])
    table, sym_map, scale, guessed = _plan(cfg, paths, [r for _e, r, _p in loaded], instruments)
    _check_chains(paths, loaded, table, sym_map)
    events = [e for e, _r, _p in loaded]
    reports = [r for _e, r, _p in loaded]
    if len(loaded) == 1 and np.array_equal(sym_map[0, : len(table)], np.arange(len(table))) and _unit(scale):
        return Recordings(_mapped(loaded[0], paths[0], directory, in_process), events[0], table, reports, guessed)
    from hean.feeds.merge import merge_into
    from hean.feeds.native import open_native
    from hean.symbols import SymbolTable

    out = os.path.join(directory, "replay.hev")
    plain = [{k: e[k] for k in ("name", "tick_size", "lot_size", "venue")} for e in table]
    merge_into(out, events, paths, [r.symbols for r in reports], sym_map, scale, SymbolTable(plain))
    merged, _symbols = open_native(out)  # validated: the feed trusts no file
    return Recordings(out, merged, table, reports, guessed, merged=True)


def _load(path: str, fmt: str, f) -> tuple[np.ndarray, ReadReport, str | None]:
    """One recording: (events, report, the cache entry's file or the native file itself; None: in memory)."""
    from hean.feeds import load_events
    from hean.feeds.cache import cached_events

    symbol = f.symbol or None
    if fmt == "native":  # mapped where it is (read only, validated by load_events)
        events, report = load_events(path, fmt, lenient=f.lenient, symbol=symbol)
        return events, report, os.path.abspath(path)
    got = cached_events(path, fmt, lenient=f.lenient, symbol=symbol)
    if len(got.events) == 0:
        raise FeedError(path, None, "no events to replay")
    return got.events, got.report, None if got.path is None else str(got.path)


def _mapped(loaded: tuple, source: str, directory: str | os.PathLike, in_process: bool) -> str:
    """The native file the feed maps for a single recording kept as it is: the cache entry linked into the
    run's folder where it can (a cache cleared meanwhile cannot take it away), the native recording itself,
    or -- the cache off or unwritable -- ``replay.hev`` written there. In process (``in_process``) the cache
    entry itself: its events are mapped already, and a mapping outlives the file's removal."""
    from hean.feeds.native import write_native

    events, report, path = loaded
    if path is not None and (report.format == "native" or in_process):
        return path
    local = os.path.join(directory, "replay.hev")
    if path is not None:
        try:
            os.link(path, local)
            return local
        except FileNotFoundError:  # evicted meanwhile: the run writes its own copy below
            pass
        except OSError:  # another file system: map the entry itself
            return path
    write_native(local, events, report.symbols, source=source)
    return local


def _instrument_files(paths: list[str]) -> dict:
    """Every instrument file's symbols, the first file that names a symbol winning."""
    from hean.feeds.instruments import read_instruments

    out: dict = {}
    for p in paths:
        for name, inst in read_instruments(p).items():
            out.setdefault(name, inst)
    return out


def _plan(cfg, paths: list[str], reports: list[ReadReport], instruments: dict):
    """The run's symbol table (one entry per listing -- a name on a venue -- in order of first appearance),
    each source symbol's id in it (``sym_map[k, s]``), the scale of its prices and quantities
    (:mod:`hean.feeds.merge`), and the names whose units are the recording's guess.

    A source symbol's venue is its recording's (``feed.venues``), else its ``[[symbols]]`` entry's, else the
    first venue. A name on a second venue is another listing of the same instrument: ``NAME@VENUE``, its
    ``instrument`` the name (the router splits the instrument's orders over both; hean.stages.router). Every
    listing of a name has the name's units."""
    from hean.feeds.merge import S_PX_DEN, S_PX_NUM, S_QTY_DEN, S_QTY_NUM, ratio

    configured = {s.name: s for s in cfg.symbols}
    default_venue = cfg.venues[0].name if cfg.venues else "sim"
    venues = list(cfg.feed.venues)
    listing_of: dict[tuple[int, int], tuple[str, str]] = {}
    listings: dict[tuple[str, str], None] = {}  # (name, venue), in order of first appearance
    by_name: dict[str, list] = {}  # name -> every source symbol (hean.symbols.Symbol) of it
    for k, r in enumerate(reports):
        for sym in r.symbols:
            entry = configured.get(sym.name)
            venue = venues[k] if venues else entry.venue if entry is not None else default_venue
            listing_of[k, sym.id] = (sym.name, venue)
            listings.setdefault((sym.name, venue), None)
            by_name.setdefault(sym.name, []).append(sym)
    units, guessed = {}, []
    for name, syms in by_name.items():
        units[name], guess = _instrument(name, syms, configured.get(name), instruments.get(name), reports)
        if guess:
            guessed.append(name)
    table = []
    for name, venue in listings:
        first = all(e["name"] != name for e in table)
        table.append({"name": name if first else f"{name}@{venue}", "venue": venue,
                      "instrument": "" if first else name, **units[name]})  # fmt: skip
    ids = {key: i for i, key in enumerate(listings)}
    width = max(len(r.symbols) for r in reports)
    sym_map = np.zeros((len(reports), width), np.int64)
    scale = np.ones((len(reports), width, 4), np.int64)
    for k, r in enumerate(reports):
        for sym in r.symbols:
            i = ids[listing_of[k, sym.id]]
            sym_map[k, sym.id] = i
            px = ratio(sym.tick_size, Decimal(table[i]["tick_size"]))
            qty = ratio(sym.lot_size, Decimal(table[i]["lot_size"]))
            scale[k, sym.id, S_PX_NUM], scale[k, sym.id, S_PX_DEN] = px
            scale[k, sym.id, S_QTY_NUM], scale[k, sym.id, S_QTY_DEN] = qty
    return table, sym_map, scale, guessed


def _instrument(name: str, syms: list, entry, inst, reports: list[ReadReport]) -> tuple[dict, bool]:
    """A name's units -- ``tick_size``, ``lot_size``, ``multiplier``, ``min_qty`` -- and whether they are a
    guess: its ``[[symbols]]`` entry's, else its instrument file's (what the file leaves out: the
    recordings'), else the recordings' own (one step all its files fit; exact only from Databento
    definitions). The multiplier is 1 (a linear contract) unless an entry, a file or definitions give one."""
    info = [_reader_info(r, name) for r in reports if name in r.symbols]
    if entry is not None:
        return {"tick_size": str(entry.tick_size), "lot_size": str(entry.lot_size),
                "multiplier": str(entry.multiplier), "min_qty": str(entry.min_qty)}, False  # fmt: skip
    lot = _common_step([s.lot_size for s in syms])
    mult = next((str(i["multiplier"]) for i in info if i.get("multiplier")), "1")
    if inst is not None:
        return {"tick_size": inst.tick_size, "lot_size": inst.lot_size or lot,
                "multiplier": inst.multiplier or mult, "min_qty": inst.min_qty or "0"}, False  # fmt: skip
    tick = _common_step([s.tick_size for s in syms])
    exact = all(i.get("source") == "definition" for i in info)
    return {"tick_size": tick, "lot_size": lot, "multiplier": mult, "min_qty": "0"}, not exact


def _reader_info(report: ReadReport, name: str) -> dict:
    """What the reader learned of ``name``'s instrument from the data itself (Databento definitions: tick
    source, multiplier), or {}."""
    return (getattr(report, "instruments", None) or {}).get(name) or {}


def _common_step(steps: list) -> str:
    """The coarsest step every one of ``steps`` is a whole multiple of (their greatest common divisor): the
    units of a symbol whose files were converted with different guesses."""
    ds = [Decimal(str(s)) for s in steps]
    scale = max(-d.as_tuple().exponent for d in ds)
    g = 0
    for d in ds:
        g = gcd(g, int(d.scaleb(scale)))
    return format(Decimal(g).scaleb(-scale).normalize(), "f")


def _unit(scale: np.ndarray) -> bool:
    return bool((scale[..., 0] == scale[..., 1]).all() and (scale[..., 2] == scale[..., 3]).all())


def _check_chains(paths: list[str], loaded: list, table: list[dict], sym_map: np.ndarray) -> None:
    """A symbol in several files chains in time: its files must not overlap in receive time on it."""
    from hean.feeds.merge import symbol_time_ranges

    if len(paths) < 2:
        return
    spans: dict[int, list] = {}
    for k, (events, report, _p) in enumerate(loaded):
        ranges = symbol_time_ranges(events, len(report.symbols))
        for sym in report.symbols:
            lo, hi = ranges[sym.id]
            if lo <= hi:
                spans.setdefault(int(sym_map[k, sym.id]), []).append((int(lo), int(hi), paths[k]))
    for i, s in spans.items():
        s.sort()
        for (_lo0, hi0, p0), (lo1, _hi1, p1) in zip(s, s[1:], strict=False):
            if lo1 < hi0:
                raise FeedError(
                    p1,
                    None,
                    f"symbol {table[i]['name']} is also in {p0} over the same time (receive times "
                    f"{lo1} < {hi0}): one symbol's files chain day after day; two recordings of one market "
                    "are two symbols",
                )
