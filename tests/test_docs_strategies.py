"""docs/strategies.md's tutorial, followed verbatim: every code block of it runs, in order, in a fresh folder.

How blocks run: ```console lines starting with ``$`` are commands (``hean`` is this checkout's, ``python``
this interpreter); ```python blocks execute in one namespace (the folder as the working directory);
```toml file=NAME writes NAME, and every other ```toml block must parse; ```text blocks are shown output.
The tutorial ends at its "# The API" heading.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "strategies.md"
FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```$", re.S | re.M)


def tutorial_blocks() -> list[tuple[str, str, str]]:
    text = DOC.read_text().split("\n# The API", 1)[0]
    return [(m.group(1), m.group(2).strip(), m.group(3)) for m in FENCE.finditer(text)]


def test_the_tutorial_has_blocks_of_every_kind():
    kinds = {k for k, _, _ in tutorial_blocks()}
    assert {"console", "python", "toml"} <= kinds


def _command(line: str) -> list[str]:
    argv = shlex.split(line)
    if argv[0] == "hean":
        return [sys.executable, "-m", "hean", *argv[1:]]
    if argv[0] == "python":
        return [sys.executable, *argv[1:]]
    raise AssertionError(f"the tutorial runs only hean and python commands, not {argv[0]!r}")


@pytest.mark.timeout(1200)
def test_the_tutorial_runs_verbatim(tmp_path, tmp_path_factory, monkeypatch):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "data").symlink_to(ROOT / "tests" / "data")
    cache = tmp_path_factory.getbasetemp() / "hean-cache"
    monkeypatch.setenv("HEAN_CACHE_DIR", str(cache))
    monkeypatch.chdir(tmp_path)
    env = {**os.environ, "HEAN_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT)}
    namespace: dict = {"__name__": "__tutorial__"}
    for kind, info, body in tutorial_blocks():
        if kind == "console":
            for line in body.splitlines():
                if not line.startswith("$ "):
                    continue
                done = subprocess.run(
                    _command(line[2:]), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
                )
                assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
        elif kind == "python":
            exec(compile(body, f"{DOC.name}:{kind}", "exec"), namespace)
        elif kind == "toml":
            tomllib.loads(body)
            m = re.fullmatch(r"file=(\S+)", info)
            if m:
                (tmp_path / m.group(1)).write_text(body)
        else:
            assert kind == "text", f"a ```{kind} block: the runner does not know how to follow it"
    assert (tmp_path / "dip_buyer.py").exists()
    assert len(namespace["result"].fills) > 0
