"""``hean doctor`` on fake ``/proc`` and ``/sys`` trees (each check's OK, WARN and FAIL), on this machine, and the
placement acting on the same facts (SMT siblings, isolated CPUs)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hean import doctor as D
from hean.engine.config import PlacementSection
from hean.engine.placement import order_cpus, plan_placement
from hean.host import Topology, cpu_list, read_topology


def tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def host(root: Path, files: dict[str, str], **kw) -> D.Host:
    """A Host over a fake tree; facts not under test are given so the check reads only its own."""
    defaults = dict(cpus=[0, 1, 2, 3], shm=(4 << 30, 4 << 30), memlock=(-1, -1), shm_need=16 << 20,
                    versions={"numba": "0.68.1", "llvmlite": "0.50.0"}, stale_runs=[])  # fmt: skip
    return D.Host(root=tree(root, files), **{**defaults, **kw})


def siblings(pairs: list[tuple[int, ...]]) -> dict[str, str]:
    return {
        f"sys/devices/system/cpu/cpu{c}/topology/thread_siblings_list": ",".join(map(str, core))
        for core in pairs
        for c in core
    }


CPUINFO_OK = "processor\t: 0\nflags\t\t: fpu tsc constant_tsc nonstop_tsc sse\n"
CLK = "sys/devices/system/clocksource/clocksource0/"
GOV = "sys/devices/system/cpu/cpu{}/cpufreq/scaling_governor"

# (check, files of the fake tree, Host fields, status, a piece of the value or fix)
CASES = [
    (D.check_cpus, {}, {"cpus": list(range(8))}, "OK", "8 CPU(s) usable: 0-7"),
    (D.check_cpus, {}, {"cpus": [0, 1]}, "WARN", "one CPU per stage needs 7"),
    (D.check_smt, siblings([(0,), (1,), (2,), (3,)]), {}, "OK", "no CPU shares a core"),
    (D.check_smt, siblings([(0, 2), (1, 3)]), {}, "WARN", "cores shared by CPUs 0+2 1+3"),
    (D.check_isolation, {"proc/cmdline": "ro quiet"}, {}, "WARN", "isolcpus=1-3 nohz_full=1-3 rcu_nocbs=1-3"),
    (
        D.check_isolation,
        {"proc/cmdline": "isolcpus=domain,managed_irq,2-3", "sys/devices/system/cpu/isolated": "2-3"},
        {},
        "WARN",
        "add nohz_full=2-3 rcu_nocbs=2-3",
    ),  # fmt: skip
    (D.check_isolation, {"proc/cmdline": "isolcpus=1-3 nohz_full=1-3 rcu_nocbs=1-3"}, {}, "OK", "isolated 1-3"),
    (D.check_governor, {}, {}, "OK", "not exposed"),
    (D.check_governor, {GOV.format(c): "performance" for c in range(4)}, {}, "OK", "performance: 0-3"),
    (
        D.check_governor,
        {**{GOV.format(c): "performance" for c in range(3)}, GOV.format(3): "powersave"},
        {},
        "WARN",
        "cpupower frequency-set -g performance",
    ),  # fmt: skip
    (D.check_turbo, {"sys/devices/system/cpu/intel_pstate/no_turbo": "1"}, {}, "OK", "off"),
    (D.check_turbo, {"sys/devices/system/cpu/intel_pstate/no_turbo": "0"}, {}, "WARN", "no_turbo"),
    (D.check_turbo, {"sys/devices/system/cpu/cpufreq/boost": "1"}, {}, "WARN", "on: the frequency moves"),
    (D.check_clocksource, {CLK + "current_clocksource": "tsc"}, {}, "OK", "tsc"),
    (
        D.check_clocksource,
        {CLK + "current_clocksource": "kvm-clock", CLK + "available_clocksource": "kvm-clock tsc acpi_pm"},
        {},
        "WARN",
        "clocksource=tsc tsc=reliable",
    ),  # fmt: skip
    (D.check_clocksource, {CLK + "current_clocksource": "hpet"}, {}, "FAIL", "a system call"),
    (D.check_tsc, {"proc/cpuinfo": CPUINFO_OK}, {}, "OK", "constant_tsc nonstop_tsc"),
    (D.check_tsc, {"proc/cpuinfo": "flags\t: fpu tsc constant_tsc\n"}, {}, "WARN", "constant_tsc"),
    (D.check_thp, {"sys/kernel/mm/transparent_hugepage/enabled": "always madvise [never]"}, {}, "OK", "never"),
    (D.check_thp, {"sys/kernel/mm/transparent_hugepage/enabled": "[always] madvise never"}, {}, "WARN", "khugepaged"),
    (D.check_swap, {"proc/swaps": "Filename Type Size Used Priority\n"}, {}, "OK", "none"),
    (
        D.check_swap,
        {"proc/swaps": "Filename Type Size Used Priority\n/swap file 2097152 0 -2\n", "proc/sys/vm/swappiness": "60"},
        {},
        "WARN",
        "1 device(s), 2.0 GiB, swappiness 60",
    ),  # fmt: skip
    (D.check_shm, {}, {"shm": (8 << 30, 6 << 30)}, "OK", "6.0 GiB free of 8.0 GiB"),
    (D.check_shm, {}, {"shm": (1 << 30, 512 << 20)}, "WARN", "remount,size=2G"),
    (D.check_shm, {}, {"shm": (64 << 20, 8 << 20)}, "FAIL", "a run needs about 16 MiB"),
    (D.check_memlock, {}, {"memlock": (-1, -1)}, "OK", "unlimited"),
    (D.check_memlock, {}, {"memlock": (8 << 20, 8 << 20)}, "WARN", "ulimit -l"),
    (D.check_versions, {}, {}, "OK", "numba 0.68.1"),
    (D.check_versions, {}, {"versions": {"numba": "0.61.2", "llvmlite": "0.44.0"}}, "WARN", "tested with numba 0.68"),
    (D.check_stale, {}, {"stale_runs": []}, "OK", "none"),
    (D.check_stale, {}, {"stale_runs": ["r1", "r2"]}, "WARN", "2 dead run(s) left segments: r1, r2"),
]


@pytest.mark.parametrize(("check", "files", "fields", "status", "text"), CASES,
                         ids=[f"{c[0].__name__}-{c[3]}-{i}" for i, c in enumerate(CASES)])  # fmt: skip
def test_each_check_reads_its_fact_and_says_ok_warn_or_fail(tmp_path, check, files, fields, status, text):
    c = check(host(tmp_path, files, **fields))
    assert c.status == status, c
    assert text in c.value + " " + c.fix, c
    assert (c.fix == "") == (status == "OK"), "a finding always comes with its fix, an OK never does"


IRQS = {
    "proc/irq/24/smp_affinity_list": "0-3",  # may land anywhere, the workers' CPUs too
    "proc/irq/25/smp_affinity_list": "0",  # kept on the OS's CPU
    "proc/irq/default_smp_affinity": "f",
}


def test_interrupts_that_may_land_on_the_workers_cpus_are_named(tmp_path):
    h = host(tmp_path, IRQS)
    c = D.check_irqs(h, worker_cpus=[1, 2, 3])
    assert c.status == "WARN" and "1 interrupt(s) may land on the workers' CPUs 1-3 (IRQ 24)" in c.value
    assert "IRQBALANCE_BANNED_CPULIST=1-3" in c.fix
    assert D.check_irqs(h, worker_cpus=[]).status == "OK"
    # by default the CPUs are the ones the default placement pins its workers to
    assert D.check_irqs(host(tmp_path / "x", {"proc/irq/7/smp_affinity_list": "0"})).status == "OK"


def test_a_bare_tree_is_read_without_errors_and_every_check_answers(tmp_path):
    checks = D.run_checks(host(tmp_path, {}))
    assert [c.name for c in checks] == [f(host(tmp_path, {})).name for f in D.CHECKS]
    assert all(c.status in ("OK", "WARN", "FAIL") and c.value for c in checks)


def test_the_command_on_this_machine_gives_every_check_with_its_value():
    p = subprocess.run([sys.executable, "-m", "hean", "doctor", "--json", "-"], capture_output=True, text=True,
                       timeout=120)  # fmt: skip
    assert p.returncode in (0, 1), p.stderr
    checks = json.loads(p.stdout)
    assert [c["name"] for c in checks] == [c.name for c in D.run_checks()]
    assert all(c["status"] in ("OK", "WARN", "FAIL") and c["value"] for c in checks)
    assert p.returncode == (1 if any(c["status"] == "FAIL" for c in checks) else 0)


# ---------------------------------------------------------------------------------------------------------
# the topology and the placement
# ---------------------------------------------------------------------------------------------------------
def test_cpu_lists_and_the_topology_are_read_like_the_kernel_writes_them(tmp_path):
    assert cpu_list("0-3,8,10-11") == {0, 1, 2, 3, 8, 10, 11}
    assert cpu_list("") == set() and cpu_list(None) == set() and cpu_list("x") == set()
    t = read_topology(tree(tmp_path, {**siblings([(0, 4), (1, 5)]), "sys/devices/system/cpu/isolated": "1,5",
                                      "proc/cmdline": "isolcpus=managed_irq,domain,4"}))  # fmt: skip
    assert t.core(0) == t.core(4) == {0, 4} and t.core(9) == {9}
    assert t.isolated == {1, 4, 5}


# (CPUs, SMT cores, isolated, workers) -> the reserved CPU and the workers' CPUs in order
PLACEMENTS = [
    # no SMT, nothing isolated: the lowest CPU for the OS, the rest in order (as before)
    ([0, 1, 2, 3], [], set(), ["0"], [1, 2, 3]),
    # 4 cores x 2 threads (siblings c, c+4): one worker per core first -- the OS's core (0+4) after the free
    # ones -- then the second threads
    (list(range(8)), [(0, 4), (1, 5), (2, 6), (3, 7)], set(), ["0"], [1, 2, 3, 4, 5, 6, 7]),
    # isolated CPUs first; the OS keeps the lowest CPU that is not isolated
    (list(range(8)), [(0, 4), (1, 5), (2, 6), (3, 7)], {2, 3}, ["0"], [2, 3, 1, 4, 5, 6, 7]),
    # two threads of one core isolated: both before anything else, but the other isolated core first
    (list(range(8)), [(0, 4), (1, 5), (2, 6), (3, 7)], {2, 6, 3}, ["0"], [2, 3, 6, 1, 4, 5, 7]),
    # everything isolated but the last CPU: the OS takes that one
    ([0, 1, 2, 3], [], {0, 1, 2}, ["3"], [0, 1, 2]),
]


@pytest.mark.parametrize(("cpus", "cores", "isolated", "reserved", "order"), PLACEMENTS)
def test_workers_take_isolated_cpus_first_then_one_per_core(cpus, cores, isolated, reserved, order):
    sib = {c: frozenset(core) for core in cores for c in core}
    got_reserved, got_order = order_cpus(cpus, 1, Topology(sib, frozenset(isolated)))
    assert [str(c) for c in got_reserved] == reserved and got_order == order


def test_the_placement_never_puts_two_spinning_workers_on_one_core_while_a_core_is_free():
    sib = {c: frozenset({c, c + 4}) if c < 4 else frozenset({c - 4, c}) for c in range(8)}
    p = plan_placement(PlacementSection(), cpus=list(range(8)), topology=Topology(sib))
    pinned = [w.cpu for w in p.workers]
    assert len(pinned) == 6 and 0 not in pinned  # CPU 0: the OS
    cores = [sib[c] for c in pinned]
    # 7 CPUs for 6 workers on 4 cores: a worker on each free core, then on the OS's core, then second threads
    assert pinned == [1, 2, 3, 4, 5, 6] and len(set(cores[:4])) == 4
