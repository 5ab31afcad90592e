"""``hean doctor``: is this host set up for low-latency trading, and how to fix what is not.

Each check reads one fact (:mod:`hean.host` for the CPU topology; ``/proc``, ``/sys``, ``/dev/shm``, the
process limits and the installed packages for the rest) and gives a :class:`Check`: OK, WARN or FAIL, the
value it measured, and the fix. WARN is "this costs latency or predictability"; FAIL is "the engine cannot
run well here" (a slow clock source, no room in ``/dev/shm``). Sources are the usual low-latency tuning guides
(Red Hat's tuned ``latency-performance``, the Aeron and Chronicle guides): isolate the engine's CPUs, keep
interrupts and kernel work off them, fix the frequency, a TSC clock, no transparent huge pages, no swap.

Every fact comes through :class:`Host`, whose ``root`` (``/`` by default) prefixes every ``/proc`` and
``/sys`` path and whose other fields may be given instead of read (CPUs, ``/dev/shm`` space, limits,
versions, stale runs): the tests run each check on fake trees.
"""

from __future__ import annotations

import os
import re
import resource
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hean.host import Topology, cmdline_cpus, cpu_list, read, read_topology

__all__ = ["CHECKS", "Check", "Host", "TESTED", "run_checks"]

OK, WARN, FAIL = "OK", "WARN", "FAIL"

# the numba and llvmlite releases HEAN is tested with (the engine uses numba internals: intrinsics, cfuncs)
TESTED = {"numba": ("0.68", "0.68"), "llvmlite": ("0.50", "0.50")}
STAGES_PLUS_OS = 7  # one CPU per stage (six) and one for the OS and the supervisor
SHM_COMFORT = 1 << 30  # below this much free /dev/shm, a few runs and recordings fill it


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # OK / WARN / FAIL
    value: str  # what was measured
    fix: str = ""  # what to do (empty when OK)


@dataclass
class Host:
    """Where the facts come from; a field left None is read from this machine."""

    root: Path = Path("/")
    cpus: list[int] | None = None  # the CPUs this process may use (its affinity mask)
    shm: tuple[int, int] | None = None  # (size, free) of /dev/shm in bytes
    memlock: tuple[int, int] | None = None  # (soft, hard) RLIMIT_MEMLOCK, -1: unlimited
    versions: dict[str, str] | None = None  # {"numba": ..., "llvmlite": ...}
    stale_runs: list[str] | None = None  # run ids whose segments no process holds
    shm_need: int | None = None  # bytes one run of the default configuration maps in /dev/shm
    topology: Topology | None = field(default=None)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if self.cpus is None:
            self.cpus = sorted(os.sched_getaffinity(0))
        if self.topology is None:
            self.topology = read_topology(self.root)

    def text(self, rel: str) -> str | None:
        return read(self.root, rel)


def _fmt_cpus(cpus) -> str:
    cpus = sorted(cpus)
    if not cpus:
        return "none"
    runs, start = [], cpus[0]
    for a, b in zip(cpus, cpus[1:] + [None], strict=True):
        if b != a + 1:
            runs.append(str(start) if start == a else f"{start}-{a}")
            start = b
    return ",".join(runs)


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 28 else f"{n / (1 << 20):.0f} MiB"


# ---------------------------------------------------------------------------------------------------------
# the checks
# ---------------------------------------------------------------------------------------------------------
def check_cpus(h: Host) -> Check:
    n = len(h.cpus)
    value = f"{n} CPU(s) usable: {_fmt_cpus(h.cpus)}"
    if n >= STAGES_PLUS_OS:
        return Check("cpus", OK, value)
    return Check(
        "cpus", WARN, value,
        f"one CPU per stage needs {STAGES_PLUS_OS} (six stages and the OS); with {n} the stages share "
        f"{max(1, n - 1)} worker(s) (still correct, fused placements measured in BENCHMARKS.md)",
    )  # fmt: skip


def check_smt(h: Host) -> Check:
    control = h.text("sys/devices/system/cpu/smt/control")
    shared = sorted({tuple(sorted(h.topology.core(c))) for c in h.cpus if len(h.topology.core(c)) > 1})
    if not shared:
        return Check("smt", OK, f"no CPU shares a core{f' (smt/control: {control})' if control else ''}")
    pairs = " ".join("+".join(map(str, core)) for core in shared[:8])
    return Check(
        "smt", WARN, f"SMT on: cores shared by CPUs {pairs}{' ...' if len(shared) > 8 else ''}",
        "two spinning threads on one core slow each other: disable SMT (echo off > "
        "/sys/devices/system/cpu/smt/control, or nosmt at boot); HEAN already places workers one per core "
        "before it uses a second thread of any core",
    )  # fmt: skip


def check_isolation(h: Host) -> Check:
    iso = h.topology.isolated & set(h.cpus)
    nohz = cmdline_cpus(h.root, "nohz_full")
    rcu = cmdline_cpus(h.root, "rcu_nocbs")
    value = f"isolated {_fmt_cpus(iso)}; nohz_full {_fmt_cpus(nohz)}; rcu_nocbs {_fmt_cpus(rcu)}"
    hint = _fmt_cpus(sorted(h.cpus)[1:]) if len(h.cpus) > 1 else "1-N"
    if not iso:
        return Check(
            "isolation", WARN, value,
            f"boot with isolcpus={hint} nohz_full={hint} rcu_nocbs={hint} (the workers' CPUs; keep CPU "
            f"{min(h.cpus) if h.cpus else 0} for the OS): the scheduler, the timer tick and RCU callbacks then "
            "leave them alone",
        )  # fmt: skip
    if not iso <= nohz or not iso <= rcu:
        return Check(
            "isolation", WARN, value,
            f"add nohz_full={_fmt_cpus(iso)} rcu_nocbs={_fmt_cpus(iso)} at boot: isolated CPUs still take the "
            "timer tick and RCU callbacks",
        )  # fmt: skip
    return Check("isolation", OK, value)


def check_governor(h: Host) -> Check:
    govs = {c: h.text(f"sys/devices/system/cpu/cpu{c}/cpufreq/scaling_governor") for c in h.cpus}
    seen = {g for g in govs.values() if g}
    if not seen:
        return Check("governor", OK, "not exposed (no cpufreq: a VM or a fixed frequency; the host decides)")
    slow = sorted(c for c, g in govs.items() if g and g != "performance")
    value = ", ".join(f"{g}: {_fmt_cpus([c for c, x in govs.items() if x == g])}" for g in sorted(seen))
    if not slow:
        return Check("governor", OK, value)
    return Check(
        "governor", WARN, value,
        "a CPU that idles down takes tens of microseconds to ramp up: cpupower frequency-set -g performance "
        "(or tuned-adm profile latency-performance)",
    )  # fmt: skip


def check_turbo(h: Host) -> Check:
    no_turbo = h.text("sys/devices/system/cpu/intel_pstate/no_turbo")
    boost = h.text("sys/devices/system/cpu/cpufreq/boost")
    if no_turbo is None and boost is None:
        return Check("turbo", OK, "not exposed (the host decides)")
    on = (no_turbo == "0") if no_turbo is not None else (boost == "1")
    if not on:
        return Check("turbo", OK, "off: a fixed frequency")
    return Check(
        "turbo", WARN, "on: the frequency moves with load and temperature",
        "for predictable latency fix the frequency: echo 1 > /sys/devices/system/cpu/intel_pstate/no_turbo "
        "(or echo 0 > /sys/devices/system/cpu/cpufreq/boost); keep it on only if the best case matters more "
        "than the spread",
    )  # fmt: skip


def check_clocksource(h: Host) -> Check:
    cur = h.text("sys/devices/system/clocksource/clocksource0/current_clocksource")
    avail = h.text("sys/devices/system/clocksource/clocksource0/available_clocksource") or ""
    if cur is None:
        return Check("clocksource", WARN, "not readable", "check /sys/devices/system/clocksource")
    if cur == "tsc":
        return Check("clocksource", OK, "tsc (vDSO reads, ~20 ns)")
    if cur in ("kvm-clock", "hyperv_clocksource_tsc_page", "arch_sys_counter"):
        fix = "the VM's clock is read in the vDSO too (this machine: ~22 ns a read); "
        fix += (
            "boot with clocksource=tsc tsc=reliable if the host's TSC is stable"
            if "tsc" in avail.split()
            else ("the host does not offer the TSC to this guest")
        )
        return Check("clocksource", WARN, f"{cur} (available: {avail or '?'})", fix)
    return Check(
        "clocksource", FAIL, f"{cur} (available: {avail or '?'})",
        "every timestamp is a system call (microseconds): boot with clocksource=tsc, or echo tsc > "
        "/sys/devices/system/clocksource/clocksource0/current_clocksource",
    )  # fmt: skip


def check_tsc(h: Host) -> Check:
    info = h.text("proc/cpuinfo") or ""
    flags = set()
    for line in info.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    if not flags:
        return Check("invariant tsc", WARN, "no flags in /proc/cpuinfo", "cannot tell; check the CPU's manual")
    have = [f for f in ("constant_tsc", "nonstop_tsc") if f in flags]
    if len(have) == 2:
        return Check("invariant tsc", OK, "constant_tsc nonstop_tsc")
    return Check(
        "invariant tsc", WARN, f"flags: {' '.join(have) or 'neither constant_tsc nor nonstop_tsc'}",
        "without an invariant TSC the clock drifts with frequency and sleep states: keep clocksource on "
        "what the kernel chose and fix the frequency",
    )  # fmt: skip


def check_thp(h: Host) -> Check:
    text = h.text("sys/kernel/mm/transparent_hugepage/enabled")
    if text is None:
        return Check("transparent huge pages", OK, "not exposed")
    m = re.search(r"\[(\w+)\]", text)
    mode = m.group(1) if m else text
    if mode != "always":
        return Check("transparent huge pages", OK, mode)
    return Check(
        "transparent huge pages", WARN, "always",
        "khugepaged compacts memory behind the engine's back (millisecond stalls): echo madvise > "
        "/sys/kernel/mm/transparent_hugepage/enabled (or transparent_hugepage=madvise at boot)",
    )  # fmt: skip


def check_swap(h: Host) -> Check:
    lines = (h.text("proc/swaps") or "").splitlines()[1:]
    swappiness = h.text("proc/sys/vm/swappiness")
    if not lines:
        return Check("swap", OK, "none")
    total = sum(int(x.split()[2]) for x in lines if len(x.split()) > 2 and x.split()[2].isdigit()) * 1024
    return Check(
        "swap", WARN, f"{len(lines)} device(s), {_gib(total)}, swappiness {swappiness}",
        "a page of the engine swapped out costs milliseconds when touched: swapoff -a, or sysctl "
        "vm.swappiness=0 and a memlock limit that lets the engine's memory stay in",
    )  # fmt: skip


def _shm_need() -> int:
    """Bytes one run of the built-in configuration maps in /dev/shm: its rings, views and telemetry (an
    estimate: every edge as a ring, the one-process-per-stage placement)."""
    from hean.engine.config import load_config
    from hean.engine.topology import EDGES

    cap = load_config().engine.ring_capacity
    return sum(cap * e.dtype.itemsize + 4096 for e in EDGES) + (8 << 20)


def check_shm(h: Host) -> Check:
    if h.shm is None:
        try:
            st = os.statvfs(h.root / "dev/shm")
        except OSError:
            return Check("/dev/shm", FAIL, "missing", "mount a tmpfs on /dev/shm: HEAN's rings live there")
        size, free = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
    else:
        size, free = h.shm
    need = h.shm_need if h.shm_need is not None else _shm_need()
    value = f"{_gib(free)} free of {_gib(size)}; a run needs about {_gib(need)}"
    if free < need:
        return Check("/dev/shm", FAIL, value,
                     "free space (hean rings clean removes what dead runs left) or mount -o remount,size=2G "
                     "/dev/shm")  # fmt: skip
    if free < SHM_COMFORT:
        return Check("/dev/shm", WARN, value, "mount -o remount,size=2G /dev/shm (room for several runs)")
    return Check("/dev/shm", OK, value)


def check_memlock(h: Host) -> Check:
    soft, hard = h.memlock if h.memlock is not None else resource.getrlimit(resource.RLIMIT_MEMLOCK)
    unlimited = soft in (-1, resource.RLIM_INFINITY)
    hard_text = "unlimited" if hard in (-1, resource.RLIM_INFINITY) else _gib(hard)
    value = "unlimited" if unlimited else f"{_gib(soft)} (hard {hard_text})"
    if unlimited or soft >= 1 << 30:
        return Check("memlock", OK, value)
    return Check(
        "memlock", WARN, value,
        "locking the engine's memory (against swap and page faults) needs a larger limit: 'ulimit -l "
        "unlimited', or '<user> - memlock unlimited' in /etc/security/limits.conf",
    )  # fmt: skip


def _worker_cpus(h: Host) -> list[int]:
    from hean.engine.config import load_config
    from hean.engine.placement import plan_placement

    p = plan_placement(load_config().placement, cpus=list(h.cpus), topology=h.topology)
    return [w.cpu for w in p.workers if w.cpu is not None]


def check_irqs(h: Host, worker_cpus: list[int] | None = None) -> Check:
    cpus = set(worker_cpus if worker_cpus is not None else _worker_cpus(h))
    base = h.root / "proc/irq"
    if not base.is_dir():
        return Check("irq affinity", OK, "not readable")
    landing = []
    for d in sorted(base.iterdir(), key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0)):
        if not d.name.isdigit():
            continue
        aff = cpu_list(read(h.root, f"proc/irq/{d.name}/smp_affinity_list"))
        if aff & cpus:
            landing.append(d.name)
    value = f"{len(landing)} interrupt(s) may land on the workers' CPUs {_fmt_cpus(cpus)}"
    if not landing:
        return Check("irq affinity", OK, value)
    return Check(
        "irq affinity", WARN, f"{value} (IRQ {', '.join(landing[:10])}{' ...' if len(landing) > 10 else ''})",
        f"steer them away: IRQBALANCE_BANNED_CPULIST={_fmt_cpus(cpus)} for irqbalance, or write the other CPUs "
        "to /proc/irq/N/smp_affinity_list",
    )  # fmt: skip


def _installed() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in TESTED:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "missing"
    return out


def check_versions(h: Host) -> Check:
    have = h.versions if h.versions is not None else _installed()
    off = []
    for name, (lo, hi) in TESTED.items():
        v = have.get(name, "missing")
        minor = ".".join(v.split(".")[:2])
        if v == "missing" or not (_vkey(lo) <= _vkey(minor) <= _vkey(hi)):
            off.append(f"{name} {v}")
    value = ", ".join(f"{k} {v}" for k, v in have.items())
    if not off:
        return Check("numba/llvmlite", OK, value)
    tested = ", ".join(f"{k} {lo}" + (f"-{hi}" if hi != lo else "") for k, (lo, hi) in TESTED.items())
    return Check("numba/llvmlite", WARN, value,
                 f"HEAN uses numba internals and is tested with {tested}: pip install -e . (its pins)")  # fmt: skip


def _vkey(v: str) -> tuple[int, ...]:
    return tuple(int(x) if x.isdigit() else -1 for x in v.split("."))


def check_stale(h: Host) -> Check:
    if h.stale_runs is None:
        from hean.engine.runs import scan_runs

        stale = [r.run_id for r in scan_runs() if not r.live and r.foreign_uid is None]
    else:
        stale = list(h.stale_runs)
    if not stale:
        return Check("stale segments", OK, "none")
    return Check("stale segments", WARN, f"{len(stale)} dead run(s) left segments: {', '.join(stale[:5])}",
                 "hean rings clean (removes only what no live process holds)")  # fmt: skip


CHECKS: tuple[Callable[[Host], Check], ...] = (
    check_cpus, check_smt, check_isolation, check_governor, check_turbo, check_clocksource, check_tsc,
    check_thp, check_swap, check_shm, check_memlock, check_irqs, check_versions, check_stale,
)  # fmt: skip


def run_checks(h: Host | None = None) -> list[Check]:
    """Every check on ``h`` (this machine by default)."""
    h = h if h is not None else Host()
    return [c(h) for c in CHECKS]


def as_json(checks: list[Check]) -> list[dict]:
    return [asdict(c) for c in checks]
