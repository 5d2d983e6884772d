"""The toy datasets: correct answers, disjoint splits, valid Countdown solutions, cold-start rows that
the project's own rewards accept, and files that regenerate byte for byte."""
import random
import re
from fractions import Fraction
from pathlib import Path

import pytest

from r1train.cli import main
from r1train.data import DataError
from r1train.toy_data import (
    count_arithmetic_questions,
    describe,
    evaluate_expression,
    generate_all,
    make_arithmetic,
    make_countdown,
    read_jsonl,
    render_expression,
    solve_countdown,
)
from rewards import accuracy_reward, countdown_reward, format_reward
from rewards.countdown import evaluate_equation

SHIPPED = Path(__file__).resolve().parents[1] / "data"
FILES = (
    "arithmetic/train.jsonl", "arithmetic/test.jsonl",
    "arithmetic_2digit/train.jsonl", "arithmetic_2digit/test.jsonl",
    "countdown/train.jsonl", "countdown/test.jsonl",
    "cold_start/train.jsonl", "general/train.jsonl",
    "code/train.jsonl", "code/test.jsonl",
    "multistep/train.jsonl", "multistep/test.jsonl",
    "multistep_small/train.jsonl", "multistep_small/test.jsonl",
)


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("toy-data")
    written = generate_all(out, seed=0)
    assert sorted(p.relative_to(out).as_posix() for p in written) == sorted(FILES)
    return out


@pytest.fixture(scope="module")
def rows(generated):
    return {name: read_jsonl(generated / name) for name in FILES}


def test_shipped_files_are_what_the_generator_makes(generated):
    # `r1train data make --out data --seed 0` must reproduce the committed files exactly.
    for name in FILES:
        assert (generated / name).read_bytes() == (SHIPPED / name).read_bytes(), name


def test_cli_makes_the_same_bytes_again_and_describes(generated, tmp_path, capsys):
    assert main(["data", "make", "--out", str(tmp_path), "--seed", "0"]) == 0
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (generated / name).read_bytes(), name
    capsys.readouterr()
    assert main(["data", "describe", str(tmp_path / "arithmetic" / "test.jsonl")]) == 0
    printed = capsys.readouterr().out
    assert "200 rows" in printed
    for column in ("question", "answer", "a", "b", "op"):
        assert f"{column} (" in printed


def test_another_seed_gives_other_questions():
    train_0, _ = make_arithmetic(0)
    train_1, _ = make_arithmetic(1)
    assert [r["question"] for r in train_0] != [r["question"] for r in train_1]
    assert sorted(r["question"] for r in train_0 + make_arithmetic(0)[1]) == \
        sorted(r["question"] for r in train_1 + make_arithmetic(1)[1])  # same space, other split


@pytest.mark.parametrize("dataset", ["arithmetic", "arithmetic_2digit", "countdown"])
def test_splits_are_disjoint_and_free_of_duplicates(rows, dataset):
    def key(row):  # Countdown: the same numbers in another order are the same instance
        return (tuple(sorted(row["numbers"])), row["target"]) if "numbers" in row else row["question"]

    train = [key(r) for r in rows[f"{dataset}/train.jsonl"]]
    test = [key(r) for r in rows[f"{dataset}/test.jsonl"]]
    assert len(set(train)) == len(train) and len(set(test)) == len(test) == 200
    assert not set(train) & set(test)


def test_arithmetic_answers_are_right(rows):
    for name, low, high, ops in [("arithmetic", 0, 20, {"+", "-"}), ("arithmetic_2digit", 10, 99, {"+"})]:
        all_rows = rows[f"{name}/train.jsonl"] + rows[f"{name}/test.jsonl"]
        assert {r["op"] for r in all_rows} == ops
        for row in all_rows:
            a, b, op = row["a"], row["b"], row["op"]
            assert low <= a <= high and low <= b <= high
            assert row["question"] == f"What is {a} {op} {b}?"
            assert row["answer"] == str(a + b if op == "+" else a - b)
            assert int(row["answer"]) >= 0
    # The small set is every question 0..20 allows: 441 sums and 231 non-negative differences.
    assert len(rows["arithmetic/train.jsonl"]) + 200 == count_arithmetic_questions(0, 20, ("+", "-")) == 672
    assert len(rows["arithmetic_2digit/train.jsonl"]) == 2000


def test_countdown_answers_score_one_with_the_project_reward(rows):
    all_rows = rows["countdown/train.jsonl"] + rows["countdown/test.jsonl"]
    assert len(all_rows) == 2200
    completions = [f"<think>x</think><answer>{row['answer']}</answer>" for row in all_rows]
    scores = countdown_reward(completions, numbers=[r["numbers"] for r in all_rows], target=[r["target"] for r in all_rows])
    assert scores == [1.0] * len(all_rows)
    for row in all_rows:
        assert len(row["numbers"]) == 3 and all(1 <= n <= 30 for n in row["numbers"])
        assert f"Using the numbers {row['numbers']}, create an equation that equals {row['target']}." in row["question"]


def test_solve_countdown():
    tree = solve_countdown([3, 7, 25], 46)
    assert evaluate_expression(tree) == 46
    value, used = evaluate_equation(render_expression(tree))
    assert value == 46 and sorted(used) == [3, 7, 25]
    assert solve_countdown([2, 3], 6) == ("*", 3, 2)
    assert solve_countdown([1, 1, 1], 100) is None  # 3 at most
    # Solvable only through fractions, which the game's rules (and the solver) do not allow:
    assert solve_countdown([3, 3, 8, 8], 24) is None  # 8 / (3 - 8 / 3)
    assert solve_countdown([1, 5, 5, 5], 24) is None  # 5 * (5 - 1 / 5)


@pytest.mark.parametrize("tree, text", [
    (("-", 25, ("+", 3, 7)), "25 - (3 + 7)"),  # right operand of - keeps its parentheses
    (("+", 25, ("-", 3, 7)), "25 + 3 - 7"),  # + is associative: none needed
    (("/", 24, ("*", 2, 3)), "24 / (2 * 3)"),
    (("*", ("+", 1, 2), 3), "(1 + 2) * 3"),  # lower precedence on the left
    (("-", ("-", 9, 2), 3), "9 - 2 - 3"),  # left-associative: none needed
    (("/", ("/", 24, 2), 3), "24 / 2 / 3"),
])
def test_render_expression(tree, text):
    assert render_expression(tree) == text
    assert evaluate_equation(text)[0] == evaluate_expression(tree)


def test_rendered_random_trees_evaluate_to_the_tree_value():
    rng = random.Random(0)

    def random_tree(depth):
        if depth == 0 or rng.random() < 0.3:
            return rng.randint(1, 9)
        return (rng.choice("+-*/"), random_tree(depth - 1), random_tree(depth - 1))

    for _ in range(500):
        tree = random_tree(4)
        try:
            value = evaluate_expression(tree)
        except ZeroDivisionError:
            continue
        assert evaluate_equation(render_expression(tree))[0] == value, tree


def test_cold_start_rows_pass_format_and_answer_rewards(rows):
    cold = rows["cold_start/train.jsonl"]
    assert len(cold) == 300
    completions = [row["completion"] for row in cold]
    assert format_reward(completions) == [1.0] * 300  # completions include <think> themselves
    assert accuracy_reward(completions, answer=[r["answer"] for r in cold]) == [1.0] * 300
    countdown = [r for r in cold if r["task"] == "countdown"]
    assert len(countdown) == 60
    assert countdown_reward([r["completion"] for r in countdown], numbers=[r["numbers"] for r in countdown],
                            target=[r["target"] for r in countdown]) == [1.0] * 60
    for row in cold:
        assert row["completion"].startswith("<think>\n") and "\n</think>\n<answer>" in row["completion"]


def test_cold_start_questions_are_not_test_questions(rows):
    test_questions = {r["question"] for name in FILES if name.endswith("test.jsonl") for r in rows[name]}
    assert not {r["question"] for r in rows["cold_start/train.jsonl"]} & test_questions


def test_cold_start_wording_varies(rows):
    # With the numbers masked, the reasoning still takes many shapes, some with a check.
    shapes = {re.sub(r"\d+", "N", r["completion"]) for r in rows["cold_start/train.jsonl"]}
    assert len(shapes) >= 20
    assert 50 < sum("check" in r["completion"] or "verify" in r["completion"] for r in rows["cold_start/train.jsonl"]) < 250


def test_general_prompts(rows):
    general = rows["general/train.jsonl"]
    assert len(general) == 100 and len({r["question"] for r in general}) == 100
    assert all(list(r) == ["question"] for r in general)
    assert not any(re.search(r"\d", r["question"]) for r in general)


def test_harder_variants_and_impossible_requests():
    train, test = make_arithmetic(0, operand_min=100, operand_max=999, ops=("*",), train_size=50, test_size=10)
    assert len(train) == 50 and len(test) == 10
    assert all(row["answer"] == str(row["a"] * row["b"]) for row in train + test)
    with pytest.raises(ValueError, match="only 21 questions"):
        make_arithmetic(0, operand_min=0, operand_max=5, ops=("-",), test_size=22)
    with pytest.raises(ValueError, match="ops"):
        make_arithmetic(0, ops=("^",))
    train, test = make_countdown(0, count=4, number_min=1, number_max=10, target_min=20, target_max=50,
                                 train_size=20, test_size=5)
    assert countdown_reward([f"<answer>{r['answer']}</answer>" for r in train + test],
                            numbers=[r["numbers"] for r in train + test],
                            target=[r["target"] for r in train + test]) == [1.0] * 25
    with pytest.raises(ValueError, match="solvable"):
        make_countdown(0, number_min=1, number_max=1, target_min=50, target_max=60, train_size=1, test_size=1)


def test_describe_names_columns_rows_and_an_example(generated, tmp_path):
    text = describe(generated / "cold_start" / "train.jsonl")
    assert "300 rows" in text
    assert "numbers (list[int] | null)" in text or "numbers (null | list[int])" in text
    assert "completion (str)" in text and "first row:" in text and "<think>" in text
    with pytest.raises(DataError, match="not found"):
        describe(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "x"}\nnot json\n')
    with pytest.raises(DataError, match="line 2"):
        describe(bad)


def test_multistep_answers_follow_left_to_right_and_never_go_below_zero():
    from r1train.toy_data import make_multistep

    train, test = make_multistep(3, train_size=300, test_size=100)
    assert len(train) == 300 and len(test) == 100
    assert not {r["question"] for r in train} & {r["question"] for r in test}
    for row in train + test:
        value = row["operands"][0]
        for op, operand in zip(row["ops"], row["operands"][1:]):
            value = value + operand if op == "+" else value - operand
            assert value >= 0, row
        assert row["answer"] == str(value)
        # The question states exactly the chain the columns hold.
        numbers = [int(n) for n in re.findall(r"\d+", row["question"])]
        assert numbers == row["operands"] and re.findall(r"[+-]", row["question"]) == row["ops"]
    # The accuracy reward judges it; no `numbers`/`target` columns, so no Countdown rule applies.
    assert "numbers" not in train[0] and "target" not in train[0]
    assert accuracy_reward([f"<think>x</think><answer>{train[0]['answer']}</answer>"], answer=[train[0]["answer"]]) == [1.0]
    assert {op for row in train for op in row["ops"]} == {"+", "-"}
    with pytest.raises(ValueError):
        make_multistep(0, terms=1)


def test_multistep_small_keeps_every_step_within_the_main_tasks_range(rows):
    chains = rows["multistep_small/train.jsonl"] + rows["multistep_small/test.jsonl"]
    assert {n for row in chains for n in row["operands"]} == set(range(1, 11))
    intermediates = [row["operands"][0] + row["operands"][1] if row["ops"][0] == "+"
                     else row["operands"][0] - row["operands"][1] for row in chains]
    assert max(intermediates) <= 20 and max(int(row["answer"]) for row in chains) <= 30
    assert not ({r["question"] for r in rows["multistep_small/test.jsonl"]}
                & {r["question"] for r in rows["multistep_small/train.jsonl"]})
