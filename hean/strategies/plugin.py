"""Loading a strategy from outside the engine: ``path = "file.py:NAME"`` or ``"package.module:NAME"``.

What happens, once per process and strategy:

1. the module is imported (a file by its path, a module by its name) and ``NAME`` must be a
   :class:`hean.api.Strategy`; its callbacks, parameters and state are checked against the API contract
   (:func:`declaration`), so a broken strategy is one clear message at load, naming its file;
2. a small *wrapper module* is generated into the strategy's cache folder
   (``<cache>/strategies/<name>-<hash>/``, :func:`cache_root`), where ``<hash>`` digests the strategy's source,
   HEAN's and numba's versions and the debug flag. It defines one ``cfunc`` per callback (the C entry points of
   :mod:`hean.strategies.abi`), compiled with ``cache=True``: numba's cache lands next to it, in that folder --
   never in site-packages -- and an edit of the strategy's file makes a new hash, so a new wrapper compiles
   the new code instead of loading the old (numba alone would not notice an edit of the callbacks' file);
3. the callbacks' addresses go into the strategy stage's state. The engine's own kernels are never recompiled
   for a strategy.

Errors from compiling the user's code are cut down to what the user needs: the file and line numba names in the
user's module and the one essential line of numba's message (:class:`StrategyError`); ``--debug`` compiles
with bounds checking, so an index error names the callback instead of corrupting memory.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numba
import numpy as np

from hean.api import MAX_DEPTH, Strategy

__all__ = ["Loaded", "StrategyError", "cache_root", "declaration", "load", "split_path"]

MAX_STATE_BYTES = 4096  # per symbol: state is per-symbol scratch, not a store (a bigger one is refused)
_ARITY = {"on_book": 2, "on_trade": 2, "on_report": 3, "on_timer": 2}
_WRAPPER_VERSION = 1  # bump when the generated text changes meaning
BUILTIN = {  # the shipped strategies, by the names [strategy] name accepts
    "market_maker": "hean.strategies.market_maker:STRATEGY",
    "rsi_macd": "hean.strategies.rsi_macd:STRATEGY",
}


class StrategyError(ValueError):
    """A strategy that cannot be loaded or compiled; the message names the strategy's file and line."""


def cache_root() -> Path:
    """Where compiled strategies live: ``$HEAN_CACHE_DIR``, else ``$XDG_CACHE_HOME/hean``, else
    ``~/.cache/hean``."""
    env = os.environ.get("HEAN_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "hean"


def split_path(spec: str) -> tuple[str, str]:
    """``"file.py:NAME"`` / ``"package.module:NAME"`` -> (where, NAME); a built-in's name gives its path."""
    spec = BUILTIN.get(spec, spec)
    where, sep, name = spec.rpartition(":")
    if not sep or not where or not name.isidentifier():
        raise StrategyError(
            f"strategy path {spec!r}: expected 'file.py:NAME' or 'package.module:NAME' (NAME: the Strategy "
            f"object in that module), or a built-in: {sorted(BUILTIN)}"
        )
    return where, name


@dataclass(frozen=True)
class Declared:
    """A checked declaration: the strategy, where it came from, and the dtypes its context is built with."""

    spec: str
    name: str
    strategy: Strategy
    module: ModuleType
    source: Path
    params: dict[str, float]  # defaults
    params_dtype: np.dtype
    state_dtype: np.dtype


_DECLARED: dict[str, Declared] = {}


def _import(where: str) -> ModuleType:
    if where.endswith(".py") or os.sep in where or "/" in where:
        path = Path(where).expanduser().resolve()
        if not path.is_file():
            raise StrategyError(f"strategy file {where!r}: no such file")
        digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
        modname = f"hean_user_{re.sub(r'[^0-9A-Za-z_]', '_', path.stem)}_{digest}"
        if modname in sys.modules:
            return sys.modules[modname]
        spec = importlib.util.spec_from_file_location(modname, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[modname] = module
        try:
            spec.loader.exec_module(module)
        except Exception as e:
            del sys.modules[modname]
            raise StrategyError(f"strategy file {path}: importing it failed: {_user_frame(e, path)}") from e
        return module
    try:
        return importlib.import_module(where)
    except ImportError as e:
        raise StrategyError(f"strategy module {where!r}: cannot import it ({e})") from e


def _user_frame(e: BaseException, path: Path) -> str:
    """``line N: <exception>`` at the deepest frame of the user's file."""
    line = None
    tb = e.__traceback__
    while tb is not None:
        if Path(tb.tb_frame.f_code.co_filename).resolve() == path:
            line = tb.tb_lineno
        tb = tb.tb_next
    where = f"line {line}: " if line else ""
    return f"{where}{type(e).__name__}: {e}"


def declaration(spec: str) -> Declared:
    """Import and check the strategy ``spec`` (cached per process)."""
    if spec in _DECLARED:
        return _DECLARED[spec]
    where, name = split_path(spec)
    module = _import(where)
    source = Path(getattr(module, "__file__", "") or where).resolve()
    obj = getattr(module, name, None)
    if not isinstance(obj, Strategy):
        found = [k for k, v in vars(module).items() if isinstance(v, Strategy)]
        what = "has no" if obj is None else f"has {name} = {type(obj).__name__}, not a"
        raise StrategyError(
            f"{source}: {what} hean.api.Strategy named {name!r}" + (f"; it has {found}" if found else "")
        )
    params = _params(source, obj)
    decl = Declared(spec, name, obj, module, source, params, _params_dtype(params), _state_dtype(source, obj))
    _check_callbacks(source, obj)
    _DECLARED[spec] = decl
    return decl


def _params(source: Path, s: Strategy) -> dict[str, float]:
    out = {}
    for k, v in dict(s.params).items():
        if not isinstance(k, str) or not k.isidentifier():
            raise StrategyError(f"{source}: parameter name {k!r} is not an identifier")
        if isinstance(v, bool) or not isinstance(v, int | float) or not np.isfinite(v):
            raise StrategyError(f"{source}: parameter {k!r} default must be a finite number, got {v!r}")
        out[k] = float(v)
    return out


def _params_dtype(params: dict[str, float]) -> np.dtype:
    return np.dtype([(k, "<f8") for k in params] or [("_none", "<f8")])


def _state_dtype(source: Path, s: Strategy) -> np.dtype:
    try:
        dt = np.dtype(list(s.state) if not isinstance(s.state, np.dtype) else s.state) if s.state else None
    except (TypeError, ValueError) as e:
        raise StrategyError(f"{source}: state {s.state!r} is not a numpy record dtype: {e}") from None
    if dt is None:
        return np.dtype([("_none", "<i8")])
    if dt.names is None:
        raise StrategyError(f"{source}: state must be a record dtype (named fields), got {dt}")
    for f, (ft, _) in dt.fields.items():
        base = ft.base if ft.subdtype is not None else ft
        if base.hasobject or base.kind in "OUSV":
            raise StrategyError(f"{source}: state field {f!r} has type {ft}: numbers only (no objects/strings)")
    if dt.itemsize > MAX_STATE_BYTES:
        raise StrategyError(
            f"{source}: state is {dt.itemsize} bytes per symbol; at most {MAX_STATE_BYTES} (keep large tables "
            "outside the per-symbol state)"
        )
    return dt


def _check_callbacks(source: Path, s: Strategy) -> None:
    given = [c for c in Strategy.CALLBACKS if getattr(s, c) is not None]
    if not given:
        raise StrategyError(f"{source}: the strategy declares no callback; give at least one of {Strategy.CALLBACKS}")
    for c in given:
        fn = getattr(s, c)
        py = getattr(fn, "py_func", None)
        if py is None:
            where = _where(fn)
            raise StrategyError(
                f"{where}: {c} = {getattr(fn, '__name__', fn)!r} is not compiled: decorate it with @hean.api.callback"
            )
        n = len(inspect.signature(py).parameters)
        if n != _ARITY[c]:
            want = {"on_book": "(ctx, s)", "on_trade": "(ctx, s)", "on_report": "(ctx, s, r)", "on_timer": "(ctx, now)"}
            raise StrategyError(f"{_where(py)}: {c} takes {n} arguments; the API calls it as {py.__name__}{want[c]}")
    for key in ("mode", "tick_source", "bar_source"):
        v = getattr(s, key)
        ok = {"mode": ("tick", "bar"), "tick_source": ("trades", "mid"), "bar_source": ("trades", "mid")}[key]
        if v not in ok:
            raise StrategyError(f"{source}: {key} = {v!r}; one of {ok}")
    if isinstance(s.timer_ms, bool) or not isinstance(s.timer_ms, int) or s.timer_ms < 0:
        raise StrategyError(f"{source}: timer_ms must be an int >= 0 (0: no timer), got {s.timer_ms!r}")
    if s.on_timer is not None and s.timer_ms == 0:
        raise StrategyError(f"{source}: on_timer is given but timer_ms is 0: set its period")
    if isinstance(s.depth, bool) or not isinstance(s.depth, int) or not 0 <= s.depth <= MAX_DEPTH:
        raise StrategyError(f"{source}: depth must be an int in 0 .. {MAX_DEPTH} (levels per side), got {s.depth!r}")


def _where(fn: Any) -> str:
    code = getattr(fn, "__code__", None)
    return f"{code.co_filename}:{code.co_firstlineno}" if code else "<strategy>"


def resolve_params(decl: Declared, overrides: dict | None) -> dict[str, float]:
    """The declared defaults updated with ``overrides``, checked (names, numbers, the strategy's validate)."""
    params = dict(decl.params)
    for key, value in (overrides or {}).items():
        if key not in params:
            raise StrategyError(f"strategy {decl.spec!r} has no parameter {key!r}; known: {list(params)}")
        if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
            raise StrategyError(f"strategy {decl.spec!r} parameter {key!r} must be a number, got {value!r}")
        params[key] = float(value)
    if decl.strategy.validate is not None:
        try:
            decl.strategy.validate(dict(params))
        except ValueError as e:
            raise StrategyError(f"strategy {decl.spec!r}: {e}") from None
    return params


# ---------------------------------------------------------------------------------------------------------
# the wrapper module
# ---------------------------------------------------------------------------------------------------------
_TEMPLATE = """\
\"\"\"Generated by hean.strategies.plugin for {spec!r} ({source}); do not edit.

The C entry points of the strategy's callbacks (hean.strategies.abi), compiled and cached in this folder.
\"\"\"

import numpy as np
from numba import cfunc, njit

from hean.api import Ctx, MAX_ACTIONS, N_INFO, N_META, N_MONEY, N_OF, N_TRADE, ORDERS_CAP, TRADES_KEPT
from hean.indicators.streaming import N_OUT
from hean.records import BOOK_STATE, EXEC_REPORT
from hean.strategies import abi as A
from hean.stages.depth import N_DP
from hean.strategies.plugin import declaration

_D = declaration({spec!r})
{callbacks}
_params = A.array_view(_D.params_dtype, 1)
_state = A.array_view(_D.state_dtype, 1)
_book = A.array_view(BOOK_STATE, 1)
_report = A.array_view(EXEC_REPORT, 1)
_i1 = A.array_view(np.int64, 1)
_i2 = A.array_view(np.int64, 2)
_i3 = A.array_view(np.int64, 3)
_f1 = A.array_view(np.float64, 1)
_f2 = A.array_view(np.float64, 2)


@njit(inline="always", error_model="numpy", _nrt=False)
def _ctx(d):
    desc = _i1(d, (A.N_DESC,))
    n = desc[A.D_N]
    return Ctx(
        _params(desc[A.D_PARAMS], (1,))[0],
        _state(desc[A.D_STATE], (n,)),
        _book(desc[A.D_BOOK], (n,)),
        _i1(desc[A.D_SYMBOLS], (n,)),
        _f2(desc[A.D_IND], (n, N_OUT)),
        _i2(desc[A.D_INFO], (n, N_INFO)),
        _i3(desc[A.D_TRADES], (n, TRADES_KEPT, N_TRADE)),
        _i2(desc[A.D_ORDERS], (ORDERS_CAP, N_OF)),
        _i2(desc[A.D_ACTS], (MAX_ACTIONS, N_OF)),
        _i1(desc[A.D_META], (N_META,)),
        _i1(desc[A.D_POS], (n,)),
        _f2(desc[A.D_MONEY], (n, N_MONEY)),
        _f1(desc[A.D_VALUE], (n,)),
        _i1(desc[A.D_RISK_POS], (desc[A.D_N_ENGINE],)),
        _i1(desc[A.D_RISK_STATE], (desc[A.D_N_ENGINE],)),
        _i3(desc[A.D_DEPTH], (n, N_DP, desc[A.D_DEPTH_N])),
    )
{entries}"""

_ENTRY = {
    "on_book": "_on_book(_ctx(d), s)",
    "on_trade": "_on_trade(_ctx(d), s)",
    "on_report": "_on_report(_ctx(d), s, _report(arg, (1,))[0])",
    "on_timer": "_on_timer(_ctx(d), arg)",
}


def _given(strategy: Strategy) -> list[str]:
    """The callbacks to compile: each given one, but ``on_trade`` not again when it is ``on_book`` (the
    shipped strategies use one function for both; a second cfunc would double the compile)."""
    given = [c for c in Strategy.CALLBACKS if getattr(strategy, c) is not None]
    if strategy.on_trade is not None and strategy.on_trade is strategy.on_book:
        given.remove("on_trade")
    return given


def _wrapper_text(decl: Declared, debug: bool) -> str:
    given = _given(decl.strategy)
    if debug:  # called, not inlined: numba's try/except misses an exception raised inside inlined code
        callbacks = "\n".join(
            f"_{c} = njit(error_model='numpy', _nrt=False, boundscheck=True)(_D.strategy.{c}.py_func)" for c in given
        )
    else:
        callbacks = "\n".join(f"_{c} = _D.strategy.{c}" for c in given)
    entries = ""
    for c in given:
        head = f"\n\n@cfunc(A.SIGNATURE, cache=True, error_model='numpy', _nrt=False, boundscheck={debug})\n"
        if debug:  # an exception (an index out of bounds) faults the strategy instead of being ignored
            body = f"    try:\n        {_ENTRY[c]}\n    except Exception:\n        return 1\n    return 0\n"
        else:
            body = f"    {_ENTRY[c]}\n    return 0\n"
        entries += head + f"def {c}(d, s, arg):\n" + body
    return _TEMPLATE.format(spec=decl.spec, source=decl.source, callbacks=callbacks, entries=entries)


@dataclass(frozen=True)
class Loaded:
    """A strategy ready to run: its declaration and the addresses of its compiled callbacks (0: absent)."""

    decl: Declared
    folder: Path
    addresses: dict[str, int]


_LOADED: dict[tuple[str, bool], Loaded] = {}


def load(spec: str, *, debug: bool = False) -> Loaded:
    """Check, compile (or load from its cache) and link strategy ``spec``; cached per process."""
    key = (spec, debug)
    if key in _LOADED:
        return _LOADED[key]
    decl = declaration(spec)
    text = _wrapper_text(decl, debug)
    h = hashlib.sha1()
    h.update(decl.source.read_bytes())
    h.update(_api_digest())
    h.update(f"{text}|{numba.__version__}|{np.__version__}|{_WRAPPER_VERSION}".encode())
    digest = h.hexdigest()[:16]
    folder = cache_root() / "strategies" / f"{_slug(decl)}-{digest}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "wrapper.py"
    if not path.exists() or path.read_text() != text:
        tmp = folder / f".wrapper.{os.getpid()}.tmp"
        tmp.write_text(text)
        os.replace(tmp, path)
    modname = f"hean_strategy_{digest}"
    if modname in sys.modules:
        module = sys.modules[modname]
    else:
        mspec = importlib.util.spec_from_file_location(modname, path)
        module = importlib.util.module_from_spec(mspec)
        sys.modules[modname] = module
        try:
            mspec.loader.exec_module(module)  # compiles (or loads) every cfunc
        except Exception as e:
            del sys.modules[modname]
            raise StrategyError(_compile_message(decl, _diagnose(decl) or e)) from None
    addresses = {c: (getattr(module, c).address if hasattr(module, c) else 0) for c in Strategy.CALLBACKS}
    if "on_trade" not in _given(decl.strategy) and decl.strategy.on_trade is not None:
        addresses["on_trade"] = addresses["on_book"]  # the same function: one compiled entry
    loaded = Loaded(decl, folder, addresses)
    _LOADED[key] = loaded
    return loaded


_API_FILES = (
    "api.py", "records.py", "strategies/abi.py", "strategies/plugin.py", "indicators/streaming.py", "stages/depth.py",
)  # fmt: skip


def _api_digest() -> bytes:
    """HEAN's side of what a strategy compiles with (the API's helpers inline into it): a change there is a
    new wrapper too."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha1()
    for rel in _API_FILES:
        h.update((root / rel).read_bytes())
    return h.digest()


def _slug(decl: Declared) -> str:
    return re.sub(r"[^0-9A-Za-z_]+", "_", f"{decl.source.stem}_{decl.name}")[:48]


def _sample_ctx(decl: Declared) -> Any:
    """A context of the right types (what the wrapper builds), for compiling a callback on its own."""
    from hean.api import MAX_ACTIONS, N_INFO, N_META, N_MONEY, N_OF, N_TRADE, ORDERS_CAP, TRADES_KEPT, Ctx
    from hean.indicators.streaming import N_OUT
    from hean.records import BOOK_STATE
    from hean.stages.depth import N_DP

    return Ctx(
        np.zeros(1, decl.params_dtype)[0],
        np.zeros(1, decl.state_dtype),
        np.zeros(1, BOOK_STATE),
        np.zeros(1, np.int64),
        np.zeros((1, N_OUT)),
        np.zeros((1, N_INFO), np.int64),
        np.zeros((1, TRADES_KEPT, N_TRADE), np.int64),
        np.zeros((ORDERS_CAP, N_OF), np.int64),
        np.zeros((MAX_ACTIONS, N_OF), np.int64),
        np.zeros(N_META, np.int64),
        np.zeros(1, np.int64),
        np.zeros((1, N_MONEY)),
        np.zeros(1),
        np.zeros(1, np.int64),
        np.zeros(1, np.int64),
        np.zeros((1, N_DP, 1), np.int64),
    )


def _diagnose(decl: Declared) -> BaseException | None:
    """Compile each callback on its own (not inlined into its wrapper): numba then reports a typing error with
    the user's file and line, which an error inside the inlined code may lack. The first error, or None."""
    from hean.records import EXEC_REPORT

    ctx = numba.typeof(_sample_ctx(decl))
    rec = numba.typeof(np.zeros(1, EXEC_REPORT)[0])
    i64 = numba.types.int64
    args = {"on_book": (ctx, i64), "on_trade": (ctx, i64), "on_report": (ctx, i64, rec), "on_timer": (ctx, i64)}
    for c in Strategy.CALLBACKS:
        fn = getattr(decl.strategy, c)
        if fn is None:
            continue
        try:
            fn.compile(args[c])
        except Exception as e:  # numba raises many kinds; the first one is the user's error
            return e
    return None


_NOISE = (
    "Failed in ",
    "During:",
    "File ",
    "^",
    "There are ",
    "- Of which",
    "Overload ",
    "With argument",
    "Rejected as",
    "raised from",
    "No implementation of function",
    "- Resolution failure",
    "Invalid use of",
)


def _compile_message(decl: Declared, e: BaseException) -> str:
    """numba's message cut to the user's file and line (the deepest place it names in the strategy's file,
    with that line of code) and its one essential line."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    line = None
    for ln in lines:
        m = re.search(r'File "([^"]+)", line (\d+)', ln)
        if m and _same_file(m.group(1), decl.source):
            line = int(m.group(2))
    line = line or _user_line(e, decl.source)  # an error numba did not wrap (a KeyError): its frames know
    signature = next((ln[4:] for ln in lines if ln.startswith(">>> ")), "")
    essential = next((ln for ln in lines if not ln.startswith(_NOISE) and not ln.startswith(">>>")), "")
    if signature:
        essential = f"no implementation for {signature}"
    elif type(e).__name__ == "KeyError":
        essential = f"no field {essential} (record fields: the BOOK_STATE / EXEC_REPORT records, the state)"
    elif not essential:
        essential = lines[0] if lines else type(e).__name__
    where = str(decl.source)
    if line:
        code = decl.source.read_text().splitlines()[line - 1].strip()
        where = f"{decl.source}:{line}: {code}"
    return f"strategy {decl.spec!r} does not compile: {where}\n  {essential}"


def _user_line(e: BaseException, source: Path) -> int | None:
    """The line in ``source`` that numba was typing when ``e`` escaped it: the deepest ``loc`` (a numba
    ``ir.Loc``) in the traceback's frames that points into the user's file."""
    line = None
    tb = e.__traceback__
    while tb is not None:
        for v in list(tb.tb_frame.f_locals.values()):
            loc = getattr(v, "loc", None)
            fn, ln = getattr(loc, "filename", None), getattr(loc, "line", None)
            if isinstance(fn, str) and isinstance(ln, int) and _same_file(fn, source):
                line = ln
        tb = tb.tb_next
    return line


def _same_file(named: str, source: Path) -> bool:
    """numba names files relative to the working directory; compare resolved paths."""
    try:
        return Path(named).resolve() == source
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------------------
# a callback that raised (debug: an index out of bounds)
# ---------------------------------------------------------------------------------------------------------
def fault_error(loaded: Loaded, sl: Any) -> StrategyError:
    """The error of a strategy whose callback raised under ``debug``: the compiled code cannot say where, so
    the same call runs again in Python on the same state -- numpy raises the IndexError at the user's line."""
    from hean.stages.strategy import CALLBACK_OF, S_FAULT, S_FAULT_ARG, S_FAULT_S

    decl = loaded.decl
    name = CALLBACK_OF[int(sl.cfg[S_FAULT])]
    head = f"strategy {decl.spec!r}: {name} raised (with debug, bounds are checked) and was stopped"
    try:
        reproduce(loaded, sl, name, int(sl.cfg[S_FAULT_S]), int(sl.cfg[S_FAULT_ARG]))
    except Exception as e:
        line = _user_frame(e, decl.source)
        where = f"{decl.source}:{line[5:].split(':', 1)[0]}" if line.startswith("line ") else str(decl.source)
        return StrategyError(f"{head}: {where}: {type(e).__name__}: {e}")
    return StrategyError(f"{head} (in {decl.source}; it did not raise again when run in Python)")


def reproduce(loaded: Loaded, sl: Any, name: str, s: int, arg: int) -> None:
    """Run callback ``name`` of slot ``sl`` in Python (the callbacks' and helpers' Python functions, over
    numpy views of the slot's arrays)."""
    from hean.api import M_N_ACTS, Ctx
    from hean.stages.strategy import S_DEBUG, slot_arrays

    if sl.cfg[S_DEBUG]:  # back to the state the faulty call started from
        sl.state[:] = sl.snap[: sl.state.shape[0]]
    sl.meta[M_N_ACTS] = 0
    own = slot_arrays(sl, loaded)
    ctx = Ctx(
        own["params"].view(np.recarray)[0],
        own["state"].view(np.recarray),
        sl.book.view(np.recarray),
        sl.symbols,
        sl.ind.out,
        sl.info,
        sl.trades,
        sl.orders,
        sl.acts,
        sl.meta,
        sl.pos,
        sl.money,
        sl.value,
        sl.risk_pos,
        sl.risk_state,
        sl.depth,
    )
    fn = getattr(loaded.decl.strategy, name)
    py = getattr(fn, "py_func", fn)
    with _python_helpers(loaded.decl.module):
        if name == "on_timer":
            py(ctx, arg)
        elif name == "on_report":
            py(ctx, s, sl.report.view(np.recarray)[0])  # the report the faulty call got (kept in debug)
        else:
            py(ctx, s)


class _python_helpers:
    """While reproducing: the module's compiled helpers (its own and hean.api's) replaced by their Python
    functions, so an error inside one is raised at its line too."""

    def __init__(self, module: ModuleType) -> None:
        self.module = module
        self.saved: dict[str, Any] = {}

    def __enter__(self) -> None:
        for k, v in vars(self.module).items():
            if hasattr(v, "py_func"):
                self.saved[k] = v
                setattr(self.module, k, v.py_func)

    def __exit__(self, *exc: Any) -> None:
        for k, v in self.saved.items():
            setattr(self.module, k, v)
