"""Where a GRPO run's peak memory goes: an account of the peak resident memory (RSS) on a real recipe.

    .venv/bin/python benchmarks/bench_memory.py recipes/r1_zero_toy.yaml --set training.steps=3

The trainer runs in this process (the colocated vLLM engine lives in it too: one process holds
everything) and calls its steps directly. The resident memory is read at phase boundaries: after
the libraries are imported, after the learner's model is loaded, after the engine is built, and
around each step's phases (generate, engine sleep, learn, sync). Each phase's own peak is the
kernel's exact high-water mark (VmHWM), reset before the phase through /proc/self/clear_refs, so
no short spike is missed between samples. Each phase also gets its minor page faults and system
time (getrusage): memory handed back to the OS between phases, or mapped afresh for one large
tensor, is paid there when it is touched again.

The account of the run's peak puts next to those measurements the sizes computed from the model
and the config: fp32 master weights, gradients (the learner's trainable parameters, alive from the
first backward pass until the optimiser step), AdamW's two moments (read from the optimiser's
state), the engine's weights (the learner's parameter count at the engine's dtype, plus the tied
output layer, which vLLM's CPU build packs as a second copy) and its KV cache (the storage under
the cache tensors); neither is in the learn phase's account where the engine frees it in its
sleep. Activations and temporaries are the learn phase's peak above what the phase started with,
less the gradients; what is left of the peak, runtime and allocator overhead (free memory the C
heap keeps, the libraries' own data), is the difference.

Deliberate simplifications: RSS counts the pages touched, so memory reserved but never written
(part of a KV cache a short batch never fills) is not in it; Linux only (/proc).
"""
from __future__ import annotations

import argparse
import json
import re
import resource
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_MIB = 1024**2
_GIB = 1024**3


# The functions `r1train.grpo` builds its trainer with, measured around: name -> (label before, label after).
SETUP_PHASES = {
    "load_model": ("before the learner's model", "learner's model loaded (fp32)"),
    "engine_from_recipe": ("before the engine", "engine built (weights, KV cache)"),
}


def memory_status() -> dict[str, int]:
    """This process's resident memory now (VmRSS) and its high-water mark (VmHWM), in bytes."""
    text = Path("/proc/self/status").read_text()
    return {key: int(re.search(rf"^{key}:\s+(\d+) kB", text, re.M).group(1)) * 1024 for key in ("VmRSS", "VmHWM")}


def reset_peak() -> None:
    """Start a new high-water mark at the current RSS (Linux: `5` into clear_refs)."""
    Path("/proc/self/clear_refs").write_text("5")


class PhaseMeter:
    """Resident memory at phase boundaries and each phase's own peak."""

    def __init__(self):
        self.rows: list[dict] = []

    def point(self, label: str) -> int:
        rss = memory_status()["VmRSS"]
        self.rows.append({"label": label, "rss": rss})
        return rss

    def bracket(self, obj, name: str, before: str, after: str):
        """Take a point labelled `before` and one labelled `after` around every call of `obj.name`;
        returns the original, to be put back."""
        original = getattr(obj, name)

        def measured(*args, **kwargs):
            self.point(before)
            result = original(*args, **kwargs)
            self.point(after)
            return result

        setattr(obj, name, measured)
        return original

    def wrap(self, obj, name: str, label: str, step_of, optimizer_state=None) -> None:
        """Measure every call of `obj.name`: RSS before and after, the peak inside, seconds; with
        `optimizer_state` (a callable giving bytes), also the optimiser state before and after."""
        original = getattr(obj, name)

        def measured(*args, **kwargs):
            state_before = optimizer_state() if optimizer_state else 0
            before = memory_status()["VmRSS"]
            reset_peak()
            usage_before = resource.getrusage(resource.RUSAGE_SELF)
            t0 = time.perf_counter()
            result = original(*args, **kwargs)
            seconds = time.perf_counter() - t0
            usage = resource.getrusage(resource.RUSAGE_SELF)
            status = memory_status()
            self.rows.append({"label": label, "step": step_of(), "before": before, "peak": status["VmHWM"],
                              "after": status["VmRSS"], "seconds": seconds,
                              "page_faults": usage.ru_minflt - usage_before.ru_minflt,
                              "system_seconds": usage.ru_stime - usage_before.ru_stime,
                              "state_created": (optimizer_state() if optimizer_state else 0) - state_before})
            return result

        setattr(obj, name, measured)


def parameter_bytes(model, dtype_size: int | None = None, trainable_only: bool = False) -> int:
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel() * (dtype_size or p.element_size())
    return total


def optimizer_state_bytes(optimizer) -> int:
    return sum(t.nbytes for state in optimizer.state.values() for t in state.values() if hasattr(t, "nbytes"))


def tied_output_layer_bytes(model, dtype_size: int) -> int:
    """The tied output layer, which vLLM's CPU build packs as a second copy of the embedding."""
    if not getattr(model.config, "tie_word_embeddings", False):
        return 0
    return model.get_input_embeddings().weight.numel() * dtype_size


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("recipe", nargs="?", default=str(ROOT / "recipes" / "r1_zero_toy.yaml"))
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="recipe overrides, as `r1train run --set` takes them (training.steps: steps run)")
    p.add_argument("--work-dir", default=str(ROOT / "runs" / "bench_memory"))
    p.add_argument("--json", help="also write the measurements and the account to this file")
    p.add_argument("--report-from", metavar="JSON", help="run nothing: print the report a previous --json holds")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    if args.report_from:
        saved = json.loads(Path(args.report_from).read_text())
        print_report(saved["header"], saved["rows"], saved["account"])
        return
    if not Path(args.recipe).is_file():
        print(f"bench_memory.py: recipe not found: {args.recipe}", file=sys.stderr)
        raise SystemExit(2)
    meter = PhaseMeter()
    meter.point("interpreter")
    import torch  # noqa: F401
    import transformers  # noqa: F401

    from r1train import grpo
    from r1train.config import load_recipe

    work = Path(args.work_dir)
    shutil.rmtree(work, ignore_errors=True)  # a leftover run would be resumed, not restarted
    recipe = load_recipe(args.recipe, [
        *args.overrides, f"output_dir={work}", "run_name=run", "evaluation.at_start=false",
        "evaluation.at_end=false", "evaluation.every=0", "logging.tensorboard=false", "logging.progress=false",
    ])
    if recipe.rollout.backend == "vllm":
        from r1train.engines.vllm_engine import import_vllm

        import_vllm()
    runtime = meter.point("libraries imported (torch, transformers, vllm)")

    # Instrument the trainer's construction: RSS around the learner's model and the engine.
    originals = {name: meter.bracket(grpo, name, before, after) for name, (before, after) in SETUP_PHASES.items()}
    reset_peak()
    trainer = grpo.GRPOTrainer(recipe, recipe.run_dir)
    for name, original in originals.items():
        setattr(grpo, name, original)
    setup_peak = memory_status()["VmHWM"]
    meter.point("trainer ready")

    current = {"step": 0}
    step_of = lambda: current["step"]  # noqa: E731 (the step being taken; step_count moves before the sync)
    for name, label in (("generate", "generate"), ("sleep", "engine sleep"), ("sync_weights", "sync")):
        if hasattr(trainer.engine, name):
            meter.wrap(trainer.engine, name, label, step_of)
    meter.wrap(trainer.learner, "train_on_batch", "learn", step_of,
               optimizer_state=lambda: optimizer_state_bytes(trainer.learner.optimizer))
    step_metrics = []
    for step in range(1, recipe.training.steps + 1):
        current["step"] = step
        step_metrics.append(trainer.step()[0])
        meter.point(f"after step {trainer.step_count}")

    engine_sleeps = bool(getattr(trainer.engine, "sleep_mode", False)) and not recipe.rollout.async_generation
    weights_freed = engine_sleeps and bool(getattr(trainer.engine, "frees_stale_weights", False))
    account = build_account(meter.rows, computed_sizes(trainer), runtime, engine_sleeps, weights_freed)
    account["setup_peak"] = setup_peak
    header = describe_run(recipe, trainer.learner.micro_batch_tokens, step_metrics)
    print_report(header, meter.rows, account)
    if args.json:
        Path(args.json).write_text(json.dumps({"header": header, "rows": meter.rows, "account": account}, indent=1))
    trainer.engine.close()


def computed_sizes(trainer) -> dict[str, int]:
    """The sizes that follow from the model and the config, in bytes."""
    model, engine = trainer.learner.model, trainer.engine
    engine_dtype = getattr(engine, "dtype", None)
    engine_size = torch_size(engine_dtype) if engine_dtype is not None else 0
    return {
        "fp32 master weights": parameter_bytes(model),
        "AdamW state (two moments)": optimizer_state_bytes(trainer.learner.optimizer),
        "gradients (fp32, during the learn phase)": parameter_bytes(model, trainable_only=True),
        "engine weights": (parameter_bytes(model, engine_size) + tied_output_layer_bytes(model, engine_size)
                           if engine_size else 0),
        "engine KV cache (reserved)": (sum(s.nbytes() for s in engine._kv_cache_storages())
                                       if hasattr(engine, "_kv_cache_storages") else 0),
    }


def build_account(rows: list[dict], computed: dict[str, int], runtime: int, engine_sleeps: bool,
                  engine_weights_freed: bool = False) -> dict:
    """The largest learn phase's peak, part by part, and where the run's peak was.

    The learn phase is where the memory is in use: the engine has released its KV cache (when it
    sleeps), the gradients and activations exist. Other phases can reach as high only through
    memory the learner freed and the C heap kept (measured as `held_after_learn`).

    The first update creates AdamW's state inside its learn phase, after the backward passes: its
    peak is either the activations' or the new state's, which RSS cannot tell apart. So the account
    takes the largest learn phase that found the state already there, and only when every learn
    phase created state (a run with one update) gives that phase's rise as one figure.
    """
    phases = [r for r in rows if "peak" in r]
    learns = [r for r in phases if r["label"] == "learn"]
    settled = [r for r in learns if not r.get("state_created")]
    learn = max(settled or learns, key=lambda r: r["peak"])
    largest = max(learns, key=lambda r: r["peak"])
    created = learn.get("state_created", 0)
    run_peak = max(phases, key=lambda r: r["peak"])
    gradients = computed["gradients (fp32, during the learn phase)"]
    parts = {"runtime: interpreter and libraries (measured at import)": runtime,
             "fp32 master weights": computed["fp32 master weights"],
             "AdamW state (two moments)": computed["AdamW state (two moments)"] - created}
    if not engine_weights_freed:  # else freed by the engine's sleep, rebuilt by the push after the update
        parts["engine weights"] = computed["engine weights"]
    if not engine_sleeps:
        parts["engine KV cache (reserved)"] = computed["engine KV cache (reserved)"]
    parts["gradients (fp32, during the learn phase)"] = gradients
    rise = ("activations and temporaries (learn peak - learn start - gradients)" if not created else
            "activations, temporaries, or the AdamW state this first update created (one figure)")
    parts[rise] = learn["peak"] - learn["before"] - gradients
    parts["rest: vLLM's runtime objects, data, allocator overhead (difference)"] = learn["peak"] - sum(parts.values())
    return {
        "learn_peak": learn["peak"], "learn_step": learn["step"], "parts": parts,
        "largest_learn": {"peak": largest["peak"], "step": largest["step"]},
        "run_peak": run_peak["peak"], "run_peak_phase": f"{run_peak['label']} of step {run_peak['step']}",
        "held_after_learn": [r["after"] - r["before"] for r in phases if r["label"] == "learn"],
        "learn_start": [r["before"] for r in phases if r["label"] == "learn"],
        "computed": computed, "engine_sleeps": engine_sleeps, "engine_weights_freed": engine_weights_freed,
    }


def torch_size(dtype) -> int:
    import torch

    return torch.empty((), dtype=dtype).element_size()


def describe_run(recipe, micro_batch_tokens: int, step_metrics: list[dict]) -> str:
    r, t = recipe.rollout, recipe.training
    seconds = ", ".join(f"{m['time/step']:.1f}" for m in step_metrics)
    lengths = ", ".join(f"{m['completion_len/mean']:.1f}" for m in step_metrics)
    return (f"{r.prompts_per_step} prompts x {r.group_size} samples, up to {r.max_new_tokens} new tokens, backend "
            f"{r.backend}, micro_batch_tokens {micro_batch_tokens}, gradient checkpointing "
            f"{recipe.model.gradient_checkpointing}, cpu_low_memory {t.cpu_low_memory}, optimizer_state_dtype "
            f"{t.optimizer_state_dtype}\ntime per step (s): {seconds}; mean completion length (tokens): {lengths}")


def print_fault_totals(rows: list[dict]) -> None:
    """Each phase's minor page faults and system time summed over the steps: what fresh memory
    (pages the process had given back, or never had) costs where it is touched again."""
    if not rows:
        return
    print("\nPage faults and system time by phase, all steps:")
    for label in dict.fromkeys(row["label"] for row in rows):
        mine = [row for row in rows if row["label"] == label]
        faults, system = sum(r["page_faults"] for r in mine), sum(r["system_seconds"] for r in mine)
        seconds = sum(r["seconds"] for r in mine)
        print(f"  {label:<14} {faults / 1000:8.0f}k faults ({faults * 4096 / _GIB:5.1f} GiB of 4 KiB pages), "
              f"{system:6.2f} s system of {seconds:7.2f} s")


def print_report(header: str, rows: list[dict], account: dict) -> None:
    print(header)
    print("\nResident memory at phase boundaries (MiB):")
    for row in rows:
        if "peak" in row:
            faults = (f", {row['page_faults'] / 1000:.0f}k page faults, {row['system_seconds']:.2f} s system"
                      if "page_faults" in row else "")  # not in results saved before they were measured
            print(f"  step {row['step']} {row['label']:<14} before {row['before'] / _MIB:7.0f}  peak {row['peak'] / _MIB:7.0f}"
                  f"  after {row['after'] / _MIB:7.0f}  ({row['seconds']:.2f} s{faults})")
        else:
            print(f"  {row['label']:<50} {row['rss'] / _MIB:7.0f}")
    print_fault_totals([row for row in rows if "page_faults" in row])
    print("\nComputed from the model and the config (MiB):")
    for name, value in account["computed"].items():
        print(f"  {name:<50} {value / _MIB:7.0f}")
    peak = account["learn_peak"]
    largest = account.get("largest_learn", {"peak": peak, "step": account["learn_step"]})
    which = ("the largest learn-phase peak" if largest["step"] == account["learn_step"] else
             f"the largest learn-phase peak with AdamW's state already there (of all: "
             f"{largest['peak'] / _GIB:.2f} GiB in step {largest['step']}, the first update)")
    print(f"\nAccount of {which}, {peak / _GIB:.2f} GiB (step {account['learn_step']})"
          f"{', KV cache released' if account['engine_sleeps'] else ''}"
          f"{', engine weights freed' if account.get('engine_weights_freed') else ''}:")
    for name, value in account["parts"].items():
        print(f"  {name:<72} {value / _MIB:7.0f} MiB  {100 * value / peak:5.1f}%")
    setup = f"{account['setup_peak'] / _GIB:.2f} GiB" if account.get("setup_peak") else "not recorded"
    print(f"\nPeak of the run: {account['run_peak'] / _GIB:.2f} GiB, during {account['run_peak_phase']} (setup: {setup})")
    print("Learn phase start per step (MiB): " + ", ".join(f"{b / _MIB:.0f}" for b in account["learn_start"]))
    print("Held after the learn phase, above its start, until the next trim (MiB): "
          + ", ".join(f"{h / _MIB:.0f}" for h in account["held_after_learn"]))

if __name__ == "__main__":
    main()
