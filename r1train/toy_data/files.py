"""Files: `generate_all` writes every shipped toy dataset, `write_jsonl` and `read_jsonl` write and
read JSONL rows (atomically, with a fixed byte layout), and `describe` summarises a data file for
`r1train data describe`."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from r1train.toy_data._common import Row
from r1train.toy_data.arithmetic import make_arithmetic
from r1train.toy_data.code_tasks import make_code_tasks
from r1train.toy_data.cold_start import make_cold_start
from r1train.toy_data.countdown import make_countdown
from r1train.toy_data.general import make_general_prompts
from r1train.toy_data.multistep import make_multistep


def generate_all(out: Path, seed: int = 0) -> list[Path]:
    """Write every toy dataset under `out` (see the `r1train.toy_data` docstring) and return the paths."""
    arithmetic_train, arithmetic_test = make_arithmetic(seed)
    two_digit_train, two_digit_test = make_arithmetic(
        seed, operand_min=10, operand_max=99, ops=("+",), train_size=2000, name="arithmetic_2digit")
    countdown_train, countdown_test = make_countdown(seed)
    multistep_train, multistep_test = make_multistep(seed)
    # The same generator with operands 1..10: every step stays within the main task's range (sums
    # up to 30), so the chain is hard only because it has two steps.
    small_train, small_test = make_multistep(seed, operand_max=10)
    test_questions = frozenset(row["question"] for rows in (arithmetic_test, two_digit_test, countdown_test) for row in rows)
    cold_start = make_cold_start(
        seed, [(arithmetic_train, 180), (two_digit_train, 60), (countdown_train, 60)], test_questions)
    code_train, code_test = make_code_tasks(seed)
    datasets = {
        "arithmetic/train.jsonl": arithmetic_train,
        "arithmetic/test.jsonl": arithmetic_test,
        "arithmetic_2digit/train.jsonl": two_digit_train,
        "arithmetic_2digit/test.jsonl": two_digit_test,
        "countdown/train.jsonl": countdown_train,
        "countdown/test.jsonl": countdown_test,
        "cold_start/train.jsonl": cold_start,
        "general/train.jsonl": make_general_prompts(seed),
        "code/train.jsonl": code_train,
        "code/test.jsonl": code_test,
        "multistep/train.jsonl": multistep_train,
        "multistep/test.jsonl": multistep_test,
        "multistep_small/train.jsonl": small_train,
        "multistep_small/test.jsonl": small_test,
    }
    written = []
    for relative, rows in datasets.items():
        written.append(write_jsonl(rows, Path(out) / relative))
        print(f"wrote {written[-1]} ({len(rows)} rows)")
    return written


def write_jsonl(rows: list[Row], path: Path) -> Path:
    """Write rows as JSONL (keys in row order, UTF-8, "\\n" line ends) through a temporary file, so
    a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def read_jsonl(path: Path) -> list[Row]:
    """Rows of a JSONL file (blank lines skipped); a DataError names the first bad line."""
    from r1train.data import read_jsonl as read

    return read(path)


def describe(path: Path, max_value_chars: int = 300) -> str:
    """Row count, columns with the value types seen, and the first row, as printable text.

    JSONL is read directly; JSON and Parquet through `r1train.data.load_rows`.
    """
    from r1train.data import DataError, load_rows

    path = Path(path)
    rows = read_jsonl(path) if path.suffix.lower() == ".jsonl" else load_rows(path, what="data describe")
    if not rows:
        raise DataError(f"{path} has no rows")
    types: dict[str, list[str]] = {}
    for row in rows:
        for column, value in row.items():
            seen = types.setdefault(column, [])
            if _type_name(value) not in seen:
                seen.append(_type_name(value))
    lines = [f"{path}: {len(rows)} rows, {len(types)} columns",
             "columns: " + ", ".join(f"{column} ({' | '.join(seen)})" for column, seen in types.items()),
             "first row:"]
    for column, value in rows[0].items():
        text = json.dumps(value, ensure_ascii=False)
        if len(text) > max_value_chars:
            text = text[:max_value_chars] + f"... ({len(text)} chars)"
        lines.append(f"  {column}: {text}")
    return "\n".join(lines)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, list):
        inner = sorted({_type_name(item) for item in value})
        return f"list[{' | '.join(inner)}]" if inner else "list"
    return type(value).__name__
