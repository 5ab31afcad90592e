"""What a journal says about its run in every segment header: enough to read and export it on its own."""

from __future__ import annotations

import time
from typing import Any

__all__ = ["journal_meta"]


def journal_meta(cfg: Any, run_id: str) -> dict:
    """Run id, HEAN version, the symbols with their exact tick and lot sizes, the strategies, the config."""
    import msgspec

    from hean import __version__
    from hean.stages.strategy import strategy_entries

    return {
        "run_id": run_id,
        "hean_version": __version__,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "symbols": [
            {"name": s.name, "tick_size": str(s.tick_size), "lot_size": str(s.lot_size), "venue": s.venue}
            for s in cfg.symbols
        ],
        "venues": [v.name for v in cfg.venues] or ["sim"],
        "strategies": [e.path for e in strategy_entries(cfg)],
        "config": msgspec.to_builtins(cfg),
    }
