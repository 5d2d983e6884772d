"""CPU threads: no more of them than the process may use (`set_threads`, called by every stage).

OpenMP's wait policy is left to the user (README, Performance, "Threads under load"). By default libgomp's idle threads spin (OMP_WAIT_POLICY unset: a few hundred thousand
spins) at the end of every parallel region, waiting for the others. When the process has every
core to itself that saves a wake-up; when another process takes part of a core, the spinning
thread burns the time slice its partner needs to finish, and every small operator waits for a
descheduled thread. A decoding loop issues thousands of small operators per second, so on a
loaded machine the whole run slows far more than its share of the cores. Passive waiting costs a
futex wake-up per parallel region on an idle machine, and that cost is not small either (the
README's "Sync, threads under load" section has the measurements). So r1train does not set it; on
a shared machine, `export OMP_WAIT_POLICY=PASSIVE` before running (it must be set before torch
loads).

Threads: torch starts one intra-op thread per core it sees; a container may also be limited by a
CPU quota (cgroup `cpu.max`) that torch does not read. More threads than the cores the process
actually gets only adds waiting, so the default is the smaller of the two.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

_CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def usable_cpus(cpu_max: Path = _CGROUP_CPU_MAX) -> int:
    """The cores this process may run on: its CPU affinity, capped by a cgroup v2 CPU quota.

    >>> usable_cpus() >= 1
    True
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = cpu_max.read_text().split()
    except (OSError, ValueError):
        return cpus
    if quota == "max":
        return cpus
    return max(1, min(cpus, math.ceil(int(quota) / int(period))))


def set_threads(threads: int | None) -> None:
    """Torch's intra-op threads: `threads`, or by default one per core this process may use
    (`usable_cpus`), never more than torch's own default."""
    import torch

    torch.set_num_threads(threads or min(torch.get_num_threads(), usable_cpus()))
