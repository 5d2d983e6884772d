"""The language-consistency reward (script-based)."""
import pytest

from rewards import get_language_consistency_reward, language_consistency_reward

ENGLISH = [
    ("<think>two plus two is four</think><answer>4</answer>", 1.0),  # all English
    ("<think>two plus two 二</think><answer>4</answer>", 0.75),  # one Han character among four words
    ("<think>二加二</think><answer>4</answer>", 0.0),  # all Chinese
    ("<think>café au lait</think><answer>4</answer>", 1.0),  # accented Latin letters are Latin
    ("<think>два плюс два</think><answer>4</answer>", 0.0),  # Cyrillic
    ("<think>1 + 2 = 3</think><answer>3</answer>", None),  # no words: not judged
    ("<answer>4</answer>", None),  # no chain of thought: not judged
]


@pytest.mark.parametrize("completion, expected", ENGLISH)
def test_english_target(completion, expected):
    assert language_consistency_reward([completion]) == [expected]


def test_chinese_target_counts_each_han_character():
    reward = get_language_consistency_reward(language="zh")
    # Three Han characters and one English word: 3 of 4.
    assert reward(["<think>二加二 plus</think>"]) == [0.75]


def test_prefix_supplies_the_opening_tag():
    reward = get_language_consistency_reward(prefix="<think>")
    assert reward(["all english words</think><answer>4</answer>"]) == [1.0]


def test_unknown_language_is_refused():
    with pytest.raises(ValueError, match="language"):
        get_language_consistency_reward(language="klingon")
