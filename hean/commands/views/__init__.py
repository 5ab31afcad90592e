"""Screens of the ``hean`` CLI, drawn with rich: the run summary and ``hean top``'s live view.

Each view is a pure function from plain data (the summary dict of :func:`hean.engine.summary.build_summary`,
a :class:`hean.telemetry.top.TopFrame`) to a rich renderable, so tests render it into
``Console(record=True)`` and the engine and telemetry layers below never import a terminal library.
"""
