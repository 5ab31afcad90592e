"""tools/: what is not the importable engine. Every tool is listed in tools/README.md; the C floor of
``hean bench ring`` is found there from the package, and an install without the source tree says so in one
line instead of a traceback."""

from __future__ import annotations

from pathlib import Path

from hean.bench import ring

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def test_every_tool_is_listed_in_the_readme():
    listed = (TOOLS / "README.md").read_text()
    for tool in TOOLS.iterdir():
        if tool.is_file() and tool.name != "README.md":
            assert f"`{tool.name}`" in listed, tool.name


def test_the_ring_floor_is_found_in_tools():
    assert ring.floor_source() == TOOLS / "ring_floor.c"
    assert not list((Path(ring.__file__).parent).glob("*.c"))  # no copy left in the package


def test_without_the_source_tree_bench_ring_is_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(ring, "C_SOURCE", tmp_path / "tools" / "ring_floor.c")  # as in a site-packages install
    assert ring.main(["--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("hean bench ring: the C peer needs HEAN's source tree") and "pip install -e ." in err
