"""Leftovers of a run whose processes are all gone, made for real: a child process creates a run's segments
and a temp folder, and is killed with SIGKILL before it can remove them (as a crash leaves them)."""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile

_CHILD = r"""
import sys, tempfile
from hean.shm import create_segment
from hean.telemetry.block import create_block
from hean.telemetry.manifest import Manifest, write_manifest
rid = sys.argv[1]
segs = [create_segment(f"hean-{rid}-{s}", 4096) for s in ("ctl", "pos", "tops", "orders-router")]
blk = create_block(rid, "feed", ["service"])
write_manifest(Manifest(run_id=rid, engine_pid=12345678, start_ns=0, start_unix=0.0))
d = tempfile.mkdtemp(prefix=f"hean-{rid}-replay-")
open(d + "/replay.hev", "wb").close()
print("ready", d, flush=True)
sys.stdin.read()
"""

SEGMENTS = ("ctl", "pos", "tops", "orders-router", "tm-feed", "manifest")


def leave_dead_run(run_id: str) -> tuple[list[str], str]:
    """Segment names and the temp folder of a run ``run_id`` whose only process was killed (-9)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, run_id], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        line = proc.stdout.readline().split()
        assert line and line[0] == "ready", line
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    folder = line[1]
    assert folder.startswith(tempfile.gettempdir())
    return [f"hean-{run_id}-{s}" for s in SEGMENTS], folder
