"""The code reward of DeepSeek-R1: run the model's program against the row's tests, in a sandbox.

The program is the last fenced Python block (```python, ```py or a bare ```) of the final answer,
or the whole answer when it has no fence. The final answer is the single `<answer>` block after
the thinking (see `rewards.extraction`), or, without answer tags, everything after `</think>`.

Two forms of tests, by dataset column (a row may have either or both):
- `tests`: Python statements run after the program in its namespace, MBPP/HumanEval style
  (`"assert add(2, 3) == 5"`, or a whole `def check(candidate): ...` followed by `check(add)`);
  one sandboxed run per program runs them all, each reported separately (see
  `rewards/code_harness.py` for what a program cannot fake).
- `io_tests`: `{"input": str, "output": str}` pairs, APPS/Codeforces style: one sandboxed run per
  pair with `input` as stdin; it passes when the run exits with status 0 within its limits and its
  stdout equals `output` after trailing whitespace is stripped from every line and trailing
  empty lines are dropped.

Every run is a separate process under `rewards.sandbox` (bubblewrap, resource limits, wall clock);
a batch's runs go in parallel, and identical (program, test) runs within a batch are done once
(GRPO groups often hold the same completion several times).
"""
from __future__ import annotations

import re
from typing import Any

from rewards.extraction import answer_region, tagged_answer
from rewards.registry import register
from rewards.sandbox import RunResult, Sandbox, SandboxLimits

MAX_PROGRAM_CHARS = 20_000  # longer than any answer to a function-writing task; not run
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.DOTALL)
_PYTHON_LABELS = ("", "python", "py", "python3")


def extract_program(completion: str) -> str | None:
    """The program in a completion, or None when there is no final answer to take it from.

    Example:
        extract_program("<think>easy</think><answer>```python\\ndef f():\\n    return 1\\n```</answer>")
        == "def f():\\n    return 1\\n"
    """
    answer = tagged_answer(completion)
    if answer is None:
        if "<answer>" in completion:
            return None  # answer tags, but no single final answer: nothing to run
        answer = answer_region(completion)
    if answer is None:
        return None
    blocks = [code for label, code in _FENCE.findall(answer) if label.lower() in _PYTHON_LABELS]
    program = blocks[-1] if blocks else ("" if "```" in answer else answer)
    if not program.strip() or len(program) > MAX_PROGRAM_CHARS:
        return None
    return program


def normalise_output(text: str) -> str:
    """Trailing whitespace stripped from every line, trailing empty lines dropped."""
    return "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").split("\n")).rstrip("\n")


@register("code", factory=True, any_columns=("tests", "io_tests"))
def get_code_reward(sandbox: str = "bwrap", all_or_nothing: bool = False, workers: int | None = None,
                    wall_s: float = 10.0, cpu_s: int = 5, memory_mb: int = 1024, processes: int = 8,
                    file_mb: int = 16, output_kb: int = 1024):
    """Build the code reward (registered as "code"): the fraction of a row's tests the program
    passes, or with `all_or_nothing` 1.0 only when it passes all of them.

    Args:
        sandbox: "bwrap" (default; refused with an install hint where bubblewrap is missing) or
            "none" (no isolation at all: only for machines without bubblewrap, and only by name).
        all_or_nothing: score 1.0 for all tests passed, else 0.0.
        workers: sandboxes run at once (default: four per CPU, fewer where that many at
            memory_mb would take over half the machine's memory; more than all of it is refused).
        wall_s, cpu_s, memory_mb, processes, file_mb, output_kb: per-run limits (`SandboxLimits`);
            memory_mb caps a run as a whole, all its processes together (see `rewards.sandbox`).
    Returns:
        code_reward(completions, **columns) -> list[float | None], reading the columns `tests`
        (N lists of statements, or None) and `io_tests` (N lists of {"input", "output"}, or None);
        None for a row with neither.

    Example:
        reward = get_code_reward()
        add = "<answer>```python\ndef add(a, b):\n    return a {} b\n```</answer>"
        echo = "<answer>print(sum(map(int, input().split())){})</answer>"
        tests = ["assert add(1, 2) == 3", "assert add(0, 0) == 0"]
        io = [{"input": "1 2\n", "output": "3"}]
        reward([add.format("+"), add.format("-"), echo.format(""), echo.format(" + 1"), "<answer>1</answer>"],
               tests=[tests, tests, None, None, None], io_tests=[None, None, io, io, None])
        == [1.0, 0.5, 1.0, 0.0, None]   # a - b still passes add(0, 0); the last row has no tests
    """
    runner = Sandbox(sandbox, SandboxLimits(wall_s=wall_s, cpu_s=cpu_s, memory_mb=memory_mb, processes=processes,
                                            file_mb=file_mb, output_kb=output_kb), workers)

    def code_reward(completions: list[str], **columns) -> list[float | None]:
        count = len(completions)
        tests = _column(columns, "tests", count)
        io_tests = _column(columns, "io_tests", count)
        programs = [extract_program(text) for text in completions]

        jobs: dict[tuple, Any] = {}  # distinct runs of the batch, keyed by what they run
        for program, row_tests, row_io in zip(programs, tests, io_tests):
            if program is None:
                continue
            if row_tests:
                jobs[("tests", program, tuple(row_tests))] = None
            for case in row_io or ():
                jobs[("io", program, case["input"])] = None
        keys = list(jobs)
        for key, result in zip(keys, runner.map(lambda key: _run(runner, key), keys)):
            jobs[key] = result

        scores: list[float | None] = []
        for program, row_tests, row_io in zip(programs, tests, io_tests):
            total = len(row_tests or ()) + len(row_io or ())
            if total == 0:
                scores.append(None)
                continue
            passed = 0
            if program is not None:
                if row_tests:
                    passed += len(jobs[("tests", program, tuple(row_tests))].passed_tests)
                for case in row_io or ():
                    passed += _io_passed(jobs[("io", program, case["input"])], case["output"])
            fraction = passed / total
            scores.append(float(fraction == 1.0) if all_or_nothing else fraction)
        return scores

    code_reward.sandbox = runner
    return code_reward


def _run(runner: Sandbox, key: tuple) -> RunResult:
    mode, program, payload = key
    if mode == "tests":
        return runner.run_tests(program, list(payload))
    return runner.run_io(program, payload)


def _io_passed(result: RunResult, expected: str) -> bool:
    if result.returncode != 0 or result.timed_out or result.output_exceeded:
        return False
    return normalise_output(result.stdout.decode(errors="replace")) == normalise_output(expected)


def _column(columns: dict, name: str, count: int) -> list:
    values = columns.get(name)
    if values is None:
        return [None] * count
    if len(values) != count:
        raise ValueError(f"{count} completions but {len(values)} values in column {name!r}")
    for value in values:
        if value is not None and not isinstance(value, (list, tuple)):
            raise ValueError(f"column {name!r} must hold lists (or None), got {type(value).__name__}")
    if name == "io_tests":
        for cases in values:
            for case in cases or ():
                if not (isinstance(case, dict) and isinstance(case.get("input"), str)
                        and isinstance(case.get("output"), str)):
                    raise ValueError(f"every io_tests case must be {{'input': str, 'output': str}}, got {case!r}")
    return list(values)
