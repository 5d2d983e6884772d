"""Data parallel against fully sharded (FSDP2) GRPO: memory per process and time per step.

Runs the same recipe twice under `accelerate launch` with the shipped two-process config, once
replicated (DDP) and once with `training.fsdp: true`, one after the other, and prints for each the
median step time and its phases (steps after the first) and the peak resident memory of the
largest process and of the whole process tree. Each process holds its own colocated rollout
engine, as a user's run would.

    .venv/bin/python benchmarks/bench_fsdp.py                       # toy R1-Zero recipe, 4 steps
    .venv/bin/python benchmarks/bench_fsdp.py --steps 6 --set rollout.backend=hf

On a CPU both processes share the machine's cores (gloo collectives, one thread each by
default); on GPUs use recipes/accelerate/fsdp_8gpu.yaml and compare the same way.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import gib, median, run_measured  # noqa: E402

from r1train.tracking import read_metrics  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("time/step", "time/generate", "time/learn", "time/wake", "time/sync")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipe", default=str(ROOT / "recipes" / "r1_zero_toy.yaml"))
    p.add_argument("--config", default=str(ROOT / "recipes" / "accelerate" / "cpu_2proc.yaml"),
                   help="accelerate launch config (default: two CPU processes)")
    p.add_argument("--steps", type=int, default=4, help="GRPO steps per run; the first is not timed")
    p.add_argument("--modes", default="ddp,fsdp", help="comma-separated: ddp, fsdp")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (training.threads)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="extra recipe overrides for both runs")
    p.add_argument("--work-dir", default=str(ROOT / "runs" / "bench_fsdp"))
    return p.parse_args()


def run_mode(args: argparse.Namespace, mode: str) -> dict:
    work = Path(args.work_dir)
    run_dir = work / mode
    if run_dir.exists():
        shutil.rmtree(run_dir)
    overrides = [f"run_name={mode}", f"output_dir={work}", f"training.steps={args.steps}",
                 f"training.fsdp={'true' if mode == 'fsdp' else 'false'}", f"training.threads={args.threads}",
                 f"training.checkpoint_every={args.steps}", "evaluation.at_start=false", "evaluation.at_end=false",
                 "evaluation.every=0", "logging.tensorboard=false", *args.overrides]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", args.config, "-m", "r1train.cli",
           "run", args.recipe] + [item for o in overrides for item in ("--set", o)]
    print(f"=== {mode} ===\n$ {' '.join(cmd)}", flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    measured = run_measured(cmd, env=env)
    if measured.returncode != 0:
        raise SystemExit(f"bench_fsdp: the {mode} run failed (exit {measured.returncode}); see its output above")
    rows = [row for row in read_metrics(run_dir / "metrics.jsonl") if row["step"] > 1]
    result = {phase: median([row.get(phase) for row in rows]) for phase in PHASES}
    result.update(peak_one=gib(measured.max_rss), peak_tree=gib(measured.peak_tree_rss), wall=measured.wall_s)
    return result


def main() -> None:
    args = parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(modes) - {"ddp", "fsdp"}
    if unknown:
        raise SystemExit(f"bench_fsdp: unknown mode(s) {sorted(unknown)}; choose from ddp, fsdp")
    results = {mode: run_mode(args, mode) for mode in modes}
    print(f"\nrecipe {Path(args.recipe).name}, {args.steps} steps (medians of steps 2-{args.steps}), "
          f"launch config {Path(args.config).name}, {args.threads} thread(s) per process, "
          f"{platform.machine()}, {os.cpu_count()} cores; overrides: {args.overrides or 'none'}")
    rows = [(phase.removeprefix("time/") + " (s)", phase) for phase in PHASES]
    rows += [("peak RSS, largest process (GiB)", "peak_one"), ("peak RSS, process tree (GiB)", "peak_tree"),
             ("wall time of the run (s)", "wall")]
    header = f"{'':34}" + "".join(f"{m:>10}" for m in modes)
    ratio = "fsdp" in results and "ddp" in results
    print(header + (f"{'fsdp/ddp':>10}" if ratio else ""))
    for label, key in rows:
        values = [results[m][key] for m in modes]
        line = f"{label:34}" + "".join(f"{v:>10.3g}" if v is not None else f"{'-':>10}" for v in values)
        if ratio and results["ddp"][key]:
            line += f"{results['fsdp'][key] / results['ddp'][key]:>9.2f}x"
        print(line)


if __name__ == "__main__":
    main()
