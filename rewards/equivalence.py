"""Decide whether a model's final answer is mathematically equivalent to the reference answer.

The path from cheapest to most expensive, so that most answers never reach sympy:

1. Normalise both strings: LaTeX wrappers and spacing (`$`, `\\left`, `\\dfrac`, `\\,`), thousands
   separators ("1,000"), degree signs, a leading "the answer is", units written as `\\text{ cm}`.
2. Split structures: tuples and intervals (ordered, brackets must match), sets and plain lists
   such as "2, 3" or "x = 2 or x = 3" (unordered), unions of intervals. A list never matches a
   single value, which is what makes "3, 4, 5, 6" wrong when the reference is 5.
3. Per element: drop a "x =" in front, strip a trailing unit word ("5 apples") and a percent sign
   (a percentage reference accepts both 50 and 0.5; a percentage answer to a plain reference is
   read as either), then parse with `rewards.expression` (no eval) and refuse unsafe trees.
4. A reference that is a plain number (an integer, a decimal or a fraction, maybe negative) only
   accepts a plain number: an expression to evaluate is refused, or a model could restate the
   question ("16 + 20" for 36) and be paid for arithmetic it never did.
5. Exact rational arithmetic in Python when both sides are plain numbers (0.5 == \\frac{1}{2}).
6. Floating-point evaluation at fixed random points: a clear difference means "not equal", and
   sympy is skipped.
7. Only then sympy, in a separate process with a time limit (`rewards.sympy_client`).

Deliberate simplifications: no numeric tolerance between different exact values (1.414 is not
\\sqrt{2}); a single letter after a number is a symbol, not a unit ("5 m" is 5m, while "5 cm" and
"5\\text{ m}" are 5); answers longer than MAX_ANSWER_CHARS are wrong unless the reference is as
long; unsupported notation falls back to comparing the normalised text.
"""
from __future__ import annotations

import random
import re
import string
import time

from rewards.expression import (
    exact_value,
    float_value,
    free_symbols,
    is_safe,
    parse_expression,
)
from rewards.extraction import braced_arguments, matching_brace
from rewards.sympy_client import SympyClient

MAX_ANSWER_CHARS = 1_000
MAX_ITEMS = 20
MAX_NESTING = 50
_CONNECTORS = ("or", "and")

_WRAPPERS = re.compile(r"\\(?:left|right|bigl|bigr|Bigl|Bigr|big|Big|displaystyle)(?![A-Za-z])")
_TEXT_COMMANDS = ("\\text", "\\textbf", "\\textit", "\\textrm", "\\mathrm", "\\mathbf", "\\mbox")
_PLAIN_REPLACEMENTS = [
    ("\u2212", "-"), ("\u00d7", "\\times "), ("\u00b7", "\\cdot "), ("\u00f7", "\\div "),
    ("\u03c0", "\\pi "), ("\u221e", "\\infty "), ("\u00a0", " "), ("\\dfrac", "\\frac"),
    ("\\tfrac", "\\frac"), ("{,}", ""), ("\\%", "%"), ("\\$", ""), ("$", ""), ("\\(", ""),
    ("\\)", ""), ("\\[", ""), ("\\]", ""), ("\\!", ""), ("\\,", " "), ("\\;", " "),
    ("\\:", " "), ("\\ ", " "), ("~", " "), ("^{\\circ}", ""), ("^\\circ", ""), ("\u00b0", ""),
    ("\\degree", ""), ("\u20ac", ""), ("\u00a3", ""),
]
_ANSWER_PREFIX = re.compile(r"^(?:the\s+)?(?:final\s+)?answer\b\s*(?:is\b|:)?\s*:?\s*", re.IGNORECASE)
_MEMBERSHIP_PREFIX = re.compile(r"^[A-Za-z]\s*\\in\s*")
_THOUSANDS = re.compile(r"(?<![\d.])\d{1,3}(?:,\d{3})+(?![\d])")
_FRAC_DIGITS = re.compile(r"\\frac\s*(\d)\s*(\d)")
_CHOICE = re.compile(r"^\(([A-Z])\)$")
_ASSIGNMENT_LHS = re.compile(r"^\s*(?:[A-Za-z]|\\[A-Za-z]+)\s*$")
_NUMBER_HEAD = re.compile(
    r"^([-+]?\s*(?:(?:\d+(?:\.\d*)?|\.\d+)(?:\s*/\s*\d+)?|\\frac\{[^{}]*\}\{[^{}]*\}))(\s*)(.*)$",
    re.DOTALL,
)
_UNIT_WORD = r"[A-Za-z]+\.?(?:\^\{?-?\d\}?)?"
_UNIT_TAIL = re.compile(rf"^{_UNIT_WORD}(?:\s*(?:/|\s)\s*{_UNIT_WORD})*$")
_UNIT_TEXT = re.compile(r"^[\sA-Za-z./%]*$")


def answers_match(candidate: str, reference: str, client: SympyClient, timeout_s: float) -> bool:
    """Whether `candidate` is mathematically equivalent to `reference`.

    Args:
        candidate: the model's final answer (already cut out of the completion).
        reference: the dataset's answer.
        client: where to send the questions that need sympy.
        timeout_s: the time this comparison may spend in sympy, in total.

    Example: answers_match("\\dfrac{1}{2}", "0.5", ...) is True; answers_match("0.5, 1", "0.5", ...)
    is False (two answers for one).
    """
    length_limit = max(MAX_ANSWER_CHARS, 2 * len(reference))
    if len(candidate) > 4 * length_limit:  # before normalising, which copies the text many times
        return False
    normal_candidate, normal_reference = normalize_answer(candidate), normalize_answer(reference)
    if not normal_candidate or normal_reference is None:
        return False
    if len(normal_candidate) > length_limit:
        return False
    if _squash(normal_candidate) == _squash(normal_reference):
        return True
    if _nesting_depth(normal_candidate) > MAX_NESTING:
        return False
    context = _Context(client, time.monotonic() + timeout_s)
    return _structures_match(_structure(normal_candidate), _structure(normal_reference), context)


def normalize_answer(text: str) -> str | None:
    """Normalised answer text; None when it holds several different `\\boxed{}` answers.

    Example: normalize_answer("$\\left( 1{,}000, \\dfrac{1}{2} \\right)$") == "( 1000, \\frac{1}{2} )"
    """
    text = str(text).strip()
    if "\\boxed" in text:
        boxes = {box.strip() for box in braced_arguments(text, "\\boxed")}
        if len(boxes) > 1:
            return None
        if boxes:
            text = boxes.pop()
    text = _WRAPPERS.sub("", text)
    for old, new in _PLAIN_REPLACEMENTS:
        text = text.replace(old, new)
    text = _unwrap_text_commands(text)
    text = _FRAC_DIGITS.sub(r"\\frac{\1}{\2}", text)
    text = " ".join(text.split())
    text = _ANSWER_PREFIX.sub("", text)
    text = _MEMBERSHIP_PREFIX.sub("", text)
    text = text.rstrip(".").strip()
    if not text.startswith(("(", "[", "\\{")):
        text = _THOUSANDS.sub(lambda match: match.group().replace(",", ""), text)
    choice = _CHOICE.match(text)
    return choice.group(1) if choice else text


def _unwrap_text_commands(text: str) -> str:
    """`\\text{or}` becomes a connector, `\\text{ cm}` after a value is dropped, others unwrapped."""
    for command in _TEXT_COMMANDS:
        start = text.find(command + "{")
        while start >= 0:
            end = matching_brace(text, start + len(command))
            if end < 0:
                break
            content = text[start + len(command) + 1:end]
            before, after = text[:start], text[end + 1:]
            if content.strip().lower() in _CONNECTORS:
                replacement = f" {content.strip().lower()} "
            elif before.strip() and _UNIT_TEXT.match(content) and content.strip():
                replacement = " "
                after = re.sub(r"^\^\{?\d\}?", "", after)
            else:
                replacement = f" {content} "
            text = before + replacement + after
            start = text.find(command + "{", len(before) + len(replacement))
    return text


def _squash(text: str, ignore_case: bool = False) -> str:
    squashed = "".join(text.split())
    return squashed.casefold() if ignore_case else squashed


def _nesting_depth(text: str) -> int:
    depth = deepest = 0
    for char in text:
        if char in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in ")]}":
            depth -= 1
    return deepest


class _Context:
    def __init__(self, client: SympyClient, deadline: float):
        self.client = client
        self.deadline = deadline


def _structure(text: str) -> tuple[str, object]:
    """("union" | "set" | "tuple" | "list" | "single", parts) for a normalised answer."""
    union = _split_top_level(text, separators=("\\cup",))
    if len(union) > 1:
        return "union", [_structure(part) for part in union]
    if text.startswith("\\{") and text.endswith("\\}"):
        return "set", _split_top_level(text[2:-2], separators=(",",))
    if text[:1] in "([" and text[-1:] in ")]" and _closes_at_end(text):
        items = _split_top_level(text[1:-1], separators=(",",))
        if len(items) > 1:
            return "tuple", (text[0] + text[-1], items)
    items = _split_top_level(text, separators=(",", ";", "\n", " or ", " and "))
    if len(items) > 1:
        return "list", items
    return "single", text


def _closes_at_end(text: str) -> bool:
    depth = 0
    for index, char in enumerate(text):
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
            if depth == 0 and index != len(text) - 1:
                return False
    return depth == 0


def _split_top_level(text: str, separators: tuple[str, ...]) -> list[str]:
    parts, depth, start, index = [], 0, 0, 0
    while index < len(text):
        char = text[index]
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif depth == 0:
            separator = next((s for s in separators if text.startswith(s, index)), None)
            if separator is not None:
                parts.append(text[start:index].strip())
                index += len(separator)
                start = index
                continue
        index += 1
    parts.append(text[start:].strip())
    return parts


def _structures_match(candidate, reference, context: _Context) -> bool:
    candidate_kind, candidate_parts = candidate
    reference_kind, reference_parts = reference
    unordered = ("set", "list")
    if candidate_kind in unordered and reference_kind in unordered:
        return _unordered_match(candidate_parts, reference_parts, _elements_match, context)
    if candidate_kind != reference_kind:
        return False
    if candidate_kind == "single":
        return _elements_match(candidate_parts, reference_parts, context)
    if candidate_kind == "union":
        return _unordered_match(candidate_parts, reference_parts, _structures_match, context)
    (candidate_brackets, candidate_items), (reference_brackets, reference_items) = (
        candidate_parts,
        reference_parts,
    )
    return (
        candidate_brackets == reference_brackets
        and len(candidate_items) == len(reference_items) <= MAX_ITEMS
        and all(_elements_match(c, r, context) for c, r in zip(candidate_items, reference_items))
    )


def _unordered_match(candidates: list, references: list, match, context: _Context) -> bool:
    if len(candidates) != len(references) or len(candidates) > MAX_ITEMS:
        return False
    unused = list(candidates)
    for reference in references:
        found = next((c for c in unused if match(c, reference, context)), None)
        if found is None:
            return False
        unused.remove(found)
    return True


def _elements_match(candidate: str, reference: str, context: _Context) -> bool:
    if "=" in candidate or "=" in reference:
        candidate_sides, reference_sides = candidate.split("="), reference.split("=")
        if len(candidate_sides) == len(reference_sides) == 2:
            is_assignment = _ASSIGNMENT_LHS.match(candidate_sides[0]) is not None
            same_variable = _squash(candidate_sides[0]) == _squash(reference_sides[0])
            if not (is_assignment and same_variable):
                return _equations_match(candidate_sides, reference_sides, context)
        # "x = 5", "2 + 3 = 5": the value is what follows the last "=".
        candidate, reference = candidate_sides[-1], reference_sides[-1]
    candidate, reference = candidate.strip(), reference.strip()
    if _squash(candidate) == _squash(reference):
        return True
    candidate_core, candidate_percent = _strip_percent(candidate)
    reference_core, reference_percent = _strip_percent(reference)
    candidate_tree, reference_tree = _to_tree(candidate_core), _to_tree(reference_core)
    if candidate_tree is None or reference_tree is None:
        # Not maths we can parse: compare as text, where case does not matter ("Yes" == "yes").
        same_text = _squash(candidate_core, True) == _squash(reference_core, True)
        return same_text and candidate_percent == reference_percent
    if _is_plain_number(reference_tree) and not _is_plain_number(candidate_tree):
        return False
    pairs = [(candidate_tree, reference_tree)]
    if reference_percent and not candidate_percent:  # "0.5" for "50%"
        pairs.append((candidate_tree, _hundredth(reference_tree)))
    elif candidate_percent and not reference_percent:  # "50%" for "0.5"
        pairs.append((_hundredth(candidate_tree), reference_tree))
    return any(_trees_equal(a, b, False, context) for a, b in pairs)


def _is_plain_number(tree) -> bool:
    """A number as one writes a final answer: 36, -2.5, 3/4, \\frac{-1}{2}, 3 \\times 10^{2};
    not 16 + 20, 2^{10} or \\sqrt[3]{8}."""
    def signed_number(node) -> bool:
        return node[0] == "num" or (node[0] == "neg" and node[1][0] == "num")

    if tree[0] == "neg":
        tree = tree[1]
    if tree[0] == "div":
        return signed_number(tree[1]) and signed_number(tree[2])
    if tree[0] == "mul":  # scientific notation: a number times a power of ten
        power = tree[2]
        return (tree[1][0] == "num" and power[0] == "pow" and power[1] == ("num", 10, 1)
                and signed_number(power[2]))
    return tree[0] == "num"


def _hundredth(tree):
    return ("div", tree, ("num", 100, 1))


def _equations_match(candidate_sides, reference_sides, context: _Context) -> bool:
    """Equations are equal when lhs - rhs agree up to sign: y = 2x + 1 matches 2x + 1 = y."""
    trees = [_to_tree(side) for side in (*candidate_sides, *reference_sides)]
    if any(tree is None for tree in trees):
        return False
    candidate_tree = ("sub", trees[0], trees[1])
    reference_tree = ("sub", trees[2], trees[3])
    return _trees_equal(candidate_tree, reference_tree, True, context)


def _strip_percent(text: str) -> tuple[str, bool]:
    if text.endswith("%"):
        return text[:-1].strip(), True
    if text.lower().endswith(" percent"):
        return text[: -len(" percent")].strip(), True
    return text, False


def _to_tree(text: str):
    """Parse an element, dropping a trailing unit word ("5 apples", "3.5 cm/s") if needed."""
    tree = parse_expression(text)
    if tree is None:
        head = _NUMBER_HEAD.match(text)
        if head and _is_unit_tail(head.group(3), spaced=bool(head.group(2))):
            tree = parse_expression(head.group(1))
    if tree is None or not is_safe(tree):
        return None
    return tree


def _is_unit_tail(tail: str, spaced: bool) -> bool:
    words = re.findall(r"[A-Za-z]+", tail)
    if not words or not _UNIT_TAIL.match(tail) or any(w.lower() in _CONNECTORS for w in words):
        return False
    return spaced or len(words[0]) > 1  # "5x" is a product, "5cm" a length


def _sample_points(count: int) -> list[dict[str, complex]]:
    # Fixed points in (0.3, 1.7): away from the poles and branch cuts that 0 and negatives hit.
    generator = random.Random(0)
    return [
        {letter: complex(generator.uniform(0.3, 1.7)) for letter in string.ascii_letters}
        for _ in range(count)
    ]


_POINTS = _sample_points(3)


def _trees_equal(a, b, either_sign: bool, context: _Context) -> bool:
    if a == b:
        return True
    exact_a, exact_b = exact_value(a), exact_value(b)
    if exact_a is not None and exact_b is not None:
        return exact_a == exact_b or (either_sign and exact_a == -exact_b)
    if not free_symbols(a) | free_symbols(b) <= set(_POINTS[0]):
        return False
    for point in _POINTS:
        value_a, value_b = float_value(a, point), float_value(b, point)
        if value_a is None or value_b is None:
            continue
        scale = max(1.0, abs(value_a), abs(value_b))
        if abs(value_a - value_b) > 1e-8 * scale and not (
            either_sign and abs(value_a + value_b) <= 1e-8 * scale
        ):
            return False  # clearly different numbers: no need for sympy
    remaining = context.deadline - time.monotonic()
    if remaining <= 0:
        return False
    return bool(context.client.equal(a, b, either_sign, remaining))
