"""pytest-benchmark view of what validating a native event file costs (run:
``.venv/bin/pytest benchmarks/test_bench_native.py``).

The shared Binance USD-M recording is converted once (598,754 events, as ``hean convert`` writes it), then
loaded the ways a run loads it, each timed over every record, all in the page cache:

* ``map``: the header checked and the records memory-mapped, not validated (what ``open_native`` did before
  it validated; the pages are touched later, by the replay);
* ``open``: :func:`hean.feeds.native.open_native`, which maps and validates every record;
* ``validate``: :func:`hean.feeds.native.validate_events` alone over the mapped records;
* ``copy``: the feed worker's private copy of the mapped records (``np.array``), the load a replay worker does;
* ``convert``: reading the recording itself (:func:`hean.feeds.load_events`, gunzip and JSON included).

``extra_info["ns_per_record"]`` is the median per record. Nothing asserts a timing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hean.bench.book import DEFAULT_FILE
from hean.feeds import load_events
from hean.feeds.native import _map_unvalidated, open_native, validate_events, write_native

pytestmark = pytest.mark.timeout(600)
GROUP = "native file: load and validation, per record"


@pytest.fixture(scope="module")
def native(tmp_path_factory):
    src = Path(DEFAULT_FILE)
    if not src.exists():
        pytest.fail(f"{src} not found")
    events, report = load_events(src, "binance-usdm")
    path = tmp_path_factory.mktemp("native") / "binance.hev"
    write_native(path, events, report.symbols)
    return src, path, len(events)


def _per_record(benchmark, n: int) -> None:
    benchmark.group = GROUP
    benchmark.extra_info["records"] = n
    benchmark.extra_info["ns_per_record"] = benchmark.stats.stats.median * 1e9 / n


def test_map(benchmark, native):
    _, path, n = native
    benchmark.pedantic(_map_unvalidated, args=(path,), rounds=15, warmup_rounds=2)
    _per_record(benchmark, n)


def test_open(benchmark, native):
    _, path, n = native
    benchmark.pedantic(open_native, args=(path,), rounds=15, warmup_rounds=2)
    _per_record(benchmark, n)


def test_validate(benchmark, native):
    _, path, n = native
    events, symbols = _map_unvalidated(path)
    benchmark.pedantic(validate_events, args=(events, len(symbols), path), rounds=15, warmup_rounds=2)
    _per_record(benchmark, n)


def test_copy(benchmark, native):
    _, path, n = native
    events, _ = _map_unvalidated(path)
    benchmark.pedantic(np.array, args=(events,), rounds=15, warmup_rounds=2)
    _per_record(benchmark, n)


def test_convert(benchmark, native):
    src, _, n = native
    benchmark.pedantic(load_events, args=(src, "binance-usdm"), rounds=3, warmup_rounds=1)
    _per_record(benchmark, n)
