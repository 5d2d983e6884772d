"""Several runs of one recipe (different seeds) in one report: `r1train report runs/a runs/b runs/c`.

Writes into `--out` (default `<parent of the first run>/seeds_report/`):

- one PNG per metric with each run's curve drawn faintly, their mean bold and the band between
  the lowest and the highest run at every step (held-out metrics: at every evaluation step);
  `overview.png` holds them all;
- `summary.md`: one row per run (seed, final held-out accuracy, format, accuracy without thinking,
  value of thinking, thinking share, time) and the median, worst and mean over the runs; then the
  thinking's course per run: its length at the first step, at its lowest and at the end, with the
  training accuracy at those points (a base model's noise first shrinks; R1-Zero's claim is that
  the thinking then grows as accuracy rises).

Deliberate simplifications:
- Curves are aligned by step; a step that some runs did not log averages over the runs that did
  (the band then spans fewer runs). Training curves are smoothed per run before averaging, with the
  same trailing window as the single-run report.
- The band is min–max, not a confidence interval: with three seeds that is the honest summary.
- "Final" means the last evaluation row of each run.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from r1train.errors import RunError
from r1train.report_files import save_figure, write_text
from r1train.run_rows import eval_rows, numeric, read_config, series_of, smoothed
from r1train.tracking import read_metrics

# (file stem, title, metric key, held-out?, rate in [0, 1]?)
CURVES = (
    ("heldout_accuracy", "Held-out accuracy (sampled)", "eval/accuracy", True, True),
    ("heldout_no_think_accuracy", "Held-out accuracy, thinking forced empty", "eval/no_think_accuracy", True, True),
    ("heldout_format", "Held-out strict format rate", "eval/format_rate", True, True),
    ("training_accuracy", "Training accuracy", "accuracy", False, True),
    ("entropy", "Policy entropy (nats per token)", "entropy", False, False),
    ("groups_without_signal", "Groups without learning signal", "groups/zero_variance_frac", False, True),
    ("think_length", "Thinking length (characters)", "think_len", False, False),
    ("think_length_closed", "Thinking length, closed thinking only (characters)", "think_len_closed", False, False),
    ("think_nonempty", "Share with non-empty thinking", "think_nonempty_frac", False, True),
)
# (column header, metric key in the last evaluation row)
FINAL_COLUMNS = (
    ("held-out accuracy", "eval/accuracy"),
    ("greedy", "eval/greedy_accuracy"),
    ("format", "eval/format_rate"),
    ("no-think accuracy", "eval/no_think_accuracy"),
    ("value of thinking", "eval/thinking_gain"),
    ("non-empty thinking", "eval/think_nonempty_frac"),
    ("thinking chars", "eval/think_len"),
)


@dataclass(frozen=True)
class ThinkingCourse:
    """A run's training thinking length (characters) and accuracy, smoothed as the plots are, at the
    first step, at the step where the thinking is shortest, and at the last step."""
    first: float
    lowest: float
    lowest_step: float
    last: float
    accuracy_at_lowest: float | None
    last_accuracy: float | None


def thinking_course(rows: list[dict], key: str = "think_len") -> ThinkingCourse | None:
    """The course of a run's thinking length (`key`: "think_len" over all training completions,
    "think_len_closed" over those that closed their thinking); None when it logged none.

    Example: think_len 100, 10, 20 over steps 1-3 (no smoothing under 16 points) gives
    ThinkingCourse(first=100, lowest=10, lowest_step=2, last=20, ...).
    """
    steps, lengths = series_of(rows, key)
    if not lengths:
        return None
    lengths = smoothed(lengths)
    accuracy_steps, accuracy = series_of(rows, "accuracy")
    accuracy_at = dict(zip(accuracy_steps, smoothed(accuracy)))
    low = min(range(len(lengths)), key=lengths.__getitem__)
    return ThinkingCourse(lengths[0], lengths[low], steps[low], lengths[-1], accuracy_at.get(steps[low]),
                          accuracy_at.get(steps[-1]))


@dataclass
class SeedRun:
    name: str
    seed: int | None
    rows: list[dict]

    @property
    def final(self) -> dict:
        evals = eval_rows(self.rows)
        return evals[-1] if evals else {}

    @property
    def minutes(self) -> float | None:
        times = [row["time"] for row in self.rows if numeric(row.get("time"))]
        return (max(times) - min(times)) / 60 if len(times) > 1 else None


def load_runs(run_dirs: list[Path]) -> list[SeedRun]:
    runs = []
    for run_dir in map(Path, run_dirs):
        if not (run_dir / "metrics.jsonl").is_file():
            raise RunError(f"{run_dir} has no metrics.jsonl: give run folders, e.g. runs/r1_zero_toy_seed0")
        seed = read_config(run_dir / "config.yaml").get("seed")
        rows = sorted(read_metrics(run_dir / "metrics.jsonl"), key=lambda row: row.get("step", 0))
        runs.append(SeedRun(run_dir.resolve().name, seed if isinstance(seed, int) else None, rows))
    return runs


def mean_and_band(curves: list[tuple[list[float], list[float]]]) -> tuple[list[float], list[float], list[float], list[float]]:
    """Per step over several (steps, values) curves: (steps, mean, lowest, highest).

    Example: mean_and_band([([1, 2], [0.0, 1.0]), ([1, 2], [1.0, 2.0])]) == ([1, 2], [0.5, 1.5], [0.0, 1.0], [1.0, 2.0])
    """
    by_step: dict[float, list[float]] = {}
    for steps, values in curves:
        for step, value in zip(steps, values):
            by_step.setdefault(step, []).append(value)
    steps = sorted(by_step)
    return (steps, [sum(by_step[s]) / len(by_step[s]) for s in steps], [min(by_step[s]) for s in steps],
            [max(by_step[s]) for s in steps])


def write_seed_report(run_dirs: list[Path], out: Path | None = None) -> Path:
    """Plots and `summary.md` over several runs of one recipe; returns the summary's path."""
    if len(run_dirs) < 2:
        raise RunError("a seeds report needs at least two run folders (give one to get a single-run report)")
    runs = load_runs(run_dirs)
    out = Path(out) if out else Path(run_dirs[0]).resolve().parent / "seeds_report"
    out.mkdir(parents=True, exist_ok=True)
    drawn = []
    for stem, title, key, held_out, rate in CURVES:
        curves = [series_of(run.rows, key) for run in runs]
        if not any(values for _, values in curves):
            continue
        drawn.append((stem, title, key, held_out, rate, curves))
        fig = Figure(figsize=(7.0, 4.2), layout="constrained")
        _draw(fig.add_subplot(), title, curves, [run.name for run in runs], held_out, rate)
        save_figure(fig, out / f"{stem}.png")
    if drawn:
        columns = 2
        rows = math.ceil(len(drawn) / columns)
        fig = Figure(figsize=(7.0 * columns, 4.2 * rows), layout="constrained")
        axes = fig.subplots(rows, columns, squeeze=False).ravel()
        for ax, (_, title, _, held_out, rate, curves) in zip(axes, drawn):
            _draw(ax, title, curves, [run.name for run in runs], held_out, rate)
        for ax in axes[len(drawn):]:
            ax.set_visible(False)
        fig.suptitle(f"{len(runs)} runs: mean (bold), lowest to highest (band)", fontsize=14)
        save_figure(fig, out / "overview.png")
    summary = out / "summary.md"
    write_text(summary, render_seed_summary(runs, [stem for stem, *_ in drawn]))
    return summary


def _draw(ax, title: str, curves, names: list[str], held_out: bool, rate: bool) -> None:
    if not held_out:  # training curves are noisy per step: smooth each run first
        curves = [(steps, smoothed(values)) for steps, values in curves]
    for (steps, values), name in zip(curves, names):
        if values:
            ax.plot(steps, values, linewidth=0.8, alpha=0.45, marker="o" if held_out else None, markersize=3,
                    label=name)
    steps, mean, low, high = mean_and_band([c for c in curves if c[1]])
    ax.fill_between(steps, low, high, color="C0", alpha=0.15, label="lowest to highest")
    ax.plot(steps, mean, color="black", linewidth=2, marker="o" if held_out else None, label="mean")
    ax.set_title(title, fontsize=11)
    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if rate:
        ax.set_ylim(-0.02, 1.03)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="x-small", loc="best")


def render_seed_summary(runs: list[SeedRun], plots: list[str]) -> str:
    lines = [f"# Seeds report: {len(runs)} runs", "", "Last evaluation of each run:", ""]
    header = ["run", "seed", *(label for label, _ in FINAL_COLUMNS), "minutes"]
    lines += ["| " + " | ".join(header) + " |", "|---|---:|" + "---:|" * (len(FINAL_COLUMNS) + 1)]
    for run in runs:
        cells = [run.name, "–" if run.seed is None else str(run.seed)]
        cells += [_fmt(key, run.final.get(key)) for _, key in FINAL_COLUMNS]
        cells.append("–" if run.minutes is None else f"{run.minutes:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    for name, pick in (("median", statistics.median), ("worst", min), ("mean", statistics.fmean)):
        cells = [f"**{name}**", ""]
        for _, key in FINAL_COLUMNS:
            values = [run.final[key] for run in runs if numeric(run.final.get(key))]
            cells.append(_fmt(key, pick(values)) if values and (name != "worst" or key == "eval/accuracy"
                                                                      or key == "eval/format_rate") else "–")
        lines.append("| " + " | ".join(cells) + " | |")
    lines += ["", "\"worst\" is given for accuracy and format only (lower is worse there).", ""]
    lines += _thinking_course_table(runs, "think_len", "Thinking over training (training samples, smoothed as in the plots):")
    lines += _thinking_course_table(runs, "think_len_closed", (
        "Closed thinking over training (only the completions that closed `</think>`; a base model's "
        "thinking that runs to the token limit counts above at its cut length):"))
    lines += ["## Plots", ""]
    lines += ["![overview](overview.png)", "", "Separate plots: " + ", ".join(f"[{p}]({p}.png)" for p in plots) + "."] \
        if plots else ["No metrics to plot."]
    return "\n".join(lines) + "\n"


def _thinking_course_table(runs: list[SeedRun], key: str, title: str) -> list[str]:
    courses = [(run.name, thinking_course(run.rows, key)) for run in runs]
    if not any(course for _, course in courses):
        return []
    lines = [title, "",
             "| run | thinking chars, first step | lowest (step) | last | training accuracy at the lowest | last |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, course in courses:
        if course is None:
            lines.append(f"| {name} | – | – | – | – | – |")
            continue
        accuracies = [_fmt("accuracy", value) for value in (course.accuracy_at_lowest, course.last_accuracy)]
        lines.append(f"| {name} | {course.first:.1f} | {course.lowest:.1f} ({course.lowest_step:g}) | "
                     f"{course.last:.1f} | {accuracies[0]} | {accuracies[1]} |")
    return lines + [""]


def _fmt(key: str, value) -> str:
    if not numeric(value):
        return "–"
    return f"{value:.1f}" if "len" in key else f"{value:.3f}"
