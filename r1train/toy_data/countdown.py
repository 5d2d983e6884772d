"""Countdown, the game of TinyZero: a solver that searches every expression tree with positive
integer intermediates, rendering and exact evaluation of those trees, and the generator of solvable
instances split into train and test."""
from __future__ import annotations

import random
from fractions import Fraction
from itertools import combinations
from typing import Iterator

from r1train.toy_data._common import _APPLY, _MAX_DRAWS_PER_ROW, Row, Tree

_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}


def solve_countdown(numbers: list[int], target: int) -> Tree | None:
    """An expression tree that uses each of `numbers` exactly once and equals `target`, with every
    intermediate result a positive integer, or None when there is none.

    Depth-first search: merge two of the remaining values with one operator until one is left.
    Three numbers mean at most 3 pairs x 4 results x 4 results; the search grows steeply with every
    number after that.

    Example: solve_countdown([3, 7, 25], 46) == ("+", 25, ("*", 7, 3)), i.e. "25 + 7 * 3".
    """
    return _search([(n, n) for n in numbers], target)


def _search(items: list[tuple[int, Tree]], target: int) -> Tree | None:
    if len(items) == 1:
        value, tree = items[0]
        return tree if value == target else None
    for i, j in combinations(range(len(items)), 2):
        rest = [item for k, item in enumerate(items) if k not in (i, j)]
        for merged in _merge(items[i], items[j]):
            found = _search(rest + [merged], target)
            if found is not None:
                return found
    return None


def _merge(x: tuple[int, Tree], y: tuple[int, Tree]) -> Iterator[tuple[int, Tree]]:
    """Every positive integer result of one operator on x and y, the larger operand first."""
    (a, left), (b, right) = (x, y) if x[0] >= y[0] else (y, x)
    yield a + b, ("+", left, right)
    yield a * b, ("*", left, right)
    if a > b:
        yield a - b, ("-", left, right)
    if a % b == 0:
        yield a // b, ("/", left, right)


def evaluate_expression(tree: Tree) -> Fraction:
    """The exact value of an expression tree (no eval: a walk over the tree with fractions)."""
    if isinstance(tree, int):
        return Fraction(tree)
    op, left, right = tree
    return _APPLY[op](evaluate_expression(left), evaluate_expression(right))


def render_expression(tree: Tree) -> str:
    """The tree as an equation with only the parentheses it needs: ("-", 25, ("+", 3, 7)) is
    "25 - (3 + 7)", ("+", 25, ("*", 7, 3)) is "25 + 7 * 3"."""
    if isinstance(tree, int):
        return str(tree)
    op, left, right = tree
    return f"{_render_operand(left, op, is_right=False)} {op} {_render_operand(right, op, is_right=True)}"


def _render_operand(tree: Tree, parent_op: str, is_right: bool) -> str:
    text = render_expression(tree)
    if isinstance(tree, int):
        return text
    child, parent = _PRECEDENCE[tree[0]], _PRECEDENCE[parent_op]
    # a - (b + c) and a / (b * c) need them; a + (b - c) and a * (b / c) do not (exact arithmetic)
    needs_parentheses = child < parent or (is_right and child == parent and parent_op in "-/")
    return f"({text})" if needs_parentheses else text


def countdown_row(numbers: list[int], target: int, solution: Tree) -> Row:
    """One Countdown question with `solution` as its answer, after checking it with fractions."""
    if evaluate_expression(solution) != target or sorted(_leaves(solution)) != sorted(numbers):
        raise ValueError(f"{render_expression(solution)} is no solution for {numbers} -> {target}")
    question = (f"Using the numbers {list(numbers)}, create an equation that equals {target}. "
                "You can use + - * / and each number exactly once.")
    return {"question": question, "numbers": list(numbers), "target": target,
            "answer": render_expression(solution)}


def _leaves(tree: Tree) -> list[int]:
    return [tree] if isinstance(tree, int) else _leaves(tree[1]) + _leaves(tree[2])


def make_countdown(
    seed: int,
    count: int = 3,
    number_min: int = 1,
    number_max: int = 30,
    target_min: int = 10,
    target_max: int = 100,
    train_size: int = 2000,
    test_size: int = 200,
    name: str = "countdown",
) -> tuple[list[Row], list[Row]]:
    """Solvable Countdown instances, split into (train, test) with no instance in both.

    Numbers and target are drawn uniformly; an instance is kept when `solve_countdown` finds a
    solution, which becomes its `answer`.

    Args:
        seed: with `name`, seeds this dataset's random generator.
        count: how many numbers per question (3; 4 or 5 are harder, and slower to search).
        number_min, number_max: inclusive range of the numbers.
        target_min, target_max: inclusive range of the target.
        train_size, test_size: rows in each split.
        name: the dataset's name, part of its seed.
    Returns:
        (train rows, test rows), each row {"question", "numbers", "target", "answer"}.
    """
    if count < 2 or not 1 <= number_min <= number_max or not target_min <= target_max:
        raise ValueError(f"need count >= 2 and 1 <= number_min <= number_max, got count={count}, "
                         f"numbers {number_min}..{number_max}, targets {target_min}..{target_max}")
    rng = random.Random(f"{seed}-{name}")
    wanted = train_size + test_size
    rows: list[Row] = []
    seen: set[tuple[tuple[int, ...], int]] = set()
    for _ in range(max(wanted, 1) * _MAX_DRAWS_PER_ROW):
        if len(rows) == wanted:
            break
        numbers = [rng.randint(number_min, number_max) for _ in range(count)]
        target = rng.randint(target_min, target_max)
        key = (tuple(sorted(numbers)), target)
        if key in seen:
            continue
        seen.add(key)
        solution = solve_countdown(numbers, target)
        if solution is not None:
            rows.append(countdown_row(numbers, target, solution))
    if len(rows) < wanted:
        raise ValueError(f"found only {len(rows)} solvable Countdown instances of the {wanted} asked")
    return rows[test_size:], rows[:test_size]
