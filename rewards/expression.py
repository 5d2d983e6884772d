"""A small, safe parser for the maths in final answers: LaTeX-ish text to an expression tree.

Why our own parser rather than sympy's `parse_expr` or `parse_latex`: `parse_expr` ends in
Python's `eval`, `parse_latex` needs antlr, and neither bounds the work an answer can ask for
(`9^{9^{9^9}}`, `10000!`). This parser accepts a deliberately small language (numbers, single
letter symbols, + - * / ^ !, implicit multiplication, parentheses and braces, `\\frac`, `\\sqrt`,
`\\pi`, `\\infty`, `\\cdot`, `\\times`, `\\div` and a few functions), caps the input's size and
nesting depth, and produces a tree of tuples that is cheap to check before anything is evaluated:

    ("num", p, q)  the rational p/q          ("sym", "x")   a symbol
    ("const", "pi" | "oo")                   ("neg", a)     ("fact", a)    ("call", name, a)
    ("add" | "sub" | "mul" | "div" | "pow", a, b)

Deliberate simplifications: a word of several letters is not maths (so "yes" is not y*e*s);
`e` and `i` are plain symbols (both answers must write them the same way); `\\log` is the
natural logarithm; subscripts, `\\pm` and absolute values are not supported. Anything outside the
language makes `parse_expression` return None, and the caller falls back to comparing text.
"""
from __future__ import annotations

import cmath
import math
import operator
import re
from fractions import Fraction

MAX_TOKENS = 400
MAX_DEPTH = 40
MAX_NUMBER_DIGITS = 100
MAX_RESULT_DIGITS = 10_000  # bound on the digits an exact evaluation may produce
MAX_EXPONENT = 1_000
MAX_FACTORIAL = 1_000

FUNCTIONS = {
    "sqrt": "sqrt", "sin": "sin", "cos": "cos", "tan": "tan", "cot": "cot", "sec": "sec",
    "csc": "csc", "arcsin": "asin", "arccos": "acos", "arctan": "atan", "ln": "log",
    "log": "log", "exp": "exp",
}
CONSTANTS = {"pi": "pi", "infty": "oo", "infinity": "oo"}
OPERATOR_COMMANDS = {"cdot": "*", "times": "*", "div": "/"}

_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+(?:\.\d*)?|\.\d+)"
    r"|(?P<word>[A-Za-z]+)"
    r"|\\(?P<cmd>[A-Za-z]+)"
    r"|(?P<op>[-+*/^!(){}\[\]]))"
)


class _ParseError(Exception):
    pass


def parse_expression(text: str):
    """Parse `text` into an expression tree, or None if it is outside the supported language.

    Example: parse_expression("2\\frac{1}{2}x") ==
        ("mul", ("mul", ("num", 2, 1), ("div", ("num", 1, 1), ("num", 2, 1))), ("sym", "x"))
    """
    try:
        tokens = _tokenize(text)
        parser = _Parser(tokens)
        tree = parser.expression(0)
        if parser.position != len(tokens):
            return None
        return tree
    except (_ParseError, RecursionError):
        return None


def _tokenize(text: str) -> list[tuple[str, object]]:
    tokens: list[tuple[str, object]] = []
    position = 0
    text = text.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise _ParseError(f"unexpected character {text[position]!r}")
        position = match.end()
        if match.group("num") is not None:
            tokens.append(("num", _decimal_to_fraction(match.group("num"))))
        elif match.group("word") is not None:
            word = match.group("word")
            if word in FUNCTIONS:
                tokens.append(("func", FUNCTIONS[word]))
            elif word in ("pi", "oo"):
                tokens.append(("const", "pi" if word == "pi" else "oo"))
            elif len(word) == 1:
                tokens.append(("sym", word))
            else:
                raise _ParseError(f"word {word!r} is not maths")
        elif match.group("cmd") is not None:
            command = match.group("cmd")
            if command in FUNCTIONS:
                tokens.append(("func", FUNCTIONS[command]))
            elif command in CONSTANTS:
                tokens.append(("const", CONSTANTS[command]))
            elif command in OPERATOR_COMMANDS:
                tokens.append(("op", OPERATOR_COMMANDS[command]))
            elif command == "frac":
                tokens.append(("frac", None))
            else:
                raise _ParseError(f"unsupported command \\{command}")
        else:
            tokens.append(("op", match.group("op")))
        if len(tokens) > MAX_TOKENS:
            raise _ParseError("too long")
    return tokens


def _decimal_to_fraction(literal: str) -> Fraction:
    whole, _, decimals = literal.partition(".")
    if len(whole) + len(decimals) > MAX_NUMBER_DIGITS:
        raise _ParseError("number too long")
    return Fraction(int((whole or "0") + decimals), 10 ** len(decimals))


class _Parser:
    """Recursive descent; `depth` counts nested sub-expressions so deep nesting fails early."""

    def __init__(self, tokens):
        self.tokens = tokens
        self.position = 0

    def peek(self):
        return self.tokens[self.position] if self.position < len(self.tokens) else (None, None)

    def take(self, kind=None, value=None):
        token = self.peek()
        if token[0] is None or (kind and token[0] != kind) or (value and token[1] != value):
            raise _ParseError(f"expected {value or kind}, got {token}")
        self.position += 1
        return token

    def expression(self, depth):
        if depth > MAX_DEPTH:
            raise _ParseError("nested too deeply")
        tree = self.term(depth)
        while self.peek() in (("op", "+"), ("op", "-")):
            operator = self.take()[1]
            tree = ("add" if operator == "+" else "sub", tree, self.term(depth))
        return tree

    def term(self, depth):
        tree = self.unary(depth)
        while True:
            kind, value = self.peek()
            if kind == "op" and value in ("*", "/"):
                self.take()
                tree = ("mul" if value == "*" else "div", tree, self.unary(depth))
            elif self.starts_implicit_factor():
                tree = ("mul", tree, self.power(depth))
            else:
                return tree

    def starts_implicit_factor(self):
        # A number never starts an implicit factor: "5 6" is two answers, not thirty.
        kind, value = self.peek()
        return kind in ("sym", "const", "func", "frac") or (kind == "op" and value in ("(", "{"))

    def unary(self, depth):
        if depth > MAX_DEPTH:
            raise _ParseError("nested too deeply")
        kind, value = self.peek()
        if kind == "op" and value in ("-", "+"):
            self.take()
            operand = self.unary(depth + 1)
            return ("neg", operand) if value == "-" else operand
        return self.power(depth)

    def power(self, depth):
        base = self.postfix(depth)
        if self.peek() == ("op", "^"):
            self.take()
            return ("pow", base, self.unary(depth + 1))
        return base

    def postfix(self, depth):
        tree = self.atom(depth)
        while self.peek() == ("op", "!"):
            self.take()
            tree = ("fact", tree)
        return tree

    def atom(self, depth):
        kind, value = self.take()
        if kind == "num":
            return ("num", value.numerator, value.denominator)
        if kind == "sym":
            return ("sym", value)
        if kind == "const":
            return ("const", value)
        if kind == "op" and value in ("(", "{"):
            inner = self.expression(depth + 1)
            self.take("op", ")" if value == "(" else "}")
            return inner
        if kind == "frac":
            return ("div", self.argument(depth + 1), self.argument(depth + 1))
        if kind == "func" and value == "sqrt":
            if self.peek() == ("op", "["):
                self.take()
                index = self.expression(depth + 1)
                self.take("op", "]")
                return ("pow", self.argument(depth + 1), ("div", ("num", 1, 1), index))
            return ("call", "sqrt", self.argument(depth + 1))
        if kind == "func":
            exponent = None
            if self.peek() == ("op", "^"):  # \sin^2 x means (\sin x)^2
                self.take()
                exponent = self.argument(depth + 1)
            if self.peek() in (("op", "("), ("op", "{")):
                call = ("call", value, self.atom(depth + 1))
            else:
                call = ("call", value, self.power(depth + 1))
            return call if exponent is None else ("pow", call, exponent)
        raise _ParseError(f"unexpected {value!r}")

    def argument(self, depth):
        # A LaTeX argument: a braced group or a single token (\frac12 was split before parsing).
        if self.peek() == ("op", "{"):
            return self.atom(depth)
        kind, value = self.take()
        if kind == "num":
            return ("num", value.numerator, value.denominator)
        if kind in ("sym", "const"):
            return (kind, value)
        raise _ParseError("bad argument")


def is_safe(tree) -> bool:
    """Whether evaluating `tree` exactly stays small: no exponent towers, huge powers or factorials.

    Example: is_safe(parse_expression("2^{10}")) is True, is_safe(parse_expression("9^{9^{9^9}}"))
    and is_safe(parse_expression("10000!")) are False.
    """
    try:
        return _digits_bound(tree) <= MAX_RESULT_DIGITS
    except _ParseError:
        return False


def _digits_bound(tree) -> int:
    """An upper bound on the digits of the numerator and denominator an exact evaluation makes."""
    kind = tree[0]
    if kind == "num":
        return len(str(tree[1])) + len(str(tree[2]))
    if kind in ("sym", "const"):
        return 1
    if kind in ("neg", "call"):
        return _digits_bound(tree[-1])
    if kind in ("add", "sub", "mul", "div"):
        bound = _digits_bound(tree[1]) + _digits_bound(tree[2])
    elif kind == "pow":
        exponent = _small_constant(tree[2])
        base_digits = _digits_bound(tree[1])
        if exponent is None:  # a symbolic exponent: nothing is computed, only the parts
            bound = base_digits + _digits_bound(tree[2])
        else:
            if abs(exponent) > MAX_EXPONENT:
                raise _ParseError("exponent too large")
            bound = base_digits * max(1, abs(exponent.numerator))
    elif kind == "fact":
        argument = _small_constant(tree[1])
        if argument is not None and (argument.denominator != 1 or not 0 <= argument <= MAX_FACTORIAL):
            raise _ParseError("factorial argument out of range")
        if argument is None:  # a symbolic factorial such as n! stays unevaluated
            bound = _digits_bound(tree[1])
        else:
            bound = int(argument * math.log10(argument + 1)) + 1
    else:
        raise _ParseError(f"unknown node {kind}")
    if bound > MAX_RESULT_DIGITS:
        raise _ParseError("result too large")
    return bound


def _small_constant(tree) -> Fraction | None:
    """The exact value of a symbol-free subtree if it is small to compute; None if symbolic.

    Raises _ParseError for a constant too large to evaluate safely (an exponent tower).
    """
    if _has_free_symbol(tree):
        return None
    if _digits_bound(tree) > 8:
        raise _ParseError("constant too large")
    value = exact_value(tree)
    if value is None:
        raise _ParseError("not a rational constant")
    return value


def _has_free_symbol(tree) -> bool:
    if tree[0] == "sym":
        return True
    return any(isinstance(child, tuple) and _has_free_symbol(child) for child in tree[1:])


def exact_value(tree) -> Fraction | None:
    """The exact rational value of a tree of numbers, + - * /, integer powers and factorials;
    None when it holds anything else (symbols, roots, pi) or divides by zero. Call is_safe first.

    Example: exact_value(parse_expression("\\frac{3}{4} + 0.25")) == Fraction(1)
    """
    try:
        return _exact(tree)
    except (ZeroDivisionError, _NotRational):
        return None


class _NotRational(Exception):
    pass


def _exact(tree) -> Fraction:
    kind = tree[0]
    if kind == "num":
        return Fraction(tree[1], tree[2])
    if kind == "neg":
        return -_exact(tree[1])
    if kind == "fact":
        argument = _exact(tree[1])
        if argument.denominator != 1 or not 0 <= argument <= MAX_FACTORIAL:
            raise _NotRational
        return Fraction(math.factorial(int(argument)))
    if kind in ("add", "sub", "mul", "div", "pow"):
        left, right = _exact(tree[1]), _exact(tree[2])
        if kind in _ARITHMETIC:
            return _ARITHMETIC[kind](left, right)
        if right.denominator != 1 or abs(right) > MAX_EXPONENT:
            raise _NotRational
        return left ** int(right)
    raise _NotRational


# The binary operators whose exact and floating-point meaning is Python's own.
_ARITHMETIC = {"add": operator.add, "sub": operator.sub, "mul": operator.mul, "div": operator.truediv}

_FLOAT_FUNCTIONS = {
    "sqrt": cmath.sqrt, "sin": cmath.sin, "cos": cmath.cos, "tan": cmath.tan,
    "cot": lambda z: 1 / cmath.tan(z), "sec": lambda z: 1 / cmath.cos(z),
    "csc": lambda z: 1 / cmath.sin(z), "asin": cmath.asin, "acos": cmath.acos,
    "atan": cmath.atan, "log": cmath.log, "exp": cmath.exp,
}


def float_value(tree, symbols: dict[str, complex]) -> complex | None:
    """The value of `tree` in complex floating point with symbols set from `symbols`; None on
    overflow, a domain error, infinity or an unsupported node. Used to reject unequal answers
    cheaply before asking sympy. Call is_safe first."""
    try:
        value = _float(tree, symbols)
    except (OverflowError, ZeroDivisionError, ValueError, KeyError):
        return None
    if cmath.isnan(value) or cmath.isinf(value) or abs(value) > 1e250:
        return None
    return value


def _float(tree, symbols) -> complex:
    kind = tree[0]
    if kind == "num":
        return complex(tree[1] / tree[2])
    if kind == "sym":
        return symbols[tree[1]]
    if kind == "const":
        if tree[1] != "pi":
            raise ValueError("infinity")
        return complex(math.pi)
    if kind == "neg":
        return -_float(tree[1], symbols)
    if kind == "fact":
        argument = _float(tree[1], symbols)
        if argument.imag != 0 or argument.real != int(argument.real) or not 0 <= argument.real <= 170:
            raise ValueError("factorial")
        return complex(math.factorial(int(argument.real)))
    if kind == "call":
        return _FLOAT_FUNCTIONS[tree[1]](_float(tree[2], symbols))
    left, right = _float(tree[1], symbols), _float(tree[2], symbols)
    if kind in _ARITHMETIC:
        return _ARITHMETIC[kind](left, right)
    if left == 0 and right.real <= 0:
        raise ZeroDivisionError
    return left ** right


def free_symbols(tree) -> set[str]:
    """The names of the symbols in `tree`."""
    if tree[0] == "sym":
        return {tree[1]}
    found: set[str] = set()
    for child in tree[1:]:
        if isinstance(child, tuple):
            found |= free_symbols(child)
    return found
