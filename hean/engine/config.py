"""The engine's configuration schema: one TOML file decoded into msgspec structs, validated in one place.

Why msgspec structs with ``forbid_unknown_fields``: a typo in a risk limit must be an error, not a silently
ignored key that leaves the default limit in force. Every error is a :class:`ConfigError` whose message
names the key (``risk.max_order_qty``) and what is wrong with it.

Stage tables (``[book]``, ``[indicators]``, ``[strategy.params]``, ``[risk]``, ``[router]``, venue
parameters) are passed as keyword arguments to the stage's ``make_*`` function; their keys are checked
against that function's signature when the engine builds the stage (:func:`stage_kwargs`), so the schema of
a stage lives next to the stage's code and cannot drift from it.
"""

from __future__ import annotations

import inspect
import os
import re
import tomllib
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

import msgspec

__all__ = [
    "STAGES",
    "Config",
    "ConfigError",
    "DEFAULT_TOML",
    "load_config",
    "dump_toml",
    "stage_kwargs",
]

# The pipeline's stages in data-flow order. Placement fuses only *adjacent* stages.
STAGES: tuple[str, ...] = ("feed", "book", "strategy", "risk", "router", "venue")

Scalar = bool | int | float | str
REPLAY_FORMATS = ("binance-usdm", "binance-spot", "bybit", "lobster", "native")  # hean.feeds.FORMATS


class ConfigError(ValueError):
    """A configuration problem; the message names the key."""


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class EngineSection(_Section):
    run_id: str = ""  # empty: generated as <yyyymmdd-hhmmss>-<pid>
    duration_s: float = 5.0  # 0 = until the feed ends or a stop signal (replay: end of recording)
    # slots per ring; a power of two. Small on purpose: a ring's slots are written once per lap, so a ring
    # much bigger than the cache makes every record a cache miss. Measured on the 2-vCPU VM at 100k
    # messages/s: tick-to-trade p99 2.6 us with 4096 slots, 4.9 us with 16384, 8.3 us with 65536; and 4096
    # also moved the most unpaced (two workers: 5.7M messages/s against 5.0M with 65536).
    ring_capacity: int = 4096
    lockstep: bool = False  # deterministic mode: the feed waits until the pipeline is idle per message
    heartbeat_timeout_ms: int = 2000  # a worker silent this long is declared dead
    ready_timeout_s: float = 600.0  # compile + warm-up budget per worker (a cold first start compiles)
    drain_timeout_s: float = 5.0  # after the feed stops, how long the pipeline may take to drain


class FeedSection(_Section):
    source: Literal["synthetic", "replay"] = "synthetic"
    path: str = ""  # replay: the recording
    format: str = ""  # replay: binance-usdm | binance-spot | bybit | lobster | native
    symbol: str = ""  # replay: the symbol's name where the recording cannot tell (LOBSTER)
    lenient: bool = False  # replay: skip (and count) malformed lines instead of stopping
    pace: Literal["rate", "recorded", "fast"] = "rate"  # replay speed; synthetic: rate or fast
    rate: float = 100_000.0  # messages per second when pace = "rate"
    seed: int = 1  # synthetic feed seed
    max_messages: int = 0  # 0 = no limit
    synthetic: dict[str, Scalar] = {}  # extra keyword arguments of the synthetic generator


class SymbolSection(_Section):
    name: str
    tick_size: str | int | float
    lot_size: str | int | float
    venue: str = "sim"


class VenueSection(_Section):
    name: str = "sim"
    params: dict[str, Scalar] = {}  # keyword arguments of the simulated venue (fees, latency, rejects)


class StrategySection(_Section):
    name: str = "market_maker"  # market_maker | rsi_macd (hean.strategies.REGISTRY)
    mode: str = "bar"  # indicators on bar closes ("bar") or on every sample ("tick")
    tick_source: str = "trades"  # tick mode: "trades" (last trade) or "mid"
    index: int = 0  # written to ORDER.strategy
    params: dict[str, Scalar] = {}  # the strategy's PARAMS


class PlacementSection(_Section):
    workers: list[list[str]] = []  # e.g. [["feed"], ["book", "strategy", "risk", "router", "venue"]]; [] = auto
    cpus: list[int] = []  # CPU per worker, same order; [] = auto from the affinity mask
    reserve_cpus: int = 1  # lowest CPUs left to the supervisor, the OS and `hean top` (auto CPUs only)
    wait: Literal["auto", "spin", "yield", "sleep"] = "auto"  # one for all workers, or see waits
    waits: list[str] = []  # per worker override, same order as workers
    spin_before_yield: int = 2000  # idle polls before a spin-then-yield worker yields
    spin_before_sleep: int = 20000  # idle polls before a spin-then-sleep worker sleeps
    sleep_us: int = 50  # sleep length of spin-then-sleep (really 15-80 us on this kernel)


class Config(_Section):
    engine: EngineSection = msgspec.field(default_factory=EngineSection)
    feed: FeedSection = msgspec.field(default_factory=FeedSection)
    symbols: list[SymbolSection] = []
    venues: list[VenueSection] = []
    book: dict[str, Scalar] = {}
    indicators: dict[str, Scalar] = {}  # hean.indicators.streaming.IndicatorConfig
    bars: dict[str, Scalar] = {}  # hean.stages.bars.BarConfig
    strategy: StrategySection = msgspec.field(default_factory=StrategySection)
    risk: dict[str, Scalar] = {}
    router: dict[str, Scalar] = {}
    placement: PlacementSection = msgspec.field(default_factory=PlacementSection)


DEFAULT_TOML = """\
# HEAN engine configuration. `hean config show` prints the effective values; every key is optional.

[engine]
duration_s = 5.0            # seconds to run (0: until the feed ends or SIGINT/SIGTERM/`hean stop`)
ring_capacity = 4096        # slots per SPSC ring (a power of two >= 256; small rings stay in cache)
lockstep = false            # true: deterministic (the feed waits for the pipeline to go idle)
heartbeat_timeout_ms = 2000 # a worker silent for this long is declared dead and trading halts

[feed]
source = "synthetic"        # synthetic | replay
pace = "rate"               # rate | recorded (replay only) | fast
rate = 100000               # messages per second when pace = "rate"
seed = 1                    # synthetic feed seed (same seed, same market)

[[symbols]]
name = "SYN-A"
tick_size = "0.01"
lot_size = "0.001"
venue = "sim"

[[symbols]]
name = "SYN-B"
tick_size = "0.5"
lot_size = "1"
venue = "sim"

[[venues]]
name = "sim"

[strategy]
name = "market_maker"       # market_maker | rsi_macd

[placement]
wait = "auto"               # auto | spin | yield | sleep
reserve_cpus = 1            # the lowest CPU(s) stay free for the OS, the supervisor and `hean top`
# workers = [["feed"], ["book", "strategy", "risk", "router", "venue"]]
# cpus = [0, 1]
"""


def _key_of(msg: str) -> str:
    m = re.search(r"at `\$(.*)`", msg)
    if not m:
        return ""
    return re.sub(r"\[(\d+)\]", r"[\1]", m.group(1)).lstrip(".")


def _msgspec_error(e: msgspec.ValidationError, source: str) -> ConfigError:
    msg = str(e)
    key = _key_of(msg)
    what = msg.split(" - at ")[0]
    m = re.match(r"Object contains unknown field `(.+)`", what)
    if m:
        full = f"{key}.{m.group(1)}" if key else m.group(1)
        return ConfigError(f"{source}: unknown key '{full}'")
    return ConfigError(f"{source}: key '{key}': {what}")


def _decimal(value: str | int | float, key: str) -> Decimal:
    text = repr(value) if isinstance(value, float) else str(value)
    try:
        d = Decimal(text)
    except InvalidOperation:
        raise ConfigError(f"key '{key}': {value!r} is not a decimal number") from None
    if not d.is_finite() or d <= 0:
        raise ConfigError(f"key '{key}': must be a positive decimal number, got {value!r}")
    return d


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _available_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


# The smallest ring: a stage publishes only when its output ring has room for everything one input can
# produce (up to 64 venue reports, see hean.engine.pipeline), so smaller rings could never be written.
MIN_RING_CAPACITY = 256
SYNTHETIC_DEPTH = 20  # hean.feeds.synthetic.make_synthetic's default depth


def feed_buffer_len(ring_capacity: int, max_message: int) -> int:
    """Events the feed stages per publish: whole messages of up to ``max_message`` events (a recording's
    bigger groups go out in pieces of this size), and at most a quarter of a ring, so the feed never waits
    for a ring to drain completely before it publishes again."""
    return max(max_message, min(4096, ring_capacity // 4))


def _validate(cfg: Config) -> None:
    e = cfg.engine
    cap = e.ring_capacity
    if cap < MIN_RING_CAPACITY or cap & (cap - 1):
        raise ConfigError(f"key 'engine.ring_capacity': must be a power of two >= {MIN_RING_CAPACITY}, got {cap}")
    depth = int(cfg.feed.synthetic.get("depth", SYNTHETIC_DEPTH))
    if cfg.feed.source == "synthetic" and feed_buffer_len(cap, 2 * depth + 1) > cap // 2:
        raise ConfigError(
            f"key 'engine.ring_capacity': {cap} slots cannot hold two synthetic snapshots of depth {depth} "
            f"({2 * depth + 1} events each); use at least {_next_pow2(4 * (2 * depth + 1))}"
        )
    for key in ("duration_s", "ready_timeout_s", "drain_timeout_s"):
        if getattr(e, key) < 0:
            raise ConfigError(f"key 'engine.{key}': must be >= 0, got {getattr(e, key)}")
    if e.heartbeat_timeout_ms <= 0:
        raise ConfigError(f"key 'engine.heartbeat_timeout_ms': must be > 0, got {e.heartbeat_timeout_ms}")
    if e.run_id and not re.fullmatch(r"[A-Za-z0-9_]{1,48}", e.run_id):
        raise ConfigError(f"key 'engine.run_id': use 1-48 letters, digits or '_', got {e.run_id!r}")

    f = cfg.feed
    if f.rate <= 0:
        raise ConfigError(f"key 'feed.rate': must be > 0 messages per second, got {f.rate}")
    if f.max_messages < 0:
        raise ConfigError(f"key 'feed.max_messages': must be >= 0, got {f.max_messages}")
    if f.source == "replay" and not f.path:
        raise ConfigError("key 'feed.path': a replay needs the recording's path")
    if f.source == "replay" and f.format not in REPLAY_FORMATS:
        raise ConfigError(f"key 'feed.format': one of {', '.join(REPLAY_FORMATS)}; got {f.format!r}")
    if f.source == "synthetic" and f.pace == "recorded":
        raise ConfigError("key 'feed.pace': 'recorded' needs a replay source")

    if not cfg.symbols:
        raise ConfigError("key 'symbols': at least one [[symbols]] entry is needed")
    seen: set[str] = set()
    venue_names = [v.name for v in cfg.venues]
    if len(set(venue_names)) != len(venue_names):
        raise ConfigError(f"key 'venues': venue names must be unique, got {venue_names}")
    for i, s in enumerate(cfg.symbols):
        if s.name in seen:
            raise ConfigError(f"key 'symbols[{i}].name': duplicate symbol {s.name!r}")
        seen.add(s.name)
        _decimal(s.tick_size, f"symbols[{i}].tick_size")
        _decimal(s.lot_size, f"symbols[{i}].lot_size")
        if s.venue not in venue_names:
            raise ConfigError(f"key 'symbols[{i}].venue': unknown venue {s.venue!r} (venues: {venue_names})")

    _validate_placement(cfg.placement)


def _validate_placement(p: PlacementSection) -> None:
    if p.workers:
        flat = [s for w in p.workers for s in w]
        unknown = [s for s in flat if s not in STAGES]
        if unknown:
            raise ConfigError(f"key 'placement.workers': unknown stage(s) {unknown}; stages are {list(STAGES)}")
        if flat != list(STAGES) or any(not w for w in p.workers):
            raise ConfigError(
                "key 'placement.workers': must list every stage exactly once, in pipeline order, grouping only "
                f"adjacent stages ({' -> '.join(STAGES)}); got {p.workers}"
            )
    if p.cpus:
        avail = _available_cpus()
        bad = [c for c in p.cpus if c not in avail]
        if bad:
            raise ConfigError(
                f"key 'placement.cpus': CPU(s) {bad} not available to this process (affinity mask: {avail})"
            )
        if p.workers and len(p.cpus) != len(p.workers):
            raise ConfigError(
                f"key 'placement.cpus': {len(p.cpus)} CPUs for {len(p.workers)} workers; give one per worker"
            )
    for i, w in enumerate(p.waits):
        if w not in ("spin", "yield", "sleep"):
            raise ConfigError(f"key 'placement.waits[{i}]': one of spin, yield, sleep; got {w!r}")
    if p.waits and p.workers and len(p.waits) != len(p.workers):
        raise ConfigError(f"key 'placement.waits': {len(p.waits)} entries for {len(p.workers)} workers")
    for key in ("spin_before_yield", "spin_before_sleep", "sleep_us", "reserve_cpus"):
        if getattr(p, key) < 0:
            raise ConfigError(f"key 'placement.{key}': must be >= 0, got {getattr(p, key)}")


def load_config(path: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """The effective configuration: the embedded default, or ``path``, with ``overrides`` applied.

    ``overrides`` maps dotted keys to values (``{"engine.duration_s": 2}``), as the CLI flags do.
    A file replaces the default entirely except that missing ``[[symbols]]``/``[[venues]]`` fall back to
    the default's, so a file may hold only the keys it changes.
    """
    default = tomllib.loads(DEFAULT_TOML)
    if path is None:
        data, source = default, "default configuration"
    else:
        source = str(path)
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"{source}: no such file") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{source}: not valid TOML: {e}") from None
        data.setdefault("symbols", default["symbols"])
        data.setdefault("venues", default["venues"])
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    try:
        cfg = msgspec.convert(data, Config)
    except msgspec.ValidationError as e:
        raise _msgspec_error(e, source) from None
    try:
        _validate(cfg)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    return cfg


def stage_kwargs(section: str, table: dict[str, Any], factory) -> dict[str, Any]:
    """Check ``table``'s keys and value types against ``factory``'s keyword parameters.

    Returns the table unchanged when valid; raises :class:`ConfigError` naming ``section.key`` for an unknown
    key, a value of the wrong type, or a value the factory rejects (its ValueError is re-raised with the key).
    """
    params = inspect.signature(factory).parameters
    for key, value in table.items():
        p = params.get(key)
        if p is None or p.kind not in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) or p.default is p.empty:
            known = sorted(n for n, q in params.items() if q.default is not q.empty and not n.startswith("_"))
            raise ConfigError(f"unknown key '{section}.{key}' (known: {', '.join(known)})")
        expected = type(p.default)
        if p.default is not None and not _type_ok(value, expected):
            raise ConfigError(
                f"key '{section}.{key}': expected {expected.__name__}, got {type(value).__name__} {value!r}"
            )
    return table


def _type_ok(value: Any, expected: type) -> bool:
    if expected is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)


def call_factory(section: str, factory, *args, **kwargs):
    """Call a stage factory, turning its ValueError into a ConfigError that names the section."""
    try:
        return factory(*args, **kwargs)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"[{section}]: {e}") from None


def dump_toml(cfg: Config) -> str:
    """The configuration as TOML (tables, arrays of tables, scalars and lists only)."""
    data = msgspec.to_builtins(cfg)
    lines: list[str] = []

    def scalar(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(scalar(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k} = {scalar(x)}" for k, x in v.items()) + "}"
        return repr(v)

    def table(name: str, body: dict[str, Any], header: str) -> None:
        lines.append(header)
        subtables = []
        for k, v in body.items():
            if isinstance(v, dict):
                subtables.append((k, v))
            else:
                lines.append(f"{k} = {scalar(v)}")
        for k, v in subtables:
            lines.append(f"{k} = {scalar(v)}")
        lines.append("")

    for key, value in data.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            for item in value:
                table(key, item, f"[[{key}]]")
        elif isinstance(value, dict):
            table(key, value, f"[{key}]")
        else:
            lines.append(f"{key} = {scalar(value)}")
    return "\n".join(lines)
