"""seed_report: several runs of one recipe in one report, from `r1train report a b c`."""
import json
from pathlib import Path

import pytest

from r1train.cli import main
from r1train.seed_report import ThinkingCourse, mean_and_band, thinking_course, write_seed_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_seed_run(folder: Path, seed: int, final_accuracy: float) -> Path:
    folder.mkdir(parents=True)
    rows = [{"step": 0, "time": 0.0, "eval/accuracy": 0.0, "eval/format_rate": 0.0}]
    for step in range(1, 11):
        rows.append({"step": step, "time": 60.0 * step, "accuracy": step / 10 * final_accuracy, "entropy": 1.0 - step / 20,
                     "groups/zero_variance_frac": 0.5, "think_len": 10.0 + seed, "think_nonempty_frac": 0.9,
                     "think_len_closed": 5.0 + step})
    rows[-1].update({"eval/accuracy": final_accuracy, "eval/format_rate": 1.0, "eval/no_think_accuracy": 0.2,
                     "eval/thinking_gain": final_accuracy - 0.2, "eval/think_nonempty_frac": 0.95, "eval/think_len": 12.0})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (folder / "config.yaml").write_text(f"run_name: {folder.name}\nseed: {seed}\n")
    return folder


def test_mean_and_band_per_step_over_the_runs_that_logged_it():
    assert mean_and_band([([1, 2], [0.0, 1.0]), ([1, 2], [1.0, 2.0])]) == ([1, 2], [0.5, 1.5], [0.0, 1.0], [1.0, 2.0])
    # A step only one run logged averages over that run alone.
    assert mean_and_band([([1, 2], [0.0, 1.0]), ([1], [1.0])]) == ([1, 2], [0.5, 1.0], [0.0, 1.0], [1.0, 1.0])


def test_seed_report_table_has_a_row_per_seed_and_the_median_and_worst(tmp_path):
    runs = [make_seed_run(tmp_path / f"toy_seed{seed}", seed, acc) for seed, acc in ((0, 0.8), (1, 0.6), (2, 0.7))]
    summary = write_seed_report(runs).read_text()
    assert "| toy_seed0 | 0 | 0.800 |" in summary
    assert "| toy_seed1 | 1 | 0.600 |" in summary
    assert "| **median** |  | 0.700 |" in summary
    assert "| **worst** |  | 0.600 |" in summary
    assert "| 10.0 |" in summary  # minutes: the rows span 0 to 600 s
    out = tmp_path / "seeds_report"
    for stem in ("heldout_accuracy", "training_accuracy", "entropy", "groups_without_signal", "think_length", "overview"):
        assert (out / f"{stem}.png").read_bytes()[:8] == PNG_MAGIC, stem


def test_report_command_takes_several_runs_and_refuses_a_missing_one(tmp_path, capsys):
    runs = [make_seed_run(tmp_path / f"r{seed}", seed, 0.5) for seed in (0, 1)]
    assert main(["report", str(runs[0]), str(runs[1]), "--out", str(tmp_path / "both")]) == 0
    assert (tmp_path / "both" / "summary.md").is_file()
    assert main(["report", str(runs[0]), str(tmp_path / "missing")]) == 2
    assert "missing has no metrics.jsonl" in capsys.readouterr().err
    with pytest.raises(Exception):
        write_seed_report([runs[0]])


def test_thinking_course_finds_the_shrink_and_the_growth_after_it():
    # Noise that shrinks to one written step, then grows to the whole chain as accuracy rises
    # (under 16 points, so nothing is smoothed).
    rows = [{"step": step, "think_len": length, "accuracy": accuracy}
            for step, length, accuracy in ((1, 150.0, 0.0), (2, 30.0, 0.0), (3, 11.0, 0.05), (4, 18.0, 0.2), (5, 24.0, 0.5))]
    rows.insert(2, {"step": 2, "eval/accuracy": 0.1})  # an evaluation row has neither key
    assert thinking_course(rows) == ThinkingCourse(first=150.0, lowest=11.0, lowest_step=3, last=24.0,
                                                   accuracy_at_lowest=0.05, last_accuracy=0.5)
    assert thinking_course([{"step": 1, "accuracy": 0.5}]) is None
    # With 16 or more points each curve is smoothed by a trailing mean (window 2 at 16 points).
    long = [{"step": step, "think_len": 10.0 if step % 2 else 20.0, "accuracy": 0.0} for step in range(1, 17)]
    assert thinking_course(long).lowest == 10.0 and thinking_course(long).last == 15.0


def test_seed_summary_shows_each_runs_thinking_course(tmp_path):
    runs = [make_seed_run(tmp_path / f"toy_seed{seed}", seed, 0.8) for seed in (0, 1)]
    summary = write_seed_report(runs).read_text()
    assert "Thinking over training" in summary
    # Seed 1 thinks 11 characters at every step: first = lowest = last; accuracy rises 0.08 -> 0.8
    # (smoothing needs 16 points; these runs have 10).
    assert "| toy_seed1 | 11.0 | 11.0 (1) | 11.0 | 0.080 | 0.800 |" in summary
    # The closed thinking grows 6 -> 15 characters over the 10 steps, in its own table.
    closed = summary[summary.index("Closed thinking over training"):]
    assert "| toy_seed1 | 6.0 | 6.0 (1) | 15.0 | 0.080 | 0.800 |" in closed
    assert (tmp_path / "seeds_report" / "think_length_closed.png").read_bytes()[:8] == PNG_MAGIC
