"""Where a GRPO step's time goes, on a real recipe: a sampling profile of the trainer's steps.

    .venv/bin/python benchmarks/profile_step.py recipes/r1_zero_toy.yaml --set training.steps=4 evaluation.every=0

The trainer runs in a child process under py-spy (`pip install -e ".[bench]"`), which samples the
Python stack of every thread `--rate` times a second, idle waits included, so the samples of the
main thread add up to its wall time. The first `--warmup` steps (vLLM's first batches, the
optimiser's state being allocated, the weight-sync plan being recorded) are left out: only samples
taken inside `profiled_steps` count, the remaining `training.steps - warmup` steps. Each sample is
put in one phase of the step (generate, score, reference, learn, sync, engine sleep/wake, other:
the phase of the outermost frame that names one) and one part of that phase (by the first rule of
PART_FRAMES that one of its frames matches: vLLM's scheduler, sampler, attention, linear layers,
logits; the learner's forward, output layer, backward, optimiser). The table also shows the trainer's own
timings (`time/*` metrics) of the same steps, a check on the sampling.

py-spy sees Python frames only: time in a C++ operator counts for the Python line that called
it, which is what the parts are made of. With `--op-table`, one more step runs afterwards under
`torch.profiler` (not sampled, and slower for the profiler's own cost) and its operator table
(self CPU time) is printed: which kernels the forward passes spend it in.

Deliberate simplifications: the parts are recognised by file and function names of the vLLM and
torch versions pinned here (0.32, 2.13); a frame nobody named lands in the phase's "other" part,
which the table shows, so a version that moved code shows up as a large "other".
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROFILED_FRAME = "profiled_steps"

# Phases, by the outermost frame naming one: (phase, function name, file path fragment).
PHASE_FRAMES = [
    ("generate", "generate", "r1train/engines/"),
    ("generate", "generate_many", "r1train/engines/"),
    ("score", "score", "r1train/scoring.py"),
    ("reference", "compute_logprobs", "r1train/learner.py"),
    ("learn", "train_on_batch", "r1train/learner.py"),
    ("sync", "sync_weights", "r1train/engines/"),
    ("engine sleep/wake", "sleep", "r1train/engines/vllm_engine.py"),
    ("engine sleep/wake", "wake_up", "r1train/engines/vllm_engine.py"),
]

# Parts of a phase: (part, function name or None for any, file path fragment). The first rule, in
# list order, that any frame of the sample matches decides: a matmul under vLLM's logits processor
# is logits, not a linear layer; a frame of the learner's hand-written output-layer backward is
# that, not the rest of autograd's backward.
PART_FRAMES = {
    "generate": [
        ("logits (output layer)", None, "logits_processor"),
        ("logits (output layer)", "compute_logits", ""),
        ("sampler (incl. logprobs)", None, "vllm/v1/sample/"),
        ("attention (incl. KV cache writes)", None, "attention"),
        ("linear layers (oneDNN matmuls)", "cpu_unquantized_gemm", ""),
        ("RMS norms", None, "layernorm"),
        ("SiLU and multiply (MLP activation)", None, "layers/activation.py"),
        ("rotary embedding", None, "rotary"),
        ("model forward, rest", None, "vllm/model_executor/"),
        ("model runner: inputs, outputs", None, "vllm/v1/worker/"),
        ("scheduler and KV block manager", None, "vllm/v1/core/"),
        ("output processing, detokenising", None, "vllm/v1/engine/output_processor"),
        ("output processing, detokenising", None, "detokenizer"),
        ("output processing, detokenising", None, "vllm/v1/engine/logprobs"),
        ("r1train: completions from vLLM's outputs", "_completions", "r1train/engines/"),
        ("wake-up: KV cache regrown, zeroed", "wake_up", "r1train/engines/"),
        ("vLLM engine loop, other", None, "vllm/"),
    ],
    "learn": [
        ("optimiser step (AdamW)", None, "torch/optim/"),
        ("gradient clipping", "_clip_gradients", "r1train/learner.py"),
        ("output layer backward (fused_head)", "backward", "r1train/fused_head.py"),
        ("backward, model", None, "torch/autograd/"),
        ("backward, model", "backward", "torch/_tensor.py"),
        ("output layer forward (fused_head)", None, "r1train/fused_head.py"),
        ("forward, model", None, "transformers/"),
        ("batch planning and packing", None, "r1train/packing.py"),
        ("batch planning and packing", None, "r1train/batching.py"),
        ("loss", None, "r1train/policy_loss.py"),
    ],
    "sync": [
        ("re-packing linear layers (oneDNN)", "process_weights_after_loading", ""),
        ("copies into the engine", "push", "r1train/engines/direct_sync.py"),
        ("vLLM loaders (first sync or fallback)", "reload_weights", ""),
        ("prefix cache reset", "reset_prefix_cache", ""),
        ("wake-up: KV cache regrown, zeroed", "wake_up", "r1train/engines/"),
    ],
    "engine sleep/wake": [
        ("heap trimmed (malloc_trim)", "return_free_memory", ""),
        ("KV cache released", "sleep", "r1train/engines/"),
    ],
    "score": [
        ("rewards", None, "rewards/"),
    ],
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("recipe", nargs="?", default=str(ROOT / "recipes" / "r1_zero_toy.yaml"))
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="recipe overrides, as `r1train run --set` takes them")
    p.add_argument("--warmup", type=int, default=1, help="steps run first and left out of the profile")
    p.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    p.add_argument("--op-table", action="store_true", help="one more step under torch.profiler: its operator table")
    p.add_argument("--work-dir", default=str(ROOT / "runs" / "profile_step"))
    p.add_argument("--report-only", action="store_true",
                   help="run nothing: classify again the stacks a previous run left in --work-dir")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args()


# ---------------------------------------------------------------------------------------------
# The child: the trainer's steps, profiled


def run_child(args: argparse.Namespace) -> None:
    from r1train.config import load_recipe
    from r1train.grpo import GRPOTrainer

    work = Path(args.work_dir)
    recipe = load_recipe(args.recipe, [
        *args.overrides, f"output_dir={work}", "run_name=run", "evaluation.at_start=false",
        "evaluation.at_end=false", "logging.tensorboard=false", "logging.progress=false",
    ])
    if recipe.training.steps <= args.warmup:
        raise SystemExit(f"training.steps ({recipe.training.steps}) must exceed --warmup ({args.warmup}): "
                         "the steps after the warm-up are the ones profiled")
    trainer = GRPOTrainer(recipe, recipe.run_dir)
    warm_up(trainer, args.warmup)
    metrics = profiled_steps(trainer, recipe.training.steps - args.warmup)
    (work / "step_metrics.json").write_text(json.dumps(metrics))
    if args.op_table:
        (work / "op_table.txt").write_text(op_table_step(trainer))
    trainer.engine.close()


def warm_up(trainer, steps: int) -> None:
    for _ in range(steps):
        trainer.step()


def profiled_steps(trainer, steps: int) -> list[dict[str, float]]:
    """The steps whose samples count (this function's name marks them in the stacks)."""
    return [trainer.step()[0] for _ in range(steps)]


def op_table_step(trainer) -> str:
    import torch

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        trainer.step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30)


# ---------------------------------------------------------------------------------------------
# The parent: run the child under py-spy, classify the samples


def frame_matches(frame: str, function: str | None, fragment: str) -> bool:
    """`frame` is py-spy's "Class.function (path:line)"; `function` is matched without the class."""
    name, _, where = frame.partition(" (")
    return (function is None or name.rpartition(".")[2] == function) and fragment in where


def classify(frames: list[str]) -> tuple[str, str]:
    """(phase, part) of one sample, its frames outermost first."""
    phase = "other (logging, metrics, sync check)"
    for frame in frames:
        found = next((ph for ph, fn, frag in PHASE_FRAMES if frame_matches(frame, fn, frag)), None)
        if found:
            phase = found
            break
    for part, fn, frag in PART_FRAMES.get(phase, []):
        if any(frame_matches(frame, fn, frag) for frame in frames):
            return phase, part
    return phase, "other"


def read_samples(raw_path: Path) -> Counter:
    """(phase, part) -> samples, from py-spy's raw output (one "frame;frame;... count" per line),
    counting only the samples taken inside the profiled steps."""
    counts: Counter = Counter()
    for line in raw_path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not any(f.startswith(PROFILED_FRAME + " (") for f in frames):
            continue
        counts[classify(frames)] += int(count)
    return counts


def report(counts: Counter, metrics: list[dict[str, float]], rate: int) -> str:
    total = sum(counts.values())
    steps = len(metrics)
    by_phase: dict[str, Counter] = defaultdict(Counter)
    for (phase, part), n in counts.items():
        by_phase[phase][part] += n
    trainer_time = {key: sum(m.get(key, 0.0) for m in metrics) / steps
                    for key in ("time/step", "time/generate", "time/score", "time/reference", "time/learn", "time/wake",
                              "time/sync")}
    lines = [f"{steps} profiled steps, {total} samples at {rate}/s ({total / rate / steps:.2f} s per step sampled; "
             f"the trainer's own time/step: {trainer_time['time/step']:.2f} s)", "",
             "| phase / part | s per step | share of the step | trainer's own timing |", "|---|---:|---:|---:|"]
    for phase, parts in sorted(by_phase.items(), key=lambda kv: -sum(kv[1].values())):
        n = sum(parts.values())
        own = trainer_time.get(f"time/{phase}")
        lines.append(f"| **{phase}** | {n / rate / steps:.3f} | {100 * n / total:.1f}% | "
                     f"{'' if own is None else f'{own:.3f}'} |")
        for part, m in parts.most_common():
            lines.append(f"| &nbsp;&nbsp;{part} | {m / rate / steps:.3f} | {100 * m / total:.1f}% | |")
    tokens = [m.get("throughput/gen_tokens_per_s") for m in metrics]
    lines += ["", "generated tokens/s per step: " + ", ".join(f"{t:.0f}" for t in tokens if t),
              "completion length (mean tokens) per step: "
              + ", ".join(f"{m.get('completion_len/mean', 0):.1f}" for m in metrics)]
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    if args.child:
        run_child(args)
        return
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists() and not shutil.which(py_spy):
        print("profile_step.py: py-spy not found; install it with: pip install -e '.[bench]'", file=sys.stderr)
        raise SystemExit(2)
    if not Path(args.recipe).is_file():
        print(f"profile_step.py: recipe not found: {args.recipe}", file=sys.stderr)
        raise SystemExit(2)
    work = Path(args.work_dir)
    raw = work / "stacks.txt"
    if args.report_only:
        print_report(work, args)
        return
    shutil.rmtree(work, ignore_errors=True)  # a leftover run would be resumed, not restarted
    work.mkdir(parents=True)
    child = [sys.executable, __file__, args.recipe, "--warmup", str(args.warmup), "--work-dir", str(work), "--child"]
    if args.overrides:
        child += ["--set", *args.overrides]
    if args.op_table:
        child.append("--op-table")
    (work / "settings.json").write_text(json.dumps({"rate": args.rate}))
    cmd = [py_spy, "record", "--format", "raw", "--idle", "--rate", str(args.rate), "-o", str(raw), "--", *child]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(cmd, env=env)
    if result.returncode or not (work / "step_metrics.json").is_file():
        raise SystemExit(f"profile_step.py: the profiled run failed (exit {result.returncode})")
    print_report(work, args)


def print_report(work: Path, args: argparse.Namespace) -> None:
    raw = work / "stacks.txt"
    metrics = json.loads((work / "step_metrics.json").read_text())
    rate = json.loads((work / "settings.json").read_text())["rate"] if (work / "settings.json").is_file() else args.rate
    print(report(read_samples(raw), metrics, rate))
    if (work / "op_table.txt").is_file():
        print("\nOperator table of one more step (torch.profiler, self CPU time):\n")
        print((work / "op_table.txt").read_text())
    print(f"\nRaw stacks (flamegraph input): {raw}")


if __name__ == "__main__":
    main()
