"""Hostile programs against the code reward's sandbox: each scores 0 (or its fair score), ends within
its limits, and leaves no trace (sentinel files intact, no process or memory cgroup left, the test process alive).

All programs run as one batch through the reward, in parallel, with small limits, so the table
costs about one wall limit plus start-up. HOME points at a temporary folder holding a sentinel for
the whole module: a program that escaped could only reach that folder, never the real home.
"""
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from rewards import get_code_reward
from rewards.sandbox import Sandbox, SandboxLimits

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None,
                                reason="bubblewrap is not installed (scripts/setup.sh installs it as root)")

WALL_S = 4.0
LIMITS = dict(wall_s=WALL_S, cpu_s=2, memory_mb=512, processes=16, output_kb=64, workers=8)
SECRET = "r1train-secret-4f1c"
SPREAD_ALLOCATION = """import os, time
children = []
for _ in range(11):
    pid = os.fork()
    if pid == 0:
        block = bytearray(400 << 20)
        for page in range(0, len(block), 4096):
            block[page] = 1
        time.sleep(2)
        os._exit(0)
    children.append(pid)
block = bytearray(400 << 20)
for page in range(0, len(block), 4096):
    block[page] = 1
if all(os.waitpid(pid, 0)[1] == 0 for pid in children):
    print('escaped')
"""


def build_cases(paths: dict) -> list[tuple[str, str, list | None, list | None, float]]:
    """(name, program, tests, io_tests, expected score); `paths` are the module's sentinels."""
    must_not_print = [{"input": "", "output": "escaped"}]
    return [
        ("infinite loop", "while True:\n    pass", None, must_not_print, 0.0),
        ("infinite loop in the second test, first test fair",
         "def fast():\n    return 1\ndef slow():\n    while True:\n        pass",
         ["assert fast() == 1", "assert slow() == 1"], None, 0.5),
        ("sleep past the wall limit", "import time\ntime.sleep(60)\nprint('escaped')", None, must_not_print, 0.0),
        ("fork bomb",
         "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass", None, must_not_print, 0.0),
        ("allocate 4 GB", "block = bytearray(4 << 30)\nprint('escaped')", None, must_not_print, 0.0),
        # 12 processes of 400 MB each: every one under a per-process address-space limit of 512 MB,
        # 4.8 GB together; only a cap on the run as a whole stops it.
        ("allocate 4.8 GB across 12 processes, each under the per-process limit", SPREAD_ALLOCATION,
         None, must_not_print, 0.0),
        ("1 GB to stdout",
         "import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(1024):\n    sys.stdout.write(chunk)\nprint('escaped')",
         None, must_not_print, 0.0),
        ("network connection to a listener on this machine",
         f"import socket\nsocket.create_connection(('127.0.0.1', {paths['port']}), timeout=2)\nprint('escaped')",
         None, must_not_print, 0.0),
        ("network connection to the internet",
         "import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=2)\nprint('escaped')", None, must_not_print, 0.0),
        ("read a file outside scratch and print it", f"print(open({paths['secret']!r}).read())",
         None, [{"input": "", "output": SECRET}], 0.0),
        ("read the project's README", f"print(open({paths['readme']!r}).read()[:20])",
         None, [{"input": "", "output": paths["readme_head"]}], 0.0),
        ("write a file outside scratch",
         f"open({paths['new_file']!r}, 'w').write('x')\nprint('escaped')", None, must_not_print, 0.0),
        ("write into the sandbox's own /, /etc and /dev",
         "import os\nfor folder in ('/', '/etc', '/dev'):\n    try:\n        open(os.path.join(folder, 'x'), 'w').write('x')\n"
         "        print('escaped')\n    except OSError:\n        pass", None, must_not_print, 0.0),
        ("fill the scratch folder and /dev/shm past their size with files under the file-size limit",
         "for folder in ('/scratch', '/dev/shm'):\n    for i in range(4):\n"
         "        open(f'{folder}/f{i}', 'wb').write(bytes(8 << 20))\nprint('escaped')", None, must_not_print, 0.0),
        ("delete the sentinel", f"import os\nos.remove({paths['sentinel']!r})\nprint('escaped')", None, must_not_print, 0.0),
        # The shell does run (and empties the sandbox's own scratch home); the fair score 1 says so,
        # so that a sandbox without a shell cannot pass this case by accident. The sentinels are
        # checked by test_nothing_outside_scratch_changed.
        ("shell rm -rf of the home folder (fair: 1, the shell runs and sees no sentinel)",
         f"import os, subprocess\nsaw = os.path.exists({paths['home_sentinel']!r})\n"
         f"shell = subprocess.run('rm -rf ~ \"$HOME\" {paths['home']}; echo shell ran', shell=True, capture_output=True)\n"
         "print(('escaped ' if saw else '') + shell.stdout.decode().strip())",
         None, [{"input": "", "output": "shell ran"}], 1.0),
        # Inside its pid namespace the parent is the sandbox's init, which ignores the signal, the test
        # process's pid names nothing, and kill(-1) spares the caller: the program lives on and
        # answers correctly, so its fair score is 1; this test process surviving is the point.
        ("kill the parent, the test process, then every process it can reach (fair: 1)",
         f"import os, signal\nfor pid in (os.getppid(), {paths['test_pid']}, -1):\n    try:\n"
         "        os.kill(pid, signal.SIGKILL)\n    except OSError:\n        pass\nprint('still here')",
         None, [{"input": "", "output": "still here"}], 1.0),
        ("exit 0 before the tests", "def add(a, b):\n    return 0\nimport sys\nsys.exit(0)", ["assert add(1, 2) == 3"], None, 0.0),
        ("os._exit(0) before the tests", "import os\nos._exit(0)", ["assert True"], None, 0.0),
        ("exit 0 from inside the tested function",
         "def add(a, b):\n    raise SystemExit(0)", ["assert add(1, 2) == 3"], None, 0.0),
        ("redefine the check helper (the test defines it after the program)",
         "def check(candidate):\n    pass\ndef add(a, b):\n    return 0",
         ["def check(candidate):\n    assert candidate(1, 2) == 3\ncheck(add)"], None, 0.0),
        ("monkeypatch builtins used by the tests",
         "import builtins\nbuiltins.len = lambda x: 3\nbuiltins.AssertionError = type('Quiet', (Exception,), {})\n"
         "__builtins__['len'] = lambda x: 3\ndef items():\n    return []",
         ["assert len(items()) == 3"], None, 0.0),
        ("an object equal to everything", "class Any:\n    def __eq__(self, other):\n        return True\n"
         "    def __ne__(self, other):\n        return False\ndef add(a, b):\n    return Any()",
         ["assert add(1, 2) == 3", "assert not (add(1, 2) != 3)"], None, 0.0),
        ("an int subclass equal to everything",
         "class Int(int):\n    def __eq__(self, other):\n        return True\ndef add(a, b):\n    return Int(0)",
         ["assert add(1, 2) == 3"], None, 0.0),
        ("forge result lines on every descriptor",
         "import os\nfor fd in range(64):\n    for i in range(4):\n        try:\n"
         "            os.write(fd, ('%032x %d pass\\n' % (0, i)).encode())\n        except OSError:\n            pass\n"
         "def add(a, b):\n    return 0", ["assert add(1, 2) == 3"], None, 0.0),
        ("patch os.write and os._exit the harness uses, with a correct program (fair: 1)",
         "import os\nos.write = lambda fd, data: len(data)\nos._exit = lambda code: None\ndef add(a, b):\n    return a + b",
         ["assert add(1, 2) == 3"], None, 1.0),
        ("a correct program run beside the hostile ones (fair: 1)",
         "a, b = map(int, input().split())\nprint(a + b)", None, [{"input": "2 3", "output": "5"}], 1.0),
    ]


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    home = root / "home"
    home.mkdir()
    (home / "sentinel").write_text("home sentinel")
    (root / "sentinel").write_text("sentinel")
    (root / "secret.txt").write_text(SECRET)
    readme = str(Path(__file__).resolve().parents[2] / "README.md")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    paths = {"secret": str(root / "secret.txt"), "sentinel": str(root / "sentinel"), "new_file": str(root / "new"),
             "home": str(home), "home_sentinel": str(home / "sentinel"), "port": listener.getsockname()[1],
             "readme": readme, "readme_head": open(readme).read()[:20], "test_pid": os.getpid()}
    cases = build_cases(paths)
    previous_home = os.environ.get("HOME")
    os.environ["HOME"] = str(home)  # if anything escaped, this is the home it would find
    try:
        reward = get_code_reward(**LIMITS)
        completions = [f"<answer>```python\n{program}\n```</answer>" for _, program, _, _, _ in cases]
        start = time.monotonic()
        scores = reward(completions, tests=[c[2] for c in cases], io_tests=[c[3] for c in cases])
        elapsed = time.monotonic() - start
    finally:
        if previous_home is None:
            del os.environ["HOME"]
        else:
            os.environ["HOME"] = previous_home
    try:
        accepted = listener.accept()
    except BlockingIOError:
        accepted = None
    listener.close()
    yield {"cases": cases, "scores": dict(zip([c[0] for c in cases], scores)), "elapsed": elapsed,
           "root": root, "home": home, "accepted": accepted, "cgroups": reward.sandbox.cgroups}


@pytest.mark.parametrize("name", [case[0] for case in build_cases(dict.fromkeys(
    ("secret", "sentinel", "new_file", "home", "home_sentinel", "port", "readme", "readme_head", "test_pid"), ""))])
def test_hostile_program_scores_its_fair_score(hostile_run, name):
    expected = {case[0]: case[4] for case in hostile_run["cases"]}[name]
    assert hostile_run["scores"][name] == expected


def test_the_batch_ends_within_its_limits(hostile_run):
    # Runs go in parallel (8 at a time): the whole table takes a few wall limits, not one per case.
    assert hostile_run["elapsed"] < 4 * WALL_S + 10


def test_nothing_outside_scratch_changed(hostile_run):
    root, home = hostile_run["root"], hostile_run["home"]
    assert (root / "sentinel").read_text() == "sentinel"
    assert (home / "sentinel").read_text() == "home sentinel"
    assert not (root / "new").exists()
    assert sorted(p.name for p in root.iterdir()) == ["home", "secret.txt", "sentinel"]
    assert hostile_run["accepted"] is None  # no connection ever reached the listener


@pytest.mark.skipif(os.geteuid() != 0, reason="as a plain user the sandboxes run under the user's own uid")
def test_no_sandbox_process_is_left(hostile_run):
    # The sandboxes run as nobody; the kernel tears a killed pid namespace down before bwrap
    # exits, and the machine's init reaps what is left of a normally ended one within moments.
    deadline = time.monotonic() + 10
    while True:
        left = subprocess.run(["ps", "-u", "65534", "-o", "pid=,stat=,comm="], capture_output=True, text=True).stdout
        if not left.strip() or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert left.strip() == ""


def test_no_memory_cgroup_is_left(hostile_run):
    cgroups = hostile_run["cgroups"]
    if cgroups is None:
        pytest.skip("no memory cgroups here: the cap is divided address space (tests/rewards/test_sandbox_memory.py)")
    assert sorted(cgroups.parent.glob("r1train-sandbox-*")) == []


def test_1_gb_to_stdout_is_cut_at_the_output_cap():
    # Through the reward the case above scores 0 either way (1 GB of x never equals "escaped"); here
    # the run itself shows the cap: killed once past it, with no more than the cap kept.
    box = Sandbox("bwrap", SandboxLimits(wall_s=60.0, cpu_s=30, output_kb=64), workers=1)
    start = time.monotonic()
    result = box.run_io("import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(1024):\n    sys.stdout.write(chunk)", "")
    assert result.output_exceeded and result.returncode is None and not result.timed_out
    assert len(result.stdout) == 64 << 10
    assert time.monotonic() - start < 30  # ended by the cap, long before the wall limit
