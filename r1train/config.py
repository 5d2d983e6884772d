"""Typed recipe configuration: one dataclass per concern, YAML keys equal to field names.

A recipe is a YAML mapping whose top-level sections are the fields of `Recipe`. Loading goes
YAML -> nested dicts -> `--set` overrides -> dataclasses, and every failure (unknown key, wrong
type, impossible value, missing file) raises `ConfigError` naming the dotted key, before any work
starts. Pipeline stages reuse the same sections as partial overrides of the top-level ones, so a
stage is validated exactly like a whole recipe.

This module holds the recipe, its stages and loading; the sections are in
`r1train/config_sections.py` and the generic YAML-to-dataclass parsing in `r1train/config_parsing.py`
(both re-exported here, so `r1train.config` stays the one import for users of the config).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from r1train.config_parsing import (  # noqa: F401 - the stage reference helpers are re-exported
    STAGE_REFERENCE, ConfigError, apply_override, build, check, deep_merge, one_of, referenced_stage, unknown_key,
)
from r1train.config_sections import (  # noqa: F401 - re-exported: the sections are part of the config's API
    BACKENDS_BY_PLACEMENT,
    WEIGHT_SYNC_METHODS,
    AlgorithmConfig,
    DataConfig,
    EvaluationConfig,
    LoggingConfig,
    LoraConfig,
    ModelConfig,
    RejectionConfig,
    RewardSpec,
    RolloutConfig,
    TrainingConfig,
)


# Sections a stage may override; `stages` itself cannot nest.
SECTIONS = ("model", "data", "rollout", "algorithm", "rewards", "training", "evaluation", "rejection", "logging")


@dataclass(frozen=True)
class StageKind:
    """What a stage type needs from its recipe and leaves for later stages."""

    produces: str  # "model" (for model:/teacher: references), "dataset" (for data references) or "scores"
    needs_rewards: bool = False  # it scores completions
    needs_train: bool = True  # data.train: the prompts or examples it works on
    needs_eval: bool = False  # data.eval: what it measures
    samples_train_prompts: bool = False  # it generates from data.train's prompts (they must fit the context)
    learns_examples: bool = False  # it trains on written examples, so data.mix may add more files
    needs_completions: bool = False  # its examples carry data.completion_column
    logs_steps: bool = False  # it reports optimiser steps to the trackers


STAGE_KINDS = {
    "sft": StageKind("model", learns_examples=True, needs_completions=True, logs_steps=True),
    "grpo": StageKind("model", needs_rewards=True, samples_train_prompts=True, logs_steps=True),
    "rejection_sampling": StageKind("dataset", needs_rewards=True, samples_train_prompts=True),
    "distill": StageKind("model", needs_rewards=True, learns_examples=True, logs_steps=True),
    "eval": StageKind("scores", needs_rewards=True, needs_train=False, needs_eval=True),
}
STAGE_TYPES = tuple(STAGE_KINDS)
STAGE_KEYS = ("name", "type", "model", "teacher", "student_layers")


@dataclass
class StageConfig:
    name: str = ""
    type: str = ""
    # "base" (the recipe's model), "stage:<name>" (another stage's output) or a model name/folder.
    model: str = "base"
    teacher: str | None = None  # distill: model whose traces the student learns from
    student_layers: int | None = None  # distill: the student keeps only the first N decoder layers of `model`
    # Other sections as partial overrides of the top-level ones (validated after merging).
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class Recipe:
    run_name: str = "r1train"
    output_dir: str = "runs"
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    rewards: list[RewardSpec] = field(default_factory=list)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    rejection: RejectionConfig = field(default_factory=RejectionConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    stages: list[StageConfig] = field(default_factory=list)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.run_name

    def validate(self) -> None:
        check(bool(self.run_name) and "/" not in self.run_name, "run_name", "must be a non-empty name without '/'")
        for name in SECTIONS:
            if name == "rewards":
                for i, spec in enumerate(self.rewards):
                    spec.validate(f"rewards[{i}]")
            else:
                getattr(self, name).validate(name)
        if self.data.general_ratio > 0:
            check(any(spec.applies_to in ("general", "all") for spec in self.rewards), "rewards",
                   "data.general_ratio is set but no reward has `applies_to: general` (or all): "
                   "the general prompts would get no reward")
        if self.rewards:
            check(any(spec.applies_to in ("reasoning", "all") for spec in self.rewards), "rewards",
                   "no reward has `applies_to: reasoning` (the default) or all: the prompts of data.train "
                   "would get no reward")
        if self.training.fsdp:
            check(not self.model.lora.enabled, "training.fsdp",
                   "does not combine with model.lora (the adapters are small enough to replicate: leave fsdp "
                   "off and launch data-parallel as usual)")
        truncated_sampling = self.rollout.top_p < 1.0 or self.rollout.top_k > 0
        if truncated_sampling and self.algorithm.tis_cap is not None:
            # The engines report the log-probs of the full distribution, not of the top-p/top-k one
            # the tokens were drawn from, so the importance weight would not be the one it claims.
            what = f"rollout.top_p: {self.rollout.top_p}" if self.rollout.top_p < 1.0 else f"rollout.top_k: {self.rollout.top_k}"
            check(False, "algorithm.tis_cap",
                   f"{what} samples from a truncated distribution whose log-probs the engines do not report, "
                   "so no importance correction can be computed; set algorithm.tis_cap: null (no correction), "
                   "or sample with rollout.top_p: 1.0 and rollout.top_k: 0")
        if self.rollout.async_generation:
            # The stale policy is corrected with the engine's log-probs, which are raw (temperature 1).
            check(self.rollout.temperature == 1.0, "rollout.async_generation",
                   "corrects for the one-step-stale policy with the engine's log-probs, which match the "
                   "learner's only at rollout.temperature: 1.0; set it, or turn async_generation off")
            check(self.algorithm.tis_cap is not None, "rollout.async_generation",
                   "needs algorithm.tis_cap (the importance weight that corrects for the one-step-stale "
                   "policy); set it (2.0 is usual), or turn async_generation off")


# ---------------------------------------------------------------------------------------------
# Loading


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    """Read a recipe file, apply `key=value` overrides, build and validate the dataclasses."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: malformed YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a recipe must be a YAML mapping of sections, not {type(raw).__name__}")
    for item in overrides:
        apply_override(raw, item)
    return recipe_from_dict(raw)


def recipe_from_dict(raw: dict[str, Any]) -> Recipe:
    raw = dict(raw)
    stages_raw = raw.pop("stages", None) or []
    recipe = build(Recipe, raw, "")
    recipe.stages = [_build_stage(s, i) for i, s in enumerate(stages_raw)]
    recipe.validate()
    names = [s.name for s in recipe.stages]
    for i, stage in enumerate(recipe.stages):
        check(names.count(stage.name) == 1, f"stages[{i}].name", f"'{stage.name}' is used twice")
        data = stage.overrides.get("data") or {}
        refs = [("model", stage.model, "model"), ("teacher", stage.teacher, "model")]
        refs += [(f"data.{key}", data.get(key), "dataset") for key in ("train", "eval", "general")]
        refs += [(f"data.mix[{j}]", ref, "dataset") for j, ref in enumerate(data.get("mix") or [])]
        for key, ref, needed in refs:
            name = referenced_stage(ref)
            if name is not None:
                check(name in names[:i], f"stages[{i}]", f"'{ref}' must name an earlier stage")
                source = recipe.stages[names.index(name)]
                produced = STAGE_KINDS[source.type].produces
                check(produced == needed, f"stages[{i}] ({stage.name}).{key}",
                       f"'{ref}' is a {source.type} stage, which produces a {produced}, not a {needed}")
        merged = stage_recipe(recipe, stage)  # validates the merged sections
        mixers = " and ".join(t for t, kind in STAGE_KINDS.items() if kind.learns_examples)
        check(not merged.data.mix or STAGE_KINDS[stage.type].learns_examples, f"stages[{i}] ({stage.name}).data.mix",
               f"only {mixers} stages train on mixed example files, not {stage.type}")
    return recipe


def stage_recipe(recipe: Recipe, stage: StageConfig) -> Recipe:
    """The recipe a stage runs with: the top-level sections with the stage's overrides merged."""
    base = dataclasses.asdict(recipe)
    base.pop("stages")
    for section, value in stage.overrides.items():
        if section == "rewards":
            base["rewards"] = value
        else:
            base[section] = deep_merge(base[section], value)
    merged = build(Recipe, base, "")
    merged.validate()
    return merged


def _build_stage(raw: Any, index: int) -> StageConfig:
    at = f"stages[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{at}: a stage must be a mapping with `name` and `type`")
    raw = dict(raw)
    own = {k: raw.pop(k) for k in STAGE_KEYS if k in raw}
    stage = build(StageConfig, own, at)
    check(bool(stage.name), f"{at}.name", "is required")
    one_of(stage.type, STAGE_TYPES, f"{at}.type")
    check(stage.type != "distill" or stage.teacher, f"{at}.teacher", "is required for a distill stage")
    check(stage.student_layers is None or stage.type == "distill", f"{at}.student_layers",
           "is only for a distill stage")
    check(stage.student_layers is None or stage.student_layers >= 1, f"{at}.student_layers", "must be at least 1")
    for key in raw:
        if key not in SECTIONS:
            raise ConfigError(unknown_key(f"{at}.{key}", key, STAGE_KEYS + SECTIONS))
    stage.overrides = raw
    return stage


def to_yaml(recipe: Recipe) -> str:
    """The effective config, as YAML a user could save and run again."""
    data = dataclasses.asdict(recipe)
    data["stages"] = [
        {"name": s.name, "type": s.type, "model": s.model, **({"teacher": s.teacher} if s.teacher else {}),
         **({"student_layers": s.student_layers} if s.student_layers else {}), **s.overrides}
        for s in recipe.stages
    ]
    if not data["stages"]:
        data.pop("stages")
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
