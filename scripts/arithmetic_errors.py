"""Where a model's arithmetic goes wrong: accuracy per kind of question from `r1train eval --out` files.

The toy arithmetic questions fall into four kinds by what a person would have to carry: a sum with
or without a carry out of the units (7 + 5, 13 + 4), a difference with or without a borrow
(12 - 5, 17 - 4). Each eval file gives one column; a row per kind, with how many test questions it
has.

    .venv/bin/python scripts/arithmetic_errors.py docs/results/r1_zero_toy_seeds_kv32/full_test_eval_seed*.json
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

QUESTION = re.compile(r"(\d+) ([+-]) (\d+)")
KINDS = ("sum, no carry", "sum, carry", "difference, no borrow", "difference, borrow")


def kind_of(question: str) -> str:
    """The kind of an arithmetic question ("What is 12 - 5?" -> "difference, borrow")."""
    match = QUESTION.search(question)
    if match is None:
        raise ValueError(f"not an arithmetic question: {question!r}")
    a, op, b = int(match[1]), match[2], int(match[3])
    if op == "+":
        return KINDS[1] if a % 10 + b % 10 >= 10 else KINDS[0]
    return KINDS[3] if a % 10 < b % 10 else KINDS[2]


def accuracy_by_kind(examples: list[dict]) -> dict[str, tuple[int, float]]:
    """{kind: (questions, mean accuracy over every sample)} for one eval file's examples."""
    scores: dict[str, list[float]] = {kind: [] for kind in KINDS}
    questions = dict.fromkeys(KINDS, 0)
    for example in examples:
        kind = kind_of(example["question"])
        questions[kind] += 1
        scores[kind].extend(example["correct"])
    return {kind: (questions[kind], sum(scores[kind]) / len(scores[kind]) if scores[kind] else float("nan"))
            for kind in KINDS}


def column_names(paths: list[Path]) -> list[str]:
    """Each file's stem, or folder/stem where two files share a stem (seed files of two runs)."""
    stems = [path.stem for path in paths]
    return [f"{path.parent.name}/{path.stem}" if stems.count(path.stem) > 1 else path.stem for path in paths]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("evals", nargs="+", type=Path, help="files written by `r1train eval --out`")
    args = parser.parse_args(argv)
    columns = []
    for path in args.evals:
        try:
            columns.append(accuracy_by_kind(json.loads(path.read_text())["examples"]))
        except (OSError, ValueError, KeyError) as error:
            print(f"error: {path}: cannot read its examples ({error}); pass files written by `r1train eval --out`",
                  file=sys.stderr)
            return 2
    print("| kind | questions | " + " | ".join(column_names(args.evals)) + " |")
    print("|---|---:|" + "---:|" * len(args.evals))
    for kind in KINDS:
        count = columns[0][kind][0]
        print(f"| {kind} | {count} | " + " | ".join(f"{column[kind][1]:.3f}" for column in columns) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
