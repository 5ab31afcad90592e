"""The engine's configuration schema: one TOML file decoded into msgspec structs, validated in one place.

Why msgspec structs with ``forbid_unknown_fields``: a typo in a risk limit must be an error, not a silently
ignored key that leaves the default limit in force. Every error is a :class:`ConfigError` whose message
names the key (``risk.max_order_qty``) and what is wrong with it.

Stage tables (``[book]``, ``[indicators]``, ``[strategy.params]``, ``[risk]``, ``[router]``, venue
parameters) are passed as keyword arguments to the stage's ``make_*`` function; their keys are checked
against that function's signature when the engine builds the stage (:func:`stage_kwargs`), so the schema of
a stage lives next to the stage's code and cannot drift from it.

Every number is finite and in range (a NaN duration ran forever, a NaN rate crashed a worker), every path
is checked for what it must be before anything starts, and every way a file can fail to load -- missing, a
directory, unreadable, not UTF-8, not TOML -- is one ConfigError naming the file.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import tomllib
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

import msgspec

from hean.feeds import FORMATS  # light: the readers are imported when a recording is loaded
from hean.stages.declare import parameters_of  # light: declarations
from hean.stages.depth import MAX_DEPTH  # light: layout constants

__all__ = [
    "Config",
    "ConfigError",
    "DEFAULT_TOML",
    "load_config",
    "dump_toml",
    "factory_defaults",
    "stage_kwargs",
]


# The pipeline's stages in data-flow order. Placement fuses only *adjacent* stages.
def _stages() -> tuple[str, ...]:
    """The pipeline's stage names, from the stage registry (imported when first needed: it compiles)."""
    from hean.stages.registry import PIPELINE

    return tuple(s.name for s in PIPELINE)


def __getattr__(name: str):
    """``STAGES``: the pipeline's stage names in order (hean.stages.registry), looked up lazily so that
    loading a configuration does not import the stages."""
    if name == "STAGES":
        return _stages()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


Scalar = bool | int | float | str


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
    # per-stage latency histograms (service, ages, tick-to-trade); false: the stages read no clock -- a
    # simulation twice as fast, with no latency figures (hean.backtest's default)
    latency_stats: bool = True
    heartbeat_timeout_ms: int = 2000  # a worker silent this long is declared dead
    ready_timeout_s: float = 600.0  # compile + warm-up budget per worker (a cold first start compiles)
    drain_timeout_s: float = 5.0  # after the feed stops, how long the pipeline may take to drain
    debug: bool = False  # strategies compiled with bounds checking (an index error is reported, not ignored)
    record_rows: int = 0  # per strategy: orders, reports and equity rows kept in memory (hean.backtest); 0: none
    equity_ms: int = 1000  # recorded runs: equity sampled every this many ms of event time (and at fills)
    daily_reset_utc: str = ""  # "HH:MM[:SS]": the daily loss limit counts from this UTC time each day; "": never


class FeedSection(_Section):
    source: Literal["synthetic", "replay", "live"] = "synthetic"
    path: str | list[str] = ""  # replay: the recording, or several merged by receive time (hean.engine.recordings)
    format: str | list[str] = ""  # replay: binance-usdm | binance-spot | bybit | lobster | tardis | dbn | native
    # replay: instrument files (Binance exchangeInfo, Bybit instruments-info, Databento definitions) giving the
    # symbols' ticks and lots where [[symbols]] does not (hean.feeds.instruments)
    instruments: str | list[str] = ""
    # replay: the venue of each recording's symbols, one per recording ([]: each symbol's [[symbols]] venue, else
    # the first venue); one symbol on two venues is one instrument listed twice ("NAME@VENUE" the second)
    venues: list[str] = []
    symbol: str = ""  # replay: the symbol's name where the recording cannot tell (LOBSTER)
    # replay: true skips (and counts) malformed lines, up to 1 % of the file; a number is that largest share
    lenient: bool | float = False
    pace: Literal["rate", "recorded", "fast"] = "rate"  # replay speed; synthetic: rate or fast
    rate: float = 100_000.0  # messages per second when pace = "rate"
    seed: int = 1  # synthetic feed seed
    max_messages: int = 0  # 0 = no limit
    synthetic: dict[str, Scalar] = {}  # extra keyword arguments of the synthetic generator
    # replay: when the strategy side receives a message (the feed latency model; the venue applies it at its
    # exchange time): "constant" = exchange time + latency_ns, "recorded" = the recording's own receive time
    latency: Literal["constant", "recorded"] = "constant"
    latency_ns: int = 0
    # replay: the recording is order by order (it holds L3 events: LOBSTER, Databento MBO): the book stage and
    # the venue keep L3 books (hean.stages.book_l3, hean.stages.venue_l3). Set by the engine from the recording
    l3: bool = False
    # replay: the symbols whose tick and lot are the recording's guess (no [[symbols]] entry, no instrument
    # file names them). Set by the engine; the summary says it
    guessed: list[str] = []


class LiveSection(_Section):
    """``[live]``: the live feed (``feed.source = "live"``; hean.live). The symbols are [[symbols]]'s, named as
    the venue names them, with its tick and lot."""

    venue: str = "binance-usdm"  # binance-usdm | binance-spot | bybit-linear | bybit-spot
    ws_url: str = ""  # "" = the venue's public endpoint (tests point it at hean.live.exchange)
    rest_url: str = ""  # "" = the venue's public REST endpoint (Binance's depth snapshots)
    silence_s: float = 10.0  # no message for this long: the connection is dropped, made again, resynced
    backoff_min_s: float = 0.1  # the first reconnect/retry delay; it doubles up to backoff_max_s
    backoff_max_s: float = 5.0
    depth_limit: int = 1000  # levels per side of a REST depth snapshot
    ping_s: float = 20.0  # Bybit: the client's ping interval
    record: str = ""  # a directory: also record what is received there, as `hean record` does


class SymbolSection(_Section):
    name: str
    tick_size: str | int | float
    lot_size: str | int | float
    venue: str = "sim"
    # another venue's listing of the instrument named here (same tick and lot): its book is that venue's quote
    # for the instrument, and the router splits the instrument's orders over both (hean.stages.router)
    instrument: str = ""
    # quote currency per unit of price per unit of quantity (a contract's multiplier: 50 for CME's ES; 1 for
    # linear crypto contracts): notionals, fees and PnL are price x qty x multiplier
    multiplier: str | int | float = "1"
    # the smallest order quantity in instrument units (0: one lot); risk refuses less (MIN_QTY) unless
    # [risk] min_qty (in lots) says otherwise
    min_qty: str | int | float = "0"


class VenueSection(_Section):
    name: str = "sim"
    params: dict[str, Scalar] = {}  # keyword arguments of the simulated venue (fees, latency, rejects)


class StrategySection(_Section):
    """``[strategy]``: the one-strategy shorthand -- a built-in by name (or a path), on every symbol."""

    name: str = "market_maker"  # market_maker | rsi_macd, or a path "file.py:NAME" / "module:NAME"
    mode: str = ""  # "" = the strategy's own; "bar" (indicators on bar closes) or "tick" (every sample)
    tick_source: str = ""  # "" = the strategy's own; tick mode: "trades" (last trade) or "mid"
    params: dict[str, Scalar] = {}  # the strategy's params


class StrategyEntry(_Section):
    """One ``[[strategies]]`` entry: a strategy module, its symbols, its parameters (hean.api)."""

    path: str  # "file.py:NAME" (relative to the working directory) or "package.module:NAME", or a built-in name
    symbols: list[str] = []  # names from [[symbols]]; [] = every symbol
    params: dict[str, Scalar] = {}  # [strategies.params]: overrides of the strategy's declared params
    indicators: dict[str, Scalar] = {}  # [strategies.indicators]: periods (over [indicators] and the code's)
    mode: str = ""  # "" = the strategy's own; "tick" | "bar"
    tick_source: str = ""  # "" = the strategy's own; "trades" | "mid"
    bar_ms: int = 0  # 0 = [bars] interval_ms, else the strategy's own
    bar_source: str = ""  # "" = [bars] source, else the strategy's own
    timer_ms: int = -1  # -1 = the strategy's own; on_timer's period in event time
    depth: int = -1  # -1 = the strategy's own; book levels per side its context keeps (0 .. MAX_DEPTH)


class PlacementSection(_Section):
    workers: list[list[str]] = []  # e.g. [["feed"], ["book", "strategy", "risk", "router", "venue"]]; [] = auto
    cpus: list[int] = []  # CPU per worker, same order; [] = auto from the affinity mask
    reserve_cpus: int = 1  # lowest CPUs left to the supervisor, the OS and `hean top` (auto CPUs only)
    wait: Literal["auto", "spin", "yield", "sleep"] = "auto"  # one for all workers, or see waits
    waits: list[str] = []  # per worker override, same order as workers
    spin_before_yield: int = 2000  # idle polls before a spin-then-yield worker yields
    spin_before_sleep: int = 20000  # idle polls before a spin-then-sleep worker sleeps
    sleep_us: int = 50  # sleep length of spin-then-sleep (really 15-80 us on this kernel)


class JournalSection(_Section):
    dir: str = ""  # "" = no journal; else each run's journal goes to <dir>/<run id>/ (hean.journal)
    segment_mb: int = 64  # size of one segment file before the journal continues in the next
    marks_ms: int = 100  # a symbol's top of book is journaled at most once per this many ms of event time
    market: bool = False  # also journal every market event the venue sees (big: 80 bytes per event)


class Config(_Section):
    engine: EngineSection = msgspec.field(default_factory=EngineSection)
    feed: FeedSection = msgspec.field(default_factory=FeedSection)
    symbols: list[SymbolSection] = []
    venues: list[VenueSection] = []
    book: dict[str, Scalar] = {}
    indicators: dict[str, Scalar] = {}  # hean.indicators.streaming.IndicatorConfig
    bars: dict[str, Scalar] = {}  # hean.stages.bars.BarConfig
    strategy: StrategySection = msgspec.field(default_factory=StrategySection)
    strategies: list[StrategyEntry] = []  # several strategies; when given, [strategy] is not used
    # limits (hean.stages.risk.make_risk); per symbol: [risk.symbols.NAME]; *_units: in instrument units
    risk: dict[str, Scalar | dict[str, dict[str, Scalar]]] = {}
    router: dict[str, Scalar] = {}
    placement: PlacementSection = msgspec.field(default_factory=PlacementSection)
    journal: JournalSection = msgspec.field(default_factory=JournalSection)
    live: LiveSection = msgspec.field(default_factory=LiveSection)


DEFAULT_TOML = """\
# HEAN engine configuration. `hean config show` prints the effective values; every key is optional.

[engine]
duration_s = 5.0            # seconds to run (0: until the feed ends or SIGINT/SIGTERM/`hean stop`)
ring_capacity = 4096        # slots per SPSC ring (a power of two >= 256; small rings stay in cache)
lockstep = false            # true: deterministic (the feed waits for the pipeline to go idle)
latency_stats = true        # false: no latency histograms, the stages read no clock (faster backtests)
heartbeat_timeout_ms = 2000 # a worker silent for this long is declared dead and trading halts

[feed]
source = "synthetic"        # synthetic | replay | live ([live]: venue, endpoints; docs/live.md)
pace = "rate"               # rate | recorded (replay only) | fast
rate = 100000               # messages per second when pace = "rate"
seed = 1                    # synthetic feed seed (same seed, same market)
lenient = false             # replay: true skips bad lines up to 1 % of the file (a number: that share)
latency = "constant"        # replay: the strategy sees a message at its exchange time + latency_ns
latency_ns = 0              #   ("recorded": at the recording's own receive time)

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
# [venues.params]           # per venue: latencies, fees, rejects (README), and the queue-position model:
# queue_model = "risk_averse" # risk_averse | power | power2 | power3 | log | log2 (docs/backtests.md)
# queue_power = 3.0         # the power models' exponent n
# latency_file = "rtt.csv"  # recorded order round trips (req_ts,exch_ts,resp_ts ns) instead of the constant latencies

[strategy]
name = "market_maker"       # market_maker | rsi_macd | "file.py:NAME" (docs/strategies.md)
# Several strategies, each on its symbols: [[strategies]] entries (path, symbols, [strategies.params]) instead

# Pre-trade risk limits (hean.stages.risk.make_risk): on by default, so a strategy that runs away is stopped;
# loosen them on purpose, per venue and instrument (0 disables a limit). Lots and ticks are the symbol's.
[risk]
max_order_qty = 1000        # lots per order
max_notional = 1000000.0    # quote currency per order (price x quantity x tick/lot value)
max_position = 1000         # |lots| per symbol after the order, open orders counted
max_open_orders = 50        # open orders over all symbols
rate_per_symbol = 25000     # orders (NEW and REPLACE) per second and symbol, in exchange time
rate_total = 50000          # orders per second over all symbols
daily_loss_limit = 100000.0 # quote currency; when lost, the trading state becomes REDUCING

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
    m = re.match(r"Object contains unknown field `(.+)`", what, re.DOTALL)
    if m:
        name = m.group(1) if m.group(1).isprintable() else json.dumps(m.group(1))  # a quoted key ("\n")
        full = f"{key}.{name}" if key else name
        return ConfigError(f"{source}: unknown key '{full}'")
    return ConfigError(f"{source}: key '{key}': {_printable(what)}")


def _printable(text: str) -> str:
    """``text`` on one line: a control character in a key or value the user wrote shown escaped."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def _decimal(value: str | int | float, key: str, zero_ok: bool = False) -> Decimal:
    text = repr(value) if isinstance(value, float) else str(value)
    try:
        d = Decimal(text)
    except InvalidOperation:
        raise ConfigError(f"key '{key}': {value!r} is not a decimal number") from None
    if zero_ok and d == 0:
        return d
    if not d.is_finite() or d <= 0:
        raise ConfigError(f"key '{key}': must be a positive decimal number, got {value!r}")
    if d >= MAX_STEP:
        raise ConfigError(f"key '{key}': must be below {MAX_STEP:.0e}, got {value!r}")
    return d


MAX_STEP = Decimal(10) ** 15  # a tick or lot size this big is a typo (and its int64 arithmetic overflows)


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _available_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


# The smallest ring: a stage publishes only when its output ring has room for everything one input can
# produce (up to 64 venue reports, see hean.engine.pipeline), so smaller rings could never be written.
MIN_RING_CAPACITY = 256
SYNTHETIC_DEPTH = 20  # hean.feeds.synthetic.make_synthetic's default depth


# Upper bounds: far above any sensible value, low enough that nothing downstream overflows or allocates
# without limit (a duration or timeout in ns must stay an int64; a ring's slots are allocated up front).
MAX_RING_CAPACITY = 1 << 24
MAX_SECONDS = 1e9  # ~31 years: every duration/timeout in ns stays far inside int64
MAX_HEARTBEAT_MS = 3_600_000
MAX_LATENCY_NS = 10**12  # 1000 s: the venue's own latency bound (hean.stages.venue.make_venue)
MIN_RATE, MAX_RATE = 1e-3, 1e9  # messages per second: the feed's period (1e9 / rate ns) is >= 1 ns, < 2**62
MAX_COUNT = 1 << 62  # message counts, spin counts, seeds
MAX_SLEEP_US = 1_000_000
MAX_SYNTHETIC_DEPTH = 100_000


def _number(key: str, value: float, low: float, high: float, low_open: bool = False) -> None:
    """``value`` must be finite and in ``[low, high]`` (``(low, high]`` with ``low_open``); else ConfigError."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"key '{key}': must be a finite number, got {value!r}")
    if value < low or (low_open and value == low):
        raise ConfigError(f"key '{key}': must be {'>' if low_open else '>='} {low}, got {value!r}")
    if value > high:
        raise ConfigError(f"key '{key}': must be <= {high}, got {value!r}")


def _validate(cfg: Config) -> None:
    _validate_engine(cfg.engine)
    _validate_feed(cfg)
    _validate_symbols(cfg)
    _validate_strategies(cfg)
    _validate_placement(cfg.placement)
    _validate_journal(cfg.journal)


MAX_RECORD_ROWS = 1 << 26  # rows per log per strategy (an ORDER row is 128 bytes: 8 GiB at most)


def _validate_strategies(cfg: Config) -> None:
    from hean.stages.strategy import MAX_STRATEGIES

    if len(cfg.strategies) > MAX_STRATEGIES:
        raise ConfigError(f"key 'strategies': at most {MAX_STRATEGIES} strategies, got {len(cfg.strategies)}")
    names = {s.name for s in cfg.symbols}
    replay = cfg.feed.source == "replay"  # a replay's symbols come from the recording: checked when built
    for j, e in enumerate(cfg.strategies):
        for sym in e.symbols:
            if cfg.symbols and not replay and sym not in names:
                raise ConfigError(f"key 'strategies[{j}].symbols': no symbol {sym!r} in [[symbols]] {sorted(names)}")
        if len(set(e.symbols)) != len(e.symbols):
            raise ConfigError(f"key 'strategies[{j}].symbols': a symbol twice: {e.symbols}")
        for key, ok in (
            ("mode", ("", "tick", "bar")),
            ("tick_source", ("", "trades", "mid")),
            ("bar_source", ("", "trades", "mid")),
        ):
            if getattr(e, key) not in ok:
                raise ConfigError(
                    f"key 'strategies[{j}].{key}': one of {[v for v in ok if v]}, got {getattr(e, key)!r}"
                )
        if e.timer_ms < -1 or e.bar_ms < 0:
            raise ConfigError(f"key 'strategies[{j}]': timer_ms >= 0 (or -1: the strategy's own), bar_ms >= 0")
        if not -1 <= e.depth <= MAX_DEPTH:
            raise ConfigError(
                f"key 'strategies[{j}].depth': levels per side in 0 .. {MAX_DEPTH} (or -1: the strategy's own), "
                f"got {e.depth}"
            )


def _validate_engine(e: EngineSection) -> None:
    if e.daily_reset_utc and not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d(:[0-5]\d)?", e.daily_reset_utc):
        raise ConfigError(f"key 'engine.daily_reset_utc': a UTC time HH:MM or HH:MM:SS, got {e.daily_reset_utc!r}")
    cap = e.ring_capacity
    if cap < MIN_RING_CAPACITY or cap & (cap - 1):
        raise ConfigError(f"key 'engine.ring_capacity': must be a power of two >= {MIN_RING_CAPACITY}, got {cap}")
    _number("engine.ring_capacity", cap, MIN_RING_CAPACITY, MAX_RING_CAPACITY)
    for key in ("duration_s", "ready_timeout_s", "drain_timeout_s"):
        _number(f"engine.{key}", getattr(e, key), 0, MAX_SECONDS)
    _number("engine.heartbeat_timeout_ms", e.heartbeat_timeout_ms, 0, MAX_HEARTBEAT_MS, low_open=True)
    _number("engine.record_rows", e.record_rows, 0, MAX_RECORD_ROWS)
    _number("engine.equity_ms", e.equity_ms, 0, 86_400_000)
    if e.run_id and not re.fullmatch(r"[A-Za-z0-9_]{1,48}", e.run_id):
        raise ConfigError(f"key 'engine.run_id': use 1-48 letters, digits or '_', got {e.run_id!r}")


def _validate_feed(cfg: Config) -> None:
    f = cfg.feed
    if not (isinstance(f.rate, float) and math.isnan(f.rate)) and f.rate <= 0:
        raise ConfigError(f"key 'feed.rate': must be > 0 messages per second, got {f.rate}")
    _number("feed.rate", f.rate, MIN_RATE, MAX_RATE)
    _number("feed.max_messages", f.max_messages, 0, MAX_COUNT)
    _number("feed.seed", f.seed, 0, MAX_COUNT)
    _number("feed.latency_ns", f.latency_ns, 0, MAX_LATENCY_NS)
    if f.source != "replay" and (f.latency != "constant" or f.latency_ns != 0):
        raise ConfigError(
            "keys 'feed.latency'/'feed.latency_ns': a feed latency model applies to a replay; the "
            f"{f.source} feed's messages are received as they are made (leave them at their defaults)"
        )
    if f.source == "live":
        _validate_live(cfg)
    if not isinstance(f.lenient, bool):
        _number("feed.lenient", f.lenient, 0.0, 1.0)
    depth = f.synthetic.get("depth", SYNTHETIC_DEPTH)
    if isinstance(depth, bool) or not isinstance(depth, int):
        raise ConfigError(f"key 'feed.synthetic.depth': expected int, got {type(depth).__name__} {depth!r}")
    _number("feed.synthetic.depth", depth, 2, MAX_SYNTHETIC_DEPTH)
    cap = cfg.engine.ring_capacity
    from hean.stages.feed import buffer_len

    if f.source == "synthetic" and buffer_len(cap, 2 * depth + 1) > cap // 2:
        raise ConfigError(
            f"key 'engine.ring_capacity': {cap} slots cannot hold two synthetic snapshots of depth {depth} "
            f"({2 * depth + 1} events each); use at least {_next_pow2(4 * (2 * depth + 1))}"
        )
    if f.source == "replay":
        _check_recordings(f)
    if f.source == "synthetic" and f.pace == "recorded":
        raise ConfigError("key 'feed.pace': 'recorded' needs a replay source")


def _validate_live(cfg: Config) -> None:
    from hean.live.venues import VENUES

    lv = cfg.live
    if lv.venue not in VENUES:
        raise ConfigError(f"key 'live.venue': one of {', '.join(VENUES)}, got {lv.venue!r}")
    if not cfg.symbols:
        raise ConfigError("key 'symbols': a live feed needs [[symbols]] entries (the venue's names, tick and lot)")
    for key in ("ws_url", "rest_url"):
        url = getattr(lv, key)
        if url and not re.match(r"^(wss?|https?)://[^\s/]+", url):
            raise ConfigError(f"key 'live.{key}': a ws://, wss://, http:// or https:// URL, got {url!r}")
    _number("live.silence_s", lv.silence_s, 0.1, MAX_SECONDS)
    _number("live.backoff_min_s", lv.backoff_min_s, 0.001, 600)
    _number("live.backoff_max_s", lv.backoff_max_s, lv.backoff_min_s, 600)
    _number("live.depth_limit", lv.depth_limit, 5, 5000)
    _number("live.ping_s", lv.ping_s, 0.1, 3600)
    if cfg.engine.lockstep:
        raise ConfigError("key 'engine.lockstep': a live feed cannot wait for the pipeline (the market does not)")
    need = 2 * lv.depth_limit + 2  # a REST snapshot's events: a clear and its levels, in one push
    if cfg.engine.ring_capacity < need:
        raise ConfigError(
            f"key 'engine.ring_capacity': {cfg.engine.ring_capacity} slots cannot take a snapshot of "
            f"live.depth_limit = {lv.depth_limit} levels a side ({need - 1} events); use at least {_next_pow2(need)}"
        )


def as_list(value: str | list[str]) -> list[str]:
    """A key that takes one string or a list of them (``feed.path``, ``feed.format``, ``feed.instruments``)
    as a list."""
    return [value] if isinstance(value, str) else list(value)


def _check_recordings(f: FeedSection) -> None:
    """A replay's recordings (and instrument files) must be existing, readable files, each with a format
    (one for all, or one per recording): checked before anything starts."""
    paths = as_list(f.path)
    formats = as_list(f.format)
    if not paths or not all(paths):
        raise ConfigError("key 'feed.path': a replay needs the recording's path (or a list of them)")
    if len(formats) not in (1, len(paths)):
        raise ConfigError(
            f"key 'feed.format': {len(formats)} formats for {len(paths)} recordings (give one, or one each)"
        )
    for fmt in formats:
        if fmt not in FORMATS:
            raise ConfigError(f"key 'feed.format': one of {', '.join(FORMATS)}; got {fmt!r}")
    if f.venues and len(f.venues) != len(paths):
        raise ConfigError(f"key 'feed.venues': {len(f.venues)} venues for {len(paths)} recordings (give one each)")
    for path in paths:
        _check_file("feed.path", path, "a recording")
    for path in as_list(f.instruments):
        if path:
            _check_file("feed.instruments", path, "an instrument file")


def _check_file(key: str, path: str, what: str) -> None:
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"key '{key}': {path} is a directory, not {what}")
    try:
        with open(p, "rb"):
            pass
    except FileNotFoundError:
        raise ConfigError(f"key '{key}': {path}: no such file") from None
    except OSError as e:
        raise ConfigError(f"key '{key}': {path}: cannot read it: {e.strerror or e}") from None


def _validate_symbols(cfg: Config) -> None:
    if not cfg.symbols:
        raise ConfigError("key 'symbols': at least one [[symbols]] entry is needed")
    from hean.symbols import SymbolTable

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
        _decimal(s.multiplier, f"symbols[{i}].multiplier")
        _decimal(s.min_qty, f"symbols[{i}].min_qty", zero_ok=True)
        if s.venue not in venue_names:
            raise ConfigError(f"key 'symbols[{i}].venue': unknown venue {s.venue!r} (venues: {venue_names})")
        try:  # the steps the engine can represent exactly (hean.symbols)
            SymbolTable([{"name": s.name, "tick_size": str(s.tick_size), "lot_size": str(s.lot_size)}])
        except (ValueError, ArithmeticError) as e:
            raise ConfigError(f"key 'symbols[{i}]': {e}") from None
    by_name = {s.name: s for s in cfg.symbols}
    for i, s in enumerate(cfg.symbols):
        if s.instrument:
            _check_listing(i, s, by_name.get(s.instrument))
    for v in cfg.feed.venues:
        if v not in venue_names:
            raise ConfigError(f"key 'feed.venues': unknown venue {v!r} (venues: {venue_names})")


def _check_listing(i: int, s: SymbolSection, inst: SymbolSection | None) -> None:
    """A listing names a symbol of the configuration, itself no listing, on another venue, in the same units
    (the router compares the venues' prices in ticks and splits quantities in lots)."""
    key = f"key 'symbols[{i}].instrument'"
    if inst is None or inst.name == s.name:
        raise ConfigError(f"{key}: {s.instrument!r} is not another [[symbols]] entry")
    if inst.instrument:
        raise ConfigError(f"{key}: {inst.name} is itself a listing of {inst.instrument}; name {inst.instrument}")
    if inst.venue == s.venue:
        raise ConfigError(f"{key}: {s.name} and {inst.name} are both on venue {s.venue!r}; a listing is on another")
    for attr in ("tick_size", "lot_size", "multiplier"):
        if Decimal(str(getattr(s, attr))) != Decimal(str(getattr(inst, attr))):
            raise ConfigError(
                f"{key}: {s.name}'s {attr} {getattr(s, attr)} differs from {inst.name}'s {getattr(inst, attr)}"
            )


def _validate_journal(j: JournalSection) -> None:
    if not 1 <= j.segment_mb <= 65536:
        raise ConfigError(f"key 'journal.segment_mb': must be 1 .. 65536 (MiB), got {j.segment_mb}")
    if j.marks_ms < 0:
        raise ConfigError(f"key 'journal.marks_ms': must be >= 0 (0: every book state), got {j.marks_ms}")
    if j.dir and os.path.exists(j.dir) and not os.path.isdir(j.dir):
        raise ConfigError(f"key 'journal.dir': {j.dir} exists and is not a folder")


def _validate_placement(p: PlacementSection) -> None:
    if p.workers:
        stages = _stages()
        flat = [s for w in p.workers for s in w]
        unknown = [s for s in flat if s not in stages]
        if unknown:
            raise ConfigError(f"key 'placement.workers': unknown stage(s) {unknown}; stages are {list(stages)}")
        if flat != list(stages) or any(not w for w in p.workers):
            raise ConfigError(
                "key 'placement.workers': must list every stage exactly once, in pipeline order, grouping only "
                f"adjacent stages ({' -> '.join(stages)}); got {p.workers}"
            )
    avail = _available_cpus()
    if p.cpus:
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
    for key in ("spin_before_yield", "spin_before_sleep"):
        _number(f"placement.{key}", getattr(p, key), 0, MAX_COUNT)
    _number("placement.sleep_us", p.sleep_us, 0, MAX_SLEEP_US)
    _number("placement.reserve_cpus", p.reserve_cpus, 0, MAX_COUNT)
    # every CPU but one may be reserved; on a single CPU the default reserve of 1 keeps nothing back
    most = max(1, len(avail) - 1)
    if p.reserve_cpus > most:
        raise ConfigError(
            f"key 'placement.reserve_cpus': {p.reserve_cpus} would leave no CPU for the workers: this process may "
            f"use {len(avail)} CPU(s) {avail}, so at most {most}"
        )


def _read_toml(path: str | os.PathLike) -> dict:
    """The TOML file at ``path`` as a dict; every way it can fail is one ConfigError naming the file."""
    source = str(path)
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{source}: is a directory, not a configuration file")
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{source}: no such file") from None
    except OSError as e:
        raise ConfigError(f"{source}: cannot read it: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{source}: not UTF-8 text (byte {e.start}); TOML files are UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML: {e}") from None
    except RecursionError:
        raise ConfigError(f"{source}: not valid TOML: nested too deeply") from None


def _apply_overrides(data: dict, overrides: dict[str, Any], source: str) -> None:
    """Set each dotted key of ``overrides`` in ``data``; a key whose parent is not a table is a ConfigError."""
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = dotted.split(".")
        for i, part in enumerate(parents):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{source}: key '{'.'.join(parents[: i + 1])}' must be a table")
        node[leaf] = value


@functools.cache
def _parsed_default() -> dict:
    return tomllib.loads(DEFAULT_TOML)


def _default_data() -> dict:
    """The embedded default as a fresh dict: parsed once per process (~1 ms of every backtest's set-up),
    copied per call since overrides are applied to it in place."""
    return _fresh(_parsed_default())


def _fresh(node: Any) -> Any:
    """A copy of parsed TOML's tables and arrays (its scalars are immutable): what ``copy.deepcopy`` makes of
    it, without deepcopy's memo and dispatch (a quarter of the time)."""
    if isinstance(node, dict):
        return {k: _fresh(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_fresh(v) for v in node]
    return node


def load_config(path: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """The effective configuration: the embedded default, or ``path``, with ``overrides`` applied.

    ``overrides`` maps dotted keys to values (``{"engine.duration_s": 2}``), as the CLI flags do.
    A file replaces the default entirely except that missing ``[[symbols]]``/``[[venues]]`` fall back to
    the default's, so a file may hold only the keys it changes.
    """
    default = _default_data()
    if path is None:
        data, source = default, "default configuration"
    else:
        source = str(path)
        data = _read_toml(path)
        live = isinstance(data.get("feed"), dict) and data["feed"].get("source") == "live"
        if live and "symbols" not in data:  # the synthetic market's symbols are no venue's: say so
            raise ConfigError(f"{source}: key 'symbols': a live feed needs [[symbols]] entries (the venue's names, "
                              "tick and lot)")  # fmt: skip
        data.setdefault("symbols", default["symbols"])
        data.setdefault("venues", default["venues"])
    _apply_overrides(data, overrides or {}, source)
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
    params = parameters_of(factory)
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
        _stage_value_ok(f"{section}.{key}", key, value)
    return table


# Stage parameters that size an array allocated when the stage is built: bounded, so that a typo costs an
# error message rather than all the machine's memory.
MAX_SIZES = {
    "window": 1 << 22,  # L2 book price window (slots per symbol and side)
    "overflow": 1 << 22,
    "trades_capacity": 1 << 22,
    "capacity": 1 << 24,  # router / venue order tables
    "queue_capacity": 1 << 24,
    "book_window": 1 << 22,
    "book_overflow": 1 << 22,
    "rate_per_symbol": 1_000_000,  # risk keeps one timestamp per order in the rate window
    "rate_total": 1_000_000,
}


def _stage_value_ok(full: str, key: str, value: Any) -> None:
    """Every stage value is finite and fits an int64 with room; size parameters stay below MAX_SIZES."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"key '{full}': must be a finite number, got {value!r}")
    if isinstance(value, int) and not isinstance(value, bool):
        if not -MAX_COUNT <= value <= MAX_COUNT:
            raise ConfigError(f"key '{full}': {value} is out of range (|value| <= 2**62)")
        if key in MAX_SIZES and value > MAX_SIZES[key]:
            raise ConfigError(f"key '{full}': must be <= {MAX_SIZES[key]}, got {value}")


def factory_defaults(factory, skip: tuple[str, ...] = ()) -> dict[str, Scalar]:
    """The keyword parameters of ``factory`` that a configuration table may set, with their defaults: the
    effective value of every key a table leaves out (``hean config show`` prints them). Parameters whose
    default is not a TOML scalar (None, arrays) and those in ``skip`` (derived by the engine) are left out."""
    out: dict[str, Scalar] = {}
    for name, p in parameters_of(factory).items():
        if name in skip or p.default is p.empty or p.kind not in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD):
            continue
        d = p.default
        if isinstance(d, bool | str | float):
            out[name] = d
        elif isinstance(d, int):  # an IntEnum default is configured by its number
            out[name] = int(d)
    return out


def _type_ok(value: Any, expected: type) -> bool:
    if issubclass(expected, int) and expected not in (int, bool):  # an IntEnum parameter takes its number
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)


def call_factory(section: str, factory, *args, **kwargs):
    """Call a stage factory, turning its ValueError into a ConfigError that names the section."""
    try:
        return factory(*args, **kwargs)
    except (ValueError, TypeError, ArithmeticError, KeyError, MemoryError) as e:
        raise ConfigError(f"[{section}]: {e}") from None


def dump_toml(cfg: Config) -> str:
    """The configuration as TOML (tables, arrays of tables, scalars and lists only)."""
    data = msgspec.to_builtins(cfg)
    lines: list[str] = []

    def scalar(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)  # JSON's string escapes are TOML's basic-string escapes (control chars too)
        if isinstance(v, list):
            return "[" + ", ".join(scalar(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{key(k)} = {scalar(x)}" for k, x in v.items()) + "}"
        return repr(v)

    def key(k: str) -> str:
        """A bare key when TOML allows one, else a quoted one (a strategy's params may be named anything)."""
        return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)

    def table(name: str, body: dict[str, Any], header: str) -> None:
        lines.append(header)
        subtables = []
        for k, v in body.items():
            if isinstance(v, dict):
                subtables.append((k, v))
            else:
                lines.append(f"{key(k)} = {scalar(v)}")
        for k, v in subtables:
            lines.append(f"{key(k)} = {scalar(v)}")
        lines.append("")

    def is_tables(v: Any) -> bool:
        return isinstance(v, list) and bool(v) and isinstance(v[0], dict)

    # top-level keys first: in TOML a key after a table header belongs to that table
    for name, value in data.items():
        if not isinstance(value, dict) and not is_tables(value):
            lines.append(f"{key(name)} = {scalar(value)}")
    for name, value in data.items():
        if is_tables(value):
            for item in value:
                table(name, item, f"[[{key(name)}]]")
        elif isinstance(value, dict):
            table(name, value, f"[{key(name)}]")
    return "\n".join(lines)
