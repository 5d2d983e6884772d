"""The code reward on honest programs: extraction, both test forms, scoring modes, refusal."""
import os
import shutil
import tempfile
from pathlib import Path

import pytest

import rewards
from rewards import extract_program, get_code_reward, get_reward
from rewards.registry import RewardSpecError
from rewards import sandbox as sandbox_module

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed (scripts/setup.sh installs it as root)")

ADD_TESTS = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(0, 0) == 0"]
SUM_IO = [{"input": "1 2\n", "output": "3\n"}, {"input": "10 -4\n", "output": "6"}]
# Honest programs take milliseconds, but a test run at nice 19 beside a learning run gets little CPU:
# a generous wall limit keeps these tests about scoring, not about the machine's load.
SLOW_MACHINE = dict(wall_s=60.0, cpu_s=10)


def answer(code: str, fence: str = "```python") -> str:
    return f"<think>simple</think><answer>\n{fence}\n{code}\n```\n</answer>"


EXTRACTION_CASES = [
    (answer("def f():\n    return 1"), "def f():\n    return 1\n"),  # python fence
    (answer("x = 1", fence="```py"), "x = 1\n"),  # py label
    (answer("x = 1", fence="```"), "x = 1\n"),  # bare fence
    ("<answer>```python\nx = 1\n```\n```python\nx = 2\n```</answer>", "x = 2\n"),  # the last block
    ("<answer>```python\nx = 1\n```\n```text\nnot code\n```</answer>", "x = 1\n"),  # other labels skipped
    ("<think>t</think><answer>print(3)</answer>", "print(3)"),  # no fence: the whole answer
    ("<think>t</think>\n```python\nx = 3\n```", "x = 3\n"),  # no answer tags: after the thinking
    ("<think>```python\nx = 1\n```", None),  # still thinking
    ("<answer>```python\nx = 1\n```</answer><answer>x = 2</answer>", None),  # two different answers
    ("<answer>```text\nprose\n```</answer>", None),  # a fence, but no Python in it
    ("<answer>" + "x = 1\n" * 5000 + "</answer>", None),  # too long to run
]


@pytest.mark.parametrize("completion, program", EXTRACTION_CASES)
def test_extract_program(completion, program):
    assert extract_program(completion) == program


@needs_bwrap
def test_registry_entry_and_docstring_example():
    reward = get_reward("code", **SLOW_MACHINE)
    add = "<answer>```python\ndef add(a, b):\n    return a {} b\n```</answer>"
    echo = "<answer>print(sum(map(int, input().split())){})</answer>"
    tests = ["assert add(1, 2) == 3", "assert add(0, 0) == 0"]
    io = [{"input": "1 2\n", "output": "3"}]
    scores = reward([add.format("+"), add.format("-"), echo.format(""), echo.format(" + 1"), "<answer>1</answer>"],
                    tests=[tests, tests, None, None, None], io_tests=[None, None, io, io, None])
    assert scores == [1.0, 0.5, 1.0, 0.0, None]


SCORING_CASES = [
    # (program, tests, io_tests, fraction score)
    ("def add(a, b):\n    return a + b", ADD_TESTS, None, 1.0),  # correct
    ("def add(a, b):\n    return a * b", ADD_TESTS, None, 1 / 3),  # right only for 0 + 0
    ("def add(a, b):\n    return a - b", ADD_TESTS, None, 1 / 3),  # right only for 0 - 0
    ("def add(a, b):\n    return a +", ADD_TESTS, None, 0.0),  # syntax error
    ("def plus(a, b):\n    return a + b", ADD_TESTS, None, 0.0),  # wrong name: NameError
    ("def add(a, b):\n    raise ValueError", ADD_TESTS, None, 0.0),  # raises
    ("a, b = map(int, input().split())\nprint(a + b)", None, SUM_IO, 1.0),  # correct io
    ("a, b = map(int, input().split())\nprint(a + b, '  ')\nprint()", None, SUM_IO, 1.0),  # trailing blanks ignored
    ("a, b = map(int, input().split())\nprint(a - b)", None, SUM_IO, 0.0),  # wrong io
    ("a, b = map(int, input().split())\nprint(abs(a + b))", None, SUM_IO, 1.0),  # right on both
    ("a, b = map(int, input().split())\nprint(a + b if a > 0 and b > 0 else 0)", None, SUM_IO, 0.5),  # one of two
    ("a, b = map(int, input().split())\nprint(a + b)\nraise SystemExit(1)", None, SUM_IO, 0.0),  # non-zero exit
    ("print('3')", None, SUM_IO, 0.5),  # a constant happens to match one case
    # both forms on one row: 3 tests + 2 io cases
    ("def add(a, b):\n    return a + b\nif __name__ == '__main__':\n    import sys\n"
     "    data = sys.stdin.read().split()\n    if data:\n        print(add(*map(int, data)))", ADD_TESTS, SUM_IO, 1.0),
]


@needs_bwrap
def test_correct_and_wrong_programs_both_forms():
    reward = get_code_reward(workers=8, **SLOW_MACHINE)
    completions = [answer(program) for program, _, _, _ in SCORING_CASES]
    scores = reward(completions, tests=[c[1] for c in SCORING_CASES], io_tests=[c[2] for c in SCORING_CASES])
    assert scores == pytest.approx([c[3] for c in SCORING_CASES])


@needs_bwrap
def test_all_or_nothing_and_rows_without_tests():
    reward = get_code_reward(all_or_nothing=True, **SLOW_MACHINE)
    right, half = answer("def add(a, b):\n    return a + b"), answer("def add(a, b):\n    return a * b")
    scores = reward([right, half, right, "<think>no answer"], tests=[ADD_TESTS, ADD_TESTS, None, ADD_TESTS])
    assert scores == [1.0, 0.0, None, 0.0]  # a row without tests is not judged; no program scores 0


@needs_bwrap
def test_humaneval_style_check_function():
    test = "def check(candidate):\n    assert candidate('ab') == 'ba'\n    assert candidate('') == ''\ncheck(reverse)"
    reward = get_code_reward(**SLOW_MACHINE)
    right, wrong = answer("def reverse(s):\n    return s[::-1]"), answer("def reverse(s):\n    return s")
    assert reward([right, wrong], tests=[[test], [test]]) == [1.0, 0.0]


def test_bad_columns_are_reported():
    reward = get_code_reward(sandbox="none")
    with pytest.raises(ValueError, match="io_tests"):
        reward([answer("x = 1")], io_tests=[[{"input": "1"}]])
    with pytest.raises(ValueError, match="tests"):
        reward([answer("x = 1")], tests=["assert True"])


def test_missing_bwrap_refuses_with_install_hint(monkeypatch):
    sandbox_module.check_isolation.cache_clear()
    monkeypatch.setattr(sandbox_module.shutil, "which", lambda name: None)
    try:
        with pytest.raises(RewardSpecError, match="apt-get install -y bubblewrap.*sandbox: none") as error:
            rewards.resolve_reward({"name": "code"})
        assert "\n" not in str(error.value)
        # asked for by name, running without isolation is allowed (and works without bwrap)
        _, reward = rewards.resolve_reward({"name": "code", "kwargs": {"sandbox": "none"}})
        assert reward([answer("def add(a, b):\n    return a + b")], tests=[ADD_TESTS]) == [1.0]
    finally:
        sandbox_module.check_isolation.cache_clear()


@needs_bwrap
def test_a_bwrap_outside_the_programs_path_is_the_one_run(monkeypatch):
    """Programs get PATH=/usr/bin:/bin; a bwrap that the trainer's PATH finds elsewhere (/usr/local/bin,
    ~/.local/bin, an unpacked package) must still start them, by its full path."""
    folder = Path(tempfile.mkdtemp(prefix="r1train-bwrap-"))  # not under pytest's 0700 tmp: nobody runs it
    try:
        folder.chmod(0o777)
        marker, wrapper = folder / "used", folder / "bwrap"
        wrapper.write_text(f"#!/bin/sh\ntouch {marker}\nexec {shutil.which('bwrap')} \"$@\"\n")
        wrapper.chmod(0o755)
        monkeypatch.setenv("PATH", f"{folder}:{os.environ['PATH']}")
        sandbox_module.check_isolation.cache_clear()
        reward = get_code_reward(**SLOW_MACHINE)
        assert reward([answer("def add(a, b):\n    return a + b")], tests=[ADD_TESTS]) == [1.0]
        assert marker.exists()
    finally:
        sandbox_module.check_isolation.cache_clear()
        shutil.rmtree(folder)


def test_unknown_sandbox_is_refused():
    with pytest.raises(RewardSpecError, match="sandbox must be one of"):
        rewards.resolve_reward({"name": "code", "kwargs": {"sandbox": "docker"}})
