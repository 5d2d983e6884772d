"""Accuracy per value of a data column (`evaluation.by`, `r1train eval --by`)."""
from __future__ import annotations

import json

import pytest

from r1train.eval_metrics import accuracy_by, breakdown_metrics, format_breakdown_table


def test_accuracy_by_groups_samples_and_greedy_answers_per_value():
    breakdown = accuracy_by(["+", "-", "+"], [[1, 1], [0, 1], [0, 0]], greedy=[1, 0, 0])
    assert breakdown == {"+": {"questions": 2, "accuracy": 0.5, "greedy_accuracy": 0.5},
                         "-": {"questions": 1, "accuracy": 0.5, "greedy_accuracy": 0.0}}


def test_values_order_numbers_by_size_then_text_and_missing_values_fall_together():
    breakdown = accuracy_by([10, 2, "Level 1", None, None], [[1], [0], [1], [1], [0]])
    assert list(breakdown) == ["2", "10", "Level 1", "None"]
    assert breakdown["None"] == {"questions": 2, "accuracy": 0.5}


def test_list_values_are_labelled_by_their_items():
    breakdown = accuracy_by([["+", "-"], ("+", "-"), ["+", "+"]], [[1], [0], [1]])
    assert breakdown == {"+,+": {"questions": 1, "accuracy": 1.0}, "+,-": {"questions": 2, "accuracy": 0.5}}


def test_accuracy_by_refuses_misaligned_input():
    with pytest.raises(ValueError, match="2 values for 1 questions"):
        accuracy_by(["+", "-"], [[1]])
    with pytest.raises(ValueError, match="and 1 greedy judgements"):
        accuracy_by(["+", "-"], [[1], [0]], greedy=[1])


def test_breakdown_as_metrics_and_as_a_table():
    breakdown = {"+": {"questions": 12, "accuracy": 0.875, "greedy_accuracy": 1.0},
                 "-": {"questions": 3, "accuracy": 0.25, "greedy_accuracy": 0.0}}
    assert breakdown_metrics("op", breakdown) == {
        "eval/accuracy/op=+": 0.875, "eval/greedy_accuracy/op=+": 1.0,
        "eval/accuracy/op=-": 0.25, "eval/greedy_accuracy/op=-": 0.0}
    assert format_breakdown_table("op", breakdown) == (
        "op  questions  accuracy  greedy_accuracy\n"
        "--  ---------  --------  ---------------\n"
        "+          12     0.875            1.000\n"
        "-           3     0.250            0.000")


class AlwaysTwo:
    """An engine whose every answer is 2: right where the reference is 2, wrong elsewhere."""

    def generate(self, prompts, n, sampling):
        from r1train.engines.base import Completion

        return [Completion(i, p, [1], "1 + 1 = 2 </think> <answer>2</answer>", None, "stop")
                for i, p in enumerate(prompts) for _ in range(n)]

    def release_idle_memory(self):
        """Nothing to give back."""


def test_the_evaluator_reports_accuracy_per_value(tokenizer):
    from r1train.engines.base import SamplingSettings
    from r1train.evaluation import Evaluator

    rows = [{"question": "What is 1 + 1?", "answer": "2", "op": "+"},
            {"question": "What is 3 - 1?", "answer": "2", "op": "-"},
            {"question": "What is 5 - 1?", "answer": "4", "op": "-"}]
    evaluator = Evaluator(rows=rows, tokenizer=tokenizer, template="r1_zero", system_prompt=None,
                          question_column="question", answer_column="answer", samples=2,
                          sampling=SamplingSettings(stop=["</answer>"]), greedy=True, by="op")
    metrics = evaluator.run(AlwaysTwo())
    assert metrics["eval/accuracy"] == pytest.approx(2 / 3)
    assert metrics["eval/accuracy/op=+"] == 1.0 and metrics["eval/accuracy/op=-"] == 0.5
    assert metrics["eval/greedy_accuracy/op=-"] == 0.5
    assert evaluator.breakdown["-"]["questions"] == 2


def test_eval_by_prints_the_breakdown_and_writes_it(tiny_model_dir, tmp_path, capsys):
    from r1train.cli import main

    data = tmp_path / "ops.jsonl"
    data.write_text("".join(json.dumps({"question": f"What is {a} {op} 1?", "answer": "0", "op": op}) + "\n"
                            for a in range(2) for op in "+-"))
    out = tmp_path / "scores.json"
    assert main(["eval", "--model", str(tiny_model_dir), "--data", str(data), "--samples", "1",
                 "--max-new-tokens", "2", "--backend", "hf", "--by", "op", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "op  questions  accuracy  greedy_accuracy" in printed
    result = json.loads(out.read_text())
    assert result["by"]["column"] == "op" and [v["questions"] for v in result["by"]["values"].values()] == [2, 2]
    assert "eval/accuracy/op=+" in result["metrics"]


def test_eval_by_a_missing_column_is_one_clear_error(tiny_model_dir, tmp_path, capsys):
    from r1train.cli import main

    data = tmp_path / "q.jsonl"
    data.write_text(json.dumps({"question": "What is 1 + 1?", "answer": "2"}) + "\n")
    assert main(["eval", "--model", str(tiny_model_dir), "--data", str(data), "--backend", "hf", "--by", "level"]) == 2
    err = capsys.readouterr().err
    assert "--by: no row has a column 'level' (has: question, answer); name a column of data.eval or remove the option" in err


def test_evaluation_by_a_missing_column_fails_the_preflight(monkeypatch):
    from pathlib import Path

    from r1train.config import load_recipe
    from r1train.data import DataError
    from r1train.validation import check_recipe

    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # the recipe's data paths are relative
    recipe = load_recipe("recipes/r1_zero_toy.yaml", ["evaluation.by=level"])
    with pytest.raises(DataError, match=r"^recipe: evaluation.by: no row has a column 'level' \(has: question, answer, a, b, op\)"):
        check_recipe(recipe)
    check_recipe(load_recipe("recipes/r1_zero_toy.yaml", ["evaluation.by=op"]))
