"""Scoring completions under the policy: micro-batches planned by a token budget, then the pass.

`PolicyScorer` is the learner's forward side. `plan` splits samples into micro-batches of at most
`micro_batch_tokens` tokens, `logprobs` runs one of them (with gradient when the caller is
training) and `compute_logprobs` scores a whole batch without gradient: the old policy for
several updates a batch, the frozen reference model, or the policy the trainer checks a weight sync
against.

Speed on CPU comes from not doing work: no logits for prompt positions and never a full
[B, L, V] fp32 logits tensor (`r1train/logprobs.py`), a group's prompt run once for all of its
completions where that saves work (`r1train/packing.py`), a micro-batch's tokens run as one
sequence without padding and with the start all its prompts share run once
(`r1train/unpadded_rows.py`), and bf16 autocast where the hardware has native bf16 (AMX or
AVX512-BF16 on CPU; most GPUs).
"""
from __future__ import annotations

import contextlib

import torch

from r1train.batching import plan_micro_batches
from r1train.distributed import all_reduce_max
from r1train import fsdp as fsdp_sharding
from r1train.logprobs import compute_token_logprobs
from r1train.optimiser import bf16_autocast
from r1train.packing import (ROW_LENGTH_MULTIPLE, ScoringBatch, pack, pack_length, packing_supported,
                             padded_row_length, plan_packs)
from r1train.unpadded_rows import common_prefix_length, pack_unpadded, unpadded

# Rows of output-layer logits at once (r1train/fused_head.py): 512 (256 in the pass with entropies)
# was as fast as 1024 and kept the learn phase's peak about 0.1 GiB lower.
LOGPROB_CHUNK_ROWS = 512


class TokenLogprobsModule(torch.nn.Module):
    """The policy with `compute_token_logprobs` as its forward pass.

    Data-parallel wrappers (DDP, FSDP, DeepSpeed) hook a module's `forward`; the learner's pass
    reaches the decoder and output embedding directly, so it is made the forward of this module,
    which is what gets wrapped.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: ScoringBatch, **options):
        # A sharded model carries the pass as a registered method that gathers its root weights.
        score = getattr(self.model, fsdp_sharding.TOKEN_LOGPROBS, None)
        if score is not None:
            return score(batch, **options)
        return compute_token_logprobs(self.model, batch, **options)


class PolicyScorer:
    """Runs `policy` (the model's `TokenLogprobsModule`, wrapped when data-parallel) over samples.

    `world_size` and `sharded` describe the data-parallel launch: sharded passes gather weights
    collectively, so every process runs as many of them; with one process the tied output
    embedding's gradient may be added in place. `compiled` uses the compiled output layer
    (`r1train/fused_head.py`).
    """

    def __init__(self, model: torch.nn.Module, policy: torch.nn.Module, *, device: torch.device,
                 use_bf16: bool, micro_batch_tokens: int, share_prompts: bool, chunk_size: int,
                 temperature: float, pad_token_id: int, world_size: int = 1, sharded: bool = False,
                 compiled: bool = False):
        self.model = model
        self.policy = policy
        self.device = device
        self.use_bf16 = use_bf16
        self.micro_batch_tokens = micro_batch_tokens
        self.share_prompts = share_prompts
        self.chunk_size = chunk_size
        self.temperature = temperature
        self.pad_token_id = pad_token_id
        self.world_size = world_size
        self.sharded = sharded
        self.compiled = compiled

    def autocast(self):
        return bf16_autocast(self.device, self.use_bf16)

    def plan(self, prompt_ids: list[list[int]], completion_ids: list[list[int]], indices: list[int],
             model: torch.nn.Module | None = None) -> list[list[list[int]]]:
        """Micro-batches of the samples `indices`: each a list of packs (samples scored in one
        row, see `r1train/packing.py`; one sample per pack where `model`, default the policy,
        cannot take packed rows), at most `micro_batch_tokens` tokens (padded ones for padded rows)."""
        scorer = self.model if model is None else model
        # Packing decides by the model's width (see `plan_packs`); None turns it off.
        hidden_size = scorer.config.hidden_size if self.share_prompts and packing_supported(scorer) else None
        packs = plan_packs([prompt_ids[i] for i in indices], [completion_ids[i] for i in indices],
                           self.micro_batch_tokens, hidden_size)
        packs = [[indices[j] for j in members] for members in packs]
        if unpadded(scorer):  # budgeted by tokens; every micro-batch shares at least the whole batch's prefix
            shared = common_prefix_length([prompt_ids[members[0]] for members in packs]) if len(packs) > 1 else 0
            lengths = [pack_length(members, prompt_ids, completion_ids) - shared for members in packs]
            plan = plan_micro_batches(lengths, self.micro_batch_tokens - shared, padded=False)
        else:
            lengths = [padded_row_length(pack_length(members, prompt_ids, completion_ids), ROW_LENGTH_MULTIPLE)
                       for members in packs]
            plan = plan_micro_batches(lengths, self.micro_batch_tokens)
        return [[packs[j] for j in group] for group in plan]

    def logprobs(self, prompt_ids, completion_ids, packs, with_entropy, model=None):
        """Logprobs (and entropies) of the samples in `packs`, rows in their flattened order."""
        scorer = self.model if model is None else model
        if unpadded(scorer):
            batch = pack_unpadded(prompt_ids, completion_ids, packs, self.pad_token_id, self.device,
                                  ROW_LENGTH_MULTIPLE)
        else:
            batch = pack(prompt_ids, completion_ids, packs, self.pad_token_id, self.device,
                         scorer.config._attn_implementation, width_multiple=ROW_LENGTH_MULTIPLE)
        with self.autocast():
            return (self.policy if model is None else TokenLogprobsModule(model))(
                batch, chunk_size=self.chunk_size, with_entropy=with_entropy, temperature=self.temperature,
                tied_gradient_in_place=self.world_size == 1,  # .backward() losses, no data-parallel hooks
                compiled_head=self.compiled,
            )

    @torch.no_grad()
    def compute_logprobs(
        self, prompt_ids: list[list[int]], completion_ids: list[list[int]], disable_adapters: bool = False,
        model: torch.nn.Module | None = None,
    ) -> list[torch.Tensor]:
        """Per-token logprobs of each completion under the current weights, without gradient.

        With LoRA, `disable_adapters=True` scores under the base model: that is the frozen
        reference policy, with no second copy of the model in memory. `model` scores under another
        model instead (a separately loaded frozen reference), with the learner's batching and dtype.

        Returns:
            N CPU tensors (float32; float64 for a float64 model), each [len(completion_ids[i])].
        """
        scorer = self.policy if model is None else model
        was_training = scorer.training
        scorer.eval()
        results: list[torch.Tensor | None] = [None] * len(prompt_ids)
        groups = self.plan(prompt_ids, completion_ids, list(range(len(prompt_ids))), model)
        # Sharded passes gather weights collectively: a process with fewer passes runs empty ones
        # too, counted before any pass runs (a count taken after them would meet another
        # process's weight gathering instead).
        padding_passes = all_reduce_max(len(groups)) - len(groups) if self.sharded and model is None else 0
        try:
            for packs in groups:
                adapters_off = (self.model if model is None else model).disable_adapter() if disable_adapters else None
                with adapters_off or contextlib.nullcontext():
                    logprobs, _ = self.logprobs(prompt_ids, completion_ids, packs, False, model)
                for row, index in enumerate(i for members in packs for i in members):
                    results[index] = logprobs[row, : len(completion_ids[index])].cpu()
            for _ in range(padding_passes):
                self.zero_loss()
        finally:
            scorer.train(was_training)
        return results

    def zero_loss(self) -> torch.Tensor:
        """A zero loss that reaches every parameter: one pad token scored after another."""
        tokens = [[self.pad_token_id]]
        logprobs, _ = self.logprobs(tokens, tokens, [[0]], False)
        return logprobs.sum() * 0.0
