"""The Math-Verify side of answer checking, run as a separate process by `rewards.math_client`.

It reads one JSON request per line on stdin, {"answer": str, "reference": str}, and writes one
JSON line back: {"equal": true | false} or {"error": "..."}. It exits when stdin closes.

Parsing and comparing are Hugging Face's Math-Verify (`math_verify.parse` / `verify`, with its
`latex2sympy2_extended` parser), called with its own timeouts switched off: those use
`signal.alarm`, which fails outside the main thread. Living in its own process is what bounds it
in time instead: the parent waits on the pipe with a timeout and kills this process when an
answer takes too long. The address space is capped too, so a runaway simplification fails with
MemoryError here instead of exhausting the machine.

What this file adds around Math-Verify, each for a reason:
- an answer that is one bare expression (no `$`, `\\(`, `\\[` or `\\boxed`, no sentence, no
  unit word such as "dollars") is parsed whole, as if boxed, so that `x \\geq 5` stays an inequality and `2^{10}` a
  power; prose and delimited maths are searched the way Math-Verify searches a completion;
- a prose answer whose best-ranked matches hold two different numbers is several answers and
  matches nothing (Math-Verify would take the last: "10, no, 12" would be paid for 12);
- a tree safety check before anything is evaluated (exponent towers, huge factorials, sums over
  huge ranges), since sympy would otherwise compute `9^{9^{9^9}}` until killed;
- a reference that is a plain number accepts only a plain number: "16 + 20" for 36 restates the
  question rather than answering it (a long decimal, evidently rounded, accepts an exact value);
  an equation answers it only when it states the value (`x = 5`, `2 + 3 = 5`, not `3x = 5`);
- an inequality answers an interval reference (Math-Verify's allow_set_relation_comp);
- thin spaces as thousands separators (`1\\,591\\,996`);
- answers that are words ("yes", `\\text{odd}`) compare as words: parsed as maths they are
  products of one-letter symbols, so "sey" would equal "yes";
- scientific notation (`1e3`), which Math-Verify reads as 1·e·3;
- a relative tolerance of 1e-4 between a written decimal and an exact value, where Math-Verify
  rounds both to 6 decimal places (so `2.6667` is `8/3`, while `1.414` is not `\\sqrt{2}`).

This file is started as a script, so it imports nothing from the `rewards` package.
"""
import os  # already loaded by the interpreter at start-up, so it cannot be shadowed
import sys

# Run as a script, its own folder comes first on sys.path; drop it so no module of the rewards
# package can shadow a standard-library or sympy module.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402

MEMORY_LIMIT_BYTES = 3 * 1024**3
MAX_RESULT_DIGITS = 10_000  # bound on the digits an exact evaluation may produce
MAX_EXPONENT = 1_000
MAX_FACTORIAL = 1_000
MAX_RANGE = 10_000  # terms of a sum or product over numeric limits
RELATIVE_TOLERANCE = 1e-4

_DELIMITER = re.compile(r"(?<!\\)\$|\\\(|\\\[|\\boxed")  # an escaped \$ is a dollar sign
_WORDS = re.compile(r"[A-Za-z]{2,}(?: [A-Za-z]+)*")
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|textit|textrm|textnormal|mathrm|mbox)\{([^{}]*)\}")
_NEGATION = re.compile(r"\bnot\s*\S?$")
_TWO_WORDS = re.compile(r"[A-Za-z]{2,}[\s,:;.]+[A-Za-z]{2,}")
_LATEX_COMMAND = re.compile(r"\\(?:begin|end)\{[^{}]*\}|\\[A-Za-z]+")
_LONG_WORD = re.compile(r"(?:^|(?<=\s))([A-Za-z]{3,})(?![A-Za-z(])")  # "5 apples", not "orW(x)"
_FUNCTION_NAMES = {"sqrt", "sin", "cos", "tan", "cot", "sec", "csc", "log", "exp", "arcsin",
                   "arccos", "arctan", "sinh", "cosh", "tanh", "max", "min", "gcd", "lcm", "mod"}
_THIN_SPACE_SEPARATOR = re.compile(r"(?<=\d)\\[,;:! ]\s*(?=\d{3}(?!\d))")  # 1\,591\,996
_PERCENT_WORD = re.compile(r"(\d)\s*(?:percentage|percent|pct)\b", re.IGNORECASE)
_PERCENT_SIGN = re.compile(r"(?<!\\)%")  # a bare % starts a LaTeX comment
_SCIENTIFIC = re.compile(r"(?<![\w.\\])(\d+(?:\.\d+)?)[eE]([-+]?\d+)(?![\w.])")


class Unsafe(Exception):
    """The expression would take too much time or memory to evaluate."""


def _limit_memory() -> None:
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))
    except (ImportError, ValueError, OSError):
        pass  # not available on this platform; the parent's timeout still applies


class Checker:
    """Math-Verify plus the rules above; one instance per worker process."""

    def __init__(self) -> None:
        import sympy
        from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify
        from math_verify import parser as math_verify_parser

        logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout is disabled" notes
        self.sympy, self._parse, self._verify = sympy, parse, verify
        self._parser = math_verify_parser
        # The configuration of Math-Verify's own tests (boxed answers ranked first).
        self.config = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
        self.equal("\\frac{1}{2}", "0.5")  # load the grammar now, not on the first question

    # -- parsing -----------------------------------------------------------------------------

    def parse_answer(self, text: str, trusted: bool = False) -> list:
        """Math-Verify's parse of a final answer: [sympy object, text] when it parsed, [text]
        when it did not, [] when there is no answer or (unless `trusted`, as references are)
        several different ones."""
        text = _SCIENTIFIC.sub(r"\1\\times 10^{\2}", text.strip())
        if not text:
            return []
        if not _DELIMITER.search(text) and not _is_prose(text):
            bare = _PERCENT_SIGN.sub(r"\\%", _PERCENT_WORD.sub(r"\1\\%", text))
            bare = _THIN_SPACE_SEPARATOR.sub("", bare)
            parsed = self._parse("\\boxed{" + bare + "}", self.config, parsing_timeout=None)
            if parsed and not isinstance(parsed[0], str):
                return parsed
        if not trusted and self._hedges(text):
            return []
        return self._parse(text, self.config, parsing_timeout=None)

    def _hedges(self, text: str) -> bool:
        """Whether the best-ranked matches in prose name two different symbol-free values.

        Matches nested inside another match of the same rank are readings of the same answer
        (the 13 inside `$\\frac13$`), and a value right after "not" is rejected, not proposed:
        neither is a further answer.
        """
        patterns = [
            (pattern, target, priority)
            for regexes, target in self._parser.get_extraction_regexes(self.config)
            for pattern, priority in regexes
        ]
        for priority in sorted({priority for _, _, priority in patterns}):
            found = []
            for pattern, target, rank in patterns:
                if rank != priority:
                    continue
                for match in pattern.finditer(text):
                    value, _ = self._parser.extract_match(match, target)
                    negated = _NEGATION.search(text, max(0, match.start() - 8), match.start() + 1)
                    if value is not None and not negated:
                        found.append((match.start(), match.end(), value))
            if found:
                outer = [value for start, end, value in found
                         if not any(s <= start and end <= e and (s, e) != (start, end)
                                    for s, e, _ in found)]
                numbers = {self.sympy.srepr(v) for v in outer if _is_symbol_free_number(v)}
                return len(numbers) > 1
        return False

    # -- comparing ---------------------------------------------------------------------------

    def equal(self, answer_text: str, reference_text: str) -> bool:
        """Whether the answer is mathematically equal to the reference.

        Example: equal("\\\\dfrac{1}{2}", "0.5") is True; equal("16 + 20", "36") is False.
        """
        answer_words, reference_words = _as_words(answer_text), _as_words(reference_text)
        if answer_words and reference_words:
            return answer_words == reference_words
        references = self.parse_answer(reference_text, trusted=True)
        answers = self.parse_answer(answer_text)
        if not references or not answers:
            return False
        reference, answer = references[0], answers[0]
        if isinstance(reference, str) or isinstance(answer, str):
            return _squash(str(answer)) == _squash(str(reference))
        try:
            check_safe(reference)
            check_safe(answer)
        except Unsafe:
            return False
        if self.is_plain_number(reference) and not _is_approximation(reference):
            if not self.is_plain_number(_assigned_value(answer)) or not _states_a_value(answer):
                return False
        if self._verify(references, answers, timeout_seconds=None, allow_set_relation_comp=True):
            return True
        return self._close(reference, answer)

    def is_plain_number(self, expr) -> bool:
        """A number as one writes a final answer: 36, -2.5, 3/4, 50%, 3 \\times 10^{2};
        not 16 + 20, 2^{10} or \\sqrt[3]{8}."""
        sympy = self.sympy
        if isinstance(expr, sympy.Number):
            return True
        if not isinstance(expr, sympy.Mul) or len(expr.args) != 2:
            return False
        head, tail = expr.args
        if tail == sympy.UnevaluatedExpr(sympy.Rational(1, 100)):  # a percentage
            return isinstance(head, sympy.Number)
        for number, power in ((head, tail), (tail, head)):  # scientific notation
            if (isinstance(number, sympy.Number) and isinstance(power, sympy.Pow)
                    and power.base == 10 and isinstance(power.exp, sympy.Integer)):
                return True
        return False

    def _close(self, reference, answer) -> bool:
        """Equal within RELATIVE_TOLERANCE where one side is a written decimal and the other an
        exact value, element by element in tuples, sets and intervals."""
        sympy = self.sympy
        reference, answer = _assigned_value(reference), _assigned_value(answer)
        if isinstance(reference, sympy.Interval) and isinstance(answer, sympy.Interval):
            return (reference.left_open == answer.left_open
                    and reference.right_open == answer.right_open
                    and self._close(reference.start, answer.start)
                    and self._close(reference.end, answer.end))
        if isinstance(reference, (sympy.Tuple, sympy.FiniteSet)) and type(reference) is type(answer):
            if len(reference.args) != len(answer.args):
                return False
            pairs = zip(_ordered(reference), _ordered(answer))
            return all(self._close(r, a) for r, a in pairs)
        if not (_is_symbol_free_number(reference) and _is_symbol_free_number(answer)):
            return False
        if reference.has(sympy.Float) == answer.has(sympy.Float):
            return False  # two exact values, or two decimals: Math-Verify has decided
        try:
            r, a = complex(sympy.N(reference, 30)), complex(sympy.N(answer, 30))
        except (TypeError, ValueError):
            return False
        return abs(r - a) <= RELATIVE_TOLERANCE * max(abs(r), abs(a))


def _is_approximation(expr) -> bool:
    """A decimal with more than six decimal places: evidently a rounded value, which an exact
    expression (\\sqrt{17} for 4.123105625617661) answers as well as a number does."""
    return type(expr).__name__ == "Float" and "." in str(expr) and len(str(expr).split(".")[1].rstrip("0")) > 6


def _is_symbol_free_number(expr) -> bool:
    return getattr(expr, "is_number", False) is True and not getattr(expr, "free_symbols", True)


def _ordered(collection):
    """Elements in order: a tuple's own, a set's by numeric value where it has one."""
    items = list(collection.args)
    if type(collection).__name__ == "FiniteSet":
        try:
            items.sort(key=lambda item: complex(item).real)
        except (TypeError, ValueError):
            pass
    return items


def _assigned_value(expr):
    """`x = 5` -> 5; `2 + 3 = 5` -> 5 (the value after the last "="); anything else unchanged."""
    if type(expr).__name__ == "And" and all(type(a).__name__ == "Equality" for a in expr.args):
        expr = getattr(expr, "_unsorted_args", expr.args)[-1]
    return expr.rhs if type(expr).__name__ == "Equality" else expr


def _is_prose(text: str) -> bool:
    """Words outside LaTeX commands and `\\text{}` (two in a row, or one of three letters that is
    not a function name): a sentence or a unit ("283 dollars"), not an expression."""
    text = _LATEX_COMMAND.sub(" ", _TEXT_WRAPPER.sub(" ", text))
    if _TWO_WORDS.search(text):
        return True
    return any(word.lower() not in _FUNCTION_NAMES for word in _LONG_WORD.findall(text))


def _as_words(text: str) -> str | None:
    """The text folded to lower case when it is only words ("Yes", "\\text{no solution}")."""
    text = " ".join(_TEXT_WRAPPER.sub(r"\1", text).replace("$", "").split()).rstrip(".")
    return text.casefold() if _WORDS.fullmatch(text) else None


def _states_a_value(expr) -> bool:
    """Not an equation, or one that states a value: `x = 5` or `f(2) = 5` (a lone symbol or
    function value on the left) or `2 + 3 = 5` (no symbol on the left); `3x = 5` does not say
    that 5 is the answer."""
    if type(expr).__name__ == "And":
        expr = getattr(expr, "_unsorted_args", expr.args)[0]
    if type(expr).__name__ != "Equality":
        return True
    lhs = expr.lhs
    return lhs.is_Symbol or type(type(lhs)).__name__ == "UndefinedFunction" or not lhs.free_symbols


def _squash(text: str) -> str:
    return "".join(text.split()).casefold()


def check_safe(expr) -> int:
    """Raise Unsafe when evaluating `expr` exactly could blow up; return a bound on its digits.

    Example: check_safe(2**10 unevaluated) is fine; 9^{9^{9^9}}, 10000! and
    \\sum_{i=1}^{10^{10}} i raise Unsafe.
    """
    import sympy

    if isinstance(expr, sympy.MatrixBase):
        return _checked(sum(check_safe(element) for element in expr))
    if not isinstance(expr, sympy.Basic):
        return 1
    if isinstance(expr, sympy.Integer):
        return _checked(int(expr.p).bit_length() // 3 + 1)
    if isinstance(expr, sympy.Rational):
        return _checked((int(expr.p).bit_length() + int(expr.q).bit_length()) // 3 + 2)
    if isinstance(expr, sympy.Pow):
        base_digits = check_safe(expr.base)
        exponent = _small_constant(expr.exp)
        if exponent is None:  # a symbolic exponent: nothing is computed, only the parts
            return _checked(base_digits + check_safe(expr.exp))
        if abs(exponent) > MAX_EXPONENT and expr.base not in (0, 1, -1):
            raise Unsafe("exponent too large")
        return _checked(base_digits * max(1, math.ceil(abs(exponent))))
    if isinstance(expr, sympy.factorial):
        argument = _small_constant(expr.args[0])
        if argument is None:
            return check_safe(expr.args[0])
        if not 0 <= argument <= MAX_FACTORIAL:
            raise Unsafe("factorial too large")
        return _checked(int(argument * math.log10(argument + 1)) + 1)
    if isinstance(expr, (sympy.Sum, sympy.Product)):
        for limit in expr.limits:
            low, high = (_small_constant(bound) for bound in limit[1:3])
            if low is not None and high is not None and abs(high - low) > MAX_RANGE:
                raise Unsafe("sum or product over too many terms")
    return _checked(sum(check_safe(argument) for argument in expr.args) + 1)


def _checked(digits: int) -> int:
    if digits > MAX_RESULT_DIGITS:
        raise Unsafe("result too large")
    return digits


def _small_constant(expr) -> float | None:
    """The value of a symbol-free subtree when it is cheap to compute; None if symbolic."""
    if getattr(expr, "free_symbols", None):
        return None
    if check_safe(expr) > 60:  # a few dozen digits evaluate at once; a tower would not
        raise Unsafe("constant too large")
    try:
        value = complex(expr)
    except (TypeError, ValueError, OverflowError, AttributeError):
        return None
    if value.imag or math.isnan(value.real):
        return None
    return value.real


def main() -> None:
    _limit_memory()
    sys.setrecursionlimit(5_000)  # the parent caps nesting at 50; sympy recurses per level
    protocol = os.fdopen(os.dup(1), "w")
    sys.stdout = sys.stderr  # anything a library prints must not corrupt the protocol
    checker = Checker()
    protocol.write("ready\n")
    protocol.flush()
    for line in sys.stdin:
        try:
            request = json.loads(line)
            reply = {"equal": bool(checker.equal(request["answer"], request["reference"]))}
        except (Exception, RecursionError, MemoryError) as error:
            reply = {"error": f"{type(error).__name__}: {error}"[:300]}
        protocol.write(json.dumps(reply) + "\n")
        protocol.flush()


if __name__ == "__main__":
    main()
