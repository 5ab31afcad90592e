"""hean.jit's kernels: compiled for compiled callers only, once per argument type, and still callable from
Python (through a wrapper-enabled twin) without crashing."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit
from numba.core import config as numba_config
from numba.core import types
from numba.core.registry import CPUDispatcher

import hean.jit
from hean.jit import Entry, Kernel, entry, kernel


@kernel
def _scale(x, k):
    return x * k


@njit  # not cached: each run must type its calls (the kernel itself may come from the cache)
def _scale_three_ways(x):
    return _scale(x, 2) + _scale(x, 3) + _scale(x, np.int64(4))


@kernel(error_model="numpy")
def _ratio(a, b):
    return a / b


@kernel
def _python_only(x):
    return x + 1


@entry
def _total(x):
    t = x[0] * 0
    for i in range(x.shape[0]):
        t += x[i]
    return t


@njit  # a user's function: numba's own settings
def _users_total(x):
    return _total(x) + 1


def _has_symbol(d, sig, name_of) -> bool:
    cres = d.overloads[sig]
    return cres.library.get_pointer_to_function(name_of(cres.fndesc)) != 0


def test_a_compiled_caller_gets_one_copy_per_argument_type_not_per_constant():
    """numba would compile ``_scale`` once per literal (2, 3) plus once for int64; a kernel compiles once."""
    assert _scale_three_ways(5) == 5 * 2 + 5 * 3 + 5 * 4
    assert _scale.signatures == [(types.int64, types.int64)]


def test_a_kernel_has_no_python_wrapper_but_its_native_code():
    _scale_three_ways(1)
    sig = _scale.signatures[0]
    assert _has_symbol(_scale, sig, lambda f: f.llvm_func_name)
    assert not _has_symbol(_scale, sig, lambda f: f.llvm_cpython_wrapper_name)


def test_a_python_call_compiles_a_twin_with_wrappers_under_its_own_name():
    assert isinstance(_python_only, Kernel) and _python_only.python_twin is None
    assert _python_only(41) == 42
    assert _python_only(1.5) == 2.5
    twin = _python_only.python_twin
    assert twin is not None and not isinstance(twin, Kernel)
    assert twin.py_func.__qualname__ == "_python_only.python"  # its own cache index: never the kernel's
    assert twin.py_func.__module__ == _python_only.py_func.__module__
    assert _python_only.signatures == []  # the kernel itself was never compiled by the Python calls
    sig = twin.signatures[0]
    assert _has_symbol(twin, sig, lambda f: f.llvm_cpython_wrapper_name)


@pytest.mark.parametrize(("a", "b", "expected"), [(1.0, 0.0, np.inf), (-1.0, 0.0, -np.inf), (3.0, 2.0, 1.5)])
def test_options_reach_the_twin_too(a, b, expected):
    """error_model="numpy": division by zero is inf, not ZeroDivisionError, from Python as from a loop."""
    assert _ratio(a, b) == expected


# ---------------------------------------------------------------------------------------------------------
# the four spellings, side by side: the same body under each
# ---------------------------------------------------------------------------------------------------------
@kernel
def _v_kernel(x, k):
    return x * k + 1


@kernel(forceinline=True)
def _v_forceinline(x, k):
    return x * k + 2


@kernel(inline=True)
def _v_inline(x, k):
    return x * k + 3


@entry
def _v_entry(x, k):
    return x * k + 4


@njit  # not cached: each run types its calls, so the copies below are this run's
def _call_variants(x):
    """Each variant called with two literal constants and one int64, as the stages call their kernels."""
    return (
        _v_kernel(x, 2) + _v_kernel(x, 3) + _v_kernel(x, np.int64(4)),
        _v_forceinline(x, 2) + _v_forceinline(x, 3) + _v_forceinline(x, np.int64(4)),
        _v_inline(x, 2) + _v_inline(x, 3) + _v_inline(x, np.int64(4)),
        _v_entry(x, 2) + _v_entry(x, 3) + _v_entry(x, np.int64(4)),
    )


# (dispatcher, class, offset, Python wrapper on its compiled copy, compiled on its own, LLVM-inlined always)
VARIANTS = {
    "kernel": (_v_kernel, Kernel, 1, False, True, False),
    "kernel(forceinline=True)": (_v_forceinline, Kernel, 2, False, True, True),
    "kernel(inline=True)": (_v_inline, Kernel, 3, False, False, False),
    "entry": (_v_entry, Entry, 4, True, True, False),
}
INT2 = (types.int64, types.int64)


@pytest.mark.parametrize("name", VARIANTS)
def test_each_variant_computes_the_same_from_compiled_code_and_from_python(name):
    d, cls, off, *_ = VARIANTS[name]
    assert isinstance(d, cls)
    expected = 5 * 2 + 5 * 3 + 5 * 4 + 3 * off
    assert _call_variants(5)[list(VARIANTS).index(name)] == expected
    assert d(5, 2) == 5 * 2 + off


@pytest.mark.parametrize("name", VARIANTS)
def test_each_variant_is_compiled_once_per_type_or_not_at_all(name):
    """Never once per literal (2, 3): one int64 copy -- or none, for numba-IR inlining (Python calls of a
    kernel compile its twin, never the kernel)."""
    d, _, _, _, own_copy, _ = VARIANTS[name]
    _call_variants(5)
    assert d.signatures == ([INT2] if own_copy else [])
    assert not isinstance(d, Kernel) or d.inlined is not own_copy


@pytest.mark.parametrize("name", [n for n, v in VARIANTS.items() if v[4]])
def test_only_an_entry_keeps_its_python_wrapper(name):
    d, _, _, wrapper, *_ = VARIANTS[name]
    _call_variants(5)
    assert _has_symbol(d, INT2, lambda f: f.llvm_cpython_wrapper_name) is wrapper
    assert _has_symbol(d, INT2, lambda f: f.llvm_func_name)


@pytest.mark.parametrize("name", VARIANTS)
def test_python_calls_go_through_a_twin_except_for_an_entry(name):
    d, *_ = VARIANTS[name]
    d(1, 1)
    if isinstance(d, Kernel):
        assert d.python_twin is not None
        assert d.python_twin.py_func.__qualname__ == d.py_func.__qualname__ + ".python"
    else:
        assert not hasattr(d, "python_twin")
        assert d.signatures == [INT2]  # Python ran the entry's own compiled copy


def _function_attributes(d) -> str:
    """The LLVM attributes of ``d``'s int64 copy, from a fresh uncached compile with ``d``'s options (numba
    cannot show the IR of code it loaded from the cache)."""
    fresh = CPUDispatcher(py_func=d.py_func, locals={}, targetoptions=dict(d.targetoptions))
    fresh.compile(INT2)
    ir = fresh.inspect_llvm(INT2).splitlines()
    name = fresh.overloads[INT2].fndesc.llvm_func_name
    (define,) = [line for line in ir if line.startswith("define") and f"@{name}(" in line]
    group = define.rsplit("#", 1)[1].split()[0]
    (attrs,) = [line for line in ir if line.startswith(f"attributes #{group} ")]
    return attrs


@pytest.mark.parametrize("name", VARIANTS)
def test_inlining_is_what_the_spelling_says(name):
    """forceinline: compiled, and marked for LLVM to inline into every caller; inline=True: never compiled,
    numba copies its IR into the caller, which never calls it; the others: LLVM's cost model decides."""
    d, _, _, _, own_copy, forced = VARIANTS[name]
    if own_copy:
        assert ("alwaysinline" in _function_attributes(d)) is forced
    else:
        assert d.targetoptions["inline"] == "always"
        _call_variants(5)
        ir = _call_variants.inspect_llvm(_call_variants.signatures[0])
        assert "_v_inline" not in ir  # not called, not declared: its body is the caller's code
        assert d.signatures == []


@kernel(inline=True, error_model="numpy")
def _reciprocal(x):
    return 1.0 / x


@njit(error_model="numpy")
def _reciprocal_numpy_caller(x):
    return _reciprocal(x)


@njit
def _reciprocal_python_caller(x):
    return _reciprocal(x)


def test_an_ir_inlined_kernel_takes_its_callers_options():
    """Why kernel(inline=True) is called only from code compiled like it: its body is the caller's code."""
    assert _reciprocal_numpy_caller(0.0) == np.inf
    with pytest.raises(ZeroDivisionError):
        _reciprocal_python_caller(0.0)
    assert _reciprocal(0.0) == np.inf  # the twin keeps the kernel's own options


@entry
def _apply_twice(fn, x):
    return fn(fn(x, 2), 2)


def test_an_entry_takes_a_kernel_as_an_argument():
    """The bench harness's way: Python hands a kernel to an entry loop, which calls it compiled."""
    assert _apply_twice(_v_kernel, 3) == (3 * 2 + 1) * 2 + 1
    assert _v_kernel.overloads[INT2] is not None


@entry(nrt=True)
def _allocates(n):
    return np.arange(n).sum()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: kernel(forceinline=True, inline=True), "exclude each other"),
        (lambda: kernel(error_model="c"), "error_model"),
        (lambda: entry(error_model="c"), "error_model"),
    ],
)
def test_contradictory_options_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_nrt_is_off_unless_asked():
    assert _v_kernel.targetoptions["_nrt"] is False and _v_entry.targetoptions["_nrt"] is False
    assert _allocates(4) == 6
    assert all(d.targetoptions["nogil"] for d, *_ in VARIANTS.values())


@pytest.mark.parametrize("env, want", [(None, 0), (1, 1)], ids=["default", "NUMBA_LOOP_VECTORIZE=1"])
def test_hean_compiles_without_the_loop_vectorizer_and_a_users_code_keeps_numbas_setting(monkeypatch, env, want):
    """LLVM's loop vectorizer is off while HEAN's functions compile (what they compile on the way too), unless
    the environment set it; numba's own setting is back afterwards, and a user's ``@njit`` compiles with it."""
    if env is not None:
        monkeypatch.setattr(hean.jit, "LOOP_VECTORIZE", env)
    seen = []
    real = CPUDispatcher.compile
    monkeypatch.setattr(
        CPUDispatcher,
        "compile",
        lambda d, sig: seen.append((d.py_func.__name__, numba_config.LOOP_VECTORIZE)) or real(d, sig),
    )
    before = numba_config.LOOP_VECTORIZE
    dtype = np.int32 if env is None else np.int16  # a signature of its own: each case compiles (or loads)
    assert _users_total(np.arange(5, dtype=dtype)) == 11
    assert numba_config.LOOP_VECTORIZE == before
    assert ("_users_total", before) in seen and ("_total", want) in seen
