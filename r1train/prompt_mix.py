"""Second-stage RL prompts: batches mixing reasoning prompts with general prompts.

DeepSeek-R1's last RL stage trains on reasoning prompts judged by rule rewards together with
general prompts (writing, questions without a checkable answer) judged by a reward model. Here
the reasoning prompts are `data.train`, the general prompts `data.general`, and every batch of
`n` prompts draws `round(data.general_ratio * n)` general prompts (halves rounded up) and the rest
reasoning prompts, each source from its own `PromptSampler`, so each walks its own seeded epochs
and a checkpoint restores both positions.

Every row carries a `prompt_source` column ("reasoning" or "general"), and both sources' rows
hold the same columns (missing ones are None), because reward functions receive the batch's
columns as aligned lists. A reward entry's `applies_to` says which rows it judges
(`r1train/reward_scope.py`).

Within a batch the general prompts are spread evenly among the reasoning ones. GRPO's advantages
do not depend on the order, but what reads a prefix of the batch does: the sample completions a
step logs, and the cut after dynamic sampling's retries. Both then see both kinds.
"""
from __future__ import annotations

import math
from typing import Any

from r1train.data import PromptSampler
from r1train.reward_scope import GENERAL, REASONING, SOURCE_COLUMN


def tag_sources(reasoning_rows: list[dict[str, Any]], general_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give both sources the same columns and a `prompt_source` column.

    The reasoning rows are updated in place (callers may key their encoded prompts by row
    identity); the general rows are returned as new dicts, each with the reasoning rows' columns
    (None where a general row has no value) and its own.
    """
    reasoning_columns = dict.fromkeys(key for row in reasoning_rows for key in row)
    general_columns = dict.fromkeys(key for row in general_rows for key in row)
    for row in reasoning_rows:
        for key in general_columns:
            row.setdefault(key, None)
        row[SOURCE_COLUMN] = REASONING
    return [{**dict.fromkeys(reasoning_columns), **row, SOURCE_COLUMN: GENERAL} for row in general_rows]


def general_count(batch_size: int, general_ratio: float) -> int:
    """How many of `batch_size` prompts come from the general source (halves rounded up)."""
    return min(batch_size, math.floor(general_ratio * batch_size + 0.5))


class MixedPromptSampler:
    """Draws each batch from two PromptSamplers in a fixed ratio; resumable like one sampler.

    Args:
        reasoning: sampler over data.train's rows.
        general: sampler over data.general's rows.
        general_ratio: share of each batch drawn from `general`, in [0, 1).
    """

    def __init__(self, reasoning: PromptSampler, general: PromptSampler, general_ratio: float):
        self.reasoning = reasoning
        self.general = general
        self.general_ratio = general_ratio

    def next_batch(self, size: int) -> list[dict[str, Any]]:
        from_general = general_count(size, self.general_ratio)
        reasoning = iter(self.reasoning.next_batch(size - from_general))
        general = iter(self.general.next_batch(from_general))
        # The middle of each of `from_general` equal slices of the batch holds a general prompt.
        slots = {(2 * i + 1) * size // (2 * from_general) for i in range(from_general)}
        return [next(general) if position in slots else next(reasoning) for position in range(size)]

    def state_dict(self) -> dict[str, dict[str, int]]:
        return {REASONING: self.reasoning.state_dict(), GENERAL: self.general.state_dict()}

    def load_state_dict(self, state: dict[str, dict[str, int]]) -> None:
        if set(state) != {REASONING, GENERAL}:
            raise ValueError("the checkpoint was written without data.general mixing (its data position has "
                             "one source, this run two); use --fresh or the original data settings")
        self.reasoning.load_state_dict(state[REASONING])
        self.general.load_state_dict(state[GENERAL])
