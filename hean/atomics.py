"""Memory-ordering and clock intrinsics for numba code compiled with ``cache=True`` (:mod:`hean.jit`).

Why this module exists: a busy-poll loop such as ``while hdr[W] == r: pass`` compiles, under LLVM, to a
jump to itself -- the load of the peer's cursor is hoisted out of the loop because nothing in the loop can
change it *as far as the compiler knows*. Another process can. Every access to memory shared with another
process must therefore say its ordering, and these intrinsics are the only place HEAN spells them out:

==================  =====================  ============================================================
function            LLVM                   x86-64 code and use
==================  =====================  ============================================================
``load_acquire``    ``load atomic acquire``  plain ``mov``; re-read every iteration. Read a peer's cursor.
``store_release``   ``store atomic release`` plain ``mov``; earlier writes are visible first. Publish.
``load_relaxed``    ``load atomic monotonic`` plain ``mov``; a value someone else writes (counters).
``store_relaxed``   ``store atomic monotonic``plain ``mov``; never elided or sunk out of a loop (counters).
``fence``           ``fence seq_cst``        ``mfence`` (or a locked op); orders a store before a load.
``fence_release``   ``fence release``        no instruction; no earlier access moves below a later store
                                             (a seqlock writer: odd sequence, fence, payload).
``fence_acquire``   ``fence acquire``        no instruction; no later access moves above an earlier load
                                             (a seqlock reader: payload, fence, sequence again).
``cpu_pause``       ``llvm.x86.sse2.pause``  ``pause``: spin hint, frees the sibling hyper-thread.
``prefetch_write``  ``llvm.prefetch`` rw=1   ``prefetchw``: take a line exclusive before writing it.
``prefetch_read``   ``llvm.prefetch`` rw=0   ``prefetcht0``: start a read miss early.
``rdtsc``           ``llvm.readcyclecounter`` ``rdtsc``: ~9 ns per call, *cycles*, not nanoseconds.
``now_ns``          ``clock_gettime``        CLOCK_MONOTONIC through the vDSO, ~20 ns per call.
==================  =====================  ============================================================

Clock source: :func:`now_ns` is ``clock_gettime(CLOCK_MONOTONIC)``. CLOCK_MONOTONIC is a single system-wide
clock, so a stamp taken in one process is directly comparable with a stamp taken in another process on the
same host -- which is what cross-stage latency needs. Measured cost from compiled code on the development VM:
about 20 ns per call (see ``hean bench clock``). The TSC is cheaper but ticks in cycles and, on a VM, the two
vCPUs' TSCs disagree by tens of ns, so HEAN stamps with CLOCK_MONOTONIC.

libc symbols (``clock_gettime``, ``sched_yield``, ``nanosleep``, ``kill``, ``getpid``) are declared inside
the intrinsics rather than called through ctypes: numba refuses to cache a function holding a ctypes pointer
("uses dynamic globals"), and a declared symbol is resolved when the cached object code is loaded.

The numba cache does not notice edits to this module: after changing it, delete ``__pycache__`` folders
(``find hean -name '*.nbi' -delete``) so dependants are recompiled.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time

import llvmlite.binding as _llvm
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from hean.jit import entry, kernel

__all__ = [
    "CLOCK_MONOTONIC",
    "cpu_pause",
    "fence",
    "fence_acquire",
    "eventfd_signal",
    "fence_release",
    "getpid",
    "getppid",
    "load_acquire",
    "load_relaxed",
    "measure_clock_cost_ns",
    "nanosleep",
    "now_ns",
    "pid_alive",
    "prefetch_read",
    "prefetch_write",
    "rdtsc",
    "sched_yield",
    "store_relaxed",
    "store_release",
]

CLOCK_MONOTONIC = 1  # <time.h> on Linux

_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_TIMESPEC = ir.ArrayType(_I64, 2)  # struct timespec { time_t tv_sec; long tv_nsec; } on x86-64 Linux


def _register_libc_symbols() -> None:
    """Make libc's symbols visible to the JIT linker (also for object code loaded from the cache)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    for name in ("clock_gettime", "sched_yield", "nanosleep", "kill", "getpid", "getppid", "write"):
        addr = ctypes.cast(getattr(libc, name), ctypes.c_void_p).value
        _llvm.add_symbol(name, addr)


_register_libc_symbols()


def _is_int64_array(arr: types.Type) -> bool:
    return isinstance(arr, types.Array) and arr.dtype == types.int64 and arr.ndim == 1


def _element_pointer(context, builder, arrty, arr, idxty, idx):
    """Pointer to ``arr[idx]`` (no wraparound: a negative index is a bug in the caller)."""
    ary = context.make_array(arrty)(context, builder, arr)
    i = context.cast(builder, idx, idxty, types.intp)
    return cgutils.get_item_pointer(context, builder, arrty, ary, [i], wraparound=False)


def _libc(builder, name: str, ret: ir.Type, args: list[ir.Type]):
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(ret, args), name)


@intrinsic
def load_acquire(typingctx, arr, idx):
    """``arr[idx]`` with acquire ordering: later reads cannot move before it; never hoisted out of a loop."""
    if not (_is_int64_array(arr) and isinstance(idx, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        ptr = _element_pointer(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        return builder.load_atomic(ptr, "acquire", 8)

    return types.int64(arr, idx), codegen


@intrinsic
def load_relaxed(typingctx, arr, idx):
    """``arr[idx]`` as an atomic (monotonic) load: re-read each time, no ordering with other accesses."""
    if not (_is_int64_array(arr) and isinstance(idx, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        ptr = _element_pointer(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        return builder.load_atomic(ptr, "monotonic", 8)

    return types.int64(arr, idx), codegen


def _store(ordering: str):
    def typer(typingctx, arr, idx, val):
        if not (_is_int64_array(arr) and isinstance(idx, types.Integer) and isinstance(val, types.Integer)):
            return None

        def codegen(context, builder, sig, args):
            ptr = _element_pointer(context, builder, sig.args[0], args[0], sig.args[1], args[1])
            v = context.cast(builder, args[2], sig.args[2], types.int64)
            builder.store_atomic(v, ptr, ordering, 8)
            return context.get_dummy_value()

        return types.void(arr, idx, val), codegen

    return typer


store_release = intrinsic(_store("release"))
store_release.__doc__ = "``arr[idx] = val`` with release ordering: every earlier write is visible first."
store_relaxed = intrinsic(_store("monotonic"))
store_relaxed.__doc__ = "``arr[idx] = val`` as an atomic store: not elided, not sunk out of a loop."


@intrinsic
def fence(typingctx):
    """Full sequentially consistent fence (needed only to order a store before a later load)."""

    def codegen(context, builder, sig, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.void(), codegen


def _fence(ordering: str):
    def typer(typingctx):
        def codegen(context, builder, sig, args):
            builder.fence(ordering)
            return context.get_dummy_value()

        return types.void(), codegen

    return typer


fence_release = intrinsic(_fence("release"))
fence_release.__doc__ = (
    "Release fence: no read or write before it moves past a store after it. On x86-64 no instruction "
    "(TSO already orders stores), only a compiler barrier -- unlike :func:`fence`, which is an ``mfence``."
)
fence_acquire = intrinsic(_fence("acquire"))
fence_acquire.__doc__ = (
    "Acquire fence: no read or write after it moves before a load before it. On x86-64 no instruction, "
    "only a compiler barrier. With :func:`fence_release`, the two halves of a seqlock (:mod:`hean.rings.seqlock`)."
)


@intrinsic
def cpu_pause(typingctx):
    """The x86 ``pause`` spin-wait hint."""

    def codegen(context, builder, sig, args):
        builder.call(_libc(builder, "llvm.x86.sse2.pause", ir.VoidType(), []), [])
        return context.get_dummy_value()

    return types.void(), codegen


def _prefetch(rw: int):
    """``llvm.prefetch(ptr, rw, locality=3, data)``: a hint, never a fault, never an ordering constraint."""

    def typer(typingctx, arr, idx):
        if not (isinstance(arr, types.Array) and arr.ndim == 1 and isinstance(idx, types.Integer)):
            return None

        def codegen(context, builder, sig, args):
            ptr = _element_pointer(context, builder, sig.args[0], args[0], sig.args[1], args[1])
            i8p = ir.IntType(8).as_pointer()
            fn = _libc(builder, "llvm.prefetch.p0i8", ir.VoidType(), [i8p, _I32, _I32, _I32])
            builder.call(
                fn, [builder.bitcast(ptr, i8p), ir.Constant(_I32, rw), ir.Constant(_I32, 3), ir.Constant(_I32, 1)]
            )
            return context.get_dummy_value()

        return types.void(arr, idx), codegen

    return typer


prefetch_write = intrinsic(_prefetch(1))
prefetch_write.__doc__ = (
    "Hint: fetch the line holding ``arr[idx]`` in exclusive state (``prefetchw``), so a later store to it "
    "does not wait for the other core to give the line up. Any 1-D array; an index past the end is harmless."
)
prefetch_read = intrinsic(_prefetch(0))
prefetch_read.__doc__ = "Hint: start fetching the line holding ``arr[idx]`` for reading (``prefetcht0``)."


@intrinsic
def rdtsc(typingctx):
    """The time-stamp counter in cycles (cheap; not comparable across vCPUs to better than tens of ns)."""

    def codegen(context, builder, sig, args):
        return builder.call(_libc(builder, "llvm.readcyclecounter", _I64, []), [])

    return types.int64(), codegen


@intrinsic
def now_ns(typingctx):
    """CLOCK_MONOTONIC in nanoseconds; comparable across processes on one host."""

    def codegen(context, builder, sig, args):
        ts = cgutils.alloca_once(builder, _TIMESPEC)
        fn = _libc(builder, "clock_gettime", _I32, [_I32, _TIMESPEC.as_pointer()])
        builder.call(fn, [ir.Constant(_I32, CLOCK_MONOTONIC), ts])
        zero = ir.Constant(_I32, 0)
        sec = builder.load(builder.gep(ts, [zero, zero]))
        nsec = builder.load(builder.gep(ts, [zero, ir.Constant(_I32, 1)]))
        return builder.add(builder.mul(sec, ir.Constant(_I64, 1_000_000_000)), nsec)

    return types.int64(), codegen


@intrinsic
def sched_yield(typingctx):
    """Give the CPU to another runnable thread (about 0.4 us when nobody else wants it)."""

    def codegen(context, builder, sig, args):
        builder.call(_libc(builder, "sched_yield", _I32, []), [])
        return context.get_dummy_value()

    return types.void(), codegen


@intrinsic
def nanosleep(typingctx, ns):
    """Sleep at least ``ns`` nanoseconds. The kernel's timer slack makes short sleeps 15-80 us in practice."""
    if not isinstance(ns, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        n = context.cast(builder, args[0], sig.args[0], types.int64)
        billion = ir.Constant(_I64, 1_000_000_000)
        ts = cgutils.alloca_once(builder, _TIMESPEC)
        zero = ir.Constant(_I32, 0)
        builder.store(builder.sdiv(n, billion), builder.gep(ts, [zero, zero]))
        builder.store(builder.srem(n, billion), builder.gep(ts, [zero, ir.Constant(_I32, 1)]))
        fn = _libc(builder, "nanosleep", _I32, [_TIMESPEC.as_pointer(), _TIMESPEC.as_pointer()])
        builder.call(fn, [ts, ir.Constant(_TIMESPEC.as_pointer(), None)])
        return context.get_dummy_value()

    return types.void(ns), codegen


@intrinsic
def eventfd_signal(typingctx, fd):
    """Add 1 to the eventfd ``fd`` (``write(fd, &1, 8)``): wakes whoever waits on it (the supervisor's
    ``select``) at once, where polling a word would see it only at its next look. Returns write's result."""
    if not isinstance(fd, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        f = builder.trunc(context.cast(builder, args[0], sig.args[0], types.int64), _I32)
        one = cgutils.alloca_once(builder, _I64)
        builder.store(ir.Constant(_I64, 1), one)
        buf = builder.bitcast(one, ir.IntType(8).as_pointer())
        fn = _libc(builder, "write", _I64, [_I32, ir.IntType(8).as_pointer(), _I64])
        return builder.call(fn, [f, buf, ir.Constant(_I64, 8)])

    return types.int64(fd), codegen


@intrinsic
def getpid(typingctx):
    """This process's pid."""

    def codegen(context, builder, sig, args):
        r = builder.call(_libc(builder, "getpid", _I32, []), [])
        return builder.sext(r, _I64)

    return types.int64(), codegen


@intrinsic
def getppid(typingctx):
    """The parent's pid: it changes (to 1 or a subreaper) the moment the parent dies, so a worker that
    compares it with its supervisor's pid notices the supervisor's death with one syscall."""

    def codegen(context, builder, sig, args):
        r = builder.call(_libc(builder, "getppid", _I32, []), [])
        return builder.sext(r, _I64)

    return types.int64(), codegen


@intrinsic
def _kill0(typingctx, pid):
    if not isinstance(pid, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        p = builder.trunc(context.cast(builder, args[0], sig.args[0], types.int64), _I32)
        r = builder.call(_libc(builder, "kill", _I32, [_I32, _I32]), [p, ir.Constant(_I32, 0)])
        return builder.sext(r, _I64)

    return types.int64(pid), codegen


@kernel
def pid_alive(pid: int) -> bool:
    """True while a process with this pid exists (``kill(pid, 0) == 0``).

    Cheap enough to call every few thousand spins. A zombie (dead but not yet reaped by its parent) still
    counts as alive here; Python-side checks (:func:`hean.rings.peer_alive`) use psutil to see zombies.
    """
    if pid <= 0:
        return False
    return _kill0(pid) == 0


@entry
def _clock_loop(n: int) -> int:
    acc = 0
    for _ in range(n):
        acc += now_ns() & 1
    return acc


@entry
def _tsc_loop(n: int) -> int:
    acc = 0
    for _ in range(n):
        acc += rdtsc() & 1
    return acc


def measure_clock_cost_ns(n: int = 2_000_000) -> dict[str, float]:
    """Measured cost per call, from compiled code, of :func:`now_ns` and :func:`rdtsc` (ns)."""
    out = {}
    for name, fn in (("clock_monotonic", _clock_loop), ("rdtsc", _tsc_loop)):
        fn(1000)
        t0 = time.perf_counter_ns()
        fn(n)
        out[name] = (time.perf_counter_ns() - t0) / n
    return out
