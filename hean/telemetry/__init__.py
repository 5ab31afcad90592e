"""Shared-memory telemetry: latency histograms, per-stage counter blocks, the run manifest and readers.

Every block has exactly one writer (the stage that owns it); ``hean top`` and ``hean bench`` only read, by
copying and diffing. Modules: :mod:`.histogram` (HDR-style log-linear histogram over an int64 array),
:mod:`.block` (the per-stage segment layout and its numba writers), :mod:`.manifest` (how a reader finds
a running engine), :mod:`.reader` (snapshots and interval views), :mod:`.top` (``hean top``'s
sampling of a run into frames; the screen is :mod:`hean.commands.views.top`), :mod:`.hlog` (HdrHistogram
interval logs) and :mod:`.intervals` (a run's histograms as interval logs, one interval per snapshot).
"""
