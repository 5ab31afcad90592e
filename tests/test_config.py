"""Configuration: the embedded default, files, overrides, and one clear error per kind of mistake."""

from __future__ import annotations

import tomllib

import msgspec
import pytest

from hean.engine.config import (
    DEFAULT_TOML,
    STAGES,
    Config,
    ConfigError,
    dump_toml,
    load_config,
    stage_kwargs,
)


def test_default_needs_no_file():
    cfg = load_config()
    assert cfg.feed.source == "synthetic"
    assert [s.name for s in cfg.symbols] == ["SYN-A", "SYN-B"]
    assert cfg.engine.ring_capacity == 4096


def test_starter_file_is_the_default():
    assert msgspec.convert(tomllib.loads(DEFAULT_TOML), Config) == load_config()


def test_dump_round_trips():
    cfg = load_config(overrides={"engine.duration_s": 1.5, "strategy.params": {"spread_ticks": 3}})
    assert msgspec.convert(tomllib.loads(dump_toml(cfg)), Config) == cfg


@pytest.mark.parametrize("name", ["BTC/USDT", "ES H4", "é", "a.b"])
def test_dump_quotes_keys_that_are_not_bare(tmp_path, name):
    """A symbol named with a slash, a space, a non-ASCII letter or a dot keys ``[risk.symbols]``: the dump
    quotes it, and the file loads back to the same configuration (found by test_fuzz_config_documents)."""
    path = tmp_path / "c.toml"
    path.write_text(f'[[symbols]]\nname = "{name}"\ntick_size = "0.1"\nlot_size = "1"\n'
                    f'[risk.symbols."{name}"]\nmax_position = 5\n', encoding="utf-8")  # fmt: skip
    cfg = load_config(path)
    assert msgspec.convert(tomllib.loads(dump_toml(cfg)), Config) == cfg


def test_overrides_change_only_their_own_load():
    """The embedded default is parsed once per process: an override, even of a nested table, must not
    reach the next load."""
    base = load_config()
    changed = load_config(overrides={"feed.synthetic": {"depth": 7}, "risk.max_position": 3, "engine.duration_s": 2})
    assert changed.feed.synthetic["depth"] == 7 and changed.risk["max_position"] == 3
    assert load_config() == base and base.feed.synthetic.get("depth") != 7


def test_file_holds_only_what_it_changes(tmp_path):
    path = tmp_path / "hean.toml"
    path.write_text("[engine]\nduration_s = 0.5\n[feed]\nrate = 1000\n")
    cfg = load_config(path)
    assert cfg.engine.duration_s == 0.5 and cfg.feed.rate == 1000
    assert [s.name for s in cfg.symbols] == ["SYN-A", "SYN-B"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"engine.ring_capacity": 1000}, "'engine.ring_capacity': must be a power of two"),
        ({"engine.ring_capacity": 1}, "'engine.ring_capacity': must be a power of two"),
        ({"engine.ring_capacity": 128}, "'engine.ring_capacity': must be a power of two >= 256, got 128"),
        (
            {"engine.ring_capacity": 256, "feed.synthetic": {"depth": 80}},
            "'engine.ring_capacity': 256 slots cannot hold two synthetic snapshots of depth 80 "
            "(161 events each); use at least 1024",
        ),
        ({"engine.bogus": 1}, "unknown key 'engine.bogus'"),
        ({"nonsense": {"a": 1}}, "unknown key 'nonsense'"),
        ({"engine": {"\n": False}}, """unknown key 'engine."\\n"'"""),  # a control character: escaped, one line
        ({"feed.source": "x\ny"}, "'feed.source': Invalid enum value 'x\\ny'"),
        ({"engine.duration_s": "ten"}, "'engine.duration_s': Expected `float`, got `str`"),
        ({"engine.duration_s": -1.0}, "'engine.duration_s': must be >= 0"),
        ({"engine.heartbeat_timeout_ms": 0}, "'engine.heartbeat_timeout_ms': must be > 0"),
        ({"engine.run_id": "a b"}, "'engine.run_id'"),
        ({"feed.rate": -5.0}, "'feed.rate': must be > 0"),
        ({"feed.source": "kafka"}, "'feed.source'"),
        ({"feed.source": "replay"}, "'feed.path': a replay needs"),
        ({"feed.source": "replay", "feed.path": "x", "feed.format": "csv"}, "'feed.format'"),
        ({"feed.pace": "recorded"}, "'feed.pace': 'recorded' needs a replay"),
        ({"symbols": []}, "at least one [[symbols]]"),
        ({"symbols": [{"name": "X", "tick_size": "-0.1", "lot_size": "1"}]}, "'symbols[0].tick_size'"),
        ({"symbols": [{"name": "X", "tick_size": "abc", "lot_size": "1"}]}, "not a decimal number"),
        ({"symbols": [{"name": "X", "tick_size": "0.1", "lot_size": "0"}]}, "'symbols[0].lot_size'"),
        (
            {
                "symbols": [
                    {"name": "X", "tick_size": "1", "lot_size": "1"},
                    {"name": "X", "tick_size": "1", "lot_size": "1"},
                ]
            },
            "'symbols[1].name': duplicate symbol",
        ),
        (
            {"symbols": [{"name": "X", "tick_size": "1", "lot_size": "1", "venue": "nyse"}]},
            "unknown venue 'nyse'",
        ),
        ({"venues": [{"name": "a"}, {"name": "a"}]}, "venue names must be unique"),
        ({"placement.cpus": [0, 999]}, "'placement.cpus': CPU(s) [999] not available"),
        ({"placement.workers": [["book"], ["feed"]]}, "'placement.workers': must list every stage"),
        ({"placement.workers": [["feed", "risk"]]}, "'placement.workers': must list every stage"),
        ({"placement.workers": [["feed", "oracle"]]}, "unknown stage(s) ['oracle']"),
        ({"placement.wait": "nap"}, "'placement.wait'"),
        ({"placement.waits": ["spin", "nap"]}, "'placement.waits[1]'"),
        ({"placement.sleep_us": -1}, "'placement.sleep_us': must be >= 0"),
        ({"placement.reserve_cpus": -1}, "'placement.reserve_cpus': must be >= 0"),
    ],
)
def test_bad_values_name_the_key(overrides, message):
    with pytest.raises(ConfigError) as e:
        load_config(overrides=overrides)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_too_many_cpus_for_workers():
    workers = [[s] for s in STAGES]
    with pytest.raises(ConfigError, match="6 CPUs for 1 workers|CPUs for"):
        load_config(overrides={"placement.workers": [list(STAGES)], "placement.cpus": [0] * 6})
    load_config(overrides={"placement.workers": workers})  # unpinned: fine


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[engine\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: not valid TOML"):
        load_config(bad)
    typo = tmp_path / "typo.toml"
    typo.write_text("[risk]\nmax_order_qty = 5\n[engine]\nringcapacity = 8\n")
    with pytest.raises(ConfigError, match=r"typo\.toml: unknown key 'engine.ringcapacity'"):
        load_config(typo)


def _factory(n_symbols, *, max_qty: int = 10, max_notional: float = 1e6, name: str = "x"):
    if max_qty < 0:
        raise ValueError("max_qty must be >= 0")
    return n_symbols


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"max_qtty": 1}, "unknown key 'risk.max_qtty' (known: max_notional, max_qty, name)"),
        ({"max_qty": 1.5}, "key 'risk.max_qty': expected int, got float"),
        ({"max_qty": True}, "key 'risk.max_qty': expected int, got bool"),
        ({"name": 3}, "key 'risk.name': expected str"),
    ],
)
def test_stage_tables_checked_against_factory(table, message):
    with pytest.raises(ConfigError) as e:
        stage_kwargs("risk", table, _factory)
    assert message in str(e.value)


def test_stage_table_accepts_int_for_float():
    assert stage_kwargs("risk", {"max_notional": 5, "max_qty": 3}, _factory) == {
        "max_notional": 5,
        "max_qty": 3,
    }


@pytest.mark.parametrize(
    ("capacity", "max_message", "expected"),
    [
        (4096, 41, 1024),  # a quarter of the ring: the feed never waits for a ring to drain completely
        (256, 41, 64),
        (65536, 41, 4096),  # at most 4096 events per publish
        (256, 81, 81),  # whole synthetic messages, always
    ],
)
def test_feed_buffer_len(capacity, max_message, expected):
    from hean.stages.feed import buffer_len as feed_buffer_len

    assert feed_buffer_len(capacity, max_message) == expected
