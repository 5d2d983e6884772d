"""Supervised fine-tuning: the cold-start stage, SFT on rejection-sampled data, and distillation.

Each example is a question and a completion, read from data.train and every file of data.mix (the
second SFT stage of R1 mixes rejection-sampled reasoning with other data). A file without rows,
such as a rejection sample that kept nothing, is reported and skipped. The prompt is rendered
exactly as a rollout would see it (the model's chat template, the R1 instruction as system turn,
the question as user turn), the completion is tokenised on its own and followed by the
tokenizer's EOS token, so the model learns to write the completion and then stop, on the very
token boundary generation will use. Only completion tokens (EOS included) carry loss.

An optimiser step takes `training.batch_size` examples and accumulates gradients over
micro-batches of at most `training.micro_batch_tokens` tokens. They run through the GRPO learner's
passes (`r1train/policy_scoring.py`), since the loss is the negative log-likelihood of the
completion tokens, the logprobs that learner computes: with sdpa attention a micro-batch is one
unpadded sequence in which every token runs once and the start all its prompts share (the system
prompt and chat template) once, the output layer runs in chunks on the completion positions
alone, and `training.compile` compiles the decoder layers, as for GRPO. With `training.packing`
the examples are laid out in padded rows instead, several to a row. The loss is the mean over
every completion token of the step, so accumulation, the layout and packing change the numerics
only at rounding level. With data.eval set (and evaluation.at_end), the saved model is evaluated
and its scores logged as a row of the last step.

Packing. Packed examples restart their `position_ids` at 0; given no attention mask, transformers
reads those restarts as sequence boundaries and builds a block-diagonal causal mask, so attention
never crosses examples. Rows are right-padded and never given an attention mask: under causal
attention real tokens cannot see the padding after them, and padding carries no loss.

Deliberate simplifications:
- Built-in templates (`r1_zero`, `r1_chat`) both train as `r1_chat`: the completions hold the whole
  assistant response, `<think>` included, so the prompt must not prefill it. A custom
  `{question}` template is used as it is.
- An example longer than `training.max_seq_len` keeps its prompt and loses the end of its
  completion (and EOS); an example whose prompt alone fills `max_seq_len` is dropped. Both counted.
- Packing is next-fit in sampling order (no bin-packing search).
- A step whose loss or gradient norm is not finite is skipped: neither the weights nor the
  learning-rate schedule move, the data does (`r1train/optimiser.py`). `training.max_nan_steps` in
  a row stop the run.
"""
from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from r1train.config import Recipe
from r1train.batching import plan_micro_batches
from r1train.compiled_layers import compile_decoder_layers
from r1train.packing import ROW_LENGTH_MULTIPLE, padded_row_length
from r1train.data import DataError, PromptSampler, holds_no_rows, load_data
from r1train.evaluation import evaluate_model_dir
from r1train.hardware import bf16_autocast_supported, compute_device, micro_batch_token_budget
from r1train.heap import return_free_memory
from r1train.logprobs import head_token_logprobs
from r1train.mlp_recompute import recompute_mlp_products
from r1train.models import load_model, load_tokenizer, resolve_model_dir, save_model
from r1train.optimiser import Optimiser, load_trainable_state, trainable_state, with_lora
from r1train.policy_scoring import LOGPROB_CHUNK_ROWS, PolicyScorer, TokenLogprobsModule
from r1train.prompts import BUILT_IN, encode_prompt
from r1train.run_state import RunState
from r1train.seeding import seed_everything
from r1train.threads import set_threads
from r1train.tied_embedding import lookup_embeddings
from r1train.tracking import RunLogger
from r1train.unpadded_rows import use_unpadded_rows


@dataclass
class SFTExample:
    input_ids: list[int]  # prompt tokens then completion tokens
    prompt_len: int  # tokens before the first completion token

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class MicroBatch:
    input_ids: torch.Tensor  # [B, T]
    position_ids: torch.Tensor  # [B, T], restarting at 0 at every packed example
    loss_mask: torch.Tensor  # [B, T] bool, True on completion tokens (the tokens that are predicted)


def tokenize_example(tokenizer, question: str, completion: str, template: str, system_prompt: str | None,
                     max_seq_len: int) -> tuple[SFTExample | None, bool]:
    """Token ids of one example and whether it was truncated; None when the prompt fills max_seq_len."""
    prompt = encode_prompt(tokenizer, question, template, system_prompt)
    answer = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    if len(prompt) >= max_seq_len:
        return None, True
    ids = (prompt + answer)[:max_seq_len]
    return SFTExample(ids, len(prompt)), len(prompt) + len(answer) > max_seq_len


def pack_examples(examples: list[SFTExample], max_seq_len: int) -> list[list[SFTExample]]:
    """Next-fit packing: consecutive examples share a row while their total stays within max_seq_len."""
    rows: list[list[SFTExample]] = []
    for example in examples:
        if rows and sum(map(len, rows[-1])) + len(example) <= max_seq_len:
            rows[-1].append(example)
        else:
            rows.append([example])
    return rows


def build_micro_batches(examples: list[SFTExample], micro_batch_tokens: int, max_seq_len: int, packing: bool,
                        pad_token_id: int) -> list[MicroBatch]:
    """Lay a step's examples out as rows (packed or one each) and group the rows by token budget."""
    rows = pack_examples(examples, max_seq_len) if packing else [[example] for example in examples]
    groups = plan_micro_batches([padded_row_length(sum(map(len, row)), ROW_LENGTH_MULTIPLE) for row in rows],
                                micro_batch_tokens)
    return [_to_tensors([rows[i] for i in group], pad_token_id) for group in groups]


def _to_tensors(rows: list[list[SFTExample]], pad_token_id: int) -> MicroBatch:
    # Rounded up, as the GRPO learner's rows are: CPU kernels keep state for each length they meet.
    width = padded_row_length(max(sum(map(len, row)) for row in rows), ROW_LENGTH_MULTIPLE)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    position_ids = torch.arange(width).repeat(len(rows), 1)
    loss_mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for r, row in enumerate(rows):
        start = 0
        for example in row:
            end = start + len(example)
            input_ids[r, start:end] = torch.tensor(example.input_ids)
            position_ids[r, start:end] = torch.arange(len(example))
            loss_mask[r, start + example.prompt_len:end] = True
            start = end
        # Padding continues the last example's positions, so it forms no extra segment.
        position_ids[r, start:] = torch.arange(len(row[-1]), len(row[-1]) + width - start)
    return MicroBatch(input_ids, position_ids, loss_mask)


def completion_nll_sum(model, batch: MicroBatch) -> torch.Tensor:
    """Summed negative log-likelihood of the completion tokens of a micro-batch (a scalar).

    The output layer runs only on the hidden states that predict a completion token (position t
    predicts token t + 1), in chunks with the GRPO learner's hand-written backward pass
    (`r1train/logprobs.py`), so no [tokens, vocab] logits are kept between the passes; a tied input
    embedding's gradient is added in place (`r1train/tied_embedding.py`: SFT runs in one process
    and takes its loss with `.backward()`).
    """
    device = next(model.parameters()).device
    input_ids = batch.input_ids.to(device)
    embeddings = lookup_embeddings(model, input_ids)
    inputs = dict(input_ids=input_ids) if embeddings is None else dict(inputs_embeds=embeddings)
    hidden = model.get_decoder()(**inputs, position_ids=batch.position_ids.to(device),
                                 use_cache=False).last_hidden_state  # [B, T, H]
    predicts = batch.loss_mask[:, 1:].to(device)  # [B, T-1]
    logprobs, _ = head_token_logprobs(model, hidden[:, :-1][predicts], input_ids[:, 1:][predicts])
    return -logprobs.sum()


class SFTTrainer:
    """Owns the model, optimiser, data order and checkpoints of one SFT stage."""

    def __init__(self, recipe: Recipe, stage_dir: Path, model_name: str):
        self.recipe = cfg = recipe
        self.stage_dir = Path(stage_dir)
        seed_everything(cfg.seed)
        set_threads(cfg.training.threads)
        self.model_dir = resolve_model_dir(model_name)
        self.tokenizer = load_tokenizer(self.model_dir)
        self.device = compute_device()
        t = cfg.training
        model = load_model(self.model_dir, cfg.model.gradient_checkpointing)
        if t.share_prompts and not t.packing:  # before compiling: the layers read the implementation
            use_unpadded_rows(model)
        lora = cfg.model.lora
        if lora.enabled:
            model = with_lora(model, lora.r, lora.alpha, lora.dropout, list(lora.target_modules))
        compiled = t.compile and compile_decoder_layers(model, self.device)
        if t.recompute_mlp_products and not compiled:
            recompute_mlp_products(model)
        self.model = model.to(self.device).train()
        use_bf16 = t.bf16 and bf16_autocast_supported(self.device)
        # The GRPO learner's passes (r1train/policy_scoring.py), one process: SFT's loss is the
        # negative log-likelihood of the completion tokens, the logprobs that learner computes. The
        # scorer holds the passes' settings (autocast, token budget) for the packed rows too.
        self.scorer = PolicyScorer(
            self.model, TokenLogprobsModule(self.model), device=self.device, use_bf16=use_bf16,
            micro_batch_tokens=micro_batch_token_budget(t.micro_batch_tokens, self.device, use_bf16),
            share_prompts=t.share_prompts, chunk_size=LOGPROB_CHUNK_ROWS, temperature=1.0,
            pad_token_id=self.tokenizer.pad_token_id, compiled=compiled)

        self.examples, counts = self._load_examples()
        self.total_steps = math.ceil(t.epochs * len(self.examples) / t.batch_size) if t.epochs else t.steps
        self.sampler = PromptSampler(self.examples, cfg.seed, cfg.data.shuffle)
        self.optimiser = Optimiser(
            [p for p in self.model.parameters() if p.requires_grad], lr=t.learning_rate,
            betas=(t.adam_beta1, t.adam_beta2), weight_decay=t.weight_decay, lr_schedule=t.lr_schedule,
            warmup_steps=t.warmup_steps, total_steps=self.total_steps, state_dtype=t.optimizer_state_dtype)
        print(f"r1train: sft on {len(self.examples)} examples ({counts['truncated']} truncated to "
              f"{t.max_seq_len} tokens, {counts['dropped']} dropped), {self.total_steps} steps of {t.batch_size}, "
              f"{'LoRA' if cfg.model.lora.enabled else 'full'} ({sum(p.numel() for p in self.optimiser.parameters):,} "
              f"trainable parameters), packing {'on' if t.packing else 'off'}", flush=True)
        self.state = RunState(self.stage_dir)
        self.step_count = self.state.restore(self, self.sampler)

    def _load_examples(self) -> tuple[list[SFTExample], dict[str, int]]:
        data, t = self.recipe.data, self.recipe.training
        columns = (data.question_column, data.completion_column)
        sources = ([("train", data.train)] if data.train else []) + [
            (f"mix[{i}]", path) for i, path in enumerate(data.mix)]
        rows = []
        for key, path in sources:
            found = [] if holds_no_rows(path) else load_data(data, key, columns)
            if not found:
                print(f"r1train: sft: data.{key} {path} holds no rows (a rejection sample that kept nothing?); "
                      "training on the other files", flush=True)
            rows += found
        if not rows:
            named = ", ".join(f"data.{key} {path}" for key, path in sources) or "data.train is not set"
            raise DataError(f"sft: no examples to train on ({named}): give data.train or data.mix a file with "
                            f"{' and '.join(columns)} columns, or relax the rejection filters that emptied it")
        template = "r1_chat" if data.prompt_template in BUILT_IN else data.prompt_template
        examples, counts = [], {"truncated": 0, "dropped": 0}
        for row in rows:
            example, truncated = tokenize_example(self.tokenizer, row[data.question_column], row[data.completion_column],
                                                  template, data.system_prompt, t.max_seq_len)
            counts["truncated"] += truncated and example is not None
            counts["dropped"] += example is None
            if example is not None:
                examples.append(example)
        if not examples:
            raise DataError(f"sft: every prompt is at least training.max_seq_len={t.max_seq_len} tokens long; "
                            "raise training.max_seq_len")
        return examples, counts

    # The four methods RunState uses to save and restore a checkpoint.
    def trainable_state(self) -> dict[str, torch.Tensor]:
        return trainable_state(self.model)

    def load_trainable_state(self, weights: dict[str, torch.Tensor]) -> None:
        load_trainable_state(self.model, weights)

    def state_dict(self) -> dict[str, Any]:
        return self.optimiser.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimiser.load_state_dict(state)

    # -----------------------------------------------------------------------------------------
    def train(self) -> Path:
        cfg = self.recipe
        logger = RunLogger.for_recipe(self.stage_dir, cfg, self.total_steps, self.step_count)
        final_dir = self.stage_dir / "model"
        try:
            while self.step_count < self.total_steps:
                self.state.stop_if_interrupted(self.step_count, self, self.sampler, cfg.training.keep_checkpoints)
                step = self.step_count + 1
                metrics = self.step(self.sampler.next_batch(cfg.training.batch_size))
                self.step_count = step
                logger.log(step, metrics)
                logger.progress(step, {"loss": metrics["loss"], "lr": metrics["lr"],
                                       "tok/s": metrics["throughput/learn_tokens_per_s"]})
                if step % cfg.training.checkpoint_every == 0 or step == self.total_steps:
                    self.state.save(step, self, self.sampler, cfg.training.keep_checkpoints)
                # A signal during this step, the last one included, stops here (no model, no DONE).
                self.state.stop_if_interrupted(step, self, self.sampler, cfg.training.keep_checkpoints)
            save_model(self.model, self.tokenizer, final_dir)
            if cfg.data.eval and cfg.evaluation.at_end:
                # The engine loads the saved model beside this one: AdamW's moments (1 GiB for the
                # 135M model) are not needed any more, and the freed pages go back to the OS.
                self.optimiser.release_state()
                return_free_memory()
                # A row of its own at the last step, as GRPO's evaluation before training has.
                logger.log(self.total_steps, evaluate_model_dir(cfg, str(final_dir)))
        finally:
            logger.close()
            self.state.close()
        return final_dir

    def step(self, examples: list[SFTExample]) -> dict[str, float]:
        """One optimiser step on `examples`: accumulate over micro-batches, clip, update."""
        t = self.recipe.training
        start = time.perf_counter()
        completion_tokens, passes = self._micro_batch_nlls(examples)
        lr = self.optimiser.lr
        loss_value, finite = 0.0, True
        for summed_nll in passes:
            loss = summed_nll() / completion_tokens
            if not torch.isfinite(loss):
                finite = False
                break
            loss.backward()
            loss_value += loss.item()
        grad_norm = (torch.nn.utils.clip_grad_norm_(self.optimiser.parameters, t.max_grad_norm).item() if finite
                     else math.nan)
        if not self.optimiser.step(finite=finite and math.isfinite(grad_norm)):
            self._report_skipped_step()
        elapsed = time.perf_counter() - start
        tokens = sum(len(e) for e in examples)
        return {
            "loss": loss_value if finite else math.nan, "lr": lr, "grad_norm": grad_norm,
            "tokens": tokens, "completion_tokens": completion_tokens, "micro_batches": len(passes),
            "epoch": self.sampler.epoch + self.sampler.position / len(self.examples),
            "nan_skipped_steps": self.optimiser.nan_skipped_steps, "time/step": elapsed,
            "throughput/learn_tokens_per_s": tokens / max(elapsed, 1e-9),
        }

    def _micro_batch_nlls(self, examples: list[SFTExample]) -> tuple[int, list[Callable[[], torch.Tensor]]]:
        """The completion tokens of `examples` and, for each micro-batch, a function computing its
        summed negative log-likelihood of them: through the GRPO learner's passes (unpadded where
        the attention is sdpa: every token once, the prompts' common start once), or with
        `training.packing` through rows of several examples each."""
        t = self.recipe.training
        if t.packing:
            batches = build_micro_batches(examples, self.scorer.micro_batch_tokens, t.max_seq_len, True,
                                          self.tokenizer.pad_token_id)

            def packed_nll(batch: MicroBatch) -> torch.Tensor:
                with self.scorer.autocast():
                    return completion_nll_sum(self.model, batch)

            return (sum(int(b.loss_mask.sum()) for b in batches),
                    [functools.partial(packed_nll, batch) for batch in batches])
        prompts = [e.input_ids[:e.prompt_len] for e in examples]
        completions = [e.input_ids[e.prompt_len:] for e in examples]

        def nll(packs: list[list[int]]) -> torch.Tensor:
            logprobs, _ = self.scorer.logprobs(prompts, completions, packs, with_entropy=False)
            return -logprobs.sum()

        plan = self.scorer.plan(prompts, completions, list(range(len(examples))))
        return sum(map(len, completions)), [functools.partial(nll, packs) for packs in plan]

    def _report_skipped_step(self) -> None:
        print(f"r1train: non-finite loss or gradient at step {self.step_count + 1}: step skipped "
              f"({self.optimiser.consecutive_nan_steps} in a row)", flush=True)
        self.optimiser.check_nan_limit(self.recipe.training.max_nan_steps, self.state.checkpoint_dir,
                                       "lower training.learning_rate")


def run_sft(recipe: Recipe, stage_dir: Path, model_name: str) -> Path:
    """Fine-tune `model_name` on data.train and data.mix; returns the saved model folder.

    Resumes from the newest checkpoint in `stage_dir/checkpoints` when there is one.
    """
    return SFTTrainer(recipe, stage_dir, model_name).train()
