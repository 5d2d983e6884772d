"""benchmarks/compare_variants.py: every variant it names is a valid recipe, and bad options exit 2."""
import json
import sys
from pathlib import Path

import pytest

from r1train.config import load_recipe

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import compare_variants  # noqa: E402


@pytest.mark.parametrize("variant", list(compare_variants.VARIANTS))
def test_each_variant_builds_a_valid_recipe(tmp_path, variant):
    args = compare_variants.parse_args(["--variants", variant, "--steps", "3", "--out", str(tmp_path),
                                        "--eval-examples", "5"])
    recipe = load_recipe(args.recipe, compare_variants.overrides(args, variant, seed=1))
    assert (recipe.seed, recipe.training.steps, recipe.algorithm.mini_batches) == (1, 3, 2)
    assert recipe.evaluation.max_examples == 5 and recipe.run_name == f"{variant}-seed1"
    for key, value in compare_variants.VARIANTS[variant].items():
        section, name = key.split(".")
        assert getattr(getattr(recipe, section), name) == value, key


@pytest.mark.parametrize("argv", [["--variants", "ppo2"], ["--steps", "0"], ["--seeds", "0"]])
def test_bad_options_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        compare_variants.parse_args(argv)
    assert exit_info.value.code == 2


def test_summary_and_table_from_metrics_rows():
    rows = [{"step": 1, "reward/mean": 0.1, "entropy": 1.0, "time/step": 10.0},
            {"step": 2, "reward/mean": 0.2, "entropy": 0.5, "time/step": 30.0, "eval/accuracy": 0.25,
             "eval/format_rate": 0.75}]
    summary = compare_variants.summarise(rows, last=1)
    assert summary == {"eval/accuracy": 0.25, "eval/format_rate": 0.75, "entropy": 0.5, "time/step": 20.0}
    text = compare_variants.table({"gspo": [summary, {**summary, "eval/accuracy": 0.35}]}, steps=2)
    assert "| gspo | 2 | 0.300 (0.250, 0.350) | 0.750 (0.750, 0.750) |" in text


def test_base_model_scored_once_and_shown_as_its_own_row(tmp_path):
    args = compare_variants.parse_args(["--variants", "gspo,rloo", "--seeds", "2", "--eval-base", "--out", str(tmp_path)])
    scored = [(v, s) for s in range(2) for v in args.variants if compare_variants.scores_base(args, v, s)]
    assert scored == [("gspo", 0)]
    assert "evaluation.at_start=true" in compare_variants.overrides(args, "gspo", 0)
    assert "evaluation.at_start=false" in compare_variants.overrides(args, "rloo", 0)
    step0 = {"step": 0, "eval/accuracy": 0.0, "eval/format_rate": 0.01}
    rows = [step0, {"step": 1, "reward/mean": 0.2, "entropy": 0.5, "time/step": 9.0, "eval/accuracy": 0.25,
                    "eval/format_rate": 0.75}]
    runs = {"gspo": [rows], "rloo": [rows[1:]]}
    # The step-0 evaluation is the base model's: it is not the run's final score.
    assert compare_variants.summarise(rows, last=1)["eval/accuracy"] == 0.25
    text = compare_variants.table({v: [compare_variants.summarise(r, 1) for r in s] for v, s in runs.items()}, 1,
                                  compare_variants.base_scores(runs))
    assert "| base model (step 0) | - | 0.000 (0.000) | 0.010 (0.010) | - | - |" in text
    results = compare_variants.write_results(args, runs, text, ["--eval-base", "--seeds", "2"])
    assert (results / "compare_variants.md").read_text().startswith(
        "Command: `benchmarks/compare_variants.py --eval-base --seeds 2`")
    lines = (results / "compare_variants_metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3 and '"variant": "gspo"' in lines[0]


def test_runs_are_trained_in_groups_under_the_lock(tmp_path, monkeypatch):
    lock = tmp_path / "heavy.lock"
    args = ["--variants", "rloo,gspo,cispo", "--seeds", "1", "--lock", str(lock), "--runs-per-lock", "2",
            "--out", str(tmp_path)]
    (tmp_path / "rloo-seed0" / "model").mkdir(parents=True)
    held_during = []

    def fake_run(command, **kwargs):  # a run: is the lock held by someone else meanwhile?
        with open(lock, "a") as other:
            try:
                compare_variants.fcntl.flock(other, compare_variants.fcntl.LOCK_EX | compare_variants.fcntl.LOCK_NB)
                held_during.append(False)
            except BlockingIOError:
                held_during.append(True)
        name = next(c.split("=", 1)[1] for c in command if c.startswith("run_name="))
        rows = [{"step": 1, "reward/mean": 0.1, "entropy": 0.5, "time/step": 9.0, "eval/accuracy": 0.1,
                 "eval/format_rate": 0.5}]
        (tmp_path / name).mkdir(exist_ok=True)
        (tmp_path / name / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    monkeypatch.setattr(compare_variants.subprocess, "run", fake_run)
    monkeypatch.setattr(compare_variants, "plot", lambda *a: None)
    compare_variants.main(args + ["--steps", "1"])
    assert held_during == [True, True, True]
    assert not (tmp_path / "rloo-seed0" / "model").exists()  # weights deleted unless --keep-weights
    # --reuse: finished runs are not trained again.
    held_during.clear()
    compare_variants.main(args + ["--steps", "1", "--reuse"])
    assert held_during == []
