"""The pipeline's graph and its worker loop, derived from the stage registry.

Two things come from the ordered registry (:mod:`hean.stages.registry`), and nothing else in the engine
names a stage:

* **the edges** (:func:`edges`): each stage's input streams joined to the stages that publish them -- the
  nearest one before it in pipeline order, or for a feedback stream (reports flowing back) the nearest one
  after it; a stream no stage publishes comes from the supervisor. One edge per (stream, consumer), named
  ``<stream>-<consumer>``: the ring's name in /dev/shm, the field of the worker's ``Rings``, and the
  ``age.<edge>`` histogram row of its consumer (``hean top`` pairs the two).
* **the loop's glue** (:func:`loop_module`): a Python module generated from the registry -- the worker's state
  type (``Rings``, ``Worker``), one ``pass_<stage>`` per stage calling its step with its ports, ``step_all``
  (one pass over the owned stages, the source gated by START/STOP_FEED and, in lockstep, by quiescence),
  ``each_owned``, ``views``, the sums over every ring -- followed by the engine's loop
  (:data:`hean.engine.pipeline.LOOP_SOURCE`). Why generated: numba compiles one function for the whole loop
  only if every call in it is static; a loop over a list of stages would not be. The module is written next
  to this file (``_loops/loop_<hash>.py``, readable, regenerated when the registry changes) so numba's
  on-disk cache works for it like for any other module.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from hean.stages.declare import Stage

__all__ = ["Edge", "edges", "loop_module", "sources_stamp", "stage_hists"]

_IDENT = re.compile(r"^[a-z][a-z0-9_]*$")
_LOOPS = Path(__file__).with_name("_loops")
_PACKAGE = Path(__file__).resolve().parents[1]  # hean/


@dataclass(frozen=True)
class Edge:
    """One stream from one stage to one consumer: a ring (shared or private)."""

    key: str  # "<stream>-<consumer>": part of the ring's name
    src: str  # producing stage ("supervisor" for an external stream)
    dst: str  # consuming stage
    dtype: np.dtype
    stream: str

    @property
    def field(self) -> str:
        """The edge's field in the generated ``Rings``."""
        return self.key.replace("-", "_")


def _check(pipeline: tuple[Stage, ...]) -> None:
    names = [s.name for s in pipeline]
    if len(set(names)) != len(names):
        raise ValueError(f"a stage name twice in the pipeline: {names}")
    for s in pipeline:
        if not _IDENT.match(s.name):
            raise ValueError(f"stage name {s.name!r}: lower-case letters, digits and '_'")
    sources = [s.name for s in pipeline if s.source]
    if len(sources) != 1:
        raise ValueError(f"the pipeline needs exactly one source (a stage without inputs), has {sources}")


@functools.lru_cache(maxsize=64)
def edges(pipeline: tuple[Stage, ...]) -> tuple[Edge, ...]:
    """Every edge of the pipeline, in the order of its consumers and their inputs (worked out once per
    pipeline and process: every backtest's build asks for them twice)."""
    _check(pipeline)
    out = []
    for i, stage in enumerate(pipeline):
        for stream in stage.inputs:
            if stream.external:
                src = "supervisor"
            else:
                src = _producer(pipeline, i, stream.name, stream.name in stage.feedback)
            out.append(Edge(f"{stream.name}-{stage.name}", src, stage.name, stream.dtype, stream.name))
    for stage in pipeline:
        for stream in stage.outputs:
            if not any(e.src == stage.name and e.stream == stream.name for e in out):
                raise ValueError(f"stage {stage.name!r} publishes {stream.name!r}, which no stage takes")
    return tuple(out)


def _producer(pipeline: tuple[Stage, ...], i: int, stream: str, feedback: bool) -> str:
    publishes = [j for j, s in enumerate(pipeline) if any(o.name == stream for o in s.outputs)]
    before = [j for j in publishes if j < i]
    if before:
        return pipeline[before[-1]].name
    after = [j for j in publishes if j > i]
    if feedback and after:
        return pipeline[after[0]].name
    what = "stage after it (it is declared feedback)" if feedback else "stage before it"
    raise ValueError(f"stage {pipeline[i].name!r} takes {stream!r}, which no {what} publishes")


def stage_hists(stage: Stage) -> list[str]:
    """The stage's histogram rows, ``age:<stream>`` named by its input edge (``age.<stream>-<stage>``)."""
    return [f"age.{h[4:]}-{stage.name}" if h.startswith("age:") else h for h in stage.hists]


# ---------------------------------------------------------------------------------------------------------
# the generated module
# ---------------------------------------------------------------------------------------------------------
def _ports(fields: list[str]) -> str:
    """A tuple expression of ports (numba needs the trailing comma of a one-tuple)."""
    if not fields:
        return "()"
    return "(" + ", ".join(f"R.{f}" for f in fields) + ("," if len(fields) == 1 else "") + ")"


def _pass(i: int, stage: Stage, all_edges: tuple[Edge, ...]) -> str:
    ins = [next(e.field for e in all_edges if e.dst == stage.name and e.stream == s.name) for s in stage.inputs]
    outs = []
    for s in stage.outputs:
        consumers = [e.field for e in all_edges if e.src == stage.name and e.stream == s.name]
        outs.append(_ports(consumers))
    head = f'@kernel(inline=True, error_model="numpy")\ndef pass_{stage.name}(W, now, flags):\n    R = W.rings\n'
    if stage.batch is not None:  # the one step skeleton of every batch stage (hean.stages.declare)
        return head + (
            f"    src = R.{ins[0]}\n"
            f"    dst = {outs[0]}\n"
            f"    tm = W.tm_{stage.name}\n"
            "    start, n = take(src, dst, tm.counters)\n"
            "    if n:\n"
            "        t0 = stage_clock(flags)\n"
            f"        taken(src, start, n, tm, t0, step_{i}(W.st_{stage.name}, src, dst, start, n, tm, t0))\n"
            "    return n\n"
        )
    outs_expr = "(" + ", ".join(outs) + ("," if len(outs) == 1 else "") + ")" if outs else "()"
    return head + f"    return step_{i}(W.st_{stage.name}, {_ports(ins)}, {outs_expr}, W.tm_{stage.name}, now, flags)\n"


@functools.lru_cache(maxsize=64)
def source(pipeline: tuple[Stage, ...]) -> str:
    """The generated module's text (made once per pipeline and process: a backtest asks twice, a sweep once
    per cell)."""
    from hean.engine.pipeline import LOOP_SOURCE

    all_edges = edges(pipeline)
    # what lockstep counts as in flight: not the control records, nor what a background stage (the journal)
    # has yet to take -- nothing feeds back from it into trading
    background = {s.name for s in pipeline if s.background}
    inner = [e for e in all_edges if e.src != "supervisor" and e.dst not in background]
    L: list[str] = [
        f'"""The worker loop of the pipeline {", ".join(s.name for s in pipeline)}: generated by '
        'hean.engine.loopgen from the stage\nregistry. Do not edit: it is rewritten when the registry changes."""',
        "",
        "from typing import NamedTuple",
        "",
        "import numpy as np",
        "",
        "from hean.atomics import load_relaxed, now_ns, store_relaxed",
        "from hean.engine import control as C",
        "from hean.engine.pipeline import (",
        "    COARSE_CLOCK_EVERY, HEARTBEAT_EVERY, ORPHAN_DRAIN_NS, P_LEAVE_IDLE, P_LOCKSTEP, P_UNTIMED, P_WORKER,",
        "    PASS_BUSY, PASS_BUSY_BATCH, PASS_IDLE, activity, orphaned, others_idle, source_done, source_may_run,",
        "    supervisor_lost, tm_pass, wait_step,",
        ")",
        "from hean.jit import entry, kernel",
        "from hean.stages.declare import F_HALTED, F_LOCKSTEP, F_UNTIMED",
        "from hean.stages.ports import Port, StageTm, empty, stage_clock, take, taken, written",
    ]
    for i, s in enumerate(pipeline):
        L.append(f"from {s.module} import {s.step or s.batch} as step_{i}")
        if s.view:
            L.append(f"from {s.module} import {s.view} as view_{i}")
    L += ["", f"STAGES = {tuple(s.name for s in pipeline)!r}", f"EDGES = {tuple(e.key for e in all_edges)!r}", ""]
    L += ["", "class Rings(NamedTuple):", '    """Every edge of the pipeline (shared, private, or a stand-in)."""', ""]
    L += [f"    {e.field}: Port" for e in all_edges]
    L += ["", "", "class Worker(NamedTuple):", '    """Everything one worker\'s loop runs on."""', ""]
    L += ["    params: np.ndarray", "    ctl: np.ndarray", "    owns: np.ndarray", "    rings: Rings"]
    L += [f"    st_{s.name}: object  # {s.module}" for s in pipeline]
    L += [f"    tm_{s.name}: StageTm" for s in pipeline]
    L += ["", ""]
    for i, s in enumerate(pipeline):
        L += [_pass(i, s, all_edges), ""]
    L += [f"PASSES = ({', '.join(f'pass_{s.name}' for s in pipeline)},)", "", ""]
    L += ['@kernel(forceinline=True, error_model="numpy")', "def writes(R):"]
    L += ['    """Sum of every ring\'s WRITE cursor: changes whenever anything is published anywhere."""']
    L += ["    return " + (" + ".join(f"written(R.{e.field})" for e in inner) or "0"), "", ""]
    L += ['@kernel(forceinline=True, error_model="numpy")', "def all_empty(R):"]
    L += ["    return " + (" and ".join(f"empty(R.{e.field})" for e in inner) or "True"), "", ""]
    L += ['@kernel(forceinline=True, error_model="numpy")', "def each_owned(W, busy, t0, t1, beat):"]
    L += ['    """Loop statistics and heartbeats into the block of every stage this worker runs."""']
    for i, s in enumerate(pipeline):
        L += [f"    if W.owns[{i}]:", f"        tm_pass(W.tm_{s.name}.counters, busy, t0, t1, beat)"]
    L += ["", ""]
    L += ['@kernel(forceinline=True, error_model="numpy")', "def views(W, now):"]
    L += ['    """What the stages this worker runs show observers (risk state, rejects)."""']
    viewing = [(i, s) for i, s in enumerate(pipeline) if s.view]
    for i, s in viewing:
        L += [f"    if W.owns[{i}]:", f"        view_{i}(W.st_{s.name}, W.tm_{s.name}, now)"]
    if not viewing:
        L += ["    return"]
    L += ["", ""]
    L += ['@kernel(inline=True, error_model="numpy")', "def step_all(W, live, now, flags):"]
    L += ['    """One pass over the worker\'s stages in pipeline order: (records handled, source still live)."""']
    L += ["    o = W.owns", "    n = 0"]
    for i, s in enumerate(pipeline):
        if s.source:
            L += [
                f"    if o[{i}] and live:  # the source: from START until STOP_FEED or its end",
                "        go = source_may_run(W.ctl)",
                "        if go < 0:",
                "            live = False",
                "        elif go > 0 and ((flags & F_LOCKSTEP) == 0 or quiescent(W)):",
                f"            r = pass_{s.name}(W, now, flags)",
                "            if r < 0:",
                "                source_done(W.ctl, W.params)",
                "                live = False",
                "            else:",
                "                n += r",
            ]
        else:
            L += [f"    if o[{i}]:", f"        n += pass_{s.name}(W, now, flags)"]
    L += ["    return n, live", ""]
    return "\n".join(L) + LOOP_SOURCE


def loop_module(pipeline: tuple[Stage, ...]) -> ModuleType:
    """The generated loop module of ``pipeline`` (written once, then imported like any module).

    Its name is the hash of the glue; its first line, the stamp of every source file the loop compiles from
    (:func:`sources_stamp`), so an edit of any of them rewrites the file -- and numba, which checks only a
    function's own file, then recompiles the loop instead of loading the old code it inlined.
    """
    body = source(pipeline)
    name = f"loop_{hashlib.sha1(body.encode()).hexdigest()[:12]}"
    qualified = f"hean.engine._loops.{name}"
    if qualified in sys.modules:  # (its compiled code is this process's whatever the sources now say)
        return sys.modules[qualified]
    text = f"# sources {sources_stamp(pipeline)} (hean.engine.loopgen.sources_stamp)\n" + body
    _LOOPS.mkdir(exist_ok=True)
    init = _LOOPS / "__init__.py"
    if not init.exists():
        _write(init, '"""Worker loops generated from stage registries (hean.engine.loopgen); not in git."""\n')
    path = _LOOPS / f"{name}.py"
    if not path.exists() or path.read_text() != text:
        _write(path, text)
    return importlib.import_module(qualified)


def sources_stamp(pipeline: tuple[Stage, ...]) -> str:
    """A digest of the stamps (path, mtime, size: what numba's cache checks) of every module of the hean
    package -- but the shipped strategies, plug-ins the loop calls by address -- and of each stage's own
    module: what the worker loop inlines. The same in every process of a run,
    whatever each has imported (about a millisecond: ~160 stats)."""
    plugins = _plugin_files()
    files = {p for p in _PACKAGE.rglob("*.py") if p.parent != _LOOPS.resolve() and p.resolve() not in plugins}
    for stage in pipeline:
        origin = getattr(importlib.import_module(stage.module), "__file__", None)
        if origin:
            files.add(Path(origin).resolve())
    h = hashlib.sha1()
    for p in sorted(files):
        st = p.stat()
        h.update(f"{p}:{st.st_mtime_ns}:{st.st_size}\n".encode())
    return h.hexdigest()[:16]


def _plugin_files() -> set[Path]:
    """The shipped strategies and the template: plug-ins the loop never compiles in (a strategy is called
    through its C address, hean.strategies.abi), so editing one must not recompile the loop."""
    folder = _PACKAGE / "strategies"
    names = {spec.partition(":")[0].rsplit(".", 1)[-1] for spec in _builtin_specs()} | {"template"}
    return {(folder / f"{n}.py").resolve() for n in names}


def _builtin_specs() -> list[str]:
    from hean.strategies.plugin import BUILTIN

    return list(BUILTIN.values())


def _write(path: Path, text: str) -> None:
    """Atomically (another process may be importing the same file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
