"""The binary contract between the strategy stage and a strategy's compiled callbacks.

Why a C-level call: the engine's worker loop is one cached numba function. If it called a strategy's
callbacks directly, numba would compile them into the loop -- every edit of a strategy would recompile the
whole loop (~20 s and more on 2 CPUs), and numba, which checks only a function's own file, would keep running
the old strategy from its cache. Instead each callback is wrapped in a ``cfunc`` (compiled, and cached, in
the strategy's own cache folder: :mod:`hean.strategies.plugin`) and the stage calls it through its address,
a plain int64 it reads from its state at run time. The engine's kernels never change when a strategy does.

Every callback wrapper has the C signature ``int64 f(int64 desc, int64 s, int64 arg)``:

* ``desc`` -- the address of the strategy's *descriptor*: an int64 array of the addresses and sizes of
  every array the strategy's context is made of (the ``D_*`` words below). The wrapper rebuilds the context
  (:class:`hean.api.Ctx`) from it with :func:`array_view`: views, no copies, no allocation;
* ``s`` -- the strategy's local index of the symbol (0 .. n-1, the order of its ``symbols``), or -1;
* ``arg`` -- what the callback needs besides: the address of the EXEC_REPORT record for ``on_report``, the
  timer's time (ns) for ``on_timer``, 0 otherwise.

The return value is 0 (reserved for status codes). Addresses are taken once, when the stage is built in the
process that runs it; the arrays they point to live as long as the stage's state.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np.arrayobj import make_array, populate_array
from numba.np.numpy_support import from_dtype

# descriptor words: desc[D_*]
D_N = 0  # symbols of the strategy
D_PARAMS = 1  # address of the params record (the strategy's params dtype, 1 record)
D_STATE = 2  # address of the state records (the strategy's state dtype, n records)
D_BOOK = 3  # BOOK_STATE[n]: the latest book state of each symbol
D_SYMBOLS = 4  # int64[n]: the engine's symbol id of each
D_IND = 5  # float64[n, N_OUT]: the latest indicator outputs (hean.indicators.streaming.OUT_*)
D_INFO = 6  # int64[n, N_INFO]: per-symbol facts (hean.api.I_*)
D_TRADES = 7  # int64[n, TRADES_KEPT, N_TRADE]: the latest trades of each symbol, a ring (hean.api)
D_ORDERS = 8  # int64[ORDERS_CAP, N_OF]: the strategy's orders (hean.api.OF_*)
D_ACTS = 9  # int64[MAX_ACTIONS, N_OF]: the actions the callback takes (rows like ORDERS)
D_META = 10  # int64[N_META]: counters (hean.api.M_*)
D_POS = 11  # int64[n]: the strategy's position per symbol, lots (its own fills)
D_MONEY = 12  # float64[n, N_MONEY]: cash, fees, traded notional per symbol (hean.api.Y_*)
D_VALUE = 13  # float64[n]: quote currency per tick x lot of each symbol
D_RISK_POS = 14  # int64[n_engine_symbols]: the position risk holds per engine symbol (all strategies)
D_N_ENGINE = 15  # the engine's symbols (the length of RISK_POS and RISK_STATE)
D_RISK_STATE = 16  # int64[n_engine_symbols]: the TradingState risk applies to each engine symbol
D_DEPTH = 17  # int64[n, N_DP, D_DEPTH_N]: the top levels of each symbol's book (hean.stages.depth)
D_DEPTH_N = 18  # levels per side kept (the declaration's ``depth``; at least 1 word wide, zeros)
N_DESC = 19

SIGNATURE = types.int64(types.int64, types.int64, types.int64)


@intrinsic
def call_callback(typingctx, fn, desc, s, arg):
    """Call the ``int64(int64, int64, int64)`` C function at address ``fn``: a strategy's callback wrapper."""

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        fnty = ir.FunctionType(i64, [i64, i64, i64])
        ptr = builder.inttoptr(args[0], fnty.as_pointer())
        return builder.call(ptr, list(args[1:]))

    return types.int64(types.int64, types.int64, types.int64, types.int64), codegen


@intrinsic
def record_address(typingctx, rec):
    """The address of a numpy record (a ring slot, an array element): what ``on_report`` gets as ``arg``."""
    if not isinstance(rec, types.Record):
        return None

    def codegen(context, builder, signature, args):
        return builder.ptrtoint(args[0], ir.IntType(64))

    return types.int64(rec), codegen


def array_view(dtype: np.dtype | type, ndim: int):
    """An intrinsic ``view(addr, shape) -> array``: a C-contiguous ``ndim``-d array of ``dtype`` over the
    memory at ``addr`` -- what ``numba.carray`` does, but with no reference count (a NULL meminfo) and as
    inline code rather than a function returning an array, so the callbacks' wrappers compile without
    numba's reference counting (no incref/decref of the context's arrays per call)."""
    elem = from_dtype(np.dtype(dtype))
    aryty = types.Array(elem, ndim, "C")
    itemsize = np.dtype(dtype).itemsize

    @intrinsic
    def view(typingctx, addr, shape):
        if not isinstance(shape, types.UniTuple) or shape.count != ndim:
            return None

        def codegen(context, builder, signature, args):
            addr_v, shape_v = args
            ary = make_array(aryty)(context, builder)
            shapes = cgutils.unpack_tuple(builder, shape_v, ndim)
            stride = context.get_constant(types.intp, itemsize)
            strides = []
            for k in reversed(range(ndim)):
                strides.insert(0, stride)
                stride = builder.mul(stride, shapes[k])
            data = builder.inttoptr(addr_v, ary.data.type)
            populate_array(
                ary, data=data, shape=shapes, strides=strides, itemsize=context.get_constant(types.intp, itemsize),
                meminfo=None,
            )  # fmt: skip
            return ary._getvalue()

        return aryty(types.int64, shape), codegen

    return view
