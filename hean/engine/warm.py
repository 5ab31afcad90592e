"""Cold start on every CPU at once: the worker loop's stage code compiled in parallel processes.

Why: the first start compiles every stage kernel (nothing is in numba's cache yet), one function after
another in one process -- over a minute on the 2-vCPU development VM, while the other CPU idles. The loop's
code splits cleanly by stage (the generated loop module's ``PASSES``, :mod:`hean.engine.loopgen`), and
numba's on-disk cache is a meeting point: a process that needs a function another process has already
compiled loads it instead. So
each process walks the stages in its own order -- the worker front to back, a helper on a spare CPU back to
front (``python -m hean.engine.warm``, started by the supervisor) -- taking only stages nobody has claimed
yet (a file per stage in a folder of the run), and they meet in the middle; then the worker waits for the
stages the helper is still on and compiles ``run_loop`` itself, finding every stage in the cache. With every
CPU running a worker, the workers take turns: even ones front to back, odd ones back to front. Workers whose
loops have the same type (every placement's, so far) compile ``run_loop`` once: the first to claim it
compiles, the others wait and load it (:func:`compile_loop`) -- six workers sharing two CPUs would otherwise
compile the same ~17 s function six times over.

How a stage is compiled ahead without running anything: numba *types* the stage's pass (``pass_book(W)``
and friends) for the worker tuple's exact type, which compiles -- or loads from the cache -- every function
it calls, with the argument types ``run_loop`` will use. Nothing is lowered or run for the pass itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time

import numba
from numba.core import compiler, typed_passes, types
from numba.core.registry import cpu_target

__all__ = ["compile_in_process", "compile_loop", "precompile", "stage_order"]


def stage_order(n_stages: int, backwards: bool) -> list[int]:
    """Stage indices front to back (the source first) or back to front."""
    order = list(range(n_stages))
    return order[::-1] if backwards else order


def precompile(loop, W, order: list[int], claims: str | None = None, wait_s: float = 600.0) -> float:
    """Compile (or load from the cache) everything the stages in ``order`` call, for worker tuple ``W``'s
    type (``loop``: the pipeline's generated loop module, hean.engine.loopgen); returns the seconds it took.

    ``claims``: a folder shared by the processes compiling at the same time. Each takes a stage only if no
    other process has claimed it (an exclusively created file holding its pid), so two processes never
    compile the same stage side by side; at the end it waits until every stage claimed by another live
    process is done, so whatever comes next finds all of them in the cache.
    """
    t0 = time.monotonic()
    wt = numba.typeof(W)
    for i in order:
        if claims is not None and not _claim(claims, str(i)):
            continue
        _type_stage(loop, wt, i)
        if claims is not None:
            _done(claims, str(i))
    if claims is not None:
        for i in order:
            _wait_for(claims, str(i), t0 + wait_s)
    return time.monotonic() - t0


def compile_loop(loop, W, claims: str | None = None, wait_s: float = 600.0) -> bool:
    """Compile (or load from the cache) ``run_loop`` for worker tuple ``W`` and run one pass of it (which
    also touches every state page); returns whether this process held the loop's claim (with no claims
    folder: True).

    With ``claims``, one process per loop type compiles: the others wait until it is done (or dead) and load
    it from numba's cache. The claim is named by a hash of the type, so workers whose loops differ in type
    never wait for each other.
    """
    name = _loop_claim_name(W)
    mine = claims is None or _claim(claims, name)
    if not mine:
        _wait_for(claims, name, time.monotonic() + wait_s)
    loop.run_loop(W, 1)
    if mine and claims is not None:
        _done(claims, name)
    return mine


def compile_in_process(loop, W, cfg, pipeline) -> bool:
    """Before an in-process run (:func:`hean.backtest`) calls ``loop.run_loop`` on ``W`` for the first time:
    on a cold cache, compile its stages here front to back while a helper process (``python -m
    hean.engine.warm``, on any other CPU) takes them back to front -- as a run's first worker does -- so the
    first backtest of a new pipeline waits for about half of the stages' compile time. Returns whether it
    started a helper: not when ``run_loop`` is compiled in this process or in numba's cache already, or with
    a single CPU. The helper is killed by its pid and its claims folder removed before this returns."""
    if loop.run_loop.overloads or len(os.sched_getaffinity(0)) < 2 or _loop_cached(loop):
        return False
    import shutil
    import subprocess
    import tempfile

    import msgspec

    from hean.stages.registry import refs

    claims = tempfile.mkdtemp(prefix="hean-compile-")
    spec = {"config": msgspec.to_builtins(cfg), "pipeline": refs(pipeline), "compile_claims": claims,
            "supervisor_pid": os.getpid(), "cpu": None}  # fmt: skip
    helper = subprocess.Popen(
        [sys.executable, "-m", "hean.engine.warm"],
        env={**os.environ, "HEAN_WORKER_SPEC": json.dumps(spec)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        precompile(loop, W, stage_order(len(pipeline), backwards=False), claims)
    finally:
        if helper.poll() is None:
            helper.kill()
        helper.wait()
        shutil.rmtree(claims, ignore_errors=True)
    return True


def _loop_cached(loop) -> bool:
    """Does numba's cache hold an index for the loop module's ``run_loop`` (a warm start: nothing to help)?"""
    try:
        return os.path.exists(loop.run_loop._cache._cache_file._index_path)
    except AttributeError:  # no on-disk cache: compile as usual
        return True


def _type_stage(loop, wt, i: int) -> None:
    fn = loop.PASSES[i].py_func
    args = (wt, types.int64, types.int64)
    func_ir = compiler.run_frontend(fn)
    typed_passes.type_inference_stage(cpu_target.typing_context, cpu_target.target_context, func_ir, args, None)


def _loop_claim_name(W) -> str:
    return "loop-" + hashlib.sha1(str(numba.typeof(W)).encode()).hexdigest()[:16]


def _claim(claims: str, name: str) -> bool:
    """Take ``name`` unless another process has (an exclusively created file holding the claimant's pid)."""
    try:
        fd = os.open(os.path.join(claims, f"{name}.claim"), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return False
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return True


def _done(claims: str, name: str) -> None:
    with open(os.path.join(claims, f"{name}.done"), "w"):
        pass


def _claimant_alive(claims: str, name: str) -> bool:
    """The claimant exists and can make progress: a dead, zombie or stopped (SIGSTOP) claimant is not waited
    for -- whoever needs the stage compiles it."""
    try:
        with open(os.path.join(claims, f"{name}.claim")) as f:
            pid = int(f.read() or 0)
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (OSError, ValueError):
        return False
    state = stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3]
    return pid > 0 and state not in (b"Z", b"T", b"t", b"X")


def _wait_for(claims: str, name: str, deadline: float) -> None:
    """Until ``name`` is done, its claimant is gone (whoever needs it then compiles it), or ``deadline``."""
    while not os.path.exists(os.path.join(claims, f"{name}.done")) and time.monotonic() < deadline:
        if not _claimant_alive(claims, name):
            return
        time.sleep(0.02)


def _die_with_parent(parent: int) -> None:
    """The helper only ever helps: when the supervisor dies, the kernel kills it (PR_SET_PDEATHSIG), and if
    the supervisor died before that was set, it leaves at once."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG = 1, SIGKILL = 9
    except (OSError, AttributeError):
        pass
    if parent and os.getppid() != parent:
        sys.exit(5)


def main() -> int:
    """The compile helper: build the pipeline in this process (private rings, same types) and compile its
    stages back to front. Exits when done; the supervisor kills it if the run ends first."""
    import msgspec

    from hean.engine.build import build_local
    from hean.engine.config import Config
    from hean.engine.loopgen import loop_module
    from hean.stages.registry import PIPELINE, load

    spec = json.loads(os.environ["HEAN_WORKER_SPEC"])
    _die_with_parent(int(spec.get("supervisor_pid", 0)))
    if spec.get("cpu") is not None:
        os.sched_setaffinity(0, {int(spec["cpu"])})
    cfg = msgspec.convert(spec["config"], Config)
    pipeline = load(spec["pipeline"]) if spec.get("pipeline") else PIPELINE
    loop = loop_module(pipeline)
    W = build_local(cfg, pipeline=pipeline)
    precompile(loop, W, stage_order(len(pipeline), backwards=True), spec.get("compile_claims"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
