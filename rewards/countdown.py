"""The Countdown reward, the classic R1-Zero toy task: combine the given numbers with + - * / into
an equation that reaches the target, using every number exactly once.

The equation is parsed with `ast` and walked by hand: only integer literals, the four binary
operators and parentheses are accepted (no unary minus, no powers, no names, nothing evaluated by
Python), and arithmetic is exact with fractions, so 6 / 4 * 4 is exactly 6.
"""
from __future__ import annotations

import ast
import re
from collections import Counter
from fractions import Fraction

from rewards.extraction import tagged_answer
from rewards.registry import register

MAX_EQUATION_CHARS = 200
_ALLOWED_CHARACTERS = re.compile(r"^[\d+\-*/()\s]+$")
_OPERATORS = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
}


def evaluate_equation(equation: str) -> tuple[Fraction, list[int]] | None:
    """(value, numbers used) of an equation such as "(25 - 5) * 3", or None if it is not a valid
    Countdown expression (other operators, unary minus, decimals, division by zero, too long).
    A trailing "= result" is ignored: only the left side is evaluated."""
    expression = equation.split("=", 1)[0].replace("\u00d7", "*").replace("\u00f7", "/").strip()
    if len(expression) > MAX_EQUATION_CHARS or not _ALLOWED_CHARACTERS.match(expression):
        return None
    try:
        tree = ast.parse(expression, mode="eval")
        numbers: list[int] = []
        return _evaluate(tree.body, numbers), numbers
    except (SyntaxError, ValueError, RecursionError, MemoryError, ZeroDivisionError):
        return None


def _evaluate(node: ast.AST, numbers: list[int]) -> Fraction:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        numbers.append(node.value)
        return Fraction(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left = _evaluate(node.left, numbers)
        right = _evaluate(node.right, numbers)
        return _OPERATORS[type(node.op)](left, right)
    raise ValueError(f"not allowed in a Countdown equation: {ast.dump(node)[:80]}")


@register("countdown", columns=("numbers", "target"))
def countdown_reward(completions: list[str], **columns) -> list[float | None]:
    """1.0 when the final <answer> is an equation using each of `numbers` exactly once that
    evaluates to `target`, else 0.0; None where `numbers` or `target` is None.

    Args:
        completions: N completion texts.
        columns: `numbers` (N lists of ints) and `target` (N ints).
    Returns:
        N scores in {0.0, 1.0}, or None.

    Example:
        countdown_reward(
            ["<think>...</think><answer>(25 - 5) * 3</answer>",   # 1.0: 20 * 3 = 60
             "<think>...</think><answer>25 * 3 - 5</answer>",     # 0.0: 70, not 60
             "<think>...</think><answer>(25 - 5) * 3 * 1</answer>"],  # 0.0: 1 is not given
            numbers=[[3, 5, 25]] * 3, target=[60] * 3,
        ) == [1.0, 0.0, 0.0]
    """
    for column in ("numbers", "target"):
        if column not in columns:
            raise KeyError(f"the countdown reward needs a dataset column named {column!r}")
        if len(columns[column]) != len(completions):
            raise ValueError(f"{len(completions)} completions but {len(columns[column])} {column}")
    scores: list[float | None] = []
    for completion, numbers, target in zip(completions, columns["numbers"], columns["target"]):
        if numbers is None or target is None:
            scores.append(None)
            continue
        answer = tagged_answer(completion)
        result = evaluate_equation(answer) if answer is not None else None
        correct = (
            result is not None
            and Counter(result[1]) == Counter(int(n) for n in numbers)
            and result[0] == Fraction(target)
        )
        scores.append(1.0 if correct else 0.0)
    return scores
