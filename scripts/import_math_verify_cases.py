"""Turn the test cases of Math-Verify's public repository into our data table
`tests/rewards/data/math_verify_cases.json` (the cases only: gold, prediction, expected result and
the options each test passes to its comparison helper).

    git clone https://github.com/huggingface/Math-Verify /tmp/Math-Verify
    .venv/bin/python scripts/import_math_verify_cases.py /tmp/Math-Verify [--commit 5d148cf]

The test files are read with `ast`, never imported or run. Each `pytest.mark.parametrize` table of
a test that calls `compare_strings` (the helper their tests compare with) or `verify(parse(..))`
becomes rows; options given as table columns (`precision`, `strict`, `allow_set_relation_comp`) or
as keywords of that call are recorded per row.
"""
from __future__ import annotations

import argparse
import ast
import json
import math
import subprocess
from pathlib import Path

TEST_FILES = ["test_all.py", "test_boxed.py", "test_strict.py", "test_numina_cases.py",
              "test_open_thoughts.py", "test_yujianll.py"]
OPTIONS = ("match_types", "precision", "strict", "allow_set_relation_comp")
OUTPUT = Path(__file__).resolve().parent.parent / "tests/rewards/data/math_verify_cases.json"


def literal(node: ast.AST):
    """A literal value; f-strings (one table formats math.sqrt(17)) are evaluated with only `math`."""
    if isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Call)):
        return eval(compile(ast.Expression(node), "<case>", "eval"), {"__builtins__": {}, "math": math})
    return ast.literal_eval(node)


def call_options(function: ast.FunctionDef) -> tuple[str, dict]:
    """How the test compares: its helper's name and the constant keywords it passes."""
    for node in ast.walk(function):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("compare_strings", "verify"):
            options = {}
            for keyword in node.keywords:
                if keyword.arg in OPTIONS and not isinstance(keyword.value, ast.Name):
                    options[keyword.arg] = ast.literal_eval(keyword.value)
            return node.func.id, options
    return "", {}


def cases_in(path_name: str, source: str) -> list[dict]:
    rows = []
    for function in ast.parse(source).body:
        if not isinstance(function, ast.FunctionDef):
            continue
        helper, options = call_options(function)
        if not helper:
            continue
        for decorator in function.decorator_list:
            if not (isinstance(decorator, ast.Call) and getattr(decorator.func, "attr", "") == "parametrize"):
                continue
            names = [name.strip() for name in ast.literal_eval(decorator.args[0]).split(",")]
            for element in decorator.args[1].elts:
                values = dict(zip(names, (literal(item) for item in element.elts)))
                row = {"source": f"{path_name}::{function.name}", "gold": values["gold"],
                       "pred": values["pred"],
                       "expected": int(values.get("expected", values.get("result")))}
                row.update(options)
                row.update({key: values[key] for key in OPTIONS if key in values})
                rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repository", type=Path)
    parser.add_argument("--commit", default="HEAD")
    args = parser.parse_args()
    git = ["git", "-C", str(args.repository)]
    commit = subprocess.run(git + ["rev-parse", args.commit], capture_output=True, text=True, check=True).stdout.strip()
    rows = []
    for name in TEST_FILES:
        source = subprocess.run(git + ["show", f"{commit}:tests/{name}"], capture_output=True, text=True, check=True).stdout
        rows.extend(cases_in(name, source))
    for number, row in enumerate(rows):
        row["id"] = number
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    document = {"repository": "https://github.com/huggingface/Math-Verify", "commit": commit,
                "license": "MIT (the header of its test files)", "cases": rows}
    OUTPUT.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n")
    print(f"{len(rows)} cases from {commit[:7]} -> {OUTPUT}")


if __name__ == "__main__":
    main()
