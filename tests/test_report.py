"""report.write_report on synthetic run folders: PNGs that load, a summary with the right numbers,
and no crash on runs with missing metrics, None values, one step or no eval rows."""
import json
from pathlib import Path

import matplotlib.image
import pytest

from r1train.errors import RunError
from r1train.report import write_report
from r1train.run_rows import is_reflective, rolling_mean, sample_correct

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ALL_PANELS = ["rewards", "accuracy", "completion_length", "kl", "entropy", "signal", "thinking", "think_length",
              "reflection"]


def make_run(folder: Path, rows: list[dict], samples: list[dict] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    if samples is not None:
        (folder / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    (folder / "config.yaml").write_text("run_name: toy\nmodel:\n  name: tiny-test-model\n")
    return folder


def training_row(step: int) -> dict:
    # Linear in the step so that window means are easy to compute by hand.
    return {"step": step, "time": 1000.0 + step, "reward/mean": step / 10, "reward/accuracy": step / 100,
            "reward/format": 0.5, "reward/std": 0.1, "accuracy": step / 100, "format_rate": 0.2,
            "completion_len/mean": 100.0 - step, "completion_len/max": 128, "kl": 0.001 * step, "entropy": 1.0,
            "lr": 1e-5, "groups/zero_variance_frac": 0.0, "sampling/groups_dropped": step % 4, "sampling/prompts_drawn": 8,
            "think_nonempty_frac": 1 - step / 20, "think_len": 2.0 * step}


def sample(step: int, completion: str, correct: bool, reward: float | None = None) -> dict:
    return {"step": step, "prompt": f"What is {step} + 1?", "completion": completion,
            "reward": float(correct) + 0.5 if reward is None else reward,
            "rewards": {"accuracy": float(correct), "format": 1.0, "tag_count": None}, "answer": str(step + 1)}


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> tuple[Path, str]:
    """20 training steps, evaluations at steps 0, 10 and 20, two logged samples per step."""
    rows = [{"step": 0, "time": 999.0, "eval/accuracy": 0.1, "eval/format_rate": 0.0, "eval/pass@1": 0.1,
             "eval/greedy_accuracy": 0.05, "eval/completion_len": 90.0, "time/eval": 2.0}]
    for step in range(1, 21):
        row = training_row(step)
        if step in (10, 20):
            row.update({"eval/accuracy": step / 50, "eval/format_rate": step / 40, "eval/pass@1": step / 50,
                        "eval/greedy_accuracy": step / 40, "eval/completion_len": 90.0 - step,
                        "eval/no_think_accuracy": step / 100, "eval/thinking_gain": step / 100,
                        "eval/think_nonempty_frac": 0.5, "eval/think_len": 3.0 * step})
        rows.append(row)
    samples = []
    for step in range(1, 21):
        late = step > 15
        # Late completions reflect; one correct one at step 17 must be picked over later wrong ones.
        text = "<think>Wait, let me check this.</think><answer>0</answer>" if late else f"<think>add</think><answer>{step}</answer>"
        samples.append(sample(step, f"START-EXAMPLE-{step} " + text if step == 1 else text, correct=False))
        samples.append(sample(step, "CORRECT-END <think>verify</think>" if step == 17 else text, correct=step == 17))
    run = make_run(tmp_path_factory.mktemp("runs") / "toy", rows, samples)
    summary = write_report(run)
    return run, summary.read_text()


def assert_valid_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC, path
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_full_run_writes_every_panel_and_the_overview(full_run):
    run, _ = full_run
    report = run / "report"
    for name in ALL_PANELS + ["overview"]:
        assert_valid_png(report / f"{name}.png")
    # Written through temporary files renamed into place: none is left behind.
    assert sorted(p.name for p in report.iterdir()) == sorted([f"{n}.png" for n in ALL_PANELS + ["overview"]] + ["summary.md"])


def test_summary_eval_table_compares_first_and_last_eval_rows(full_run):
    _, text = full_run
    assert "| metric | step 0 | step 20 | change |" in text
    assert "| accuracy | 0.100 | 0.400 | +0.300 |" in text
    assert "| greedy accuracy | 0.050 | 0.500 | +0.450 |" in text
    assert "| format rate | 0.000 | 0.500 | +0.500 |" in text
    assert "| pass@1 | 0.100 | 0.400 | +0.300 |" in text
    assert "| completion length | 90.0 | 70.0 | -20.0 |" in text
    # Only the last evaluation measured without thinking: the first column has a dash.
    assert "| accuracy, thinking forced empty | – | 0.200 | – |" in text
    assert "| value of thinking (accuracy gain) | – | 0.200 | – |" in text
    assert "Evaluations: 3 (at steps 0, 10, 20)" in text


def test_summary_training_table_averages_the_first_and_last_five_steps(full_run):
    _, text = full_run
    # reward/mean = step / 10: steps 1-5 average 0.3, steps 16-20 average 1.8.
    assert "| metric | steps 1–5 (mean) | steps 16–20 (mean) | change |" in text
    assert "| reward | 0.300 | 1.800 | +1.500 |" in text
    assert "| accuracy | 0.030 | 0.180 | +0.150 |" in text
    assert "| format rate | 0.200 | 0.200 | +0.000 |" in text
    assert "| completion length | 97.0 | 82.0 | -15.0 |" in text
    # think_len = 2 * step: 6.0 over steps 1-5, 36.0 over steps 16-20.
    assert "| thinking length (characters) | 6.0 | 36.0 | +30.0 |" in text
    assert "Training steps logged: 20 (steps 1–20)" in text
    assert "Model: `tiny-test-model`" in text


def test_summary_plots_reflection_and_examples(full_run):
    _, text = full_run
    assert "![overview](overview.png)" in text
    assert "[kl](kl.png)" in text
    assert "- start (steps 1–5): 0.0% (0 of 10)" in text
    assert "- end (steps 16–20): 100.0% (10 of 10)" in text
    start, end = text.split("### End of training")
    assert "START-EXAMPLE-1" in start
    # The only correct late completion is shown first at the end, before later wrong ones.
    assert "CORRECT-END" in end
    assert end.index("CORRECT-END") < end.index("Wait, let me check")
    assert end.count("```text") == 4  # 2 examples, each a question block and a completion block


def test_run_without_eval_rows_and_with_none_values(tmp_path):
    rows = [training_row(step) for step in range(1, 4)]
    for row in rows:
        row["kl"] = None  # beta = 0: KL logged as null
    rows[1]["accuracy"] = None
    run = make_run(tmp_path / "noeval", rows)  # and no samples.jsonl
    text = write_report(run).read_text()
    assert "No evaluation rows in metrics.jsonl" in text
    assert "No samples.jsonl entries" in text
    # Three steps: first and last single steps; the None accuracy at step 2 is simply skipped.
    assert "| metric | step 1 | step 3 | change |" in text
    assert "| accuracy | 0.010 | 0.030 | +0.020 |" in text
    report = run / "report"
    assert not (report / "kl.png").exists() and not (report / "reflection.png").exists()
    for name in ["rewards", "accuracy", "completion_length", "entropy", "overview"]:
        assert_valid_png(report / f"{name}.png")


def test_one_step_run(tmp_path):
    row = {"step": 1, "reward/mean": 0.4, "reward/format": None, "accuracy": 0.25, "format_rate": None, "kl": None}
    run = make_run(tmp_path / "one", [row], [sample(1, "<think>hmm</think><answer>2</answer>", correct=True)])
    text = write_report(run).read_text()
    assert "| metric | step 1 |" in text
    assert "| reward | 0.400 |" in text and "| accuracy | 0.250 |" in text
    assert "format rate" not in text.split("## Plots")[0].split("## Training")[1]  # only None: no row
    assert "- only logged step (step 1): 0.0% (0 of 1)" in text
    assert "### End of training" not in text  # its only sample is already shown as the start
    for name in ["rewards", "accuracy", "reflection", "overview"]:
        assert_valid_png(run / "report" / f"{name}.png")


def test_eval_only_run(tmp_path):
    run = make_run(tmp_path / "evalonly", [{"step": 0, "eval/accuracy": 0.125, "eval/format_rate": 0.5,
                                            "eval/completion_len": 42.0, "time/eval": 1.0}])
    text = write_report(run).read_text()
    assert "| metric | step 0 |" in text and "| accuracy | 0.125 |" in text and "| completion length | 42.0 |" in text
    assert "No training steps logged." in text
    assert_valid_png(run / "report" / "accuracy.png")
    assert not (run / "report" / "rewards.png").exists()


def test_eval_table_has_a_row_per_value_of_evaluation_by(tmp_path):
    first = {"step": 20, "eval/accuracy": 0.5, "eval/accuracy/op=+": 0.75, "eval/greedy_accuracy/op=+": 0.8,
             "eval/accuracy/op=-": 0.25, "eval/greedy_accuracy/op=-": 0.2}
    last = {"step": 40, "eval/accuracy": 0.6, "eval/accuracy/op=+": 0.875, "eval/greedy_accuracy/op=+": 0.9,
            "eval/accuracy/op=-": 0.375, "eval/greedy_accuracy/op=-": 0.3}
    text = write_report(make_run(tmp_path / "by", [first, last])).read_text()
    lines = [line for line in text.splitlines() if ", op=" in line]
    assert lines == ["| accuracy, op=+ | 0.750 | 0.875 | +0.125 |", "| greedy accuracy, op=+ | 0.800 | 0.900 | +0.100 |",
                     "| accuracy, op=- | 0.250 | 0.375 | +0.125 |", "| greedy accuracy, op=- | 0.200 | 0.300 | +0.100 |"]


def test_empty_metrics_file_writes_a_summary_without_plots(tmp_path):
    run = make_run(tmp_path / "empty", [])
    text = write_report(run).read_text()
    assert "No metrics to plot." in text
    assert sorted(p.name for p in (run / "report").iterdir()) == ["summary.md"]


def test_missing_metrics_file_is_a_run_error(tmp_path):
    with pytest.raises(RunError, match="metrics.jsonl"):
        write_report(tmp_path)
    assert not (tmp_path / "report").exists()


def test_long_completion_is_shortened_and_backticks_cannot_close_the_fence(tmp_path):
    long_text = "<think>" + "x" * 10_000 + "```" + "</think><answer>THE-END</answer>"
    run = make_run(tmp_path / "long", [training_row(1)], [sample(1, long_text, correct=True)])
    text = write_report(run).read_text()
    assert "characters cut" in text
    assert "THE-END" in text  # the tail, where the answer is, is kept
    assert len(text) < 5000
    assert "````text" in text  # a longer fence than the completion's own ```


@pytest.mark.parametrize("text, expected", [
    ("Wait, that is wrong.", True),  # capitalised, followed by punctuation
    ("let   me see", True),  # "let me" across several spaces
    ("LET ME recompute", True),
    ("I will recheck it", True),
    ("we re-evaluate the sum", True),
    ("verify: 2 + 2 = 4", True),
    ("waiting for nothing", False),  # "wait" inside a longer word
    ("it checked out", False),  # "check" with a suffix is not the word
    ("unverified", False),
    ("letme", False),
    ("", False),
])
def test_reflective_words_are_whole_words_any_case(text, expected):
    assert is_reflective(text) is expected


def test_rolling_mean_is_trailing():
    assert rolling_mean([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
    assert rolling_mean([2.0, 4.0], 5) == [2.0, 3.0]


@pytest.mark.parametrize("rewards, expected", [
    ({"accuracy": 1.0, "format": 0.0}, True),
    ({"accuracy": 0.0, "format": 1.0}, False),
    ({"countdown": 1.0}, True),
    ({"accuracy": None, "format": 1.0}, None),  # not judged for correctness
    ({}, None),
])
def test_sample_correct(rewards, expected):
    assert sample_correct({"rewards": rewards}) is expected
