"""End to end: every policy-loss, baseline and mismatch-correction key takes a real step on the tiny
model, built from a recipe as `r1train run` builds it."""
from __future__ import annotations

import pytest
import torch

from r1train.grpo import GRPOTrainer
from r1train.policy_loss import TIS_MODES

from tests.test_grpo import addition_files, text_length_reward, tiny_recipe  # noqa: F401 (fixtures)

VARIANTS = [
    {"policy_loss": "gspo", "epsilon_low": 3e-4, "epsilon_high": 4e-4, "loss_aggregation": "sequence_mean"},
    {"policy_loss": "cispo", "epsilon_high": 2.0},
    {"advantage_baseline": "leave_one_out", "advantage_scaling": "none"},
] + [{"tis_mode": mode, "tis_cap": 1.01 if mode == "geometric_mask" else 2.0} for mode in TIS_MODES[1:]]


@pytest.mark.parametrize("algorithm", VARIANTS, ids=lambda a: "-".join(str(v) for v in a.values()))
def test_each_variant_takes_a_real_step(tmp_path, tiny_model_dir, addition_files, text_length_reward, algorithm):
    recipe = tiny_recipe(tmp_path, tiny_model_dir, addition_files[0], rewards=[text_length_reward],
                         algorithm={"updates_per_batch": 2, **algorithm},  # mu = 2: ratios move off 1
                         training={"steps": 1, "learning_rate": 1e-2, "bf16": False})
    trainer = GRPOTrainer(recipe, recipe.run_dir)
    assert trainer.loss_settings().policy_loss == recipe.algorithm.policy_loss
    before = {name: p.detach().clone() for name, p in trainer.learner.model.named_parameters()}
    metrics, _ = trainer.step()
    assert metrics["nan_skipped_steps"] == 0
    assert any(not torch.equal(p, before[name]) for name, p in trainer.learner.model.named_parameters())
    # The HF engine samples with the learner's weights: the raw mismatch ratios sit at 1.
    assert metrics["mismatch/kl"] < 1e-4
    assert metrics["mismatch/ratio/min"] <= metrics["mismatch/ratio_mean"] <= metrics["mismatch/ratio/max"]
    cut = "tis/masked_frac" if recipe.algorithm.tis_mode.endswith("_mask") else "tis/clipped_frac"
    assert cut in metrics
    assert metrics["ratio/max"] > 1.0  # the second pass ran on updated weights
