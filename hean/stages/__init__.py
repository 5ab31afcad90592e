"""The pipeline's stages as numba kernels over numpy state: book (L2, L3, trade stats), bars, strategy,
risk (with positions), router (with the order state machine) and the simulated venue.

The same kernels run in a unit test, in a fused worker and in a pinned process (:mod:`hean.engine`).
"""
