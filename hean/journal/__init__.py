"""The run journal: every order, report, reject, control and (sampled) top of book a run produced, on disk.

Why a journal: a run that leaves only a printed summary cannot be audited, reconciled or re-plotted. The
journal stage (:mod:`hean.stages.journal`) copies the records that change money or risk into memory-mapped,
append-only, checksummed segment files, in a worker of its own (off the hot path). Stores into a
``MAP_SHARED`` file mapping belong to the kernel's page cache the moment they are made, so a kill -9 of any
process -- the journal's own included -- loses nothing already written.

* :mod:`hean.journal.format` -- the file layout (header, entries, checksum): the one place it is written down;
* :mod:`hean.journal.reader` -- reading segments back, following a live journal, spotting a torn record;
* :mod:`hean.journal.export` -- the orders, fills, positions, equity and marks tables (Parquet or CSV).
"""
