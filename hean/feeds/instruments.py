"""Instrument files: the exchanges' own tick and lot sizes, for a replay whose recording cannot tell them.

Why: a recording of depth and trades carries prices, not the instrument's rules, so the readers guess the
tick and the lot from the finest decimals they see -- a guess that is too fine when every price seen was a
multiple of a coarser step, and that risk's tick and lot checks then enforce. The exchanges publish the
rules; :func:`read_instruments` reads them from the files users download:

==========================  ===========================================================================
file                        what it gives per symbol
==========================  ===========================================================================
Binance ``exchangeInfo``    ``symbols[].filters``: PRICE_FILTER ``tickSize``, LOT_SIZE ``stepSize`` and
(JSON, spot and futures)    ``minQty`` (spot ``/api/v3/exchangeInfo``, USD-M ``/fapi/v1/exchangeInfo``)
Bybit ``instruments-info``  ``result.list[]``: ``priceFilter.tickSize``, ``lotSizeFilter.qtyStep`` (linear)
(JSON, v5)                  or ``basePrecision`` (spot), ``lotSizeFilter.minOrderQty``
Databento definitions       ``InstrumentDefMsg``: ``min_price_increment`` and ``contract_multiplier`` (or
(``.dbn``, ``.dbn.zst``)    ``unit_of_measure_qty``) by ``raw_symbol`` (no lot: a contract is the unit)
==========================  ===========================================================================

A replay takes each symbol's tick and lot from, in order: its ``[[symbols]]`` entry in the configuration,
the first instrument file (``feed.instruments``) that has it, else the recording (Databento definitions in
the file are exact; everything else is the guess, and the run's summary names the symbols guessed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

__all__ = ["Instrument", "InstrumentError", "read_instruments"]


class InstrumentError(ValueError):
    """An instrument file that cannot be read: the message names the file and what is wrong."""


@dataclass(frozen=True)
class Instrument:
    """One symbol's rules from an instrument file. ``lot_size`` None: the file does not say (keep the
    recording's)."""

    name: str
    tick_size: str
    lot_size: str | None
    source: str  # the file it came from
    multiplier: str | None = None  # the contract multiplier, where the file gives one (Databento)
    min_qty: str | None = None  # the smallest order quantity, where the file gives one (Binance, Bybit)


def read_instruments(path: str | Path) -> dict[str, Instrument]:
    """The instruments of ``path`` (module docstring) by symbol name; InstrumentError naming the file."""
    p = Path(path)
    if not p.is_file():
        raise InstrumentError(f"{p}: no such instrument file")
    if p.name.endswith((".dbn", ".dbn.zst")):
        return _dbn(p)
    try:
        doc = json.loads(p.read_bytes())
    except (OSError, ValueError, RecursionError) as e:
        raise InstrumentError(f"{p}: not a JSON instrument file ({str(e)[:120]})") from None
    if isinstance(doc, dict) and isinstance(doc.get("symbols"), list):
        return _binance(p, doc["symbols"])
    result = doc.get("result") if isinstance(doc, dict) else None
    if isinstance(result, dict) and isinstance(result.get("list"), list):
        return _bybit(p, result["list"])
    raise InstrumentError(
        f"{p}: neither Binance exchangeInfo (a 'symbols' list) nor Bybit instruments-info ('result.list')"
    )


def _step(p: Path, name: str, key: str, value) -> str:
    """A step size as the exact decimal string it was written as; InstrumentError unless it is > 0."""
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        d = Decimal(0)
    if not isinstance(value, str | int) or not d.is_finite() or d <= 0:
        raise InstrumentError(f"{p}: symbol {name}: {key} {value!r} is not a positive decimal")
    return format(d.normalize(), "f")


def _binance(p: Path, items: list) -> dict[str, Instrument]:
    out = {}
    for i, s in enumerate(items):
        if not isinstance(s, dict) or not isinstance(s.get("symbol"), str):
            raise InstrumentError(f"{p}: symbols[{i}] has no 'symbol' name")
        name = s["symbol"]
        filters = {f.get("filterType"): f for f in s.get("filters") or [] if isinstance(f, dict)}
        if "PRICE_FILTER" not in filters or "LOT_SIZE" not in filters:
            raise InstrumentError(f"{p}: symbol {name}: no PRICE_FILTER or LOT_SIZE filter")
        tick = _step(p, name, "tickSize", filters["PRICE_FILTER"].get("tickSize"))
        lot = _step(p, name, "stepSize", filters["LOT_SIZE"].get("stepSize"))
        low = filters["LOT_SIZE"].get("minQty")
        out[name] = Instrument(name, tick, lot, str(p), min_qty=_step(p, name, "minQty", low) if low else None)
    return out


def _bybit(p: Path, items: list) -> dict[str, Instrument]:
    out = {}
    for i, s in enumerate(items):
        if not isinstance(s, dict) or not isinstance(s.get("symbol"), str):
            raise InstrumentError(f"{p}: result.list[{i}] has no 'symbol' name")
        name = s["symbol"]
        price, lot = s.get("priceFilter") or {}, s.get("lotSizeFilter") or {}
        step = lot.get("qtyStep", lot.get("basePrecision"))
        tick = _step(p, name, "priceFilter.tickSize", price.get("tickSize"))
        low = lot.get("minOrderQty")
        out[name] = Instrument(name, tick, _step(p, name, "lotSizeFilter.qtyStep", step), str(p),
                               min_qty=_step(p, name, "lotSizeFilter.minOrderQty", low) if low else None)  # fmt: skip
    return out


def _dbn(p: Path) -> dict[str, Instrument]:
    from hean.feeds.common import FeedError
    from hean.feeds.databento import read_definitions

    try:
        defs = read_definitions(p)
    except FeedError as e:
        raise InstrumentError(str(e)) from None
    out = {}
    for d in defs.values():
        if d["tick"] and d["raw_symbol"]:
            out[d["raw_symbol"]] = Instrument(d["raw_symbol"], d["tick"], None, str(p), d["multiplier"])
    if not out:
        raise InstrumentError(f"{p}: no instrument definition with a tick size")
    return out
