"""The trusted first code inside the sandbox: set the resource limits, then run a model-written
program, alone (stdin/stdout tests) or followed by test statements, reporting each test's result.

This file is not imported by the trainer: `rewards.sandbox` passes its source to the sandboxed
interpreter (`python -I -c <source> REQUEST_FD RESULT_FD`), so it runs before any model-written
code and with nothing from the project on the path. The request (JSON on REQUEST_FD, read and
closed before the program runs) holds the limits, the mode, the program, the tests and a nonce.

Tests mode, built so that tampering can lower a score but not raise it:
- a test counts as passed only when a line "<nonce> <index> pass" arrives on RESULT_FD; a program
  that exits (0 or otherwise) before or during the tests leaves the remaining tests unreported,
  hence failed; lines without the nonce are ignored by the reader;
- the harness keeps its own references to what it uses (`os.write`, `type`, ...) as default
  arguments bound before the program runs, so a program that monkeypatches `builtins` or `os`
  changes nothing here;
- each test runs with a fresh copy of the builtins taken before the program ran (a program that
  replaces `len`, `print` or `AssertionError` does not change what the tests see), and helpers a
  test defines (HumanEval's `check`) are defined after the program, so the program cannot
  pre-empt them;
- `a == b` and `a != b` in a test compare only plain data (numbers, strings, bytes, None and
  lists/tuples/sets/dicts of those, by exact type): an object whose `__eq__` always says True, or
  a subclass of int or str, compares unequal.
Not covered: a program that deliberately searches the interpreter's memory (frames, gc) for the
nonce could forge result lines; the sandbox still holds everything it could do.
"""
import ast
import builtins
import json
import os
import resource
import sys

PLAIN_SCALARS = (int, float, complex, bool, str, bytes, type(None))
PLAIN_CONTAINERS = (list, tuple, set, frozenset)
MAX_PLAIN_DEPTH = 50


def set_limits(limits):
    """Hard limits (soft = hard), so the program cannot raise them again."""
    for name, value in (
        ("RLIMIT_CPU", limits["cpu_s"]),
        ("RLIMIT_AS", limits["address_space_mb"] << 20),  # the run as a whole: see sandbox.py
        ("RLIMIT_NPROC", limits["processes"]),
        ("RLIMIT_FSIZE", limits["file_mb"] << 20),
        ("RLIMIT_NOFILE", 64),
        ("RLIMIT_CORE", 0),
    ):
        resource.setrlimit(getattr(resource, name), (value, value))


def is_plain(value, depth=0, _type=type, _scalars=PLAIN_SCALARS, _containers=PLAIN_CONTAINERS,
             _dict=dict, _max=MAX_PLAIN_DEPTH):
    """Whether `value` is plain data by exact type, so that == on it is the builtin comparison."""
    kind = _type(value)
    if kind in _scalars:
        return True
    if depth > _max:
        return False
    if kind in _containers:
        for item in value:
            if not is_plain(item, depth + 1):
                return False
        return True
    if kind is _dict:
        for key, item in value.items():
            if not (is_plain(key, depth + 1) and is_plain(item, depth + 1)):
                return False
        return True
    return False


def strict_equal(a, b, _is_plain=is_plain):
    return _is_plain(a) and _is_plain(b) and a == b


class _StrictComparisons(ast.NodeTransformer):
    """Rewrite `a == b` as `EQ(a, b)` and `a != b` as `not EQ(a, b)` (single comparisons only)."""

    def __init__(self, function_name):
        self.function_name = function_name

    def visit_Compare(self, node):
        self.generic_visit(node)
        if len(node.ops) != 1 or not isinstance(node.ops[0], (ast.Eq, ast.NotEq)):
            return node
        call = ast.Call(func=ast.Name(id=self.function_name, ctx=ast.Load()),
                        args=[node.left, node.comparators[0]], keywords=[])
        if isinstance(node.ops[0], ast.NotEq):
            call = ast.UnaryOp(op=ast.Not(), operand=call)
        return ast.copy_location(call, node)


def compile_test(source, function_name):
    tree = _StrictComparisons(function_name).visit(ast.parse(source, "<test>", "exec"))
    return compile(ast.fix_missing_locations(tree), "<test>", "exec")


def run_tests(program, tests, nonce, result_fd, _write=os.write, _exec=exec, _dict=dict,
              _base=BaseException, _str=str, _range=range, _len=len):
    """Run the program once, then each test in its namespace; report each test that passed."""
    pristine_builtins = _dict(builtins.__dict__)
    equal_name = "_r1train_equal_" + os.urandom(6).hex()  # nothing of the nonce: tests can see it
    compiled = []
    for source in tests:  # compiled before the program runs, with the harness's own ast module
        try:
            compiled.append(compile_test(source, equal_name))
        except _base:
            compiled.append(None)
    namespace = {"__name__": "__main__", "__builtins__": _dict(pristine_builtins)}
    try:
        _exec(compile(program, "<program>", "exec"), namespace)
    except _base:
        return  # a program that does not run passes nothing
    for index in _range(_len(compiled)):
        if compiled[index] is None:
            continue
        namespace["__builtins__"] = _dict(pristine_builtins, **{equal_name: strict_equal})
        try:
            _exec(compiled[index], namespace)
        except _base:
            continue
        _write(result_fd, (nonce + " " + _str(index) + " pass\n").encode())


def main():
    request_fd, result_fd = int(sys.argv[1]), int(sys.argv[2])
    with os.fdopen(request_fd, "rb") as request_file:
        request = json.loads(request_file.read())
    set_limits(request["limits"])
    sys.argv = ["<program>"]
    if request["mode"] == "io":
        os.close(result_fd)
        namespace = {"__name__": "__main__", "__builtins__": builtins}
        exec(compile(request["program"], "<program>", "exec"), namespace)
        return
    run_tests(request["program"], request["tests"], request["nonce"], result_fd)
    os._exit(0)  # no atexit hooks or finalizers of the program run after the last report


main()
