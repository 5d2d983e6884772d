"""Where a dataset comes from: a file, a folder, or a hub id, each opened through `datasets`.

A data key of a recipe (`data.train`, `eval`, `general`, `mix`) names one of:
- a `.jsonl`, `.json` or `.parquet` file (one split: `data.split` does not apply);
- a folder written by `Dataset.save_to_disk` (one split) or `DatasetDict.save_to_disk` (the split
  is chosen by `data.split`, or `data.eval_split` for `data.eval`);
- a folder of Parquet or JSONL shards, read as `datasets` reads a hub repository: files whose
  names say `train`/`test`/`validation` form those splits, otherwise all of them form one;
- a hub id (`openai/gsm8k`), with `data.subset` naming its configuration.

Hub ids are resolved by `datasets`, so a dataset loaded once before (or a copied cache) works
without network. When the hub cannot be reached, offline mode is switched on before asking:
otherwise `datasets` retries for about half a minute and only then looks in its cache. A
dataset that is not cached then fails with one line saying so.
"""
from __future__ import annotations

import json

import os
import re
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

FILE_SUFFIXES = (".jsonl", ".json", ".parquet")
# `datasets` takes an id of one or two path segments as a hub repository.
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
_OFFLINE_VALUES = ("1", "on", "yes", "true")


class DataError(ValueError):
    """A dataset that cannot be used as the recipe asks; the message names the key."""


def source_problem(source: str) -> str | None:
    """Why `source` can name no dataset (None when it is an existing file or folder or a hub id).

    Used by the config check, before anything is loaded.
    """
    path = Path(source).expanduser()
    if path.exists():
        return None
    if path.suffix.lower() in FILE_SUFFIXES or not HUB_ID.match(source):
        where = "" if path.is_absolute() else f" (relative paths start from {Path.cwd()})"
        return f"file not found: {source}{where}; fix the path"
    return None


def open_split(source: str, *, split: str = "train", subset: str | None = None, what: str = "data.train",
               split_key: str = "data.split"):
    """The `datasets.Dataset` that `source` names (see the module docstring).

    Args:
        source: a file, a folder or a hub id.
        split: the split wanted where the source has several.
        subset: a hub dataset's configuration (`load_dataset(path, name)`).
        what / split_key: the recipe keys named in error messages.
    Raises:
        DataError: with one line naming `what` (or `split_key`) and how to fix it.
    """
    import datasets

    datasets.disable_progress_bars()
    problem = source_problem(source)
    if problem:
        raise DataError(f"{what}: {problem}")
    path = Path(source).expanduser()
    if path.is_file():
        return _open_file(path, what)
    if path.is_dir():
        return _open_folder(path, split, what, split_key)
    return _open_hub(source, subset, split, what, split_key)


def _open_file(path: Path, what: str):
    import datasets

    suffix = path.suffix.lower()
    if suffix not in FILE_SUFFIXES:
        raise DataError(f"{what}: {path} must be .jsonl, .json or .parquet (or a folder, or a hub dataset id)")
    if path.stat().st_size == 0:
        raise DataError(f"{what}: {path} is empty; it needs at least one row")
    builder = "parquet" if suffix == ".parquet" else "json"
    try:
        return datasets.load_dataset(builder, data_files=str(path), split="train", keep_in_memory=True)
    except Exception as exc:  # datasets raises many types for unreadable files
        if suffix == ".jsonl":
            try:  # datasets names a byte position, or nothing useful: find the line
                read_jsonl(path)
            except DataError as bad_line:
                raise DataError(f"{what}: {bad_line}") from None
        raise DataError(f"{what}: cannot read {path}: {_first_line(exc)}") from None


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



def _open_folder(path: Path, split: str, what: str, split_key: str):
    import datasets

    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        try:
            saved = datasets.load_from_disk(str(path), keep_in_memory=True)
        except Exception as exc:
            raise DataError(f"{what}: cannot read the saved dataset {path}: {_first_line(exc)}") from None
        if isinstance(saved, datasets.DatasetDict):
            return _pick_split(saved, split, str(path), split_key, strict=True)
        return saved
    shards = [p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in FILE_SUFFIXES]
    if not shards:
        raise DataError(f"{what}: {path} holds no .parquet, .jsonl or .json files, nor a dataset written by "
                        "save_to_disk; point it at the data")
    kinds = {"parquet" if p.suffix.lower() == ".parquet" else "json" for p in shards}
    if len(kinds) > 1:
        raise DataError(f"{what}: {path} mixes Parquet and JSON files; keep one format per folder")
    try:
        found = datasets.load_dataset(str(path), keep_in_memory=True)
    except Exception as exc:
        raise DataError(f"{what}: cannot read the files in {path}: {_first_line(exc)}") from None
    # Shards whose names name no split all land in "train": one dataset, whatever split is asked.
    return _pick_split(found, split, str(path), split_key, strict=len(found) > 1)


def _open_hub(source: str, subset: str | None, split: str, what: str, split_key: str):
    import datasets

    offline = ensure_offline_if_unreachable()
    subset_key = split_key.rsplit(".", 1)[0] + ".subset"
    verbosity = datasets.logging.get_verbosity()
    # Its warnings ("Using the latest cached version ...") would add lines to a one-line error.
    datasets.logging.set_verbosity_error()
    try:
        found = datasets.load_dataset(source, subset, keep_in_memory=True)
    except Exception as exc:
        text = str(exc)
        if "Available configs in the cache" in text:
            cached = text.split("Available configs in the cache:", 1)[1].strip()
            raise DataError(f"{subset_key}: '{subset}' of {source} is not in the local datasets cache (cached: "
                            f"{cached}); set {_bare(subset_key)} to one of them") from None
        if "multiple" in text and "configurations" in text:
            raise DataError(f"{subset_key}: {source} has several cached configurations ({_first_line(exc)}); "
                            f"set {_bare(subset_key)}") from None
        if "Config name is missing" in text or "BuilderConfig" in text:
            raise DataError(f"{subset_key}: {_first_line(exc)}") from None
        if offline and isinstance(exc, (ConnectionError, FileNotFoundError, ValueError)):
            raise DataError(f"{what}: '{source}' is no local file or folder, and as a hub dataset it is not in the "
                            f"local datasets cache ({datasets.config.HF_DATASETS_CACHE}) while the hub is offline; "
                            "fix the path, or load it once where the hub is reachable (or copy that cache here)") from None
        raise DataError(f"{what}: cannot load hub dataset '{source}': {_first_line(exc)}") from None
    finally:
        datasets.logging.set_verbosity(verbosity)
    return _pick_split(found, split, source, split_key, strict=True)


def _pick_split(found, split: str, name: str, split_key: str, strict: bool):
    if split in found:
        return found[split]
    if not strict and len(found) == 1:
        return next(iter(found.values()))
    raise DataError(f"{split_key}: '{split}' is not a split of {name} (it has: {', '.join(found)}); "
                    f"set {_bare(split_key)} to one of them")


def ensure_offline_if_unreachable(timeout_s: float = 3.0) -> bool:
    """Switch `datasets` and `huggingface_hub` to offline mode when the hub cannot be reached.

    HF_HUB_OFFLINE / HF_DATASETS_OFFLINE, when the user set them, decide without a check (also when
    set after `datasets` was imported). Otherwise the check is one TCP connection to the hub
    endpoint with a short timeout, made once per process. Returns whether offline mode is on.
    """
    import datasets
    import huggingface_hub.constants as hub_constants

    global _hub_answered
    offline = datasets.config.HF_HUB_OFFLINE or _env_offline()
    if not offline:
        if _hub_answered is None:
            endpoint = urlparse(datasets.config.HF_ENDPOINT)
            try:
                socket.create_connection((endpoint.hostname or "huggingface.co", endpoint.port or 443),
                                         timeout=timeout_s).close()
                _hub_answered = True
            except OSError:
                _hub_answered = False
        offline = not _hub_answered
    if offline:
        datasets.config.HF_HUB_OFFLINE = True
        hub_constants.HF_HUB_OFFLINE = True
    return offline


_hub_answered: bool | None = None  # whether the hub endpoint took a connection, once tried


def _env_offline() -> bool:
    return any(os.environ.get(name, "").lower() in _OFFLINE_VALUES for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def select_rows(table, what: str, keep: dict[str, Any], max_rows: int | None, at: str = "data"):
    """The rows of `table` whose columns equal `keep`'s values (a list: any of them), first `max_rows`.

    Values compare as text, so `{level: 1}` in YAML matches a column holding 1 or "1".
    """
    for column, wanted in keep.items():
        if column not in table.column_names:
            raise DataError(f"{at}.filter: {what} has no column '{column}' (it has: {', '.join(table.column_names)})")
        allowed = {str(v) for v in (wanted if isinstance(wanted, list) else [wanted])}
        values = table[column]
        indices = [i for i, value in enumerate(values) if str(value) in allowed]
        if not indices:
            seen = sorted({str(v) for v in values})
            shown = ", ".join(repr(v) for v in seen[:8]) + (", ..." if len(seen) > 8 else "")
            raise DataError(f"{at}.filter: no row of {what} has {column} in {sorted(allowed)} (values seen: {shown})")
        table = table.select(indices)
    if max_rows is not None and max_rows < len(table):
        table = table.select(range(max_rows))
    return table


def _bare(key: str) -> str:
    """`data.split` out of `stages[1] (rl): data.split`."""
    return key.rsplit(": ", 1)[-1]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
