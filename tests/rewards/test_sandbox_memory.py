"""The code reward's memory cap holds for a sandboxed run as a whole, and its kwargs are checked.

The run-wide cap is a memory cgroup per run where the machine allows one (root with a writable
cgroup v1 memory hierarchy, as on the development machines), else memory_mb / processes of address
space per process; both ways are tested. The allocating program spreads 4.8 GB over 12 processes
of 400 MB, each under the 512 MB per-process address-space limit the code had before the cap: that
code let all of it through (measured: every child exited 0 after 18 s on a loaded machine), so the
wall limit here (120 s) is long enough for it to escape if the cap failed.
"""
import glob
import os
import shutil

import pytest

import rewards
from rewards import sandbox_memory
from rewards.registry import RewardSpecError
from rewards.sandbox import Sandbox, SandboxLimits

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None,
                                 reason="bubblewrap is not installed (scripts/setup.sh installs it as root)")

SPREAD_4_8_GB = """import os, time
children = []
for _ in range(11):
    pid = os.fork()
    if pid == 0:
        block = bytearray(400 << 20)
        for page in range(0, len(block), 4096):
            block[page] = 1
        time.sleep(1)
        os._exit(0)
    children.append(pid)
block = bytearray(400 << 20)
for page in range(0, len(block), 4096):
    block[page] = 1
print('escaped' if all(os.waitpid(pid, 0)[1] == 0 for pid in children) else 'stopped')
"""
TOUCH_300_MB = "block = bytearray(300 << 20)\nfor page in range(0, len(block), 4096):\n    block[page] = 1\nprint('done')"
WALL_S = 120.0  # long: under the old per-process limit the program escaped in 18 s
LIMITS = SandboxLimits(wall_s=WALL_S, cpu_s=10, memory_mb=512, processes=16)


@needs_bwrap
def test_4_8_gb_over_12_processes_is_stopped_by_the_run_wide_cgroup():
    box = Sandbox("bwrap", LIMITS, workers=1)
    if box.memory_cap != "cgroup":
        pytest.skip("no memory cgroup can be made here (needs root and a cgroup v1 memory hierarchy)")
    assert box.address_space_mb == 512  # each process alone could map its 400 MB
    result = box.run_io(SPREAD_4_8_GB, "")
    assert b"escaped" not in result.stdout
    assert not result.timed_out  # stopped by memory, not by the clock
    # within the cap a program runs normally (the cap is not simply "fail everything")
    result = box.run_io(TOUCH_300_MB, "")
    assert (result.returncode, result.stdout) == (0, b"done\n")
    # the run's cgroups are gone
    assert glob.glob(str(box.cgroups.parent / "r1train-sandbox-*")) == []


@needs_bwrap
def test_without_a_cgroup_the_cap_is_divided_between_processes(monkeypatch):
    monkeypatch.setattr(sandbox_memory, "find_memory_cgroups", lambda owner: None)
    box = Sandbox("bwrap", LIMITS, workers=1)
    assert (box.memory_cap, box.address_space_mb) == ("address space", 512 // 16)
    result = box.run_io(SPREAD_4_8_GB, "")
    assert b"escaped" not in result.stdout and not result.timed_out
    result = box.run_io("print(sum(range(10)))", "")  # 32 MiB is enough for a small program
    assert (result.returncode, result.stdout) == (0, b"45\n")


@needs_bwrap
def test_the_code_reward_scores_the_spread_allocation_0_and_a_fair_program_1():
    reward = rewards.get_reward("code", memory_mb=512, processes=16, wall_s=WALL_S, cpu_s=10, workers=2)
    io = [{"input": "", "output": "escaped"}]
    fair = "<answer>```python\ndef add(a, b):\n    return a + b\n```</answer>"
    scores = reward([f"<answer>```python\n{SPREAD_4_8_GB}```</answer>", fair],
                    io_tests=[io, None], tests=[None, ["assert add(2, 3) == 5"]])
    assert scores == [0.0, 1.0]


BAD_KWARGS = [
    ({"memory_mb": "4GB"}, "memory_mb must be a whole number, got '4GB'"),
    ({"memory_mb": 1.5}, "memory_mb must be a whole number, got 1.5"),
    ({"memory_mb": True}, "memory_mb must be a whole number, got True"),
    ({"memory_mb": 0}, "memory_mb must be positive, got 0"),
    ({"memory_mb": -512}, "memory_mb must be positive, got -512"),
    ({"memory_mb": 8}, "memory_mb must be at least 32"),
    ({"memory_mb": 10 ** 8}, r"workers x memory_mb = \d+ x 100000000 MiB is more than this machine's"),
    ({"memory_mb": 4096, "workers": 1000}, r"workers x memory_mb = 1000 x 4096 MiB is more than"),
    ({"workers": 0}, "workers must be a whole number of at least 1, got 0"),
    ({"processes": 2.0}, "processes must be a whole number, got 2.0"),
    ({"wall_s": "10"}, "wall_s must be a number of seconds, got '10'"),
]


@pytest.mark.parametrize("kwargs, message", BAD_KWARGS)
def test_bad_limits_are_refused_in_one_line(kwargs, message):
    # sandbox "none" so that the check needs no bubblewrap; the limits are the same for both
    with pytest.raises(RewardSpecError, match=message) as error:
        rewards.resolve_reward({"name": "code", "kwargs": {"sandbox": "none", **kwargs}})
    assert "\n" not in str(error.value)


def test_a_divided_cap_too_small_for_python_is_refused(monkeypatch):
    monkeypatch.setattr(sandbox_memory, "find_memory_cgroups", lambda owner: None)
    with pytest.raises(RewardSpecError, match="memory_mb / processes = 16 MiB.*raise memory_mb to at least 256"):
        rewards.resolve_reward({"name": "code", "kwargs": {"sandbox": "none", "memory_mb": 128, "processes": 8}})


def test_default_workers_leave_half_the_machine_memory():
    machine_mb = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") >> 20
    box = Sandbox("none", SandboxLimits(memory_mb=machine_mb // 4))
    assert box.workers == 2  # four per CPU would be more, but two at a quarter each fill half
    assert Sandbox("none", SandboxLimits(memory_mb=machine_mb - 1)).workers == 1
