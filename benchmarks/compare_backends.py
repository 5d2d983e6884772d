"""The same GRPO recipe trained with the HF backend and with vLLM: do the curves agree, and at what speed?

vLLM samples with bf16 weights and its own kernels, HF `generate` with the learner's own model, so
the two backends draw different samples from (nearly) the same policy; a trainer whose vLLM path
were subtly off-policy (a missed weight sync, a wrong log-prob) would show it here as a reward
curve that falls behind the HF one. Each backend trains the recipe for `--steps` steps in its own
child process, one after the other; the script then plots reward, training accuracy, completion
length and time per step of both runs into one PNG and prints a table of windowed means.

    .venv/bin/python benchmarks/compare_backends.py                      # r1_zero_toy, 30 steps
    .venv/bin/python benchmarks/compare_backends.py --steps 10 --out runs/compare_backends

Deliberate simplification: each backend's run is one seed, so read the curves for agreement within
noise, not for a winner.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CURVES = (("reward/mean", "reward"), ("accuracy", "training accuracy"),
          ("completion_len/mean", "completion length (tokens)"), ("time/step", "seconds per step"))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipe", default=str(ROOT / "recipes" / "r1_zero_toy.yaml"))
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--backends", default="vllm,hf", help="comma-separated rollout backends")
    p.add_argument("--out", default=str(ROOT / "runs" / "compare_backends"), help="folder for the runs and the plot")
    p.add_argument("--window", type=int, default=10, help="steps per row of the printed table")
    p.add_argument("--plot-only", action="store_true", help="train nothing: plot the runs already in --out")
    return p.parse_args()


def train(recipe: str, backend: str, steps: int, out: Path) -> Path:
    """Run the recipe with one backend (a fresh run each time); returns its run folder."""
    overrides = [f"rollout.backend={backend}", f"training.steps={steps}", f"run_name={backend}",
                 f"output_dir={out}", "evaluation.every=0", "evaluation.at_start=false"]
    command = [sys.executable, "-m", "r1train.cli", "run", recipe, "--fresh"]
    for item in overrides:
        command += ["--set", item]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)
    return out / backend


def read_rows(run_dir: Path) -> list[dict]:
    """The training steps' rows of a run's metrics log (a start-of-run evaluation row has no reward)."""
    from r1train.tracking import read_metrics

    return [r for r in read_metrics(run_dir / "metrics.jsonl") if "reward/mean" in r]


def plot(runs: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(CURVES), figsize=(4.2 * len(CURVES), 3.4))
    for ax, (key, title) in zip(axes, CURVES):
        for backend, rows in runs.items():
            points = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
            ax.plot([s for s, _ in points], [v for _, v in points], label=backend, linewidth=1.4)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(runs: dict[str, list[dict]], window: int) -> str:
    backends = list(runs)
    steps = max(len(rows) for rows in runs.values())
    header = f"{'steps':>9}" + "".join(f"{b + ' ' + short:>18}" for b in backends
                                       for short in ("reward", "acc", "len", "s/step"))
    lines = [header]
    for start in range(0, steps, window):
        cells = []
        for backend in backends:
            chunk = runs[backend][start:start + window]
            for key, _ in CURVES:
                values = [r[key] for r in chunk if r.get(key) is not None]
                cells.append(f"{sum(values) / len(values):>18.3f}" if values else f"{'-':>18}")
        lines.append(f"{f'{start + 1}-{start + window}':>9}" + "".join(cells))
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    out = Path(args.out).resolve()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not args.plot_only:
        for backend in backends:
            train(args.recipe, backend, args.steps, out)
    runs = {b: read_rows(out / b) for b in backends}
    path = out / "backends.png"
    plot(runs, path)
    print(table(runs, args.window))
    for backend, rows in runs.items():
        evals = [r for r in rows if "eval/accuracy" in r]
        if evals:
            last = evals[-1]
            print(f"{backend}: held-out accuracy {last['eval/accuracy']:.3f}, format rate "
                  f"{last.get('eval/format_rate', float('nan')):.3f} at step {last['step']}")
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
