"""An int64 -> int64 open-addressing hash map in two numpy rows, for numba kernels.

Linear probing with backward-shift deletion (no tombstones, so lookups never slow down with churn); the
table size is a power of two and the caller keeps the load factor at or below 1/2. Used where a key space
is too sparse for an array: the L2 book's far-from-the-touch levels (:mod:`hean.stages.book`) and the L3
book's order ids (:mod:`hean.stages.l3book`). ``HM_EMPTY`` marks a free slot: int64's minimum, which is
never a valid price key or order id.
"""

from __future__ import annotations

import numpy as np

from hean.jit import kernel

HM_EMPTY = np.int64(np.iinfo(np.int64).min)


@kernel
def hm_hash(key, mask):
    """Home slot of ``key``: a Fibonacci multiply, folded so the high bits reach the low ones."""
    h = key * np.int64(-7046029254386353131)  # 0x9E3779B97F4A7C15, wrapping
    return (h ^ (h >> 31)) & mask


@kernel
def hm_find(keys, key):
    """Slot of ``key`` in ``keys``, or -1."""
    mask = keys.shape[0] - 1
    i = hm_hash(key, mask)
    while True:
        k = keys[i]
        if k == key:
            return i
        if k == HM_EMPTY:
            return -1
        i = (i + 1) & mask


@kernel
def hm_insert(keys, vals, key, val):
    """Insert ``key`` (known to be absent; the table must have a free slot)."""
    mask = keys.shape[0] - 1
    i = hm_hash(key, mask)
    while keys[i] != HM_EMPTY:
        i = (i + 1) & mask
    keys[i] = key
    vals[i] = val


@kernel
def hm_delete_at(keys, vals, i):
    """Empty slot ``i`` and shift the rest of its probe run back (no tombstones)."""
    mask = keys.shape[0] - 1
    j = i
    while True:
        j = (j + 1) & mask
        k = keys[j]
        if k == HM_EMPTY:
            break
        h = hm_hash(k, mask)
        # move k into the hole at i unless its home h lies cyclically in (i, j]
        if (j > i and (h <= i or h > j)) or (j < i and h <= i and h > j):
            keys[i] = k
            vals[i] = vals[j]
            i = j
    keys[i] = HM_EMPTY
    vals[i] = 0
