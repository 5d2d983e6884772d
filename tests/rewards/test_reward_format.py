"""The strict format reward and the partial-credit tag_count reward."""
import time

import pytest

from rewards import format_reward, get_format_reward, get_tag_count_reward, tag_count_reward

FORMAT = [
    ("<think>2+2=4</think><answer>4</answer>", 1.0),  # the template, no whitespace
    ("<think>\n2+2=4\n</think>\n<answer>\n4\n</answer>\n", 1.0),  # newlines between and around
    ("  <think>a</think>   <answer>4</answer>  ", 1.0),  # surrounding whitespace
    ("<think></think><answer>4</answer>", 1.0),  # empty thinking is still the template
    ("<think>a</think><answer> </answer>", 0.0),  # empty answer
    ("<think>a</think>text<answer>4</answer>", 0.0),  # text between the blocks
    ("preamble <think>a</think><answer>4</answer>", 0.0),  # text before the thinking
    ("<think>a</think><answer>4</answer> extra", 0.0),  # text after the answer
    ("<answer>4</answer><think>a</think>", 0.0),  # blocks in the wrong order
    ("<think>a<answer>4</answer></think>", 0.0),  # answer inside the thinking
    ("<think>a</think><answer>4</answer><answer>5</answer>", 0.0),  # answer tag repeated
    ("<think>a</think><think>b</think><answer>4</answer>", 0.0),  # think tag repeated
    ("<think>a</think>", 0.0),  # no answer
    ("<answer>4</answer>", 0.0),  # no thinking
    ("<think>a<answer></think>4</answer>", 0.0),  # interleaved tags
    ("</think><think><answer>4</answer>", 0.0),  # closing before opening
    ("", 0.0),  # empty completion
]


@pytest.mark.parametrize("completion, expected", FORMAT)
def test_format_reward(completion, expected):
    assert format_reward([completion]) == [expected]


PREFIXED = [
    ("2+2=4</think><answer>4</answer>", 1.0),  # completion after a prefilled <think>
    ("<think>2+2</think><answer>4</answer>", 0.0),  # the model repeats the prefilled tag
    ("2+2=4<answer>4</answer>", 0.0),  # thinking never closed
]


@pytest.mark.parametrize("completion, expected", PREFIXED)
def test_format_reward_with_think_prefix(completion, expected):
    assert get_format_reward(prefix="<think>")([completion]) == [expected]


REQUIRE_THINKING = [
    ("<think>13 + 9 = 22</think><answer>22</answer>", 1.0),  # something thought
    ("<think>\n</think>\n<answer>22</answer>", 0.0),  # empty thinking: no credit
    ("<think></think><answer>22</answer>", 0.0),  # empty thinking, no whitespace
    ("<think> x </think><answer> </answer>", 0.0),  # thinking, but the answer empty
]


@pytest.mark.parametrize("completion, expected", REQUIRE_THINKING)
def test_format_reward_requiring_thinking(completion, expected):
    assert get_format_reward(require_thinking=True)([completion]) == [expected]


def test_format_reward_refuses_a_non_boolean_require_thinking():
    with pytest.raises(ValueError, match="require_thinking must be true or false"):
        get_format_reward(require_thinking="yes")


TAG_COUNT = [
    ("<think>a</think><answer>4</answer>", 1.0),  # all four tags once, in order
    ("<think>a</think> 4", 0.5),  # the two think tags
    ("<think>a</think><answer>4", 0.75),  # answer never closed
    ("no tags at all", 0.0),  # nothing
    ("<think>a</think><think>b</think><answer>4</answer>", 0.5),  # think tags repeated: no credit
    ("<answer>4</answer><think>a</think>", 0.0),  # all out of order: no tag is in its place
    ("</think>a<think><answer>4</answer>", 0.5),  # think tags swapped; answer tags fine
    ("<think>a</think></answer>4<answer>", 0.5),  # answer tags swapped; think tags fine
    ("<think>" * 3 + "</think><answer>4</answer>", 0.75),  # opening tag spammed
]


@pytest.mark.parametrize("completion, expected", TAG_COUNT)
def test_tag_count_reward(completion, expected):
    assert tag_count_reward([completion]) == [expected]


def test_tag_count_with_think_prefix():
    # The prefilled "<think>" supplies the opening tag.
    assert get_tag_count_reward(prefix="<think>")(["a</think><answer>4</answer>"]) == [1.0]


def test_one_megabyte_completions_score_quickly():
    completions = ["<think>" + "a " * 500_000 + "</think><answer>4</answer>", "<answer>" * 130_000]
    start = time.monotonic()
    assert format_reward(completions) == [1.0, 0.0]
    assert tag_count_reward(completions) == [1.0, 0.0]
    assert time.monotonic() - start < 1.0
