"""How HEAN's numba functions are compiled: the one place for the decorators of every numba function.

Every numba function in HEAN is declared with one of four spellings. Each says who calls the function and
whether it is compiled on its own; the table is the whole design:

=================================  ===============  =====================  ======================================
spelling                           Python wrapper   compiled on its own    for
=================================  ===============  =====================  ======================================
``@kernel``                        no (a twin)      yes, once per type     called by compiled code (the default)
``@kernel(forceinline=True)``      no (a twin)      yes, LLVM inlines it   small per-message kernels, and those
                                                                           taking state tuples by value
``@kernel(inline=True)``           no (a twin)      no: numba inlines its  thin functions a loop calls once per
                                                    IR into each caller    message (strategies, stage handlers)
``@entry``                         yes              yes, once per type     loops Python calls on purpose, often
=================================  ===============  =====================  ======================================

Options of all four: ``nrt=True`` for the few functions that allocate (see below), ``error_model="numpy"``
where a division may meet a zero (below).

**Why kernels have no Python wrapper.** By default numba builds, for every function it compiles, a *CPython
wrapper* (unboxing each argument from a Python object) and a C-callable wrapper, even when the function is
only ever called from other compiled code. Most of HEAN's kernels are only called from compiled code -- the
worker loop, the stage kernels under it -- and they take stage state as tuples of dozens of arrays, so each
wrapper unboxes every one of those arrays: building and optimising wrappers that are never run was about a
quarter of a cold start's stage compilation (78 -> 58 s in one process on the development VM).

:func:`kernel` compiles a function for compiled callers only (``no_cpython_wrapper``, ``no_cfunc_wrapper``).
Called from Python (tests, research, the odd set-up call), it does not crash -- numba would jump through a
null wrapper -- but compiles, once, a *twin*: the same Python function compiled with the wrappers, cached
under its own name (``<qualname>.python``) so the two never load each other's cache entries. Compiled code
always calls the kernel itself; the twin exists only in processes that call the kernel from Python. A
Python call passes through one more Python frame (~0.2 us: 449 vs 239 ns for ``hist_record`` on the
development VM); code that calls a kernel per element from Python can call ``kernel.python_twin`` once it
exists, or better, loop in compiled code.

**Why entries.** A function that Python calls on purpose and often -- ``run_loop`` (the worker), the
benchmark loops, the batch indicators, the readers' parsing passes over a whole file, replay drivers like
``drive_states`` -- is the boundary between Python and compiled code: it needs the CPython wrapper, so
:func:`entry` keeps it (numba's own dispatcher, no twin, no extra frame; only the never-used C-callable
wrapper is dropped). Python calls it once per batch, file or run, so the one wrapper it needs is worth
building. An entry may still be called from compiled code: that call is direct.

**Why three inlining variants.** ``forceinline`` is LLVM's ``alwaysinline``: the function is compiled (and
cached) once, and LLVM copies its optimised body into each caller. For functions taking state tuples by
value -- a real call copies every array descriptor of the tuple -- and for small per-message kernels that
LLVM's cost model stops inlining without per-constant copies (below). ``inline=True`` is numba's own
``inline="always"``: the function's *IR* is copied into each caller before typing, so it is never compiled
on its own at all, and its body is typed and lowered with the *caller's* options (``nrt``, ``error_model``:
call it only from ``nrt=False`` code, as every HEAN loop is). For thin functions between a loop and the
kernels it calls (the stages' ``*_on_*`` handlers, strategies, indicator steps, ``tm_add``), each of which
would otherwise be compiled, optimised and turned into machine code with everything it calls, only to be
inlined again. Which of the two a function uses is a speed decision measured on the fused loop: keep it
when moving code.

Defaults for every kernel and entry (all of HEAN's hot code shares them):

* ``cache=True`` -- compiled code on disk (``__pycache__``): a warm start loads instead of compiling. The
  cache does not notice edits to *other* modules a function inlines (``find hean -name '*.nbi' -delete``);
* ``nogil=True`` -- nothing here needs the GIL;
* no reference counting (``_nrt=False``): no kernel allocates, and with it every call would incref and
  decref each array of the state tuples it is passed (~80 ns a call for three arrays, against ~3 ns,
  measured on the indicators). ``nrt=True`` for the few that allocate (the batch indicators' rings);
* ``error_model="python"`` (numba's default) -- except where ``error_model="numpy"`` is asked for: the
  indicators, bars, strategies and the engine's loop divide by values that may be zero (a flat window, a
  bar without volume), and numpy's model gives inf/nan there instead of raising ZeroDivisionError, which
  also removes the divisor check and the exception path from the hot loop.

And one compiled copy per argument *type*: numba compiles a function called from compiled code once per
literal argument value (``ot_apply(ot, slot, EV_SUBMIT)``: one copy per event code, eight in the router),
each typed, optimised and turned into machine code; kernels and entries are compiled for the plain types
instead, and LLVM still folds the constant once it inlines the call. Mark a small per-message kernel
``forceinline``: without its per-constant copies LLVM may no longer inline it on its own (measured: LLVM
stopped inlining the synthetic feed's ``synthetic_next`` and ``_move`` and the venue's ``l2_set_level``, and
the fused loop lost 17 % of its throughput until they were marked).

**Why LLVM's loop vectorizer is off** for every kernel and entry (numba turns it on; ``NUMBA_LOOP_VECTORIZE``
set in the environment still decides). HEAN's hot loops are branchy, per-record and short -- a message's few
events, a ring's few slots -- where the vectorizer adds wide copies of loops that rarely run long enough to
pay, and the worker loop is one function of ~300 KB of machine code whose hot path must stay in the
instruction cache. Measured on the Binance backtest (an interleaved A/B of 10 rounds, every function compiled
afresh): the worker loop 25.3 -> 24.1 ms with it off; the batch indicators (``hean bench indicators``), the
JSON conversion (58.6 / 59.3 ms) and the L2 book (``hean bench book``: 10.0 / 9.4 ns a level) the same
within noise. The setting holds only while HEAN's own functions compile (:meth:`_PerType.compile`, under
numba's compiler lock), with what numba compiles for them on the way (its implementations of numpy
functions they call); a user's ``@njit`` code in the same process keeps numba's default. Code already in
numba's cache keeps what it was compiled with (clear it: ``find hean -name '*.nbi' -delete``).

What stays outside these decorators: numba *intrinsics* (``@intrinsic``: :mod:`hean.atomics`, the
indicators' ``fma``, telemetry's ``f64_bits``), which are code generators rather than compiled functions;
``register_jitable`` (``hean.engine.control.worker_word``), a plain Python function that compiled code may
also call; and the peer benchmark's loop over hftbacktest's jitclass (``hean.bench.book._hbt_loop``), which
needs reference counting and is left uncached (its argument's type belongs to another library).
"""

from __future__ import annotations

import os
import types as _pytypes
from collections.abc import Callable
from typing import Any

from numba import njit
from numba.core import config as numba_config
from numba.core import types
from numba.core.compiler_lock import global_compiler_lock
from numba.core.registry import CPUDispatcher

__all__ = ["Entry", "Kernel", "entry", "kernel"]

_NO_WRAPPERS = {"no_cpython_wrapper": True, "no_cfunc_wrapper": True}
# LLVM's loop vectorizer while HEAN's functions compile (module docstring): off, unless the environment says
LOOP_VECTORIZE = int(os.environ.get("NUMBA_LOOP_VECTORIZE", "0"))


class _PerType(CPUDispatcher):
    """A dispatcher that compiled callers reach once per argument type, never once per literal value."""

    def get_call_template(self, args: tuple, kws: dict) -> tuple:
        """Compile for the arguments' plain types, never their literal values (numba's default for a call from
        compiled code: ``ot_apply(ot, slot, EV_SUBMIT)`` would be compiled once per event code, each copy
        typed, optimised and turned into machine code). Constants still fold after LLVM inlines."""
        args = tuple(types.unliteral(a) for a in args)
        kws = {k: types.unliteral(v) for k, v in kws.items()}
        return super().get_call_template(args, kws)

    def compile(self, sig: Any) -> Any:
        """numba's compile (or load from its cache) with LLVM's loop vectorizer set to :data:`LOOP_VECTORIZE`
        -- for this function and what it compiles on the way (its callees, its final module) -- and numba's
        setting back afterwards. Under numba's compiler lock (re-entrant), so no other compile sees it."""
        with global_compiler_lock:
            before = numba_config.LOOP_VECTORIZE
            numba_config.LOOP_VECTORIZE = LOOP_VECTORIZE
            try:
                return super().compile(sig)
            finally:
                numba_config.LOOP_VECTORIZE = before


class Kernel(_PerType):
    """A numba dispatcher compiled without Python wrappers; Python calls go to a twin that has them."""

    _python_twin: CPUDispatcher | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        twin = self._python_twin
        if twin is None:
            twin = self._python_twin = _make_twin(self)
        return twin(*args, **kwargs)

    @property
    def python_twin(self) -> CPUDispatcher | None:
        """The wrapper-enabled copy Python calls use (None until the first Python call)."""
        return self._python_twin

    @property
    def inlined(self) -> bool:
        """True for ``kernel(inline=True)``: numba inlines its IR into each compiled caller."""
        return self.targetoptions.get("inline") == "always"


class Entry(_PerType):
    """A numba dispatcher that keeps its CPython wrapper: Python calls it directly (see :func:`entry`)."""


def _make_twin(k: Kernel) -> CPUDispatcher:
    f = k.py_func
    g = _pytypes.FunctionType(f.__code__, f.__globals__, f.__name__, f.__defaults__, f.__closure__)
    g.__qualname__ = f.__qualname__ + ".python"  # its own cache index and object files
    g.__module__ = f.__module__
    g.__doc__ = f.__doc__
    g.__kwdefaults__ = f.__kwdefaults__
    opts = {key: v for key, v in k.targetoptions.items() if key not in _NO_WRAPPERS and key != "nopython"}
    return njit(cache=True, **opts)(g)


def _options(nrt: bool, error_model: str | None) -> dict[str, Any]:
    options: dict[str, Any] = {"nopython": True, "nogil": True, "_nrt": nrt}
    if error_model is not None:
        if error_model not in ("python", "numpy"):
            raise ValueError(f"error_model must be 'python' or 'numpy', not {error_model!r}")
        options["error_model"] = error_model
    return options


def _dispatcher(cls: type[_PerType], options: dict[str, Any], fn: Callable | None) -> Any:
    def wrap(f: Callable) -> _PerType:
        d = cls(py_func=f, locals={}, targetoptions=options)
        d.enable_caching()
        return d

    return wrap if fn is None else wrap(fn)


def kernel(
    fn: Callable | None = None,
    *,
    forceinline: bool = False,
    inline: bool = False,
    nrt: bool = False,
    error_model: str | None = None,
) -> Kernel | Callable[[Callable], Kernel]:
    """Compile ``fn`` for compiled callers (see the module docstring). Use bare (``@kernel``) or with options:

    ``forceinline``: LLVM always inlines its compiled body into its callers (for functions taking state
    tuples by value: a real call copies every array descriptor of the tuple; and for small per-message
    kernels). ``inline``: numba inlines its IR into each compiled caller, where it takes the caller's
    options; it is never compiled on its own (except as the twin, for a Python call). The two exclude each
    other. ``error_model="numpy"``: division by zero gives inf/nan instead of raising (no exception path in
    the hot loop); ``nrt``: it allocates.
    """
    if forceinline and inline:
        raise ValueError("kernel: forceinline (LLVM) and inline (numba IR) exclude each other")
    options = {**_options(nrt, error_model), **_NO_WRAPPERS}
    if forceinline:
        options["forceinline"] = True
    if inline:
        options["inline"] = "always"
    return _dispatcher(Kernel, options, fn)


def entry(
    fn: Callable | None = None,
    *,
    nrt: bool = False,
    error_model: str | None = None,
) -> Entry | Callable[[Callable], Entry]:
    """Compile ``fn`` as an entry point that Python calls on purpose and often: it keeps numba's CPython
    wrapper (no twin, no extra Python frame). Use bare (``@entry``) or with ``nrt`` / ``error_model`` as
    for :func:`kernel`. Only numba's C-callable wrapper is left out: nothing in HEAN uses it."""
    options = {**_options(nrt, error_model), "no_cfunc_wrapper": True}
    return _dispatcher(Entry, options, fn)
