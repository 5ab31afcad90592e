"""HEAN: a single-host, low-latency tick-to-trade trading engine.

Stages are numba busy-poll loops over numpy state, chained by lock-free SPSC rings in ``/dev/shm``.
See README.md for the map of the code.
"""

__version__ = "0.1.0"
