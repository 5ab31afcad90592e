"""Placement: stages fused into as many workers as there are CPUs, in pipeline order, never starving."""

from __future__ import annotations

import pytest

from hean.engine.config import STAGES, PlacementSection
from hean.engine.placement import auto_groups, plan_placement


@pytest.mark.parametrize(
    ("cpus", "groups", "pinned"),
    [
        # the lowest CPU is kept for the OS and the supervisor whenever there are two or more
        ([0], [STAGES], [0]),
        ([0, 1], [STAGES], [1]),
        ([0, 1, 2], [("feed",), ("book", "strategy", "risk", "router", "venue")], [1, 2]),
        ([2, 3, 5, 7], [("feed",), ("book", "strategy"), ("risk", "router", "venue")], [3, 5, 7]),
        (list(range(6)), [("feed",), ("book",), ("strategy",), ("risk",), ("router", "venue")], list(range(1, 6))),
        (list(range(7)), [(s,) for s in STAGES], list(range(1, 7))),
        (list(range(16)), [(s,) for s in STAGES], list(range(1, 7))),
    ],
)
def test_auto_placement(cpus, groups, pinned):
    p = plan_placement(PlacementSection(), cpus=cpus)
    assert [w.stages for w in p.workers] == groups
    assert [w.cpu for w in p.workers] == pinned
    assert not p.oversubscribed
    assert {w.wait for w in p.workers} == {"spin"}
    assert [s for w in p.workers for s in w.stages] == list(STAGES)


@pytest.mark.parametrize(
    ("reserve", "workers", "pinned"),
    [
        (0, None, [0, 1]),  # nothing kept back: the feed and the rest on a CPU each
        (1, [list(STAGES)], [1]),  # configured workers keep the reserve when they fit beside it
        (1, [["feed"], list(STAGES[1:])], [0, 1]),  # ... and use every CPU when they do not
        (5, None, [1]),  # never all of them: one CPU at least runs the workers
    ],
)
def test_reserved_cpus(reserve, workers, pinned):
    section = PlacementSection(reserve_cpus=reserve, workers=workers or [])
    p = plan_placement(section, cpus=[0, 1])
    assert [w.cpu for w in p.workers] == pinned and not p.oversubscribed


def test_more_workers_than_cpus_is_unpinned_and_yields():
    p = plan_placement(PlacementSection(workers=[[s] for s in STAGES]), cpus=[0, 1])
    assert p.oversubscribed
    assert [w.cpu for w in p.workers] == [None] * 6
    assert {w.wait for w in p.workers} == {"yield"}


def test_explicit_cpus_and_waits():
    section = PlacementSection(
        workers=[["feed", "book"], ["strategy", "risk", "router", "venue"]],
        cpus=[1, 0],
        waits=["spin", "sleep"],
    )
    p = plan_placement(section, cpus=[0, 1])
    assert [(w.cpu, w.wait) for w in p.workers] == [(1, "spin"), (0, "sleep")]
    assert p.fused("feed", "book") and not p.fused("book", "strategy")
    assert p.owner == {"feed": 0, "book": 0, "strategy": 1, "risk": 1, "router": 1, "venue": 1}


def test_explicit_wait_overrides_auto():
    p = plan_placement(PlacementSection(wait="yield"), cpus=[0, 1])
    assert {w.wait for w in p.workers} == {"yield"}


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 6, 7, 100])
def test_auto_groups_cover_pipeline_in_order(n):
    groups = auto_groups(n)
    assert [s for g in groups for s in g] == list(STAGES)
    assert len(groups) == max(1, min(6, n))
