"""Untrusted input (issue 12): recordings, configurations and output paths are checked before the engine
sees them, and each problem is one line naming the file (and key, line or record) -- never a traceback, a
worker crash, a run that never ends or a partial output file. Safe risk limits are on by default.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import zipfile
from pathlib import Path

import pytest
from conftest import data_file

from hean.cli import main
from hean.engine.build import check_config
from hean.engine.config import DEFAULT_TOML, ConfigError, factory_defaults, load_config
from hean.feeds import DEFAULT_MAX_SKIPPED, load_events
from hean.feeds.common import FeedError
from hean.stages.risk import make_risk

BINANCE = "binance-usdm-btcusdt-20240808.gz"
BYBIT = "bybit-xrpusdt-ob500.data.zip"


def binance_lines(n: int) -> list[bytes]:
    return gzip.decompress(data_file(BINANCE).read_bytes()).split(b"\n")[:n]


def write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


# ---------------------------------------------------------------------------------------------------------
# readers: a path that is not a readable recording, a damaged archive
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["binance-usdm", "bybit", "lobster", "native"])
def test_directory_and_missing_input_are_one_feed_error(tmp_path, fmt):
    with pytest.raises(FeedError, match=f"^{tmp_path}: is a directory"):
        load_events(tmp_path, fmt)
    missing = tmp_path / "missing_message_1.csv"
    with pytest.raises(FeedError, match=f"^{missing}: no such file"):
        load_events(missing, fmt)


def test_unreadable_input_is_one_feed_error(tmp_path, monkeypatch):
    p = tmp_path / "r.txt"
    p.write_bytes(b"")

    def denied(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", denied)  # root reads any file: the refusal is simulated
    with pytest.raises(FeedError, match=r"r\.txt: cannot read: Permission denied"):
        load_events(p, "binance-usdm")


@pytest.mark.parametrize(
    ("recording", "fmt", "name", "error", "keep"),
    [(BYBIT, "bybit", "t.zip", r"t\.zip: corrupt or truncated zip", k) for k in (0.05, 0.5, 0.9, 0.999)]
    + [(BINANCE, "binance-usdm", "t.gz", r"t\.gz: corrupt gzip", k) for k in (0.1, 0.5, 0.99)],
)
def test_truncated_compressed_recording_is_one_feed_error(tmp_path, recording, fmt, name, error, keep):
    raw = data_file(recording).read_bytes()
    p = tmp_path / name
    p.write_bytes(raw[: int(len(raw) * keep)])
    with pytest.raises(FeedError, match=error):
        load_events(p, fmt)


# ---------------------------------------------------------------------------------------------------------
# readers: bounded values become bad lines (named, skippable), never out-of-range events
# ---------------------------------------------------------------------------------------------------------
def _trade(p="100.5", q="1", t=1, T=1, recv="123"):
    data = {"e": "trade", "E": 1, "T": T, "s": "BTCUSDT", "t": t, "p": p, "q": q, "m": False}
    return f"{recv} {json.dumps({'stream': 'btcusdt@trade', 'data': data})}".encode()


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (_trade(p="-5.0"), "value -5 is not a price in (0, 2**53) ticks of BTCUSDT"),
        (_trade(p="0"), "value 0 is not a price in (0, 2**53) ticks"),
        (_trade(p="999999999999999999"), "is not a price in (0, 2**53) ticks"),
        (_trade(q="99999999999999999"), "is not a quantity below 2**53 lots"),
        (_trade(T=10**15), "time out of range"),
        (_trade(T=-1), "time out of range"),
        (_trade(t=2**63), "Expected `int` <= 4611686018427387904"),  # msgspec: beyond int64
        (_trade(recv="9999999999999999999"), "time out of range: receive"),  # 19 digits: wraps negative
    ],
)
def test_binance_values_out_of_bounds_are_bad_lines(tmp_path, line, reason):
    p = write_lines(tmp_path / "cap.txt", [_trade(), line, _trade()])
    with pytest.raises(FeedError, match=r"cap\.txt:2: .*" + re.escape(reason)):
        load_events(p, "binance-usdm")
    events, report = load_events(p, "binance-usdm", lenient=0.5)
    assert report.skipped == 1 and len(events) == 2


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda m: m.update(ts=-5), "time -5 ms out of range"),
        (lambda m: m.update(ts=2**64 - 1), "time 18446744073709551615 ms out of range"),
        (lambda m: m["data"].update(u=2**63), "update id 9223372036854775808 out of range"),
    ],
)
def test_bybit_values_out_of_bounds_are_bad_lines(tmp_path, mutate, reason):
    with zipfile.ZipFile(data_file(BYBIT)) as z:
        lines = z.read(z.namelist()[0]).split(b"\n")[:3]
    m = json.loads(lines[1])
    mutate(m)
    lines[1] = json.dumps(m).encode()
    p = write_lines(tmp_path / "y.data", lines)
    with pytest.raises(FeedError, match=rf"y\.data:2: bad message: {reason}"):
        load_events(p, "bybit")


def _lobster(tmp_path, fields: dict[int, str], book_fields: dict[int, str] | None = None) -> Path:
    """The first 5 messages of the LOBSTER sample, message 3's cells (and its orderbook row's) replaced."""
    msg = data_file("lobster-AAPL-2012-06-21-message-10.csv").read_text().splitlines()[:5]
    book = data_file("lobster-AAPL-2012-06-21-orderbook-10.csv").read_text().splitlines()[:5]
    for lines, repl in ((msg, fields), (book, book_fields or {})):
        cells = lines[2].split(",")
        for i, v in repl.items():
            cells[i] = v
        lines[2] = ",".join(cells)
    (tmp_path / "AAPL_2012-06-21_message_10.csv").write_text("\n".join(msg) + "\n")
    (tmp_path / "AAPL_2012-06-21_orderbook_10.csv").write_text("\n".join(book) + "\n")
    return tmp_path / "AAPL_2012-06-21_message_10.csv"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({3: "99999999999999999999"}, "size 99999999999999999999 out of range"),
        ({2: "-5"}, "order id -5 out of range"),
        ({4: "-5853100"}, "price -58531 out of range"),
        ({4: "900719925474099200000"}, "price 9007199254740992000 out of range"),
        ({0: "99999999999.5"}, "bad time"),
        ({}, None),  # unchanged: fine
    ],
)
def test_lobster_values_out_of_bounds_are_bad_lines(tmp_path, fields, reason):
    p = _lobster(tmp_path, fields)
    if reason is None:
        events, _ = load_events(p, "lobster")
        assert len(events) > 0
        return
    with pytest.raises(FeedError, match=rf"message_10\.csv:3: {reason}"):
        load_events(p, "lobster")


def test_lobster_orderbook_value_out_of_bounds(tmp_path):
    p = _lobster(tmp_path, {}, {1: "-7"})
    with pytest.raises(FeedError, match=r"message_10\.csv:3: orderbook size -7 out of range"):
        load_events(p, "lobster")


def test_lobster_bad_date_in_the_file_name(tmp_path):
    msg = tmp_path / "AAPL_2012-13-45_message_10.csv"
    msg.write_bytes(data_file("lobster-AAPL-2012-06-21-message-10.csv").read_bytes())
    (tmp_path / "AAPL_2012-13-45_orderbook_10.csv").write_bytes(
        data_file("lobster-AAPL-2012-06-21-orderbook-10.csv").read_bytes()
    )
    with pytest.raises(FeedError, match="the date 2012-13-45 in the file name is not a calendar date"):
        load_events(msg, "lobster")


# ---------------------------------------------------------------------------------------------------------
# a book that never synchronises is a failure with the reason
# ---------------------------------------------------------------------------------------------------------
def test_binance_recording_without_snapshot_never_syncs(tmp_path):
    lines = [ln for ln in binance_lines(2000) if b"lastUpdateId" not in ln]
    p = write_lines(tmp_path / "nosnap.txt", lines)
    with pytest.raises(FeedError) as e:
        load_events(p, "binance-usdm")
    assert str(e.value).startswith(f"{p}: the order book never synchronised: the recording has no depth snapshot")
    assert "depth updates could be applied" in str(e.value)


def test_bybit_recording_without_snapshot_never_syncs(tmp_path):
    with zipfile.ZipFile(data_file(BYBIT)) as z:
        lines = [ln for ln in z.read(z.namelist()[0]).split(b"\n") if ln and b'"snapshot"' not in ln]
    p = write_lines(tmp_path / "deltas.data", lines)
    with pytest.raises(FeedError, match=r"deltas\.data: the order book never synchronised: .*no depth snapshot"):
        load_events(p, "bybit")


def test_recording_without_depth_data_is_not_a_sync_failure(tmp_path):
    """Trades only: nothing was dropped, so there is nothing to synchronise (the reader's counters say so)."""
    p = write_lines(tmp_path / "trades.txt", [_trade(), _trade(t=2)])
    events, _ = load_events(p, "binance-usdm")
    assert len(events) == 2


def test_replay_that_never_syncs_fails_with_the_reason(tmp_path, capsys):
    lines = [ln for ln in binance_lines(400) if b"lastUpdateId" not in ln]
    p = write_lines(tmp_path / "nosnap.txt", lines)
    assert main(["replay", str(p), "--format", "binance-usdm", "--quiet"]) == 2
    assert "the order book never synchronised" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------
# lenient mode: a maximum share of skipped lines
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture
def mostly_garbage(tmp_path) -> Path:
    """The issue's case: 720 of 722 lines unreadable (the two good ones are trades)."""
    return write_lines(tmp_path / "garbage.txt", [_trade(), _trade(t=2)] + [b"garbage"] * 720)


@pytest.mark.parametrize(
    ("lenient", "ok"),
    [(True, False), (0.5, False), (0.997, False), (0.9973, True), (1.0, True)],
)
def test_lenient_share_of_skipped_lines(mostly_garbage, lenient, ok):
    if ok:
        _, report = load_events(mostly_garbage, "binance-usdm", lenient=lenient)
        assert report.skipped == 720 and report.lines == 722
        return
    share = DEFAULT_MAX_SKIPPED if lenient is True else lenient
    with pytest.raises(FeedError) as e:
        load_events(mostly_garbage, "binance-usdm", lenient=lenient)
    msg = str(e.value)
    assert msg.startswith(f"{mostly_garbage}: 720 of 722 lines skipped (99.7%), more than the {share:.1%}")
    assert "first: line 3: expected '<receive time ns> <json>'; line 4:" in msg and "\n" not in msg


def test_lenient_within_the_default_share(tmp_path):
    lines = binance_lines(300)
    p = write_lines(tmp_path / "one.txt", lines[:150] + [b"garbage"] + lines[150:])
    _, report = load_events(p, "binance-usdm", lenient=True)
    assert report.skipped == 1 and report.skipped_share() < DEFAULT_MAX_SKIPPED


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), float("inf")])
def test_lenient_share_must_be_a_share(tmp_path, bad):
    with pytest.raises(ValueError, match="lenient must be"):
        load_events(tmp_path / "x", "binance-usdm", lenient=bad)


@pytest.mark.parametrize(("arg", "share"), [([], "1.0%"), (["0.5"], "50.0%"), (["50%"], "50.0%")])
def test_replay_lenient_cli_takes_a_share(mostly_garbage, capsys, arg, share):
    """``--lenient`` alone allows 1 %; ``--lenient SHARE`` (0.5 or 50%) that share. Fails before any worker."""
    assert main(["replay", str(mostly_garbage), "--format", "binance-usdm", "--lenient", *arg, "--quiet"]) == 2
    assert f"720 of 722 lines skipped (99.7%), more than the {share}" in capsys.readouterr().err


def test_lenient_cli_rejects_a_bad_share(capsys):
    with pytest.raises(SystemExit) as e:
        main(["convert", "x", "--format", "bybit", "--lenient", "lots", "-o", "y"])
    assert e.value.code == 2 and "not a share of lines: 'lots'" in capsys.readouterr().err


def test_lenient_config_key(tmp_path, mostly_garbage):
    cfg = load_config(overrides={"feed.lenient": 0.25})
    assert cfg.feed.lenient == 0.25
    with pytest.raises(ConfigError, match="'feed.lenient': must be <= 1.0, got 2.0"):
        load_config(overrides={"feed.lenient": 2.0})
    p = tmp_path / "l.toml"
    p.write_text(f'[feed]\nsource = "replay"\npath = "{mostly_garbage}"\nformat = "binance-usdm"\nlenient = true\n')
    assert load_config(p).feed.lenient is True


# ---------------------------------------------------------------------------------------------------------
# configuration: every number finite and in range, every path checked, one ConfigError line
# ---------------------------------------------------------------------------------------------------------
CONFIG_ERRORS = [
    ({"engine.duration_s": float("nan")}, "key 'engine.duration_s': must be a finite number, got nan"),
    ({"engine.duration_s": float("inf")}, "key 'engine.duration_s': must be a finite number, got inf"),
    ({"engine.duration_s": 1e12}, "key 'engine.duration_s': must be <= 1000000000.0"),
    ({"engine.drain_timeout_s": float("nan")}, "key 'engine.drain_timeout_s': must be a finite number"),
    ({"engine.ready_timeout_s": -1.0}, "key 'engine.ready_timeout_s': must be >= 0"),
    ({"engine.heartbeat_timeout_ms": 2**70}, "key 'engine.heartbeat_timeout_ms': must be <= 3600000"),
    ({"engine.ring_capacity": 2**40}, "key 'engine.ring_capacity': must be <= 16777216"),
    ({"feed.rate": float("nan")}, "key 'feed.rate': must be a finite number, got nan"),
    ({"feed.rate": float("inf")}, "key 'feed.rate': must be a finite number, got inf"),
    ({"feed.rate": -1.0}, "key 'feed.rate': must be > 0 messages per second"),
    ({"feed.rate": 1e-300}, "key 'feed.rate': must be >= 0.001"),
    ({"feed.max_messages": 2**63}, "key 'feed.max_messages': must be <= 4611686018427387904"),
    ({"feed.seed": -1}, "key 'feed.seed': must be >= 0"),
    ({"feed.synthetic": {"depth": "abc"}}, "key 'feed.synthetic.depth': expected int, got str 'abc'"),
    ({"feed.synthetic": {"depth": True}}, "key 'feed.synthetic.depth': expected int, got bool"),
    ({"feed.synthetic": {"depth": 1}}, "key 'feed.synthetic.depth': must be >= 2"),
    ({"placement.sleep_us": 2**62}, "key 'placement.sleep_us': must be <= 1000000"),
    ({"placement.spin_before_yield": -3}, "key 'placement.spin_before_yield': must be >= 0"),
    ({"symbols": [{"name": "X", "tick_size": "1e300", "lot_size": "1"}]}, "key 'symbols[0].tick_size': must be below"),
    ({"symbols": [{"name": "X", "tick_size": "1e-30", "lot_size": "1"}]}, "key 'symbols[0]': symbol X: step sizes"),
    ({"strategies": [{"path": "market_maker", "mode": "candle"}]}, "key 'strategies[0].mode': one of ['tick', 'bar']"),
    ({"strategies": [{"path": "market_maker", "timer_ms": -5}]}, "key 'strategies[0]': timer_ms >= 0"),
    ({"strategies": [{"path": "market_maker", "depth": 65}]}, "key 'strategies[0].depth': levels per side in 0 .. 64"),
    ({"strategies": [{"path": "market_maker"}] * 9}, "key 'strategies': at most 8 strategies, got 9"),
    ({"strategies": [{"path": "market_maker", "symbols": ["SYN-A", "SYN-A"]}]}, "a symbol twice"),
    ({"strategies": [{"path": "market_maker", "speed": 1}]}, "unknown key 'strategies[0].speed'"),
]


@pytest.mark.parametrize(("overrides", "message"), CONFIG_ERRORS)
def test_numbers_finite_and_in_range(overrides, message):
    with pytest.raises(ConfigError) as e:
        load_config(overrides=overrides)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_reserving_every_cpu_is_an_error():
    n = len(os.sched_getaffinity(0))
    most = max(1, n - 1)
    with pytest.raises(
        ConfigError, match=rf"'placement.reserve_cpus': {n + 3} would leave no CPU .* so at most {most}"
    ):
        load_config(overrides={"placement.reserve_cpus": n + 3})
    load_config(overrides={"placement.reserve_cpus": most})


STAGE_ERRORS = [
    ({"book": {"window": "x"}}, "key 'book.window': expected int, got str 'x'"),
    ({"book": {"window": 2**40}}, "key 'book.window': must be <= 4194304"),
    ({"book": {"vwap_window_ns": 10**30}}, "key 'book.vwap_window_ns': 10000000000000000000000"),
    ({"risk": {"max_notional": float("nan")}}, "key 'risk.max_notional': must be a finite number, got nan"),
    ({"risk": {"capital": float("inf")}}, "key 'risk.capital': must be a finite number, got inf"),
    ({"risk": {"max_position": "ten"}}, "key 'risk.max_position': expected int, got str 'ten'"),
    ({"risk": {"rate_per_symbol": 10**12}}, "key 'risk.rate_per_symbol': must be <= 1000000"),
    ({"risk": {"max_order_qty": 2**70}}, "key 'risk.max_order_qty': 1180591620717411303424 is out of range"),
    ({"router": {"capacity": 2**40}}, "key 'router.capacity': must be <= 16777216"),
    ({"strategy.params": {"quote_qty": "x"}}, "parameter 'quote_qty' must be a number, got 'x'"),
    ({"strategy.params": {"half_spread_ticks": float("nan")}}, "parameter 'half_spread_ticks' must be a number"),
    ({"venues": [{"name": "sim", "params": {"reject_prob": float("nan")}}]},
     "key 'venues[0].params.reject_prob': must be a finite number"),
    ({"venues": [{"name": "sim", "params": {"entry_latency_ns": "x"}}]},
     "key 'venues[0].params.entry_latency_ns': expected int"),
    ({"venues": [{"name": "sim", "params": {"seed": 2**70}}]}, "key 'venues[0].params.seed': 1180591620717411303424"),
    ({"feed.synthetic": {"p_trade": "x"}}, "key 'feed.synthetic.p_trade': expected float, got str 'x'"),
    ({"feed.synthetic": {"max_qty": 1.5}}, "key 'feed.synthetic.max_qty': expected int, got float"),
    ({"indicators": {"rsi_period": "x"}}, "rsi_period must be an integer"),
    ({"strategies": [{"path": "nowhere/nope.py:STRATEGY"}]}, "strategy file 'nowhere/nope.py': no such file"),
    ({"strategies": [{"path": "market_maker", "symbols": ["XYZ"]}]}, "'strategies[0].symbols': no symbol 'XYZ'"),
    ({"strategies": [{"path": "market_maker", "params": {"nope": 1}}]}, "has no parameter 'nope'"),
    ({"strategies": [{"path": "hean.strategies.nope:STRATEGY"}]}, "strategy module 'hean.strategies.nope'"),
    ({"strategies": [{"path": "hean.api:Ctx"}]}, "has Ctx = type, not a hean.api.Strategy"),
    ({"strategy": {"name": "nope"}}, "expected 'file.py:NAME' or 'package.module:NAME'"),
]  # fmt: skip


@pytest.mark.parametrize(("overrides", "message"), STAGE_ERRORS)
def test_stage_tables_wrong_type_or_value_name_the_key(overrides, message):
    with pytest.raises(ConfigError) as e:
        check_config(load_config(overrides=overrides))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_venue_wide_params_are_one_value_for_all_venues():
    """seed, capacity, ... are not per venue: a table value used to crash make_venue with a numpy error."""
    venues = [{"name": "sim", "params": {"capacity": 8192, "seed": 3}}]
    check_config(load_config(overrides={"venues": venues}))
    two = [{"name": "sim", "params": {"seed": 3}}, {"name": "b", "params": {"seed": 4}}]
    with pytest.raises(ConfigError, match=r"'venues.params.seed': one value for every venue, got \[3, 4\]"):
        check_config(load_config(overrides={"venues": two}))


CONFIG_FILES = [
    (None, "is a directory, not a configuration file"),
    ("missing.toml", "missing.toml: no such file"),
    ("latin1.toml", "latin1.toml: not UTF-8 text (byte 22)"),
    ("syntax.toml", "syntax.toml: not valid TOML"),
    ("deep.toml", "deep.toml: not valid TOML"),
    ("scalar.toml", "scalar.toml: key 'engine'"),
    ("depth.toml", "depth.toml: key 'feed.synthetic.depth': expected int"),
]
CONFIG_TEXT = {
    "latin1.toml": "[engine]\nrun_id = 'caf\xe9'\n".encode("latin-1"),
    "syntax.toml": b"[engine\n",
    "deep.toml": b"x = " + b"[" * 100_000,
    "scalar.toml": b'engine = "fast"\n',
    "depth.toml": b'[feed.synthetic]\ndepth = "abc"\n',
}


@pytest.mark.parametrize(("name", "message"), CONFIG_FILES)
def test_config_file_problems_are_one_config_error(tmp_path, name, message):
    path = tmp_path if name is None else tmp_path / name
    if name in CONFIG_TEXT:
        path.write_bytes(CONFIG_TEXT[name])
    with pytest.raises(ConfigError) as e:
        load_config(path, overrides={"engine.duration_s": 1.0})
    assert message in str(e.value) and "\n" not in str(e.value)


def test_override_below_a_scalar_is_one_config_error(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text('feed = "x"\n')
    with pytest.raises(ConfigError, match=r"s\.toml: key 'feed' must be a table"):
        load_config(p, overrides={"feed.rate": 5.0})


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (lambda d: d, "is a directory, not a recording"),
        (lambda d: d / "missing.gz", "missing.gz: no such file"),
    ],
)
def test_replay_path_must_be_a_readable_file(tmp_path, path, message):
    over = {"feed.source": "replay", "feed.format": "binance-usdm", "feed.path": str(path(tmp_path))}
    with pytest.raises(ConfigError, match=f"key 'feed.path': .*{message}"):
        load_config(overrides=over)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--duration", "nan"], "key 'engine.duration_s': must be a finite number, got nan"),
        (["run", "--rate", "nan"], "key 'feed.rate': must be a finite number, got nan"),
        (["run", "--rate", "inf"], "key 'feed.rate': must be a finite number, got inf"),
        (["run", "--config", "{tmp}"], "is a directory, not a configuration file"),
        (["run", "--config", "{tmp}/missing.toml"], "missing.toml: no such file"),
        (["run", "--config", "{tmp}/bad.toml"], "bad.toml: key 'feed.synthetic.depth': expected int, got str 'abc'"),
        (["run", "--config", "{tmp}/nan.toml"], "nan.toml: key 'feed.rate': must be a finite number, got nan"),
        (["run", "--config", "{tmp}/reserve.toml"], "'placement.reserve_cpus'"),
        (["replay", "{tmp}", "--format", "native"], "key 'feed.path': {tmp} is a directory, not a recording"),
        (["config", "show", "--config", "{tmp}/risk.toml"], "key 'risk.max_notional': must be a finite number"),
    ],
)
def test_cli_configuration_errors_exit_2_with_one_line(tmp_path, capsys, args, message):
    (tmp_path / "bad.toml").write_text('[feed.synthetic]\ndepth = "abc"\n')
    (tmp_path / "nan.toml").write_text("[feed]\nrate = nan\n")
    (tmp_path / "reserve.toml").write_text(f"[placement]\nreserve_cpus = {len(os.sched_getaffinity(0)) + 3}\n")
    (tmp_path / "risk.toml").write_text("[risk]\nmax_notional = nan\n")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("hean: configuration error: ") and message.replace("{tmp}", str(tmp_path)) in err, err
    assert err.count("\n") == 1 and "Traceback" not in err


# ---------------------------------------------------------------------------------------------------------
# outputs: checked before the work, written atomically
# ---------------------------------------------------------------------------------------------------------
OUTPUT_PROBLEMS = [
    (lambda d: str(d), "is a directory"),
    (lambda d: str(d / "no" / "such" / "top.csv"), "does not exist"),
    (lambda d: "/proc/hean-test-out.csv", "cannot write there"),  # no file can be created in /proc, root or not
]


@pytest.mark.parametrize("cmd", ["book", "convert"])
@pytest.mark.parametrize(("output", "message"), OUTPUT_PROBLEMS)
def test_bad_output_is_one_line_exit_2_before_any_work(tmp_path, capsys, cmd, output, message):
    out = output(tmp_path)
    # the input does not exist: the output is checked first, so that is not what is reported
    args = [cmd, str(tmp_path / "missing.gz"), "--format", "binance-usdm"]
    args += ["--top-csv", out] if cmd == "book" else ["-o", out]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hean {cmd}: output {out}: ") and message in err, err
    assert err.count("\n") == 1 and "missing.gz" not in err


def test_book_csv_is_written_atomically(tmp_path, monkeypatch, capsys):
    from hean.commands import book

    out = tmp_path / "top.csv"
    out.write_text("previous\n")

    def failing(f, states, table):
        f.write("recv_ns,symbol,update_id,bid_px,bid_qty,ask_px,ask_qty\n1,X,")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(book, "write_top_csv", failing)
    assert main(["book", str(data_file(BYBIT)), "--format", "bybit", "--top-csv", str(out)]) == 2
    assert "cannot write" in capsys.readouterr().err and "No space left on device"
    assert out.read_text() == "previous\n"  # never a partial file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["top.csv"]  # no temp file left


def test_native_output_is_written_atomically(tmp_path, monkeypatch, capsys):
    from hean.feeds import native

    out = tmp_path / "x.hev"

    def failing(src, dst):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(native.os, "replace", failing)
    assert main(["convert", str(data_file(BYBIT)), "--format", "bybit", "-o", str(out)]) == 2
    assert "hean convert: cannot write" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_config_init_checks_and_writes_atomically(tmp_path, capsys):
    assert main(["config", "init", str(tmp_path / "no" / "h.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["config", "init", str(tmp_path), "--force"]) == 2
    assert "is a directory" in capsys.readouterr().err
    p = tmp_path / "h.toml"
    assert main(["config", "init", str(p)]) == 0
    assert p.read_text() == DEFAULT_TOML and sorted(x.name for x in tmp_path.iterdir()) == ["h.toml"]


# ---------------------------------------------------------------------------------------------------------
# safe by default
# ---------------------------------------------------------------------------------------------------------
SAFE_LIMITS = ["max_order_qty", "max_notional", "max_position", "max_open_orders", "rate_per_symbol", "rate_total",
               "daily_loss_limit"]  # fmt: skip


def test_risk_limits_are_on_by_default():
    defaults = factory_defaults(make_risk)
    assert all(defaults[k] > 0 for k in SAFE_LIMITS), {k: defaults[k] for k in SAFE_LIMITS}
    risk = make_risk(2)
    assert risk.max_order_qty.min() > 0 and risk.max_position.min() > 0 and risk.max_notional.min() > 0
    assert risk.rate_symbol.min() > 0 and risk.lim_i.min() >= 0 and risk.lim_f[2] > 0  # daily loss


def test_starter_file_states_the_same_limits():
    cfg = load_config()
    defaults = factory_defaults(make_risk)
    assert {k: cfg.risk[k] for k in SAFE_LIMITS} == {k: defaults[k] for k in SAFE_LIMITS}
    assert "[risk]" in DEFAULT_TOML and all(f"\n{k} = " in DEFAULT_TOML for k in SAFE_LIMITS)


def test_config_show_prints_every_stage_default(capsys):
    import tomllib

    from hean.stages.book import book_tables as book_factory
    from hean.strategies.plugin import declaration, resolve_params

    assert main(["config", "show"]) == 0
    shown = tomllib.loads(capsys.readouterr().out)
    risk = factory_defaults(make_risk, skip=("value_per_tick_lot",))
    assert shown["risk"] == risk and len(risk) >= 20
    assert shown["book"] == factory_defaults(book_factory)
    assert shown["strategy"]["params"] == resolve_params(declaration("market_maker"), {})
    assert set(shown["feed"]["synthetic"]) >= {"depth", "start_px", "p_trade"}
    assert {"interval_ms", "source"} <= set(shown["bars"]) and "rsi_period" in shown["indicators"]
    assert "capacity" in shown["router"] and "entry_latency_ns" in shown["venues"][0]["params"]


def test_config_show_loads_back_as_the_same_configuration(tmp_path, capsys):
    from hean.commands.config import with_defaults

    assert main(["config", "show"]) == 0
    p = tmp_path / "shown.toml"
    p.write_text(capsys.readouterr().out)
    cfg = load_config(p)
    check_config(cfg)
    assert cfg == with_defaults(load_config())


def test_default_limits_reach_the_risk_stage():
    from hean.engine.build import build_stages
    from hean.engine.topology import private_views

    cfg = load_config()
    risk = build_stages(cfg, private_views(cfg))["risk"].risk
    assert risk.max_order_qty.tolist() == [1000, 1000] and risk.max_notional.tolist() == [1e6, 1e6]


@pytest.mark.parametrize(
    ("where", "problem"),
    [("dir", "is a directory"), ("missing/x.json", "does not exist"), ("/proc/x.json", "cannot write there")],
)
def test_run_json_output_is_checked_before_the_run(tmp_path, capsys, where, problem):
    """An unwritable --json path is one line and exit 2 before anything starts (it was noticed only after
    the whole run, and the result was lost)."""
    from hean.cli import main

    (tmp_path / "dir").mkdir()
    path = where if where.startswith("/") else str(tmp_path / where)
    assert main(["run", "--json", path, "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"hean: configuration error: --json output {path}: ")
    assert problem in err[0]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("symbol", 3, r"record 7: symbol 3 out of range \[0, 1\)"),  # once a SIGSEGV in the worker
        ("kind", 99, r"record 7: kind 99"),
        ("price", -(2**62), r"record 7: price"),  # once a crossed book, ask -4.6e17
    ],
)
def test_replay_of_a_corrupt_native_file_is_one_error_before_any_worker(tmp_path, capsys, field, value, message):
    """A native file whose records were changed behind HEAN's back: the replay stops at load, naming the file,
    the record and the field; no worker ever maps it."""
    from hean.feeds.native import write_native

    events, report = load_events(data_file(BYBIT), "bybit")
    good = tmp_path / "good.hev"
    write_native(good, events, report.symbols)
    raw = bytearray(good.read_bytes())
    offset = len(raw) - events.nbytes + 7 * events.dtype.itemsize + events.dtype.fields[field][1]
    size = events.dtype.fields[field][0].itemsize
    raw[offset : offset + size] = int(value).to_bytes(size, "little", signed=True)
    bad = tmp_path / "bad.hev"
    bad.write_bytes(bytes(raw))
    assert main(["replay", str(bad), "--format", "native", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0] and re.search(message, err[0]), err
