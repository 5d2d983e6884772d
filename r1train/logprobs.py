"""Per-token log-probabilities of completion tokens, without full-vocabulary logits for the batch.

A plain `model(input_ids).logits.log_softmax(-1)` materialises fp32 [B, L, V] logits and a second
tensor of the same size for the log-softmax, for every position, prompt included; with a 49k
vocabulary that dominates the learner's memory and much of its time. Here the decoder runs once,
the hidden states of the positions that predict completion tokens are picked out (in a plain row
position t predicts token t + 1; packed rows, `r1train/packing.py`, say where), and the output
embedding, log-softmax and gather run over chunks of those positions. The backward pass keeps
only each chunk's inputs and recomputes its logits, instead of storing every chunk's logits: a
plain output layer through the hand-written gradients of `r1train/fused_head.py`, any other
through a (non-reentrant) activation checkpoint of the chunk.

Deliberate simplification: the logits are taken to be `model.get_output_embeddings()` applied to
the decoder's last hidden state, divided by the sampling temperature. That holds for Llama, Qwen,
Mistral and SmolLM; models that post-process logits (Gemma 2's soft-capping) are not handled.
"""
from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from r1train.fused_head import head_logprobs
from r1train.packing import ScoringBatch
from r1train.tied_embedding import lookup_embeddings


def compute_token_logprobs(
    model: torch.nn.Module,
    batch: ScoringBatch,
    chunk_size: int = 1024,
    with_entropy: bool = False,
    temperature: float = 1.0,
    tied_gradient_in_place: bool = False,
    compiled_head: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probabilities (and optionally entropies) of the completion tokens of a batch.

    Works with a plain HF causal LM and through peft (`get_decoder()` reaches the wrapped decoder),
    under autocast, and under `torch.no_grad()` (reference and old logprobs), where no
    checkpointing is needed.

    Args:
        model: a causal LM with `get_decoder()` and `get_output_embeddings()`.
        batch: the rows to run and where each scored token sits in them: plain padded rows
            (`ScoringBatch.from_padded`), packed ones (`r1train.packing.pack`) or one unpadded
            sequence (`r1train.unpadded_rows.pack_unpadded`).
        chunk_size: positions per output-embedding chunk; bounds the logits held at once to
            chunk_size * V floats.
        with_entropy: also return the entropy of each predicted distribution.
        temperature: the sampling temperature; logprobs are those of the tempered distribution
            the rollouts were drawn from.
        tied_gradient_in_place: add a tied input embedding's gradient straight into the weight's
            `.grad` (`r1train/tied_embedding.py`): one [V, H] gradient at the end of the backward
            pass instead of two. Only for a loss taken with `.backward()` (`torch.autograd.grad`
            would return the output layer's part of that weight's gradient alone) and outside
            data-parallel wrappers (their reduction hooks would miss the added rows).
        compiled_head: the plain output layer's elementwise work in compiled kernels
            (`r1train/fused_head.py`); where torch.compile works, as for compiled decoder layers.

    Returns:
        logprobs: [N, T] float32 (float64 for a float64 model), N = batch.samples, T = batch.width;
            row n holds sample n's completion tokens' logprobs left-aligned, zeros after them.
        entropy: [N, T] like logprobs, or None without `with_entropy`.
    """
    embeddings = lookup_embeddings(model, batch.input_ids) if tied_gradient_in_place else None
    inputs = dict(input_ids=batch.input_ids) if embeddings is None else dict(inputs_embeds=embeddings)
    hidden = model.get_decoder()(**inputs, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
                                 use_cache=False, **(batch.layout or {})).last_hidden_state
    logprobs, entropy = head_token_logprobs(model, hidden.flatten(0, 1)[batch.source], batch.target,
                                            chunk_size=chunk_size, with_entropy=with_entropy,
                                            temperature=temperature, compiled_head=compiled_head)

    def left_aligned(values: torch.Tensor) -> torch.Tensor:
        """The flat [K] values as [N, T], each sample's tokens left-aligned in order."""
        return values.new_zeros(batch.samples, batch.width).index_put((batch.sample, batch.column), values)

    return left_aligned(logprobs), (left_aligned(entropy) if with_entropy else None)


def head_token_logprobs(
    model: torch.nn.Module,
    hidden_at: torch.Tensor,
    targets: torch.Tensor,
    chunk_size: int = 1024,
    with_entropy: bool = False,
    temperature: float = 1.0,
    compiled_head: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probabilities [K] of `targets` [K] (and entropies [K], or None) from the decoder's hidden
    states [K, H] at the positions that predict them, through the model's output layer in chunks
    of `chunk_size` rows: the part of `compute_token_logprobs` after the decoder, also used on its
    own by SFT's loss. Arguments as there."""
    head = model.get_output_embeddings()
    # A plain output layer gets the hand-written backward pass (r1train/fused_head.py); anything
    # else (a bias, an adapter wrapped around it) goes through autograd with checkpointed chunks.
    if type(head) is torch.nn.Linear and head.bias is None:
        return head_logprobs(hidden_at, head.weight, targets, temperature, with_entropy, chunk_size,
                             compiled=compiled_head)

    def chunk_logprobs(h: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits = head(h)  # [C, V]; at least fp32 for the normaliser, even under autocast
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        if temperature != 1.0:
            logits = logits / temperature
        log_normaliser = torch.logsumexp(logits, dim=-1)
        logprobs = logits.gather(-1, y.unsqueeze(-1)).squeeze(-1) - log_normaliser
        if not with_entropy:
            return (logprobs,)
        entropy = log_normaliser - (torch.softmax(logits, dim=-1) * logits).sum(-1)
        return logprobs, entropy

    flat = _checkpointed_chunks(chunk_logprobs, hidden_at, targets, chunk_size, 2 if with_entropy else 1)
    return flat[0], (flat[1] if with_entropy else None)


def _checkpointed_chunks(chunk_logprobs, hidden_at, targets, chunk_size, outputs):
    """`chunk_logprobs` over chunks of rows, each chunk an activation checkpoint when training."""
    pieces = []
    for start in range(0, targets.numel(), chunk_size):
        args = (hidden_at[start:start + chunk_size], targets[start:start + chunk_size])
        if torch.is_grad_enabled():
            pieces.append(checkpoint(chunk_logprobs, *args, use_reentrant=False))
        else:
            pieces.append(chunk_logprobs(*args))
    if not pieces:
        return [hidden_at.new_zeros(0, dtype=torch.promote_types(hidden_at.dtype, torch.float32))] * outputs
    return [torch.cat(parts) for parts in zip(*pieces)]  # [K] each
