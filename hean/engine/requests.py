"""Operator requests to a running engine: a mailbox folder the supervisor serves, and what each request means.

Why a folder of files and not a signal: a signal carries no argument, and "halt BTCUSDT" or "set max_position
to 0.5 BTC" need one. The CLI (``hean halt --symbol``, ``hean risk set``) writes a request as a JSON file,
atomically (a temp file renamed into place), into the run's mailbox -- ``<tmp>/hean-<run>-requests-<random suffix>``,
named in the run's manifest -- and waits for the answer file the supervisor writes beside it. The supervisor
looks into the folder each time its watch loop wakes (at least every ``WATCH_S``), checks the request
against the run's symbols and limits (:func:`resolve`), pushes the CONTROL records to the risk stage, answers
(``ok`` and what was applied, or the error), and records it in the run's log of controls (the summary's
``controls``). Only the run's user can write the folder (mode 0700). The global kill switch keeps its signal
(``hean halt`` without ``--symbol``): it must work even when the disk does not.

A request: ``{"op": "halt" | "resume" | "reduce" | "set", "symbol": NAME or null, "key": ..., "value": ...}``.
``set`` takes a key of :data:`hean.stages.risk.LIMIT_KEYS` in the engine's units (lots, ticks, quote
currency), or ``max_position_units`` / ``max_order_qty_units`` in the instrument's own units (0.5 = half a
BTC), converted with each symbol's lot size -- a value that is not a whole number of lots is refused.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

__all__ = ["answer", "next_day_start", "pending", "resolve", "submit"]

OPS = ("halt", "resume", "reduce", "set")


def _bits(x: float) -> int:
    import numpy as np

    return int(np.array([x], np.float64).view(np.int64)[0])


def resolve(req: dict, symbols: list[Any]) -> tuple[list[tuple[int, int, int, int]], str]:
    """The CONTROL records a request stands for, ``(kind, symbol, side, arg)``, and what it does in words.
    ``symbols``: the run's symbol table (``name``, ``lot_size``). ValueError says what is wrong."""
    from hean.records import ControlCommand
    from hean.stages.risk import INT_LIMITS, LIMIT_KEYS, UNIT_KEYS  # the risk stage's own table of limits
    from hean.symbols import to_lots

    op = req.get("op")
    if op not in OPS:
        raise ValueError(f"unknown request {op!r}; one of {list(OPS)}")
    names = [s.name for s in symbols]
    name = req.get("symbol")
    if name is not None and name not in names:
        raise ValueError(f"no symbol {name!r} in this run; its symbols: {names}")
    sym = -1 if name is None else names.index(name)
    where = f"symbol {name}" if name is not None else "every symbol"
    if op != "set":
        kind = {"halt": ControlCommand.HALT, "resume": ControlCommand.RESUME, "reduce": ControlCommand.REDUCE}[op]
        return [(int(kind), sym, 0, 0)], f"{op} {where}"
    key, value = req.get("key"), req.get("value")
    base = UNIT_KEYS.get(key, key)
    if base not in LIMIT_KEYS:
        raise ValueError(f"unknown limit {key!r}; one of {sorted([*LIMIT_KEYS, *UNIT_KEYS])}")
    code, per_symbol = LIMIT_KEYS[base]
    if not per_symbol and name is not None:
        raise ValueError(f"{key} is one limit for the whole account: give no symbol")
    set_ = int(ControlCommand.SET)
    if key in UNIT_KEYS:
        targets = [sym] if sym >= 0 else list(range(len(names)))
        out = [(set_, t, code, _bits(float(to_lots(value, symbols[t].lot_size, key)))) for t in targets]
        return out, f"set {base} of {where} to {value} instrument units"
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{key}: {value!r} is not a number") from None
    if not v >= 0 or v == float("inf"):
        raise ValueError(f"{key}: {value!r} must be a finite number >= 0 (0 disables the limit)")
    if base in INT_LIMITS and v != int(v):
        raise ValueError(f"{key}: {value!r} must be a whole number")
    return [(set_, sym if per_symbol else -1, code, _bits(v))], f"set {key} of {where} to {value}"


def next_day_start(now_unix: float, at_utc: str) -> float:
    """The first moment after ``now_unix`` whose UTC time of day is ``at_utc`` (``"HH:MM"`` or
    ``"HH:MM:SS"``): when the daily loss limit starts counting again."""
    parts = [int(x) for x in at_utc.split(":")]
    h, m, s = (parts + [0, 0])[:3]
    day = int(now_unix // 86_400) * 86_400
    t = day + h * 3600 + m * 60 + s
    return t if t > now_unix else t + 86_400


# ---------------------------------------------------------------------------------------------------------
# the mailbox
# ---------------------------------------------------------------------------------------------------------
def _write(path: Path, obj: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj) + "\n")
    os.replace(tmp, path)


def submit(folder: str | os.PathLike, req: dict, timeout_s: float = 5.0) -> dict:
    """Leave ``req`` in the run's mailbox and wait for the supervisor's answer (TimeoutError after
    ``timeout_s``: the request is withdrawn when it was not taken yet)."""
    folder = Path(folder)
    name = f"req-{time.time_ns()}-{os.getpid()}"
    path = folder / f"{name}.json"
    _write(path, req)
    ack = folder / f"{name}.ack"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ack.exists():
            try:
                out = json.loads(ack.read_text())
            finally:
                ack.unlink(missing_ok=True)
            return out
        time.sleep(0.02)
    path.unlink(missing_ok=True)
    raise TimeoutError(f"the engine did not answer within {timeout_s:g} s (is its supervisor alive?)")


def pending(folder: str | os.PathLike) -> list[tuple[Path, dict | None]]:
    """The requests waiting, oldest first; a file that is not a JSON object reads as None."""
    out = []
    for p in sorted(Path(folder).glob("req-*.json")):
        try:
            req = json.loads(p.read_text())
        except (OSError, ValueError):
            req = None
        out.append((p, req if isinstance(req, dict) else None))
    return out


def answer(path: Path, reply: dict) -> None:
    """Answer the request at ``path`` and take it out of the mailbox."""
    _write(path.with_suffix(".ack"), reply)
    path.unlink(missing_ok=True)
