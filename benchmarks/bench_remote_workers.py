"""Seconds per GRPO step on the toy R1-Zero recipe: vLLM colocated against 1 and 2 `vllm serve` workers.

    flock /tmp/r1train-heavy.lock .venv/bin/python benchmarks/bench_remote_workers.py [--steps 4]

Each variant runs `r1train run recipes/r1_zero_toy.yaml` for a few steps without evaluation, from a
fresh run folder; the workers are started by the same code as `r1train rollout-workers` (disk weight
sync on CPU) and are up before the run's clock starts. The first step is left out of the means
(it pays for warm-up). On a 2-core machine the workers and the learner share the same two cores,
so this measures the cost of the placement, not a speed-up: workers pay off where they have
hardware of their own. Results go to benchmarks/results/bench_remote_workers.txt.

`--variants` picks among: colocated, 1, 1-native (one worker with vLLM's own RMS norms instead of
the C++ kernels r1train asks for, r1train/engines/cpu_kernels.py), 2; a variant named twice runs
twice. Only the default comparison is written to the results file.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "r1_zero_toy.yaml"
RESULTS = REPO / "benchmarks" / "results" / "bench_remote_workers.txt"
VARIANTS = ("colocated", "1", "1-native", "2")
DEFAULT_VARIANTS = "colocated,1,2"
KEYS = ("time/step", "time/generate", "time/learn", "time/wake", "time/sync")


def run_variant(name: str, steps: int, out_dir: Path, urls: list[str] | None) -> dict[str, float]:
    from r1train.tracking import read_metrics

    overrides = [f"training.steps={steps}", "evaluation.every=0", "evaluation.at_start=false",
                 "evaluation.at_end=false", f"output_dir={out_dir}", f"run_name={name}", "logging.progress=false"]
    if urls:
        overrides += ["rollout.placement=remote", f"rollout.remote_urls={urls}".replace("'", '"'),
                      "rollout.weight_sync=disk"]
    command = [sys.executable, "-m", "r1train.cli", "run", str(RECIPE), "--fresh"]
    for item in overrides:
        command += ["--set", item]
    subprocess.run(command, check=True, cwd=REPO)
    rows = [r for r in read_metrics(out_dir / name / "metrics.jsonl") if r["step"] > 1]
    return {key: statistics.mean(r[key] for r in rows) for key in KEYS}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--variants", default=DEFAULT_VARIANTS, help=f"comma-separated among {', '.join(VARIANTS)}")
    args = parser.parse_args()
    variants = args.variants.split(",")
    if set(variants) - set(VARIANTS):
        parser.error(f"unknown variant(s) {sorted(set(variants) - set(VARIANTS))}; choose from {', '.join(VARIANTS)}")
    from r1train.config import load_recipe
    from r1train.engines.vllm_engine import engine_kv_cache_gib
    from r1train.models import resolve_model_dir
    from r1train.rollout_workers import WorkerPool

    recipe = load_recipe(RECIPE)
    model_dir = str(resolve_model_dir(recipe.model.name))
    max_model_len = recipe.data.max_prompt_tokens + recipe.rollout.max_new_tokens
    # The workers' cache as the colocated engine's (CPU workers: its dtype and block size).
    kv_cache_gib = engine_kv_cache_gib(recipe, model_dir, on_cpu=True)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for index, variant in enumerate(variants):
            run_label = f" (run {variants[:index + 1].count(variant)})" * (variants.count(variant) > 1)
            if variant == "colocated":
                results["colocated vLLM" + run_label] = run_variant("colocated", args.steps, Path(tmp), None)
                continue
            workers, native = int(variant.split("-")[0]), variant.endswith("-native")
            pool = WorkerPool(model_dir, workers, port=18700, max_model_len=max_model_len,
                              kv_cache_gib=kv_cache_gib, log_dir=Path(tmp) / f"logs{variant}",
                              norm_kernels=not native)
            name = f"{workers} remote worker{'s' * (workers > 1)}{', native norms' * native}{run_label}"
            try:
                pool.wait_until_healthy(600)
                results[name] = run_variant(f"remote{variant}", args.steps, Path(tmp), pool.urls)
            finally:
                pool.stop()
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model_name = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")), "?")
    lines = [f"r1_zero_toy, steps 2..{args.steps} (mean seconds), {model_name}, {len(__import__('os').sched_getaffinity(0))} cores",
             f"{'variant':<40}" + "".join(f"{k:>15}" for k in KEYS) + f"{'steps/s':>10}"]
    for name, values in results.items():
        lines.append(f"{name:<40}" + "".join(f"{values[k]:>15.2f}" for k in KEYS) + f"{1 / values['time/step']:>10.3f}")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.variants == DEFAULT_VARIANTS:  # the file holds the default comparison
        RESULTS.write_text(text)


if __name__ == "__main__":
    main()
