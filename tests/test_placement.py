"""Placement: stages fused into as many workers as there are CPUs, in pipeline order, never starving."""

from __future__ import annotations

import pytest

from hean.engine.config import STAGES, PlacementSection
from hean.engine.placement import auto_groups, plan_placement


@pytest.mark.parametrize(
    ("cpus", "groups", "pinned"),
    [
        ([0], [STAGES], [0]),
        ([0, 1], [("feed",), ("book", "strategy", "risk", "router", "venue")], [0, 1]),
        ([0, 1, 2], [("feed",), ("book", "strategy"), ("risk", "router", "venue")], [0, 1, 2]),
        ([2, 3, 5, 7], [("feed",), ("book",), ("strategy",), ("risk", "router", "venue")], [2, 3, 5, 7]),
        (list(range(6)), [(s,) for s in STAGES], list(range(6))),
        # with more CPUs than stages the lowest one is kept for the supervisor and the OS
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
