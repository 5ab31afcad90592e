"""Placement: which stages share a worker process, which CPU each worker is pinned to, how it waits.

Why fuse at all: a busy-spinning worker owns its CPU. Measured on the 2-vCPU development VM: two stages
on two CPUs hop in ~65 ns, but five busy-spinning stages on two CPUs have a 10 ms p50 (the scheduler's
time slice) and 10 us with spin-then-yield. So with fewer CPUs than stages, adjacent stages are fused into
one worker (one numba loop, no ring hop between them) until there is one worker per CPU, and every worker
busy-spins on its own CPU. When a configuration asks for more workers than CPUs, the workers are left
unpinned and default to spin-then-yield, which shares a CPU without starving anyone.

Sleeping (``nanosleep``) is for idle periods only: a 1 us sleep really takes 15-80 us on this kernel.

Why one CPU is kept back (``reserve_cpus = 1``): the OS, the supervisor and ``hean top`` need a CPU to run
on; when every CPU has a busy-spinning worker, each of their wake-ups preempts a worker, and the messages in
flight wait. On the 2-vCPU VM the whole pipeline fused on CPU 1 (CPU 0 left to everything else) measured
tick-to-trade p50 0.91 us / p99 4.5-7.9 us at 100k messages/s, against 1.10-1.18 us / 6.1-10.5 us for the
feed and the rest on one CPU each (``hean bench pipeline``); the two-worker placement still moves more
messages unpaced, so it is one ``placement.workers`` line away.

Which CPUs (:func:`order_cpus`, from the host's facts in :mod:`hean.host`, the ones ``hean doctor`` reports):
the reserve is the lowest CPUs the kernel does not isolate (the OS runs there anyway); workers take isolated
CPUs first, then one CPU per physical core, and a second SMT thread of a core only when every core has a
worker -- two spinning workers on siblings share one core's execution units, and each slows the other.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from hean.engine.config import ConfigError, PlacementSection, _stages
from hean.host import Topology, read_topology

__all__ = ["WAITS", "Placement", "WorkerPlan", "auto_groups", "order_cpus", "plan_placement"]

WAITS = ("spin", "yield", "sleep")
OVERSUBSCRIBED_SPIN = 16  # idle polls before yielding when workers outnumber CPUs (auto wait)

# How the six stages are grouped for a given number of workers: the feed gets its own worker first (it
# stands in for the NIC), then the book, then the strategy, ...; the tail (risk, router, venue) fuses last
# because it sees only order flow, which is orders of magnitude sparser than market data.
_AUTO_GROUPS: dict[int, list[tuple[str, ...]]] = {
    1: [("feed", "book", "strategy", "risk", "router", "venue")],
    2: [("feed",), ("book", "strategy", "risk", "router", "venue")],
    3: [("feed",), ("book", "strategy"), ("risk", "router", "venue")],
    4: [("feed",), ("book",), ("strategy",), ("risk", "router", "venue")],
    5: [("feed",), ("book",), ("strategy",), ("risk",), ("router", "venue")],
    6: [("feed",), ("book",), ("strategy",), ("risk",), ("router",), ("venue",)],
}


@dataclass(frozen=True)
class WorkerPlan:
    index: int
    stages: tuple[str, ...]
    cpu: int | None  # None: not pinned (oversubscribed)
    wait: str  # spin | yield | sleep
    background: bool = False  # a background stage's worker: on the CPUs kept for the OS, sleeping when idle

    @property
    def name(self) -> str:
        return "+".join(self.stages)


@dataclass
class Placement:
    workers: list[WorkerPlan]
    cpus_available: list[int]
    oversubscribed: bool
    reason: str
    spin_before_yield: int = 2000
    spin_before_sleep: int = 20000
    sleep_ns: int = 50_000
    owner: dict[str, int] = field(default_factory=dict)  # stage -> worker index

    def __post_init__(self) -> None:
        self.owner = {s: w.index for w in self.workers for s in w.stages}

    def fused(self, a: str, b: str) -> bool:
        """True when stages a and b run in the same worker (their ring hop is a direct call)."""
        return self.owner[a] == self.owner[b]

    def describe(self) -> dict:
        return {
            "cpus_available": self.cpus_available,
            "oversubscribed": self.oversubscribed,
            "reason": self.reason,
            "workers": [
                {"name": w.name, "stages": list(w.stages), "cpu": w.cpu, "wait": w.wait}
                | ({"background": True} if w.background else {})
                for w in self.workers
            ],
        }


def auto_groups(n_workers: int, stages: tuple[str, ...] | None = None) -> list[tuple[str, ...]]:
    """The default grouping of ``stages`` (the registry's) into ``n_workers`` workers (clamped to 1..stages).

    The built-in pipeline uses the table above; any other pipeline gives the first stages a worker each, in
    order, and fuses the tail into the last one (the same idea: the tail sees the sparsest flow).
    """
    stages = tuple(stages or _stages())
    k = max(1, min(len(stages), n_workers))
    if stages == _AUTO_GROUPS[1][0]:
        return list(_AUTO_GROUPS[k])
    return [(s,) for s in stages[: k - 1]] + [stages[k - 1 :]]


def check_groups(groups: list[tuple[str, ...]], stages: tuple[str, ...]) -> None:
    """Every stage exactly once, in pipeline order, only adjacent ones together; ConfigError otherwise."""
    flat = [s for g in groups for s in g]
    if flat != list(stages) or any(not g for g in groups):
        raise ConfigError(
            "key 'placement.workers': must list every stage exactly once, in pipeline order, grouping only "
            f"adjacent stages ({' -> '.join(stages)}); got {[list(g) for g in groups]}"
        )


def order_cpus(avail: list[int], reserve: int, topo: Topology) -> tuple[list[int], list[int]]:
    """``(reserved, workers' CPUs in order of preference)`` (see the module docstring)."""
    usable = [c for c in avail if c not in topo.isolated] or avail
    reserved = usable[:reserve]
    rest = [c for c in avail if c not in reserved]
    os_cores = {topo.core(c) for c in reserved}
    taken: dict[frozenset[int], int] = {}
    order: list[int] = []
    while rest:
        best = min(rest, key=lambda c: (c not in topo.isolated, taken.get(topo.core(c), 0),
                                        topo.core(c) in os_cores, c))  # fmt: skip
        order.append(best)
        rest.remove(best)
        taken[topo.core(best)] = taken.get(topo.core(best), 0) + 1
    return reserved, order


def plan_placement(
    section: PlacementSection,
    cpus: list[int] | None = None,
    stages: tuple[str, ...] | None = None,
    topology: Topology | None = None,
    background: tuple[str, ...] = (),
) -> Placement:
    """Turn the ``[placement]`` table and the CPUs this process may use into a concrete plan for the pipeline's
    ``stages`` (the registry's by default); ``topology``: the host's SMT siblings and isolated CPUs (read from
    ``/sys`` by default). ``background`` stages (the journal) are not in the table: each gets a worker of its
    own after the others, pinned to the CPUs kept for the OS (unpinned when none is kept), sleeping when idle."""
    stages = tuple(s for s in (stages or _stages()) if s not in background)
    avail = sorted(cpus if cpus is not None else os.sched_getaffinity(0))
    topo = topology if topology is not None else read_topology()
    # The lowest CPU(s) stay free for the OS, the supervisor and `hean top` (never all of them). A configuration
    # that asks for more than this machine can give is refused by hean.engine.config (reserve_cpus = 5 on two
    # CPUs is an error there); the clamp covers a CPU list given here directly and the single-CPU machine.
    reserve = min(section.reserve_cpus, len(avail) - 1)
    if section.workers:
        groups = [tuple(w) for w in section.workers]
        check_groups(groups, stages)
        reason = "configured workers"
    else:
        groups = auto_groups(len(avail) - reserve, stages)
        reason = f"auto: {len(groups)} worker(s) for {len(avail)} CPU(s), {reserve} kept for the OS and supervisor"
    n = len(groups)
    if section.cpus:
        cpu_list: list[int | None] = list(section.cpus)
        oversubscribed = len(set(section.cpus)) < n
    else:
        # configured workers keep the reserve only when they still get a CPU each
        _, order = order_cpus(avail, reserve, topo)
        pool = order if len(order) >= n else order_cpus(avail, 0, topo)[1]
        oversubscribed = n > len(pool)
        cpu_list = [None] * n if oversubscribed else pool[:n]
    default_wait = section.wait if section.wait != "auto" else ("yield" if oversubscribed else "spin")
    spin_before_yield = section.spin_before_yield
    if oversubscribed and section.wait == "auto" and spin_before_yield == PlacementSection().spin_before_yield:
        # sharing a CPU: every idle poll spent spinning is taken from a worker that has work
        spin_before_yield = OVERSUBSCRIBED_SPIN
    waits = list(section.waits) if section.waits else [default_wait] * n
    workers = [WorkerPlan(i, groups[i], cpu_list[i], waits[i]) for i in range(n)]
    kept = order_cpus(avail, reserve, topo)[0] if reserve and not section.cpus else []
    for name in background:
        workers.append(WorkerPlan(len(workers), (name,), kept[0] if kept else None, "sleep", background=True))
    return Placement(
        workers,
        avail,
        oversubscribed,
        reason,
        spin_before_yield=spin_before_yield,
        spin_before_sleep=section.spin_before_sleep,
        sleep_ns=section.sleep_us * 1000,
    )
