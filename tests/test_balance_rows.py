"""`data.balance_by`: train rows drawn so each value of a column is equally frequent."""
from collections import Counter

import pytest

from r1train.config import load_recipe
from r1train.data import DataError, PromptSampler, balance_rows


def _rows(additions: int, subtractions: int) -> list[dict]:
    return ([{"question": f"{i} + 1", "op": "+"} for i in range(additions)]
            + [{"question": f"{i} - 1", "op": "-"} for i in range(subtractions)])


def test_the_rarer_value_is_repeated_up_to_the_larger_group():
    rows = _rows(10, 4)
    balanced = balance_rows(rows, "op", seed=0)
    assert Counter(row["op"] for row in balanced) == {"+": 10, "-": 10}
    # Every row of each group is there; the rarer group's rows appear 2 or 3 times (10 = 2*4 + 2).
    counts = Counter(row["question"] for row in balanced)
    assert {q for q in counts if "+" in q} == {row["question"] for row in rows[:10]}
    assert sorted(counts[row["question"]] for row in rows[10:]) == [2, 2, 3, 3]
    assert all(counts[row["question"]] == 1 for row in rows[:10])


def test_balanced_rows_are_the_same_objects_and_interleaved():
    rows = _rows(3, 1)
    balanced = balance_rows(rows, "op", seed=0)
    assert all(any(row is original for original in rows) for row in balanced)
    assert [row["op"] for row in balanced] == ["+", "-"] * 3  # values sort as strings: "+" before "-"


def test_the_fill_is_seeded():
    rows = _rows(10, 3)
    same = [row["question"] for row in balance_rows(rows, "op", seed=1)]
    assert same == [row["question"] for row in balance_rows(rows, "op", seed=1)]
    others = {tuple(row["question"] for row in balance_rows(rows, "op", seed=s)) for s in range(8)}
    assert len(others) > 1


def test_an_unshuffled_sampler_alternates_the_values():
    sampler = PromptSampler(balance_rows(_rows(6, 2), "op", seed=0), seed=0, shuffle=False)
    assert [row["op"] for row in sampler.next_batch(8)] == ["+", "-"] * 4


def test_a_missing_column_is_one_clear_error():
    with pytest.raises(DataError, match=r"data.balance_by: no row has a column 'level' \(has: question, op\)"):
        balance_rows(_rows(2, 2), "level", seed=0)


def test_the_main_recipe_accepts_the_key():
    config = load_recipe("recipes/r1_zero_toy.yaml", ["data.balance_by=op"])
    assert config.data.balance_by == "op"


def test_a_missing_column_fails_the_preflight_before_any_model_loads(monkeypatch):
    from pathlib import Path

    from r1train.validation import check_recipe

    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # the recipe's data paths are relative
    recipe = load_recipe("recipes/r1_zero_toy.yaml", ["data.balance_by=level"])
    with pytest.raises(DataError, match=r"^recipe: data.balance_by: no row has a column 'level' \(has: question, answer, a, b, op\)"):
        check_recipe(recipe)
