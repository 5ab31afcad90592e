"""hean.jit's kernels: compiled for compiled callers only, once per argument type, and still callable from
Python (through a wrapper-enabled twin) without crashing."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit
from numba.core import types

from hean.jit import Kernel, kernel


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
