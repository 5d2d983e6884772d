"""CPU threads: no more of them than the process may use (`set_threads`, called by every stage),
and OpenMP threads that stop spinning soon (`bound_openmp_spinning`, when r1train is imported).

OpenMP's waiting: by default libgomp's idle threads spin 300,000 times at the end of every
parallel region before they sleep, waiting for the others. When the process has every core to
itself that saves a wake-up; when another process takes part of a core, the spinning thread burns
the time slice its partner needs to finish, and every small operator waits for a descheduled
thread. A decoding loop issues thousands of small operators per second, so with one other busy
process on a 2-core machine the main recipe's step took 9.2x its time alone. Passive waiting
(`OMP_WAIT_POLICY=PASSIVE`) removes most of that (1.2x) but costs a futex wake-up per parallel
region on an idle machine (+24% per step). r1train sets `GOMP_SPINCOUNT=10000` unless the user set
`GOMP_SPINCOUNT` or `OMP_WAIT_POLICY`: 2.4x under that load, and no slower alone than libgomp's
default (shorter spins, 5000 or 3000, were 8-10% slower alone). `docs/PERFORMANCE.md`
("On an idle machine") has the measurements. It must be in the environment before torch loads
libgomp, so a program that imports torch before r1train keeps libgomp's default.

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


# Spins a waiting OpenMP thread makes before it sleeps (libgomp's default: 300,000); see the module doc.
OPENMP_SPIN_COUNT = 10000


def bound_openmp_spinning() -> None:
    """Set GOMP_SPINCOUNT for libgomp, unless the user chose a wait policy or spin count, or torch
    (which loads libgomp and reads it then) is already imported."""
    import sys

    if "torch" in sys.modules or "GOMP_SPINCOUNT" in os.environ or "OMP_WAIT_POLICY" in os.environ:
        return
    os.environ["GOMP_SPINCOUNT"] = str(OPENMP_SPIN_COUNT)
