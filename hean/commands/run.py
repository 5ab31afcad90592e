"""``hean run`` and ``hean replay``: start the engine, print (or write) the summary.

``hean run`` uses the configuration's feed (by default the synthetic feed and the simulated venue);
``hean replay FILE --format F`` runs a recording through the same pipeline. :func:`run_engine` is the
process around a run -- the checks before it, the progress line or the live view during it, the summary
after it -- kept here, in the CLI layer, because it prints; the engine below only runs and returns data.
Top-level imports stay light (argparse only).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import IO, TYPE_CHECKING

from hean.feeds import FORMATS

if TYPE_CHECKING:
    from hean.engine.config import Config
    from hean.engine.supervisor import Supervisor


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", metavar="FILE", help="TOML configuration (default: the embedded one)")
    p.add_argument("--duration", type=float, metavar="S", help="seconds to run (0: until the feed ends)")
    p.add_argument("--json", metavar="OUT", help="also write the summary as JSON to OUT ('-' for stdout)")
    p.add_argument(
        "--out",
        metavar="DIR",
        help="write the run's results into DIR (new or empty): summary.json, latency interval logs, the journal, "
        "and the orders, fills, positions, equity and marks tables (see `hean report DIR`)",
    )
    p.add_argument("--lockstep", action="store_true", help="deterministic mode: one message in flight at a time")
    p.add_argument("--top", action="store_true", help="show the live `hean top` view while running")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress line, summary only")
    p.add_argument(
        "--debug",
        action="store_true",
        help="strategies with bounds checking: an index out of range stops the strategy",
    )


def add_parser(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="run the engine (default: synthetic feed, simulated venue)")
    _common(run)
    run.add_argument("--rate", type=float, metavar="R", help="feed messages per second")
    run.add_argument("--fast", action="store_true", help="unpaced feed: as fast as the pipeline takes it")
    run.add_argument("--seed", type=int, help="synthetic feed seed")
    run.set_defaults(func=run_command)

    rep = sub.add_parser("replay", help="replay a recording (or several, merged by receive time) through the pipeline")
    rep.add_argument(
        "file", nargs="+", help="the recording; several are merged by receive time, one symbol's days chain"
    )
    rep.add_argument(
        "--format", "-f", required=True, choices=FORMATS, action="append",
        help="the recordings' format: once for all, or once per recording in order",
    )  # fmt: skip
    rep.add_argument(
        "--instruments", action="append", metavar="FILE",
        help="exact ticks and lots: Binance exchangeInfo, Bybit instruments-info JSON or Databento definitions "
        "(repeatable; [[symbols]] entries win)",
    )  # fmt: skip
    rep.add_argument("--symbol", help="the symbol's name where the recording cannot tell (LOBSTER)")
    from hean.commands.book import add_lenient

    add_lenient(rep)  # --lenient [SHARE]: skip (and count) malformed lines, up to a share of the file
    _common(rep)
    pace = rep.add_mutually_exclusive_group()
    pace.add_argument("--rate", type=float, metavar="R", help="messages per second")
    pace.add_argument("--pace", choices=["recorded"], help="the recording's own inter-arrival times")
    pace.add_argument("--fast", action="store_true", help="unpaced (the default for replay)")
    rep.set_defaults(func=replay_command)


def _overrides(args: argparse.Namespace) -> dict:
    o: dict = {}
    if args.duration is not None:
        o["engine.duration_s"] = args.duration
    if args.lockstep:
        o["engine.lockstep"] = True
    if args.debug:
        o["engine.debug"] = True
    if getattr(args, "rate", None) is not None:
        o["feed.rate"] = args.rate
        o["feed.pace"] = "rate"
    if getattr(args, "fast", False):
        o["feed.pace"] = "fast"
    if getattr(args, "seed", None) is not None:
        o["feed.seed"] = args.seed
    return o


def run_command(args: argparse.Namespace) -> int:
    return _run(args, _overrides(args))


def replay_command(args: argparse.Namespace) -> int:
    o = _overrides(args)
    if len(args.format) not in (1, len(args.file)):
        print(
            f"hean: {len(args.format)} --format for {len(args.file)} recordings: give one, or one each", file=sys.stderr
        )
        return 2
    one = len(args.file) == 1
    o.update({"feed.source": "replay", "feed.path": args.file[0] if one else args.file})
    o["feed.format"] = args.format[0] if len(args.format) == 1 else args.format
    if args.instruments:
        o["feed.instruments"] = args.instruments
    if args.symbol:
        o["feed.symbol"] = args.symbol
    if args.lenient is not False:
        o["feed.lenient"] = args.lenient  # True (the default share) or the share given
    if args.pace == "recorded":
        o["feed.pace"] = "recorded"
    elif args.rate is None:
        o["feed.pace"] = "fast"
    if args.duration is None:
        o["engine.duration_s"] = 0.0
    return _run(args, o)


def _run(args: argparse.Namespace, overrides: dict) -> int:
    from hean.engine.config import ConfigError, load_config

    if args.out:
        from hean.outputs import OutDirError, check_out_dir, journal_dir

        try:
            check_out_dir(args.out)
        except OutDirError as e:
            print(f"hean: {e}", file=sys.stderr)
            return 2
        overrides["journal.dir"] = journal_dir(args.out)
    try:
        cfg = load_config(args.config, overrides)
    except ConfigError as e:
        print(f"hean: configuration error: {e}", file=sys.stderr)
        return 2
    return run_engine(cfg, json_out=args.json, top=args.top, quiet=args.quiet, out=args.out)


# ---------------------------------------------------------------------------------------------------------
# the process around a run
# ---------------------------------------------------------------------------------------------------------
def _progress_line(sup: Supervisor, elapsed: float) -> None:
    sent = sup.messages()
    print(f"\r  {elapsed:6.1f} s  {sent:,} messages", end="", file=sys.stderr, flush=True)


class _CompileBar:
    """While the workers compile (or load) the stages: a rich progress bar, stages ready k of N and the time
    spent; gone once the run starts."""

    def __init__(self) -> None:
        self.bar = None

    def __call__(self, sup: Supervisor, done: int, total: int, elapsed: float) -> None:
        if self.bar is None:
            if done >= total:
                return  # a warm start: nothing to show
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("compiling the stages"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), transient=True)  # fmt: skip
            self.bar.start()
            self.task = self.bar.add_task("stages", total=total)
        self.bar.update(self.task, completed=done)
        if done >= total:
            self.bar.stop()


class _TopThread:
    """``hean run --top``: the live view in a thread (the supervisor keeps the main thread for signals)."""

    def __init__(self) -> None:
        self.thread = None
        self.done = False

    def __call__(self, sup: Supervisor, elapsed: float) -> None:
        if self.thread is None:  # first progress call: the run is started and its manifest written
            import threading

            from hean.commands.views.top import run_top

            self.thread = threading.Thread(
                target=run_top,
                kwargs={"run_id": sup.run_id, "read_keys": False, "stop": lambda: self.done},
                daemon=True,
            )
            self.thread.start()

    def close(self) -> None:
        self.done = True
        if self.thread is not None:
            self.thread.join(timeout=5)


def _check(cfg: Config, json_out: str | None) -> bool:
    """The configuration and the ``--json`` path, before anything starts (a result is never lost to a typo)."""
    from hean.engine.build import check_config
    from hean.engine.config import ConfigError
    from hean.paths import OutputPathError, check_output_path

    try:
        check_config(cfg)
        if json_out and json_out != "-":
            check_output_path(json_out, "--json output")
    except (ConfigError, OutputPathError) as e:
        print(f"hean: configuration error: {e}", file=sys.stderr)
        return False
    return True


def _announce(sup: Supervisor) -> None:
    workers = "; ".join(f"[{w.name}] cpu {w.cpu if w.cpu is not None else '-'} {w.wait}"
                        for w in sup.placement.workers)  # fmt: skip
    print(f"hean: run {sup.run_id}: {len(sup.placement.workers)} worker(s): {workers}", file=sys.stderr)


def print_summary(summary: dict, file: IO[str]) -> None:
    """The run summary drawn with rich (plain text, no colours, when ``file`` is not a terminal)."""
    from rich.console import Console

    from hean.commands.views.summary import summary_view

    Console(file=file, highlight=False).print(summary_view(summary))


def _write_json(summary: dict, json_out: str) -> bool:
    """``--json OUT``: the summary as JSON (``-``: stdout, alone); False when the file cannot be written."""
    import json

    from hean.paths import write_atomically

    text = json.dumps(summary, indent=2, default=int)
    if json_out == "-":
        print(text)
        return True
    try:
        write_atomically(json_out, lambda f: f.write(text + "\n"))
    except OSError as e:
        print(f"hean: cannot write {json_out}: {e}; the summary is printed above", file=sys.stderr)
        return False
    return True


def _write_out(out: str, cfg: Config, result, summary: dict) -> bool:
    """``--out DIR``: the results directory; False (said on stderr) when it could not be written."""
    from hean.journal.format import JournalError
    from hean.outputs import write_outputs

    try:
        files = write_outputs(out, cfg, result, summary)
    except (OSError, ValueError, JournalError) as e:
        print(f"hean: cannot write the results to {out}: {e}", file=sys.stderr)
        return False
    print(f"hean: {len(files)} result files in {out} (hean report {out})", file=sys.stderr)
    return True


def run_engine(
    cfg: Config, json_out: str | None = None, top: bool = False, quiet: bool = False, out: str | None = None
) -> int:
    """Check the configuration, run, print the summary; returns the process exit code.

    Exit codes: 0 ok, 2 configuration or start-up error, 3 a worker failed (the supervisor's), 1 when the
    ``--json`` file could not be written after a good run. With ``--json -`` the JSON alone goes to stdout
    and the text summary to stderr, so ``hean run --json - | jq`` works. ``out``: the results directory
    (:mod:`hean.outputs`; its journal is configured by the caller: ``journal.dir``).
    """
    import time

    from hean.engine.summary import build_summary
    from hean.engine.supervisor import Supervisor
    from hean.records import RejectReason

    if not _check(cfg, json_out):
        return 2
    progress = None if quiet or not sys.stderr.isatty() else _progress_line
    startup = None if progress is None else _CompileBar()
    view = None
    if top:
        progress = view = _TopThread()
        startup = lambda sup, done, total, elapsed: view(sup, elapsed)  # noqa: E731 -- the view from the start
    sup = Supervisor(cfg, progress=progress, startup=startup, intervals=os.path.join(out, "latency") if out else None)
    t0 = time.monotonic()
    if not quiet:
        _announce(sup)
    result = sup.run()
    if view is not None:
        view.close()
    if progress is _progress_line:
        print(file=sys.stderr)
    if result.reason == "start-failed":  # nothing ran: the reason is the whole story
        print(f"hean: {result.error}", file=sys.stderr)
        return result.exit_code
    summary = build_summary(result, [s.name for s in cfg.symbols], {int(r): r.name for r in RejectReason}, sup.cfg)
    summary["wall_s"] = round(time.monotonic() - t0, 3)
    print_summary(summary, sys.stderr if json_out == "-" else sys.stdout)
    if json_out and not _write_json(summary, json_out):
        return result.exit_code or 1
    if out and not _write_out(out, sup.cfg, result, summary):
        return result.exit_code or 1
    if result.error:
        print(f"hean: {result.error}", file=sys.stderr)
    return result.exit_code
