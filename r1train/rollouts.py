"""One step's rollouts and their bookkeeping: prompts, grouped completions, rewards, and the
selections dynamic sampling makes among them.

A `Rollouts` holds the prompt rows of a draw and, for each, its G completions, contiguous. Every
completion points at its prompt by `prompt_index`, so keeping or concatenating groups renumbers
those indices; the functions here do that and nothing else (the trainer loop is `r1train/grpo.py`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from r1train.engines.base import Completion


@dataclass
class Rollouts:
    rows: list[dict[str, Any]]  # one per prompt
    completions: list[Completion]  # G per prompt, grouped
    texts: list[str]  # assistant responses as rewards see them (prefill + completion)
    rewards: torch.Tensor  # [N] weighted total
    per_function: dict[str, list[float | None]]
    metrics: dict[str, float]
    timings: dict[str, float] = dataclasses.field(default_factory=dict)  # generate and score seconds
    policy_step: int = 0  # the optimiser step whose weights sampled these completions


def select_groups(rollouts: Rollouts, keep_groups: torch.Tensor, group_size: int) -> Rollouts:
    """The groups where `keep_groups` ([prompts] bool) is True, with their prompts."""
    keep_samples = [i for i in range(len(rollouts.completions)) if keep_groups[i // group_size]]
    keep_rows = [g for g in range(len(rollouts.rows)) if keep_groups[g]]
    return take(rollouts, keep_rows, keep_samples)


def take(rollouts: Rollouts, rows_idx: list[int], keep_idx: list[int]) -> Rollouts:
    """The prompts `rows_idx` and the completions `keep_idx` (which must belong to those prompts),
    prompt indices renumbered; metrics, timings and policy step are kept as they are."""
    new_index = {old: new for new, old in enumerate(rows_idx)}
    return dataclasses.replace(
        rollouts,
        rows=[rollouts.rows[g] for g in rows_idx],
        completions=[dataclasses.replace(rollouts.completions[i], prompt_index=new_index[rollouts.completions[i].prompt_index])
                     for i in keep_idx],
        texts=[rollouts.texts[i] for i in keep_idx],
        rewards=rollouts.rewards[keep_idx] if keep_idx else rollouts.rewards[:0],
        per_function={name: [scores[i] for i in keep_idx] for name, scores in rollouts.per_function.items()},
    )


def merge(parts: list[Rollouts], wanted: int, group_size: int) -> Rollouts:
    """Concatenate draws (prompt indices renumbered) and cut to `wanted` prompts. Metrics are the
    first draw's: the policy's own reward distribution, before any filtering."""
    rows, completions, texts = [], [], []
    per_function: dict[str, list] = {name: [] for name in parts[0].per_function}
    for part in parts:
        offset = len(rows)
        rows += part.rows
        completions += [dataclasses.replace(c, prompt_index=c.prompt_index + offset) for c in part.completions]
        texts += part.texts
        for name in per_function:
            per_function[name] += part.per_function.get(name, [None] * len(part.texts))
    merged = dataclasses.replace(parts[0], rows=rows, completions=completions, texts=texts,
                                 rewards=torch.cat([part.rewards for part in parts]), per_function=per_function,
                                 metrics=dict(parts[0].metrics))
    if len(rows) > wanted:
        merged = take(merged, list(range(wanted)), list(range(wanted * group_size)))
    return merged


def engine_logprobs(completions: list[Completion]) -> list[torch.Tensor] | None:
    """The engine's per-token logprobs of each completion (N x [len]), None unless every one has them."""
    if any(c.logprobs is None for c in completions):
        return None
    return [torch.tensor(c.logprobs, dtype=torch.float32) for c in completions]


def non_finite_samples(logprobs: list[torch.Tensor] | None, count: int) -> torch.Tensor:
    """[count] bool: which samples have a non-finite engine logprob (none without engine logprobs)."""
    if logprobs is None:
        return torch.zeros(count, dtype=torch.bool)
    return torch.tensor([not bool(torch.isfinite(lp).all()) for lp in logprobs], dtype=torch.bool)


def logged_samples(rollouts: Rollouts, count: int, group_size: int, question_column: str,
                   answer_column: str) -> list[dict[str, Any]]:
    """Up to `count` completions to write to the samples log, one per group where there are enough
    groups, with their prompt, reference answer and rewards."""
    n = min(count, len(rollouts.texts))
    picked = (range(0, len(rollouts.texts), max(1, group_size))[:n] if len(rollouts.texts) >= n * group_size
              else range(n))
    out = []
    for i in picked:
        row = rollouts.rows[rollouts.completions[i].prompt_index]
        out.append({
            "prompt": row.get(question_column), "answer": row.get(answer_column), "completion": rollouts.texts[i],
            "reward": rollouts.rewards[i].item(),
            "rewards": {name: values[i] for name, values in rollouts.per_function.items()},
        })
    return out
