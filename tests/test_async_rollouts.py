"""One-step off-policy (async) rollouts: the prefetcher, and GRPO runs that use it on a tiny model."""
from __future__ import annotations

import importlib.util
import json
import threading

import pytest
import torch

from r1train.async_rollouts import RolloutPrefetcher
from r1train.config import ConfigError
from r1train.data import PromptSampler
from r1train.grpo import GRPOTrainer, run_grpo
from r1train.tracking import read_metrics
from tests.test_grpo import addition_files, text_length_reward, tiny_recipe  # noqa: F401 (fixtures)


def test_prefetcher_runs_the_next_step_in_another_thread_and_hands_it_over():
    sampler = PromptSampler([{"q": i} for i in range(10)], seed=0)
    threads = []

    def produce(step):
        threads.append(threading.current_thread().name)
        return [row["q"] for row in sampler.next_batch(2)], step

    prefetcher = RolloutPrefetcher(produce, sampler)
    before = dict(sampler.state_dict())
    prefetcher.start(2)
    assert prefetcher.in_flight
    # A checkpoint taken while step 2's prompts are being drawn records the position before them.
    assert prefetcher.sampler_for_checkpoint().state_dict() == before
    (prompts, step), waited = prefetcher.take(2)
    assert step == 2 and len(prompts) == 2 and waited >= 0
    assert threads and threads[0].startswith("r1train-rollouts")
    assert not prefetcher.in_flight and prefetcher.sampler_for_checkpoint() is sampler
    prefetcher.close()


def test_prefetcher_discards_a_batch_meant_for_another_step_and_reraises_errors():
    sampler = PromptSampler([{"q": 1}], seed=0)
    prefetcher = RolloutPrefetcher(lambda step: step, sampler)
    prefetcher.start(3)
    assert prefetcher.take(2) == (None, 0.0)  # not the step asked for: dropped, caller samples itself
    assert not prefetcher.in_flight

    def broken(step):
        raise ValueError("reward server down")

    failing = RolloutPrefetcher(broken, sampler)
    failing.start(1)
    failing.wait()
    with pytest.raises(ValueError, match="reward server down"):
        failing.take(1)
    failing.close()
    prefetcher.close()


def test_async_grpo_trains_on_one_step_stale_batches_and_measures_the_drift(tmp_path, tiny_model_dir, addition_files,
                                                                           text_length_reward):
    train, _ = addition_files
    recipe = tiny_recipe(tmp_path, tiny_model_dir, train, rewards=[text_length_reward],
                         rollout={"async_generation": True}, training={"steps": 3, "learning_rate": 1e-2})
    run_grpo(recipe, recipe.run_dir)
    rows = read_metrics(recipe.run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    # Step 1 had nothing prefetched: sampled with the current weights, so its sync check is exact
    # and its samples keep their weight (TIS weight exp(learner - engine) = 1).
    assert rows[0]["async/staleness"] == 0 and rows[0]["sync/logprob_abs_diff_mean"] < 1e-4
    assert rows[0]["tis/weight_mean"] == pytest.approx(1.0, abs=1e-4)
    # Steps 2 and 3 trained on batches sampled before the previous update: the policy moved since,
    # and the loss reweights the stale samples by how much more or less likely they now are.
    for row in rows[1:]:
        assert row["async/staleness"] == 1
        assert row["async/logprob_abs_diff_mean"] > 1e-3
        assert "sync/logprob_abs_diff_mean" not in row
        assert "time/rollout_wait" in row and "tis/clipped_frac" in row
        assert abs(row["tis/weight_mean"] - 1.0) > 1e-3


def test_async_checkpoint_records_the_sampler_before_the_batch_in_flight(tmp_path, tiny_model_dir, addition_files,
                                                                        text_length_reward):
    """Resuming an async run samples the in-flight batch's prompts again rather than skipping them:
    its checkpoints hold the same data position as a synchronous run's."""
    train, _ = addition_files
    positions = {}
    for mode in (False, True):
        recipe = tiny_recipe(tmp_path / str(mode), tiny_model_dir, train, rewards=[text_length_reward],
                             rollout={"async_generation": mode}, training={"steps": 2})
        run_grpo(recipe, recipe.run_dir)
        state = recipe.run_dir / "checkpoints" / "step-000001" / "trainer_state.json"
        positions[mode] = json.loads(state.read_text())["sampler"]
    assert positions[True] == positions[False]


def test_async_hf_engine_samples_from_a_copy_the_learner_cannot_change_under_it(tmp_path, tiny_model_dir,
                                                                              addition_files, text_length_reward):
    train, _ = addition_files
    recipe = tiny_recipe(tmp_path, tiny_model_dir, train, rewards=[text_length_reward],
                         rollout={"async_generation": True}, training={"steps": 2, "learning_rate": 1e-2})
    trainer = GRPOTrainer(recipe, recipe.run_dir)
    assert trainer.engine.model is not trainer.learner.model
    trainer.step()
    learner_weights = dict(trainer.learner.model.named_parameters())
    engine_weights = dict(trainer.engine.model.named_parameters())
    # The engine sampled step 2's batch with step 0's weights while step 1 trained the learner.
    assert any(not torch.equal(engine_weights[name], p) for name, p in learner_weights.items())
    trainer.step()  # takes that batch, then brings the engine to step 1's weights
    trainer.prefetcher.close()
    assert trainer.step_count == 2


@pytest.mark.parametrize("override, message", [
    ({"rollout": {"async_generation": True, "temperature": 0.7}}, "temperature"),
    ({"rollout": {"async_generation": True}, "algorithm": {"tis_cap": None}}, "tis_cap"),
])
def test_async_generation_refuses_settings_it_cannot_correct(tmp_path, tiny_model_dir, addition_files, override, message):
    train, _ = addition_files
    with pytest.raises(ConfigError, match=message):
        tiny_recipe(tmp_path, tiny_model_dir, train, **override)


@pytest.mark.vllm
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed")
def test_async_grpo_with_the_vllm_engine_sampling_in_the_background(tmp_path, tiny_model_dir, addition_files,
                                                                   text_length_reward):
    train, _ = addition_files
    recipe = tiny_recipe(tmp_path, tiny_model_dir, train, rewards=[text_length_reward],
                         rollout={"backend": "vllm", "async_generation": True, "vllm_kv_cache_gib": 0.5},
                         training={"steps": 3, "learning_rate": 1e-2})
    run_grpo(recipe, recipe.run_dir)
    rows = read_metrics(recipe.run_dir / "metrics.jsonl")
    assert [r["async/staleness"] for r in rows] == [0, 1, 1]
    assert rows[0]["sync/logprob_abs_diff_mean"] < 0.1  # bf16 engine vs fp32 learner, same weights
    assert all(r["completion_len/mean"] > 0 for r in rows)
