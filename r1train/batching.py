"""Turn variable-length (prompt, completion) samples into padded micro-batches under a token budget.

The learner's cost grows with padded tokens, not sequences: a fixed number of sequences per
micro-batch either wastes compute on padding or runs out of memory on long samples. Sorting by
length and filling each micro-batch until `sequences * longest > budget` keeps padding small and
memory bounded. Padding is on the right, so position ids need no adjustment.
"""
from __future__ import annotations

import torch


def plan_micro_batches(lengths: list[int], token_budget: int, padded: bool = True) -> list[list[int]]:
    """Group sample indices so that each group's size fits the budget: its padded size (count *
    longest), or with `padded=False` its token count (rows run unpadded, r1train/unpadded_rows.py).

    Samples are taken longest first; a sample longer than the budget gets a group of its own.

    Args:
        lengths: token count (prompt + completion) of each sample.
        token_budget: most (padded) tokens per micro-batch.

    Returns:
        lists of indices into `lengths`, every index exactly once.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    groups: list[list[int]] = []
    size = 0  # of the open group
    for index in order:
        # Longest first: the group's first member sets its padded length.
        grown = (len(groups[-1]) + 1) * lengths[groups[-1][0]] if padded and groups else size + lengths[index]
        if groups and grown <= token_budget:
            groups[-1].append(index)
            size = grown
        else:
            groups.append([index])
            size = lengths[index]
    return groups


def collate(
    prompt_ids: list[list[int]], completion_ids: list[list[int]], pad_token_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad prompt + completion rows.

    Returns:
        input_ids: [b, L] long.
        attention_mask: [b, L] long, 1 on real tokens.
        completion_mask: [b, L] long, 1 on completion tokens.
    """
    width = max(len(p) + len(c) for p, c in zip(prompt_ids, completion_ids))
    input_ids = torch.full((len(prompt_ids), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompt_ids), width), dtype=torch.long)
    completion_mask = torch.zeros((len(prompt_ids), width), dtype=torch.long)
    for row, (prompt, completion) in enumerate(zip(prompt_ids, completion_ids)):
        end = len(prompt) + len(completion)
        input_ids[row, :end] = torch.tensor(prompt + completion, dtype=torch.long)
        attention_mask[row, :end] = 1
        completion_mask[row, len(prompt):end] = 1
    return input_ids.to(device), attention_mask.to(device), completion_mask.to(device)


def pad_token_values(values: list[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """Stack per-sample 1-D token values (logprobs) into a tensor shaped, typed and placed like
    `like` ([b, T]), zeros after each row's end."""
    out = torch.zeros(like.shape, dtype=like.dtype)
    for row, row_values in enumerate(values):
        out[row, : row_values.numel()] = row_values
    return out.to(like.device)


def split_evenly(indices: list[int], parts: int) -> list[list[int]]:
    """Contiguous parts whose sizes differ by at most one (fewer parts only when there are fewer
    indices than parts), so a batch takes the optimiser steps the schedule counts on, each on a
    fair share: 10 into 4 gives sizes [3, 3, 2, 2], not [3, 3, 3, 1]; 9 into 4 gives four parts."""
    if not indices:
        return [[]]
    size, larger = divmod(len(indices), parts)
    out, start = [], 0
    for part in range(min(parts, len(indices))):
        end = start + size + (part < larger)
        out.append(indices[start:end])
        start = end
    return out
