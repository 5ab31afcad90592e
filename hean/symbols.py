"""The symbol table and the exact decimal <-> integer conversion of prices and quantities.

Why exact: exchanges send prices as decimal strings ("61800.20"). ``float("61800.20") / 0.1`` is
``618001.9999999999``, so a float round trip can land on the wrong tick and two views of the same level stop
comparing equal. HEAN never goes through a float: a decimal string is parsed into an integer ``value`` and its
count of fractional digits ``nfrac`` (``"61800.25"`` -> ``(6180025, 2)``), and a step size (tick or lot) is
held the same way as ``mant * 10**-scale`` (tick ``0.10`` -> ``mant=1, scale=1``). Then

    units = value * 10**(scale - nfrac) / mant        (exactly, in integers)

and a value that is not a whole number of steps is an error that names the value, never a silent rounding.

The conversion exists twice, with the same rules: in Python (:meth:`SymbolTable.price_to_ticks` etc., for
configuration and CSV output) and as numba kernels (:func:`parse_decimal`, :func:`to_units`) that the readers
run over the raw bytes of a recording, so no Python ``Decimal`` is built per price.

A symbol's id is its index in the table (0..n-1): the kernels index numpy arrays with it.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

import numpy as np

from hean.jit import kernel

__all__ = [
    "MAX_DIGITS",
    "OffGridError",
    "Symbol",
    "SymbolTable",
    "format_units",
    "parse_decimal",
    "parse_decimal_str",
    "step_grid",
    "to_lots",
    "to_units",
    "units_from_str",
]

MAX_DIGITS = 18  # significant digits a decimal string may carry: 10**18 < 2**63
_POW10 = np.array([10**i for i in range(19)], dtype=np.int64)
_INT64_MAX = np.iinfo(np.int64).max
_DECIMAL_RE = re.compile(r"-?[0-9]+(\.[0-9]+)?\Z")


class OffGridError(ValueError):
    """A price or quantity is not a whole number of ticks/lots, or is not a plain decimal number."""


# ---------------------------------------------------------------------------------------------------------
# Python side: configuration, CSV output
# ---------------------------------------------------------------------------------------------------------
def step_grid(step: Decimal | str) -> tuple[int, int]:
    """``(mant, scale)`` with ``step == mant * 10**-scale``, ``mant > 0``, ``scale >= 0``, mant minimal.

    >>> step_grid("0.10"), step_grid("0.0001"), step_grid("1"), step_grid("25")
    ((1, 1), (1, 4), (1, 0), (25, 0))
    """
    return _step_grid(str(step))


@functools.lru_cache(maxsize=1024)
def _step_grid(text: str) -> tuple[int, int]:
    """:func:`step_grid` of a step's text, once per process: every backtest's set-up builds its symbol
    tables several times (configuration, recording, stages), with the same few steps."""
    d = Decimal(text).normalize()
    if not d.is_finite() or d <= 0:
        raise ValueError(f"step size must be a positive decimal, got {text!r}")
    sign, digits, exp = d.as_tuple()
    mant = int("".join(map(str, digits)))
    if exp >= 0:
        return mant * 10**exp, 0
    return mant, -exp


def parse_decimal_str(text: str) -> tuple[int, int]:
    """``(value, nfrac)`` of a plain decimal string: ``"61800.25"`` -> ``(6180025, 2)``; trailing fraction
    zeros are dropped (``"61800.20"`` -> ``(618002, 1)``).

    Only ``-?digits(.digits)?`` is accepted (what exchanges send): no exponent, no spaces, no ``inf``.
    """
    if not isinstance(text, str) or not _DECIMAL_RE.match(text):
        raise OffGridError(f"not a plain decimal number: {text!r}")
    neg = text.startswith("-")
    body = text[1:] if neg else text
    intpart, _, frac = body.partition(".")
    frac = frac.rstrip("0")  # trailing zeros change nothing
    digits = (intpart + frac).lstrip("0")
    if len(digits) > MAX_DIGITS:
        raise OffGridError(f"{text!r} has more than {MAX_DIGITS} significant digits")
    value = int(intpart + frac)
    return (-value if neg else value), len(frac)


def units_from_str(text: str, mant: int, scale: int, what: str = "value") -> int:
    """Exact number of steps (``mant * 10**-scale``) in the decimal string ``text``; error when off-grid."""
    value, nfrac = parse_decimal_str(text)
    units, ok = _to_units_py(value, nfrac, mant, scale)
    if not ok:
        step = format_units(mant, scale)
        raise OffGridError(f"{what} {text!r} is not a whole multiple of {step}")
    return units


def _to_units_py(value: int, nfrac: int, mant: int, scale: int) -> tuple[int, bool]:
    if nfrac <= scale:
        v = value * 10 ** (scale - nfrac)
    else:
        d = 10 ** (nfrac - scale)
        if value % d:
            return 0, False
        v = value // d
    if v % mant:
        return 0, False
    v //= mant
    return v, -(2**63) <= v < 2**63


def format_units(units: int, scale: int, mant: int = 1) -> str:
    """The decimal string of ``units * mant * 10**-scale``, with exactly ``scale`` fractional digits.

    >>> format_units(618002, 1), format_units(-5, 2), format_units(3, 0, 25)
    ('61800.2', '-0.05', '75')
    """
    v = int(units) * int(mant)
    if scale == 0:
        return str(v)
    sign = "-" if v < 0 else ""
    s = str(abs(v)).rjust(scale + 1, "0")
    return f"{sign}{s[:-scale]}.{s[-scale:]}"


@dataclass(frozen=True)
class Symbol:
    """One tradable instrument. ``tick_size``/``lot_size`` are exact decimals (configure them as strings)."""

    name: str
    id: int
    tick_size: Decimal
    lot_size: Decimal
    venue: str = ""
    tick_mant: int = field(init=False)
    tick_scale: int = field(init=False)
    lot_mant: int = field(init=False)
    lot_scale: int = field(init=False)

    def __post_init__(self) -> None:
        for attr in ("tick_size", "lot_size"):
            raw = getattr(self, attr)
            if isinstance(raw, float):
                raise ValueError(
                    f"symbol {self.name}: {attr} must be a decimal string, not the float {raw!r} (a float is not exact)"
                )
            try:
                object.__setattr__(self, attr, Decimal(str(raw)))
            except InvalidOperation:
                raise ValueError(f"symbol {self.name}: {attr} {raw!r} is not a decimal number") from None
        tm, ts = step_grid(self.tick_size)
        lm, ls = step_grid(self.lot_size)
        if ts > MAX_DIGITS or ls > MAX_DIGITS:
            raise ValueError(f"symbol {self.name}: step sizes finer than 1e-{MAX_DIGITS} are not supported")
        object.__setattr__(self, "tick_mant", tm)
        object.__setattr__(self, "tick_scale", ts)
        object.__setattr__(self, "lot_mant", lm)
        object.__setattr__(self, "lot_scale", ls)

    def price_to_ticks(self, text: str) -> int:
        return units_from_str(text, self.tick_mant, self.tick_scale, f"{self.name} price")

    def qty_to_lots(self, text: str) -> int:
        return units_from_str(text, self.lot_mant, self.lot_scale, f"{self.name} quantity")

    def ticks_to_str(self, ticks: int) -> str:
        return format_units(ticks, self.tick_scale, self.tick_mant)

    def lots_to_str(self, lots: int) -> str:
        return format_units(lots, self.lot_scale, self.lot_mant)

    def to_dict(self) -> dict[str, str | int]:
        return {
            "name": self.name,
            "id": self.id,
            "tick_size": str(self.tick_size),
            "lot_size": str(self.lot_size),
            "venue": self.venue,
        }


class SymbolTable:
    """Symbols by name and by id, plus the int64 arrays the numba kernels need.

    Built from plain dicts, as the ``[[symbols]]`` list of the TOML configuration gives them::

        SymbolTable([{"name": "BTCUSDT", "tick_size": "0.10", "lot_size": "0.001", "venue": "binance"}])

    ``id`` is optional and, when given, must equal the entry's position (ids index the kernels' arrays).

    Arrays (``int64[n]``, indexed by symbol id): ``tick_mant``, ``tick_scale``, ``lot_mant``, ``lot_scale``;
    ``tick_size``/``lot_size`` as float64 for display and money arithmetic only.
    """

    def __init__(self, symbols: Iterable[Mapping | Symbol]) -> None:
        items: list[Symbol] = []
        for i, s in enumerate(symbols):
            if isinstance(s, Symbol):
                sym = s
            else:
                unknown = set(s) - {"name", "id", "tick_size", "lot_size", "venue"}
                if unknown:
                    raise ValueError(f"symbol entry {i}: unknown keys {sorted(unknown)}")
                missing = {"name", "tick_size", "lot_size"} - set(s)
                if missing:
                    raise ValueError(f"symbol entry {i}: missing {sorted(missing)}")
                sym = Symbol(
                    name=str(s["name"]),
                    id=int(s.get("id", i)),
                    tick_size=s["tick_size"],
                    lot_size=s["lot_size"],
                    venue=str(s.get("venue", "")),
                )
            if sym.id != i:
                raise ValueError(f"symbol {sym.name}: id {sym.id} must equal its position {i}")
            items.append(sym)
        names = [s.name for s in items]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"duplicate symbol names: {sorted(dup)}")
        self.symbols: tuple[Symbol, ...] = tuple(items)
        self._by_name = {s.name: s for s in items}
        self.tick_mant = np.array([s.tick_mant for s in items], dtype=np.int64)
        self.tick_scale = np.array([s.tick_scale for s in items], dtype=np.int64)
        self.lot_mant = np.array([s.lot_mant for s in items], dtype=np.int64)
        self.lot_scale = np.array([s.lot_scale for s in items], dtype=np.int64)
        self.tick_size = np.array([float(s.tick_size) for s in items], dtype=np.float64)
        self.lot_size = np.array([float(s.lot_size) for s in items], dtype=np.float64)

    def __len__(self) -> int:
        return len(self.symbols)

    def __iter__(self):
        return iter(self.symbols)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __getitem__(self, key: str | int) -> Symbol:
        if isinstance(key, str):
            try:
                return self._by_name[key]
            except KeyError:
                raise KeyError(f"unknown symbol {key!r}; known: {sorted(self._by_name)}") from None
        return self.by_id(key)

    def by_id(self, sid: int) -> Symbol:
        if not 0 <= int(sid) < len(self.symbols):
            raise KeyError(f"unknown symbol id {sid} (table has {len(self.symbols)})")
        return self.symbols[int(sid)]

    def id_of(self, name: str) -> int:
        return self[name].id

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.symbols]

    def to_json(self) -> str:
        return json.dumps([s.to_dict() for s in self.symbols])

    @classmethod
    def from_json(cls, text: str | bytes) -> SymbolTable:
        return cls(json.loads(text))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SymbolTable) and [s.to_dict() for s in self] == [s.to_dict() for s in other]

    def __repr__(self) -> str:
        return f"SymbolTable({[s.to_dict() for s in self.symbols]!r})"


# ---------------------------------------------------------------------------------------------------------
# numba side: the readers' hot loop over raw bytes
# ---------------------------------------------------------------------------------------------------------
@kernel
def parse_decimal(buf, start, end):
    """Parse ``buf[start:end]`` (uint8 ASCII) as ``-?digits(.digits)?``.

    Returns ``(value, nfrac, ok)``: ``"61800.25"`` -> ``(6180025, 2, True)``; trailing fraction zeros are
    dropped (``"61800.20"`` -> ``(618002, 1, True)``). ``ok`` is False for an empty field, a stray
    character, a second dot, a missing digit around the dot or more than 18 significant digits.

    The common case (no sign, at most 18 characters) takes two tight loops; anything else goes to the
    general routine, which gives the same answers.
    """
    n = end - start
    if n == 0 or n > 18 or buf[start] == 45:
        return _parse_decimal_general(buf, start, end)
    i = start
    v = np.int64(0)
    while i < end:
        d = np.int64(buf[i]) - 48
        if d < 0 or d > 9:
            break
        v = v * 10 + d
        i += 1
    if i == start:
        return np.int64(0), np.int64(0), False
    if i == end:
        return v, np.int64(0), True
    if buf[i] != 46 or i + 1 == end:
        return np.int64(0), np.int64(0), False
    i += 1
    f0 = i
    last_nz = i  # one past the last non-zero fraction digit
    while i < end:
        d = np.int64(buf[i]) - 48
        if d < 0 or d > 9:
            return np.int64(0), np.int64(0), False
        v = v * 10 + d
        i += 1
        if d != 0:
            last_nz = i
    trailing = end - last_nz
    v = v // _POW10[trailing]
    return v, np.int64(last_nz - f0), True


@kernel
def _parse_decimal_general(buf, start, end):
    """:func:`parse_decimal` for every input (signs, long digit strings, leading zeros)."""
    i = start
    neg = False
    if i < end and buf[i] == 45:  # '-'
        neg = True
        i += 1
    value = np.int64(0)
    nfrac = np.int64(0)  # fraction digits in value (trailing zeros excluded)
    sig = np.int64(0)  # significant digits in value
    pend = np.int64(0)  # fraction zeros seen but not yet multiplied in (dropped if they trail)
    seen_dot = False
    int_digits = np.int64(0)
    frac_digits = np.int64(0)
    while i < end:
        c = buf[i]
        if 48 <= c <= 57:
            d = np.int64(c - 48)
            if seen_dot:
                frac_digits += 1
                if d == 0:
                    pend += 1
                else:
                    if sig > 0:
                        sig += pend + 1
                    else:
                        sig = 1
                    if sig > 18 or nfrac + pend + 1 > 18:
                        return np.int64(0), np.int64(0), False
                    value = value * _POW10[pend + 1] + d
                    nfrac += pend + 1
                    pend = 0
            else:
                int_digits += 1
                if sig > 0 or d != 0:
                    sig += 1
                    if sig > 18:
                        return np.int64(0), np.int64(0), False
                value = value * 10 + d
        elif c == 46 and not seen_dot:  # '.'
            seen_dot = True
        else:
            return np.int64(0), np.int64(0), False
        i += 1
    if int_digits == 0 or (seen_dot and frac_digits == 0):
        return np.int64(0), np.int64(0), False
    if neg:
        value = -value
    return value, nfrac, True


@kernel
def to_units(value, nfrac, mant, scale):
    """Exact ``value * 10**-nfrac / (mant * 10**-scale)``: returns ``(units, ok)``; ok False when off-grid.

    All int64: ``value`` and ``nfrac`` from :func:`parse_decimal`, ``mant``/``scale`` from the table.
    """
    if nfrac <= scale:
        p = _POW10[scale - nfrac]
        if value > _INT64_MAX // p or value < -(_INT64_MAX // p):
            return np.int64(0), False
        v = value * p
    else:
        d = _POW10[nfrac - scale]
        if value % d != 0:
            return np.int64(0), False
        v = value // d
    if v % mant != 0:
        return np.int64(0), False
    return v // mant, True


def to_lots(value: object, lot_size: str | Decimal, what: str) -> int:
    """``value`` instrument units as whole lots of ``lot_size``; ValueError naming ``what`` otherwise."""
    try:
        v = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"{what}: {value!r} is not a number") from None
    if not v.is_finite() or v < 0:
        raise ValueError(f"{what}: {value!r} must be a finite number >= 0")
    lots = v / Decimal(str(lot_size))
    if lots != lots.to_integral_value():
        raise ValueError(f"{what}: {value} is not a whole number of lots of {lot_size}")
    return int(lots)
