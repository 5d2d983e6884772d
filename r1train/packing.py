"""Shared-prompt packing: score a group's completions with its prompt computed once.

GRPO samples G completions per prompt, and a plain learner pass runs the prompt through the
model G times, once per (prompt, completion) row. On the R1-Zero toy data the prompt is about as
long as a completion, so that is close to half of the learner's work. Here the completions of one
prompt can share a row instead, the prompt followed by each completion in turn:

    [ prompt | completion 1 | completion 2 | ... ]

An attention mask keeps them apart (a completion attends to the prompt and to its own earlier
tokens, never to another completion), position ids restart after the prompt for each completion,
and the first token of every completion is predicted from the prompt's last position. Every
completion token then sees exactly the context it had in its own row, so logprobs and gradients
are those of the unpacked pass, up to floating-point summation order.

The price is attention computed in vain: a custom mask rules out the causal kernels' skipping, so
a row of length L costs attention over all L x L pairs. Completions join a pack only while the
prompt tokens saved outweigh that extra attention (see `_work`), which on short-completion
workloads packs whole groups and on long completions leaves rows unpacked.

Packing needs an attention implementation that takes a custom 4-D mask: transformers' "sdpa"
(a boolean mask) or "eager" (an additive float mask); `packing_supported` says whether a model
has one. FlashAttention-2 and the others fall back to one row per sample.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

MASKED_ATTENTION = ("sdpa", "eager")  # transformers attention implementations given a 4-D mask
# The learner's own implementation (r1train/unpadded_rows.py): packs of one unpadded sequence.
UNPADDED_ATTENTION = "r1train_unpadded"
# The GRPO learner and the SFT stage pad their rows to a multiple of this many tokens: the CPU
# attention kernel keeps state for every row length it meets, for the life of the process
# (r1train/cpu_caches.py), and rounded lengths bound how many a run meets, for at most 31 padding
# tokens per row.
ROW_LENGTH_MULTIPLE = 32


@dataclass
class ScoringBatch:
    """Model inputs of one learner pass and where each scored completion token sits in them.

    K completion tokens of N samples are scored; token k is `target[k]`, predicted by the model's
    output at flat position `source[k]` (row * L + column of `input_ids`), and is token `column[k]`
    of sample `sample[k]`'s completion.
    """

    input_ids: torch.Tensor  # [R, L]
    attention_mask: torch.Tensor  # [R, L] 1 on real tokens; or [R, 1, L, L], packed rows (see `pack`)
    position_ids: torch.Tensor | None  # [R, L]; None: 0, 1, 2, ... along each row
    source: torch.Tensor  # [K] long
    target: torch.Tensor  # [K] long
    sample: torch.Tensor  # [K] long
    column: torch.Tensor  # [K] long
    samples: int  # N
    width: int  # longest completion: outputs are [N, width]
    # An unpadded sequence's attention rows (r1train/unpadded_rows.py), passed to the decoder as
    # keyword arguments; None for rows.
    layout: dict[str, torch.Tensor] | None = None

    @classmethod
    def from_padded(cls, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    completion_mask: torch.Tensor) -> "ScoringBatch":
        """One sample per right-padded row, `completion_mask` 1 on its scored tokens (position t
        predicts token t + 1, so position 0 cannot be scored)."""
        if completion_mask[:, 0].any():
            raise ValueError("completion_mask marks position 0, which no position predicts")
        predicts = completion_mask[:, 1:].bool()  # [R, L-1]
        rows, positions = predicts.nonzero(as_tuple=True)  # row-major: each row's tokens in order
        columns = (predicts.long().cumsum(dim=1) - 1)[rows, positions]
        width = int(predicts.sum(dim=1).max()) if predicts.numel() else 0
        return cls(input_ids, attention_mask, None, rows * input_ids.shape[1] + positions,
                   input_ids[:, 1:][rows, positions], rows, columns, input_ids.shape[0], width)


def packing_supported(model: torch.nn.Module) -> bool:
    """Whether `model`'s attention implementation takes the custom masks of packed rows."""
    config = getattr(model, "config", None)
    return getattr(config, "_attn_implementation", None) in MASKED_ATTENTION + (UNPADDED_ATTENTION,)


def plan_packs(prompt_ids: list[list[int]], completion_ids: list[list[int]], token_budget: int,
               hidden_size: int | None) -> list[list[int]]:
    """Split samples into packs: samples with the same prompt, to be scored in one row.

    Within a prompt's samples (longest completion first), a completion joins the open pack while
    the row stays within `token_budget` and packing costs less work than a row of its own;
    otherwise it opens the next pack. `hidden_size=None` turns packing off: one sample per pack.

    Returns:
        lists of indices into the samples, every index exactly once.
    """
    if hidden_size is None:
        return [[index] for index in range(len(prompt_ids))]
    by_prompt: dict[tuple[int, ...], list[int]] = {}
    for index, prompt in enumerate(prompt_ids):
        by_prompt.setdefault(tuple(prompt), []).append(index)
    packs: list[list[int]] = []
    for prompt, indices in by_prompt.items():
        prompt_length = len(prompt)
        row_length = 0
        for index in sorted(indices, key=lambda i: len(completion_ids[i]), reverse=True):
            length = len(completion_ids[index])
            joined = row_length + length
            if row_length and joined <= token_budget and (
                    _work(joined, hidden_size) <= _work(row_length, hidden_size)
                    + _work(prompt_length + length, hidden_size)):
                packs[-1].append(index)
                row_length = joined
            else:
                packs.append([index])
                row_length = prompt_length + length
    return packs


def _work(length: int, hidden_size: int) -> float:
    """Approximate cost of a decoder pass over one row of `length` tokens, in units of one
    token's projections and MLP (about 10.7 * hidden^2 multiply-adds per token and layer for
    SmolLM2-135M). Attention over the whole row, which a custom mask leaves dense, adds
    2 * length * hidden multiply-adds per token and layer, and CPU attention kernels run them
    about 1.5x slower than matmuls: together about 2/7 * length / hidden per token."""
    return length * (1.0 + 2.0 * length / (7.0 * hidden_size))


def pack_length(pack: list[int], prompt_ids: list[list[int]], completion_ids: list[list[int]]) -> int:
    """Tokens in the row of a pack: its prompt once, then each of its completions."""
    return len(prompt_ids[pack[0]]) + sum(len(completion_ids[i]) for i in pack)


def padded_row_length(length: int, multiple: int) -> int:
    """`length` rounded up to a multiple of `multiple`: the width of a row that long."""
    return -(-length // multiple) * multiple


def pack(prompt_ids: list[list[int]], completion_ids: list[list[int]], packs: list[list[int]],
         pad_token_id: int, device: torch.device, attention: str = "sdpa", width_multiple: int = 1) -> ScoringBatch:
    """One row per pack, right-padded to the longest row rounded up to a multiple of
    `width_multiple`; sample n of the result is the n-th index of `packs`, flattened.

    With a single sample per pack, the rows are plain (2-D padding mask, default positions). With
    any shared row, every row gets a [R, 1, L, L] mask saying which key each query may attend:
    boolean for "sdpa", additive (0 or the dtype's minimum) for "eager". Padding positions attend
    to themselves only, so no row of the mask is empty (an empty one makes the softmax NaN, and the
    NaN would reach the gradients).
    """
    width = padded_row_length(max(pack_length(members, prompt_ids, completion_ids) for members in packs),
                              width_multiple)
    rows = len(packs)
    input_ids = torch.full((rows, width), pad_token_id, dtype=torch.long)
    segment = torch.full((rows, width), -1, dtype=torch.long)  # -1 pad, 0 prompt, j completion j
    position_ids = torch.zeros((rows, width), dtype=torch.long)
    source, target, sample, column = [], [], [], []
    sample_number = 0
    for row, members in enumerate(packs):
        prompt = prompt_ids[members[0]]
        prompt_length = len(prompt)
        input_ids[row, :prompt_length] = torch.tensor(prompt, dtype=torch.long)
        segment[row, :prompt_length] = 0
        position_ids[row, :prompt_length] = torch.arange(prompt_length)
        start = prompt_length
        for number, index in enumerate(members, start=1):
            if prompt_ids[index] != prompt:
                raise ValueError(f"sample {index} does not share its pack's prompt")
            completion = completion_ids[index]
            length = len(completion)
            end = start + length
            input_ids[row, start:end] = torch.tensor(completion, dtype=torch.long)
            segment[row, start:end] = number
            position_ids[row, start:end] = torch.arange(prompt_length, prompt_length + length)
            # Token 0 is predicted by the prompt's last position, token i by the one before it.
            predictors = [prompt_length - 1] + list(range(start, end - 1)) if length else []
            source.extend(row * width + p for p in predictors)
            target.extend(completion)
            sample.extend([sample_number] * length)
            column.extend(range(length))
            sample_number += 1
            start = end

    def long(values):
        return torch.tensor(values, dtype=torch.long, device=device)

    shared = any(len(members) > 1 for members in packs)
    if shared:
        attention_mask = _packed_mask(segment, attention).to(device)
        positions = position_ids.to(device)
    else:
        attention_mask = (segment >= 0).long().to(device)
        positions = None
    longest = max((len(completion_ids[i]) for members in packs for i in members), default=0)
    return ScoringBatch(input_ids.to(device), attention_mask, positions, long(source), long(target),
                        long(sample), long(column), sample_number, longest)


def _packed_mask(segment: torch.Tensor, attention: str) -> torch.Tensor:
    """[R, 1, L, L] mask of packed rows from each position's segment (-1 pad, 0 prompt, j > 0
    completion j): a query sees earlier-or-same keys of the prompt and of its own segment."""
    width = segment.shape[1]
    query, key = segment.unsqueeze(2), segment.unsqueeze(1)  # [R, L, 1], [R, 1, L]
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    allowed = causal & (key >= 0) & (query >= 0) & ((key == 0) | (key == query))
    allowed |= torch.eye(width, dtype=torch.bool)  # padding sees itself: no empty softmax
    allowed = allowed.unsqueeze(1)
    if attention == "sdpa":
        return allowed
    if attention == "eager":
        return torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)
    raise ValueError(f"attention implementation {attention!r} takes no custom mask; "
                     f"packing needs one of {MASKED_ATTENTION}")
