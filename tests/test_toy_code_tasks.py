"""The toy code tasks: disjoint splits, tests that match their questions, reference solutions that the
sandboxed code reward accepts, and wrong solutions that it rejects."""
import shutil
from pathlib import Path

import pytest

from r1train.toy_data import make_code_tasks, read_jsonl
from rewards import get_code_reward

SHIPPED = Path(__file__).resolve().parents[1] / "data" / "code"


def test_splits_are_disjoint_and_distinct():
    train, test = make_code_tasks(0)
    names = [row["entry_point"] for row in train + test]
    assert len(names) == len(set(names)) == 121
    assert len(test) == 25
    assert read_jsonl(SHIPPED / "test.jsonl") == test


def test_rows_name_their_function_and_have_three_distinct_tests():
    for row in make_code_tasks(3)[0]:
        assert f"`{row['entry_point']}(" in row["question"]
        assert len(set(row["tests"])) == 3
        assert all(test.startswith(f"assert {row['entry_point']}(") for test in row["tests"])


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
def test_reference_solutions_pass_and_wrong_ones_fail():
    train, test = make_code_tasks(0)
    rows = train + test
    # A generous wall limit: 242 programs on a loaded 2-core machine can each wait seconds for a CPU,
    # and this test is about the tasks' references, not the limits.
    reward = get_code_reward(workers=8, wall_s=60)
    right = [f"<think>easy</think><answer>```python\n{row['solution']}```</answer>" for row in rows]
    # the same function returning None: wrong for every test of every template
    wrong = [f"<answer>```python\ndef {row['entry_point']}(value):\n    return None\n```</answer>" for row in rows]
    tests = [row["tests"] for row in rows]
    assert reward(right, tests=tests) == [1.0] * len(rows)
    assert reward(wrong, tests=tests) == [0.0] * len(rows)


def test_code_reward_on_data_without_tests_fails_validation(monkeypatch):
    from r1train.config import load_recipe
    from r1train.errors import RunError
    from r1train.validation import check_recipe

    repository = SHIPPED.parents[1]
    monkeypatch.chdir(repository)
    recipe = load_recipe(repository / "recipes" / "r1_zero_code_toy.yaml",
                         ["data.train=data/arithmetic/train.jsonl", "data.eval=null"])
    with pytest.raises(RunError, match="needs a column named tests or io_tests"):
        check_recipe(recipe)


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
def test_grpo_step_on_code_tasks_scores_with_the_sandboxed_code_reward(tmp_path, tiny_model_dir):
    """The trainer's path: a tiny model takes a GRPO step on code tasks, evaluated by the code rule."""
    import json

    from r1train.config import recipe_from_dict
    from r1train.grpo import run_grpo
    from r1train.tracking import read_metrics

    train, test = make_code_tasks(0)
    paths = []
    for name, rows in (("train", train[:4]), ("test", test[:2])):
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        paths.append(str(path))
    recipe = recipe_from_dict({
        "run_name": "code", "output_dir": str(tmp_path / "runs"), "seed": 0, "model": {"name": str(tiny_model_dir)},
        "data": {"train": paths[0], "eval": paths[1], "max_prompt_tokens": 200},
        "rollout": {"backend": "hf", "group_size": 2, "prompts_per_step": 2, "max_new_tokens": 8},
        "rewards": [{"name": "code", "kwargs": {"wall_s": 5.0}}, {"name": "tag_count", "weight": 0.5}],
        "training": {"steps": 1, "learning_rate": 1e-3, "checkpoint_every": 1, "bf16": False},
        "evaluation": {"max_examples": 2, "samples": 2, "greedy": False},
        "logging": {"tensorboard": False, "progress": False},
    })
    run_grpo(recipe, recipe.run_dir)
    rows = read_metrics(recipe.run_dir / "metrics.jsonl")
    assert rows[1]["reward/code"] == 0.0  # every row has tests, so every sample is judged (8 random tokens fail)
    assert rows[1]["rewards/errors"] == 0.0
    assert rows[1]["accuracy"] == 0.0 and rows[0]["eval/accuracy"] == 0.0
