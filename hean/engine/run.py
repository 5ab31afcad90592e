"""Running the engine from the command line: configuration checks, progress output, the summary."""

from __future__ import annotations

import json
import sys
import time

from hean.engine.config import Config, ConfigError


def _progress_line(sup, elapsed: float) -> None:
    from hean.engine import control as C

    sent = int(sup.ctl[C.FEED_SENT]) if sup.ctl is not None else 0
    print(f"\r  {elapsed:6.1f} s  {sent:,} messages", end="", file=sys.stderr, flush=True)


class _TopThread:
    """``hean run --top``: the live view in a thread (the supervisor keeps the main thread for signals)."""

    def __init__(self) -> None:
        self.thread = None
        self.done = False

    def __call__(self, sup, elapsed: float) -> None:
        if self.thread is None:  # first progress call: the run is started and its manifest written
            import threading

            from hean.telemetry.top import run_top

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


def run_engine(cfg: Config, json_out: str | None = None, top: bool = False, quiet: bool = False) -> int:
    """Check the configuration, run, print the summary; returns the process exit code."""
    from hean.engine.build import check_config
    from hean.engine.summary import build_summary, format_summary
    from hean.engine.supervisor import Supervisor
    from hean.paths import OutputPathError, check_output_path, write_atomically
    from hean.stages.risk import RejectReason

    try:
        check_config(cfg)
        if json_out and json_out != "-":
            check_output_path(json_out, "--json output")  # before the run: a result is never lost to a typo
    except (ConfigError, OutputPathError) as e:
        print(f"hean: configuration error: {e}", file=sys.stderr)
        return 2
    progress = None if quiet or not sys.stderr.isatty() else _progress_line
    view = None
    if top:
        progress = view = _TopThread()
    sup = Supervisor(cfg, progress=progress)
    t0 = time.monotonic()
    if not quiet:
        workers = "; ".join(f"[{w.name}] cpu {w.cpu if w.cpu is not None else '-'} {w.wait}"
                            for w in sup.placement.workers)  # fmt: skip
        print(f"hean: run {sup.run_id}: {len(sup.placement.workers)} worker(s): {workers}", file=sys.stderr)
    result = sup.run()
    if view is not None:
        view.close()
    if progress is _progress_line:
        print(file=sys.stderr)
    if result.reason == "start-failed":  # nothing ran: the reason is the whole story
        print(f"hean: {result.error}", file=sys.stderr)
        return result.exit_code
    summary = build_summary(result, [s.name for s in cfg.symbols], {int(r): r.name for r in RejectReason})
    summary["wall_s"] = round(time.monotonic() - t0, 3)
    # with the JSON on stdout, the text summary goes to stderr: `hean run --json - | jq` works
    print(format_summary(summary), file=sys.stderr if json_out == "-" else sys.stdout)
    if json_out:
        text = json.dumps(summary, indent=2, default=int)
        if json_out == "-":
            print(text)
        else:
            try:
                write_atomically(json_out, lambda f: f.write(text + "\n"))
            except OSError as e:
                print(f"hean: cannot write {json_out}: {e}; the summary is printed above", file=sys.stderr)
                return result.exit_code or 1
    if result.error:
        print(f"hean: {result.error}", file=sys.stderr)
    return result.exit_code
