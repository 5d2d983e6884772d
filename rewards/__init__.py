"""Rule-based rewards for R1-style training, usable on their own (nothing here imports r1train).

Every reward is a plain function `fn(completions: list[str], **columns) -> list[float | None]`:
`columns` holds `prompts` and every dataset column, aligned with `completions`; None means the
reward does not judge that sample. Built-in rewards register themselves by name on import:

    accuracy, format, tag_count, language_consistency, cosine_length, repetition_penalty,
    soft_overlong, countdown, code (programs run against tests in a bubblewrap sandbox),
    reward_model (a sequence-classification model folder)

    >>> from rewards import get_reward
    >>> fmt = get_reward("format", prefix="<think>")
    >>> fmt(["2+2=4</think><answer>4</answer>"])
    [1.0]
"""
from rewards.registry import (
    ColumnsRead,
    RewardFunction,
    RewardSpecError,
    check_reward_signature,
    columns_read,
    get_reward,
    list_rewards,
    register,
    registered_columns,
    resolve_reward,
)
from rewards.accuracy import accuracy_reward, get_accuracy_reward
from rewards.code import extract_program, get_code_reward
from rewards.countdown import countdown_reward
from rewards.format import format_reward, get_format_reward, get_tag_count_reward, tag_count_reward
from rewards.language import get_language_consistency_reward, language_consistency_reward
from rewards.reward_model import get_reward_model_reward
from rewards.shaping import (
    cosine_length_reward,
    get_cosine_length_reward,
    get_repetition_penalty_reward,
    get_soft_overlong_reward,
    repetition_penalty_reward,
    soft_overlong_reward,
)

# The rewards that say whether an answer is right (1.0) rather than shape it, most specific data
# first: a dataset is judged by the first whose columns it has (`correctness_reward`).
CORRECTNESS_REWARDS = ("countdown", "code", "accuracy")


def correctness_reward(columns) -> str | None:
    """The name of the reward that judges whether an answer to rows with these `columns` is right,
    or None when the data has the columns of none of them.

    >>> correctness_reward(["question", "numbers", "target"])
    'countdown'
    """
    return next((name for name in CORRECTNESS_REWARDS if registered_columns(name).missing(columns) is None), None)


__all__ = [
    "CORRECTNESS_REWARDS",
    "ColumnsRead",
    "RewardFunction",
    "RewardSpecError",
    "accuracy_reward",
    "check_reward_signature",
    "columns_read",
    "correctness_reward",
    "cosine_length_reward",
    "countdown_reward",
    "extract_program",
    "format_reward",
    "get_accuracy_reward",
    "get_code_reward",
    "get_cosine_length_reward",
    "get_format_reward",
    "get_language_consistency_reward",
    "get_repetition_penalty_reward",
    "get_reward_model_reward",
    "get_reward",
    "get_soft_overlong_reward",
    "get_tag_count_reward",
    "language_consistency_reward",
    "list_rewards",
    "register",
    "registered_columns",
    "repetition_penalty_reward",
    "resolve_reward",
    "soft_overlong_reward",
    "tag_count_reward",
]
