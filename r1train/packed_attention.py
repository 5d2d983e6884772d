"""Attention for shared-prompt rows that computes only the pairs the block mask allows.

A packed row (`r1train/packing.py`) holds a prompt and then several completions of it:

    [ prompt | completion 1 | completion 2 | ... ]

Under the block mask a completion token attends to the prompt and to its own earlier tokens; a
prompt token to the earlier prompt tokens. Given that mask, transformers' "sdpa" runs the dense
kernel over the whole L x L square of the row: on the toy recipes (prompts of about 100 tokens,
8 completions of 20-60) about three times the pairs the mask allows, and attention was 17% of the
learner's time in the profile (benchmarks/results/bench_learner_profile_2026-12-03.txt).

Here the row is taken apart instead, using the `PackedLayout` the packer made:
- the prompts, one per row, run through causal attention (the kernel skips the upper triangle);
- the completions, one per sample, each attend to [its row's prompt keys | its own keys] under a
  small mask (prompt padding hidden, own keys causal);
- the outputs go back to their positions in the rows; padding positions get zeros.
Each completion token thus sees the very keys it saw under the block mask, so the outputs equal
the dense path's up to floating-point summation order (tests compare values and gradients).

It is a transformers attention implementation ("r1train_packed"), set on the learner's model in
place of "sdpa" (`use_packed_attention`). Calls that carry no layout (plain rows, the reference
pass on unpacked batches, generation with the HF engine) go to transformers' own "sdpa" function.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

PACKED_ATTENTION = "r1train_packed"
LAYOUT_KWARG = "packed_layout"  # the keyword the decoder passes down to every attention call


@dataclass
class PackedLayout:
    """Where the prompts and completions of R packed rows of length L sit, as flat indices into
    the R * L positions. N completions; prompts padded to P, completions to C."""

    prompt_index: torch.Tensor  # [R, P] long; padding slots point at position 0 of their row
    completion_index: torch.Tensor  # [N, C] long; padding slots point at position 0 of their row
    completion_row: torch.Tensor  # [N] long: the row (and so the prompt) of each completion
    completion_mask: torch.Tensor  # [N, 1, C, P + C] bool: the keys each completion query may see
    output_index: torch.Tensor  # [R * L] long into [R * P prompt outputs | N * C completion outputs | a zero]
    additive_masks: dict = field(default_factory=dict, repr=False)  # by dtype, see `additive_mask`

    def to(self, device: torch.device) -> "PackedLayout":
        return PackedLayout(*(getattr(self, name).to(device) for name in _TENSORS))

    def additive_mask(self, dtype: torch.dtype) -> torch.Tensor:
        """`completion_mask` as 0 / -inf in `dtype`, made once per batch: given a boolean mask the
        kernel converts it on every call (every layer, forward and backward)."""
        if dtype not in self.additive_masks:
            self.additive_masks[dtype] = torch.zeros(self.completion_mask.shape, dtype=dtype, device=self.completion_mask.device
                                                     ).masked_fill(~self.completion_mask, float("-inf"))
        return self.additive_masks[dtype]


_TENSORS = ("prompt_index", "completion_index", "completion_row", "completion_mask", "output_index")


def make_layout(rows: int, width: int, prompts: list[tuple[int, int]],
                completions: list[tuple[int, int, int]]) -> PackedLayout:
    """The layout of `rows` packed rows of `width` positions.

    Args:
        prompts: (row, length) of each row's prompt, at the row's start, in row order.
        completions: (row, start, length) of each completion, in sample order.
    """
    prompt_width = max(length for _, length in prompts)
    completion_width = max([1] + [length for _, _, length in completions])
    samples = len(completions)
    prompt_index = torch.zeros(rows, prompt_width, dtype=torch.long)
    prompt_valid = torch.zeros(rows, prompt_width, dtype=torch.bool)
    completion_index = torch.zeros(samples, completion_width, dtype=torch.long)
    completion_row = torch.zeros(samples, dtype=torch.long)
    own_keys = torch.zeros(samples, completion_width, dtype=torch.bool)
    zero_output = rows * prompt_width + samples * completion_width
    output_index = torch.full((rows * width,), zero_output, dtype=torch.long)
    for row, length in prompts:
        prompt_index[row] = row * width
        prompt_index[row, :length] = row * width + torch.arange(length)
        prompt_valid[row, :length] = True
        output_index[row * width: row * width + length] = row * prompt_width + torch.arange(length)
    for n, (row, start, length) in enumerate(completions):
        completion_row[n] = row
        completion_index[n] = row * width
        completion_index[n, :length] = row * width + start + torch.arange(length)
        own_keys[n, :length] = True
        first = rows * prompt_width + n * completion_width
        output_index[row * width + start: row * width + start + length] = first + torch.arange(length)
    causal = torch.ones(completion_width, completion_width, dtype=torch.bool).tril()
    own = causal & own_keys.unsqueeze(1)  # [N, C, C]
    # Every query sees its prompt's first token at least, so no row of the softmax is empty.
    sees_prompt = prompt_valid[completion_row].unsqueeze(1).expand(-1, completion_width, -1)  # [N, C, P]
    completion_mask = torch.cat([sees_prompt, own], dim=2).unsqueeze(1)
    return PackedLayout(prompt_index, completion_index, completion_row, completion_mask, output_index)


def packed_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                     **kwargs) -> tuple[torch.Tensor, None]:
    """transformers attention function: [R, H, L, D] query, [R, Hkv, L, D] key and value in,
    [R, L, H, D] out. With `packed_layout` in kwargs the rows are packed ones (module docstring);
    without, this is transformers' "sdpa"."""
    layout: PackedLayout | None = kwargs.pop(LAYOUT_KWARG, None)
    if layout is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    rows, heads, width, head_size = query.shape
    # Grouped-query attention in the kernel: no copies of the key and value heads.
    grouped = dict(enable_gqa=True) if key.shape[1] != heads else {}

    def by_position(states: torch.Tensor) -> torch.Tensor:  # [R, h, L, D] -> [R * L, h, D]
        return states.transpose(1, 2).reshape(rows * width, states.shape[1], head_size)

    def gather(states: torch.Tensor, index: torch.Tensor) -> torch.Tensor:  # -> [B, H, T, D]
        return states[index.flatten()].unflatten(0, index.shape).transpose(1, 2)

    q, k, v = by_position(query), by_position(key), by_position(value)
    prompt_k, prompt_v = gather(k, layout.prompt_index), gather(v, layout.prompt_index)
    prompt_out = F.scaled_dot_product_attention(gather(q, layout.prompt_index), prompt_k, prompt_v,
                                                is_causal=True, scale=scaling, **grouped)
    completion_k = torch.cat([prompt_k[layout.completion_row], gather(k, layout.completion_index)], dim=2)
    completion_v = torch.cat([prompt_v[layout.completion_row], gather(v, layout.completion_index)], dim=2)
    completion_q = gather(q, layout.completion_index)
    completion_out = F.scaled_dot_product_attention(completion_q, completion_k, completion_v, scale=scaling,
                                                    attn_mask=layout.additive_mask(completion_q.dtype), **grouped)
    outputs = torch.cat([prompt_out.transpose(1, 2).flatten(0, 1), completion_out.transpose(1, 2).flatten(0, 1),
                         prompt_out.new_zeros(1, heads, head_size)])
    return outputs[layout.output_index].unflatten(0, (rows, width)), None


AttentionInterface.register(PACKED_ATTENTION, packed_attention)
# Masks as for "sdpa": calls without a layout need them, packed calls ignore them.
AttentionMaskInterface.register(PACKED_ATTENTION, sdpa_mask)


def use_packed_attention(model: torch.nn.Module) -> bool:
    """Give `model` (an HF model on "sdpa") this attention; False, and nothing changed, for any
    other implementation (eager keeps the dense mask, FlashAttention and the rest do not pack)."""
    config = getattr(model, "config", None)
    if getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    model.set_attn_implementation(PACKED_ATTENTION)
    return model.config._attn_implementation == PACKED_ATTENTION
