"""``hean config show|init``: the effective configuration, or a commented starter file.

``show`` prints every effective value, the defaults of every stage included: a stage table of the
configuration holds only the keys it sets, so the rest are read from the signatures of the factories the
table feeds (:func:`hean.engine.config.factory_defaults`) -- the same signatures that check its keys, so the
printout cannot drift from what the engine uses. Values the engine derives (a symbol's value per tick and
lot, the router's fees from the venues) are left out. The output loads back as the same configuration.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="show the effective configuration or write a starter file")
    act = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = act.add_parser("show", help="print the effective configuration (defaults filled in) as TOML")
    show.add_argument("--config", "-c", metavar="FILE", help="the file to read (default: the embedded one)")
    init = act.add_parser("init", help="write a commented starter configuration")
    init.add_argument("path", nargs="?", default="hean.toml", help="where to write it (default hean.toml)")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.set_defaults(func=run)


def with_defaults(cfg):
    """``cfg`` with every stage table completed by its factory's defaults (keys it sets win)."""
    import msgspec

    from hean.engine.config import factory_defaults
    from hean.feeds.synthetic import make_synthetic
    from hean.indicators.streaming import IndicatorConfig
    from hean.stages.bars import BarConfig
    from hean.stages.book import book_tables as book_factory
    from hean.stages.risk import make_risk
    from hean.stages.router import make_router
    from hean.stages.venue import make_venue
    from hean.strategies.plugin import declaration, resolve_params

    def fill(defaults: dict, table: dict) -> dict:
        return {**defaults, **table}

    venue = factory_defaults(make_venue, skip=("n_venues", "value_per_tick_lot"))
    return msgspec.structs.replace(
        cfg,
        book=fill(factory_defaults(book_factory), cfg.book),
        risk=fill(factory_defaults(make_risk, skip=("value_per_tick_lot",)), cfg.risk),
        router=fill(factory_defaults(make_router, skip=("maker_fee", "taker_fee")), cfg.router),
        indicators=fill(IndicatorConfig()._asdict(), cfg.indicators),
        bars=fill(BarConfig()._asdict(), cfg.bars),
        venues=[msgspec.structs.replace(v, params=fill(venue, v.params)) for v in cfg.venues],
        feed=msgspec.structs.replace(cfg.feed, synthetic=fill(factory_defaults(make_synthetic), cfg.feed.synthetic)),
        strategy=msgspec.structs.replace(
            cfg.strategy, params=resolve_params(declaration(cfg.strategy.name), dict(cfg.strategy.params))
        ),
        strategies=[
            msgspec.structs.replace(e, params=resolve_params(declaration(e.path), dict(e.params)))
            for e in cfg.strategies
        ],
    )


def run(args: argparse.Namespace) -> int:
    from hean.engine.config import DEFAULT_TOML, ConfigError, dump_toml, load_config

    if args.action == "show":
        try:
            cfg = load_config(args.config)
            from hean.engine.build import check_config

            check_config(cfg)
        except ConfigError as e:
            print(f"hean: configuration error: {e}", file=sys.stderr)
            return 2
        print(dump_toml(with_defaults(cfg)))
        return 0
    return _init(Path(args.path), args.force, DEFAULT_TOML)


def _init(path: Path, force: bool, text: str) -> int:
    """Write the starter file atomically, after checking the place can take it."""
    from hean.paths import output_problem, write_atomically

    if path.exists() and not path.is_dir() and not force:
        print(f"hean: {path} exists; use --force to overwrite it", file=sys.stderr)
        return 1
    problem = output_problem(str(path))
    if problem:
        print(f"hean: cannot write {path}: {problem}", file=sys.stderr)
        return 2
    try:
        write_atomically(str(path), lambda f: f.write(text))
    except OSError as e:
        print(f"hean: cannot write {path}: {e.strerror or e}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0
