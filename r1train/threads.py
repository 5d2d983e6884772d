"""CPU threads that yield the core when they wait, and no more of them than the process may use.

Imported by `r1train/__init__.py`, before anything imports torch: OpenMP reads its settings once,
when torch's OpenMP runtime (GNU libgomp) is loaded, so setting them later does nothing.

Why. By default libgomp's idle threads spin (OMP_WAIT_POLICY unset: a few hundred thousand
spins) at the end of every parallel region, waiting for the others. When the process has every
core to itself that saves a wake-up; when another process takes part of a core, the spinning
thread burns the time slice its partner needs to finish, and every small operator waits for a
descheduled thread. A decoding loop issues thousands of small operators per second, so the whole
run slows far more than its share of the cores: on the 2-core machine with other work running
(load average 12-17), a decode-like loop of small bf16 matmuls took 0.9-2.2 s per iteration with
2 spinning threads against 35-64 ms with OMP_WAIT_POLICY=PASSIVE (and 48-180 ms with one thread).
Passive waiting costs a futex wake-up per parallel region on an idle machine.

Threads: torch starts one intra-op thread per core it sees; a container may also be limited by a
CPU quota (cgroup `cpu.max`) that torch does not read. More threads than the cores the process
actually gets only adds waiting, so the default is the smaller of the two.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

_CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def wait_passively() -> None:
    """Let OpenMP threads sleep at once when they wait, unless the user chose a policy.

    Must run before torch is imported; later it has no effect (the runtime has read its settings).
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("KMP_BLOCKTIME", "0")  # the same for Intel's OpenMP, when it is preloaded


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
