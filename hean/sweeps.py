"""``hean sweep`` and ``hean.sweep`` (:func:`sweep`): a strategy's parameters x recordings as deterministic
backtests, on Ray.

Why Ray and not a pool of our own: research outgrows one machine, and a sweep is embarrassingly parallel --
each *cell* (one parameter set on one recording) is one :func:`hean.backtest`, in process, lockstep, no CPU
pinning. Ray Core runs the cells as tasks on this machine's CPUs (a local Ray) or on an existing cluster
(``address``); ``local=True`` runs the very same cell function in this process, one after the other, for a
machine without Ray or a debugging session. Both give identical result tables: a cell is deterministic.

**The grid** (a TOML file or a dict)::

    strategy = 0                    # which [[strategies]] entry of the configuration the params apply to
    [params]                        # each parameter: the values to try
    half_spread_ticks = [1, 2, 3]
    skew_ticks_per_lot = [0.0, 0.5]

Cells: every recording x every combination, in a fixed order (recordings as given, sorted when they come from
a pattern; parameters in the grid's order, the last one varying fastest).

**Recordings** are converted to HEAN's native event file once, by the driver, into ``OUT/recordings/``
(named by the digest of the source file, so a re-run reuses them); each task maps that file. On a cluster
whose nodes do not share ``OUT``, the driver also puts each file in Ray's object store and a node that cannot
see the path writes it once into its temporary folder (:func:`_local_copy`).

**Results** (``OUT/``): ``cells/<key>.json`` per finished cell, written as each one finishes, so a sweep that
is stopped and run again skips what is done (a cell's key digests the configuration, the strategies' source,
its parameters and the recording: changing any of them runs it again); ``cells/<key>.failed.json`` for a cell
that raised (its error; it runs again next time); ``results.parquet`` -- one row per finished cell
(:data:`METRICS`), CSV when pyarrow is not installed -- and ``summary.txt``, the cells ranked by PnL.
"""

from __future__ import annotations

import glob
import hashlib
import itertools
import json
import math
import os
import sys
import tempfile
import time
import tomllib
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["METRICS", "Cell", "Grid", "SweepError", "SweepResult", "cell_row", "run_cell", "run_sweep", "sweep"]

SECONDS_PER_YEAR = 365 * 86_400
SHARPE_STEP_NS = 1_000_000_000  # the equity curve is sampled every second of event time for the Sharpe ratio

METRICS: dict[str, str] = {
    "events": "market events replayed",
    "orders": "orders sent (NEW)",
    "fills": "fills (partial and full)",
    "pnl": "PnL in quote currency at the end: cash of the fills, minus fees, plus the position at the mid",
    "fees": "fees paid, quote currency (negative: rebates)",
    "turnover": "traded notional, quote currency",
    "max_drawdown": "the largest fall of the equity curve from a previous high, quote currency (>= 0)",
    "sharpe": "mean / standard deviation of the equity curve's 1-second changes, x sqrt(seconds per year); "
    "NaN when the curve never moves",
    "rejects": "orders rejected (by risk, the router or the venue); rejects_<REASON> by reason",
}
"""The columns of a result row besides ``cell``, ``recording`` and ``param_<name>`` (for the swept strategy)."""


class SweepError(ValueError):
    """A sweep that cannot start: a bad grid, no recordings, Ray missing."""


# ---------------------------------------------------------------------------------------------------------
# the grid and its cells
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Grid:
    """Parameter values to try, for the configuration's strategy ``strategy``."""

    params: dict[str, list[float]]
    strategy: int = 0

    @classmethod
    def load(cls, grid: str | os.PathLike | dict) -> Grid:
        """A grid from a TOML file or a dict (see the module docstring); a malformed one is a SweepError."""
        where = "grid"
        if not isinstance(grid, dict):
            where = str(grid)
            try:
                grid = tomllib.loads(Path(grid).read_text())
            except OSError as e:
                raise SweepError(f"grid {where}: {e.strerror or e}") from None
            except tomllib.TOMLDecodeError as e:
                raise SweepError(f"grid {where}: not TOML: {e}") from None
        unknown = sorted(set(grid) - {"params", "strategy"})
        if unknown:
            raise SweepError(f"{where}: unknown key(s) {unknown}; a grid has [params] and optionally strategy = N")
        raw = grid.get("params")
        if not isinstance(raw, dict) or not raw:
            raise SweepError(f"{where}: [params] must name at least one parameter with a list of values")
        params: dict[str, list[float]] = {}
        for name, values in raw.items():
            if not isinstance(values, list) or not values:
                raise SweepError(f"{where}: params.{name} must be a non-empty list of numbers, got {values!r}")
            for v in values:
                if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                    raise SweepError(f"{where}: params.{name}: {v!r} is not a finite number")
            if len(set(values)) != len(values):
                raise SweepError(f"{where}: params.{name} lists a value twice: {values}")
            params[name] = [float(v) for v in values]
        strategy = grid.get("strategy", 0)
        if isinstance(strategy, bool) or not isinstance(strategy, int) or strategy < 0:
            raise SweepError(f"{where}: strategy must be an index >= 0 into [[strategies]], got {strategy!r}")
        return cls(params, strategy)

    def combinations(self) -> list[dict[str, float]]:
        names = list(self.params)
        return [dict(zip(names, values, strict=True)) for values in itertools.product(*self.params.values())]


@dataclass(frozen=True)
class Recording:
    """A recording as the cells see it: its name (the path given) and the native file they replay."""

    name: str
    native: str
    digest: str  # of the source file and format: the native file's name and the cells' keys


@dataclass(frozen=True)
class Cell:
    """One backtest of the sweep: what :func:`run_cell` needs, picklable (Ray ships it to a worker)."""

    key: str
    recording: Recording
    params: dict[str, float]
    entries: list[dict]  # the run's [[strategies]] tables, the swept one with ``params`` applied
    strategy: int
    config: str | None  # the configuration file (None: the built-in one)
    equity_ms: int = 1000
    max_rows: int = 1_000_000


def _digest_file(path: str | os.PathLike, salt: str = "") -> str:
    h = hashlib.sha1(salt.encode())
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def convert_recordings(paths: Sequence[str], format: str, out: Path) -> list[Recording]:
    """Each recording as a native event file under ``out/recordings`` (converted once: a file already there
    for the same source digest is reused); a native recording is used where it is."""
    from hean.feeds import load_events
    from hean.feeds.native import write_native

    folder = out / "recordings"
    recs = []
    for path in paths:
        fmt = format or ("native" if str(path).endswith(".hev") else "")
        if not fmt:
            raise SweepError(f"recording {path}: say its format (--format, or feed.format in the configuration)")
        digest = _digest_file(path, fmt)
        if fmt == "native":
            recs.append(Recording(str(path), str(Path(path).resolve()), digest))
            continue
        native = folder / f"{Path(path).name.split('.')[0]}-{digest}.hev"
        if not native.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            events, report = load_events(path, fmt)
            write_native(native, np.asarray(events), report.symbols, source=str(path))
        recs.append(Recording(str(path), str(native.resolve()), digest))
    return recs


def _load(config: str | None) -> Any:
    """The configuration, checked, its feed aside (each cell replays a recording of the sweep); its errors
    as SweepError."""
    from hean.engine.config import ConfigError, load_config

    try:
        return load_config(config, {"feed.source": "synthetic"})
    except (ConfigError, ValueError) as e:
        raise SweepError(str(e)) from None


def _entries(config: str | None, strategy: int) -> list[dict]:
    """The configuration's strategies as [[strategies]] tables (the ``[strategy]`` shorthand as one)."""
    from hean.stages.strategy import strategy_entries

    cfg = _load(config)
    entries = []
    for e in strategy_entries(cfg):
        table: dict[str, Any] = {"path": _absolute(e.path), "symbols": list(e.symbols), "params": dict(e.params)}
        for key in ("mode", "tick_source", "bar_source"):
            if getattr(e, key):
                table[key] = getattr(e, key)
        for key, unset in (("timer_ms", -1), ("depth", -1)):
            if getattr(e, key) != unset:
                table[key] = getattr(e, key)
        if e.indicators:
            table["indicators"] = dict(e.indicators)
        entries.append(table)
    if strategy >= len(entries):
        raise SweepError(f"grid: strategy = {strategy}, but the configuration has {len(entries)} strategies")
    return entries


def _absolute(spec: str) -> str:
    """A strategy file's path made absolute (a Ray worker's working directory is not the driver's); module
    paths and built-in names as they are."""
    from hean.strategies.plugin import BUILTIN

    where, sep, name = spec.rpartition(":")
    if spec in BUILTIN or not sep or not (where.endswith(".py") or "/" in where):
        return spec
    return f"{Path(where).expanduser().resolve()}:{name}"


def _setup_digest(config: str | None, entries: list[dict]) -> bytes:
    """What every cell of a sweep shares: the configuration's text and the strategies' sources."""
    from hean.strategies.plugin import declaration

    h = hashlib.sha1()
    h.update(Path(config).read_bytes() if config else b"built-in")
    for e in entries:
        h.update(declaration(e["path"]).source.read_bytes())
    return h.digest()


def _key(setup: bytes, entries: list[dict], rec: Recording) -> str:
    """A cell's identity: the sweep's setup (:func:`_setup_digest`), its strategies' tables (its parameters
    in them) and the recording."""
    return hashlib.sha1(setup + json.dumps([entries, rec.digest], sort_keys=True).encode()).hexdigest()[:20]


def make_cells(
    config: str | None, grid: Grid, recordings: list[Recording], *, equity_ms: int = 1000, max_rows: int = 1_000_000
) -> list[Cell]:
    """Every recording x every parameter combination, in the grid's order; unknown or invalid parameters are
    refused here (the strategy's own ``validate`` runs per cell: a value it refuses fails that cell only)."""
    from hean.strategies.plugin import declaration

    entries = _entries(config, grid.strategy)
    swept = entries[grid.strategy]
    known = declaration(swept["path"]).params
    unknown = [p for p in grid.params if p not in known]
    if unknown:
        raise SweepError(f"grid: strategy {swept['path']!r} has no parameter {unknown}; its parameters: {list(known)}")
    setup = _setup_digest(config, entries)
    cells = []
    for rec in recordings:
        for params in grid.combinations():
            mine = [dict(e) for e in entries]
            mine[grid.strategy] = {**swept, "params": {**swept["params"], **params}}
            cells.append(Cell(_key(setup, mine, rec), rec, params, mine, grid.strategy, config, equity_ms, max_rows))
    return cells


# ---------------------------------------------------------------------------------------------------------
# one cell
# ---------------------------------------------------------------------------------------------------------
def _drawdown(pnl: np.ndarray) -> float:
    if len(pnl) == 0:
        return 0.0
    return float(np.max(np.maximum.accumulate(pnl) - pnl))


def _sharpe(ts: np.ndarray, pnl: np.ndarray) -> float:
    """Sharpe ratio of an equity curve sampled at irregular times: the curve as a step function, read every
    second of event time; its changes' mean / standard deviation, annualized."""
    if len(ts) < 2:
        return float("nan")
    grid = np.arange(ts[0], ts[-1] + 1, SHARPE_STEP_NS)
    curve = pnl[np.searchsorted(ts, grid, side="right") - 1]
    d = np.diff(curve)
    sd = float(np.std(d)) if len(d) > 1 else 0.0
    if sd == 0.0:
        return float("nan")
    return float(np.mean(d)) / sd * math.sqrt(SECONDS_PER_YEAR * 1e9 / SHARPE_STEP_NS)


def cell_row(cell: Cell, result: Any) -> dict[str, Any]:
    """A finished cell's row of the results table (:data:`METRICS`) from its BacktestResult."""
    from hean import api as A
    from hean.records import A_NEW, RejectReason

    j = cell.strategy
    orders = result.orders.data[result.orders["strategy"] == j]
    fills = result.fills.data[result.fills["strategy"] == j]
    pos = result.positions.data[result.positions["strategy"] == j]
    eq = result.equity.data[result.equity["strategy"] == j]
    new = orders[orders["action"] == A_NEW]
    rejected = new[new["state"] == A.REJECTED]
    row: dict[str, Any] = {"cell": cell.key, "recording": cell.recording.name}
    row.update({f"param_{k}": v for k, v in cell.params.items()})
    row.update(
        events=int(result.summary["events"]),
        orders=len(new),
        fills=len(fills),
        pnl=float(pos["pnl"].sum()),
        fees=float(pos["fees"].sum()),
        turnover=float(pos["notional"].sum()),
        max_drawdown=_drawdown(eq["pnl"]),
        sharpe=_sharpe(eq["ts"], eq["pnl"]),
        rejects=len(rejected),
    )
    for reason in RejectReason:
        if reason.value:
            row[f"rejects_{reason.name}"] = int((rejected["reason"] == reason.value).sum())
    return row


def _local_copy(rec: Recording, blob: Any) -> str:
    """The recording's native file on this node: its path when visible here, else a copy written once into
    this node's temporary folder from the object store."""
    if os.path.isfile(rec.native):
        return rec.native
    path = Path(tempfile.gettempdir()) / f"hean-sweep-{rec.digest}.hev"
    if not path.is_file():
        import ray

        data = ray.get(blob)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return str(path)


def run_cell(cell: Cell, blob: Any = None) -> dict[str, Any]:
    """Run one cell (in this process); ``{"key", "status": "ok", "row", "wall_s"}`` or, when it raised,
    ``{"key", "status": "failed", "error"}`` -- a failing cell never stops the sweep."""
    import hean

    t0 = time.perf_counter()
    try:
        native = _local_copy(cell.recording, blob)
        result = hean.backtest(
            native, cell.entries, config=cell.config, format="native", equity_ms=cell.equity_ms,
            max_rows=cell.max_rows,
        )  # fmt: skip
        row = cell_row(cell, result)
    except Exception as e:  # reported with the cell; the others go on
        last = traceback.extract_tb(e.__traceback__)[-1:] if e.__traceback__ else []
        where = f" (at {last[0].filename}:{last[0].lineno})" if last else ""
        return {"key": cell.key, "status": "failed", "error": f"{type(e).__name__}: {e}{where}"}
    return {"key": cell.key, "status": "ok", "row": row, "wall_s": time.perf_counter() - t0}


# ---------------------------------------------------------------------------------------------------------
# the sweep
# ---------------------------------------------------------------------------------------------------------
@dataclass
class SweepResult:
    """What :func:`sweep` did: the results table, and the cells that ran, were skipped or failed."""

    table: Any  # pandas.DataFrame: one row per finished cell, in the grid's order
    ran: int = 0
    skipped: int = 0  # finished in an earlier run
    failed: dict[str, str] = field(default_factory=dict)  # cell key -> error
    wall_s: float = 0.0
    cell_s: list[float] = field(default_factory=list)  # each cell's own time (this run's)
    out: Path | None = None
    results_path: Path | None = None


def expand_recordings(recordings: str | Sequence[str]) -> list[str]:
    """A glob pattern (sorted matches) or a list of paths; none found is a SweepError."""
    if isinstance(recordings, str | os.PathLike):
        found = sorted(glob.glob(str(recordings)))
        if not found:
            raise SweepError(f"recordings {recordings!r}: no file matches")
        return found
    paths = [str(p) for p in recordings]
    missing = [p for p in paths if not os.path.isfile(p)]
    if not paths or missing:
        raise SweepError(f"recordings: no such file {missing}" if missing else "recordings: none given")
    return paths


def sweep(
    config: str | os.PathLike | None,
    grid: str | os.PathLike | dict,
    recordings: str | Sequence[str],
    **options: Any,
):
    """``hean.sweep``: :func:`run_sweep` (same arguments), the results as a pandas DataFrame -- one row per
    finished cell in the grid's order -- with what else happened in ``.attrs``: ``ran``, ``skipped`` (finished
    in an earlier run), ``failed`` (cell key -> error), ``wall_s``, ``results_path``."""
    res = run_sweep(config, grid, recordings, **options)
    df = res.table
    df.attrs.update(ran=res.ran, skipped=res.skipped, failed=dict(res.failed), wall_s=res.wall_s,
                    results_path=str(res.results_path) if res.results_path else None)  # fmt: skip
    return df


def run_sweep(
    config: str | os.PathLike | None,
    grid: str | os.PathLike | dict,
    recordings: str | Sequence[str],
    *,
    out: str | os.PathLike | None = None,
    format: str = "",
    local: bool = False,
    address: str | None = None,
    workers: int | None = None,
    equity_ms: int = 1000,
    progress: bool | Callable[[int, int, int], None] = False,
) -> SweepResult:
    """Run the grid over the recordings (see the module docstring); the results as a DataFrame in
    ``.table``. ``config``: the configuration file whose strategies (and risk limits, venue model...) the
    cells run; ``out``: the sweep's folder (None: a temporary one, gone afterwards -- nothing to resume);
    ``local``: in this process, no Ray; ``address``: a Ray cluster to join (default: a local Ray on
    ``workers`` CPUs, all of this machine's by default); ``progress``: a rich progress bar, or a callback
    ``(done, failed, total)``."""
    config = str(Path(config).resolve()) if config else None
    if config and not os.path.isfile(config):
        raise SweepError(f"configuration {config}: no such file")
    g = Grid.load(grid)
    paths = expand_recordings(recordings)
    if not format:
        format = _load(config).feed.format if config else ""
    ray = None if local else _ray()
    with tempfile.TemporaryDirectory(prefix="hean-sweep-") as tmp:
        folder = Path(out) if out is not None else Path(tmp)
        (folder / "cells").mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        recs = convert_recordings(paths, format, folder)
        cells = make_cells(config, g, recs, equity_ms=equity_ms)
        done = {c.key: _finished(folder, c.key) for c in cells}
        todo = [c for c in cells if done[c.key] is None]
        res = SweepResult(None, skipped=len(cells) - len(todo), out=folder if out is not None else None)
        report = _reporter(progress, len(cells), res.skipped)
        outcomes = _run_local(todo, report) if ray is None else _run_ray(ray, todo, report, address, workers)
        for o in outcomes:
            _store(folder, o)
            if o["status"] == "ok":
                done[o["key"]] = o["row"]
                res.ran += 1
                res.cell_s.append(o["wall_s"])
            else:
                res.failed[o["key"]] = o["error"]
        res.wall_s = time.perf_counter() - t0
        res.table = _table([done[c.key] for c in cells if done[c.key] is not None])
        if out is not None:
            res.results_path = _write(folder, res, cells)
    return res


def _ray():
    try:
        import ray
    except ImportError:
        raise SweepError(
            "the sweep runs on Ray, which is not installed: pip install 'hean[sweep]' (or run with --local)"
        ) from None
    return ray


def _finished(folder: Path, key: str) -> dict | None:
    path = folder / "cells" / f"{key}.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())["row"]
    except (OSError, ValueError, KeyError):
        return None  # a torn or foreign file: run the cell again


def _store(folder: Path, outcome: dict) -> None:
    """A cell's outcome, written atomically as it arrives (a stopped sweep keeps what finished)."""
    cells = folder / "cells"
    name = f"{outcome['key']}.json" if outcome["status"] == "ok" else f"{outcome['key']}.failed.json"
    tmp = cells / f".{name}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(outcome, default=float) + "\n")
    os.replace(tmp, cells / name)
    if outcome["status"] == "ok":
        (cells / f"{outcome['key']}.failed.json").unlink(missing_ok=True)


def _reporter(progress: bool | Callable, total: int, skipped: int) -> Callable[[dict | None], None]:
    """What is told as cells finish: a rich progress bar (cells done, failed, time left), a callback, or
    nothing."""
    state = {"done": skipped, "failed": 0}
    if callable(progress):

        def tell(o: dict | None) -> None:
            if o is not None:
                state["failed" if o["status"] != "ok" else "done"] += 1
            progress(state["done"], state["failed"], total)

        return tell
    if not progress:
        return lambda o: None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(
        TextColumn("sweep"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[failed]} failed"),
        TimeRemainingColumn(), transient=False,
    )  # fmt: skip
    bar.start()
    task = bar.add_task("cells", total=total, completed=skipped, failed=0)

    def tell(o: dict | None) -> None:
        if o is None:
            bar.stop()
            return
        state["failed" if o["status"] != "ok" else "done"] += 1
        bar.update(task, advance=1, failed=state["failed"])

    return tell


def _run_local(cells: list[Cell], report: Callable) -> list[dict]:
    outcomes = []
    for c in cells:
        o = run_cell(c)
        outcomes.append(o)
        report(o)
    report(None)
    return outcomes


def _run_ray(ray: Any, cells: list[Cell], report: Callable, address: str | None, workers: int | None) -> list[dict]:
    """The cells as Ray tasks (one CPU each); outcomes as they finish. A worker that dies fails its cell."""
    if not cells:
        report(None)
        return []
    started = not ray.is_initialized()
    if started:
        opts: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        if address:
            ray.init(address=address, **opts)
        else:
            ray.init(num_cpus=workers or os.cpu_count(), object_store_memory=256 << 20, **opts)
    try:
        task = ray.remote(num_cpus=1, max_retries=0)(run_cell)
        blobs: dict[str, Any] = {}
        if address:  # a cluster's nodes may not see this machine's files: ship each recording once
            for c in cells:
                if c.recording.digest not in blobs:
                    blobs[c.recording.digest] = ray.put(Path(c.recording.native).read_bytes())
        pending = {task.remote(c, blobs.get(c.recording.digest)): c for c in cells}
        outcomes = []
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                c = pending.pop(ref)
                try:
                    o = ray.get(ref)
                except Exception as e:  # the worker died (killed, out of memory)
                    o = {"key": c.key, "status": "failed", "error": f"{type(e).__name__}: {str(e).splitlines()[0]}"}
                outcomes.append(o)
                report(o)
        report(None)
        return outcomes
    finally:
        if started:
            ray.shutdown()


def _table(rows: list[dict]):
    import pandas as pd

    return pd.DataFrame(rows)


def _write(folder: Path, res: SweepResult, cells: list[Cell]) -> Path:
    """``results.parquet`` (CSV without pyarrow, said once) and ``summary.txt``; returns the table's path."""
    try:
        import pyarrow  # noqa: F401

        path = folder / "results.parquet"
        res.table.to_parquet(path, index=False)
    except ImportError:
        path = folder / "results.csv"
        res.table.to_csv(path, index=False)
        print("hean sweep: pyarrow is not installed: results.csv instead of Parquet (pip install 'hean[sweep]')",
              file=sys.stderr)  # fmt: skip
    (folder / "summary.txt").write_text(summary_text(res, cells))
    return path


def summary_text(res: SweepResult, cells: list[Cell], top: int = 20) -> str:
    """The cells ranked by PnL (best first), then the failed ones with their errors."""
    lines = [
        f"{len(cells)} cells: {res.ran} ran, {res.skipped} finished before, {len(res.failed)} failed; "
        f"{res.wall_s:.1f} s"
    ]
    t = res.table
    if len(t):
        ranked = t.sort_values(["pnl", "cell"], ascending=[False, True]).head(top)
        params = [c for c in t.columns if c.startswith("param_")]
        cols = ["recording", *params, "pnl", "fills", "max_drawdown", "sharpe", "rejects"]
        lines += ["", f"best {len(ranked)} by PnL:", ranked[cols].to_string(index=False)]
    if res.failed:
        by_key = {c.key: c for c in cells}
        lines += ["", "failed:"]
        for key, err in res.failed.items():
            c = by_key[key]
            lines.append(f"  {c.recording.name} {c.params}: {err}")
    return "\n".join(lines) + "\n"
