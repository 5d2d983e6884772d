"""Per-token log-probabilities of completion tokens, without full-vocabulary logits for the batch.

A plain `model(input_ids).logits.log_softmax(-1)` materialises fp32 [B, L, V] logits and a second
tensor of the same size for the log-softmax, for every position, prompt included; with a 49k
vocabulary that dominates the learner's memory and much of its time. Here the decoder runs once,
the hidden states of the positions that predict completion tokens are picked out (position t
predicts token t + 1), and the output embedding, log-softmax and gather run over chunks of those
positions. Each chunk is wrapped in a (non-reentrant) activation checkpoint, so the backward pass
keeps only the chunk's inputs and recomputes its logits, instead of storing every chunk's logits.

Deliberate simplification: the logits are taken to be `model.get_output_embeddings()` applied to
the decoder's last hidden state, divided by the sampling temperature. That holds for Llama, Qwen,
Mistral and SmolLM; models that post-process logits (Gemma 2's soft-capping) are not handled.
"""
from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint


def compute_token_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completion_mask: torch.Tensor,
    chunk_size: int = 1024,
    with_entropy: bool = False,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probabilities (and optionally entropies) of the completion tokens of a batch.

    Works with a plain HF causal LM and through peft (`get_decoder()` reaches the wrapped decoder),
    under autocast, and under `torch.no_grad()` (reference and old logprobs), where no
    checkpointing is needed.

    Args:
        model: a causal LM with `get_decoder()` and `get_output_embeddings()`.
        input_ids: [B, L] prompt + completion tokens, right-padded.
        attention_mask: [B, L] 1 on real tokens.
        completion_mask: [B, L] 1 on the completion tokens whose logprobs are wanted; position 0
            cannot be one (nothing predicts it). Each row's completion tokens are read in order.
        chunk_size: positions per output-embedding chunk; bounds the logits held at once to
            chunk_size * V floats.
        with_entropy: also return the entropy of each predicted distribution.
        temperature: the sampling temperature; logprobs are those of the tempered distribution
            the rollouts were drawn from.

    Returns:
        logprobs: [B, T] float32 (float64 for a float64 model), T = most completion tokens in a row; row b holds its completion
            tokens' logprobs left-aligned, zeros after them.
        entropy: [B, T] like logprobs, or None without `with_entropy`.
    """
    if completion_mask[:, 0].any():
        raise ValueError("completion_mask marks position 0, which no position predicts")
    hidden = model.get_decoder()(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    predicts = completion_mask[:, 1:].bool()  # [B, L-1]: position t predicts token t+1
    hidden_at = hidden[:, :-1][predicts]  # [K, H]
    targets = input_ids[:, 1:][predicts]  # [K]
    head = model.get_output_embeddings()

    def chunk_logprobs(h: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits = head(h)  # [C, V]; at least fp32 for the normaliser, even under autocast
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32)) / temperature
        log_normaliser = torch.logsumexp(logits, dim=-1)
        logprobs = logits.gather(-1, y.unsqueeze(-1)).squeeze(-1) - log_normaliser
        if not with_entropy:
            return (logprobs,)
        entropy = log_normaliser - (torch.softmax(logits, dim=-1) * logits).sum(-1)
        return logprobs, entropy

    pieces = []
    for start in range(0, targets.numel(), chunk_size):
        args = (hidden_at[start:start + chunk_size], targets[start:start + chunk_size])
        if torch.is_grad_enabled():
            pieces.append(checkpoint(chunk_logprobs, *args, use_reentrant=False))
        else:
            pieces.append(chunk_logprobs(*args))
    if pieces:
        flat = [torch.cat(parts) for parts in zip(*pieces)]  # [K] each
    else:
        flat = [hidden.new_zeros(0, dtype=torch.float32)] * (2 if with_entropy else 1)

    # Scatter the flat [K] values back to [B, T], each row's tokens left-aligned in order.
    rows = torch.arange(predicts.shape[0], device=predicts.device).unsqueeze(1).expand_as(predicts)[predicts]
    cols = (predicts.long().cumsum(dim=1) - 1)[predicts]
    width = int(predicts.sum(dim=1).max().item()) if predicts.numel() else 0
    out = [values.new_zeros(predicts.shape[0], width).index_put((rows, cols), values) for values in flat]
    return out[0], (out[1] if with_entropy else None)
