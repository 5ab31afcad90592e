"""Sub-commands of the ``hean`` CLI, one module each (see :mod:`hean.cli`)."""
