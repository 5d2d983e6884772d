"""The accuracy reward: equivalence of answers, extraction from completions, hostile inputs."""
import concurrent.futures
import multiprocessing
import threading
import time

import pytest

from rewards import accuracy_reward, get_accuracy_reward
from rewards.equivalence import answers_match
from rewards.math_client import MathClient, shared_client


def matches(candidate: str, reference: str) -> bool:
    return answers_match(candidate, reference, shared_client(), timeout_s=10.0)


EQUIVALENT = [
    ("5", "5"),  # identical integers
    ("+5", "5"),  # explicit plus sign
    ("-7", "-7"),  # negative integers
    ("\u22127", "-7"),  # unicode minus sign
    ("1,000", "1000"),  # thousands separator in the answer
    ("1000", "1,000"),  # thousands separator in the reference
    ("1{,}000{,}000", "1000000"),  # LaTeX thousands separators
    ("3.0", "3"),  # trailing decimal zero
    ("0.5", "\\frac{1}{2}"),  # decimal against \frac
    ("\\dfrac{1}{2}", "0.5"),  # \dfrac
    ("\\tfrac12", "1/2"),  # \tfrac with single-digit arguments, against a slash fraction
    ("-\\frac{3}{4}", "-0.75"),  # negative fraction
    ("\\frac{-3}{4}", "-\\frac{3}{4}"),  # sign inside the numerator
    ("50", "50\\%"),  # percentage reference, answer without the sign
    ("50%", "50\\%"),  # percentage with percent sign on both sides
    ("0.5", "50%"),  # percentage reference, answer as a fraction of one
    ("50 percent", "50%"),  # percent spelled out
    ("\\sqrt{2}/2", "\\frac{\\sqrt2}{2}"),  # \sqrt with and without braces
    ("\\frac{1}{\\sqrt{2}}", "\\frac{\\sqrt{2}}{2}"),  # rationalised denominator (sympy)
    ("2\\sqrt{3}", "\\sqrt{12}"),  # simplified surd (sympy)
    ("2\\pi", "\\pi \\cdot 2"),  # \pi and \cdot
    ("3 \\times 10^{2}", "300"),  # \times and ^
    ("\\left( 1, 2 \\right)", "(1,2)"),  # \left( \right) around a tuple
    ("[1, 2)", "[1,2)"),  # half-open interval
    ("(-\\infty, 2) \\cup (3, \\infty)", "(3,\\infty)\\cup(-\\infty,2)"),  # union, any order
    ("(\\frac{1}{2}, 3)", "(0.5, 3)"),  # tuple elements compared mathematically
    ("2, 3", "3, 2"),  # list of solutions, any order
    ("\\{3, 2\\}", "2, 3"),  # set against a list
    ("x = 2 \\text{ or } x = 3", "2, 3"),  # solutions written as assignments joined by "or"
    ("x^2+2x+1", "(x+1)^2"),  # symbolic equivalence (sympy)
    ("y = 2x+1", "2x + 1 = y"),  # equations, sides swapped
    ("x = 5", "5"),  # variable assignment dropped
    ("2 + 3 = 5", "5"),  # the value after the last "="
    ("5 apples", "5"),  # trailing unit word stripped
    ("5\\text{ cm}", "5"),  # \text unit stripped
    ("12 \\text{ cm}^2", "12"),  # unit with exponent stripped
    ("30^\\circ", "30"),  # degree sign
    ("\\$42", "42"),  # dollar sign
    ("$42$", "42"),  # math-mode delimiters
    ("The answer is 42.", "42"),  # leading phrase and final period
    ("\\boxed{42}", "42"),  # a box inside the answer tag
    ("yes", "Yes"),  # text answers compared case-insensitively
    ("\\text{(A)}", "A"),  # multiple-choice letter
    # The examples of issue 17, which the first (own-parser) version scored 0.
    ("x \\geq 5", "x >= 5"),  # inequality in LaTeX against ASCII
    ("5 \\leq x", "x \\geq 5"),  # the same inequality flipped
    ("x \\in [-2,7]", "-2 \\le x \\le 7"),  # an interval for a double inequality
    ("\\cfrac{1}{3}", "1/3"),  # \cfrac
    ("\\boxed{125\\textnormal{ miles}}", "125 miles"),  # \textnormal unit inside a box
    ("0.0833333333333333", "\\frac{1}{12}"),  # a long decimal for a fraction
    ("(0.6,2.6667]", "(\\frac{3}{5},\\frac{8}{3}]"),  # decimals within 1e-4 in an interval
    ("Final Answer: The largest $n$ is 34.", "34"),  # a sentence with one number
    ("32,\\! 349", "32349"),  # thousands separator with \!
    ("1e3", "1000"),  # scientific notation
    # More of the categories real data holds.
    ("\\begin{pmatrix}1 & 2 \\\\ 3 & 4\\end{pmatrix}", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}"),  # matrix
    ("\\{1, 2, 3\\}", "\\{3, 2, 1\\}"),  # sets in any order
    ("(1, 2, 3)", "(1,2,3)"),  # a triple
    ("90^{\\circ}", "90"),  # degrees
    ("1{,}234{,}567", "1234567"),  # LaTeX thousands separators
    ("2.5 \\times 10^{3}", "2500"),  # scientific notation in LaTeX
    ("\\tfrac{3}{4}", "0.75"),  # \tfrac
    ("3.1416", "\\pi"),  # a decimal within 1e-4 of an exact value
    ("x = 5", "5"),  # an assignment for a plain reference
    ("18 < x \\le 26", "(18, 26]"),  # an inequality for an interval
    ("1\\,591\\,996", "1591996"),  # thin spaces as thousands separators
    ("283 dollars", "283"),  # a unit word
    ("3x + 3", "y = 3x + 3"),  # the value of y for its equation, as 5 for x = 5
]

NOT_EQUIVALENT = [
    # A plain-number reference accepts only a plain number: evaluating an expression would pay a
    # model for restating the question.
    ("16 + 20", "36"),  # the question restated
    ("\\sqrt[3]{8}", "2"),  # a root left to evaluate
    ("2^{10}", "1024"),  # a power left to evaluate
    ("\\sin^2 x + \\cos^2 x", "1"),  # an identity, not a value
    ("-5", "5"),  # sign matters
    ("6", "5"),  # different integers
    ("0.33", "\\frac{1}{3}"),  # a rounded decimal is not the fraction
    ("1.414", "\\sqrt{2}"),  # an approximation is not the surd
    ("0.05%", "5%"),  # percent of a percent
    ("(1, 2]", "[1,2)"),  # interval brackets matter
    ("(2, 1)", "(1, 2)"),  # tuple order matters
    ("x^2+2x+2", "(x+1)^2"),  # different polynomial
    ("5 or 6", "5"),  # two candidates
    ("3, 4, 5, 6", "5"),  # a list of candidates
    ("5\\text{ or }6", "5"),  # candidates joined in \text
    ("x = 3 or x = 5", "5"),  # several assignments
    ("5 6", "30"),  # juxtaposed numbers are not a product
    ("5x", "5"),  # a trailing single letter is a symbol, not a unit
    ("10^{-40}", "0"),  # tiny is not zero
    ("yes", "no"),  # different words
    ("sey", "yes"),  # words are not products of symbols
    ("\\frac{1}{0}", "1"),  # division by zero is never right
    ("", "5"),  # empty answer
    # The examples of issue 17 that the first version scored 1.
    ("0", "a + 3z = 0"),  # the right-hand side of an equation is not its solution
    ("11a+c", "7 = 11a+c"),  # one side of an equation is not the equation
    ("It is 10, no wait, it is 12.", "12"),  # hedging in prose: several answers
    ("3.14", "\\pi"),  # a decimal further than 1e-4 from the exact value
    ("10^4", "10000"),  # a power left to evaluate
    ("3x = 12", "12"),  # an equation that does not state the value
    ("12 = 3x", "y = 3x + 3"),  # a different equation
]

REFERENCES = [
    ("72", "Natalia sold 48 clips in April and half as many in May: 48 + 24 = 72.\n#### 72", 1.0),  # GSM8K
    ("1072", "She earns 1,000 + 72 = 1,072 dollars.\n#### 1,072", 1.0),  # GSM8K with a separator
    ("73", "... #### 72", 0.0),  # GSM8K, wrong
    ("0.5", "Half of one is $\\boxed{\\frac{1}{2}}$.", 1.0),  # MATH: the boxed answer of a solution
    ("2", "We get $x = 2$, so $y = \\boxed{\\frac{1}{2}}$.", 0.0),  # MATH: not an intermediate value
    ("\\frac{1}{2}", "0.5", 1.0),  # plain reference
]

HOSTILE = [
    ("9**9**9**9", "5"),  # Python power tower
    ("9^{9^{9^{9}}}", "5"),  # LaTeX power tower
    ("2^{2^{100}}", "5"),  # exponent far too large
    ("(2^{1000})^{1000}", "5"),  # a million-bit power
    ("10000!", "5"),  # huge factorial
    ("((10)!)!", "5"),  # nested factorial
    ("1" * 100_000, "5"),  # a 100,000-digit number
    ("(" * 5_000 + "1" + ")" * 5_000, "1"),  # deeply nested brackets
    ("{" * 100_000, "1"),  # unclosed braces
    ("\\frac{" * 2_000 + "1", "1"),  # unclosed \frac nest
    ("-" * 10_000 + "1", "1"),  # a long chain of unary minus signs
    ("x" * 1_000_000, "x"),  # a 1 MB answer
]


@pytest.mark.parametrize("candidate, reference", EQUIVALENT)
def test_equivalent_answers_match(candidate, reference):
    assert matches(candidate, reference)


@pytest.mark.parametrize("candidate, reference", NOT_EQUIVALENT)
def test_different_answers_do_not_match(candidate, reference):
    assert not matches(candidate, reference)


@pytest.mark.parametrize("answer, reference, expected", REFERENCES)
def test_references_as_datasets_write_them(answer, reference, expected):
    assert accuracy_reward([f"<answer>{answer}</answer>"], answer=[reference]) == [expected]


def test_the_hostile_batch_scores_zero_in_under_a_second():
    hostile = ["9**9**9**9", "10000!", "9" * 100_000, "(" * 5_000 + "1" + ")" * 5_000,
               "10^{10^{10}}", "2^{2^{2^{2^{2^{2^{2}}}}}}", "\\sum_{i=1}^{10^{10}} i"]
    completions = [f"<think>a</think><answer>{answer}</answer>" for answer in hostile]
    completions.append("<think>" + "a " * 500_000 + "</think><answer>" + "1" * 1000 + "</answer>")  # 1 MB
    accuracy_reward(["<answer>1</answer>"], answer=["2"])  # the worker is started before timing
    start = time.monotonic()
    scores = accuracy_reward(completions, answer=["5"] * len(completions))
    assert scores == [0.0] * len(completions)
    assert time.monotonic() - start < 1.0


@pytest.mark.parametrize("candidate, reference", HOSTILE, ids=lambda v: repr(v[:20]))
def test_hostile_answers_are_rejected_quickly(candidate, reference):
    start = time.monotonic()
    assert not matches(candidate, reference)
    assert time.monotonic() - start < 2.0  # pre-checks, never a sympy timeout


COMPLETIONS = [
    ("<think>2+2</think><answer>4</answer>", "4", 1.0),  # the R1 template
    ("2+2</think>\n<answer>4</answer>", "4", 1.0),  # completion after a prefilled <think>
    ("<answer>4</answer>", "4", 1.0),  # no thinking at all: the answer still counts
    ("<think>...</think><answer>5</answer>", "4", 0.0),  # wrong answer
    ("<think>2+2 = 4</think> The answer is 4.", "4", 0.0),  # no answer tag
    ("<think><answer>4</answer></think>", "4", 0.0),  # answer tag only inside the thinking
    ("<think>a</think><answer>4</answer><think>b", "4", 0.0),  # thinking reopened, never closed
    ("<think> thinking... <answer>4</answer>", "4", 0.0),  # thinking never closed
    ("<think>a</think><answer>3</answer><answer>4</answer>", "4", 0.0),  # two different answers
    ("<think>a</think><answer>4</answer><answer>4</answer>", "4", 1.0),  # same answer twice
    ("<think>a</think><answer>4</answer></answer>", "4", 0.0),  # stray closing tag
    ("<think>a</think><answer>4", "4", 0.0),  # answer never closed
    ("<think>a</think><answer> </answer>", "4", 0.0),  # empty answer
    ("<think>a</think><answer>1, 2, 3, 4</answer>", "4", 0.0),  # many candidates
    ("<think>a</think><answer>\\boxed{3} \\boxed{4}</answer>", "4", 0.0),  # two boxes, one tag
    ("<think>a</think>" + "<answer>4</answer>" * 20, "4", 0.0),  # tag flood
]


@pytest.mark.parametrize("completion, reference, expected", COMPLETIONS)
def test_accuracy_reward_on_completions(completion, reference, expected):
    assert accuracy_reward([completion], answer=[reference]) == [expected]


BOXED = [
    ("<think>a</think> so the answer is $\\boxed{\\frac{1}{2}}$", "0.5", 1.0),  # last box
    ("work... $\\boxed{0.5}$", "0.5", 1.0),  # no thinking, one box
    ("<think>\\boxed{0.5}</think> I am not sure", "0.5", 0.0),  # box only inside the thinking
    ("$\\boxed{1}$ or $\\boxed{0.5}$", "0.5", 0.0),  # two different boxes
    ("<think>a</think> the answer is 0.5", "0.5", 0.0),  # no box
    ("$\\boxed{0.5", "0.5", 0.0),  # box never closed
]


@pytest.mark.parametrize("completion, reference, expected", BOXED)
def test_boxed_answer_source(completion, reference, expected):
    reward = get_accuracy_reward(answer_source="boxed")
    assert reward([completion], answer=[reference]) == [expected]


def test_a_none_reference_is_not_judged():
    # None: the sample has no reference, so accuracy does not judge it.
    assert accuracy_reward(["<answer>4</answer>", "<answer>4</answer>"], answer=[None, "4"]) == [None, 1.0]


def test_missing_answer_column_is_an_error():
    with pytest.raises(KeyError, match="answer"):
        accuracy_reward(["<answer>4</answer>"], prompts=["p"])


def test_bad_factory_arguments_are_refused():
    with pytest.raises(ValueError, match="answer_source"):
        get_accuracy_reward(answer_source="last_line")


def test_one_megabyte_completions_score_quickly():
    completions = [
        "<think>" + "a " * 500_000 + "</think><answer>4</answer>",  # long but correct
        "<answer>" * 130_000,  # a megabyte of opening tags
        "\\boxed{" * 150_000,  # a megabyte of unclosed boxes
        "<think>x</think><answer>" + "{" * 1_000_000 + "</answer>",  # a megabyte of braces
    ]
    start = time.monotonic()
    assert accuracy_reward(completions, answer=["4"] * 4) == [1.0, 0.0, 0.0, 0.0]
    assert get_accuracy_reward(answer_source="boxed")(completions, answer=["4"] * 4) == [0.0] * 4
    assert time.monotonic() - start < 3.0


def test_slow_question_times_out_and_the_worker_restarts():
    client = MathClient()
    try:
        # Equal numerically at every point, so only sympy can decide, and expanding
        # (a+b+c+d)^30 (a-b+c-d)^30 takes far longer than the limit.
        slow = ("(a+b+c+d)^{30}(a-b+c-d)^{30}", "((a+c)^2-(b+d)^2)^{30}")
        start = time.monotonic()
        assert not answers_match(*slow, client, timeout_s=0.3)
        assert client.restarts == 1
        assert time.monotonic() - start < 60  # includes starting the worker
        # The next question gets a fresh worker and a proper answer.
        assert answers_match("x^2+2x+1", "(x+1)^2", client, timeout_s=30.0)
    finally:
        client.close()


def test_works_off_the_main_thread():
    results = []
    thread = threading.Thread(
        target=lambda: results.append(
            accuracy_reward(["<answer>x^2+2x+1</answer>", "<answer>7</answer>"], answer=["(x+1)^2", "8"])
        )
    )
    thread.start()
    thread.join(60)
    assert results == [[1.0, 0.0]]


def _score_in_child(completion: str, reference: str) -> list:
    return accuracy_reward([completion], answer=[reference])


def test_works_in_a_daemonic_multiprocessing_worker():
    # Pool workers are daemonic and may not start multiprocessing children; a subprocess is fine.
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        completion, reference = "<answer>\\frac{1}{\\sqrt{2}}</answer>", "\\frac{\\sqrt{2}}{2}"
        future = pool.submit(_score_in_child, completion, reference)
        assert future.result(timeout=120) == [1.0]


EXACT = [
    ("<think>8 + 12 = 20</think><answer>20</answer>", "20", 1.0),  # the number alone
    ("<think>a</think><answer> 20 </answer>", "20", 1.0),  # surrounding whitespace aside
    ("<think></think><answer>8 + 12 = 20</answer>", "20", 0.0),  # the working inside the answer
    ("<think>a</think><answer>The answer is 20</answer>", "20", 0.0),  # words around it
    ("<think>a</think><answer>20.0</answer>", "20", 0.0),  # another written form
    ("<think>20</think>", "20", 0.0),  # no answer block at all
]


@pytest.mark.parametrize("completion, reference, expected", EXACT)
def test_exact_accuracy_wants_the_answer_alone(completion, reference, expected):
    assert get_accuracy_reward(exact=True)([completion], answer=[reference]) == [expected]
    # The mathematical comparison accepts every one of them that has an answer block with 20 in it.
    assert accuracy_reward([completion], answer=[reference]) == [float("20" in completion.split("</think>")[-1])]
