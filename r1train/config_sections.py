"""The recipe's sections, one dataclass per concern: model, data, rollout, algorithm, rewards,
training, evaluation, rejection sampling, logging. YAML keys equal field names; each section's
`validate(at)` checks its own values and names the dotted key of the first bad one.

Allowed values are imported from where they are used (the loss maths, the optimiser, the reward
scopes), so a value the code accepts is one the recipe accepts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from r1train.adamw_state import STATE_DTYPES
from r1train.algorithm import ADVANTAGE_BASELINES, ADVANTAGE_SCALINGS, LOSS_AGGREGATIONS
from r1train.config_parsing import check, file_not_found, one_of, referenced_stage
from r1train.optimiser import LR_SCHEDULES
from r1train.policy_loss import POLICY_LOSSES, TIS_MODES, LossSettings
from r1train.reward_scope import REWARD_SCOPES


@dataclass
class LoraConfig:
    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )

    def validate(self, at: str) -> None:
        check(self.r >= 1, f"{at}.r", "must be at least 1")
        check(self.alpha > 0, f"{at}.alpha", "must be positive")
        check(0.0 <= self.dropout < 1.0, f"{at}.dropout", "must be in [0, 1)")


@dataclass
class ModelConfig:
    # A short alias ("smollm2-135m-instruct"), a local Hugging Face folder, or a hub id.
    name: str = "smollm2-135m-instruct"
    lora: LoraConfig = field(default_factory=LoraConfig)
    gradient_checkpointing: bool = False
    # Reward model for general prompts (a sequence-classification folder); used by GRPO stages.
    reward_model: str | None = None

    def validate(self, at: str) -> None:
        check(bool(self.name), f"{at}.name", "must name a model alias, folder or hub id")
        self.lora.validate(f"{at}.lora")


@dataclass
class DataConfig:
    # Each source is a .jsonl/.json/.parquet file, a folder (Dataset.save_to_disk, or Parquet/JSONL
    # shards) or a hub id resolved by `datasets` (r1train/data_sources.py).
    train: str | None = None  # prompts (GRPO) or examples (SFT)
    eval: str | None = None  # held-out split for evaluation
    subset: str | None = None  # a hub dataset's configuration, e.g. "main" for openai/gsm8k
    split: str = "train"  # split of train, general and mix, where the source has several
    eval_split: str = "test"  # split of eval, where the source has several
    max_rows: int | None = None  # quick runs: only the first N rows of train and eval (after `filter`)
    # Keep the rows of train and eval whose column equals the value (a list: any of them), e.g. {level: 1}.
    filter: dict[str, Any] = field(default_factory=dict)
    # A column of text, or of conversations (lists of {role, content} messages, as TRL's `prompt`).
    question_column: str = "question"
    answer_column: str = "answer"
    completion_column: str = "completion"  # SFT targets
    # "r1_zero" (think/answer instruction, <think> prefilled), "r1_chat" or any string with {question}.
    prompt_template: str = "r1_zero"
    system_prompt: str | None = None  # a system message in a conversation wins over it
    max_prompt_tokens: int = 256
    shuffle: bool = True
    # GRPO: draw train rows so each value of this column is equally frequent (rarer ones repeat), e.g. op.
    balance_by: str | None = None
    # Second-stage RL: extra prompts scored by the rewards with `applies_to: general` (or all).
    general: str | None = None
    general_ratio: float = 0.0  # share of each batch drawn from `general`
    # SFT and distill: more example sources (or stage:<name> datasets) trained on together with `train`.
    mix: list[str] = field(default_factory=list)

    def validate(self, at: str) -> None:
        from r1train.data_sources import source_problem

        named = [(f"{at}.{key}", getattr(self, key)) for key in ("train", "eval", "general")]
        for key, path in named + [(f"{at}.mix[{i}]", path) for i, path in enumerate(self.mix)]:
            if path is not None and referenced_stage(path) is None:
                problem = source_problem(path)
                check(problem is None, key, problem)
        check(self.max_prompt_tokens >= 8, f"{at}.max_prompt_tokens", "must be at least 8")
        check(self.max_rows is None or self.max_rows >= 1, f"{at}.max_rows", "must be at least 1 (or null for all)")
        check(bool(self.split), f"{at}.split", "must name a split, e.g. train")
        check(bool(self.eval_split), f"{at}.eval_split", "must name a split, e.g. test")
        check(0.0 <= self.general_ratio < 1.0, f"{at}.general_ratio", "must be in [0, 1)")
        check(
            self.general_ratio == 0.0 or self.general is not None,
            f"{at}.general_ratio",
            "is set but data.general names no file",
        )


# Which rollout backends each placement can run: the one table `validate` and `engines.engine_from_recipe` follow.
# Remote workers are `vllm serve` processes, so only the vLLM backend runs there.
BACKENDS_BY_PLACEMENT = {"colocate": ("hf", "vllm"), "remote": ("vllm",)}
# How the learner's weights reach remote workers: "nccl" broadcasts them (CUDA on every side), "disk"
# writes them once as safetensors that every worker reloads; "auto" takes nccl where it can.
WEIGHT_SYNC_METHODS = ("auto", "nccl", "disk")


@dataclass
class RolloutConfig:
    backend: str = "hf"  # "hf" (transformers generate) or "vllm"
    placement: str = "colocate"  # "colocate" (in-process) or "remote" (`vllm serve` workers)
    remote_urls: list[str] = field(default_factory=list)
    weight_sync: str = "auto"  # remote placement: one of WEIGHT_SYNC_METHODS
    weight_sync_dir: str | None = None  # disk sync: a folder every worker can read (default: a temp folder)
    remote_timeout_s: float = 600.0  # remote placement: wait for workers at start, and for each request
    group_size: int = 8  # G completions per prompt
    prompts_per_step: int = 16
    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    stop: list[str] = field(default_factory=lambda: ["</answer>"])
    # GiB the colocated engine reserves for its KV cache, or "auto": what its largest batch can fill,
    # at most 2 GiB (r1train/engines/kv_cache_size.py). An int, float or "auto", checked in validate().
    vllm_kv_cache_gib: Any = "auto"
    vllm_sleep: bool = True  # free vLLM's KV cache while the learner trains (GPU: weights offloaded too)
    vllm_compile: bool | None = None  # torch.compile (GPU: and CUDA graphs); null: on GPU only (CPU: see VLLMEngine)
    vllm_share_prompt_tails: bool = True  # CPU: a prompt's partial last KV block computed once per group (engines/prompt_tails.py)
    verify_sync: bool = True  # compare engine and learner logprobs after each sync
    # One-step off-policy: sample the next batch while the learner trains on this one (r1train/async_rollouts.py).
    async_generation: bool = False

    def validate(self, at: str) -> None:
        one_of(self.backend, ("hf", "vllm"), f"{at}.backend")
        one_of(self.placement, tuple(BACKENDS_BY_PLACEMENT), f"{at}.placement")
        check(
            self.backend in BACKENDS_BY_PLACEMENT[self.placement],
            f"{at}.backend",
            f"{self.backend!r} does not run with placement {self.placement!r} (remote workers are `vllm serve` "
            "processes): set rollout.backend: vllm, or rollout.placement: colocate",
        )
        one_of(self.weight_sync, WEIGHT_SYNC_METHODS, f"{at}.weight_sync")
        check(self.remote_timeout_s > 0, f"{at}.remote_timeout_s", "must be positive")
        check(
            self.placement == "colocate" or self.remote_urls,
            f"{at}.remote_urls",
            "must list the rollout servers when placement is 'remote'",
        )
        check(self.group_size >= 2, f"{at}.group_size", "must be at least 2 (advantages compare completions of one prompt)")
        check(self.prompts_per_step >= 1, f"{at}.prompts_per_step", "must be at least 1")
        check(self.max_new_tokens >= 1, f"{at}.max_new_tokens", "must be at least 1")
        check(self.temperature > 0, f"{at}.temperature", "must be positive")
        check(0 < self.top_p <= 1, f"{at}.top_p", "must be in (0, 1]")
        check(self.top_k >= 0, f"{at}.top_k", "must be 0 (off) or positive")
        size = self.vllm_kv_cache_gib
        check(size == "auto" or (type(size) in (int, float) and size > 0), f"{at}.vllm_kv_cache_gib",
              f"must be 'auto' or a positive number of GiB, got {size!r}")


@dataclass
class AlgorithmConfig:
    # The loss's settings take their defaults from policy_loss.LossSettings (one default each).
    advantage_scaling: str = "group"  # "group" std, "batch" std, or "none" (Dr. GRPO)
    advantage_baseline: str = "group_mean"  # or "leave_one_out" (RLOO, with advantage_scaling: none)
    policy_loss: str = LossSettings.policy_loss  # "ppo_clip" (token ratio) | "gspo" (sequence ratio) | "cispo"
    epsilon_low: float = LossSettings.epsilon_low
    epsilon_high: float = LossSettings.epsilon_high  # > epsilon_low is DAPO's clip-higher
    dual_clip: float | None = LossSettings.dual_clip  # c > 1 bounds the loss of negative-advantage tokens
    beta: float = LossSettings.beta  # KL weight; 0 loads no reference model
    loss_aggregation: str = LossSettings.loss_aggregation  # "sequence_mean" | "token_mean" | "sum_over_max_len"
    updates_per_batch: int = 1  # mu
    mini_batches: int = 1  # optimiser steps per batch and update
    tis_cap: float | None = LossSettings.tis_cap  # engine/learner mismatch correction: cap C of the weight (or range); null disables
    tis_mode: str = LossSettings.tis_mode  # level and mode of that correction (r1train/policy_loss.py)
    tis_floor: float | None = LossSettings.tis_floor  # lower bound of the kept range for the *_mask modes; null: 1 / tis_cap
    dynamic_sampling: bool = False  # DAPO: drop groups whose rewards are all equal
    max_sampling_retries: int = 3
    overlong: str = "none"  # "none" | "mask" (truncated completions get no loss)
    entropy_coef: float = LossSettings.entropy_coef

    def validate(self, at: str) -> None:
        one_of(self.advantage_scaling, ADVANTAGE_SCALINGS, f"{at}.advantage_scaling")
        one_of(self.advantage_baseline, ADVANTAGE_BASELINES, f"{at}.advantage_baseline")
        one_of(self.policy_loss, POLICY_LOSSES, f"{at}.policy_loss")
        one_of(self.loss_aggregation, LOSS_AGGREGATIONS, f"{at}.loss_aggregation")
        one_of(self.tis_mode, TIS_MODES, f"{at}.tis_mode")
        one_of(self.overlong, ("none", "mask"), f"{at}.overlong")
        check(0 < self.epsilon_low < 1, f"{at}.epsilon_low", "must be in (0, 1)")
        check(self.epsilon_high > 0, f"{at}.epsilon_high", "must be positive")
        check(self.dual_clip is None or self.dual_clip > 1, f"{at}.dual_clip", "must be greater than 1 (or null)")
        check(self.dual_clip is None or self.policy_loss == "ppo_clip", f"{at}.dual_clip",
               f"applies to policy_loss: ppo_clip, not {self.policy_loss}; set it to null")
        check(self.beta >= 0, f"{at}.beta", "must be non-negative")
        check(self.updates_per_batch >= 1, f"{at}.updates_per_batch", "must be at least 1")
        check(self.mini_batches >= 1, f"{at}.mini_batches", "must be at least 1")
        check(self.tis_cap is None or self.tis_cap >= 1, f"{at}.tis_cap", "must be at least 1 (or null)")
        check(self.tis_floor is None or self.tis_mode.endswith("_mask"), f"{at}.tis_floor",
               f"bounds the kept range of the *_mask modes; tis_mode {self.tis_mode} only truncates at tis_cap: "
               "set tis_floor to null")
        check(self.tis_floor is None or 0 < self.tis_floor <= 1, f"{at}.tis_floor", "must be in (0, 1] (or null)")
        check(self.max_sampling_retries >= 0, f"{at}.max_sampling_retries", "must be non-negative")
        check(self.entropy_coef >= 0, f"{at}.entropy_coef", "must be non-negative")


@dataclass
class RewardSpec:
    name: str | None = None  # registered name or "package.module:function"
    path: str | None = None  # a Python file holding the function...
    function: str | None = None  # ...and its name
    weight: float = 1.0
    kwargs: dict[str, Any] = field(default_factory=dict)
    # The prompts it judges: "reasoning" (data.train), "general" (data.general) or "all"; it gives
    # None (no credit, no penalty) on the others.
    applies_to: str = "reasoning"
    # Seconds the reward may take per sample: a call on N samples may take N times that.
    timeout_s: float = 5.0

    @property
    def label(self) -> str:
        return self.name or f"{Path(self.path or '').stem}:{self.function}"

    def validate(self, at: str) -> None:
        check(
            (self.name is None) != (self.path is None),
            at,
            "give either `name` (registered or package.module:function) or `path` + `function`",
        )
        check(self.path is None or self.function is not None, f"{at}.function", "is required with `path`")
        if self.path is not None:
            check(Path(self.path).is_file(), f"{at}.path", file_not_found(self.path))
        one_of(self.applies_to, REWARD_SCOPES, f"{at}.applies_to")
        check(self.timeout_s > 0, f"{at}.timeout_s", "must be positive")


@dataclass
class TrainingConfig:
    steps: int = 40  # optimiser-facing steps (GRPO: batches; SFT: optimiser steps)
    epochs: float | None = None  # SFT: passes over the data, overrides steps when set
    learning_rate: float = 1e-6
    lr_schedule: str = "constant"  # "constant" | "linear" | "cosine"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.99
    max_grad_norm: float = 1.0
    # Token budget per forward/backward pass (padding included): a number, or "auto" for the budget
    # measured best for how the learner computes (r1train/hardware.py, micro_batch_token_budget).
    # An int or "auto", checked in validate().
    micro_batch_tokens: Any = "auto"
    batch_size: int = 16  # SFT: examples per optimiser step
    bf16: bool = True  # bf16 autocast where the hardware supports it; fp32 master weights
    packing: bool = False  # SFT: pack short examples into one sequence
    max_seq_len: int = 1024  # SFT
    checkpoint_every: int = 10
    keep_checkpoints: int = 2
    # GRPO: a thread writes each checkpoint while the next step samples (the learner's update waits
    # for it). Saves the write's seconds; a process killed in that window resumes from the checkpoint
    # before it, so it is off unless a recipe asks (README, "Resuming").
    background_checkpoints: bool = False
    max_nan_steps: int = 3  # consecutive non-finite steps before the run stops
    max_unscored_steps: int = 3  # consecutive GRPO steps in which no reward judged any sample
    threads: int | None = None  # torch intra-op threads; null: one per core the process may use (r1train/threads.py)
    fsdp: bool = False  # multi-process GRPO: shard weights, gradients and optimiser state (torch FSDP2)
    # GRPO and SFT learners: a prompt's completions share one row, the prompt computed once, where
    # that saves work (r1train/packing.py); needs "sdpa" or "eager" attention, otherwise ignored. With
    # "sdpa" a micro-batch also runs unpadded, the start all its prompts share once
    # (r1train/unpadded_rows.py). SFT with `packing` lays its examples out in padded rows instead.
    share_prompts: bool = True
    # CPU GRPO: allocations from 4 MiB get their own memory mappings, so freed activations leave the
    # process at once, and the vLLM engine trims the heap when it wakes up: a lower peak RSS for a
    # slower learner, which pays page faults for every fresh mapping (r1train/heap.py; measured in
    # the README's options table).
    cpu_low_memory: bool = False
    # AdamW's two moments in "float32" or "bfloat16" (half their memory, rounded after every update;
    # r1train/adamw_state.py). Not with fsdp.
    optimizer_state_dtype: str = "float32"
    # GRPO and SFT learners: compile the decoder layers with torch.compile (r1train/compiled_layers.py):
    # fused kernels for the casts, norms and activations between the matmuls; the first step pays the
    # compile (cached on disk for later runs). With rollout.backend: hf the GRPO learner stays eager
    # (that backend generates with the learner's own model) and says so.
    compile: bool = False
    # GRPO and SFT learners: the gated MLPs keep two of their four intermediate tensors for the
    # backward pass and compute the other two again (r1train/mlp_recompute.py): less activation
    # memory, the same gradients to float rounding; not with gradient checkpointing, compile or
    # fsdp (left alone).
    recompute_mlp_products: bool = True

    def validate(self, at: str) -> None:
        one_of(self.lr_schedule, LR_SCHEDULES, f"{at}.lr_schedule")
        check(self.steps >= 1, f"{at}.steps", "must be at least 1")
        check(self.epochs is None or self.epochs > 0, f"{at}.epochs", "must be positive")
        check(self.learning_rate > 0, f"{at}.learning_rate", "must be positive")
        check(self.warmup_steps >= 0, f"{at}.warmup_steps", "must be non-negative")
        check(self.weight_decay >= 0, f"{at}.weight_decay", "must be non-negative")
        check(0 <= self.adam_beta1 < 1 and 0 <= self.adam_beta2 < 1, f"{at}.adam_beta1", "betas must be in [0, 1)")
        check(self.max_grad_norm > 0, f"{at}.max_grad_norm", "must be positive")
        budget = self.micro_batch_tokens
        check(budget == "auto" or (type(budget) is int and budget >= 64), f"{at}.micro_batch_tokens",
              f"must be 'auto' or a whole number of tokens of at least 64, got {budget!r}")
        check(self.batch_size >= 1, f"{at}.batch_size", "must be at least 1")
        check(self.max_seq_len >= 16, f"{at}.max_seq_len", "must be at least 16")
        check(self.checkpoint_every >= 1, f"{at}.checkpoint_every", "must be at least 1")
        check(self.keep_checkpoints >= 1, f"{at}.keep_checkpoints", "must be at least 1")
        check(self.max_nan_steps >= 1, f"{at}.max_nan_steps", "must be at least 1")
        check(self.max_unscored_steps >= 1, f"{at}.max_unscored_steps", "must be at least 1")
        one_of(self.optimizer_state_dtype, tuple(STATE_DTYPES), f"{at}.optimizer_state_dtype")
        check(not (self.fsdp and self.optimizer_state_dtype != "float32"), f"{at}.optimizer_state_dtype",
              "bfloat16 state does not combine with training.fsdp (sharding already divides the optimiser "
              "state across processes); leave it float32")
        check(not (self.fsdp and self.compile), f"{at}.compile",
              "does not combine with training.fsdp (the sharded layers stay eager); set training.compile: false")


@dataclass
class EvaluationConfig:
    every: int = 0  # evaluate the held-out split every N steps (0: only before and after)
    max_examples: int = 100
    samples: int = 1  # k samples per problem (pass@1 is their mean)
    temperature: float = 1.0
    greedy: bool = True  # also measure greedy accuracy
    max_new_tokens: int | None = None  # default: rollout.max_new_tokens
    # Also evaluate with the thinking forced empty (`<think>\n</think>\n<answer>` prefilled):
    # eval/no_think_accuracy and eval/thinking_gain, what the thinking is worth.
    no_think: bool = False
    # A column of data.eval (MATH's `level`, the toy's `op`): accuracy is also reported per value,
    # eval/accuracy/<column>=<value> and eval/greedy_accuracy/<column>=<value>.
    by: str | None = None
    at_start: bool = True
    at_end: bool = True

    def validate(self, at: str) -> None:
        check(self.every >= 0, f"{at}.every", "must be non-negative")
        check(self.max_examples >= 1, f"{at}.max_examples", "must be at least 1")
        check(self.samples >= 1, f"{at}.samples", "must be at least 1")
        check(self.temperature > 0, f"{at}.temperature", "must be positive")
        check(self.by is None or bool(self.by), f"{at}.by", "must name a column of data.eval (or be left out)")


@dataclass
class RejectionConfig:
    samples: int = 8  # k per prompt
    max_per_prompt: int = 2  # m kept
    max_prompts: int | None = None
    require: list[str] = field(default_factory=lambda: ["accuracy", "format"])  # rewards that must be 1
    max_completion_tokens: int | None = None
    language: str | None = None  # require language consistency >= 0.9 in this language
    output_format: str = "jsonl"  # "jsonl" | "parquet"

    def validate(self, at: str) -> None:
        check(self.samples >= 1, f"{at}.samples", "must be at least 1")
        check(self.max_per_prompt >= 1, f"{at}.max_per_prompt", "must be at least 1")
        one_of(self.output_format, ("jsonl", "parquet"), f"{at}.output_format")


@dataclass
class LoggingConfig:
    # Trackers that get every step's metrics besides metrics.jsonl: tensorboard, wandb, trackio,
    # mlflow; where no server is configured they write into the run folder (r1train/trackers.py).
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])
    tensorboard: bool | None = None  # the older switch: false leaves tensorboard out of report_to
    project: str = "r1train"  # the wandb / trackio project, the mlflow experiment
    samples_every: int = 1  # write sample completions every N steps
    num_samples: int = 4
    progress: bool = True

    def validate(self, at: str) -> None:
        from r1train.trackers import TRACKERS

        for i, name in enumerate(self.report_to):
            one_of(name, tuple(TRACKERS), f"{at}.report_to[{i}]")
        check(len(set(self.report_to)) == len(self.report_to), f"{at}.report_to", "names a tracker twice")
        check(bool(self.project), f"{at}.project", "must be a non-empty name")
        check(self.samples_every >= 1, f"{at}.samples_every", "must be at least 1")

    @property
    def trackers(self) -> list[str]:
        """The trackers in use: report_to, with the older `tensorboard: true/false` applied."""
        names = [name for name in self.report_to if not (name == "tensorboard" and self.tensorboard is False)]
        return ["tensorboard", *names] if self.tensorboard and "tensorboard" not in names else names
