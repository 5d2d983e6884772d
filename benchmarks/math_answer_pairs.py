"""Generated (answer, reference, category) pairs of the answer forms real maths data holds, for
comparing the accuracy reward with Math-Verify called directly (`bench_rewards.py`).

Every category has right answers written differently from the reference and wrong answers
close to it, with random numbers, so that agreement measures the comparison and not the
spelling. `make_pairs(count)` cycles through the categories until `count` pairs exist.
"""
from __future__ import annotations

import random
from fractions import Fraction


def _inequality(rng: random.Random):
    a = rng.randint(-20, 20)
    right = [f"x \\ge {a}", f"{a} \\leq x", f"x >= {a}", f"x\\geq{a}"]
    wrong = [f"x > {a}", f"x \\leq {a}", f"x \\geq {a + 1}"]
    return f"x \\geq {a}", right, wrong


def _interval(rng: random.Random):
    a, b = sorted(rng.sample(range(-30, 30), 2))
    right = [f"({a},{b}]", f"\\left({a}, {b}\\right]", f"x \\in ({a}, {b}]", f"{a} < x \\le {b}"]
    wrong = [f"[{a}, {b}]", f"({a}, {b})", f"({a}, {b + 1}]"]
    return f"({a}, {b}]", right, wrong


def _set(rng: random.Random):
    values = rng.sample(range(-9, 30), 3)
    shuffled = rng.sample(values, 3)
    right = ["\\{" + ", ".join(map(str, shuffled)) + "\\}", ", ".join(map(str, shuffled))]
    wrong = ["\\{" + ", ".join(map(str, values[:2])) + "\\}", "\\{" + ", ".join(map(str, values[:2] + [values[2] + 1])) + "\\}"]
    return "\\{" + ", ".join(map(str, values)) + "\\}", right, wrong


def _tuple(rng: random.Random):
    a, b = rng.sample(range(-9, 30), 2)
    right = [f"({a},{b})", f"\\left( {a}, {b} \\right)", f"(x, y) = ({a}, {b})"]
    wrong = [f"({b}, {a})", f"({a}, {b + 1})"]
    return f"({a}, {b})", right, wrong


def _matrix(rng: random.Random):
    a, b, c, d = (rng.randint(-9, 9) for _ in range(4))
    reference = f"\\begin{{pmatrix}} {a} & {b} \\\\ {c} & {d} \\end{{pmatrix}}"
    right = [f"\\begin{{bmatrix}}{a}&{b}\\\\{c}&{d}\\end{{bmatrix}}", f"\\begin{{pmatrix}}{a} & {b}\\\\ {c} & {d}\\end{{pmatrix}}"]
    wrong = [f"\\begin{{pmatrix}}{a} & {b}\\\\ {d} & {c}\\end{{pmatrix}}" if c != d else f"\\begin{{pmatrix}}{a} & {b}\\\\ {c} & {d + 1}\\end{{pmatrix}}"]
    return reference, right, wrong


def _units(rng: random.Random):
    a = rng.randint(2, 900)
    unit = rng.choice(["cm", "meters", "miles", "dollars", "square units"])
    right = [f"{a}\\text{{ {unit}}}", f"{a} \\mbox{{ {unit}}}", f"\\boxed{{{a}\\textnormal{{ {unit}}}}}", f"{a} {unit}"]
    wrong = [f"{a + 1}\\text{{ {unit}}}", f"{a * 10} {unit}"]
    return f"{a}", right, wrong


def _percentage(rng: random.Random):
    a = rng.randint(1, 99)
    right = [f"{a}\\%", f"{a}%", f"{a} percent"]
    wrong = [f"{a + 1}\\%", f"{a / 1000}"]
    return f"{a}\\%", right, wrong


def _thousands(rng: random.Random):
    value = rng.randint(1_000, 9_999_999)
    plain = f"{value:,}"
    right = [plain, plain.replace(",", "{,}"), plain.replace(",", ",\\!"), plain.replace(",", "\\,")]
    wrong = [f"{value + rng.randint(1, 99):,}", plain.replace(",", "{,}")[:-1] + str((value + 1) % 10)]
    return str(value), right, wrong


def _decimal_fraction(rng: random.Random):
    denominator = rng.choice([3, 7, 9, 11, 13])  # no p/q among these is a two-place decimal
    numerator = rng.randint(1, denominator - 1)
    value = Fraction(numerator, denominator)
    right = [f"{float(value):.10f}".rstrip("0"), f"{numerator}/{denominator}"]
    wrong = [f"{float(value):.2f}", f"{float(value) + 0.01:.8f}"]
    return f"\\frac{{{numerator}}}{{{denominator}}}", right, wrong


def _scientific(rng: random.Random):
    mantissa, exponent = rng.randint(1, 9), rng.randint(2, 7)
    right = [f"{mantissa}e{exponent}", f"{mantissa} \\times 10^{{{exponent}}}", f"{mantissa}E+{exponent}"]
    wrong = [f"{mantissa}e{exponent + 1}", f"{mantissa + 1} \\times 10^{{{exponent}}}"]
    return str(mantissa * 10**exponent), right, wrong


def _fraction_commands(rng: random.Random):
    numerator, denominator = rng.randint(1, 20), rng.randint(21, 40)
    right = [f"\\{kind}{{{numerator}}}{{{denominator}}}" for kind in ("cfrac", "tfrac", "dfrac")]
    wrong = [f"\\dfrac{{{denominator}}}{{{numerator}}}", f"\\tfrac{{{numerator + 1}}}{{{denominator}}}"]
    return f"\\frac{{{numerator}}}{{{denominator}}}", right, wrong


def _degrees(rng: random.Random):
    a = rng.randint(1, 359)
    right = [f"{a}^\\circ", f"{a}^{{\\circ}}", f"{a}\u00b0", f"{a} degrees"]
    wrong = [f"{a + 1}^\\circ", f"{360 - a if 360 - a != a else a + 2}^{{\\circ}}"]
    return str(a), right, wrong


def _equation(rng: random.Random):
    a, b = rng.randint(2, 9), rng.randint(1, 20)
    if rng.random() < 0.5:  # an assignment: the value after "=" is the answer
        return str(b), [f"x = {b}", f"y={b}"], [f"x = {b + 1}", f"{a}x = {b}"]
    reference = f"y = {a}x + {b}"
    # "3x + 3" for "y = 3x + 3" counts: the value of y, as "5" does for "x = 5".
    right = [f"{a}x + {b} = y", f"y={a}x+{b}", f"y - {a}x = {b}", f"{a}x + {b}"]
    wrong = [f"y = {a}x - {b}", f"y = {a}x + {b + 1}", f"{b} = {a}x + y"]
    return reference, right, wrong


CATEGORIES = {
    "inequalities": _inequality, "intervals": _interval, "sets": _set, "tuples": _tuple,
    "matrices": _matrix, "units and \\text": _units, "percentages": _percentage,
    "thousands separators": _thousands, "decimals vs fractions": _decimal_fraction,
    "scientific notation": _scientific, "\\cfrac/\\tfrac/\\dfrac": _fraction_commands,
    "degrees": _degrees, "equations with a left-hand side": _equation,
}


def make_pairs(count: int = 2_000, seed: int = 0) -> list[tuple[str, str, str, bool]]:
    """`count` pairs (answer, reference, category, intended): intended is True for a right answer."""
    rng = random.Random(seed)
    pairs: list[tuple[str, str, str, bool]] = []
    while len(pairs) < count:
        for category, make in CATEGORIES.items():
            reference, right, wrong = make(rng)
            pairs += [(answer, reference, category, True) for answer in right]
            pairs += [(answer, reference, category, False) for answer in wrong]
    return pairs[:count]
