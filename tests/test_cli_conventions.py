"""CLI conventions every command keeps: ``hean --version``; help written for users (no docstring markup);
``--json -`` prints the JSON alone on stdout (the text on stderr)."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import re
import subprocess
import sys
from importlib.metadata import version

import pytest

import hean
from hean.cli import COMMANDS, build_parser
from hean.commands import plain
from hean.commands.bench import BENCHES

MARKUP = re.compile(r"``[^`]+``|:(?:func|mod|class|data|meth|attr|exc):`[^`]+`|\*\*[^*]+\*\*")
INTERNAL = re.compile(r"imports? stay light|argparse only")  # notes for developers, not users


def test_version_is_the_package_version():
    p = subprocess.run([sys.executable, "-m", "hean", "--version"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == f"hean {hean.__version__}" == f"hean {version('hean')}"


def _help(argv: list[str], parse) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as e:
        parse(argv)
    assert e.value.code == 0, argv
    return out.getvalue()


@pytest.mark.parametrize("command", list(dict.fromkeys(COMMANDS)))
def test_every_commands_help_is_plain_text(command):
    text = _help([command, "--help"], build_parser().parse_args)
    assert text.startswith(f"usage: hean {command}") and not MARKUP.findall(text), MARKUP.findall(text)
    assert not INTERNAL.findall(text), INTERNAL.findall(text)


@pytest.mark.parametrize("target", list(BENCHES))
def test_every_benchmarks_help_is_plain_text(target):
    module = importlib.import_module(BENCHES[target][0])
    text = _help(["--help"], module.main)
    assert text.startswith(f"usage: hean bench {target}") and not MARKUP.findall(text), MARKUP.findall(text)


def test_plain_takes_the_markup_out_and_keeps_the_words():
    assert plain("see ``hean run`` and :func:`~hean.api.limit`, :mod:`hean.paths`, **why**") == (
        "see hean run and limit, hean.paths, why"
    )


# (what the user typed, what completion offers)
COMPLETIONS = [
    ("hean ru", "run"),
    ("hean risk ", "--help set"),
    ("hean risk set --sy", "--symbol"),
    ("hean bench pi", "pipeline"),
    ("hean sweep cfg.toml --gr", "--grid"),
    ("hean completion ", "--help bash zsh"),
]


@pytest.fixture(scope="module")
def bash_script(tmp_path_factory):
    """``hean completion bash``, written once for the module (bash runs the CI itself: it is there)."""
    p = subprocess.run([sys.executable, "-m", "hean", "completion", "bash"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    script = tmp_path_factory.mktemp("completion") / "hean.bash"
    script.write_text(p.stdout)
    return script


@pytest.mark.parametrize(("typed", "offered"), COMPLETIONS)
def test_bash_completion_offers_the_commands_and_options_of_the_parser(bash_script, typed, offered):
    script = bash_script
    blank = 'COMP_WORDS+=("");' if typed.endswith(" ") else ""  # the word being typed is empty
    probe = (f"source {script}; read -ra COMP_WORDS <<< {typed!r}; {blank} "
             "COMP_CWORD=$((${#COMP_WORDS[@]}-1)); _hean; echo \"${COMPREPLY[*]}\"")  # fmt: skip
    out = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == offered, out.stderr


# --- `--json -`: the JSON alone on stdout, every word of text on stderr, for every command that has --json ---
def _json_options(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> set[str]:
    """The commands (``"rings inspect"``) whose parser takes ``--json``, read from the parser itself."""
    found = {" ".join(path)} if any("--json" in a.option_strings for a in parser._actions) else set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found |= _json_options(sub, (*path, name))
    return found


def _with_json() -> set[str]:
    found = _json_options(build_parser())
    for target, (module, _) in BENCHES.items():
        if "--json" in _help(["--help"], importlib.import_module(module).main):
            found.add(f"bench {target}")
    return found


def _pipeline_run(placement: str, rate: int, duration: float, config: str | None = None):
    """A stand-in for one engine run of ``hean bench pipeline`` (the real one compiles the loop: a minute cold):
    its figures, and a tick-to-trade histogram of 10 values of ``1000 + rate // 100 + len(placement)`` ns."""
    from hean.telemetry.histogram import hist_record_n, hist_value_at_percentile, new_histogram

    h = new_histogram()
    hist_record_n(h, 1000 + rate // 100 + len(placement), 10)
    t2t = {k: int(hist_value_at_percentile(h, p)) for k, p in
           (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9), ("p9999", 99.99), ("max", 100.0))}  # fmt: skip
    row = {"placement": placement, "workers": [["feed"]], "target_rate": rate, "events": 20, "events_per_s": 2e5,
           "messages": 10, "messages_per_s": 1e5, "exit_code": 0, "error": None, "startup_s": 0.5, "orders": 10,
           "fills": 1, "tick_to_trade_ns": {"count": 10, **t2t}, "book_age_ns": {},
           "service_p50_ns": {"feed": 100}}  # fmt: skip
    return row, h


def _fake_bench_result(name: str):
    from hean.bench.harness import BenchResult, RateResult
    from hean.telemetry.histogram import hist_record_n, new_histogram

    h = new_histogram()
    hist_record_n(h, 250, 100)
    return BenchResult(name, [RateResult(0, 100, 100, 100, 0, 0, 1_000_000, h)])


# Each entry sets the command up (fakes only where the real figures take an engine run or a cold compile of
# tens of seconds: the code that prints and writes is the real one) and gives its argv.
def _doctor(mp, tmp, stack):
    return ["doctor"]


def _rings(mp, tmp, stack):
    return ["rings"]


def _rings_list(mp, tmp, stack):  # --remove-stale's report goes to stderr too (a fake sweep: no real run touched)
    import hean.engine.runs as runs

    mp.setattr(runs, "clean_stale", lambda only, dry_run: (["removed hean-x (no process left)"], []))
    return ["rings", "list", "--remove-stale"]


def _rings_inspect(mp, tmp, stack):
    from hean.records import MARKET_EVENT
    from hean.rings import create

    ring = create(f"hean-test-{os.getpid()}-json", MARKET_EVENT, 8)
    stack.callback(ring.unlink)
    stack.callback(ring.close)
    return ["rings", "inspect", ring.name]


def _cache_info(mp, tmp, stack):
    mp.setenv("HEAN_CACHE_DIR", str(tmp))
    return ["cache", "info"]


def _top(mp, tmp, stack):
    from test_top import Fabricated

    fab = stack.enter_context(Fabricated())
    fab.work(100)
    return ["top", fab.run_id, "--once", "--interval", "0.05"]


def _bench_book(mp, tmp, stack):
    from hean.bench import book

    res = {"level_updates": 10, "diff_messages": 2, "clock_ns": 20.0, "hean_update_ns_median": 9.0,
           "hean_best_bid_ask_ns": 1.0, "replay_level_updates_per_s": 6e7, "stage_events_per_s": 1e7,
           "conversion_lines_per_s": 6e5, "conversion_with_gunzip_lines_per_s": 5e5,
           "peers_update_ns_median": {"python dict book": 180.0, "nautilus": "skipped: not installed"}}  # fmt: skip
    mp.setattr(book, "measure", lambda path, repeat, reads, peers: res)
    return ["bench", "book"]


def _bench_ring(mp, tmp, stack):
    from hean.bench import ring

    hop = {"min_ns": 50, "p50_ns": 80, "p90_ns": 90, "p99_ns": 120, "p999_ns": 300, "p9999_ns": 900, "max_ns": 2000}
    figs = [ring.Figure("C cache-line floor (rtt/2)", "floor", "near", (100, 100), {"one_way_p50_ns": 60}),
            ring.Figure("ring hop unpaced", "latency", "near", (100, 100), {"hop": hop}),
            ring.Figure("ring single push/pop", "throughput", "near", (100, 100), {"msgs_per_s": 6e7})]  # fmt: skip
    mp.setattr(ring, "run_all", lambda args, log: (figs, {"cpus": (0, 1)}))
    return ["bench", "ring", "--rates", "1000"]


def _bench_telemetry(mp, tmp, stack):  # the real thing: small kernels, seconds
    return ["bench", "telemetry", "--calls", "1000", "--rates", "max", "--duration", "0.01", "--warmup", "0"]


def _bench_indicators(mp, tmp, stack):
    from hean.bench import indicators

    mp.setattr(indicators, "stream_ns", lambda n_sym, samples, reps: 30.0)
    mp.setattr(indicators, "stage_ns", lambda name, samples: (150.0, 2))
    mp.setattr(indicators, "bench_kernel", lambda name, *a, **k: _fake_bench_result(name))
    mp.setattr(indicators, "batch_table", lambda sizes, t: [{"indicator": "sma", "n": 100, "hean_us": 1.0,
                                                             "talib_us": None}])  # fmt: skip
    return ["bench", "indicators", "--samples", "1000", "--sizes", "100"]


def _bench_risk(mp, tmp, stack):
    from hean.bench import risk

    mp.setattr(risk, "run_all", lambda n: [{"figure": "risk.check", "calls": n, "median_ns": 40.0, "mean_ns": 41.0,
                                            "per_call_p50_ns": 60}])  # fmt: skip
    return ["bench", "risk", "-n", "1000"]


def _bench_pipeline(mp, tmp, stack):
    from hean.bench import pipeline

    mp.setattr(pipeline, "run_measured", _pipeline_run)
    return ["bench", "pipeline", "--placements", "fused,two", "--rates", "1000,0", "--noise-s", "0"]


def _bench_journal(mp, tmp, stack):
    from hean.bench import journal

    def run(on, placement, rate, duration):  # the engine runs stand in; the stage alone runs for real
        return {"journal": on, "rate": rate, "t2t_p50_ns": 1000 + 10 * on, "t2t_p99_ns": 4000, "orders": 9,
                "messages_per_s": 1e6 - on, "journal_service_p50_ns": 100}  # fmt: skip

    mp.setattr(journal, "engine_run", run)
    return ["bench", "journal", "--rounds", "1", "--records", "20000"]


def _bench_startup(mp, tmp, stack):
    from hean.bench import startup

    mp.setattr(startup, "measure", lambda p, runs: {"placement": p, "cold_s": [30.0], "warm_s": 1.0, "errors": []})
    mp.setattr(startup, "measure_edit", lambda p: {"placement": p, "first_s": 3.0, "edit_s": 2.0, "errors": []})
    return ["bench", "startup", "--placements", "fused"]


def _bench_sweep(mp, tmp, stack):
    import types

    import hean.sweeps as sweeps

    ray = types.SimpleNamespace(init=lambda **k: None, shutdown=lambda: None)
    rec = types.SimpleNamespace(native=tmp / "rec.hev")
    done = types.SimpleNamespace(
        failed=[], ran=8, cell_s=[0.1] * 8, table={"events": types.SimpleNamespace(iloc=[500])}
    )
    mp.setitem(sys.modules, "ray", ray)
    mp.setattr(sweeps, "convert_recordings", lambda paths, fmt, folder: [rec])
    mp.setattr(sweeps, "run_sweep", lambda *a, **k: done)
    return ["bench", "sweep"]


def _bench_backtest(mp, tmp, stack):
    from hean.bench import backtest

    hean = {"system": "HEAN", "version": "0", "ns_per_event": 400.0, "events_per_s": 2.5e6, "loop_ns_per_event": 200.0,
            "orders": 10, "new": 6, "replace": 4, "cancel": 0, "fills": 3, "same_every_round": True,
            "ratio_to_hean": 1.0, "models": "L2 book"}  # fmt: skip
    res = {"file": "rec.gz", "events": {"level_set": 8, "trade": 2, "total": 10}, "rounds": 1, "latency_ns": 10**6,
           "systems": [hean], "skipped": {"hftbacktest": "not installed"}}  # fmt: skip
    mp.setattr(backtest, "measure", lambda *a, **k: res)
    return ["bench", "backtest", "--rounds", "1"]


def _bench_noise(mp, tmp, stack):  # the real thing: 50 ms on one CPU
    return ["bench", "noise", "--cpus", str(min(os.sched_getaffinity(0))), "--seconds", "0.05"]


def _bench_live(mp, tmp, stack):  # the real thing, its quick part: the decode cost (a few seconds)
    return ["bench", "live", "--skip", "receive,latency"]


JSON_RUNS = {
    "doctor": _doctor,
    "rings": _rings,
    "rings list": _rings_list,
    "rings inspect": _rings_inspect,
    "cache info": _cache_info,
    "top": _top,
    "bench book": _bench_book,
    "bench ring": _bench_ring,
    "bench telemetry": _bench_telemetry,
    "bench indicators": _bench_indicators,
    "bench risk": _bench_risk,
    "bench pipeline": _bench_pipeline,
    "bench journal": _bench_journal,
    "bench startup": _bench_startup,
    "bench sweep": _bench_sweep,
    "bench noise": _bench_noise,
    "bench backtest": _bench_backtest,
    "bench live": _bench_live,
}
# commands whose --json - is tested elsewhere, and where (a command here may come and go with its branch)
JSON_ELSEWHERE = {
    "run": "tests/test_engine.py::test_json_to_stdout_is_pure_json (an engine run: a minute of compiling cold)",
    "replay": "the same run_engine and json_out as run (hean/commands/run.py), tested with run",
    "journal info": "tests/test_outputs.py::test_hean_journal_info_and_export_from_the_output_directory (a replay's)",
}


def test_every_command_with_json_is_tested_with_json_to_stdout():
    found = _with_json()
    assert found - set(JSON_ELSEWHERE) == set(JSON_RUNS), "a command with --json: give it a row in JSON_RUNS"


@pytest.mark.parametrize("command", list(JSON_RUNS))
def test_json_to_stdout_is_the_json_alone(command, monkeypatch, tmp_path, capfd):
    """``hean CMD --json - | jq .`` works: stdout parses as one JSON document; the text went to stderr."""
    from hean.cli import main

    with contextlib.ExitStack() as stack:
        argv = JSON_RUNS[command](monkeypatch, tmp_path, stack)
        capfd.readouterr()
        rc = main([*argv, "--json", "-"])
        out, err = capfd.readouterr()
    assert rc in ((0, 1) if command == "doctor" else (0,)), err  # doctor: 1 when a check FAILs on this host
    assert json.loads(out), out[:500]
    assert err.strip(), "the text is on stderr"
