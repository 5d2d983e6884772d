"""The policy learner: turns a scored batch of completions into optimiser steps on a causal LM.

`PolicyLearner` owns the model being trained (full fine-tuning, or LoRA adapters via peft), its
AdamW optimiser and learning-rate schedule. One call to `train_on_batch` runs `updates_per_batch`
(PPO's mu) passes over the batch, each split into `mini_batches` optimiser steps; each step
accumulates gradients over micro-batches sized by a token budget. The loss maths lives in
`r1train/policy_loss.py` and `r1train/algorithm.py`; the micro-batches' losses are normalised by
counts of the whole mini-batch, so accumulating them gives exactly the gradient of the mini-batch
taken at once.

Speed on CPU comes from not doing work. Scoring (`r1train/policy_scoring.py`) runs no logits for
prompt positions, a group's prompt once for all of its completions and bf16 autocast where the
hardware has it; the learner adds no forward pass at all for samples whose loss is identically zero
(advantage 0 without KL or entropy terms; they still count in the normalisers). Master weights stay
fp32. Memory: the gated MLPs keep two of their four intermediate tensors for the backward pass
(`r1train/mlp_recompute.py`).

Data parallelism: given an `accelerate.Accelerator` from a multi-process launch, each process
holds its own share of the batch; the model and optimiser go through `accelerator.prepare` (DDP
or DeepSpeed, as the accelerate config says), or, with `fsdp=True`, the model is sharded by
`r1train/fsdp.py` (FSDP2) and every process runs the same number of forward passes, padding with
empty ones, because each pass gathers the sharded weights collectively. The normalisers are counted over all processes
and the gradients summed rather than averaged, so N processes holding 1/N of a batch each take
exactly the optimiser step one process takes on the whole batch; gradients are exchanged once per
optimiser step, not per micro-batch. A process with nothing to learn from in a step still joins
that exchange with a zero loss.

Deliberate simplifications: mini-batches are contiguous slices of the batch, not reshuffled per
pass (with several processes, mini-batch k is the union of every process's k-th slice); old
logprobs for mu > 1 (or several mini-batches) come from one extra no-grad forward pass before the
first update.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass

import torch

from r1train.batching import pad_token_values, split_evenly
from r1train.compiled_layers import compile_decoder_layers
from r1train import fsdp as fsdp_sharding
from r1train.distributed import all_reduce_max, all_reduce_sum
from r1train.hardware import bf16_autocast_supported, micro_batch_token_budget
from r1train.learner_metrics import MetricTotals
from r1train.logprobs import compute_token_logprobs
from r1train import mlp_recompute
from r1train.optimiser import Optimiser, load_trainable_state, trainable_state, with_lora
from r1train.policy_loss import LossSettings, compute_policy_loss
from r1train.policy_scoring import LOGPROB_CHUNK_ROWS, PolicyScorer, TokenLogprobsModule
from r1train.unpadded_rows import use_unpadded_rows

@dataclass
class TrainBatch:
    """N scored samples; per-token tensors are aligned with `completion_ids`."""

    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    advantages: torch.Tensor  # [N]
    ref_logprobs: list[torch.Tensor] | None = None  # N x [len(completion)], frozen reference model
    engine_logprobs: list[torch.Tensor] | None = None  # N x [len(completion)], from the rollout engine
    sample_mask: torch.Tensor | None = None  # [N] bool; False drops a sample (DAPO overlong filtering)

    def __len__(self) -> int:
        return len(self.prompt_ids)


class PolicyLearner:
    def __init__(
        self,
        model: torch.nn.Module,
        lr: float = 1e-6,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.99),
        lr_schedule: str = "constant",
        warmup_steps: int = 0,
        total_steps: int | None = None,
        max_grad_norm: float = 1.0,
        micro_batch_tokens: int | str = "auto",
        mini_batches: int = 1,
        updates_per_batch: int = 1,
        bf16: bool = True,
        gradient_checkpointing: bool = False,
        use_lora: bool = False,
        lora_r: int = 16,
        lora_alpha: int = 32,
        lora_dropout: float = 0.0,
        lora_target_modules: list[str] | str = "all-linear",
        temperature: float = 1.0,
        logprob_chunk_size: int = LOGPROB_CHUNK_ROWS,
        pad_token_id: int = 0,
        accelerator=None,
        fsdp: bool = False,
        share_prompts: bool = True,
        optimizer_state_dtype: str = "float32",
        compile_layers: bool = False,
        recompute_mlp_products: bool = True,
        unpadded_rows: bool = True,
    ):
        """Wrap `model` (an HF causal LM, fp32) for training.

        `total_steps` counts optimiser steps (batches * updates_per_batch * mini_batches) and is
        needed by the decaying schedules. `temperature` is the rollout sampling temperature: the
        learner scores tokens under the same tempered distribution. LoRA target modules default
        to every linear projection except the output layer. `accelerator` (an
        `accelerate.Accelerator` of a multi-process launch) makes training data-parallel and
        places the model on the process's device; with `fsdp` the model is sharded across the
        processes instead of replicated (ignored without an accelerator: one process has nothing
        to shard across). `share_prompts` packs completions of one prompt into a row with the
        prompt computed once, where the model's attention takes the custom mask this needs and
        where it saves work (`r1train/packing.py`). `optimizer_state_dtype`: see `Optimiser`.
        `compile_layers` compiles the decoder layers with torch.compile (`r1train/compiled_layers.py`;
        not with FSDP, whose sharded layers it leaves eager), and the output layer's elementwise work
        (`r1train/fused_head.py`). `recompute_mlp_products` makes the gated MLPs keep fewer
        activations for the same gradients to float rounding (`r1train/mlp_recompute.py`; not
        with FSDP or compiled layers). `unpadded_rows` runs
        each micro-batch as one sequence without padding, the prompts' common start once, where
        packing applies and the model's attention is "sdpa" (`r1train/unpadded_rows.py`).
        """
        if gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if unpadded_rows and share_prompts:  # before compiling: the layers read the implementation
            use_unpadded_rows(model)
        if use_lora:
            model = with_lora(model, lora_r, lora_alpha, lora_dropout, lora_target_modules)
        self.model = model  # unwrapped: what engines generate with and checkpoints save
        self.use_lora = use_lora
        self.max_grad_norm = max_grad_norm
        self.mini_batches = mini_batches
        self.updates_per_batch = updates_per_batch
        self.accelerator = accelerator
        self.world_size = accelerator.num_processes if accelerator is not None else 1
        self.sharded = fsdp and accelerator is not None and self.world_size > 1
        if self.sharded:  # before the optimiser: sharding replaces the parameters
            fsdp_sharding.shard_model(model, accelerator.device, compute_token_logprobs)
        # Every forward pass of the policy goes through this module (wrapped when data-parallel).
        policy = TokenLogprobsModule(model)

        def prepare(optimizer):  # data-parallel: the policy and the optimiser are wrapped together
            nonlocal policy
            policy, optimizer = accelerator.prepare(policy, optimizer)
            return optimizer

        self.optimiser = Optimiser(
            [p for p in model.parameters() if p.requires_grad], lr=lr, betas=betas, weight_decay=weight_decay,
            lr_schedule=lr_schedule, warmup_steps=warmup_steps, total_steps=total_steps,
            prepare=prepare if accelerator is not None and not self.sharded else None,
            state_dtype=optimizer_state_dtype)
        self.device = next(model.parameters()).device
        use_bf16 = bf16 and bf16_autocast_supported(self.device)
        compiled = compile_layers and not self.sharded and compile_decoder_layers(model, self.device)
        # How many of the model's MLPs keep fewer activations (0: none has the form, or it is off).
        self.recomputed_mlps = (mlp_recompute.recompute_mlp_products(model)
                                if recompute_mlp_products and not self.sharded and not compiled else 0)
        # The scorer holds the passes' settings (autocast, token budget, compiled head); the
        # properties below read them from there, so each is kept in one place.
        self.scorer = PolicyScorer(
            model, policy, device=self.device, use_bf16=use_bf16,
            micro_batch_tokens=micro_batch_token_budget(micro_batch_tokens, self.device, use_bf16),
            share_prompts=share_prompts, chunk_size=logprob_chunk_size, temperature=temperature,
            pad_token_id=pad_token_id, world_size=self.world_size, sharded=self.sharded, compiled=compiled)
        # Per sample of the last batch: its logprobs under the weights the batch was sampled with
        # (None where no forward pass ran). The trainer compares them with the engine's logprobs
        # to verify the last weight sync without an extra forward pass.
        self.pre_update_logprobs: list[torch.Tensor | None] = []

    @classmethod
    def from_recipe(cls, model: torch.nn.Module, recipe, pad_token_id: int = 0, accelerator=None) -> "PolicyLearner":
        """A learner configured by a recipe's training, algorithm, LoRA and rollout sections."""
        t, a, lora = recipe.training, recipe.algorithm, recipe.model.lora
        # The hf backend generates with the learner's own model, whose compiled layers would be
        # compiled again for every decoding shape: there the learner stays eager.
        compile_layers = t.compile and recipe.rollout.backend != "hf"
        if t.compile and not compile_layers:
            print("r1train: training.compile: the learner runs eagerly with rollout.backend: hf, which generates "
                  "with the learner's own model (set training.compile: false to silence this)", flush=True)
        return cls(
            model, lr=t.learning_rate, weight_decay=t.weight_decay, betas=(t.adam_beta1, t.adam_beta2),
            lr_schedule=t.lr_schedule, warmup_steps=t.warmup_steps,
            total_steps=t.steps * a.updates_per_batch * a.mini_batches, max_grad_norm=t.max_grad_norm,
            micro_batch_tokens=t.micro_batch_tokens, mini_batches=a.mini_batches,
            updates_per_batch=a.updates_per_batch, bf16=t.bf16,
            use_lora=lora.enabled, lora_r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
            lora_target_modules=list(lora.target_modules), temperature=recipe.rollout.temperature,
            pad_token_id=pad_token_id, accelerator=accelerator, fsdp=t.fsdp, share_prompts=t.share_prompts,
            optimizer_state_dtype=t.optimizer_state_dtype, compile_layers=compile_layers,
            recompute_mlp_products=t.recompute_mlp_products,
        )

    @property
    def optimizer(self):
        return self.optimiser.optimizer

    @property
    def scheduler(self):
        return self.optimiser.scheduler

    @property
    def consecutive_nan_steps(self) -> int:
        """Optimiser steps skipped in a row for a non-finite loss or gradient; the trainer stops the
        run at its limit."""
        return self.optimiser.consecutive_nan_steps

    # ----------------------------------------------------------------------------- scoring
    @property
    def use_bf16(self) -> bool:
        """Whether the passes run under bf16 autocast."""
        return self.scorer.use_bf16

    @property
    def micro_batch_tokens(self) -> int:
        """The token budget of one micro-batch."""
        return self.scorer.micro_batch_tokens

    @property
    def compiled(self) -> bool:
        """Whether the decoder layers (and the output layer's elementwise work) run compiled."""
        return self.scorer.compiled

    @property
    def policy(self) -> torch.nn.Module:
        """The module every forward pass goes through: the model's scoring pass, wrapped when
        data-parallel."""
        return self.scorer.policy

    def compute_logprobs(self, prompt_ids: list[list[int]], completion_ids: list[list[int]],
                         disable_adapters: bool = False, model: torch.nn.Module | None = None) -> list[torch.Tensor]:
        """Per-token logprobs under the current weights, without gradient: `PolicyScorer.compute_logprobs`."""
        return self.scorer.compute_logprobs(prompt_ids, completion_ids, disable_adapters, model)

    # ----------------------------------------------------------------------------- training
    def train_on_batch(self, batch: TrainBatch, loss_settings: LossSettings) -> dict[str, float]:
        """Run mu passes of `mini_batches` optimiser steps over the batch.

        Returns metrics: loss, grad_norm (mean over the steps taken), lr (of the last step taken),
        nan_skipped_steps,
        throughput/learn_tokens_per_s (prompt + completion tokens of the samples learned from per
        second, a shared prompt counted once per sample, so packing shows as a higher rate) and the
        token-weighted means of `compute_policy_loss`'s metrics (keys ending /max or /min: their max or
        min). With several
        processes, loss and grad_norm are those of the whole batch, the others this process's.
        """
        start_time = time.perf_counter()
        self.policy.train()
        if batch.sample_mask is None:
            keep = list(range(len(batch)))
        else:
            keep = batch.sample_mask.nonzero().flatten().tolist()
        optimiser_steps = self.updates_per_batch * self.mini_batches
        old_logprobs = None
        if optimiser_steps > 1:  # later steps need the logprobs of the policy that sampled the batch
            old_logprobs = self.compute_logprobs(batch.prompt_ids, batch.completion_ids)
        self.pre_update_logprobs = list(old_logprobs) if old_logprobs is not None else [None] * len(batch)
        totals = MetricTotals()
        mini_batches = split_evenly(keep, self.mini_batches)
        if self.world_size > 1:  # every process takes the same optimiser steps, some on no samples
            mini_batches += [[]] * (self.mini_batches - len(mini_batches))
        for _ in range(self.updates_per_batch):
            for indices in mini_batches:
                self._optimiser_step(batch, indices, old_logprobs, loss_settings, totals)
        metrics = totals.result()
        metrics["throughput/learn_tokens_per_s"] = totals.tokens / max(time.perf_counter() - start_time, 1e-9)
        return metrics

    def _optimiser_step(self, batch: TrainBatch, indices: list[int], old_logprobs, settings: LossSettings,
                        totals: MetricTotals) -> None:
        # Normalisers of the whole mini-batch (on every process) make the micro-batch losses add up
        # to its loss.
        batch_sequences = len(indices)
        batch_tokens = sum(len(batch.completion_ids[i]) for i in indices)
        contributes = settings.zero_advantage_contributes()
        work = [i for i in indices if contributes or batch.advantages[i].item() != 0.0]
        any_work = len(work)
        if self.world_size > 1:
            batch_sequences, batch_tokens, any_work = (int(v) for v in all_reduce_sum(
                [batch_sequences, batch_tokens, len(work)]))
        micro_batches = self.scorer.plan(batch.prompt_ids, batch.completion_ids, work)
        # Passes this process runs: its micro-batches, padded with zero-loss passes where another
        # process has more (sharded weights are gathered per pass) or where it has none but
        # another has some (its gradient exchange needs every process).
        passes = len(micro_batches)
        if self.sharded:
            passes = all_reduce_max(passes)
        elif any_work:
            passes = max(passes, 1)
        step_loss = 0.0
        for number in range(passes):
            with self._gradient_sync(last=number == passes - 1):
                if number < len(micro_batches):
                    step_loss += self._micro_batch_backward(batch, micro_batches[number], old_logprobs, settings,
                                                            batch_sequences, batch_tokens, totals)
                else:
                    self._backward(self.scorer.zero_loss())
        grad_norm = self._clip_gradients()
        if self.world_size > 1:  # the loss is the sum over processes; skipping is decided alike
            step_loss = all_reduce_sum([step_loss])[0]
        lr = self.optimiser.lr
        if self.optimiser.step(finite=math.isfinite(step_loss) and math.isfinite(grad_norm)):
            totals.lr = lr
            totals.add_step(step_loss, grad_norm)
        else:
            totals.nan_skipped_steps += 1

    def _micro_batch_backward(self, batch, packs, old_logprobs, settings, batch_sequences, batch_tokens,
                              totals) -> float:
        samples = [i for members in packs for i in members]
        completions = [batch.completion_ids[i] for i in samples]
        logprobs, entropy = self.scorer.logprobs(batch.prompt_ids, batch.completion_ids, packs, True)
        width = logprobs.shape[1]
        lengths = torch.tensor([len(c) for c in completions], device=self.device)
        mask = torch.arange(width, device=self.device).unsqueeze(0) < lengths.unsqueeze(1)  # [b, T]

        def gather(per_sample):
            return None if per_sample is None else pad_token_values([per_sample[i] for i in samples], logprobs.detach())

        if old_logprobs is None:  # a single optimiser step: this pass runs on the sampling weights
            for row, i in enumerate(samples):
                self.pre_update_logprobs[i] = logprobs[row, : len(completions[row])].detach().float().cpu()
        old = gather(old_logprobs) if old_logprobs is not None else logprobs.detach()  # mu = 1: ratio = 1
        loss, metrics = compute_policy_loss(
            logprobs, old, batch.advantages[samples].to(self.device), mask,
            ref_logprobs=gather(batch.ref_logprobs), engine_logprobs=gather(batch.engine_logprobs),
            entropy=entropy if settings.entropy_coef > 0 else entropy.detach(),
            batch_sequences=batch_sequences, batch_tokens=batch_tokens, **settings.as_kwargs(),
        )
        self._backward(loss)
        totals.add_micro_batch(metrics, completion_tokens=int(lengths.sum()),
                               tokens=sum(len(batch.prompt_ids[i]) + len(batch.completion_ids[i]) for i in samples))
        return loss.item()

    # ----------------------------------------------------------------------------- data parallelism
    def _gradient_sync(self, last: bool):
        """Context of one micro-batch's backward: gradients are exchanged after the last one only."""
        if self.accelerator is None:
            return contextlib.nullcontext()
        if self.sharded:
            self.model.set_requires_gradient_sync(last)
            return contextlib.nullcontext()
        self.accelerator.sync_gradients = last  # DeepSpeed reads its accumulation boundary from this
        return contextlib.nullcontext() if last else self.accelerator.no_sync(self.policy)

    def _backward(self, loss: torch.Tensor) -> None:
        if self.accelerator is None:
            loss.backward()
        elif self.sharded:  # FSDP averages the reduced gradients; the sum is wanted (see below)
            (loss * self.world_size).backward()
        else:
            # The wrappers average gradients over processes; the loss is already normalised by the
            # counts of all processes, so the sum is what makes the whole batch's gradient.
            self.accelerator.backward(loss * self.world_size)

    def _clip_gradients(self) -> float:
        """Clip to `max_grad_norm`; returns the norm before clipping (of the summed gradients)."""
        if self.accelerator is None or self.sharded:  # sharded: the norm of the shards' norms (collective)
            norm = torch.nn.utils.clip_grad_norm_(self.optimiser.parameters, self.max_grad_norm)
        else:  # the wrapped parameters
            norm = self.accelerator.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
        return float(fsdp_sharding.full_tensor(norm))

    # ----------------------------------------------------------------------------- state
    # What checkpoints (`r1train/run_state.py`) save and restore.
    def state_dict(self) -> dict:
        """Optimiser and schedule state for checkpoints (the weights are saved separately).
        Sharded: a collective; the main process gets the whole optimiser state, keyed by name."""
        if self.sharded:
            return self.optimiser.state_dict(fsdp_sharding.full_optimizer_state(self.model, self.optimizer))
        return self.optimiser.state_dict()

    def load_state_dict(self, state: dict) -> None:
        # Sharded: every process holds the whole state (each read the checkpoint).
        self.optimiser.load_state_dict(state, load_optimizer=(
            (lambda whole: fsdp_sharding.load_full_optimizer_state(self.model, self.optimizer, whole))
            if self.sharded else None))

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The trained parameters only (LoRA: the adapters), by `named_parameters` name.
        Sharded: a collective; whole tensors on the main process, {} on the others."""
        if not self.sharded:
            return trainable_state(self.model)
        trained = [name for name, p in self.model.named_parameters() if p.requires_grad]
        whole = fsdp_sharding.full_state_dict(self.model)
        return {name: whole[name] for name in trained if name in whole}

    def load_trainable_state(self, weights: dict[str, torch.Tensor]) -> None:
        if self.sharded:
            missing = [name for name, p in self.model.named_parameters() if p.requires_grad and name not in weights]
            if missing:
                raise ValueError(f"checkpoint lacks {len(missing)} trained parameters, e.g. {missing[0]}")
            fsdp_sharding.load_full_weights(self.model, weights)
        else:
            load_trainable_state(self.model, weights)

    def full_model_state(self) -> dict[str, torch.Tensor] | None:
        """Sharded: the whole model's state dict for saving (collective; {} off the main process).
        Otherwise None: the model saves itself."""
        return fsdp_sharding.full_state_dict(self.model) if self.sharded else None
