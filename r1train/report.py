"""Plots and a markdown summary of one run folder: `r1train report runs/<run>`.

Reads `metrics.jsonl` (one row per step; evaluation rows carry `eval/*` keys) and `samples.jsonl`
(the few completions logged per step) and writes into `<run>/report/`:

- one PNG per panel (rewards, accuracy and format rate, completion length, KL, entropy, groups
  without signal, thinking share and worth, thinking length, reflective words) and `overview.png` holding all of them; a panel appears only when its
  metrics were logged;
- `summary.md`: first vs last evaluation, first vs last few training steps, the reflective-word
  share at the start and the end, and example completions from both ends of training.

Deliberate simplifications:
- The "aha" signal counts whole-word, case-insensitive matches of a fixed list of reflective words
  (REFLECTIVE_WORDS) in the logged sample completions only, a handful per step, so the per-step
  share is noisy; the plot smooths it and the summary compares windows of several steps.
- A sample counts as correct when one of its rewards that judge answers
  (`rewards.CORRECTNESS_REWARDS`) is 1; runs judged by other rewards get their end-of-training
  examples picked by highest total reward instead.
- Figures are drawn on `matplotlib.figure.Figure` objects with the Agg canvas, without pyplot, so
  making a report changes no global matplotlib state of the process that calls it.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from r1train.errors import RunError
from r1train.report_files import save_figure, write_text
from r1train.run_rows import (REFLECTIVE_WORDS, dropped_share, edge_window, eval_rows, is_reflective, numeric, read_config,
                              reflective_share_by_step, rolling_mean, sample_correct, series_of, smoothing_window,
                              training_rows)
from r1train.tracking import read_metrics

EVAL_TABLE = (("accuracy", "eval/accuracy"), ("greedy accuracy", "eval/greedy_accuracy"),
              ("last-number accuracy (format aside)", "eval/last_number_accuracy"),
              ("format rate", "eval/format_rate"), ("pass@1", "eval/pass@1"), ("maj@k", "eval/maj@k"),
              ("pass@k", "eval/pass@k"), ("completion length", "eval/completion_len"),
              ("accuracy, thinking forced empty", "eval/no_think_accuracy"),
              ("value of thinking (accuracy gain)", "eval/thinking_gain"),
              ("share with non-empty thinking", "eval/think_nonempty_frac"),
              ("thinking length (characters)", "eval/think_len"),
              ("thinking length, closed thinking only", "eval/think_len_closed"))
TRAIN_TABLE = (("reward", "reward/mean"), ("accuracy", "accuracy"), ("format rate", "format_rate"),
               ("completion length", "completion_len/mean"), ("share with non-empty thinking", "think_nonempty_frac"),
               ("thinking length (characters)", "think_len"),
               ("thinking length, closed thinking only", "think_len_closed"), ("groups without signal", "groups/zero_variance_frac"),
               ("entropy", "entropy"))
MAX_EXAMPLE_CHARS = 1500  # a longer completion keeps its head and tail (where the answer is)
# Prefixes of the accuracy per value of a data column (`evaluation.by`).
PER_VALUE_PREFIXES = ("eval/accuracy/", "eval/greedy_accuracy/")


@dataclass
class Series:
    label: str
    steps: list[float]
    values: list[float]
    color: str
    evaluation: bool = False  # a few held-out points: markers, never smoothed
    linestyle: str = "-"
    marker: str = "o"


@dataclass
class Panel:
    name: str  # file stem of its PNG
    title: str
    ylabel: str
    series: list[Series]
    unit_interval: bool = False  # rates: y from 0, never above 1


def write_report(run_dir: Path) -> Path:
    """Write plots and `summary.md` for a run folder into `run_dir/report/`.

    Args:
        run_dir: a folder holding `metrics.jsonl` (required), `samples.jsonl` and `config.yaml`.

    Returns:
        The path of `report/summary.md`.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "metrics.jsonl").is_file():
        raise RunError(f"{run_dir} has no metrics.jsonl: give a run folder, e.g. runs/r1_zero_toy")
    rows = sorted(read_metrics(run_dir / "metrics.jsonl"), key=lambda row: row.get("step", 0))
    samples = read_metrics(run_dir / "samples.jsonl")
    out = run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    panels = build_panels(rows, samples)
    for panel in panels:
        fig = Figure(figsize=(7.0, 4.2), layout="constrained")
        _draw(fig.add_subplot(), panel)
        save_figure(fig, out / f"{panel.name}.png")
    if panels:
        save_figure(_overview(panels, run_dir.resolve().name), out / "overview.png")
    summary = out / "summary.md"
    write_text(summary, render_summary(run_dir, rows, samples, panels))
    return summary


# ----------------------------------------------------------------------------- plots


def build_panels(rows: list[dict], samples: list[dict]) -> list[Panel]:
    """The panels whose metrics exist, in report order."""
    panels = []
    reward_keys = sorted({k for row in rows for k in row if k.startswith("reward/") and k != "reward/std"},
                         key=lambda k: (k != "reward/mean", k))  # the total first, then by name
    rewards = [Series("total (weighted)" if k == "reward/mean" else k[len("reward/"):], *series_of(rows, k), f"C{i % 10}")
               for i, k in enumerate(reward_keys)]
    panels.append(Panel("rewards", "Rewards per function (training batches)", "mean reward", rewards))
    panels.append(Panel("accuracy", "Accuracy and format rate", "rate", [
        Series("held-out accuracy (sampled)", *series_of(rows, "eval/accuracy"), "C0", evaluation=True),
        Series("held-out accuracy (greedy)", *series_of(rows, "eval/greedy_accuracy"), "C2", evaluation=True,
               marker="s"),
        Series("held-out format rate", *series_of(rows, "eval/format_rate"), "C1", evaluation=True, marker="^"),
        Series("training accuracy", *series_of(rows, "accuracy"), "C0", linestyle="--"),
        Series("training format rate", *series_of(rows, "format_rate"), "C1", linestyle="--"),
    ], unit_interval=True))
    panels.append(Panel("completion_length", "Completion length", "tokens", [
        Series("training mean", *series_of(rows, "completion_len/mean"), "C0"),
        Series("training max", *series_of(rows, "completion_len/max"), "C7", linestyle=":"),
        Series("held-out mean", *series_of(rows, "eval/completion_len"), "C3", evaluation=True),
    ]))
    panels.append(Panel("kl", "KL divergence to the reference model", "KL (per token)", [
        Series("KL", *series_of(rows, "kl"), "C4")]))
    panels.append(Panel("entropy", "Policy entropy", "nats per token", [
        Series("entropy", *series_of(rows, "entropy"), "C5")]))
    panels.append(Panel("signal", "Groups without learning signal (all rewards equal)", "share of groups", [
        Series("in the trained batch", *series_of(rows, "groups/zero_variance_frac"), "C3"),
        Series("dropped by dynamic sampling (of those drawn)", *dropped_share(rows), "C7", linestyle="--"),
    ], unit_interval=True))
    panels.append(Panel("thinking", "Thinking: how often, and what it is worth", "rate", [
        Series("training: non-empty thinking", *series_of(rows, "think_nonempty_frac"), "C4"),
        Series("held-out: non-empty thinking", *series_of(rows, "eval/think_nonempty_frac"), "C4", evaluation=True),
        Series("held-out accuracy", *series_of(rows, "eval/accuracy"), "C0", evaluation=True),
        Series("held-out accuracy, thinking forced empty", *series_of(rows, "eval/no_think_accuracy"), "C3",
               evaluation=True, marker="x"),
    ], unit_interval=True))
    panels.append(Panel("think_length", "Thinking length", "characters", [
        Series("training mean", *series_of(rows, "think_len"), "C4"),
        Series("training mean, closed thinking only", *series_of(rows, "think_len_closed"), "C4", linestyle="--"),
        Series("held-out mean", *series_of(rows, "eval/think_len"), "C3", evaluation=True),
    ]))
    words = ", ".join(f'"{w}"' for w in REFLECTIVE_WORDS)
    panels.append(Panel("reflection", f'Reflective words ("aha" signal)\n{words}',
                        "share of logged completions", [
                            Series("completions with a reflective word", *reflective_share_by_step(samples), "C6")],
                        unit_interval=True))
    for panel in panels:
        panel.series = [s for s in panel.series if s.values]
    return [panel for panel in panels if panel.series]


def _draw(ax, panel: Panel) -> None:
    smoothed = 0
    for s in panel.series:
        window = 1 if s.evaluation else smoothing_window(len(s.values))
        marker = s.marker if s.evaluation or len(s.values) <= 25 else None
        if window == 1:
            ax.plot(s.steps, s.values, color=s.color, linestyle=s.linestyle, marker=marker,
                    markersize=5 if s.evaluation else 4, linewidth=2 if s.evaluation else 1.5, label=s.label)
        else:
            smoothed = window
            ax.plot(s.steps, s.values, color=s.color, linestyle=s.linestyle, linewidth=0.8, alpha=0.3)
            ax.plot(s.steps, rolling_mean(s.values, window), color=s.color, linestyle=s.linestyle, linewidth=2,
                    label=s.label)
    ax.set_title(panel.title, fontsize=11)
    ax.set_xlabel("step" + (f"   (faint: per step, bold: {smoothed}-step rolling mean)" if smoothed else ""))
    ax.set_ylabel(panel.ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    first = min(min(s.steps) for s in panel.series)
    last = max(max(s.steps) for s in panel.series)
    if last - first < 2:  # one or two steps: widen, or the integer tick locator finds no ticks
        ax.set_xlim(first - 1, last + 1)
    if panel.unit_interval:
        # From 0 so rates read honestly, but only up to a bit above the highest value: small
        # early-training rates would be a flat line at the bottom of a 0-1 axis.
        highest = max(max(s.values) for s in panel.series)
        ax.set_ylim(-0.02, min(1.03, max(0.1, highest * 1.15)))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", loc="best")


def _overview(panels: list[Panel], run_name: str) -> Figure:
    columns = 1 if len(panels) == 1 else 2
    rows = math.ceil(len(panels) / columns)
    fig = Figure(figsize=(7.0 * columns, 4.2 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, panel in zip(axes, panels):
        _draw(ax, panel)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(f"Run {run_name}", fontsize=14)
    return fig


# ----------------------------------------------------------------------------- summary


def render_summary(run_dir: Path, rows: list[dict], samples: list[dict], panels: list[Panel]) -> str:
    train = training_rows(rows)
    lines = [f"# Run report: {run_dir.resolve().name}", ""]
    lines += _about(run_dir, train, eval_rows(rows))
    lines += ["", "## Held-out evaluation: first vs last", ""] + _eval_table(eval_rows(rows))
    lines += ["", "## Training batches: first vs last steps", ""] + _training_table(train)
    lines += ["", "## Plots", ""]
    if panels:
        lines += ["![overview](overview.png)", "",
                  "Separate plots: " + ", ".join(f"[{p.name}]({p.name}.png)" for p in panels) + "."]
    else:
        lines += ["No metrics to plot."]
    lines += ["", '## Reflective words ("aha" signal)', ""] + _reflection(samples)
    lines += ["", "## Example completions", ""] + _examples(samples)
    return "\n".join(lines) + "\n"


def _about(run_dir: Path, train: list[dict], evals: list[dict]) -> list[str]:
    lines = []
    config = read_config(run_dir / "config.yaml")
    model = config.get("model", {}).get("name") if isinstance(config.get("model"), dict) else None
    if model:
        lines.append(f"Model: `{model}`.")
    if train:
        lines.append(f"Training steps logged: {len(train)} ({_span(train, averaged=False)}).")
    else:
        lines.append("No training steps logged.")
    at = ", ".join(str(row["step"]) for row in evals)
    lines.append(f"Evaluations: {len(evals)}" + (f" (at step{'s' if len(evals) > 1 else ''} {at})." if evals else "."))
    return [" ".join(lines)]


def _eval_table(evals: list[dict]) -> list[str]:
    if not evals:
        return ["No evaluation rows in metrics.jsonl (set `data.eval` and `evaluation.every` to get them)."]
    first, last = evals[0], evals[-1]
    rows = list(EVAL_TABLE) + _per_value_rows(first, last)
    if first is last:
        table = [f"| metric | step {first['step']} |", "|---|---:|"]
        table += [f"| {label} | {fmt(key, first.get(key))} |" for label, key in rows if numeric(first.get(key))]
        return table
    table = [f"| metric | step {first['step']} | step {last['step']} | change |", "|---|---:|---:|---:|"]
    for label, key in rows:
        if numeric(first.get(key)) or numeric(last.get(key)):
            table.append(f"| {label} | {fmt(key, first.get(key))} | {fmt(key, last.get(key))} | "
                         f"{change(key, first.get(key), last.get(key))} |")
    return table


def _per_value_rows(*evals: dict) -> list[tuple[str, str]]:
    """(label, key) of `evaluation.by`'s accuracy per value (eval/accuracy/<column>=<value>, greedy
    too), in the order the evaluator logged them."""
    keys = dict.fromkeys(k for row in evals for k in row if k.startswith(PER_VALUE_PREFIXES))
    return [(f"{'greedy accuracy' if k.startswith('eval/greedy') else 'accuracy'}, {k.split('/', 2)[2]}", k)
            for k in keys]


def _training_table(train: list[dict]) -> list[str]:
    if not train:
        return ["No training steps logged."]
    if len(train) == 1:
        table = [f"| metric | {_span(train)} |", "|---|---:|"]
        table += [f"| {label} | {fmt(key, train[0][key])} |" for label, key in TRAIN_TABLE if numeric(train[0].get(key))]
        return table
    n = edge_window(len(train))
    head, tail = train[:n], train[-n:]
    table = [f"| metric | {_span(head)} | {_span(tail)} | change |", "|---|---:|---:|---:|"]
    for label, key in TRAIN_TABLE:
        before, after = _mean(head, key), _mean(tail, key)
        if before is not None or after is not None:
            table.append(f"| {label} | {fmt(key, before)} | {fmt(key, after)} | {change(key, before, after)} |")
    return table


def _span(rows: list[dict], averaged: bool = True) -> str:
    if len(rows) == 1:
        return f"step {rows[0]['step']}"
    return f"steps {rows[0]['step']}–{rows[-1]['step']}" + (" (mean)" if averaged else "")


def _mean(rows: list[dict], key: str) -> float | None:
    values = [row[key] for row in rows if numeric(row.get(key))]
    return sum(values) / len(values) if values else None


def fmt(key: str, value: Any) -> str:
    """Lengths to 1 decimal, everything else (rates, rewards) to 3; a dash for a missing value."""
    if not numeric(value):
        return "–"
    return f"{value:.1f}" if "len" in key else f"{value:.3f}"


def change(key: str, before: Any, after: Any) -> str:
    if not (numeric(before) and numeric(after)):
        return "–"
    return ("+" if after >= before else "-") + fmt(key, abs(after - before))


def _reflection(samples: list[dict]) -> list[str]:
    if not samples:
        return ["No samples.jsonl entries: nothing to count."]
    steps = sorted({s.get("step", 0) for s in samples})
    n = edge_window(len(steps))
    lines = [f"Share of logged completions with a whole word among {', '.join(REFLECTIVE_WORDS)} (any case):", ""]
    windows = [("start", steps[:n]), ("end", steps[-n:])] if len(steps) > 1 else [("only logged step", steps)]
    for name, window in windows:
        chosen = [s for s in samples if s.get("step", 0) in window]
        hits = sum(is_reflective(s.get("completion", "")) for s in chosen)
        where = f"step {window[0]}" if len(window) == 1 else f"steps {window[0]}–{window[-1]}"
        lines.append(f"- {name} ({where}): {100 * hits / len(chosen):.1f}% ({hits} of {len(chosen)})")
    return lines


def _examples(samples: list[dict]) -> list[str]:
    if not samples:
        return ["No samples.jsonl entries."]
    steps = sorted({s.get("step", 0) for s in samples})
    first = [s for s in samples if s.get("step", 0) == steps[0]][:2]
    end_steps = set(steps[-edge_window(len(steps)):])
    ending = [s for s in samples if s.get("step", 0) in end_steps and not any(s is shown for shown in first)]
    # Prefer correct answers, then higher reward, then later steps.
    ending.sort(key=lambda s: (bool(sample_correct(s)), s.get("reward") if numeric(s.get("reward")) else -math.inf,
                               s.get("step", 0)), reverse=True)
    lines = [f"### Start of training (step {steps[0]})", ""]
    for sample in first:
        lines += _example(sample)
    if ending:
        lines += ["### End of training", ""]
    for sample in ending[:2]:
        lines += _example(sample)
    return lines[:-1]


def _example(sample: dict) -> list[str]:
    correct = sample_correct(sample)
    verdict = "" if correct is None else ("; correct" if correct else "; not correct")
    scores = ", ".join(f"{name} {value:.3g}" for name, value in (sample.get("rewards") or {}).items() if numeric(value))
    reward = f"reward {sample['reward']:.3f}" if numeric(sample.get("reward")) else "reward –"
    header = f"Step {sample.get('step', 0)}, {reward}" + (f" ({scores})" if scores else "") + verdict + ":"
    question = f"Question: {_shorten(str(sample.get('prompt', '')), 400)}\nExpected answer: {sample.get('answer')}"
    return [header, "", *_fenced(question), "", *_fenced(_shorten(str(sample.get("completion", "")), MAX_EXAMPLE_CHARS)), ""]


def _shorten(text: str, limit: int) -> str:
    """`text` itself, or its head and tail with a marker saying how much was cut."""
    if len(text) <= limit:
        return text
    tail = limit // 4
    head = limit - tail
    return f"{text[:head]}\n[… {len(text) - limit} characters cut …]\n{text[-tail:]}"


def _fenced(text: str) -> list[str]:
    # The fence must be longer than any backtick run inside, or a completion could close it.
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence + "text", text, fence]
