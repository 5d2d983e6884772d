"""Function-writing tasks for the `code` reward: one-line string and list exercises ("Write a Python
function `last_3(s)` that returns the last 3 characters of the string s."), each with three assert
tests, split into train and test with no task in both.

Each kind of task is a template with one parameter (a number or a letter), so a 135M chat model
sees the same few shapes with different constants: simple enough that some of its samples pass from
the start, varied enough that a held-out split means something. Expected values come from a Python
reference function per template, never from running the written solution; the `solution` column
holds a reference program (the tests check it passes) for SFT or inspection.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable

from r1train.toy_data._common import Row

_WORDS = ("apple", "banana", "cherry", "grape", "lemon", "mango", "melon", "orange", "peach", "plum",
          "python", "reward", "sample", "token", "window", "yellow")


@dataclass(frozen=True)
class _Template:
    name: str  # function name with {p} for the parameter
    question: str  # with {name} and {p}
    body: str  # the reference solution's return expression, with {p}
    argument: str  # the parameter's name in the signature
    parameters: tuple  # the values {p} takes
    reference: Callable[[Any, Any], Any]  # (parameter, argument) -> expected value
    draw_argument: Callable[[random.Random, Any], Any]  # (rng, parameter) -> a test input


def _word(rng: random.Random, _parameter=None) -> str:
    return rng.choice(_WORDS) + rng.choice(("", "s", "y", "er"))


def _numbers(rng: random.Random, _parameter=None) -> list[int]:
    return [rng.randint(-5, 20) for _ in range(rng.randint(1, 6))]


TEMPLATES = (
    _Template("add_{p}", "returns x plus {p}", "x + {p}", "x", tuple(range(1, 51)),
              lambda p, x: x + p, lambda rng, p: rng.randint(-20, 50)),
    _Template("times_{p}", "returns a new list with every number in items multiplied by {p}",
              "[item * {p} for item in items]", "items", tuple(range(2, 10)),
              lambda p, items: [item * p for item in items], _numbers),
    _Template("repeat_{p}", "returns the string s repeated {p} times", "s * {p}", "s", tuple(range(2, 6)),
              lambda p, s: s * p, lambda rng, p: rng.choice(("ab", "x", "hi", "123", "yes"))),
    _Template("first_{p}", "returns the first {p} characters of the string s", "s[:{p}]", "s", tuple(range(1, 6)),
              lambda p, s: s[:p], _word),
    _Template("last_{p}", "returns the last {p} characters of the string s", "s[-{p}:]", "s", tuple(range(1, 6)),
              lambda p, s: s[-p:], _word),
    _Template("count_{p}", "returns how many times the letter '{p}' appears in the string s", "s.count('{p}')", "s",
              tuple("aeilnoprt"), lambda p, s: s.count(p), _word),
    _Template("ends_with_{p}", "returns True if the string s ends with the letter '{p}', else False",
              "s.endswith('{p}')", "s", tuple("aehnrsty"), lambda p, s: s.endswith(p), _word),
    _Template("count_above_{p}", "returns how many numbers in the list items are greater than {p}",
              "sum(1 for item in items if item > {p})", "items", tuple(range(0, 21)),
              lambda p, items: sum(1 for item in items if item > p), _numbers),
    _Template("contains_{p}", "returns True if the number {p} is in the list items, else False", "{p} in items",
              "items", tuple(range(0, 11)), lambda p, items: p in items,
              lambda rng, p: _numbers(rng) + ([p] if rng.random() < 0.5 else [])),
)
TESTS_PER_TASK = 3


def code_task_row(template: _Template, parameter: Any, rng: random.Random) -> Row:
    """One task: {"question", "entry_point", "tests", "solution"}; the tests use three distinct inputs
    drawn from `rng`."""
    name = template.name.format(p=parameter)
    question = f"Write a Python function `{name}({template.argument})` that {template.question.format(p=parameter)}."
    inputs: list = []
    for _ in range(100):
        candidate = template.draw_argument(rng, parameter)
        if candidate not in inputs:
            inputs.append(candidate)
        if len(inputs) == TESTS_PER_TASK:
            break
    tests = [f"assert {name}({value!r}) == {template.reference(parameter, value)!r}" for value in inputs]
    solution = f"def {name}({template.argument}):\n    return {template.body.format(p=parameter)}\n"
    return {"question": question, "entry_point": name, "tests": tests, "solution": solution}


def make_code_tasks(seed: int, test_size: int = 25, name: str = "code") -> tuple[list[Row], list[Row]]:
    """Every (template, parameter) task once, shuffled and split into (train, test).

    Args:
        seed: with `name`, seeds this dataset's random generator.
        test_size: rows in test; the rest (96 with the default) go to train.
    Returns:
        (train rows, test rows), each row {"question", "entry_point", "tests", "solution"}.
    """
    rng = random.Random(f"{seed}-{name}")
    tasks = [(template, parameter) for template in TEMPLATES for parameter in template.parameters]
    if not 0 < test_size < len(tasks):
        raise ValueError(f"test_size must be between 1 and {len(tasks) - 1}, got {test_size}")
    rng.shuffle(tasks)
    rows = [code_task_row(template, parameter, rng) for template, parameter in tasks]
    return rows[test_size:], rows[:test_size]

