"""Fuzz tests (hypothesis) of everything that reads untrusted bytes: every recording reader, the native event
file and the configuration loader.

Property, for every case: the input gives either a result that holds up -- events that pass validation,
write to a native file and open again byte for byte, and run through the order book (L2 or L3) without a
fault; a configuration that builds every stage and loads back from its own printout -- or exactly one clean
error: a :class:`FeedError` / :class:`ConfigError` with a one-line message naming the file. Never another
exception, a crash or a hang (pytest-timeout bounds each test).

Inputs: random bytes; truncations and byte mutations (flips, overwrites, insertions of nasty tokens such as
huge or negative numbers, deletions, duplicated spans) of slices of the shared recordings and of native files
made from them; random TOML documents over the configuration's schema, random override values, and mutations
of the starter configuration. Reproducible: derandomized, no example database; the whole file runs in well
under a minute on two CPUs.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import data_file
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hean.commands.book import replay_top
from hean.engine.build import check_config
from hean.engine.config import DEFAULT_TOML, ConfigError, dump_toml, load_config
from hean.feeds import load_events
from hean.feeds.common import FeedError
from hean.feeds.native import open_native, write_native

pytestmark = pytest.mark.timeout(300)

NASTY = [b"-1", b"0", b"99999999999999999999", b"9223372036854775808", b"-9223372036854775809", b"1e400",
         b"NaN", b"null", b"\"", b"\\", b"[", b"]", b"{", b"}", b",", b"\n", b"\x00", b"\xff\xfe",
         b"0.000000000000000000001", b"\"-5.0\"", b"\"0\"", b"[[\"1\",\"1\"]]", b"-", b"."]  # fmt: skip


NUMBERS = [b"0", b"-1", b"-0", b"00", b"1", b"3", b"7", b"9" * 19, b"9" * 25, b"9223372036854775807",
           b"9223372036854775808", b"4611686018427387905", b"9007199254740992", b"0.0000000000000000001", b"1e5",
           b"1.", b".5", b"-5.25"]  # fmt: skip
_DIGITS = re.compile(rb"[0-9]+(\.[0-9]+)?")


def fuzz_settings(n: int):
    """``n`` cases, reproducibly (derandomized, no example database), no per-case deadline."""
    return settings(
        max_examples=n,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    )


@st.composite
def mutated(draw, base: bytes, max_ops: int = 6) -> bytes:
    """``base`` after 1..max_ops random edits: a truncation, byte overwrites and flips, insertions of
    :data:`NASTY` tokens, deletions and duplications of short spans."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, max_ops))):
        op = draw(st.sampled_from(["truncate", "set", "flip", "nasty", "number", "number", "delete", "dup"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "number":  # the next number (digits) becomes an extreme one
            m = _DIGITS.search(bytes(data), pos)
            if m:
                data[m.start() : m.end()] = draw(st.sampled_from(NUMBERS))
        elif op == "truncate":
            del data[pos:]
        elif op == "set" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "nasty":
            data[pos:pos] = draw(st.sampled_from(NASTY))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 16))]
        elif op == "dup":
            data[pos:pos] = data[pos : pos + draw(st.integers(1, 200))]
    return bytes(data)


# ---------------------------------------------------------------------------------------------------------
# the oracle of the readers
# ---------------------------------------------------------------------------------------------------------
def clean_feed_error(e: FeedError, *paths: Path) -> None:
    msg = str(e)
    assert msg and "\n" not in msg, msg
    assert any(msg.startswith(str(p)) for p in paths), msg


def holds_up(events: np.ndarray, report, out: Path) -> None:
    """Events that came back are valid: they write, re-open byte for byte, and go through the book."""
    write_native(out, events, report.symbols)
    again, table = open_native(out)
    assert again.tobytes() == np.ascontiguousarray(events).tobytes() and table == report.symbols
    replay_top(np.array(events), max(len(report.symbols), 1))


def check_reader(path: Path, fmt: str, out: Path, *also: Path, **kw) -> None:
    """Strict and lenient (any share skipped): events that hold up, or one clean FeedError."""
    for lenient in (False, 1.0):
        try:
            events, report = load_events(path, fmt, lenient=lenient, **kw)
        except FeedError as e:
            clean_feed_error(e, path, *also)
            continue
        holds_up(events, report, out)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def binance_slice() -> bytes:
    """The first 200 lines of the Binance recording (trades, tickers, the REST snapshot at line 55, diffs)."""
    lines = gzip.decompress(data_file("binance-usdm-btcusdt-20240808.gz").read_bytes()).split(b"\n")
    return b"\n".join(lines[:200]) + b"\n"


@pytest.fixture(scope="module")
def bybit_plain() -> bytes:
    with zipfile.ZipFile(data_file("bybit-xrpusdt-ob500.data.zip")) as z:
        return z.read(z.namelist()[0])


def _lobster_slice(name: str, rows: int = 120) -> bytes:
    return b"".join(data_file(name).read_bytes().splitlines(keepends=True)[:rows])


# ---------------------------------------------------------------------------------------------------------
# Binance
# ---------------------------------------------------------------------------------------------------------
def test_binance_slice_itself_holds_up(work, binance_slice):
    p = work / "b0.txt"
    p.write_bytes(binance_slice)
    events, report = load_events(p, "binance-usdm")
    assert report.counters["snapshots"] == 1 and len(events) > 1000
    holds_up(events, report, work / "b0.hev")


@fuzz_settings(300)
@given(data=st.data())
def test_fuzz_binance_text(work, binance_slice, data):
    p = work / "b.txt"
    p.write_bytes(data.draw(mutated(binance_slice)))
    check_reader(p, "binance-usdm", work / "b.hev")
    check_reader(p, "binance-spot", work / "b.hev")


@fuzz_settings(60)
@given(data=st.data())
def test_fuzz_binance_gzip_bytes(work, binance_slice, data):
    """Mutations of the compressed file: a corrupt or truncated archive is one FeedError."""
    p = work / "b.txt.gz"
    p.write_bytes(data.draw(mutated(gzip.compress(binance_slice, mtime=0), max_ops=2)))
    check_reader(p, "binance-usdm", work / "bz.hev")


@fuzz_settings(100)
@given(raw=st.binary(max_size=2000))
def test_fuzz_random_bytes_every_reader(work, raw):
    p = work / "r.bin"
    p.write_bytes(raw)
    for fmt in ("binance-usdm", "bybit", "native"):
        check_reader(p, fmt, work / "r.hev")


# ---------------------------------------------------------------------------------------------------------
# Bybit
# ---------------------------------------------------------------------------------------------------------
@fuzz_settings(200)
@given(data=st.data())
def test_fuzz_bybit_text(work, bybit_plain, data):
    p = work / "y.data"
    p.write_bytes(data.draw(mutated(bybit_plain)))
    check_reader(p, "bybit", work / "y.hev")


@fuzz_settings(60)
@given(data=st.data())
def test_fuzz_bybit_zip_bytes(work, data):
    """Truncations and mutations of the shared .zip itself."""
    p = work / "y.zip"
    p.write_bytes(data.draw(mutated(data_file("bybit-xrpusdt-ob500.data.zip").read_bytes(), max_ops=2)))
    check_reader(p, "bybit", work / "yz.hev")


def test_zip_with_two_members_or_encryption_flag(work, bybit_plain):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a.data", bybit_plain)
        z.writestr("b.data", bybit_plain)
    p = work / "two.zip"
    p.write_bytes(buf.getvalue())
    with pytest.raises(FeedError, match="exactly one file"):
        load_events(p, "bybit")


# ---------------------------------------------------------------------------------------------------------
# LOBSTER (message file mutated, or its orderbook file)
# ---------------------------------------------------------------------------------------------------------
LOB_MSG = "AAPL_2012-06-21_message_10.csv"
LOB_BOOK = "AAPL_2012-06-21_orderbook_10.csv"


@fuzz_settings(200)
@given(data=st.data(), which=st.sampled_from(["message", "orderbook"]))
def test_fuzz_lobster(work, data, which):
    msg = _lobster_slice("lobster-AAPL-2012-06-21-message-10.csv")
    book = _lobster_slice("lobster-AAPL-2012-06-21-orderbook-10.csv")
    if which == "message":
        msg = data.draw(mutated(msg))
    else:
        book = data.draw(mutated(book))
    (work / LOB_MSG).write_bytes(msg)
    (work / LOB_BOOK).write_bytes(book)
    check_reader(work / LOB_MSG, "lobster", work / "l.hev", work / LOB_BOOK)


# ---------------------------------------------------------------------------------------------------------
# native event files (L2 from Bybit, L3 from LOBSTER): every corruption is refused, never reaches a kernel
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def native_bases(work) -> dict[str, bytes]:
    out = {}
    for name, fmt in (("bybit-xrpusdt-ob500.data.zip", "bybit"), ("lobster-AAPL-2012-06-21-message-10.csv", "lobster")):
        events, report = load_events(data_file(name), fmt)
        p = work / f"base-{fmt}.hev"
        write_native(p, events[:300], report.symbols)
        out[fmt] = p.read_bytes()
    return out


@fuzz_settings(200)
@given(data=st.data(), base=st.sampled_from(["bybit", "lobster"]))
def test_fuzz_native(work, native_bases, data, base):
    p = work / "n.hev"
    p.write_bytes(data.draw(mutated(native_bases[base], max_ops=4)))
    check_reader(p, "native", work / "n2.hev")


FIELD_VALUES = {
    "kind": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 255],
    "symbol": [-(2**31), -1, 0, 1, 2, 2**31 - 1],
    "side": [-128, -2, -1, 0, 1, 2, 127],
    "flags": [0, 1, 2, 3, 4, 7, 8, 16, 255, 65535],
    "price": [-(2**63), -(2**53), -1, 0, 1, 2**53 - 1, 2**53, 2**63 - 1],
    "qty": [-(2**63), -1, 0, 1, 2**53 - 1, 2**53, 2**63 - 1],
    "order_id": [-(2**63), -(2**63) + 1, -1, 0, 1, 2**63 - 1],
    "update_id": [-(2**63), -1, 0, 2**63 - 1],
    "seq": [-1, 0, 1, 2**63 - 1],
    "ts_origin": [-(2**63), -1, 0, 2**63 - 1],
    "ts_exch": [-1, 0, 2**63 - 1],
}


@fuzz_settings(300)
@given(
    base=st.sampled_from(["bybit", "lobster"]),
    edits=st.lists(
        st.tuples(st.integers(0, 299), st.sampled_from(sorted(FIELD_VALUES)), st.integers(0, 13)),
        min_size=1,
        max_size=4,
    ),
)
def test_fuzz_native_record_fields(work, native_bases, base, edits):
    """Field values of records overwritten with extremes: refused naming the record, or valid for the book."""
    path = work / "f.hev"
    path.write_bytes(native_bases[base])
    events, _ = open_native(path)
    ev = np.array(events)
    for i, name, k in edits:
        vals = FIELD_VALUES[name]
        ev[name][i] = vals[k % len(vals)]
    raw = native_bases[base]
    path.write_bytes(raw[: len(raw) - ev.nbytes] + ev.tobytes())
    check_reader(path, "native", work / "f2.hev")


# ---------------------------------------------------------------------------------------------------------
# the configuration loader
# ---------------------------------------------------------------------------------------------------------
INTS = st.one_of(
    st.integers(-3, 300),
    st.sampled_from([4096, 1 << 20, 10**6, 2**31, 2**53, 2**62, 2**63 - 1, 2**63, 2**64, -(2**63), 10**30]),
)
FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, 1e-300, 1e300]))
SCALARS = st.one_of(st.booleans(), INTS, FLOATS, st.text(max_size=12))
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=3), st.dictionaries(st.text(max_size=6), SCALARS, max_size=3))

TABLE_KEYS = {
    "engine": ["duration_s", "ring_capacity", "lockstep", "heartbeat_timeout_ms", "ready_timeout_s", "run_id"],
    "feed": ["source", "path", "format", "lenient", "pace", "rate", "seed", "max_messages", "synthetic"],
    "book": ["window", "overflow", "stale_ns", "vwap_window_ns", "trades_capacity"],
    "risk": ["max_order_qty", "max_notional", "max_position", "rate_per_symbol", "rate_total", "max_open_orders",
             "daily_loss_limit", "capital", "collar_frac", "loss_trip_state", "rate_window_ns"],
    "router": ["capacity", "maker_fee"],
    "strategy": ["name", "mode", "tick_source", "index", "params"],
    "indicators": ["rsi_period", "bb_nbdevup", "macd_fast"],
    "bars": ["interval_ms", "source"],
    "placement": ["workers", "cpus", "reserve_cpus", "wait", "waits", "spin_before_yield", "sleep_us"],
}  # fmt: skip
DOTTED = [f"{t}.{k}" for t, ks in TABLE_KEYS.items() for k in ks] + [
    "feed.synthetic.depth", "feed.synthetic.p_trade", "strategy.params.quote_qty", "strategy.params.half_spread_ticks",
]  # fmt: skip


def toml_value(v) -> str:
    """A value as TOML (strings through JSON's escapes, which TOML's basic strings share)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    return repr(v)  # int, or float: nan, inf, -inf and exponents are TOML too


@st.composite
def toml_documents(draw) -> str:
    lines = []
    for table in draw(st.lists(st.sampled_from([*TABLE_KEYS, "symbols", "venues", "bogus"]), max_size=4, unique=True)):
        if table in ("symbols", "venues"):
            entry = {"name": draw(st.sampled_from(["X", "sim", ""])), "tick_size": draw(SCALARS),
                     "lot_size": draw(SCALARS), "venue": "sim", "params": draw(VALUES)}  # fmt: skip
            keys = draw(st.lists(st.sampled_from(list(entry)), max_size=5, unique=True))
            lines.append(f"[[{table}]]")
            lines += [f"{json.dumps(k)} = {toml_value(entry[k])}" for k in keys]
            continue
        lines.append(f"[{table}]")
        known = TABLE_KEYS.get(table, ["x"])
        for key in draw(st.lists(st.one_of(st.sampled_from(known), st.text(max_size=6)), max_size=4, unique=True)):
            lines.append(f"{json.dumps(key)} = {toml_value(draw(VALUES))}")
    return "\n".join(lines) + "\n"


def config_outcome(shown: Path, **kw) -> None:
    """A configuration that builds and loads back from its own printout, or one clean ConfigError."""
    try:
        cfg = load_config(**kw)
        check_config(cfg)
    except ConfigError as e:
        assert str(e) and "\n" not in str(e), str(e)
        return
    shown.write_text(dump_toml(cfg))
    assert load_config(shown) == cfg


@fuzz_settings(400)
@given(doc=toml_documents())
def test_fuzz_config_documents(work, doc):
    p = work / "c.toml"
    p.write_text(doc, encoding="utf-8", errors="surrogatepass")
    config_outcome(work / "shown.toml", path=p)


@fuzz_settings(200)
@given(data=st.data())
def test_fuzz_config_bytes(work, data):
    """Random bytes and mutations of the starter file (non-UTF-8, broken syntax, odd values)."""
    raw = data.draw(st.one_of(st.binary(max_size=300), mutated(DEFAULT_TOML.encode())))
    p = work / "m.toml"
    p.write_bytes(raw)
    config_outcome(work / "shown.toml", path=p)


@fuzz_settings(300)
@given(overrides=st.dictionaries(st.sampled_from(DOTTED), VALUES, min_size=1, max_size=3))
def test_fuzz_config_overrides(work, overrides):
    """CLI-style overrides of any key with any value."""
    config_outcome(work / "shown.toml", overrides=overrides)
