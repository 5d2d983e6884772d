"""`r1train eval` and `r1train report` from the command line, on a tiny model."""
from __future__ import annotations

import json

import pytest

from r1train.cli import main


@pytest.fixture()
def questions(tmp_path):
    path = tmp_path / "questions.jsonl"
    path.write_text("".join(json.dumps({"question": f"What is {a} + 1?", "answer": str(a + 1)}) + "\n"
                            for a in range(3)))
    return path


def test_eval_prints_a_table_and_writes_every_metric(tiny_model_dir, questions, tmp_path, capsys):
    out = tmp_path / "scores.json"
    code = main(["eval", "--model", str(tiny_model_dir), "--data", str(questions), "--samples", "2",
                 "--max-new-tokens", "4", "--backend", "hf", "--out", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    metrics = result["metrics"]
    for key in ("eval/accuracy", "eval/pass@1", "eval/maj@k", "eval/pass@k", "eval/format_rate",
                "eval/completion_len", "eval/greedy_accuracy"):
        assert key in metrics, key
    assert metrics["eval/completion_len"] <= 4
    assert len(result["examples"]) == 3 and all(len(e["completions"]) == 2 for e in result["examples"])
    table = capsys.readouterr().out
    assert "pass@1" in table and str(tiny_model_dir) in table


def test_eval_rejects_a_file_without_questions(tiny_model_dir, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "x", "answer": "1"}) + "\n")
    assert main(["eval", "--model", str(tiny_model_dir), "--data", str(bad), "--backend", "hf"]) == 2
    assert "question" in capsys.readouterr().err


def test_report_of_a_folder_without_metrics_is_a_user_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "metrics.jsonl" in capsys.readouterr().err


def test_task_metrics_reads_code_scores_the_recipe_already_ran():
    # Running the programs again would score 0 ("assert False"); the batch's own code scores say 0.5.
    from r1train.evaluation import correctness_rule, task_metrics

    texts = ["<think>x</think><answer>print(1)</answer>"] * 2
    columns = {"tests": [["assert False"]] * 2}
    assert correctness_rule(columns) == "code"
    assert task_metrics(texts, columns, scored={"code": [1.0, 0.0]})["accuracy"] == 0.5


@pytest.mark.skipif(__import__("shutil").which("bwrap") is None, reason="bubblewrap is not installed")
def test_task_metrics_runs_code_in_the_sandbox_when_not_given_scores():
    from r1train.evaluation import task_metrics

    texts = ["<answer>def f():\n    return 1</answer>", "<answer>def f():\n    return 2</answer>"]
    assert task_metrics(texts, {"tests": [["assert f() == 1"]] * 2})["accuracy"] == 0.5
