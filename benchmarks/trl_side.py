"""The TRL side of `bench_vs_trl.py`: TRL's GRPOTrainer on the shared workload, timed from outside.

TRL has no per-phase breakdown of a step, so `PhaseClock` wraps its methods: generate =
`_generate` (tokenise, sample, decode) minus any vLLM weight sync; sync = the vLLM weight push;
score = `_calculate_rewards`; reference = the no-grad log-prob passes TRL makes while preparing a
batch (the reference model's, and with vLLM the "old" policy's for importance sampling); other =
the rest of TRL's batch preparation (padding, advantages, its own logging); learn = the rest of the
step (forward, backward, clipping, optimiser step). The recipe's settings are mapped onto
`trl.GRPOConfig` one by one; a setting TRL has no equivalent for stops the side.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

from bench_common import workload_model_dir

LOSS_TYPES = {"token_mean": "dapo", "sequence_mean": "grpo", "sum_over_max_len": "dr_grpo"}


class PhaseClock:
    """Accumulates the time spent in wrapped methods, per phase, between two step boundaries."""

    def __init__(self):
        self.current: dict[str, float] = defaultdict(float)
        self.gen_tokens = 0
        self.in_preparation = False
        self.steps: list[dict] = []
        self._step_start = 0.0

    def wrap(self, obj, name: str, phase: str, only_while_preparing: bool = False) -> None:
        original = getattr(obj, name)

        def timed(*args, **kwargs):
            if only_while_preparing and not self.in_preparation:
                return original(*args, **kwargs)
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.current[phase] += time.perf_counter() - t0

        setattr(obj, name, timed)

    def step_begin(self) -> None:
        self.current = defaultdict(float)
        self.gen_tokens = 0
        self._step_start = time.perf_counter()

    def step_end(self) -> None:
        step_s = time.perf_counter() - self._step_start
        c = self.current
        generate = c["generate"] - c["sync"]
        prepared = c["prepare"]
        self.steps.append({
            "step": len(self.steps) + 1,
            "step_s": step_s,
            "generate": generate,
            "sync": c["sync"],
            "score": c["score"],
            "reference": c["reference"],
            "other": prepared - c["generate"] - c["score"] - c["reference"],
            "learn": step_s - prepared,
            "gen_tokens_per_s": self.gen_tokens / generate if generate > 0 else None,
            "completion_len": c["completion_tokens"] / c["completions"] if c["completions"] else None,
        })
        print("bench_vs_trl: trl step", json.dumps({k: round(v, 2) for k, v in self.steps[-1].items() if v is not None}),
              flush=True)


def trl_reward_functions(workload: dict, prefill: str) -> tuple[list, list[float]]:
    """The recipe's rewards, called the way r1train's scorer calls them (prefill + completion)."""
    from rewards import resolve_reward  # importing the package registers the built-in rewards

    specs = workload["recipe"].get("rewards", [])
    question_column = workload["recipe"].get("data", {}).get("question_column", "question")
    row_columns = set(json.loads(Path(workload["prompts_path"]).read_text().splitlines()[0]))
    functions, weights = [], []
    for spec in specs:
        spec = dict(spec)
        weights.append(float(spec.pop("weight", 1.0)))
        name, fn = resolve_reward(spec)

        def reward(completions, completion_ids=None, _fn=fn, **kwargs):
            texts = [prefill + c for c in completions]
            columns = {k: v for k, v in kwargs.items() if k in row_columns}
            columns["prompts"] = kwargs[question_column]
            columns["completion_tokens"] = [len(ids) for ids in completion_ids]
            return _fn(texts, **columns)

        reward.__name__ = name
        functions.append(reward)
    return functions, weights


def run_trl(workload: dict) -> dict:
    import datasets
    import torch
    import trl
    from transformers import AutoTokenizer, TrainerCallback

    from r1train.data import load_rows
    from r1train.hardware import bf16_autocast_supported
    from r1train.prompts import encode_prompt, prefill, render_prompt

    recipe = workload["recipe"]
    data_cfg, rollout, algo, training = (recipe.get(k, {}) for k in ("data", "rollout", "algorithm", "training"))
    for key, default in (("dynamic_sampling", False), ("mini_batches", 1)):
        if algo.get(key, default) != default:
            raise SystemExit(f"bench_vs_trl: algorithm.{key} has no TRL equivalent here; use the default")
    model_dir = workload_model_dir(workload)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    template = data_cfg.get("prompt_template", "r1_zero")
    question_column = data_cfg.get("question_column", "question")
    rows = load_rows(workload["prompts_path"])
    for row in rows:
        # The same prompt text r1train builds (chat template plus the "<think>" prefill), given to TRL
        # as a plain string so that TRL's own chat templating cannot differ from it.
        row["prompt"] = render_prompt(tokenizer, row[question_column], template, data_cfg.get("system_prompt"))
    if tokenizer(rows[0]["prompt"])["input_ids"] != encode_prompt(tokenizer, rows[0][question_column], template):
        print("bench_vs_trl: warning: TRL tokenises the prompt differently from r1train", file=sys.stderr)
    dataset = datasets.Dataset.from_list(rows)
    reward_funcs, reward_weights = trl_reward_functions(workload, prefill(template))

    batch = workload["prompts"] * workload["group_size"]
    micro = workload["trl_micro_batch"]
    if batch % micro:
        raise SystemExit(f"bench_vs_trl: --trl-micro-batch {micro} must divide the batch ({batch})")
    use_vllm = workload["trl_generation"] == "vllm"
    tis_cap = algo.get("tis_cap", 2.0)
    steps = workload["warmup"] + workload["steps"]
    sampling_extra = {"stop": workload["stop"]} if use_vllm and workload["stop"] else None
    if use_vllm:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, round(workload["kv_cache_gib"]))))
    out_dir = Path(workload["work_dir"]) / "trl"
    shutil.rmtree(out_dir, ignore_errors=True)
    config = trl.GRPOConfig(
        output_dir=str(out_dir),
        seed=recipe.get("seed", 0),
        max_steps=steps,
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=batch // micro,
        num_generations=workload["group_size"],
        max_completion_length=workload["max_new_tokens"],
        temperature=rollout.get("temperature", 1.0),
        top_p=rollout.get("top_p", 1.0),
        top_k=rollout.get("top_k", 0),
        generation_kwargs=sampling_extra,
        learning_rate=workload["learning_rate"],
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=training.get("warmup_steps", 0),
        weight_decay=training.get("weight_decay", 0.0),
        adam_beta1=training.get("adam_beta1", 0.9),
        adam_beta2=training.get("adam_beta2", 0.99),
        max_grad_norm=training.get("max_grad_norm", 1.0),
        optim="adamw_torch_fused",  # torch's fused AdamW kernel, which r1train's learner takes too
        # The same dtype policy as r1train: fp32 weights, bf16 autocast only where the hardware has
        # native bf16 (emulated bf16 on a CPU without it is slower than fp32).
        bf16=training.get("bf16", True) and bf16_autocast_supported(
            torch.device("cuda" if torch.cuda.is_available() else "cpu")),
        use_cpu=not torch.cuda.is_available(),  # transformers refuses bf16 on a machine without a GPU otherwise
        model_init_kwargs={"dtype": torch.float32},
        gradient_checkpointing=workload["gradient_checkpointing"] == "on",
        beta=algo.get("beta", 0.0),
        epsilon=algo.get("epsilon_low", 0.2),
        epsilon_high=algo.get("epsilon_high", 0.2),
        num_iterations=algo.get("updates_per_batch", 1),
        scale_rewards=algo.get("advantage_scaling", "group"),
        loss_type=LOSS_TYPES[algo.get("loss_aggregation", "token_mean")],
        mask_truncated_completions=algo.get("overlong", "none") == "mask",
        reward_weights=reward_weights,
        use_vllm=use_vllm,
        vllm_mode="colocate",
        vllm_max_model_length=data_cfg.get("max_prompt_tokens", 256) + workload["max_new_tokens"],
        vllm_importance_sampling_correction=use_vllm and tis_cap is not None,
        vllm_importance_sampling_mode="token_truncate",
        vllm_importance_sampling_clip_max=tis_cap,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )

    clock = PhaseClock()

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            clock.step_begin()

        def on_step_end(self, args, state, control, **kwargs):
            clock.step_end()

    t0 = time.perf_counter()
    trainer = trl.GRPOTrainer(model=model_dir, reward_funcs=reward_funcs, args=config, train_dataset=dataset,
                              processing_class=tokenizer, callbacks=[StepTimer()])
    setup_s = time.perf_counter() - t0

    original_generate_and_score = trainer._generate_and_score_completions

    def generate_and_score(*args, **kwargs):
        clock.in_preparation = True
        try:
            return original_generate_and_score(*args, **kwargs)
        finally:
            clock.in_preparation = False

    trainer._generate_and_score_completions = generate_and_score
    original_generate = trainer._generate

    def counted_generate(prompts):
        result = original_generate(prompts)
        lengths = [len(ids) for ids in result[1]]  # result[1]: completion token ids
        clock.gen_tokens += sum(lengths)
        clock.current["completion_tokens"] += sum(lengths)
        clock.current["completions"] += len(lengths)
        return result

    trainer._generate = counted_generate
    clock.wrap(trainer, "_generate", "generate")
    clock.wrap(trainer, "_calculate_rewards", "score")
    clock.wrap(trainer, "_get_per_token_logps_and_entropies", "reference", only_while_preparing=True)
    clock.wrap(trainer, "_prepare_inputs", "prepare")
    if use_vllm:
        clock.wrap(trainer.vllm_generation, "sync_weights", "sync")
    trainer.train()
    return {
        "settings": {"trl": trl.__version__, "generation": "vllm colocate" if use_vllm else "transformers generate",
                     "bf16": config.bf16, "per_device_train_batch_size": micro,
                     "gradient_accumulation_steps": batch // micro, "loss_type": config.loss_type,
                     "importance_sampling": config.vllm_importance_sampling_correction and use_vllm},
        "setup_s": setup_s,
        "steps": clock.steps,
    }
