"""Datasets in, prompt batches out, with a position that survives a restart.

Files are read through the `datasets` library (JSONL or Parquet). Rows stay plain dicts: every
column is handed to the reward functions, so nothing is dropped. `PromptSampler` walks a fixed
per-epoch permutation; its state is just (epoch, position), which a checkpoint stores so a
resumed run draws exactly the prompts an uninterrupted run would have drawn.
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any


class DataError(ValueError):
    pass


def load_rows(path: str | Path, required_columns: tuple[str, ...] = (), what: str = "data.train") -> list[dict[str, Any]]:
    """Load a JSONL/JSON/Parquet file as a list of row dicts, checking it is usable."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what}: file not found: {path}")
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".json", ".parquet"):
        raise DataError(f"{what}: {path} must be .jsonl, .json or .parquet")
    if path.stat().st_size == 0:
        raise DataError(f"{what}: {path} is empty; it needs at least one row")
    import datasets

    datasets.disable_progress_bars()
    builder = "parquet" if suffix == ".parquet" else "json"
    try:
        table = datasets.load_dataset(builder, data_files=str(path), split="train", keep_in_memory=True)
    except Exception as exc:  # datasets raises many types for unreadable files
        if suffix == ".jsonl":
            try:  # datasets names a byte position, or nothing useful: find the line
                read_jsonl(path)
            except DataError as bad_line:
                raise DataError(f"{what}: {bad_line}") from None
        raise DataError(f"{what}: cannot read {path}: {str(exc).splitlines()[0][:200]}") from None
    if len(table) == 0:
        raise DataError(f"{what}: {path} is empty; it needs at least one row")
    missing = [c for c in required_columns if c not in table.column_names]
    if missing:
        raise DataError(
            f"{what}: {path} lacks column(s) {', '.join(missing)} (has: {', '.join(table.column_names)}); "
            "rename them or set data.question_column / data.answer_column"
        )
    return table.to_list()


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file (blank lines skipped); a DataError names the file and its first bad line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}, line {number}: not JSON ({exc.msg}); fix or remove that line") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}, line {number}: a row must be a JSON object")
            rows.append(row)
    return rows


def write_rows(rows: list[dict[str, Any]], path: Path) -> None:
    """Write rows as JSONL or Parquet (by suffix) through `datasets`, atomically."""
    import datasets

    datasets.disable_progress_bars()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    table = datasets.Dataset.from_list(rows)
    if path.suffix == ".parquet":
        table.to_parquet(str(tmp))
    else:
        table.to_json(str(tmp), lines=True, force_ascii=False)
    tmp.replace(path)


class PromptSampler:
    """Draws prompt rows epoch after epoch, in a seeded order, resumable from (epoch, position)."""

    def __init__(self, rows: list[dict[str, Any]], seed: int, shuffle: bool = True):
        self.rows = rows
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.position = 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> list[int]:
        order = list(range(len(self.rows)))
        if self.shuffle:
            random.Random(f"{self.seed}-{epoch}").shuffle(order)
        return order

    def next_batch(self, size: int) -> list[dict[str, Any]]:
        batch = []
        while len(batch) < size:
            if self.position >= len(self._order):
                self.epoch += 1
                self.position = 0
                self._order = self._permutation(self.epoch)
            batch.append(self.rows[self._order[self.position]])
            self.position += 1
        return batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = state["epoch"], state["position"]
        self._order = self._permutation(self.epoch)
