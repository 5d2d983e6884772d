"""Attention under a custom mask for the CPU learner: torch's flash kernel forward, the backward
pass written out.

Shared-prompt packing (`r1train/packing.py`) gives the model a 4-D boolean mask per row, so its
attention cannot take the causal kernels and goes through torch's CPU flash-attention kernel under
the mask. That kernel's forward pass is quick, but its backward pass, which works through the row in
small blocks with one small matrix product call per block and head, took 20.7 ms a layer against
the forward's 3.6 ms at the main recipe's rows (8 rows of about 300 tokens, 9 heads, bf16, AMX
machine, 2026-12-06). With the learner's layers compiled and checkpointed, replacing attention by a
stand-in of the same shape took a learner step from 2.80-2.97 to 1.91-1.93 s: attention was a third
of the step, most of it that backward pass.

Here the forward pass is the same kernel, which also returns each query's log-normaliser, and the
backward pass is the textbook one over whole rows: scores again (in float32, as the kernel computes
them), probabilities from the saved normalisers, then four batched products in the input dtype,
which inductor fuses with the elementwise work around them inside compiled layers (one layer's
backward 10.7-11.0 ms against 19.2-19.5 ms compiled). The gradients are those of the same function,
to rounding: relative errors against float64 of 5.8e-3, 5.8e-3 and 2.5e-3 for queries, keys and
values against the kernel's 3.8e-3, 4.6e-3 and 3.7e-3 (with bf16 scores they were 1.7e-2: hence
float32). The price is memory: the backward pass holds [rows, heads, L, L] float32 scores, about
30 MB a layer at those rows, freed layer by layer.

Only training passes on a CPU under a boolean 4-D mask take this way; everything else (no mask,
the causal case, no gradient, dropout, GPUs, whose kernels are fast) goes to transformers' sdpa
attention. `use_in(model)` points a model with sdpa attention at it.
"""
from __future__ import annotations

import torch

NAME = "r1train_masked_sdpa"  # the attention implementation's name in transformers' registry


class _FlashForwardWrittenBackward(torch.autograd.Function):
    """softmax(q k^T * scale, masked) v for q, k, v [B, H, L, D] (as many key heads as query
    heads) and a boolean mask broadcastable to [B, H, L, L]; out [B, H, L, D]."""

    @staticmethod
    def forward(ctx, query, key, value, mask, scale):
        additive = torch.zeros(mask.shape, dtype=query.dtype, device=query.device).masked_fill_(~mask, float("-inf"))
        out, log_normaliser = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            query, key, value, 0.0, False, attn_mask=additive, scale=scale)
        ctx.save_for_backward(query, key, value, mask, out, log_normaliser)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, grad_out):
        query, key, value, mask, out, log_normaliser = ctx.saved_tensors
        scale = ctx.scale
        # A query that sees no key (none in packed rows) has no probabilities: zero, not NaN.
        log_normaliser = log_normaliser.masked_fill(torch.isinf(log_normaliser), 0.0).unsqueeze(-1)
        wide = torch.promote_types(query.dtype, torch.float32)  # scores and probabilities at least fp32
        scores = torch.matmul(query.to(wide), key.to(wide).transpose(-1, -2))
        probs = torch.exp(scores * scale - log_normaliser).masked_fill(~mask, 0.0)
        grad_out = grad_out.contiguous()
        grad_value = torch.matmul(probs.to(value.dtype).transpose(-1, -2), grad_out)
        grad_probs = torch.matmul(grad_out, value.transpose(-1, -2)).to(wide)
        # d(softmax): p * (dp - sum_j p_j dp_j), the sum being (dO . O) per query.
        row_dot = (grad_out.to(wide) * out.to(wide)).sum(-1, keepdim=True)
        grad_scores = (probs * (grad_probs - row_dot)).to(query.dtype)
        grad_query = torch.matmul(grad_scores, key) * scale
        grad_key = torch.matmul(grad_scores.transpose(-1, -2), query) * scale
        return grad_query, grad_key, grad_value, None, None


def _takes(query: torch.Tensor, mask: torch.Tensor | None, dropout: float, kwargs: dict) -> bool:
    return (mask is not None and mask.dtype == torch.bool and mask.dim() == 4 and query.device.type == "cpu"
            and torch.is_grad_enabled() and query.requires_grad and dropout == 0.0
            and kwargs.get("position_bias") is None and kwargs.get("cache") is None)


def masked_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                     **kwargs) -> tuple[torch.Tensor, None]:
    """A transformers attention function (query [B, H, L, D], key and value [B, KV, L, D]; returns
    [B, L, H, D]): the written-out backward pass where it applies (see the module docstring),
    transformers' sdpa attention elsewhere."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if not _takes(query, attention_mask, dropout, kwargs):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    if torch.is_autocast_enabled("cpu"):  # as autocast gives sdpa its inputs (rotary embeddings leave fp32 ones)
        dtype = torch.get_autocast_dtype("cpu")
        query, key, value = query.to(dtype), key.to(dtype), value.to(dtype)
    groups = query.shape[1] // key.shape[1]  # grouped-query attention: key heads shared by query heads
    key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    out = _FlashForwardWrittenBackward.apply(query, key, value, attention_mask, scale)
    return out.transpose(1, 2).contiguous(), None


def use_in(model: torch.nn.Module) -> bool:
    """Point `model` (transformers' sdpa attention, on a CPU) at `masked_attention`; False, and
    nothing changed, for any other model."""
    config = getattr(model, "config", None)
    if getattr(config, "_attn_implementation", None) != "sdpa" or next(model.parameters()).device.type != "cpu":
        return False
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, masked_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)  # the masks sdpa gets: boolean, or None when causal
    config._attn_implementation = NAME
    return True
