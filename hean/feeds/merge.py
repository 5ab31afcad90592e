"""Several recordings as one native event file, merged by receive time without holding them in memory.

Why: a replay of several venues, symbols or days is one stream of events in the order they were received,
but the recordings are files of their own -- each converted once into HEAN's native format and memory-mapped
(:mod:`hean.feeds.cache`). :func:`merge_into` makes the one stream with a k-way merge in compiled code: it
reads every source map front to back and writes each event straight into the output file's own map
(:func:`hean.feeds.native.native_file`), so what it holds in memory is one cursor per source, whatever the
recordings' size; the page cache does the rest.

The order: by receive time (``ts_origin``), ties in the sources' order; within a source its own order is
kept. A source's key is the running maximum of its receive times -- a recording's streams are not always
stamped in order, and sorting on the raw times would tear an exchange message's events apart.

On the way, each event gets its symbol's id in the merged table and, where the instrument's tick or lot
differs from the one the source was converted with (exact instruments from the configuration or an
instrument file: :mod:`hean.feeds.instruments`), its price and quantity re-expressed in the new units --
exactly, or not at all: a price that is not a whole number of the new tick is an error naming the file, the
event and the value.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

from hean.feeds.common import FeedError
from hean.feeds.native import MAX_UNITS, native_file
from hean.jit import entry
from hean.symbols import SymbolTable

__all__ = ["MergeError", "merge_into", "symbol_time_ranges"]

# scale[k, s] of source k's symbol s: (price numerator, price denominator, qty numerator, qty denominator)
S_PX_NUM, S_PX_DEN, S_QTY_NUM, S_QTY_DEN = 0, 1, 2, 3

OK = 0
BAD_PRICE = 1  # a price that is not a whole number of the new tick
BAD_QTY = 2  # a quantity that is not a whole number of the new lot
TOO_LARGE = 3  # a value that leaves the native format's range (MAX_UNITS) in the new units


class MergeError(FeedError):
    """A source event that cannot be expressed in the merged table's units."""


@entry
def _merge(srcs, sym_map, scale, pos, key, out):
    """The k-way merge (module docstring) of ``srcs`` (a tuple of read-only MARKET_EVENT arrays) into ``out``,
    from cursors ``pos`` with running keys ``key`` (int64[K] each, updated). Returns ``(status, source)``: OK,
    or why the event at ``pos[source]`` of that source could not be written."""
    k_src = len(srcs)
    n = 0
    while True:
        best = -1
        best_key = np.int64(0)
        for k in range(k_src):
            if pos[k] < srcs[k].shape[0]:
                t = max(key[k], srcs[k][pos[k]].ts_origin)
                if best < 0 or t < best_key:
                    best = k
                    best_key = t
        if best < 0:
            return OK, -1
        ev = srcs[best][pos[best]]
        s = ev.symbol
        px = ev.price
        qty = ev.qty
        if scale[best, s, S_PX_NUM] != scale[best, s, S_PX_DEN]:
            num = scale[best, s, S_PX_NUM]
            if abs(px) >= MAX_UNITS // num:
                return TOO_LARGE, best
            px *= num
            if px % scale[best, s, S_PX_DEN] != 0:
                return BAD_PRICE, best
            px //= scale[best, s, S_PX_DEN]
        if scale[best, s, S_QTY_NUM] != scale[best, s, S_QTY_DEN]:
            num = scale[best, s, S_QTY_NUM]
            if qty >= MAX_UNITS // num:
                return TOO_LARGE, best
            qty *= num
            if qty % scale[best, s, S_QTY_DEN] != 0:
                return BAD_QTY, best
            qty //= scale[best, s, S_QTY_DEN]
        out[n] = ev
        out[n].symbol = sym_map[best, s]
        out[n].price = px
        out[n].qty = qty
        key[best] = best_key
        pos[best] += 1
        n += 1


@entry
def _ranges(events, n_symbols, lo, hi):
    """Each symbol's first and last receive time in ``events`` into ``lo``/``hi`` (int64[n_symbols])."""
    for i in range(events.shape[0]):
        s = events[i].symbol
        t = events[i].ts_origin
        if 0 <= s < n_symbols:
            if t < lo[s]:
                lo[s] = t
            if t > hi[s]:
                hi[s] = t


def symbol_time_ranges(events: np.ndarray, n_symbols: int) -> np.ndarray:
    """``int64[n_symbols, 2]``: each symbol's first and last receive time in ``events`` (a symbol without
    events: ``(int64 max, int64 min)``)."""
    lo = np.full(n_symbols, np.iinfo(np.int64).max, np.int64)
    hi = np.full(n_symbols, np.iinfo(np.int64).min, np.int64)
    if len(events):
        _ranges(_read_only(events), n_symbols, lo, hi)
    return np.stack([lo, hi], axis=1)


def ratio(old_step, new_step) -> tuple[int, int]:
    """``(num, den)``: a value of ``old_step`` units is ``value * num / den`` units of ``new_step``."""
    r = Fraction(old_step) / Fraction(new_step)
    return r.numerator, r.denominator


def merge_into(
    path: str | Path,
    sources: Sequence[np.ndarray],
    names: Sequence[str],
    tables: Sequence[SymbolTable],
    sym_map: np.ndarray,
    scale: np.ndarray,
    symbols: SymbolTable,
) -> int:
    """Merge ``sources`` (MARKET_EVENT arrays, each validated against its own symbol table ``tables[k]``; named
    ``names[k]`` in errors) into a new native file at ``path`` with the table ``symbols``: source ``k``'s
    symbol ``s`` becomes ``sym_map[k, s]`` and its prices and quantities are scaled by ``scale[k, s]``
    (:data:`S_PX_NUM`...). Returns the number of events written; raises :class:`MergeError` (nothing is
    written) for an event the new units cannot hold."""
    srcs = tuple(_read_only(s) for s in sources)
    n = sum(len(s) for s in srcs)
    pos = np.zeros(len(srcs), np.int64)
    key = np.full(len(srcs), np.iinfo(np.int64).min, np.int64)
    with native_file(path, n, symbols, source=" + ".join(str(x) for x in names)) as out:
        if n:
            status, k = _merge(srcs, sym_map, scale, pos, key, out)
            if status != OK:
                raise _error(status, names[k], tables[k], srcs[k], int(pos[k]), symbols)
    return n


def _error(status: int, name: str, table: SymbolTable, events: np.ndarray, i: int, out: SymbolTable) -> MergeError:
    """The error for source event ``i`` (1-based in the message, like the readers' record numbers)."""
    ev = events[i]
    sym = table.by_id(int(ev["symbol"]))
    target = out[sym.name] if sym.name in out else sym
    if status == BAD_PRICE:
        what = f"price {sym.ticks_to_str(int(ev['price']))} is not a whole number of the tick {target.tick_size}"
    elif status == BAD_QTY:
        what = f"quantity {sym.lots_to_str(int(ev['qty']))} is not a whole number of the lot {target.lot_size}"
    else:
        what = "a price or quantity too large for the native format in the instrument's units"
    return MergeError(name, None, f"event {i + 1} ({sym.name}): {what}")


def _read_only(events: np.ndarray) -> np.ndarray:
    """A read-only plain-ndarray view: one numba type for every source, mapped or in memory."""
    view = np.asarray(events).view(np.ndarray)
    view.flags.writeable = False
    return view
