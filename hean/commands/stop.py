"""``hean stop|halt|resume [RUN_ID] [--symbol S]``: control a running engine.

stop: drain and end the run (SIGTERM, as Ctrl-C would). halt: the kill switch -- risk goes HALTED (only
cancels pass) and every open order is cancelled (SIGUSR1). resume: back to ACTIVE (SIGUSR2). With
``--symbol``, halt and resume act on that symbol alone, through the run's request mailbox
(:mod:`hean.engine.requests`), and the supervisor's answer is printed.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

_SIGNALS = {"stop": signal.SIGTERM, "halt": signal.SIGUSR1, "resume": signal.SIGUSR2}
_HELP = {
    "stop": "stop a running engine (drain, summary, clean up)",
    "halt": "kill switch: halt trading and cancel every open order",
    "resume": "resume trading after a halt",
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    for name, text in _HELP.items():
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("run_id", nargs="?", help="the run (default: the only one running)")
        if name != "stop":
            p.add_argument("--symbol", help=f"{name} this symbol only (acknowledged by the engine)")
        p.set_defaults(func=run, action=name)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "symbol", None):
        return request(args.run_id, {"op": args.action, "symbol": args.symbol})
    m = running(args.run_id)
    if isinstance(m, int):
        return m
    os.kill(m.engine_pid, _SIGNALS[args.action])
    print(f"hean: sent {args.action} to run {m.run_id} (engine pid {m.engine_pid})")
    return 0


def running(run_id: str | None):
    """The manifest of the running engine (``run_id``'s, or the only one), or the exit code after saying on
    stderr why there is none: 2 for a malformed run id, 1 otherwise."""
    from hean.telemetry.manifest import BadRunId, ManifestError, find_run

    try:
        return find_run(run_id)
    except ManifestError as e:
        print(f"hean: {e}", file=sys.stderr)
        return 2 if isinstance(e, BadRunId) else 1


def request(run_id: str | None, req: dict) -> int:
    """Leave ``req`` in the run's mailbox and print the engine's answer: 0 applied, 1 refused or no answer
    (2: a malformed run id)."""
    from hean.engine.requests import submit

    m = running(run_id)
    if isinstance(m, int):
        return m
    if not m.requests:
        print(f"hean: run {m.run_id} takes no requests (started by an older HEAN)", file=sys.stderr)
        return 1
    try:
        reply = submit(m.requests, req)
    except (OSError, TimeoutError) as e:
        print(f"hean: run {m.run_id}: {e}", file=sys.stderr)
        return 1
    if not reply.get("ok"):
        print(f"hean: run {m.run_id} refused: {reply.get('error')}", file=sys.stderr)
        return 1
    print(f"hean: run {m.run_id}: {reply['applied']} (applied {reply['utc']})")
    return 0
