"""Format rewards for the R1 template `<think> … </think> <answer> … </answer>`.

`format` is the strict all-or-nothing check of the R1 paper; `tag_count` gives partial credit per
correctly used tag, so a weak base model gets a signal before it ever writes the whole template.
Both take a `prefix` that is put in front of each completion before checking, for callers that
score raw completions of a prompt ending in "<think>" (the R1-Zero prompt prefills it, so the
completion starts inside the thinking). r1train's trainer already puts that prefill in front of
every completion its rewards see: in an r1train recipe leave `prefix` unset, or the tag appears
twice and every sample scores 0 (`r1train validate` refuses it). Checks use str.count/str.find
only (linear time).
"""
from __future__ import annotations

from rewards.registry import RewardFunction, register

TAGS = ("<think>", "</think>", "<answer>", "</answer>")


def follows_template(text: str, require_thinking: bool = False) -> bool:
    """Whether `text` is exactly `<think> … </think> <answer> … </answer>`, each tag once, in order,
    with only whitespace around and between the blocks and a non-empty answer; with
    `require_thinking`, the think block must hold more than whitespace too."""
    text = text.strip()
    if any(text.count(tag) != 1 for tag in TAGS):
        return False
    think_open, think_close, answer_open, answer_close = (text.find(tag) for tag in TAGS)
    if not think_open < think_close < answer_open < answer_close:
        return False
    if not text.startswith("<think>") or not text.endswith("</answer>"):
        return False
    if text[think_close + len("</think>"):answer_open].strip():
        return False
    if require_thinking and not text[think_open + len("<think>"):think_close].strip():
        return False
    return bool(text[answer_open + len("<answer>"):answer_close].strip())


def tag_score(text: str) -> float:
    """0.25 for each tag used exactly once and in its place relative to the other such tags."""
    positions = {tag: text.find(tag) for tag in TAGS if text.count(tag) == 1}
    score = 0.0
    for index, tag in enumerate(TAGS):
        if tag not in positions:
            continue
        earlier = [positions[t] for t in TAGS[:index] if t in positions]
        later = [positions[t] for t in TAGS[index + 1:] if t in positions]
        if all(p < positions[tag] for p in earlier) and all(p > positions[tag] for p in later):
            score += 0.25
    return score


@register("format", factory=True)
def get_format_reward(prefix: str = "", require_thinking: bool = False) -> RewardFunction:
    """Build the strict format reward; `prefix` is put before each completion (e.g. "<think>").

    `require_thinking: true` gives no credit to an empty think block (`<think>\n</think>`): the R1
    template asks for the reasoning inside the tags, and on a task a small model can half-guess,
    dropping the thinking is otherwise the quickest way to a well-formed answer."""
    prefix = str(prefix)
    if not isinstance(require_thinking, bool):
        raise ValueError(f"format: require_thinking must be true or false, got {require_thinking!r}")

    def format_reward(completions: list[str], **columns) -> list[float | None]:
        """1.0 when prefix + completion is exactly the R1 template, else 0.0.

        Args:
            completions: N completion texts.
        Returns:
            N scores in {0.0, 1.0}.

        Example (prefix=""):
            format_reward(
                ["<think>2+2=4</think>\\n<answer>4</answer>",     # 1.0
                 "<think>a</think><answer>4</answer> extra",      # 0.0: text after the answer
                 "<answer>4</answer><think>a</think>"],           # 0.0: wrong order
            ) == [1.0, 0.0, 0.0]
        """
        return [1.0 if follows_template(prefix + completion, require_thinking) else 0.0
                for completion in completions]

    return format_reward


@register("tag_count", factory=True)
def get_tag_count_reward(prefix: str = "") -> RewardFunction:
    """Build the partial-credit format reward; `prefix` as in get_format_reward."""
    prefix = str(prefix)

    def tag_count_reward(completions: list[str], **columns) -> list[float | None]:
        """0.25 per tag of <think>, </think>, <answer>, </answer> that appears exactly once and in
        order with respect to the other tags that appear once.

        Args:
            completions: N completion texts.
        Returns:
            N scores in {0.0, 0.25, 0.5, 0.75, 1.0}.

        Example (prefix=""):
            tag_count_reward(
                ["<think>a</think><answer>4</answer>",   # 1.0: all four tags
                 "<think>a</think> 4",                  # 0.5: the two think tags
                 "<think>a</think><think>b</think>"],   # 0.0: both think tags repeated
            ) == [1.0, 0.5, 0.0]
        """
        return [tag_score(prefix + completion) for completion in completions]

    return tag_count_reward


format_reward = get_format_reward()
tag_count_reward = get_tag_count_reward()
