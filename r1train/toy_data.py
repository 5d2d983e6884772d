"""The toy datasets shipped in `data/`, and the generator behind `r1train data make` / `describe`.

`generate_all(out, seed)` writes, as JSONL (one object per line):

- `arithmetic/{train,test}`: "What is 7 + 5?" with operands 0..20, + and -. The R1-Zero task for a
  135M model: easy enough that some samples are right from the start (RL needs that signal),
  hard enough that there is something to learn.
- `arithmetic_2digit/{train,test}`: 2-digit addition, the harder variant.
- `countdown/{train,test}`: the Countdown game of TinyZero with three numbers.
- `cold_start/train`: worked solutions in the R1 template for the cold-start SFT stage.
- `general/train`: short non-math prompts for the second RL stage.

Everything is a function of the seed. Each dataset draws from its own `random.Random`, seeded with
the seed and the dataset's name, so enlarging one never shifts another; files are written with a
fixed key order and `\\n` line ends, atomically, so the same seed gives the same bytes.

Deliberate simplifications:
- A subtraction question never has a negative answer (the larger operand comes first). "3 + 5"
  and "5 + 3" are different questions.
- The test split is drawn first and the train split from the remaining distinct questions, so the
  two never share a question (for Countdown: never the same numbers, in any order, and target).
- The Countdown solver plays by the TV game's rules: every intermediate result is a positive
  integer. Instances it cannot solve that way (only with fractions or negative intermediates)
  are skipped, so every row has an answer a reader can follow step by step.
- Cold-start reasoning comes from a handful of sentence templates, not from a model: enough
  variety that SFT teaches the template rather than one fixed string.
"""
from __future__ import annotations

import json
import os
import random
from fractions import Fraction
from itertools import combinations
from pathlib import Path
from typing import Any, Callable, Iterator, Union

Row = dict[str, Any]
Tree = Union[int, tuple[str, "Tree", "Tree"]]  # a number, or (operator, left, right)

ARITHMETIC_OPERATORS = ("+", "-", "*")
_APPLY = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a / b,
}
_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}
_MAX_DRAWS_PER_ROW = 1_000  # a request the parameters cannot meet fails instead of looping


# ---------------------------------------------------------------------------------------------
# Arithmetic


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


def _draw_distinct(draw: Callable[[], Any], count: int) -> list[Any]:
    """`count` distinct results of `draw()`, in the order first drawn."""
    seen: dict[Any, None] = {}
    for _ in range(max(count, 1) * _MAX_DRAWS_PER_ROW):
        if len(seen) == count:
            break
        seen.setdefault(draw(), None)
    if len(seen) < count:
        raise ValueError(f"found only {len(seen)} distinct rows of the {count} asked; widen the ranges")
    return list(seen)


# ---------------------------------------------------------------------------------------------
# Countdown


def solve_countdown(numbers: list[int], target: int) -> Tree | None:
    """An expression tree that uses each of `numbers` exactly once and equals `target`, with every
    intermediate result a positive integer, or None when there is none.

    Depth-first search: merge two of the remaining values with one operator until one is left.
    Three numbers mean at most 3 pairs x 4 results x 4 results (tens of microseconds); four take
    about 3 ms per instance; the cost grows steeply with every number after that.

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


# ---------------------------------------------------------------------------------------------
# Cold-start worked solutions


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


# ---------------------------------------------------------------------------------------------
# General prompts


GENERAL_TEMPLATES = (
    "Write one sentence about {topic}.",
    "Give two facts about {topic}.",
    "Describe {topic} in three words.",
    "Explain {topic} to a child in two sentences.",
    "Write a four-line poem about {topic}.",
)
GENERAL_TOPICS = (
    "the sea", "mountains", "rain", "the moon", "bread", "trees", "a city at night", "winter",
    "music", "bicycles", "libraries", "bees", "the desert", "friendship", "clocks", "volcanoes",
    "gardens", "trains", "the wind", "coffee",
)


def make_general_prompts(seed: int, templates: tuple[str, ...] = GENERAL_TEMPLATES,
                         topics: tuple[str, ...] = GENERAL_TOPICS, name: str = "general") -> list[Row]:
    """Every template with every topic ({"question": ...} rows, no answer), in a seeded order."""
    rows = [{"question": template.format(topic=topic)} for template in templates for topic in topics]
    random.Random(f"{seed}-{name}").shuffle(rows)
    return rows


# ---------------------------------------------------------------------------------------------
# Files


def generate_all(out: Path, seed: int = 0) -> list[Path]:
    """Write every toy dataset under `out` (see the module docstring) and return the paths."""
    arithmetic_train, arithmetic_test = make_arithmetic(seed)
    two_digit_train, two_digit_test = make_arithmetic(
        seed, operand_min=10, operand_max=99, ops=("+",), train_size=2000, name="arithmetic_2digit")
    countdown_train, countdown_test = make_countdown(seed)
    test_questions = frozenset(row["question"] for rows in (arithmetic_test, two_digit_test, countdown_test) for row in rows)
    cold_start = make_cold_start(
        seed, [(arithmetic_train, 180), (two_digit_train, 60), (countdown_train, 60)], test_questions)
    datasets = {
        "arithmetic/train.jsonl": arithmetic_train,
        "arithmetic/test.jsonl": arithmetic_test,
        "arithmetic_2digit/train.jsonl": two_digit_train,
        "arithmetic_2digit/test.jsonl": two_digit_test,
        "countdown/train.jsonl": countdown_train,
        "countdown/test.jsonl": countdown_test,
        "cold_start/train.jsonl": cold_start,
        "general/train.jsonl": make_general_prompts(seed),
    }
    written = []
    for relative, rows in datasets.items():
        written.append(write_jsonl(rows, Path(out) / relative))
        print(f"wrote {written[-1]} ({len(rows)} rows)")
    return written


def write_jsonl(rows: list[Row], path: Path) -> Path:
    """Write rows as JSONL (keys in row order, UTF-8, "\\n" line ends) through a temporary file, so
    a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def read_jsonl(path: Path) -> list[Row]:
    """Rows of a JSONL file (blank lines skipped); a DataError names the first bad line."""
    from r1train.data import DataError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}, line {number}: not JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}, line {number}: a row must be a JSON object")
            rows.append(row)
    return rows


def describe(path: Path, max_value_chars: int = 300) -> str:
    """Row count, columns with the value types seen, and the first row, as printable text.

    JSONL is read directly; JSON and Parquet through `r1train.data.load_rows`.
    """
    from r1train.data import DataError, load_rows

    path = Path(path)
    rows = read_jsonl(path) if path.suffix.lower() == ".jsonl" else load_rows(path, what="data describe")
    if not rows:
        raise DataError(f"{path} has no rows")
    types: dict[str, list[str]] = {}
    for row in rows:
        for column, value in row.items():
            seen = types.setdefault(column, [])
            if _type_name(value) not in seen:
                seen.append(_type_name(value))
    lines = [f"{path}: {len(rows)} rows, {len(types)} columns",
             "columns: " + ", ".join(f"{column} ({' | '.join(seen)})" for column, seen in types.items()),
             "first row:"]
    for column, value in rows[0].items():
        text = json.dumps(value, ensure_ascii=False)
        if len(text) > max_value_chars:
            text = text[:max_value_chars] + f"... ({len(text)} chars)"
        lines.append(f"  {column}: {text}")
    return "\n".join(lines)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, list):
        inner = sorted({_type_name(item) for item in value})
        return f"list[{' | '.join(inner)}]" if inner else "list"
    return type(value).__name__
