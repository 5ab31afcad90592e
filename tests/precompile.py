"""Compile, in the background of a test session, the numba code that only late tests need.

Why: a cold test session (CI's fresh clone) spends minutes of one CPU compiling the worker loop of the L3
pipeline, which only ``test_l3_engine`` (half-way through the suite) uses, while the suite's other CPU idles
in most tests. ``conftest.pytest_sessionstart`` starts this script in a process of its own; it compiles each
job below into numba's on-disk cache -- the same cache the tests load from -- and marks it done with a file
``<job>.done`` in the folder it is given (``<job>.failed`` with the error: the test then compiles it itself
and shows the real failure). A test that needs a job waits for its mark through the ``precompiled``
fixture, so the two processes never compile the same code side by side.

Run it by hand: ``python tests/precompile.py DIR``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

TESTS = Path(__file__).resolve().parent
LOBSTER = "lobster-AAPL-2012-06-21-message-10.csv"


def _book_l3(data: Path, folder: Path) -> None:
    """``hean book`` on an L3 recording: the order-by-order book's replay kernels (test_book_cli)."""
    from hean.cli import main

    main(["book", str(data / LOBSTER), "--format", "lobster", "--top-csv", str(folder / "top.csv")])


def _loop_l3(data: Path, folder: Path) -> None:
    """The L3 pipeline's worker loop, through a backtest of a LOBSTER recording (test_l3_engine)."""
    import hean

    hean.backtest(str(data / LOBSTER), "market_maker", format="lobster")


def _loop(overrides: dict, pipeline=None) -> None:
    """The worker loop of a configuration's pipeline (the registry's for it, or ``pipeline``), compiled by one
    pass over in-process stages: every placement's workers have this loop's type (test_registry pins it)."""
    from hean.engine.build import build_local
    from hean.engine.config import load_config
    from hean.engine.loopgen import loop_module
    from hean.stages.registry import pipeline_for

    cfg = load_config(None, overrides)
    pipeline = pipeline or pipeline_for(cfg)
    loop_module(pipeline).run_loop(build_local(cfg, pipeline=pipeline), 1)


def _loop_journal(data: Path, folder: Path) -> None:
    """The pipeline with the journal stage (test_faults, test_journal's runs)."""
    _loop({"journal.dir": str(folder / "journal")})


def _loop_toy(data: Path, folder: Path) -> None:
    """The pipeline with the toy stage of toy_stage.py after the book (test_toy_stage)."""
    from toy_stage import TOY

    from hean.stages.registry import PIPELINE

    _loop({}, (*PIPELINE[:2], TOY, *PIPELINE[2:]))


# in the order the suite (alphabetical) needs them: test_book_cli, test_faults, test_l3_engine, test_toy_stage
JOBS = {"book-l3": _book_l3, "loop-journal": _loop_journal, "loop-l3": _loop_l3, "loop-toy": _loop_toy}


def main(folder: Path) -> int:
    sys.path.insert(0, str(TESTS))
    from conftest import DATA_DIR

    for name, job in JOBS.items():
        t0 = time.monotonic()
        try:
            with tempfile.TemporaryDirectory(prefix="hean-precompile-") as tmp:
                job(DATA_DIR, Path(tmp))
        except BaseException:  # reported to the test that waits for it
            (folder / f"{name}.failed").write_text(traceback.format_exc())
            continue
        (folder / f"{name}.done").write_text(f"{time.monotonic() - t0:.1f} s\n")
    return 0


def _idle_only() -> None:
    """Run only on CPU time nothing else wants (SCHED_IDLE; else the lowest priority): the session's own
    tests come first -- a split placement's six busy-polling workers on two CPUs slowed several-fold beside
    a compile at an ordinary priority."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        os.nice(19)


if __name__ == "__main__":
    _idle_only()
    sys.exit(main(Path(sys.argv[1])))
