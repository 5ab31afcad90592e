"""``hean stop|halt|resume [RUN_ID]``: signal a running engine's supervisor.

stop: drain and end the run (SIGTERM, as Ctrl-C would). halt: the kill switch -- risk goes HALTED (only
cancels pass) and every open order is cancelled (SIGUSR1). resume: back to ACTIVE (SIGUSR2).
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
        p.set_defaults(func=run, action=name)


def run(args: argparse.Namespace) -> int:
    from hean.telemetry.manifest import BadRunId, ManifestError, find_run

    try:
        m = find_run(args.run_id)
    except ManifestError as e:
        print(f"hean: {e}", file=sys.stderr)
        return 2 if isinstance(e, BadRunId) else 1
    os.kill(m.engine_pid, _SIGNALS[args.action])
    print(f"hean: sent {args.action} to run {m.run_id} (engine pid {m.engine_pid})")
    return 0
