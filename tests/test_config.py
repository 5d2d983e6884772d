"""Recipe loading: overrides, unknown keys with suggestions, wrong types, impossible values."""
from pathlib import Path

import pytest
import yaml

from r1train.config import ConfigError, load_recipe, recipe_from_dict, stage_recipe, to_yaml

RECIPES = sorted(Path(__file__).resolve().parents[1].glob("recipes/*.yaml"))  # recipes/accelerate/ holds launcher configs


def write(tmp_path, data) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_defaults_and_override(tmp_path):
    recipe = load_recipe(write(tmp_path, {"algorithm": {"beta": 0.04}}), ["training.steps=7", "rollout.stop=[x, y]"])
    assert recipe.algorithm.beta == 0.04
    assert recipe.training.steps == 7
    assert recipe.rollout.stop == ["x", "y"]


def test_float_written_without_dot_is_accepted(tmp_path):
    # YAML 1.1 reads "1e-5" as a string; a learning rate written that way must still load.
    recipe = load_recipe(write(tmp_path, "training:\n  learning_rate: 1e-5\n"))
    assert recipe.training.learning_rate == pytest.approx(1e-5)


@pytest.mark.parametrize(
    "data, overrides, message",
    [
        # misspelt key: the nearest valid key is named
        ({"algorithm": {"betta": 0.1}}, [], "unknown key 'algorithm.betta'; did you mean 'algorithm.beta'?"),
        # misspelt section
        ({"trainig": {}}, [], "did you mean 'training'?"),
        # misspelt key given on the command line
        ({}, ["rollout.group_sise=4"], "did you mean 'rollout.group_size'?"),
        # wrong type
        ({"training": {"steps": "many"}}, [], "training.steps: expected an integer"),
        ({"training": {"bf16": "yes"}}, [], "training.bf16: expected true or false"),
        # impossible values
        ({"training": {"learning_rate": -1.0}}, [], "training.learning_rate: must be positive"),
        ({"rollout": {"group_size": 1}}, [], "rollout.group_size: must be at least 2"),
        ({"training": {"micro_batch_tokens": "max"}}, [], "training.micro_batch_tokens: must be 'auto' or a whole number"),
        ({"training": {"micro_batch_tokens": 32}}, [], "training.micro_batch_tokens: must be 'auto' or a whole number"),
        ({"training": {"micro_batch_tokens": 2048.5}}, [], "training.micro_batch_tokens: must be 'auto' or a whole number"),
        ({"algorithm": {"loss_aggregation": "token_means"}}, [], "did you mean 'token_mean'"),
        # missing file
        ({"data": {"train": "nope/missing.jsonl"}}, [], "data.train: file not found: nope/missing.jsonl"),
        # malformed override
        ({}, ["training.steps"], "expected key=value"),
        # stages: unknown type, missing teacher, forward reference
        ({"stages": [{"name": "a", "type": "sfft"}]}, [], "did you mean 'sft'"),
        ({"stages": [{"name": "d", "type": "distill"}]}, [], "stages[0].teacher: is required"),
        ({"stages": [{"name": "a", "type": "sft", "model": "stage:b"}, {"name": "b", "type": "sft"}]}, [], "must name an earlier stage"),
        # stage overrides are validated like the top level
        ({"stages": [{"name": "a", "type": "grpo", "training": {"stepz": 3}}]}, [], "did you mean 'training.steps'"),
    ],
)
def test_bad_recipes_name_the_key(tmp_path, data, overrides, message):
    with pytest.raises(ConfigError) as err:
        load_recipe(write(tmp_path, data), overrides)
    assert message in str(err.value)


def test_malformed_yaml_names_the_line(tmp_path):
    with pytest.raises(ConfigError, match=r"malformed YAML at line \d+, column \d+"):
        load_recipe(write(tmp_path, "training:\n  steps: [1,\n  lr: 2\n"))


def test_stage_overrides_merge_onto_top_level():
    recipe = recipe_from_dict({
        "training": {"steps": 5, "learning_rate": 1e-5},
        "stages": [{"name": "rl", "type": "grpo", "training": {"steps": 2}}],
    })
    merged = stage_recipe(recipe, recipe.stages[0])
    assert merged.training.steps == 2
    assert merged.training.learning_rate == 1e-5  # inherited


def test_effective_config_round_trips(tmp_path):
    recipe = recipe_from_dict({"rewards": [{"name": "format", "weight": 0.5}],
                               "stages": [{"name": "rl", "type": "grpo", "training": {"steps": 2}}]})
    again = load_recipe(write(tmp_path, to_yaml(recipe)))
    assert again == recipe


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_shipped_recipe_validates(path, monkeypatch, recipe_sample_overrides):
    from r1train.validation import check_recipe

    monkeypatch.chdir(path.parents[1] if path.parent.name != "recipes" else path.parent.parent)
    check_recipe(load_recipe(path, recipe_sample_overrides(path.name)))


@pytest.mark.parametrize(
    "data, message",
    [
        ({"algorithm": {"policy_loss": "gpso"}}, "algorithm.policy_loss: 'gpso' is not one of ppo_clip, gspo, cispo (did you mean 'gspo'?)"),
        ({"algorithm": {"advantage_baseline": "rloo"}}, "algorithm.advantage_baseline: 'rloo' is not one of group_mean, leave_one_out"),
        ({"algorithm": {"tis_mode": "sequence_masks"}}, "did you mean 'sequence_mask'"),
        ({"algorithm": {"tis_floor": 0.5}}, "algorithm.tis_floor: bounds the kept range of the *_mask modes"),
        ({"algorithm": {"tis_mode": "token_mask", "tis_floor": 1.5}}, "algorithm.tis_floor: must be in (0, 1]"),
        ({"algorithm": {"policy_loss": "cispo", "dual_clip": 3.0}}, "algorithm.dual_clip: applies to policy_loss: ppo_clip"),
        # The engines report the full distribution's log-probs, not the truncated one sampled from.
        ({"rollout": {"top_p": 0.9}}, "rollout.top_p: 0.9 samples from a truncated distribution"),
        ({"rollout": {"top_k": 20}, "algorithm": {"tis_mode": "sequence_mask"}}, "set algorithm.tis_cap: null"),
    ],
)
def test_policy_loss_and_correction_keys_are_checked(tmp_path, data, message):
    with pytest.raises(ConfigError) as err:
        load_recipe(write(tmp_path, data))
    assert message in str(err.value)


def test_truncated_sampling_runs_without_an_importance_correction(tmp_path):
    recipe = load_recipe(write(tmp_path, {"rollout": {"top_p": 0.9, "top_k": 20}, "algorithm": {"tis_cap": None}}))
    assert recipe.rollout.top_p == 0.9 and recipe.algorithm.tis_cap is None
