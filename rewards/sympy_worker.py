"""The sympy side of answer checking, run as a separate process by `rewards.sympy_client`.

It reads one JSON request per line on stdin, {"a": tree, "b": tree, "either_sign": bool}, where
the trees come from `rewards.expression.parse_expression` (already checked with `is_safe`), and
writes one JSON line back: {"equal": true | false} or {"error": "..."}. It exits when stdin
closes. Living in its own process is what bounds it in time: the parent waits on the pipe with a
timeout and kills this process when sympy takes too long, which works from any thread and from
daemonic worker processes, where signal-based timeouts do not. The address space is capped too, so
a runaway simplification fails with MemoryError here instead of exhausting the machine.

This file is started as a script, so it imports nothing from the `rewards` package.
"""
import os  # already loaded by the interpreter at start-up, so it cannot be shadowed
import sys

# Run as a script, its own folder comes first on sys.path; drop it so no module of the rewards
# package can shadow a standard-library or sympy module.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

import json  # noqa: E402

MEMORY_LIMIT_BYTES = 2 * 1024**3


def _limit_memory() -> None:
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))
    except (ImportError, ValueError, OSError):
        pass  # not available on this platform; the parent's timeout still applies


def main() -> None:
    _limit_memory()
    import sympy

    functions = {
        "sqrt": sympy.sqrt, "sin": sympy.sin, "cos": sympy.cos, "tan": sympy.tan,
        "cot": sympy.cot, "sec": sympy.sec, "csc": sympy.csc, "asin": sympy.asin,
        "acos": sympy.acos, "atan": sympy.atan, "log": sympy.log, "exp": sympy.exp,
    }
    constants = {"pi": sympy.pi, "oo": sympy.oo}

    def build(tree):
        kind = tree[0]
        if kind == "num":
            return sympy.Rational(tree[1], tree[2])
        if kind == "sym":
            return sympy.Symbol(tree[1])
        if kind == "const":
            return constants[tree[1]]
        if kind == "neg":
            return -build(tree[1])
        if kind == "fact":
            return sympy.factorial(build(tree[1]))
        if kind == "call":
            return functions[tree[1]](build(tree[2]))
        left, right = build(tree[1]), build(tree[2])
        if kind == "add":
            return left + right
        if kind == "sub":
            return left - right
        if kind == "mul":
            return left * right
        if kind == "div":
            return left / right
        if kind == "pow":
            return left**right
        raise ValueError(f"unknown node {kind!r}")

    def equal(a, b, either_sign: bool) -> bool:
        if a == b:
            return True
        differences = [a - b, a + b] if either_sign else [a - b]
        if any(difference == 0 for difference in differences):
            return True
        if not any(difference.free_symbols for difference in differences):
            return any(_closed_form_is_zero(difference) for difference in differences)
        # Cheapest first: most equal polynomials differ only by expansion; simplify is slow.
        if any(sympy.expand(difference) == 0 for difference in differences):
            return True
        return any(sympy.simplify(difference) == 0 for difference in differences)

    def _closed_form_is_zero(difference) -> bool:
        # No symbols: decide with 50 significant digits, far beyond any float rounding.
        value = sympy.N(difference, 50)
        if not value.is_number or value.has(sympy.nan, sympy.zoo, sympy.oo, -sympy.oo):
            return False
        return bool(abs(complex(value)) < 1e-30)

    protocol = os.fdopen(os.dup(1), "w")
    sys.stdout = sys.stderr  # anything sympy prints must not corrupt the protocol
    protocol.write("ready\n")
    protocol.flush()
    for line in sys.stdin:
        try:
            request = json.loads(line)
            result = equal(build(request["a"]), build(request["b"]), request.get("either_sign", False))
            reply = {"equal": bool(result)}
        except (Exception, RecursionError, MemoryError) as error:
            reply = {"error": f"{type(error).__name__}: {error}"[:300]}
        protocol.write(json.dumps(reply) + "\n")
        protocol.flush()


if __name__ == "__main__":
    main()
