"""How HEAN's numba functions are compiled: the one place for the decorator of engine kernels.

Why a decorator of our own: by default numba builds, for every function it compiles, a *CPython wrapper*
(unboxing each argument from a Python object) and a C-callable wrapper, even when the function is only ever
called from other compiled code. Most of HEAN's kernels are only called from compiled code -- the worker
loop, the stage kernels under it -- and they take stage state as tuples of dozens of arrays, so each wrapper
unboxes every one of those arrays: building and optimising wrappers that are never run was about a quarter
of a cold start's stage compilation (78 -> 58 s in one process on the development VM).

:func:`kernel` compiles a function for compiled callers only (``no_cpython_wrapper``, ``no_cfunc_wrapper``).
Called from Python (tests, research, the odd set-up call), it does not crash -- numba would jump through a
null wrapper -- but compiles, once, a *twin*: the same Python function compiled with the wrappers, cached
under its own name (``<qualname>.python``) so the two never load each other's cache entries. Compiled code
always calls the kernel itself; the twin exists only in processes that call the kernel from Python. A
Python call passes through one more Python frame (~0.2 µs: 449 vs 239 ns for ``hist_record`` on the
development VM); code that calls a kernel per element from Python can call ``kernel.python_twin`` once it
exists, or better, loop in compiled code.

Defaults for every kernel (all of HEAN's hot code shares them):

* ``cache=True`` -- compiled code on disk (``__pycache__``): a warm start loads instead of compiling;
* ``nogil=True`` -- nothing here needs the GIL;
* ``_nrt=False`` -- no reference counting: no kernel allocates, and with it every call would incref and
  decref each array of the state tuples it is passed (``nrt=True`` for the few that allocate).

And one compiled copy per argument *type*: numba compiles a function called from compiled code once per
literal argument value (``ot_apply(ot, slot, EV_SUBMIT)``: one copy per event code, eight in the router),
each typed, optimised and turned into machine code; a kernel is compiled for the plain types instead, and
LLVM still folds the constant once it inlines the call. Mark a small per-message kernel ``forceinline``:
without its per-constant copies LLVM may no longer inline it on its own (measured: LLVM stopped inlining
the synthetic feed's ``synthetic_next`` and ``_move`` and the venue's ``l2_set_level``, and the fused loop
lost 17 % of its throughput until they were marked).
"""

from __future__ import annotations

import types as _pytypes
from collections.abc import Callable
from typing import Any

from numba import njit
from numba.core import types
from numba.core.registry import CPUDispatcher

__all__ = ["Kernel", "kernel"]

_NO_WRAPPERS = {"no_cpython_wrapper": True, "no_cfunc_wrapper": True}


class Kernel(CPUDispatcher):
    """A numba dispatcher compiled without Python wrappers; Python calls go to a twin that has them."""

    _python_twin: CPUDispatcher | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        twin = self._python_twin
        if twin is None:
            twin = self._python_twin = _make_twin(self)
        return twin(*args, **kwargs)

    def get_call_template(self, args: tuple, kws: dict) -> tuple:
        """Compile for the arguments' plain types, never their literal values (numba's default for a call from
        compiled code: ``ot_apply(ot, slot, EV_SUBMIT)`` would be compiled once per event code, each copy
        typed, optimised and turned into machine code). Constants still fold after LLVM inlines."""
        args = tuple(types.unliteral(a) for a in args)
        kws = {k: types.unliteral(v) for k, v in kws.items()}
        return super().get_call_template(args, kws)

    @property
    def python_twin(self) -> CPUDispatcher | None:
        """The wrapper-enabled copy Python calls use (None until the first Python call)."""
        return self._python_twin


def _make_twin(k: Kernel) -> CPUDispatcher:
    f = k.py_func
    g = _pytypes.FunctionType(f.__code__, f.__globals__, f.__name__, f.__defaults__, f.__closure__)
    g.__qualname__ = f.__qualname__ + ".python"  # its own cache index and object files
    g.__module__ = f.__module__
    g.__doc__ = f.__doc__
    g.__kwdefaults__ = f.__kwdefaults__
    opts = {key: v for key, v in k.targetoptions.items() if key not in _NO_WRAPPERS and key != "nopython"}
    return njit(cache=True, **opts)(g)


def kernel(
    fn: Callable | None = None,
    *,
    nrt: bool = False,
    forceinline: bool = False,
    error_model: str | None = None,
) -> Kernel | Callable[[Callable], Kernel]:
    """Compile ``fn`` as an engine kernel (see the module docstring). Use bare (``@kernel``) or with options:

    ``forceinline``: LLVM always inlines it into its callers (for functions taking state tuples by value: a
    real call copies every array descriptor of the tuple); ``error_model="numpy"``: division by zero gives
    inf/nan instead of raising (no exception path in the hot loop); ``nrt``: it allocates.
    """
    options: dict[str, Any] = {"nopython": True, "nogil": True, "_nrt": nrt, **_NO_WRAPPERS}
    if forceinline:
        options["forceinline"] = True
    if error_model is not None:
        options["error_model"] = error_model

    def wrap(f: Callable) -> Kernel:
        d = Kernel(py_func=f, locals={}, targetoptions=options)
        d.enable_caching()
        return d

    return wrap if fn is None else wrap(fn)
