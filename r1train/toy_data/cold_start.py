"""Cold-start worked solutions: arithmetic and Countdown rows turned into R1-template completions
("<think>...</think><answer>...</answer>") whose reasoning comes from a few seeded sentence
templates, for the supervised stage before RL."""
from __future__ import annotations

import random

from r1train.toy_data._common import Row, Tree
from r1train.toy_data.countdown import evaluate_expression, solve_countdown


def make_cold_start(seed: int, sources: list[tuple[list[Row], int]], exclude_questions: frozenset[str] = frozenset(),
                    name: str = "cold_start") -> list[Row]:
    """Worked solutions in the R1 template, for the cold-start SFT stage.

    Args:
        seed: with `name`, seeds the choice of questions and of the wording.
        sources: (rows, how many to take) pairs; rows are arithmetic or Countdown rows, normally
            train splits.
        exclude_questions: questions never to take, normally every test split's: the train split
            of one dataset may hold a test question of another (10 + 12 is 2-digit and small).
    Returns:
        Shuffled rows {"question", "answer", "completion", "task", "numbers", "target"}, where
        completion is "<think>\\n{reasoning}\\n</think>\\n<answer>{answer}</answer>"; `numbers`
        and `target` are None on arithmetic rows (so the countdown reward skips them).
    """
    rng = random.Random(f"{seed}-{name}")
    rows = []
    for source, size in sources:
        for row in rng.sample([row for row in source if row["question"] not in exclude_questions], size):
            countdown = "numbers" in row
            reasoning = _countdown_reasoning(row, rng) if countdown else _arithmetic_reasoning(row, rng)
            rows.append({
                "question": row["question"],
                "answer": row["answer"],
                "completion": f"<think>\n{reasoning}\n</think>\n<answer>{row['answer']}</answer>",
                "task": "countdown" if countdown else "arithmetic",
                "numbers": row["numbers"] if countdown else None,
                "target": row["target"] if countdown else None,
            })
    rng.shuffle(rows)
    return rows


_OPENINGS = ("", "Okay. ", "Let me work this out. ", "Let me think. ")


def _arithmetic_reasoning(row: Row, rng: random.Random) -> str:
    a, b, op, c = row["a"], row["b"], row["op"], int(row["answer"])
    ways = {"+": _addition_steps, "-": _subtraction_steps, "*": _multiplication_steps}[op](a, b, c)
    checks = {
        "+": [f"Let me check: {c} - {b} = {a}, so {c} is right.",
              f"To verify, {b} + {a} is also {c}."],
        "-": [f"Let me check: {c} + {b} = {a}, so {c} is right.",
              f"To verify, {a} - {c} = {b}, which matches."],
        "*": [f"Let me check: {b} * {a} is also {c}."],
    }[op]
    text = rng.choice(_OPENINGS) + rng.choice(ways)
    if rng.random() < 0.5:
        text += " " + rng.choice(checks)
    return text + rng.choice((f" So the answer is {c}.", f" The result is {c}.", ""))


def _addition_steps(a: int, b: int, c: int) -> list[str]:
    ways = [f"I need to add {a} and {b}. {a} + {b} = {c}.",
            f"The question asks for {a} plus {b}. Adding {b} to {a} gives {c}."]
    if b <= 5:
        ways.append(f"Start at {a} and count up {b}: that lands on {c}.")
    if a >= 10 and b >= 10:
        tens, ones = a - a % 10 + b - b % 10, a % 10 + b % 10
        ways.append(f"Split into tens and ones. Tens: {a - a % 10} + {b - b % 10} = {tens}. "
                    f"Ones: {a % 10} + {b % 10} = {ones}. Together {tens} + {ones} = {c}.")
    if 0 < a < 10 and 0 < b < 10 and c > 10:
        ways.append(f"{a} needs {10 - a} more to make 10, and {b} - {10 - a} = {b - (10 - a)} "
                    f"is left over, so {a} + {b} = 10 + {c - 10} = {c}.")
    return ways


def _subtraction_steps(a: int, b: int, c: int) -> list[str]:
    ways = [f"I need {a} minus {b}. Taking {b} away from {a} leaves {c}.",
            f"Counting up from {b} to {a} takes {c} steps, so {a} - {b} = {c}."]
    if 0 < a % 10 < b:
        first = a % 10
        ways.append(f"Subtract in two steps: {a} - {first} = {a - first}, "
                    f"then {a - first} - {b - first} = {c}.")
    return ways


def _multiplication_steps(a: int, b: int, c: int) -> list[str]:
    return [f"I need {a} times {b}. {a} * {b} = {c}.",
            f"{a} groups of {b} make {c}."]


def _countdown_reasoning(row: Row, rng: random.Random) -> str:
    numbers, target, answer = row["numbers"], row["target"], row["answer"]
    solution = solve_countdown(numbers, target)
    listed = ", ".join(map(str, numbers[:-1])) + f" and {numbers[-1]}"
    text = rng.choice((f"I have {listed} and need to reach {target}.",
                       f"The numbers are {listed}; the target is {target}."))
    total = sum(numbers)
    if total != target and rng.random() < 0.5:
        verdict = "too small" if total < target else "too much"
        text += f" Adding all of them gives {total}, which is {verdict}."
    steps = _steps(solution)
    text += " " + " ".join(f"{word} {step}." for word, step in
                           zip(["Try"] + ["Then"] * (len(steps) - 1), steps))
    text += " That is the target."
    if rng.random() < 0.5:
        text += f" Let me check: {answer} = {target}, and each number is used once."
    return text


def _steps(tree: Tree) -> list[str]:
    """The operations of a tree, innermost first: ["7 * 3 = 21", "25 + 21 = 46"]."""
    if isinstance(tree, int):
        return []
    op, left, right = tree
    step = f"{evaluate_expression(left)} {op} {evaluate_expression(right)} = {evaluate_expression(tree)}"
    return _steps(left) + _steps(right) + [step]
