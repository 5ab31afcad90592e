"""``hean report DIR``: a run's output directory (``hean run --out DIR``) as a terminal summary and one HTML file.

Why a separate reader: the output directory is the run's durable record (the shared-memory segments are gone
once it ends), so everything here is read from the files alone -- ``summary.json`` for the figures the engine
counted, the tables for what was traded, the ``latency/*.hlog`` interval logs for the latency distributions.
Nothing is re-measured; the report only draws what the run wrote (docs/outputs.md describes the files).

Dependencies stay optional: tables are read with pyarrow when a ``.parquet`` is there (else the ``.csv``
through the csv module), the plots need matplotlib (Agg, imported only when the HTML is written) and the
``.hlog`` files are decoded with the ``hdrhistogram`` package -- both in the ``plot`` extra. The terminal
summary needs neither, so it is always printed first.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "PLOT_EXTRA",
    "SCHEMAS",
    "MissingDependency",
    "ReportError",
    "RunOutput",
    "Spectrum",
    "Table",
    "load_output",
    "print_summary",
    "read_hlog",
    "render_html",
    "spectrum",
    "write_html",
]

PLOT_EXTRA = "pip install 'hean[plot]'"
TS, INT, FLOAT, STR = "ts", "int", "float", "str"  # column kinds; decimal strings stay STR (exact)
SCHEMAS: dict[str, dict[str, str]] = {
    "orders": {"ts": TS, "strategy": INT, "client_id": INT, "order_id": INT, "symbol": STR, "action": STR,
               "side": STR, "price": STR, "price_ticks": INT, "qty": STR, "qty_lots": INT, "state": STR,
               "reason": STR},
    "fills": {"ts": TS, "strategy": INT, "client_id": INT, "order_id": INT, "symbol": STR, "side": STR,
              "price": STR, "price_ticks": INT, "qty": STR, "qty_lots": INT, "leaves_lots": INT, "fee": FLOAT,
              "liquidity": STR},
    "positions": {"strategy": INT, "symbol": STR, "position": STR, "position_lots": INT, "cash": FLOAT,
                  "fees": FLOAT, "mark": FLOAT, "pnl": FLOAT},
    "equity": {"ts": TS, "strategy": INT, "symbol": STR, "position_lots": INT, "pnl": FLOAT, "fees": FLOAT},
    "marks": {"ts": TS, "symbol": STR, "bid": STR, "ask": STR, "bid_ticks": INT, "ask_ticks": INT},
}  # fmt: skip
SPECTRUM_STEP = 20  # points per decade of 1/(1-p) in the latency spectrum
KEY_PCTS = (50.0, 75.0, 90.0, 99.0, 99.9, 99.99, 99.999)  # always points of a spectrum (when supported)
MAX_LINE_POINTS = 200_000  # marks drawn per symbol at most (every k-th beyond that; the title says so)


class ReportError(Exception):
    """Bad input: a missing or unreadable file, named in the message (the command exits 2, no traceback)."""


class MissingDependency(ReportError):
    """The HTML part needs a package that is not installed (the message says which and how to install it)."""


# ---------------------------------------------------------------------------------------------------------
# reading the output directory
# ---------------------------------------------------------------------------------------------------------
@dataclass
class Table:
    """One table of the output directory as numpy columns (timestamps ``datetime64[ns]`` UTC, ints int64,
    floats float64, strings -- decimal ones included -- object arrays)."""

    name: str
    path: Path
    cols: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(next(iter(self.cols.values()))) if self.cols else 0

    def __getitem__(self, col: str) -> np.ndarray:
        return self.cols[col]


@dataclass
class RunOutput:
    """Everything ``hean report`` reads: ``summary.json`` (``meta``; its ``summary`` object is ``summary``),
    the five tables and the paths of the ``.hlog`` files (tick-to-trade first, then by name)."""

    path: Path
    meta: dict
    summary: dict
    tables: dict[str, Table]
    hlogs: list[Path]


def load_output(directory: str | Path) -> RunOutput:
    """Read a run's output directory; a :class:`ReportError` naming the file for anything missing or garbled,
    so the command fails with one line rather than a traceback half-way through the report."""
    root = Path(directory)
    if not root.is_dir():
        raise ReportError(f"{root}: not a directory (the --out DIR of hean run or hean replay)")
    meta = _read_summary(root / "summary.json")
    tables = {name: read_table(root, name) for name in SCHEMAS}
    latency = root / "latency"
    hlogs = sorted(latency.glob("*.hlog"), key=lambda p: (p.stem != "tick_to_trade", p.name))
    return RunOutput(root, meta, meta["summary"], tables, hlogs)


def _read_summary(path: Path) -> dict:
    if not path.is_file():
        raise ReportError(f"{path}: missing (is {path.parent} the --out directory of hean run or hean replay?)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ReportError(f"{path}: not readable as JSON ({e})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("summary"), dict):
        raise ReportError(f"{path}: no 'summary' object (not a hean run summary)")
    return meta


def read_table(root: Path, name: str) -> Table:
    """``root/<name>.parquet`` (when pyarrow is importable) or ``root/<name>.csv``, checked against
    :data:`SCHEMAS` (extra columns are ignored, a missing one is an error naming it)."""
    pq_path, csv_path = root / f"{name}.parquet", root / f"{name}.csv"
    if pq_path.is_file():
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            if not csv_path.is_file():
                raise MissingDependency(f"{pq_path}: reading Parquet needs pyarrow: pip install pyarrow") from None
        else:
            return _read_parquet(pq_path, name)
    if csv_path.is_file():
        return _read_csv(csv_path, name)
    raise ReportError(f"{root}: table {name!r} missing (neither {pq_path.name} nor {csv_path.name})")


def _missing(path: Path, have: list[str], schema: dict[str, str]) -> None:
    absent = [c for c in schema if c not in have]
    if absent:
        raise ReportError(f"{path}: missing column(s) {', '.join(absent)}")


def _read_parquet(path: Path, name: str) -> Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = SCHEMAS[name]
    try:
        _missing(path, pq.read_schema(path).names, schema)
        t = pq.read_table(path, columns=list(schema))
    except (pa.ArrowException, OSError) as e:
        raise ReportError(f"{path}: not a readable Parquet table ({e})") from None
    cols = {}
    for col, kind in schema.items():
        try:
            cols[col] = _arrow_column(t.column(col), kind, f"{path}: column {col}")
        except (pa.ArrowException, TypeError, ValueError) as e:
            raise ReportError(f"{path}: column {col}: {e}") from None
    return Table(name, path, cols)


def _arrow_column(a, kind: str, where: str) -> np.ndarray:
    """One Parquet column as the numpy array :class:`Table` holds (nulls: NaN, '' -- or an error for ints)."""
    import pyarrow as pa

    if kind == TS:
        if pa.types.is_timestamp(a.type):
            return a.cast(pa.timestamp("ns", tz="UTC")).cast(pa.int64()).to_numpy().view("datetime64[ns]")
        return _parse_ts([str(v) for v in a.to_pylist()], where)
    if kind == INT:
        if pa.types.is_integer(a.type) and not a.null_count:
            return a.to_numpy().astype(np.int64)
        return _ints(a.to_pylist(), where)
    if kind == FLOAT:
        return a.cast(pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
    return a.cast(pa.string()).fill_null("").to_numpy(zero_copy_only=False).astype(object)


def _read_csv(path: Path, name: str) -> Table:
    schema = SCHEMAS[name]
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ReportError(f"{path}: not a readable CSV table ({e})") from None
    if not rows:
        raise ReportError(f"{path}: empty file (a table without rows still has its header line)")
    header, body = rows[0], rows[1:]
    _missing(path, header, schema)
    if any(len(r) != len(header) for r in body):
        line = next(i for i, r in enumerate(body, 2) if len(r) != len(header))
        raise ReportError(f"{path}: line {line} has a different number of fields than the header")
    cols = {}
    for col, kind in schema.items():
        j = header.index(col)
        values = [r[j] for r in body]
        where = f"{path}: column {col}"
        if kind == TS:
            cols[col] = _parse_ts(values, where)
        elif kind == INT:
            cols[col] = _ints(values, where)
        elif kind == FLOAT:
            cols[col] = _floats(values, where)
        else:
            cols[col] = np.array(values, dtype=object)
    return Table(name, path, cols)


def _ints(values: list, where: str) -> np.ndarray:
    try:
        return np.array([int(v) for v in values], dtype=np.int64)
    except (TypeError, ValueError):
        bad = next(v for v in values if not _parses(int, v))
        raise ReportError(f"{where}: {bad!r} is not an integer") from None


def _parses(convert: Any, v: Any) -> bool:
    """``convert(v)`` works (to name the first bad value of a column)."""
    try:
        convert(v)
    except (TypeError, ValueError):
        return False
    return True


def _floats(values: list, where: str) -> np.ndarray:
    try:
        return np.array([float(v) if v != "" else np.nan for v in values], dtype=np.float64)
    except ValueError:
        bad = next(v for v in values if v != "" and not _parses(float, v))
        raise ReportError(f"{where}: {bad!r} is not a number") from None


def _parse_ts(values: list[str], where: str) -> np.ndarray:
    """ISO-8601 UTC strings (``Z``, ``+00:00`` or no offset; up to ns) as ``datetime64[ns]``."""
    plain = [v.strip().removesuffix("Z").removesuffix("+00:00") for v in values]
    try:
        out = np.array(plain, dtype="datetime64[ns]")
    except ValueError:
        out = None
    if out is None or np.isnat(out).any():  # numpy reads '' and 'NaT' as not-a-time: a missing timestamp
        for v, p in zip(values, plain, strict=True):
            try:
                ok = not np.isnat(np.datetime64(p, "ns"))
            except ValueError:
                ok = False
            if not ok:
                raise ReportError(f"{where}: {v!r} is not an ISO-8601 UTC timestamp")
    return out


def decimals(values: np.ndarray) -> np.ndarray:
    """Exact decimal strings as floats, for plotting only ('' -- a missing side -- is NaN)."""
    try:
        return np.asarray(values).astype(np.float64)  # every one a number: the fast way
    except (TypeError, ValueError):
        pass
    out = np.full(len(values), np.nan)
    for i, v in enumerate(values):
        try:
            out[i] = float(v)
        except (TypeError, ValueError):
            pass
    return out


# ---------------------------------------------------------------------------------------------------------
# latency: the .hlog files
# ---------------------------------------------------------------------------------------------------------
@dataclass
class Spectrum:
    """A histogram's percentile spectrum (HdrHistogram's percentile distribution): ``values_ns[i]`` is the
    value at percentile ``pcts[i]``; the points run from 0 up to the percentile the count supports."""

    name: str
    count: int
    max_ns: int
    pcts: np.ndarray
    values_ns: np.ndarray

    def value_at(self, pct: float) -> int | None:
        """The value at ``pct`` if it is one of the points (None otherwise)."""
        hit = np.flatnonzero(np.isclose(self.pcts, pct, rtol=0, atol=1e-9))
        return int(self.values_ns[hit[0]]) if len(hit) else None


def _hdrh():
    try:
        from hdrh.histogram import HdrHistogram
        from hdrh.log import HistogramLogReader
    except ImportError:
        raise MissingDependency(f"the HTML report needs hdrhistogram: {PLOT_EXTRA}") from None
    return HdrHistogram, HistogramLogReader


def read_hlog(path: Path):
    """All intervals of an ``.hlog`` summed into one ``hdrh`` histogram (the whole run's distribution)."""
    from hean.telemetry.histogram import HIST_HIGHEST, HIST_LOWEST, HIST_SIG_FIGS

    HdrHistogram, HistogramLogReader = _hdrh()
    total = HdrHistogram(HIST_LOWEST, HIST_HIGHEST, HIST_SIG_FIGS)
    try:
        reader = HistogramLogReader(str(path), total)
        try:
            while reader.add_next_interval_histogram(total) is not None:
                pass
        finally:
            reader.close()
    except Exception as e:  # hdrh raises its own types, ValueError, binascii/zlib errors: all mean garbled
        raise ReportError(f"{path}: not a readable HdrHistogram interval log ({type(e).__name__}: {e})") from None
    return total


def spectrum(path: Path) -> Spectrum:
    """The percentile spectrum of an ``.hlog``: points at 1/(1-p) = 10**(k/20) up to the sample count, the
    usual percentiles (:data:`KEY_PCTS`, those the count supports) and 100%."""
    h = read_hlog(path)
    n = int(h.get_total_count())
    name = path.name.removesuffix(".hlog")
    if n == 0:
        return Spectrum(name, 0, 0, np.zeros(0), np.zeros(0, np.int64))
    from hean.telemetry.histogram import supported_percentiles

    decades = np.arange(int(math.floor(SPECTRUM_STEP * math.log10(n))) + 1) / SPECTRUM_STEP
    pcts = [round(100.0 * (1.0 - 10.0**-d), 9) for d in decades] + [100.0]
    pcts = sorted(set(pcts) | set(supported_percentiles(n, KEY_PCTS)))
    values = h.get_percentile_to_value_dict(pcts)
    return Spectrum(name, n, int(h.get_max_value()), np.array(pcts), np.array([values[p] for p in pcts], np.int64))


# ---------------------------------------------------------------------------------------------------------
# the terminal summary
# ---------------------------------------------------------------------------------------------------------
def _fmt_ns(ns) -> str:
    from hean.commands.views.units import fmt_ns

    return fmt_ns(ns)


def _status(s: dict) -> str:
    code = s.get("exit_code")
    return "OK" if code == 0 else f"FAILED (exit {code})" if code is not None else "exit status unknown"


def facts(out: RunOutput) -> list[tuple[str, str]]:
    """The run's headline figures as (label, text) rows -- the same rows on the screen and in the HTML."""
    m, s = out.meta, out.summary
    rows = [
        ("run", f"{m.get('run_id', s.get('run_id', '?'))}: {_status(s)}"),
        ("hean", str(m.get("hean_version", "?"))),
        ("command", " ".join(map(str, m.get("command", []))) or "-"),
        ("time (UTC)", f"{m.get('start_utc', '?')} to {m.get('end_utc', '?')}"),
        ("ended", f"by {s.get('reason', '?')} after {_num(s.get('elapsed_s'), '.2f')} s "
                  f"(feed {_num(s.get('feed_s'), '.2f')} s)"),
        ("events", f"{_num(s.get('events'), ',')} in {_num(s.get('messages'), ',')} messages"),
        ("orders", _num(s.get("orders"), ",")),
        ("fills", _num(s.get("fills"), ",")),
    ]  # fmt: skip
    if "rejects_total" in s:
        rows.append(("risk rejects", _num(s["rejects_total"], ",")))
    pnl = s.get("pnl") or {}
    if pnl:
        rows.append(
            ("PnL", f"{_num(pnl.get('total'), ',.2f')} = realized {_num(pnl.get('realized'), ',.2f')} + "
                    f"unrealized {_num(pnl.get('unrealized'), ',.2f')} - fees {_num(pnl.get('fees'), ',.2f')}")
        )  # fmt: skip
    for j, st in enumerate(s.get("strategies") or []):
        rows.append(
            (f"strategy {st.get('id', j)}", f"{st.get('path', '?')}: orders {_num(st.get('orders'), ',')}, "
             f"fills {_num(st.get('fills'), ',')}, PnL {_num(st.get('pnl'), ',.2f')}")
        )  # fmt: skip
    sizes = ", ".join(f"{name} {len(t):,}" for name, t in out.tables.items())
    rows.append(("table rows", sizes))
    return rows


def _num(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


LATENCY_COLS = (("p50", "p50"), ("p99", "p99"), ("p99.9", "p999"), ("max", "max"))


def latency_rows(s: dict) -> list[list[str]]:
    """[what, count, p50, p99, p99.9, max] for tick-to-trade and each stage's service time (summary.json's
    exact figures; blank where the count does not support the percentile)."""
    rows = []
    t = s.get("tick_to_trade_ns") or {}
    rows.append(["tick-to-trade", _num(t.get("count"), ","), *(_fmt_ns(t.get(k)) for _, k in LATENCY_COLS)])
    for stage, st in (s.get("stages") or {}).items():
        sv = st.get("service_ns") or {}
        rows.append([f"{stage} service", _num(sv.get("count"), ","), *(_fmt_ns(sv.get(k)) for _, k in LATENCY_COLS)])
    return rows


def position_rows(out: RunOutput) -> list[list[str]]:
    """The final positions table as text rows (strategy, symbol, position, PnL, fees)."""
    t = out.tables["positions"]
    return [
        [str(t["strategy"][i]), str(t["symbol"][i]), str(t["position"][i]), f"{t['pnl'][i]:,.2f}",
         f"{t['fees'][i]:,.2f}"]
        for i in range(len(t))
    ]  # fmt: skip


def print_summary(out: RunOutput, console=None) -> None:
    """The run on the screen: its facts, the latency table (tick-to-trade and stage service times) and the
    final positions -- all from the files, nothing that needs matplotlib or hdrhistogram."""
    from rich import box
    from rich.console import Console
    from rich.table import Table as RichTable
    from rich.text import Text

    console = console or Console()
    grid = RichTable.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    for label, value in facts(out):
        grid.add_row(label, Text(value))  # Text: no rich markup in paths like "[x]"
    console.print(Text(f"HEAN report {out.path}", style="bold"))
    console.print(grid)
    lat = RichTable(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, title_justify="left")
    for i, name in enumerate(("latency", "count", *(label for label, _ in LATENCY_COLS))):
        lat.add_column(name, justify="left" if i == 0 else "right")
    for row in latency_rows(out.summary):
        lat.add_row(*row)
    console.print(lat)
    rows = position_rows(out)
    if rows:
        pos = RichTable(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        for i, name in enumerate(("strategy", "symbol", "position", "PnL", "fees")):
            pos.add_column(name, justify="left" if i < 2 else "right")
        for row in rows:
            pos.add_row(*row)
        console.print(pos)


# ---------------------------------------------------------------------------------------------------------
# plots (matplotlib, Agg, imported lazily)
# ---------------------------------------------------------------------------------------------------------
def _matplotlib():
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display; also what FigureCanvasAgg below renders with
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingDependency(f"the HTML report needs matplotlib: {PLOT_EXTRA}") from None
    return Figure, FigureCanvasAgg


def _figure(height: float = 4.0):
    """A figure of its own (no pyplot: no global state, nothing left open between plots)."""
    Figure, FigureCanvasAgg = _matplotlib()
    fig = Figure(figsize=(10, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _nothing(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=14, color="grey")
    ax.set_xticks([])
    ax.set_yticks([])


def _time_axis(ax) -> None:
    import matplotlib.dates as mdates

    loc = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(loc)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc))
    ax.set_xlabel("time (UTC)")
    ax.grid(True, alpha=0.3)


def _span(out: RunOutput) -> tuple[np.datetime64, np.datetime64] | None:
    """First and last timestamp over the time-stamped tables: every line runs across the same span."""
    ts = [out.tables[n]["ts"] for n in ("equity", "marks", "fills", "orders") if len(out.tables[n])]
    if not ts:
        return None
    return min(t.min() for t in ts), max(t.max() for t in ts)


def _steps(ts: np.ndarray, ys: np.ndarray, span) -> tuple[np.ndarray, np.ndarray]:
    """A step series from 0 at the span's start to its last value at the span's end (the value before the
    first change is 0: no position, no PnL)."""
    t0, t1 = span
    return np.concatenate([[t0], ts, [t1]]), np.concatenate([[0.0], ys, [ys[-1]]])


def _strategy_names(s: dict) -> dict[int, str]:
    return {int(st.get("id", j)): str(st.get("path", "")) for j, st in enumerate(s.get("strategies") or [])}


def equity_curves(equity: Table) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """strategy -> (ts, total PnL over its symbols): at each row the strategy's PnL moves by the change of
    that symbol's PnL since its previous row (the table holds per-(strategy, symbol) values)."""
    order = np.argsort(equity["ts"], kind="stable")
    ts, strat, sym, pnl = (equity[c][order] for c in ("ts", "strategy", "symbol", "pnl"))
    delta = np.zeros(len(ts))
    last: dict[tuple[int, str], float] = {}
    for i in range(len(ts)):  # the previous value of the same (strategy, symbol)
        key = (int(strat[i]), str(sym[i]))
        delta[i] = pnl[i] - last.get(key, 0.0)
        last[key] = pnl[i]
    curves = {}
    for s in sorted(set(strat.tolist())):
        m = strat == s
        curves[int(s)] = _last_per_ts(ts[m], np.cumsum(delta[m]))
    return curves


def _last_per_ts(ts: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Only the last value at each timestamp (rows of one instant -- two symbols' changes -- are one step)."""
    last = np.append(ts[1:] != ts[:-1], True) if len(ts) else np.zeros(0, bool)
    return ts[last], ys[last]


def plot_equity(out: RunOutput) -> bytes:
    """PnL over time, one line per strategy (summed over its symbols)."""
    fig, ax = _figure()
    eq, span = out.tables["equity"], _span(out)
    ax.set_title("PnL per strategy")
    if not len(eq):
        _nothing(ax, "no equity changes (nothing traded)")
        return _png(fig)
    names = _strategy_names(out.summary)
    for s, (ts, ys) in equity_curves(eq).items():
        ax.plot(*_steps(ts, ys, span), drawstyle="steps-post", label=f"{s}: {names.get(s, '?')}")
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_ylabel("PnL")
    _time_axis(ax)
    ax.legend(fontsize="small")
    return _png(fig)


def plot_positions(out: RunOutput) -> bytes:
    """Position (lots) over time, one line per (strategy, symbol)."""
    fig, ax = _figure()
    eq, span = out.tables["equity"], _span(out)
    ax.set_title("position per strategy and symbol")
    if not len(eq):
        _nothing(ax, "no position changes (nothing traded)")
        return _png(fig)
    order = np.argsort(eq["ts"], kind="stable")
    ts, strat, sym, lots = (eq[c][order] for c in ("ts", "strategy", "symbol", "position_lots"))
    for s, name in sorted({(int(a), str(b)) for a, b in zip(strat, sym, strict=True)}):
        m = (strat == s) & (sym == name)
        ax.plot(*_steps(*_last_per_ts(ts[m], lots[m].astype(float)), span), drawstyle="steps-post", label=f"{s} {name}")
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_ylabel("position (lots)")
    _time_axis(ax)
    ax.legend(fontsize="small")
    return _png(fig)


def fill_symbols(out: RunOutput) -> list[str]:
    """The symbols with marks or fills: one fills-on-price plot each."""
    return sorted(set(out.tables["marks"]["symbol"].tolist()) | set(out.tables["fills"]["symbol"].tolist()))


def plot_fills(out: RunOutput, symbol: str | None) -> bytes:
    """The top of book (bid and ask from ``marks``) with the buy fills as up-triangles and the sell fills as
    down-triangles at their prices; ``symbol`` None (a run with neither) draws an empty plot saying so."""
    fig, ax = _figure(4.5)
    if symbol is None:
        ax.set_title("fills on the price")
        _nothing(ax, "no marks and no fills")
        return _png(fig)
    marks, fills = out.tables["marks"], out.tables["fills"]
    mk = np.flatnonzero(marks["symbol"] == symbol)
    stride = max(1, math.ceil(len(mk) / MAX_LINE_POINTS))
    mk = mk[np.argsort(marks["ts"][mk], kind="stable")][::stride]
    for col, colour in (("bid", "tab:blue"), ("ask", "tab:orange")):
        if len(mk):
            ax.plot(marks["ts"][mk], decimals(marks[col][mk]), drawstyle="steps-post", lw=0.8, color=colour,
                    label=col)  # fmt: skip
    fm = fills["symbol"] == symbol
    counts = {}
    for side, marker, colour in (("buy", "^", "tab:green"), ("sell", "v", "tab:red")):
        m = fm & (fills["side"] == side)
        counts[side] = int(m.sum())
        if counts[side]:
            ax.scatter(fills["ts"][m], decimals(fills["price"][m]), marker=marker, color=colour, s=36, zorder=3,
                       edgecolors="black", linewidths=0.4, label=f"{side} fills")  # fmt: skip
    title = f"{symbol}: {counts['buy']:,} buy and {counts['sell']:,} sell fills on the top of book"
    if stride > 1:
        title += f" (every {stride}th mark)"
    if not counts["buy"] and not counts["sell"]:
        title += " (no fills)"
    ax.set_title(title)
    ax.set_ylabel("price")
    _time_axis(ax)
    ax.legend(fontsize="small")
    return _png(fig)


def percentile_label(decade: int) -> str:
    """1/(1-p) = 10**decade as a percentile: 0 -> 0%, 1 -> 90%, 2 -> 99%, 3 -> 99.9%."""
    return "0%" if decade == 0 else f"{100.0 * (1.0 - 10.0**-decade):.{max(decade - 2, 0)}f}%"


def plot_spectrum(spectra: list[Spectrum]) -> bytes:
    """HdrHistogram's percentile plot: x is the percentile on a log scale of 1/(1-p), y the latency (us, log)."""
    fig, ax = _figure(5.0)
    ax.set_title("latency by percentile (tick-to-trade and stage service times)")
    drawn = [s for s in spectra if s.count]
    if not drawn:
        _nothing(ax, "no latency samples")
        return _png(fig)
    right = 5
    for s in drawn:
        keep = s.pcts < 100.0  # 100% (the max) sits where its rank is reached: 1/(1-p) = 2 * count
        x = np.append(1.0 / (1.0 - s.pcts[keep] / 100.0), 2.0 * s.count)
        y = np.append(s.values_ns[keep], s.values_ns[-1])
        bold = s.name == "tick_to_trade"
        ax.plot(x, y / 1e3, lw=2.2 if bold else 1.2, marker="o" if len(x) == 1 else None,
                label=f"{s.name} (n={s.count:,}, max {_fmt_ns(s.max_ns)})")  # fmt: skip
        right = max(right, math.ceil(math.log10(max(x[-1], 1.0))))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(1.0, 10.0**right)
    ax.set_xticks([10.0**k for k in range(right + 1)], [percentile_label(k) for k in range(right + 1)])
    ax.minorticks_off()
    ax.set_xlabel("percentile")
    ax.set_ylabel("latency (us)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize="small", loc="upper left")
    return _png(fig)


def plotted(spectra: list[Spectrum]) -> list[Spectrum]:
    """The spectra drawn: tick-to-trade and every stage's service time (the age rows stay in the table)."""
    return [s for s in spectra if s.name == "tick_to_trade" or s.name.endswith(".service")]


# ---------------------------------------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:0.5em 0}td,th{padding:2px 10px;border-bottom:1px solid #eee;text-align:right}
td:first-child,th:first-child{text-align:left}table.facts td{text-align:left}th{background:#f5f5f5}
img{max-width:100%;display:block;margin:0.5em 0}pre{background:#f7f7f7;padding:0.8em;overflow-x:auto}
.note{color:#777;font-size:0.9em}
"""


def _e(text: Any) -> str:
    return html.escape(str(text))


def _html_table(head: list[str] | None, rows: list[list[str]], cls: str = "") -> str:
    """A table of text cells (escaped); ``head`` None: no header row."""
    h = "<tr>" + "".join(f"<th>{_e(c)}</th>" for c in head) + "</tr>" if head else ""
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table{f' class={cls!r}' if cls else ''}>{h}{body}</table>"


def _img(png: bytes, alt: str) -> str:
    return f'<img src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}" alt="{_e(alt)}">'


def _hlog_rows(spectra: list[Spectrum]) -> list[list[str]]:
    rows = []
    for s in spectra:
        vals = [s.value_at(p) if s.count else None for p in (50.0, 99.0, 99.9)]
        top = _fmt_ns(s.max_ns if s.count else None)
        rows.append([s.name + ".hlog", f"{s.count:,}", *(_fmt_ns(v) for v in vals), top])
    return rows


def render_html(out: RunOutput) -> str:
    """The whole report as one self-contained HTML page (figures as base64 PNG; no scripts, no links out)."""
    _matplotlib()  # fail before any work when matplotlib is missing
    spectra = [spectrum(p) for p in out.hlogs]
    symbols = fill_symbols(out)
    run_id = out.meta.get("run_id", out.summary.get("run_id", ""))
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>HEAN report {_e(run_id)}</title>"
        f"<style>{_CSS}</style></head><body>",
        f"<h1>HEAN run {_e(run_id)}</h1>",
        _html_table(None, [list(r) for r in facts(out)], "facts"),
        "<h2>Latency</h2>",
        _html_table(["latency", "count", *(label for label, _ in LATENCY_COLS)], latency_rows(out.summary)),
        "<p class='note'>From summary.json (exact maxima); '-': too few samples for that percentile.</p>",
        "<h2>Final positions</h2>",
        _html_table(["strategy", "symbol", "position", "PnL", "fees"], position_rows(out))
        if len(out.tables["positions"])
        else "<p class='note'>no positions</p>",
        "<h2>PnL</h2>",
        _img(plot_equity(out), "PnL per strategy"),
        "<h2>Positions</h2>",
        _img(plot_positions(out), "position per strategy and symbol"),
        "<h2>Fills on the price</h2>",
        *(_img(plot_fills(out, sym), f"fills {sym}" if sym else "fills on the price") for sym in (symbols or [None])),
        "<h2>Latency spectrum</h2>",
        _img(plot_spectrum(plotted(spectra)), "latency by percentile"),
        _html_table(["histogram", "count", "p50", "p99", "p99.9", "max"], _hlog_rows(spectra))
        if spectra
        else "<p class='note'>no latency/*.hlog files</p>",
        "<p class='note'>From latency/*.hlog, all intervals summed; values are HdrHistogram bucket bounds.</p>",
        *(_details(key, out.meta[key]) for key in ("config", "machine") if key in out.meta),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _details(title: str, obj: Any) -> str:
    return f"<details><summary>{_e(title)}</summary><pre>{_e(json.dumps(obj, indent=2, default=str))}</pre></details>"


def write_html(out: RunOutput, dest: str | Path) -> Path:
    """Render the report and write it atomically to ``dest`` (a reader never sees half a page). Non-ASCII
    characters go out as character references, so the file reads the same whatever the locale's encoding."""
    from hean.paths import write_atomically

    text = render_html(out).encode("ascii", "xmlcharrefreplace").decode("ascii")
    dest = Path(dest)
    try:
        write_atomically(dest, lambda f: f.write(text))
    except OSError as e:
        raise ReportError(f"{dest}: cannot write the report ({e.strerror or e})") from None
    return dest
