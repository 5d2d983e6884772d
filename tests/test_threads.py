"""CPU thread settings: OpenMP threads spin briefly unless the user chose their waiting, and the
thread count follows the cores the process may use."""
from __future__ import annotations

import os
import subprocess
import sys

from r1train.threads import OPENMP_SPIN_COUNT, usable_cpus


def openmp_environment(env: dict[str, str], imports: str = "r1train, r1train.cli, torch") -> tuple[str, str]:
    code = (f"import os, {imports}; "
            "print(os.environ.get('GOMP_SPINCOUNT', 'unset'), os.environ.get('OMP_WAIT_POLICY', 'unset'))")
    base = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True, check=True)
    spin, policy = out.stdout.split()
    return spin, policy


def test_importing_r1train_bounds_openmp_spinning_unless_the_user_chose_the_waiting():
    # libgomp's 300,000 spins made a step 9.2x slower with one busy process beside it, 10,000 2.4x (threads.py).
    assert openmp_environment({}) == (str(OPENMP_SPIN_COUNT), "unset")
    assert openmp_environment({"OMP_WAIT_POLICY": "PASSIVE"}) == ("unset", "PASSIVE")
    assert openmp_environment({"GOMP_SPINCOUNT": "300000"}) == ("300000", "unset")
    # Too late once torch is loaded (libgomp read its settings then): nothing is pretended.
    assert openmp_environment({}, imports="torch, r1train") == ("unset", "unset")


def test_a_cgroup_cpu_quota_caps_the_usable_cores(tmp_path):
    cpu_max = tmp_path / "cpu.max"
    affinity = len(os.sched_getaffinity(0))
    cpu_max.write_text("max 100000\n")  # no quota
    assert usable_cpus(cpu_max) == affinity
    cpu_max.write_text("50000 100000\n")  # half a core: still one thread
    assert usable_cpus(cpu_max) == 1
    cpu_max.write_text(f"{100000 * (affinity + 3)} 100000\n")  # a quota above the affinity
    assert usable_cpus(cpu_max) == affinity
    assert usable_cpus(tmp_path / "absent") == affinity
