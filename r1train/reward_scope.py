"""Which prompts a reward judges: rows tagged by source, and rewards that score only their own.

In a second-stage RL run (`r1train/prompt_mix.py`) every prompt row carries a `prompt_source`
column: "reasoning" (data.train) or "general" (data.general). A recipe's reward entry says with
`applies_to` ("reasoning", the default, "general" or "all") which rows it judges; `scope_reward`
calls the function on those rows only and gives None (no credit, no penalty) on the others, so a
rule reward never sees a general prompt without an answer and a reward model is not spent on
arithmetic. Rows without a `prompt_source` column count as reasoning prompts.
"""
from __future__ import annotations

import inspect
from typing import Callable

SOURCE_COLUMN = "prompt_source"
REASONING, GENERAL = "reasoning", "general"
REWARD_SCOPES = (REASONING, GENERAL, "all")  # the values of a reward entry's `applies_to`


def scope_reward(function: Callable, applies_to: str) -> Callable:
    """Wrap a reward so that it judges only the rows whose `prompt_source` it applies to.

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
