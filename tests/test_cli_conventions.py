"""CLI conventions every command keeps: ``hean --version``; help written for users (no docstring markup)."""

from __future__ import annotations

import contextlib
import importlib
import io
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
