"""Datasets in, prompt batches out, with a position that survives a restart.

Sources (files, saved datasets, shard folders, hub ids) are opened by `r1train/data_sources.py`
through the `datasets` library. Rows stay plain dicts: every column is handed to the reward
functions, so nothing is dropped. `PromptSampler` walks a fixed per-epoch permutation; its state is
just (epoch, position), which a checkpoint stores so a resumed run draws exactly the prompts an
uninterrupted run would have drawn.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

from r1train.data_sources import DataError, open_split, read_jsonl, select_rows

if TYPE_CHECKING:
    from r1train.config import DataConfig

__all__ = ["DataError", "PromptSampler", "balance_rows", "check_column", "holds_no_rows", "load_data", "load_rows", "read_jsonl", "write_rows"]


def load_rows(source: str | Path, required_columns: tuple[str, ...] = (), what: str = "data.train") -> list[dict[str, Any]]:
    """The rows of a file, folder or hub id with its default split, checking the columns are there."""
    table = open_split(str(source), what=what)
    _check_columns(table, required_columns, what, str(source))
    return table.to_list()


def load_data(data: "DataConfig", key: str, required_columns: tuple[str, ...] = (), where: str = "") -> list[dict[str, Any]]:
    """The rows of `data.<key>` ("train", "eval", "general" or "mix[i]") as the data section asks.

    The split is `data.split`, or `data.eval_split` for eval; `data.filter` and `data.max_rows`
    apply to train and eval (the task's own data), not to the general prompts or SFT mixes. A
    conversational question column is checked message by message.
    """
    from r1train.prompts import check_conversations

    source = data.mix[int(key[4:-1])] if key.startswith("mix[") else getattr(data, key)
    prefix = f"{where}: " if where else ""
    split_key = "eval_split" if key == "eval" else "split"
    what = f"{prefix}data.{key}"
    table = open_split(str(source), split=getattr(data, split_key), subset=data.subset, what=what,
                       split_key=f"{prefix}data.{split_key}")
    _check_columns(table, required_columns, what, str(source))
    if key in ("train", "eval"):
        table = select_rows(table, f"data.{key}", data.filter, data.max_rows, at=f"{prefix}data")
    if len(table) == 0:
        raise DataError(f"{what}: {source} is empty; it needs at least one row")
    rows = table.to_list()
    if data.question_column in table.column_names:
        check_conversations(rows, data.question_column, what)
    return rows


def check_column(rows: list[dict[str, Any]], column: str, setting: str, source: str, where: str = "") -> None:
    """Raise a one-line DataError when no row has the column a setting names.

    `setting` is the key that names it (data.balance_by, evaluation.by, --by) and `source` the
    data it is read from (data.train, data.eval), so the message says what to change.
    """
    if not any(column in row for row in rows):
        has = ", ".join(rows[0]) if rows else "no columns"
        prefix = f"{where}: " if where else ""
        raise DataError(f"{prefix}{setting}: no row has a column {column!r} (has: {has}); "
                        f"name a column of {source} or remove the {'option' if setting.startswith('--') else 'key'}")


def balance_rows(rows: list[dict[str, Any]], column: str, seed: int) -> list[dict[str, Any]]:
    """The rows with each value of `column` equally frequent: every group is repeated up to the
    largest group's size (whole copies, then a seeded choice of its rows for the rest).

    The returned list holds the same row objects (callers key encoded prompts by row identity),
    the groups interleaved so an unshuffled walk also sees them equally often. Values are compared
    by their string form, so a missing column and None fall together.
    """
    check_column(rows, column, "data.balance_by", "data.train")
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(str(row.get(column)), []).append(row)
    largest = max(len(group) for group in groups.values())
    rng = random.Random(f"{seed}-balance-{column}")
    filled = []
    for value in sorted(groups):
        group = groups[value]
        copies, rest = divmod(largest, len(group))
        filled.append(group * copies + rng.sample(group, rest))
    return [row for rows_at in zip(*filled) for row in rows_at]


def _check_columns(table, required_columns: tuple[str, ...], what: str, source: str) -> None:
    if len(table) == 0:
        raise DataError(f"{what}: {source} is empty; it needs at least one row")
    missing = [c for c in required_columns if c not in table.column_names]
    if missing:
        has = table.column_names
        hint = "rename them or set data.question_column / data.answer_column"
        for wanted, usual in (("question", ("prompt", "problem", "query")), ("answer", ("solution", "target"))):
            close = [c for c in usual if c in has]
            if wanted in missing and close:
                hint += f" (e.g. data.{wanted}_column: {close[0]})"
        raise DataError(f"{what}: {source} lacks column(s) {', '.join(missing)} (has: {', '.join(has)}); {hint}")


def holds_no_rows(path: str | Path) -> bool:
    """Whether a data file exists and holds no rows (0 bytes, or a Parquet file of 0 rows)."""
    path = Path(path)
    if not path.is_file():
        return False  # load_data reports a missing file (or reads a folder or hub id)
    if path.stat().st_size == 0:
        return True
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_metadata(path).num_rows == 0
    return False


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
