"""Decide whether a model's final answer is mathematically equivalent to the reference answer.

Hugging Face's Math-Verify does the parsing and comparing, in a separate process with a time
limit per answer (`rewards.math_client`, `rewards.math_worker`). What is decided here, before
anything reaches that process, is what costs nothing to decide and everything to get wrong there:

1. The reference as datasets write it (`rewards.extraction.reference_answer`): GSM8K's
   "...#### 72" is 72, a MATH solution is its last `\\boxed{}`, anything else is itself.
2. Hostile answers are refused by their text: longer than MAX_ANSWER_CHARS (unless the reference
   is as long), nested deeper than MAX_NESTING, or holding a number of more than
   MAX_NUMBER_DIGITS digits. These would make the parser itself slow (5,000 nested brackets take
   Math-Verify five seconds; a 100,000-digit number about one); the worker then refuses what
   parses small but evaluates big (exponent towers, factorials, sums over huge ranges).
3. The same text on both sides matches at once, without a round trip, and two plain decimal
   numbers (`72`, `-1,234.5`: most GSM8K-style answers) are compared here as Math-Verify compares
   them (integers exactly, decimals rounded to six places), because a round trip through the
   worker costs tens of milliseconds where this costs microseconds.
"""
from __future__ import annotations

import re
from decimal import Decimal

from rewards.extraction import reference_answer
from rewards.math_client import MathClient

MAX_ANSWER_CHARS = 10_000  # a worked solution may sit in the answer; a megabyte may not
MAX_NESTING = 50
MAX_NUMBER_DIGITS = 100
_DIGIT_RUN = re.compile(r"\d+")
_PLAIN_DECIMAL = re.compile(r"[-+]?(?:[1-9]\d{0,2}(?:,\d{3})+|\d+)(?:\.\d+)?")  # 0,111 is a decimal comma
_ASSIGNMENT = re.compile(r"^[A-Za-z]\s*=\s*")
FLOAT_ROUNDING = 6  # Math-Verify's default: decimals agree when they agree to six places


def answers_match(candidate: str, reference: str, client: MathClient, timeout_s: float) -> bool:
    """Whether `candidate` is mathematically equivalent to `reference`.

    Args:
        candidate: the model's final answer (already cut out of the completion).
        reference: the dataset's answer: a plain answer, a GSM8K "#### 72" or a MATH solution.
        client: the Math-Verify process to ask.
        timeout_s: the time this comparison may take in that process; past it, False.

    Example: answers_match("\\dfrac{1}{2}", "0.5", ...) is True; answers_match("0.5, 1", "0.5", ...)
    is False (two answers for one), and so is answers_match("16 + 20", "36", ...) (the question
    restated, not answered).
    """
    reference = reference_answer(str(reference))
    candidate = candidate.strip()
    if not candidate or not reference:
        return False
    if _squash(candidate) == _squash(reference):
        return True
    if _too_costly(candidate, reference):
        return False
    plain = _plain_decimals(candidate, reference)
    if plain is not None:
        return plain
    return bool(client.equal(candidate, reference, timeout_s))


def _plain_decimals(candidate: str, reference: str) -> bool | None:
    """Whether two plain decimal numbers are equal; None unless both are plain decimals."""
    candidate = _ASSIGNMENT.sub("", candidate.strip("$ "))  # "$72$" and "x = 72" state 72
    if not (_PLAIN_DECIMAL.fullmatch(candidate) and _PLAIN_DECIMAL.fullmatch(reference)):
        return None
    a, b = Decimal(candidate.replace(",", "")), Decimal(reference.replace(",", ""))
    if "." not in candidate and "." not in reference:
        return a == b
    return round(a, FLOAT_ROUNDING) == round(b, FLOAT_ROUNDING)


def _too_costly(candidate: str, reference: str) -> bool:
    if len(candidate) > max(MAX_ANSWER_CHARS, 2 * len(reference)):
        return True
    if _nesting_depth(candidate) > max(MAX_NESTING, _nesting_depth(reference)):
        return True
    return _longest_digit_run(candidate) > max(MAX_NUMBER_DIGITS, _longest_digit_run(reference))


def _squash(text: str) -> str:
    return "".join(text.split())


def _nesting_depth(text: str) -> int:
    depth = deepest = 0
    for char in text:
        if char in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in ")]}":
            depth -= 1
    return deepest


def _longest_digit_run(text: str) -> int:
    return max((len(run) for run in _DIGIT_RUN.findall(text)), default=0)
