"""Length and repetition shaping: cosine length, n-gram repetition, DAPO soft over-long."""
import math

import pytest

from rewards import (
    get_cosine_length_reward,
    get_repetition_penalty_reward,
    get_soft_overlong_reward,
)

COSINE = [
    ("4", 0, 1.0),  # correct and empty: max_value_correct
    ("4", 500, 0.75),  # correct at half length: halfway down the cosine
    ("4", 1000, 0.5),  # correct at max_length: min_value_correct
    ("4", 5000, 0.5),  # longer than max_length: clipped
    ("5", 0, -1.0),  # wrong and short: min_value_wrong, the harshest
    ("5", 500, -0.75),  # wrong at half length
    ("5", 1000, -0.5),  # wrong at max_length: max_value_wrong, the mildest
]


@pytest.mark.parametrize("answer, length, expected", COSINE)
def test_cosine_length(answer, length, expected):
    reward = get_cosine_length_reward(max_length=1000)
    completion = f"<think>x</think><answer>{answer}</answer>"
    (score,) = reward([completion], answer=["4"], completion_tokens=[length])
    assert score == pytest.approx(expected)


def test_cosine_length_counts_words_without_token_counts():
    reward = get_cosine_length_reward(max_length=10)
    completion = "<think>a b c d e</think><answer>4</answer>"  # 5 words: halfway
    assert reward([completion], answer=["4"]) == [pytest.approx(0.75)]


def test_cosine_length_accepts_token_id_lists():
    reward = get_cosine_length_reward(max_length=4)
    (score,) = reward(["<answer>4</answer>"], answer=["4"], completion_tokens=[[11, 12, 13, 14]])
    assert score == pytest.approx(0.5)


def test_cosine_length_skips_samples_without_reference():
    reward = get_cosine_length_reward()
    assert reward(["<answer>4</answer>"], answer=[None]) == [None]


REPETITION = [
    ("a b c d", 0.0),  # three distinct bigrams
    ("a b a b a b", -0.6),  # five bigrams, two distinct: -(1 - 2/5)
    ("A b a B", -1 / 3),  # case-insensitive: ab, ba, ab
    ("a", 0.0),  # shorter than one bigram
    ("", 0.0),  # empty
]


@pytest.mark.parametrize("completion, expected", REPETITION)
def test_repetition_penalty(completion, expected):
    reward = get_repetition_penalty_reward(ngram_size=2, max_penalty=-1.0)
    assert reward([completion]) == [pytest.approx(expected)]


def test_repetition_penalty_of_a_loop_approaches_max_penalty():
    reward = get_repetition_penalty_reward(ngram_size=3, max_penalty=-0.5)
    (score,) = reward(["the same words again " * 10_000])
    assert -0.5 <= score < -0.499


SOFT_OVERLONG = [
    (0, 0.0),  # empty
    (6, 0.0),  # exactly max_length - buffer: no penalty yet
    (7, -0.25),  # first step into the buffer
    (8, -0.5),  # halfway through the buffer
    (10, -1.0),  # exactly max_length
    (12, -1.0),  # beyond max_length
]


@pytest.mark.parametrize("length, expected", SOFT_OVERLONG)
def test_soft_overlong(length, expected):
    reward = get_soft_overlong_reward(max_length=10, buffer=4)
    assert reward([""], completion_tokens=[length]) == [pytest.approx(expected)]


def test_soft_overlong_counts_words_without_token_counts():
    reward = get_soft_overlong_reward(max_length=10, buffer=4)
    assert reward(["w " * 8]) == [pytest.approx(-0.5)]


@pytest.mark.parametrize(
    "factory, kwargs",
    [
        (get_soft_overlong_reward, {"max_length": 10, "buffer": 0}),  # empty buffer
        (get_soft_overlong_reward, {"max_length": 10, "buffer": 20}),  # buffer beyond max_length
        (get_repetition_penalty_reward, {"max_penalty": 1.0}),  # a positive "penalty"
        (get_repetition_penalty_reward, {"ngram_size": 0}),  # empty n-grams
        (get_cosine_length_reward, {"max_length": 0}),  # no length scale
    ],
)
def test_bad_factory_arguments_are_refused(factory, kwargs):
    with pytest.raises(ValueError):
        factory(**kwargs)


def test_all_scores_are_finite_numbers():
    reward = get_cosine_length_reward()
    scores = reward(["<answer>4</answer>", "x"], answer=["4", "4"])
    assert all(isinstance(s, float) and math.isfinite(s) for s in scores)
