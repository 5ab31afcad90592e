"""The layers of the code, read from the code itself: imports go downwards only.

    base (atomics, jit, shm, procs, paths, records, symbols)
      <- rings <- telemetry <- stage level (stages, feeds, indicators, strategies)
      <- engine (and gateway) <- cli (commands, cli, bench)

A module may import its own layer and the layers below it, never above: a stage never imports the engine or
the command line, the rings never import a stage. Imports inside functions count too (they are how the
command line keeps ``hean --help`` fast, and they are still dependencies). ``if TYPE_CHECKING:`` blocks do
not count (nothing runs them).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "hean"

LAYERS = [
    {"atomics", "jit", "shm", "procs", "paths", "records", "symbols", "host"},
    {"rings"},
    {"telemetry"},
    {"stages", "feeds", "indicators", "strategies", "api", "journal"},
    {"engine", "gateway", "live"},
    {
        "commands",
        "cli",
        "bench",
        "research",
        "result_rows",
        "sweeps",
        "doctor",
        "outputs",
        "report",
        "__main__",
        "__init__",
    },
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _unit(module: str) -> str:
    """``hean.stages.book`` -> ``stages``; ``hean.atomics`` -> ``atomics``; ``hean`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_of(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every ``hean`` import in the file, outside ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for b in node.body for n in ast.walk(b)}
    here = _module_of(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "hean"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] == "hean":
                if mod == "hean":  # from hean import records
                    found += [(node.lineno, f"hean.{a.name}") for a in node.names]
                else:
                    found.append((node.lineno, mod))
    return found


def _violations() -> list[str]:
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        me = _unit(_module_of(path))
        if me not in RANK:
            bad.append(f"{path.relative_to(ROOT.parent)}: no layer for {me!r} (add it to LAYERS)")
            continue
        for line, mod in _imports(path):
            other = _unit(mod)
            if other in RANK and RANK[other] > RANK[me]:
                bad.append(f"{path.relative_to(ROOT.parent)}:{line}: {me} imports {mod} (a higher layer)")
    return bad


def test_every_module_imports_only_its_layer_and_below():
    assert _violations() == []


@pytest.mark.parametrize(
    ("source", "path", "expected"),
    [
        ("from hean.engine import control\n", "stages/x.py", ["stages imports hean.engine"]),
        ("import hean.commands.run\n", "rings/x.py", ["rings imports hean.commands.run"]),
        ("from ..engine.build import x\n", "stages/x.py", ["stages imports hean.engine.build"]),
        ("from hean import records\nfrom hean.rings import spsc\n", "stages/x.py", []),
        ("def f():\n    from hean.cli import main\n", "engine/x.py", ["engine imports hean.cli"]),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from hean.engine import x\n", "stages/x.py", []),
    ],
)
def test_the_rule_reads_imports_as_written(tmp_path, monkeypatch, source, path, expected):
    """The checker itself: relative imports resolved, imports in functions counted, TYPE_CHECKING ignored."""
    root = tmp_path / "hean"
    f = root / path
    f.parent.mkdir(parents=True)
    f.write_text(source)
    monkeypatch.setattr(__import__(__name__), "ROOT", root)
    found = [v.split(": ", 1)[1].split(" (")[0] for v in _violations()]
    assert found == expected
