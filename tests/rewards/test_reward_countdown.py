"""The Countdown reward: each number once, the four operators, the target, no eval."""
import time

import pytest

from rewards import countdown_reward

NUMBERS, TARGET = [3, 5, 25], 60

CASES = [
    ("(25 - 5) * 3", 1.0),  # correct
    ("3 * (25 - 5)", 1.0),  # correct, other order
    ("(25 - 5) * 3 = 60", 1.0),  # with the result written out
    ("(25 - 5) \u00d7 3", 1.0),  # unicode times sign
    ("25 * 3 - 5", 0.0),  # uses each number once but makes 70
    ("(25 - 5) * 3 * 1", 0.0),  # a number that was not given
    ("(25 - 5) * 3 + 5 - 5", 0.0),  # 5 used three times
    ("20 * 3", 0.0),  # 20 was not given
    ("25 * 3 - 15", 0.0),  # 15 was not given either
    ("60", 0.0),  # only the target
    ("-(5 - 25) * 3", 0.0),  # unary minus is not an operator of the game
    ("(25 - 5) ** 1 * 3", 0.0),  # power is not allowed
    ("(25 - 5) // 1 * 3", 0.0),  # floor division is not allowed
    ("__import__('os').system('true')", 0.0),  # code: refused before parsing
    ("(25 - 5.0) * 3", 0.0),  # decimals are not allowed
    ("3 / (5 - 5) * 25", 0.0),  # division by zero
    ("(" * 300 + "3" + ")" * 300, 0.0),  # nesting beyond the parser's limit
    ("", 0.0),  # empty answer
]


@pytest.mark.parametrize("equation, expected", CASES)
def test_countdown(equation, expected):
    completion = f"<think>search</think><answer>{equation}</answer>"
    assert countdown_reward([completion], numbers=[NUMBERS], target=[TARGET]) == [expected]


def test_exact_division():
    # 6 / 4 * 4 is exactly 6 with fractions (floats could round).
    completion = "<answer>6 / 4 * 4</answer>"
    assert countdown_reward([completion], numbers=[[6, 4, 4]], target=[6]) == [1.0]


def test_answer_inside_thinking_does_not_count():
    completion = "<think><answer>(25 - 5) * 3</answer></think>"
    assert countdown_reward([completion], numbers=[NUMBERS], target=[TARGET]) == [0.0]


def test_missing_row_values_are_not_judged():
    assert countdown_reward(["<answer>1</answer>"], numbers=[None], target=[1]) == [None]


def test_missing_column_is_an_error():
    with pytest.raises(KeyError, match="target"):
        countdown_reward(["<answer>1</answer>"], numbers=[[1]])


def test_huge_answer_scores_quickly():
    start = time.monotonic()
    completion = "<answer>" + "3*" * 500_000 + "3</answer>"
    assert countdown_reward([completion], numbers=[[3]], target=[3]) == [0.0]
    assert time.monotonic() - start < 1.0
