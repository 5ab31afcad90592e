"""Numbers as the screens show them: latencies with a unit read at a glance, rates in k/M.

One place for both screens (the run summary and ``hean top``), so the same latency reads the same in each.
"""

from __future__ import annotations


def fmt_ns(ns: float | None, missing: str = "-") -> str:
    """850ns, 12.3us, 4.56ms, 1.20s (three significant digits); ``missing`` for a figure that is not there.
    Every screen and bench table shows latencies through this one function."""
    if ns is None:
        return missing
    ns = float(ns)
    if ns < 1_000:
        return f"{ns:.0f}ns"
    if ns < 1_000_000:
        return f"{ns / 1e3:.3g}us" if ns < 100_000 else f"{ns / 1e3:.0f}us"
    if ns < 1_000_000_000:
        return f"{ns / 1e6:.3g}ms" if ns < 100_000_000 else f"{ns / 1e6:.0f}ms"
    return f"{ns / 1e9:.2f}s"


def fmt_rate(r: float) -> str:
    """A per-second rate: 950, 12.3k, 1.25M."""
    if r >= 1e6:
        return f"{r / 1e6:.2f}M"
    if r >= 1e3:
        return f"{r / 1e3:.1f}k"
    return f"{r:.0f}"
