"""Order latency taken from recorded round trips: the simulated venue's ``latency_file`` model.

A round trip is what a trading session can log for every order it sent: ``req_ts`` (the local clock when
the order left), ``exch_ts`` (the exchange's stamp on it: when the matching engine took it) and ``resp_ts``
(the local clock when its response arrived), all in ns since the epoch, the clock the replay's records use.
From them:

* the **entry latency** of an order sent at local time ``t`` is ``exch_ts - req_ts`` interpolated linearly
  at ``t`` over the rows in ``req_ts`` order;
* the **response latency** of a report made at venue time ``t`` is ``resp_ts - exch_ts`` interpolated at
  ``t`` over the rows in ``exch_ts`` order.

Before the first row and after the last one the end row's latency holds; interpolated values are rounded
toward zero to whole ns. This is the model hftbacktest calls ``IntpOrderLatency`` (its latency files, ``.npz``
with those three fields, load as they are). The venue keeps its queues in time order on top of it: an order
never overtakes one sent before it on the same venue, nor a report one made before it (one session, one
connection), so a recorded latency that drops faster than time passes delays the later message to the
earlier one's time.

Files: ``.csv`` with a header naming ``req_ts,exch_ts,resp_ts`` (other columns are ignored) or ``.npz``/``.npy``
holding a structured array with those fields. Every row must have ``req_ts <= exch_ts <= resp_ts``, and
``req_ts`` must not decrease; an error names the file and the row (the CSV line).
"""

from __future__ import annotations

import os

import numpy as np

from hean.jit import kernel

__all__ = ["FIELDS", "MAX_ROUND_TRIPS", "latency_tables", "load_round_trips", "recorded_latency"]

FIELDS = ("req_ts", "exch_ts", "resp_ts")
MAX_ROUND_TRIPS = 10_000_000  # rows per file: 160 MB of tables per venue at most
MAX_LATENCY_NS = 10**12  # the constant latencies' bound (hean.stages.venue), 1000 s


def _csv_columns(path: str) -> np.ndarray:
    with open(path, encoding="utf-8") as f:
        header = [h.strip() for h in f.readline().split(",")]
        missing = [x for x in FIELDS if x not in header]
        if missing:
            raise ValueError(f"{path}: line 1: the header must name {', '.join(FIELDS)}; missing {', '.join(missing)}")
        cols = [header.index(x) for x in FIELDS]
        rows = []
        for line_no, line in enumerate(f, start=2):
            cells = line.split(",")
            try:
                rows.append([int(cells[c]) for c in cols])
            except (ValueError, IndexError):
                bad = line.strip()
                raise ValueError(f"{path}: line {line_no}: not integer ns in {', '.join(FIELDS)}: {bad!r}") from None
    return np.array(rows, np.int64).reshape(-1, 3)


def _array_columns(path: str) -> np.ndarray:
    loaded = np.load(path, allow_pickle=False)
    arr = loaded[loaded.files[0]] if isinstance(loaded, np.lib.npyio.NpzFile) else loaded
    names = arr.dtype.names or ()
    missing = [x for x in FIELDS if x not in names]
    if missing:
        raise ValueError(f"{path}: a structured array with fields {', '.join(FIELDS)}; missing {', '.join(missing)}")
    return np.stack([np.asarray(arr[x]).astype(np.int64) for x in FIELDS], axis=1).reshape(-1, 3)


def load_round_trips(path: str | os.PathLike) -> np.ndarray:
    """The file's round trips as int64[rows, 3] (req_ts, exch_ts, resp_ts), checked (module docstring)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"latency_file {path!r}: no such file")
    rows = _csv_columns(path) if path.endswith(".csv") else _array_columns(path)
    line0 = 2 if path.endswith(".csv") else 0  # name rows as the user finds them: CSV lines, array indices
    where = "line" if path.endswith(".csv") else "row"
    if not 1 <= len(rows) <= MAX_ROUND_TRIPS:
        raise ValueError(f"{path}: 1..{MAX_ROUND_TRIPS:,} round trips needed, got {len(rows):,}")
    entry, resp = rows[:, 1] - rows[:, 0], rows[:, 2] - rows[:, 1]
    for name, lat in (("exch_ts - req_ts", entry), ("resp_ts - exch_ts", resp)):
        bad = np.flatnonzero((lat < 0) | (lat > MAX_LATENCY_NS))
        if len(bad):
            raise ValueError(f"{path}: {where} {bad[0] + line0}: {name} = {lat[bad[0]]} ns, not in [0, 1e12]")
    back = np.flatnonzero(np.diff(rows[:, 0]) < 0)
    if len(back):
        raise ValueError(f"{path}: {where} {back[0] + 1 + line0}: req_ts goes back in time (rows in send order)")
    return rows


def latency_tables(paths: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One venue's recorded latencies per path ("" = constant latency): (entry, response, rows) where
    ``entry[v, i] = (req_ts, exch_ts - req_ts)`` in req_ts order, ``response[v, i] = (exch_ts,
    resp_ts - exch_ts)`` in exch_ts order and ``rows[v]`` the venue's row count (0: none)."""
    loaded = [load_round_trips(p) if p else np.zeros((0, 3), np.int64) for p in paths]
    k = max(1, max(len(r) for r in loaded))
    entry = np.zeros((len(paths), k, 2), np.int64)
    resp = np.zeros((len(paths), k, 2), np.int64)
    for v, r in enumerate(loaded):
        entry[v, : len(r), 0], entry[v, : len(r), 1] = r[:, 0], r[:, 1] - r[:, 0]
        by_exch = r[np.argsort(r[:, 1], kind="stable")]
        resp[v, : len(r), 0], resp[v, : len(r), 1] = by_exch[:, 1], by_exch[:, 2] - by_exch[:, 1]
    return entry, resp, np.array([len(r) for r in loaded], np.int64)


@kernel
def recorded_latency(tab, n, x):
    """The latency ``tab[:, 1]`` interpolated at ``x`` over ``tab[:n, 0]`` (sorted), held at the ends."""
    if x <= tab[0, 0]:
        return tab[0, 1]
    if x >= tab[n - 1, 0]:
        return tab[n - 1, 1]
    lo, hi = 0, n - 1  # tab[lo, 0] < x < tab[hi, 0]
    while hi - lo > 1:
        mid = (lo + hi) >> 1
        if tab[mid, 0] <= x:
            lo = mid
        else:
            hi = mid
    y0, y1 = tab[lo, 1], tab[hi, 1]
    return np.int64(y0 + (y1 - y0) * ((x - tab[lo, 0]) / (tab[hi, 0] - tab[lo, 0])))
