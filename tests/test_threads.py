"""CPU thread settings: OpenMP's wait policy is the user's, and the thread count follows the cores
the process may use."""
from __future__ import annotations

import os
import subprocess
import sys

from r1train.threads import usable_cpus


def test_importing_r1train_leaves_openmp_waiting_as_the_user_set_it():
    # Passive waiting made generation 1.55x slower on an idle machine (r1train/threads.py): it is
    # the user's choice for shared machines, never set behind their back.
    code = "import os, r1train, r1train.cli, torch; print(os.environ.get('OMP_WAIT_POLICY', 'unset'))"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "unset"
    out = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_WAIT_POLICY": "PASSIVE"},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "PASSIVE"


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
