"""Three-operand arithmetic ("What is 14 + 9 - 6?"): a task where steps are needed.

A 135M model answers one small addition from memory often enough; chaining two operations it
rarely does, unless it writes the intermediate result down first ("14 + 9 = 23, 23 - 6 = 17").
That is the point of this task: thinking can pay here.

Deliberate simplifications: operators are + and -, evaluated left to right (no precedence
question arises); every intermediate and final result is at least 0, so no step needs negative
numbers; questions are distinct (the same numbers with other operators are other questions).
"""
from __future__ import annotations

import random

from r1train.toy_data._common import _APPLY, Row, _draw_distinct

MULTISTEP_OPERATORS = ("+", "-")


def multistep_row(operands: tuple[int, ...], ops: tuple[str, ...]) -> Row:
    """One question: {"question": "What is 14 + 9 - 6?", "answer": "17", "operands": [14, 9, 6],
    "ops": ["+", "-"]}, evaluated left to right."""
    value = operands[0]
    for op, operand in zip(ops, operands[1:]):
        value = _APPLY[op](value, operand)
    text = " ".join([str(operands[0])] + [f"{op} {operand}" for op, operand in zip(ops, operands[1:])])
    return {"question": f"What is {text}?", "answer": str(value), "operands": list(operands), "ops": list(ops)}


def make_multistep(
    seed: int,
    operand_min: int = 1,
    operand_max: int = 20,
    terms: int = 3,
    train_size: int = 2000,
    test_size: int = 200,
    name: str = "multistep",
) -> tuple[list[Row], list[Row]]:
    """Distinct left-to-right chains of + and -, split into (train, test) with no question in both.

    Args:
        seed: with `name`, seeds this dataset's random generator.
        operand_min, operand_max: every operand is drawn from this inclusive range.
        terms: operands per question (3 gives two steps).
        train_size, test_size: rows in each split.
        name: the dataset's name, part of its seed.
    Returns:
        (train rows, test rows), each row {"question", "answer", "operands", "ops"}.

    Example: make_multistep(0, train_size=1, test_size=1) gives two rows such as
        {"question": "What is 14 + 9 - 6?", "answer": "17", "operands": [14, 9, 6], "ops": ["+", "-"]}.
    """
    if terms < 2 or not 0 <= operand_min <= operand_max:
        raise ValueError(f"need terms >= 2 and 0 <= operand_min <= operand_max, got terms={terms}, "
                         f"range {operand_min}..{operand_max}")
    rng = random.Random(f"{seed}-{name}")

    def draw() -> tuple[tuple[int, ...], tuple[str, ...]]:
        while True:  # redraw a chain that would go below zero (about half of those with a -)
            operands = tuple(rng.randint(operand_min, operand_max) for _ in range(terms))
            ops = tuple(rng.choice(MULTISTEP_OPERATORS) for _ in range(terms - 1))
            value, ok = operands[0], True
            for op, operand in zip(ops, operands[1:]):
                value = _APPLY[op](value, operand)
                ok = ok and value >= 0
            if ok:
                return operands, ops

    problems = _draw_distinct(draw, test_size + train_size)
    rows = [multistep_row(*problem) for problem in problems]
    return rows[test_size:], rows[:test_size]
