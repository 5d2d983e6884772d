"""eval_metrics: hand-computed pass@1 / maj@k / pass@k cases and the evaluation table's layout."""
from itertools import combinations

import pytest

from r1train.eval_metrics import (estimate_pass_at_k, format_eval_table, majority_vote_correct, summarize, think_stats,
                                  thinking_of)

# One question each: (correct, answers, k, expected maj@k, expected pass@k, expected pass@1).
SINGLE_QUESTION_CASES = [
    # a 1-1 tie goes to the answer seen first, here the correct one
    ([1, 0], ["4", "5"], 2, 1.0, 1.0, 0.5),
    # the same tie with the wrong answer first: majority wrong, yet some sample right
    ([0, 1], ["5", "4"], 2, 0.0, 1.0, 0.5),
    # None does not vote: two unextractable samples do not outvote the single "4"
    ([0, 0, 1], [None, None, "4"], 3, 1.0, 1.0, 1 / 3),
    # no sample has an answer at all: no majority, counted wrong
    ([0, 0, 0], [None, None, None], 3, 0.0, 0.0, 0.0),
    # all wrong, with a clear (wrong) majority
    ([0, 0, 0], ["1", "1", "2"], 3, 0.0, 0.0, 0.0),
    # the right answer is in the minority
    ([0, 0, 1], ["5", "5", "4"], 3, 0.0, 1.0, 1 / 3),
    # surrounding whitespace does not split a vote: "4" and " 4 " are one answer with 2 votes
    ([1, 1, 0], ["4", " 4 ", "5"], 3, 1.0, 1.0, 2 / 3),
    # the winning answer counts as correct when any sample giving it was judged correct
    ([0, 1, 0], ["4", "4", "5"], 3, 1.0, 1.0, 1 / 3),
    # more samples than k: the unbiased estimator, 1 - C(3, 2) / C(4, 2) = 0.5
    ([1, 0, 0, 0], ["4", "5", "6", "7"], 2, 1.0, 0.5, 0.25),
]


@pytest.mark.parametrize("correct, answers, k, maj, pass_k, pass_1", SINGLE_QUESTION_CASES)
def test_summarize_single_question(correct, answers, k, maj, pass_k, pass_1):
    n = len(correct)
    scores = summarize([{"correct": correct, "answers": answers}], [1.0] * n, [10] * n, k)
    assert scores["maj@k"] == maj
    assert scores["pass@k"] == pytest.approx(pass_k)
    assert scores["pass@1"] == pytest.approx(pass_1)
    assert majority_vote_correct(correct, answers) == maj


def test_summarize_averages_over_questions_and_samples():
    problems = [
        {"correct": [1.0, 0.0], "answers": ["4", "5"]},  # tie, "4" first and right: maj 1, pass 1
        {"correct": [0.0, 0.0], "answers": [None, "7"]},  # all wrong: maj 0, pass 0
        {"correct": [1.0, 1.0], "answers": ["3", "3"]},  # all right: maj 1, pass 1
    ]
    scores = summarize(problems, formats=[1, 1, 0, 1, 0, 0], lengths=[10, 20, 30, 40, 50, 60], k=2)
    assert scores == pytest.approx({
        "pass@1": 3 / 6, "maj@k": 2 / 3, "pass@k": 2 / 3, "format_rate": 3 / 6, "completion_len": 35.0,
    })
    assert list(scores) == ["pass@1", "maj@k", "pass@k", "format_rate", "completion_len"]


@pytest.mark.parametrize("n, c, k, expected", [
    (4, 1, 2, 0.5),  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    (4, 0, 2, 0.0),  # nothing correct
    (4, 4, 2, 1.0),  # everything correct
    (5, 2, 1, 0.4),  # k = 1 is the plain success rate c / n
    (4, 1, 4, 1.0),  # k = n: "any correct"
    (4, 3, 2, 1.0),  # fewer than k wrong samples: every k-subset holds a correct one
])
def test_estimate_pass_at_k_hand_computed(n, c, k, expected):
    assert estimate_pass_at_k(n, c, k) == pytest.approx(expected)


def test_estimate_pass_at_k_matches_counting_subsets():
    # Slow reference: the share of all k-subsets of the n samples that hold a correct one.
    for n in range(1, 7):
        for c in range(n + 1):
            samples = [1] * c + [0] * (n - c)
            for k in range(1, n + 1):
                subsets = list(combinations(samples, k))
                reference = sum(1 for subset in subsets if any(subset)) / len(subsets)
                assert estimate_pass_at_k(n, c, k) == pytest.approx(reference), (n, c, k)


@pytest.mark.parametrize("problems, formats, lengths, k", [
    ([], [1.0], [1], 1),  # no questions
    ([{"correct": [1, 0], "answers": ["4"]}], [1, 1], [1, 1], 2),  # judgements and answers disagree in number
    ([{"correct": [1], "answers": ["4"]}], [1], [1], 2),  # fewer samples than k
    ([{"correct": [1], "answers": ["4"]}], [], [1], 1),  # no format scores
])
def test_summarize_refuses_malformed_input(problems, formats, lengths, k):
    with pytest.raises(ValueError):
        summarize(problems, formats, lengths, k)


def test_estimate_pass_at_k_refuses_impossible_counts():
    with pytest.raises(ValueError):
        estimate_pass_at_k(2, 3, 1)
    with pytest.raises(ValueError):
        estimate_pass_at_k(2, 1, 3)


def test_format_eval_table_single_model_exact():
    table = format_eval_table({"base": {"eval/accuracy": 0.02, "eval/format_rate": 0.0, "time/eval": 3.2}})
    assert table == (
        "model  accuracy  format_rate\n"
        "-----  --------  -----------\n"
        "base      0.020        0.000"
    )


def test_format_eval_table_columns_order_missing_values_and_rounding():
    table = format_eval_table({
        "smollm2-135m-instruct": {
            "eval/completion_len": 95.25, "eval/format_rate": 0.0, "eval/greedy_accuracy": 0.03,
            "eval/pass@k": 0.1, "eval/maj@k": 0.0, "eval/pass@1": 0.12345, "eval/accuracy": 0.12345,
        },
        "runs/x/final": {"eval/accuracy": 0.5, "eval/completion_len": 1234.5, "model": "runs/x/final"},
    })
    lines = table.splitlines()
    assert lines[0].split() == ["model", "accuracy", "pass@1", "maj@k", "pass@k", "greedy_accuracy", "format_rate",
                                "completion_len"]
    assert lines[2].split() == ["smollm2-135m-instruct", "0.123", "0.123", "0.000", "0.100", "0.030", "0.000", "95.250"]
    assert lines[3].split() == ["runs/x/final", "0.500", "-", "-", "-", "-", "-", "1234.500"]
    # Numbers are right-aligned: every line's last column ends at the same place.
    assert len({len(line) for line in lines}) == 1


def test_format_eval_table_reads_unprefixed_summary_keys():
    scores = summarize([{"correct": [1, 0], "answers": ["4", "5"]}], [1, 0], [10, 30], 2)
    lines = format_eval_table({"m": scores}).splitlines()
    assert lines[0].split() == ["model", "pass@1", "maj@k", "pass@k", "format_rate", "completion_len"]
    assert lines[2].split() == ["m", "0.500", "1.000", "1.000", "0.500", "20.000"]


@pytest.mark.parametrize("texts, references, expected", [
    (["7 + 5 is 12."], ["12"], [1.0]),  # the answer in prose, no template
    (["<answer>13</answer>"], ["12"], [0.0]),  # a wrong number
    (["12, no wait, 13"], ["12"], [0.0]),  # the last number counts, not any number
    (["no digits at all"], ["12"], [0.0]),  # nothing to read
    (["it is -3"], ["-3"], [1.0]),  # signs
    (["2.50"], ["2.5"], [1.0]),  # numerically equal decimals
    (["x"], ["\\frac{1}{2}"], None),  # not a plain-number reference: no verdict at all
])
def test_last_number_correct(texts, references, expected):
    from r1train.eval_metrics import last_number_correct

    assert last_number_correct(texts, references) == expected


# (completion with its prefill, expected thinking): one comment per case.
THINKING_CASES = [
    # a closed think block: its content, stripped
    ("<think>\n13 + 9 = 22\n</think>\n<answer>22</answer>", "13 + 9 = 22"),
    # the collapse this measures: an empty think block
    ("<think>\n</think>\n<answer>22</answer>", ""),
    # whitespace only is empty too
    ("<think>\n  \n</think><answer>22</answer>", ""),
    # never closed: still thinking when it stopped, so everything after <think> is thinking
    ("<think>\nfirst 13 + 7", "first 13 + 7"),
    # no <think> at all: no thinking
    ("<answer>22</answer>", ""),
]


@pytest.mark.parametrize("text, expected", THINKING_CASES)
def test_thinking_of(text, expected):
    assert thinking_of(text) == expected


def test_think_stats_share_and_mean_length():
    texts = [case for case, _ in THINKING_CASES]
    stats = think_stats(texts)
    assert stats["think_nonempty_frac"] == pytest.approx(2 / 5)
    assert stats["think_len"] == pytest.approx((len("13 + 9 = 22") + len("first 13 + 7")) / 5)
    # closed: the first three cases; the unclosed ramble and the missing block do not count
    assert stats["think_len_closed"] == pytest.approx(len("13 + 9 = 22") / 3)


def test_think_len_closed_follows_finished_thoughts_while_the_mean_falls():
    # A base model's rambles cut at the token limit dominate think_len; the thoughts it finishes are short.
    early = ["<think>\n" + "words " * 40] * 3 + ["<think>\n9</think><answer>9</answer>"]
    # Later every thought is finished, and each holds both steps of the chain.
    late = ["<think>\n9 - 7 = 2, 2 + 9 = 11</think><answer>11</answer>"] * 4
    assert think_stats(late)["think_len"] < think_stats(early)["think_len"]
    assert think_stats(late)["think_len_closed"] > think_stats(early)["think_len_closed"] == 1.0
    assert "think_len_closed" not in think_stats(["<think>\nstill going"])
    with pytest.raises(ValueError):
        think_stats([])
