"""Length and repetition shaping: rewards that say nothing about correctness on their own.

- cosine_length: Yeo et al., "Demystifying Long Chain-of-Thought Reasoning in LLMs" (arXiv
  2502.03373): correct answers earn more when short, wrong answers are punished less when long
  (the model is encouraged to keep thinking when it is wrong).
- repetition_penalty: the n-gram repetition penalty of the same paper, in its simple per-sequence
  form: the share of repeated word n-grams, scaled to a negative maximum.
- soft_overlong: DAPO's soft over-long punishment (Yu et al., arXiv 2503.14476): zero up to
  max_length - buffer, then a linear ramp down to -1 at max_length, -1 beyond.

Length is taken from the column `completion_tokens` when the trainer provides it (a token count,
or the token ids themselves, per completion) and is otherwise the number of whitespace-separated
words, a rough stand-in that keeps these rewards usable on plain text.
"""
from __future__ import annotations

import math
from collections.abc import Sized

from rewards.accuracy import get_accuracy_reward
from rewards.registry import RewardFunction, register


def completion_lengths(completions: list[str], columns: dict) -> list[int]:
    """Length of each completion: `completion_tokens` if given, else its word count."""
    tokens = columns.get("completion_tokens")
    if tokens is None:
        return [len(completion.split()) for completion in completions]
    if len(tokens) != len(completions):
        raise ValueError(f"{len(completions)} completions but {len(tokens)} completion_tokens")
    return [len(t) if isinstance(t, Sized) else int(t) for t in tokens]


@register("cosine_length", factory=True)
def get_cosine_length_reward(
    max_length: int = 1000,
    min_value_correct: float = 0.5,
    max_value_correct: float = 1.0,
    min_value_wrong: float = -1.0,
    max_value_wrong: float = -0.5,
    answer_source: str = "answer",
) -> RewardFunction:
    """Build the cosine length-scaled correctness reward (arXiv 2502.03373).

    Args:
        max_length: the length L at which the cosine reaches its end value; longer is clipped to L.
        min_value_correct, max_value_correct: a correct answer scores max at length 0, min at L.
        min_value_wrong, max_value_wrong: a wrong answer scores min at length 0, max at L.
        answer_source: passed to the accuracy reward that decides correctness.
    """
    if max_length <= 0:
        raise ValueError(f"max_length must be positive, got {max_length}")
    is_correct = get_accuracy_reward(answer_source=answer_source)

    def cosine_length_reward(completions: list[str], **columns) -> list[float | None]:
        """r = end + (start - end) * (1 + cos(pi * min(length, L) / L)) / 2, where (start, end) is
        (max_value_correct, min_value_correct) for a correct answer and (min_value_wrong,
        max_value_wrong) for a wrong one. Needs the column `answer`; None where it is None.

        Args:
            completions: N completion texts.
            columns: `answer` (N references); optionally `completion_tokens`.
        Returns:
            N scores.

        Example (defaults, L = 1000, lengths from completion_tokens):
            cosine_length_reward(
                ["<answer>4</answer>", "<answer>4</answer>", "<answer>5</answer>"],
                answer=["4", "4", "4"], completion_tokens=[0, 500, 0],
            ) == [1.0, 0.75, -1.0]   # short correct, half-length correct, short wrong
        """
        correctness = is_correct(completions, **columns)
        lengths = completion_lengths(completions, columns)
        scores: list[float | None] = []
        for correct, length in zip(correctness, lengths):
            if correct is None:
                scores.append(None)
                continue
            start, end = (
                (max_value_correct, min_value_correct) if correct else (min_value_wrong, max_value_wrong)
            )
            progress = min(length, max_length) / max_length
            scores.append(end + (start - end) * (1 + math.cos(math.pi * progress)) / 2)
        return scores

    return cosine_length_reward


@register("repetition_penalty", factory=True)
def get_repetition_penalty_reward(ngram_size: int = 3, max_penalty: float = -1.0) -> RewardFunction:
    """Build the n-gram repetition penalty (arXiv 2502.03373).

    Args:
        ngram_size: n, the length of the word n-grams compared.
        max_penalty: the score of a completion made of one n-gram repeated forever (<= 0).
    """
    if ngram_size < 1:
        raise ValueError(f"ngram_size must be at least 1, got {ngram_size}")
    if max_penalty > 0:
        raise ValueError(f"max_penalty must be <= 0, got {max_penalty}")

    def repetition_penalty_reward(completions: list[str], **columns) -> list[float | None]:
        """max_penalty * (1 - distinct n-grams / all n-grams) over lower-cased words; 0.0 for a
        completion shorter than one n-gram.

        Args:
            completions: N completion texts.
        Returns:
            N scores in [max_penalty, 0].

        Example (ngram_size=2, max_penalty=-1.0):
            repetition_penalty_reward(
                ["a b c d",        # 0.0: 3 bigrams, all distinct
                 "a b a b a b"],   # -0.6: 5 bigrams, 2 distinct -> -(1 - 2/5)
            ) == [0.0, -0.6]
        """
        scores: list[float | None] = []
        for completion in completions:
            words = completion.lower().split()
            total = len(words) - ngram_size + 1
            if total <= 0:
                scores.append(0.0)
                continue
            distinct = len(set(zip(*(words[i:] for i in range(ngram_size)))))
            repeated_share = 1 - distinct / total
            scores.append(max_penalty * repeated_share if repeated_share else 0.0)
        return scores

    return repetition_penalty_reward


@register("soft_overlong", factory=True)
def get_soft_overlong_reward(max_length: int = 1024, buffer: int = 256) -> RewardFunction:
    """Build DAPO's soft over-long punishment (arXiv 2503.14476).

    Args:
        max_length: L_max, the length at and beyond which the score is -1.
        buffer: L_cache, the width of the linear ramp before max_length (0 < buffer <= max_length).
    """
    if not 0 < buffer <= max_length:
        raise ValueError(f"need 0 < buffer <= max_length, got buffer={buffer}, max_length={max_length}")
    safe_length = max_length - buffer

    def soft_overlong_reward(completions: list[str], **columns) -> list[float | None]:
        """0 for length <= max_length - buffer, (max_length - buffer - length) / buffer on the
        ramp, -1 beyond max_length.

        Args:
            completions: N completion texts.
            columns: optionally `completion_tokens` (N counts or N token-id lists).
        Returns:
            N scores in [-1, 0].

        Example (max_length=10, buffer=4, lengths from completion_tokens):
            soft_overlong_reward(["", "", "", ""], completion_tokens=[6, 8, 10, 12])
                == [0.0, -0.5, -1.0, -1.0]
        """
        scores: list[float | None] = []
        for length in completion_lengths(completions, columns):
            if length <= safe_length:
                scores.append(0.0)
            elif length <= max_length:
                scores.append((safe_length - length) / buffer)
            else:
                scores.append(-1.0)
        return scores

    return soft_overlong_reward


cosine_length_reward = get_cosine_length_reward()
repetition_penalty_reward = get_repetition_penalty_reward()
soft_overlong_reward = get_soft_overlong_reward()
