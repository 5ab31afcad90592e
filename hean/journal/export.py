"""A journal as tables: orders, fills, positions, equity and marks, written as Parquet or CSV.

Why exact columns: a price that went through a float can land off the tick (0.1 + 0.2), and a
reconciliation against the exchange's statement then fails by a hair. Every price and quantity is written
twice: as integer ticks or lots (exact, for joins and arithmetic) and as a decimal string computed from
them with the symbol's tick or lot size (exact, for people). Money that is not on a grid -- cash, fees,
PnL -- is float64. Timestamps are event time in UTC: the recording's exchange time in a replay, the
exchange's time live (``ts_exch``; a fill's venue time when the venue gave one).

The column contract is written for users in ``docs/outputs.md``.
"""

from __future__ import annotations

import csv
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from hean import records as R
from hean.journal.reader import Journal

__all__ = ["TABLES", "decimal_strings", "journal_tables", "write_tables"]

TABLES = ("orders", "fills", "positions", "equity", "marks")
Table = dict[str, np.ndarray]

_SIDE = {R.BUY: "buy", R.SELL: "sell"}
_ACTION = {int(a): a.name.lower() for a in R.OrderAction}
_REASON = {int(r): r.name.lower() for r in R.RejectReason}
_END_STATE = {R.ExecType.FILL: "filled", R.ExecType.CANCELED: "canceled", R.ExecType.EXPIRED: "expired",
              R.ExecType.REJECTED: "rejected"}  # fmt: skip
_LIQUIDITY = {1: "maker", 2: "taker"}
_FILL_KINDS = (int(R.ExecType.FILL), int(R.ExecType.PARTIAL_FILL))


def decimal_strings(units: np.ndarray, step: str) -> np.ndarray:
    """``units * step`` as exact decimal strings (``step``: the tick or lot size as written in the config)."""
    d = Decimal(step)
    exp = -d.as_tuple().exponent if d.as_tuple().exponent < 0 else 0
    scaled = int(d.scaleb(exp))  # step = scaled * 10**-exp
    out = []
    for u in units.tolist():
        v = u * scaled
        if exp == 0:
            out.append(str(v))
        else:
            sign = "-" if v < 0 else ""
            q, r = divmod(abs(v), 10**exp)
            out.append(f"{sign}{q}.{r:0{exp}d}")
    return np.array(out, dtype=object)


class _Symbols:
    """Names, tick and lot sizes by symbol id, as the journal's header wrote them."""

    def __init__(self, meta: dict) -> None:
        syms = meta.get("symbols", [])
        self.names = [s["name"] for s in syms]
        self.tick = [s["tick_size"] for s in syms]
        self.lot = [s["lot_size"] for s in syms]
        self.value = np.array([float(Decimal(t) * Decimal(q)) for t, q in zip(self.tick, self.lot, strict=True)])

    def name(self, ids: np.ndarray) -> np.ndarray:
        return np.array([self.names[i] if 0 <= i < len(self.names) else f"#{i}" for i in ids.tolist()], dtype=object)

    def prices(self, ids: np.ndarray, ticks: np.ndarray) -> np.ndarray:
        return self._per_symbol(ids, ticks, self.tick)

    def qtys(self, ids: np.ndarray, lots: np.ndarray) -> np.ndarray:
        return self._per_symbol(ids, lots, self.lot)

    def _per_symbol(self, ids: np.ndarray, units: np.ndarray, steps: list[str]) -> np.ndarray:
        out = np.empty(len(ids), dtype=object)
        for s in np.unique(ids).tolist():
            m = ids == s
            out[m] = decimal_strings(units[m], steps[s]) if 0 <= s < len(steps) else units[m].astype(str)
        return out


def _fill_ts(reps: np.ndarray) -> np.ndarray:
    """A fill's event time: the venue's stamp when it gave one, else the exchange time it carried."""
    return np.where(reps["ts_venue"] > 0, reps["ts_venue"], reps["ts_exch"]).astype(np.int64)


def _orders(j: Journal, sy: _Symbols) -> Table:
    """Every order risk passed, and every intent it rejected, with the order's final state from its reports."""
    sent, rej, reps = j["orders"], j["rejects"], j["reports"]
    final: dict[tuple[int, int], tuple[str, int, int]] = {}
    for r in reps[["strategy", "client_id", "order_id", "kind", "reason"]].tolist():
        key = (int(r[0]), int(r[1]))
        state, oid, reason = final.get(key, ("open", 0, 0))
        final[key] = (
            _END_STATE.get(int(r[3]), state),
            oid or int(r[2]),
            int(r[4]) if r[3] == R.ExecType.REJECTED else reason,
        )
    rows = np.concatenate([sent, _as_orders(rej)]) if len(rej) else sent
    is_rej = np.r_[np.zeros(len(sent), bool), np.ones(len(rej), bool)] if len(rej) else np.zeros(len(sent), bool)
    states, oids, reasons = [], [], []
    cols = rows[["strategy", "client_id", "order_id", "kind", "reason"]].tolist()
    for r, rejected in zip(cols, is_rej.tolist(), strict=True):
        if rejected:
            states.append("rejected")
            oids.append(0)
            reasons.append(_REASON.get(int(r[4]), str(r[4])))
            continue
        state, oid, reason = final.get((int(r[0]), int(r[1])), ("pending", 0, 0))
        states.append(state if r[3] == R.OrderAction.NEW else "sent")
        oids.append(int(r[2]) or oid)
        reasons.append(_REASON.get(reason, str(reason)) if reason else "")
    sym = rows["symbol"].astype(np.int64)
    return {
        "ts": rows["ts_exch"].astype(np.int64),
        "strategy": rows["strategy"].astype(np.int64),
        "client_id": rows["client_id"].astype(np.int64),
        "order_id": np.array(oids, np.int64),
        "symbol": sy.name(sym),
        "action": np.array([_ACTION.get(int(k), str(k)) for k in rows["kind"].tolist()], dtype=object),
        "side": np.array([_SIDE.get(int(s), "") for s in rows["side"].tolist()], dtype=object),
        "price": sy.prices(sym, rows["price"].astype(np.int64)),
        "price_ticks": rows["price"].astype(np.int64),
        "qty": sy.qtys(sym, rows["qty"].astype(np.int64)),
        "qty_lots": rows["qty"].astype(np.int64),
        "state": np.array(states, dtype=object),
        "reason": np.array(reasons, dtype=object),
    }


def _as_orders(rej: np.ndarray) -> np.ndarray:
    """Rejected intents (EXEC_REPORTs on the rejects stream) in the ORDER layout of the orders table."""
    out = np.zeros(len(rej), R.ORDER)
    for f in ("ts_exch", "symbol", "side", "order_id", "price", "qty", "strategy", "reason", "client_id"):
        out[f] = rej[f]
    out["kind"] = R.OrderAction.NEW
    return out


def _fills(j: Journal, sy: _Symbols) -> Table:
    reps = j["reports"]
    f = reps[np.isin(reps["kind"], _FILL_KINDS)]
    sym = f["symbol"].astype(np.int64)
    return {
        "ts": _fill_ts(f),
        "strategy": f["strategy"].astype(np.int64),
        "client_id": f["client_id"].astype(np.int64),
        "order_id": f["order_id"].astype(np.int64),
        "symbol": sy.name(sym),
        "side": np.array([_SIDE.get(int(s), "") for s in f["side"].tolist()], dtype=object),
        "price": sy.prices(sym, f["price"].astype(np.int64)),
        "price_ticks": f["price"].astype(np.int64),
        "qty": sy.qtys(sym, f["qty"].astype(np.int64)),
        "qty_lots": f["qty"].astype(np.int64),
        "leaves_lots": f["leaves_qty"].astype(np.int64),
        "fee": f["fee"].astype(np.float64),
        "liquidity": np.array(
            [{1: "maker", 2: "taker"}.get(int(x), "") for x in f["liquidity"].tolist()], dtype=object
        ),
        "_symbol_id": sym,
    }


def _marks(j: Journal, sy: _Symbols) -> Table:
    m = j["marks"]
    sym = m["symbol"].astype(np.int64)

    def side(px: np.ndarray) -> np.ndarray:
        s = sy.prices(sym, px.astype(np.int64))
        s[px <= 0] = ""  # an empty side
        return s

    return {
        "ts": m["ts_exch"].astype(np.int64),
        "symbol": sy.name(sym),
        "bid": side(m["bid_px"]),
        "ask": side(m["ask_px"]),
        "bid_ticks": m["bid_px"].astype(np.int64),
        "ask_ticks": m["ask_px"].astype(np.int64),
        "_symbol_id": sym,
    }


def _equity(fills: Table, marks: Table, sy: _Symbols) -> tuple[Table, Table]:
    """(equity, positions): each (strategy, symbol)'s position and PnL after every fill and at every mark
    after its first fill -- cash paid and received, less fees, plus the position at the mid of the time."""
    eq: dict[str, list] = {k: [] for k in ("ts", "strategy", "symbol", "position_lots", "position", "pnl", "fees")}
    pos_rows: dict[str, list] = {k: [] for k in ("strategy", "symbol", "position_lots", "position", "cash", "fees",
                                                 "mark", "pnl")}  # fmt: skip
    mid_ticks = np.where((marks["bid_ticks"] > 0) & (marks["ask_ticks"] > 0),
                         (marks["bid_ticks"] + marks["ask_ticks"]) / 2.0, np.nan)  # fmt: skip
    pairs = sorted(set(zip(fills["strategy"].tolist(), fills["_symbol_id"].tolist(), strict=True)))
    for st, s in pairs:
        fm = (fills["strategy"] == st) & (fills["_symbol_id"] == s)
        mm = marks["_symbol_id"] == s
        ts = np.r_[fills["ts"][fm], marks["ts"][mm]]
        is_fill = np.r_[np.ones(fm.sum(), bool), np.zeros(mm.sum(), bool)]
        idx = np.r_[np.nonzero(fm)[0], np.nonzero(mm)[0]]
        order = np.lexsort((~is_fill, ts))  # by time; a fill before a mark of the same instant
        pos, cash, fees, mid = 0, 0.0, 0.0, np.nan
        value = sy.value[s] if 0 <= s < len(sy.value) else 1.0
        started = False
        for k in order.tolist():
            i = int(idx[k])
            if is_fill[k]:
                sign = 1 if fills["side"][i] == "buy" else -1
                q = int(fills["qty_lots"][i])
                pos += sign * q
                cash -= sign * q * int(fills["price_ticks"][i]) * value
                fees += float(fills["fee"][i])
                started = True
            else:
                mid = mid_ticks[i] if np.isfinite(mid_ticks[i]) else mid
                if not started:
                    continue
            pnl = cash - fees + (pos * mid * value if np.isfinite(mid) else 0.0)
            for key, v in (("ts", int(ts[k])), ("strategy", st), ("symbol", s), ("position_lots", pos),
                           ("pnl", pnl), ("fees", fees)):  # fmt: skip
                eq[key].append(v)
        last_mid = mid if np.isfinite(mid) else 0.0
        for key, v in (("strategy", st), ("symbol", s), ("position_lots", pos), ("cash", cash), ("fees", fees),
                       ("mark", last_mid * float(Decimal(sy.tick[s])) if 0 <= s < len(sy.tick) else last_mid),
                       ("pnl", cash - fees + pos * last_mid * value)):  # fmt: skip
            pos_rows[key].append(v)
    equity = _typed(eq, floats=("pnl", "fees"))
    positions = _typed(pos_rows, floats=("cash", "fees", "mark", "pnl"))
    for t in (equity, positions):
        ids = t.pop("symbol").astype(np.int64)
        t["position"] = sy.qtys(ids, t["position_lots"])
        t["symbol"] = sy.name(ids)
    return equity, positions


def _typed(cols: dict[str, list], floats: tuple[str, ...]) -> Table:
    """Lists as arrays: float64 for ``floats``, int64 for the others."""
    return {k: np.array(v, np.float64 if k in floats else np.int64) for k, v in cols.items()}


def journal_tables(j: Journal) -> dict[str, Table]:
    """The five tables of a journal (columns as numpy arrays; ``docs/outputs.md`` names them)."""
    sy = _Symbols(j.meta)
    fills, marks = _fills(j, sy), _marks(j, sy)
    equity, positions = _equity(fills, marks, sy)
    fills.pop("_symbol_id")
    marks.pop("_symbol_id")
    order = {
        "equity": ("ts", "strategy", "symbol", "position", "position_lots", "pnl", "fees"),
        "positions": ("strategy", "symbol", "position", "position_lots", "cash", "fees", "mark", "pnl"),
    }
    equity = {k: equity[k] for k in order["equity"]}
    positions = {k: positions[k] for k in order["positions"]}
    return {"orders": _orders(j, sy), "fills": fills, "positions": positions, "equity": equity, "marks": marks}


def parquet_available() -> bool:
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        return False
    return True


def write_tables(tables: dict[str, Table], folder: str | Path, fmt: str = "auto") -> list[Path]:
    """Write each table as ``<name>.parquet`` (pyarrow) or ``<name>.csv``; ``fmt`` auto: Parquet when
    pyarrow is installed. Returns the files written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "auto":
        fmt = "parquet" if parquet_available() else "csv"
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"format {fmt!r}: parquet or csv")
    if fmt == "parquet" and not parquet_available():
        raise ValueError("Parquet needs pyarrow: pip install 'hean[parquet]', or use --format csv")
    out = []
    for name, cols in tables.items():
        path = folder / f"{name}.{fmt}"
        (_write_parquet if fmt == "parquet" else _write_csv)(cols, path)
        out.append(path)
    return out


def _write_parquet(cols: Table, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays = {}
    for k, v in cols.items():
        if k == "ts":
            arrays[k] = pa.array(v.astype(np.int64), type=pa.timestamp("ns", tz="UTC"))
        elif v.dtype == object:
            arrays[k] = pa.array(v.tolist(), type=pa.string())
        else:
            arrays[k] = pa.array(v)
    pq.write_table(pa.table(arrays), path)


def _iso(ts: np.ndarray) -> np.ndarray:
    return np.char.add(np.datetime_as_string(ts.astype("datetime64[ns]"), unit="ns"), "Z")


def _write_csv(cols: Table, path: Path) -> None:
    names = list(cols)
    data: list[Any] = [(_iso(v) if k == "ts" else v).tolist() for k, v in cols.items()]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(names)
        w.writerows(zip(*data, strict=True) if data and len(data[0]) else [])
