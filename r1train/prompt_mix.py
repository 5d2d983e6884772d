"""Second-stage RL prompts: batches mixing reasoning prompts with general prompts, and rewards scoped
to one kind of prompt.

DeepSeek-R1's last RL stage trains on reasoning prompts judged by rule rewards together with
general prompts (writing, questions without a checkable answer) judged by a reward model. Here
the reasoning prompts are `data.train`, the general prompts `data.general`, and every batch of
`n` prompts draws `round(data.general_ratio * n)` general prompts (halves rounded up) and the rest
reasoning prompts, each source from its own `PromptSampler`, so each walks its own seeded epochs
and a checkpoint restores both positions.

Every row carries a `prompt_source` column ("reasoning" or "general"), and both sources' rows
hold the same columns (missing ones are None), because reward functions receive the batch's
columns as aligned lists. A reward entry's `applies_to` ("reasoning", the default, "general" or
"all") says which rows it judges; `scope_reward` calls the function on those rows only and gives
None (no credit, no penalty) on the others, so a rule reward never sees a general prompt without
an answer and a reward model is not spent on arithmetic.

Within a batch the general prompts are spread evenly among the reasoning ones. GRPO's advantages
do not depend on the order, but what reads a prefix of the batch does: the sample completions a
step logs, and the cut after dynamic sampling's retries. Both then see both kinds.
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any, Callable, Iterable

from r1train.data import PromptSampler
from r1train.scoring import RewardScorer, build_scorer

SOURCE_COLUMN = "prompt_source"
REASONING, GENERAL = "reasoning", "general"


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


def scope_reward(function: Callable, applies_to: str) -> Callable:
    """Wrap a reward so that it judges only the rows whose `prompt_source` it applies to.

    Rows without a `prompt_source` column count as reasoning prompts (a run without general data).

    Args:
        function: a reward `fn(completions, **columns) -> list[float | None]`.
        applies_to: "reasoning", "general" or "all".
    Returns:
        A reward with the same contract: N scores, None on the rows outside its scope. The wrapped
        function is called on the rows inside its scope only (not at all when there are none).

    Example (applies_to="general"):
        scoped(["a", "b", "c"], prompt_source=["reasoning", "general", "general"], answer=["1", None, None])
        calls function(["b", "c"], prompt_source=["general", "general"], answer=[None, None])
        and returns [None, <its score of "b">, <its score of "c">].
    """
    if applies_to == "all":
        return function

    def scoped(completions: list[str], **columns) -> list[float | None]:
        sources = columns.get(SOURCE_COLUMN) or [REASONING] * len(completions)
        inside = [i for i, source in enumerate(sources) if source == applies_to]
        if len(inside) == len(completions):
            return function(completions, **columns)
        scores: list[float | None] = [None] * len(completions)
        if not inside:
            return scores
        picked = function([completions[i] for i in inside], **{k: [v[i] for i in inside] for k, v in columns.items()})

        def spread(result):
            if not isinstance(result, (list, tuple)) or len(result) != len(inside):
                return result  # malformed: the scorer reports it
            for i, score in zip(inside, result):
                scores[i] = score
            return scores

        if inspect.isawaitable(picked):  # an async reward: the scorer awaits what it gets back
            async def spread_later():
                return spread(await picked)

            return spread_later()
        return spread(picked)

    scoped.__name__ = getattr(function, "__name__", "reward")
    return scoped


def build_scoped_scorer(specs: Iterable[Any], max_new_tokens: int | None = None) -> RewardScorer:
    """`scoring.build_scorer` for the recipe's reward entries, each scoped by its `applies_to`."""
    entries = [dict(spec) if isinstance(spec, Mapping) else dict(vars(spec)) for spec in specs]
    scopes = [entry.pop("applies_to", None) or REASONING for entry in entries]
    scorer = build_scorer(entries, max_new_tokens)
    scoped = [(name, scope_reward(function, scope), weight)
              for (name, function, weight), scope in zip(scorer.specs, scopes)]
    return RewardScorer(scoped, timeout_s=scorer.timeout_s)
