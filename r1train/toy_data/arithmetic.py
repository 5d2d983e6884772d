"""Arithmetic questions ("What is 7 + 5?"): distinct (a, op, b) triples drawn from an operand range
and split into train and test with no question in both."""
from __future__ import annotations

import random

from r1train.toy_data._common import _APPLY, Row, _draw_distinct

ARITHMETIC_OPERATORS = ("+", "-", "*")


def arithmetic_row(a: int, op: str, b: int) -> Row:
    """One arithmetic question: {"question": "What is 7 + 5?", "answer": "12", "a", "b", "op"}."""
    return {"question": f"What is {a} {op} {b}?", "answer": str(_APPLY[op](a, b)), "a": a, "b": b, "op": op}


def count_arithmetic_questions(operand_min: int, operand_max: int, ops: tuple[str, ...]) -> int:
    """How many distinct questions the range and operators allow (subtraction: a >= b only)."""
    n = operand_max - operand_min + 1
    return sum(n * (n + 1) // 2 if op == "-" else n * n for op in ops)


def make_arithmetic(
    seed: int,
    operand_min: int = 0,
    operand_max: int = 20,
    ops: tuple[str, ...] = ("+", "-"),
    train_size: int | None = None,
    test_size: int = 200,
    name: str = "arithmetic",
) -> tuple[list[Row], list[Row]]:
    """Distinct "What is a op b?" questions, split into (train, test) with no question in both.

    Args:
        seed: with `name`, seeds this dataset's random generator.
        operand_min, operand_max: both operands are drawn from this inclusive range; 10 and 99 give
            2-digit questions, 100 and 999 3-digit ones.
        ops: any of "+", "-", "*".
        train_size: rows in train; None takes every question the test split left over (meant
            for small ranges: 0..20 with + and - allows 672 questions in all).
        test_size: rows in test.
        name: the dataset's name, part of its seed.
    Returns:
        (train rows, test rows), each row {"question", "answer", "a", "b", "op"}.
    """
    unknown = [op for op in ops if op not in ARITHMETIC_OPERATORS]
    if not ops or unknown or not 0 <= operand_min <= operand_max:
        raise ValueError(f"need ops among {ARITHMETIC_OPERATORS} and 0 <= operand_min <= operand_max, "
                         f"got ops={ops!r}, range {operand_min}..{operand_max}")
    available = count_arithmetic_questions(operand_min, operand_max, ops)
    if train_size is None:
        train_size = available - test_size
    if train_size < 0 or test_size + train_size > available:
        raise ValueError(f"{test_size} test + {train_size} train rows asked, but operands "
                         f"{operand_min}..{operand_max} with {ops} allow only {available} questions")
    rng = random.Random(f"{seed}-{name}")

    def draw() -> tuple[int, str, int]:
        op = rng.choice(ops)
        a, b = rng.randint(operand_min, operand_max), rng.randint(operand_min, operand_max)
        return (max(a, b), op, min(a, b)) if op == "-" else (a, op, b)

    problems = _draw_distinct(draw, test_size + train_size)
    rows = [arithmetic_row(*problem) for problem in problems]
    return rows[test_size:], rows[:test_size]
