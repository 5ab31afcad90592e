"""Facts about the host a low-latency deployment depends on, read from ``/proc`` and ``/sys``.

Why one module: ``hean doctor`` reports these facts and the placement acts on the same ones (which CPUs are
isolated, which are SMT siblings of one core), so the two can never disagree. Every reader takes ``root``
(``/`` by default) so tests feed a fake tree; a fact the kernel does not expose (a VM without cpufreq, a
container without ``/sys``) reads as None or empty, never as an error.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Topology", "cmdline_cpus", "cpu_list", "read", "read_topology"]


def read(root: str | os.PathLike, rel: str) -> str | None:
    """The stripped text of ``root/rel``, or None when it does not exist or cannot be read."""
    try:
        return (Path(root) / rel.lstrip("/")).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def cpu_list(text: str | None) -> set[int]:
    """A kernel CPU list (``"0-3,8,10-11"``) as a set; empty for None, ``""`` or garbage."""
    out: set[int] = set()
    for part in (text or "").replace("\n", ",").split(","):
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            return set()
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        out.update(range(lo, hi + 1))
    return out


def cmdline_cpus(root: str | os.PathLike, key: str) -> set[int]:
    """CPUs named by boot parameter ``key`` (``isolcpus``, ``nohz_full``, ``rcu_nocbs``) in ``/proc/cmdline``;
    ``isolcpus``' flags (``domain,managed_irq,2-5``) are skipped."""
    for word in (read(root, "proc/cmdline") or "").split():
        if word.startswith(key + "="):
            parts = [p for p in word.split("=", 1)[1].split(",") if p and p[0].isdigit()]
            return cpu_list(",".join(parts))
    return set()


@dataclass(frozen=True)
class Topology:
    """Which CPUs share a physical core, and which the kernel keeps free of other work (isolated)."""

    siblings: dict[int, frozenset[int]] = field(default_factory=dict)  # cpu -> every CPU of its core
    isolated: frozenset[int] = frozenset()  # isolcpus / the isolated file: no other task is scheduled there

    def core(self, cpu: int) -> frozenset[int]:
        return self.siblings.get(cpu, frozenset({cpu}))


def read_topology(root: str | os.PathLike = "/") -> Topology:
    """The host's SMT siblings (``thread_siblings_list`` of each CPU) and isolated CPUs."""
    siblings: dict[int, frozenset[int]] = {}
    base = Path(root) / "sys/devices/system/cpu"
    if base.is_dir():
        for d in base.iterdir():
            m = re.fullmatch(r"cpu(\d+)", d.name)
            if m:
                sib = cpu_list(read(root, f"sys/devices/system/cpu/{d.name}/topology/thread_siblings_list"))
                if sib:
                    siblings[int(m.group(1))] = frozenset(sib)
    isolated = cpu_list(read(root, "sys/devices/system/cpu/isolated")) | cmdline_cpus(root, "isolcpus")
    return Topology(siblings, frozenset(isolated))
