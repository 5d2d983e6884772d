"""Policy-loss, baseline and aggregation variants on one task, one budget: which of them matter here?

Trains the toy R1-Zero recipe (`recipes/r1_zero_toy.yaml`) once per variant and seed, each run in
its own child process (`r1train run ... --fresh`), every run with the same step budget, then prints
a table and plots one PNG of held-out accuracy, held-out format rate, entropy and time per step.

    .venv/bin/python benchmarks/compare_variants.py                         # 6 variants x 2 seeds x 40 steps
    .venv/bin/python benchmarks/compare_variants.py --steps 2 --seeds 1 --variants gspo --eval-examples 8
    .venv/bin/python benchmarks/compare_variants.py --plot-only --out runs/compare_variants

On a shared machine, `--lock /tmp/r1train-heavy.lock` takes that lock (flock(2), the same lock
as the flock command's) around each group of `--runs-per-lock` runs (default 1), so other jobs get
the machine between groups, and `--reuse` makes a stopped comparison resume: runs whose metrics already reach `--steps` with a held-out score are not trained again.
Each run's weights are deleted once it ends (`--keep-weights` keeps them); its metrics stay in
`--out` and all runs' rows are copied to `--results` beside the table and the plot.

Every variant runs with `--mini-batches` optimiser steps per batch (default 2): with one step per
batch the policy ratio is 1 in value on every token, no clip ever fires, and GSPO, CISPO and the
default differ only by their aggregation. Two mini-batches make the second step's ratio move off 1,
as it does in any PPO-style run that takes several steps per batch. The extra cost is one no-grad
forward pass per batch (the old log-probs), the same for every variant.

Deliberate simplifications: held-out scores are measured at the end (and every `--eval-every`
steps), with the recipe's evaluation settings unless `--eval-examples` lowers the count; the base
model is scored once, at step 0 of the first run, with `--eval-base` (every run with `--eval-at-start`). Seeds change the prompt
order and the samples; they do not change the initial weights (the same pretrained model).
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import shlex
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Each variant: recipe overrides on top of the toy recipe. Values follow each paper's own setting
# where it gives one (GSPO's clip range and per-sequence mean; RLOO and Dr. GRPO without std scaling).
VARIANTS: dict[str, dict[str, object]] = {
    "default": {},  # the recipe as it is: PPO clip per token, group std, token mean, token TIS at 2
    "gspo": {"algorithm.policy_loss": "gspo", "algorithm.epsilon_low": 3e-4, "algorithm.epsilon_high": 4e-4,
             "algorithm.loss_aggregation": "sequence_mean"},
    # MiniMax-M1 bounds the weight from above only; epsilon_low just under 1 leaves it nearly unbounded
    # below. The upper bound 1 + 4.0 is this benchmark's choice, not a value from the paper.
    "cispo": {"algorithm.policy_loss": "cispo", "algorithm.epsilon_low": 0.99, "algorithm.epsilon_high": 4.0},
    "seq_mask_is": {"algorithm.tis_mode": "sequence_mask", "algorithm.tis_cap": 2.0},
    "rloo": {"algorithm.advantage_baseline": "leave_one_out", "algorithm.advantage_scaling": "none"},
    "dr_grpo": {"algorithm.advantage_scaling": "none", "algorithm.loss_aggregation": "sum_over_max_len"},
}
COLUMNS = (("eval/accuracy", "held-out accuracy"), ("eval/format_rate", "held-out format rate"),
           ("entropy", "entropy (last steps)"), ("time/step", "seconds per step"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipe", default=str(ROOT / "recipes" / "r1_zero_toy.yaml"))
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from: {', '.join(VARIANTS)}")
    p.add_argument("--seeds", type=int, default=2, help="seeds 0..N-1 per variant")
    p.add_argument("--steps", type=int, default=40, help="training steps of every run")
    p.add_argument("--mini-batches", type=int, default=2, help="optimiser steps per batch, every variant")
    p.add_argument("--eval-every", type=int, default=0, help="held-out evaluation every N steps (0: at the end)")
    p.add_argument("--eval-examples", type=int, default=None, help="held-out questions (default: the recipe's)")
    p.add_argument("--eval-at-start", action="store_true", help="also score the base model in every run")
    p.add_argument("--eval-base", action="store_true",
                   help="score the base model once, at step 0 of the first run (a row of its own in the table)")
    p.add_argument("--last", type=int, default=10, help="training steps averaged for entropy")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra recipe override for every run, e.g. --set rollout.backend=hf")
    p.add_argument("--out", default=str(ROOT / "runs" / "compare_variants"), help="folder for the runs")
    p.add_argument("--results", default=None,
                   help="folder for the table, the plot and every run's metrics (default: --out)")
    p.add_argument("--reuse", action="store_true", help="skip runs whose metrics already reach --steps")
    p.add_argument("--lock", default=None, metavar="PATH",
                   help="hold this lock file (flock) during each group of runs, e.g. /tmp/r1train-heavy.lock")
    p.add_argument("--runs-per-lock", type=int, default=1, help="runs trained in one holding of --lock")
    p.add_argument("--keep-weights", action="store_true",
                   help="keep each run's final model and checkpoint (deleted by default: about 2 GB per run)")
    p.add_argument("--plot-only", action="store_true", help="train nothing: summarise the runs already in --out")
    args = p.parse_args(argv)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown or not args.variants:
        p.error(f"--variants: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(VARIANTS)}")
    for name, value in (("--steps", args.steps), ("--seeds", args.seeds), ("--mini-batches", args.mini_batches),
                        ("--last", args.last), ("--runs-per-lock", args.runs_per_lock)):
        if value < 1:
            p.error(f"{name} must be at least 1, got {value}")
    if not Path(args.recipe).is_file():
        p.error(f"--recipe: file not found: {args.recipe}")
    args.results = args.results or args.out
    return args


def run_name(variant: str, seed: int) -> str:
    return f"{variant}-seed{seed}"


def scores_base(args: argparse.Namespace, variant: str, seed: int) -> bool:
    """Whether this run scores the base model at step 0: every run, or the first one with --eval-base."""
    return args.eval_at_start or (args.eval_base and (variant, seed) == (args.variants[0], 0))


def overrides(args: argparse.Namespace, variant: str, seed: int) -> list[str]:
    common = {
        "seed": seed, "run_name": run_name(variant, seed), "output_dir": str(Path(args.out).resolve()),
        "training.steps": args.steps, "algorithm.mini_batches": args.mini_batches,
        "evaluation.every": args.eval_every, "evaluation.at_start": str(scores_base(args, variant, seed)).lower(),
        "evaluation.at_end": "true", "training.checkpoint_every": args.steps, "logging.progress": "false",
    }
    if args.eval_examples is not None:
        common["evaluation.max_examples"] = args.eval_examples
    return [f"{k}={v}" for k, v in {**common, **VARIANTS[variant]}.items()] + list(args.set)


def train(args: argparse.Namespace, variant: str, seed: int) -> None:
    command = [sys.executable, "-m", "r1train.cli", "run", args.recipe, "--fresh"]
    for item in overrides(args, variant, seed):
        command += ["--set", item]
    print("$", shlex.join(command), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)
    if not args.keep_weights:  # the comparison reads metrics only; 12 runs' weights would fill the disk
        for folder in ("model", "checkpoints"):
            shutil.rmtree(Path(args.out).resolve() / run_name(variant, seed) / folder, ignore_errors=True)


@contextlib.contextmanager
def held(lock_path: str | None):
    """Hold an exclusive flock on lock_path (nothing without one) while the block runs."""
    if not lock_path:
        yield
        return
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # waits for other holders; released on close, also on a crash
        yield


def read_rows(run_dir: Path) -> list[dict]:
    from r1train.tracking import read_metrics

    path = run_dir / "metrics.jsonl"
    return read_metrics(path) if path.is_file() else []


def finished(rows: list[dict], steps: int) -> bool:
    return any(r["step"] == steps and "eval/accuracy" in r for r in rows)


def summarise(rows: list[dict], last: int) -> dict[str, float | None]:
    """One run's figures: its last held-out scores, entropy over its last steps, median s/step."""
    train_rows = [r for r in rows if "reward/mean" in r]
    evals = [r for r in rows if "eval/accuracy" in r and r["step"] > 0]
    entropy = [r["entropy"] for r in train_rows[-last:] if r.get("entropy") is not None]
    times = [r["time/step"] for r in train_rows if r.get("time/step") is not None]
    return {
        "eval/accuracy": evals[-1]["eval/accuracy"] if evals else None,
        "eval/format_rate": evals[-1].get("eval/format_rate") if evals else None,
        "entropy": statistics.fmean(entropy) if entropy else None,
        "time/step": statistics.median(times) if times else None,
    }


def base_scores(runs: dict[str, list[list[dict]]]) -> list[dict[str, float | None]]:
    """The base model's held-out scores: each step-0 evaluation found in the runs."""
    return [{"eval/accuracy": r["eval/accuracy"], "eval/format_rate": r.get("eval/format_rate"),
             "entropy": None, "time/step": None}
            for seeds in runs.values() for rows in seeds for r in rows if r["step"] == 0 and "eval/accuracy" in r]


def cell(values: list[float]) -> str:
    return f"{statistics.fmean(values):.3f} ({', '.join(f'{v:.3f}' for v in values)})" if values else "-"


def table(results: dict[str, list[dict]], steps: int, base: list[dict] | None = None) -> str:
    """Markdown: per variant, the mean over seeds and each seed's value; the base model first if scored."""
    header = "| variant | seeds | " + " | ".join(title for _, title in COLUMNS) + " |"
    lines = [f"Each run {steps} steps; cells: mean over seeds (each seed's value).", "", header,
             "|" + "---|" * (len(COLUMNS) + 2)]
    if base:
        lines.append("| base model (step 0) | - | " + " | ".join(
            cell([b[key] for b in base if b[key] is not None]) for key, _ in COLUMNS) + " |")
    for variant, per_seed in results.items():
        cells = [cell([s[key] for s in per_seed if s[key] is not None]) for key, _ in COLUMNS]
        lines.append(f"| {variant} | {len(per_seed)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


CURVES = (("format_rate", "training format rate"), ("accuracy", "training accuracy"),
          ("entropy", "entropy (nats/token)"), ("time/step", "seconds per step"))


def plot(runs: dict[str, list[list[dict]]], results: dict[str, list[dict]], base: list[dict], path: Path) -> None:
    """Top row: per variant, the mean over seeds (bar) and each seed (dots) of the table's columns,
    the base model as a dashed line. Bottom row: the training curves, seed mean per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(COLUMNS), figsize=(4.4 * len(COLUMNS), 7.4))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    names = list(results)
    for ax, (key, title) in zip(axes[0], COLUMNS):
        for index, variant in enumerate(names):
            values = [s[key] for s in results[variant] if s[key] is not None]
            if not values:
                continue
            colour = colours[index % len(colours)]
            ax.bar(index, statistics.fmean(values), color=colour, alpha=0.45, width=0.7)
            ax.scatter([index] * len(values), values, color=colour, edgecolor="black", zorder=3, s=22)
        base_values = [b[key] for b in base if b[key] is not None]
        if base_values:
            ax.axhline(statistics.fmean(base_values), color="grey", linestyle="--", linewidth=1, label="base model")
            ax.legend(fontsize=8)
        ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
        ax.set_title(title + " (bar: mean, dots: seeds)", fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    for ax, (key, title) in zip(axes[1], CURVES):
        for index, variant in enumerate(names):
            by_step: dict[int, list[float]] = {}
            for rows in runs[variant]:
                for r in rows:
                    if "reward/mean" in r and r.get(key) is not None:
                        by_step.setdefault(r["step"], []).append(r[key])
            steps = sorted(by_step)
            ax.plot(steps, [statistics.fmean(by_step[s]) for s in steps], color=colours[index % len(colours)],
                    linewidth=1.4, label=variant)
        ax.set_title(title + " (mean over seeds)", fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[1][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_results(args: argparse.Namespace, runs: dict[str, list[list[dict]]], text: str, argv: list[str]) -> Path:
    """The table (with the command that made it), the plot and every run's metrics rows, in --results."""
    results_dir = Path(args.results).resolve()
    results_dir.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["benchmarks/compare_variants.py", *argv])
    (results_dir / "compare_variants.md").write_text(f"Command: `{command}`\n\n{text}\n")
    with open(results_dir / "compare_variants_metrics.jsonl", "w") as f:
        for variant, seeds in runs.items():
            for rows in seeds:
                for r in rows:
                    f.write(json.dumps({"variant": variant, **r}) + "\n")
    return results_dir


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    out = Path(args.out).resolve()
    if not args.plot_only:
        # Seed-major: a stopped comparison still has every variant once.
        pending = [(v, s) for s in range(args.seeds) for v in args.variants
                   if not (args.reuse and finished(read_rows(out / run_name(v, s)), args.steps))]
        for start in range(0, len(pending), args.runs_per_lock):
            with held(args.lock):
                for variant, seed in pending[start:start + args.runs_per_lock]:
                    train(args, variant, seed)
    runs = {v: [read_rows(out / run_name(v, s)) for s in range(args.seeds)] for v in args.variants}
    unfinished = [run_name(v, s) for v, seeds in runs.items() for s, rows in enumerate(seeds)
                  if not finished(rows, args.steps)]
    if unfinished:  # a run cut short or still training has no final score: summarising it would mislead
        print(f"compare_variants: left out, not finished at step {args.steps}: {', '.join(unfinished)}")
    runs = {v: [rows for rows in seeds if finished(rows, args.steps)] for v, seeds in runs.items()}
    runs = {v: seeds for v, seeds in runs.items() if seeds}
    if not runs:
        print(f"compare_variants: no finished runs in {out}; run without --plot-only first", file=sys.stderr)
        raise SystemExit(2)
    results = {v: [summarise(rows, args.last) for rows in seeds] for v, seeds in runs.items()}
    base = base_scores(runs)
    text = table(results, args.steps, base)
    results_dir = write_results(args, runs, text, argv)
    plot(runs, results, base, results_dir / "compare_variants.png")
    print(text)
    print(f"table: {results_dir / 'compare_variants.md'}\nplot: {results_dir / 'compare_variants.png'}")


if __name__ == "__main__":
    main()
