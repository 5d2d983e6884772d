"""One process on one CUDA GPU: the learner, generation and a whole run compute on the GPU and agree
with the CPU. Skipped without a GPU; `scripts/gpu_check.sh` runs them (`pytest -m gpu`)."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from r1train.evaluation import evaluate_model_dir
from r1train.grpo import GRPOTrainer
from r1train.learner import PolicyLearner
from r1train.policy_loss import LossSettings
from r1train.tracking import read_metrics
from tests.test_grpo import addition_files, text_length_reward, tiny_recipe  # noqa: F401 (fixtures)
from tests.test_learner import capture_gradients, tiny_model, toy_batch  # noqa: F401 (fixture)

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def one_step(device: str, bf16: bool, **options) -> dict:
    learner = PolicyLearner(tiny_model().to(device), lr=1e-3, micro_batch_tokens=24, bf16=bf16, **options)
    assert learner.device.type == device
    return learner.train_on_batch(toy_batch(n=6), LossSettings(max_completion_length=8))


@pytest.mark.parametrize("options", [{}, {"share_prompts": False}, {"gradient_checkpointing": True},
                                     {"use_lora": True, "lora_r": 4}], ids=["packed", "unpacked", "checkpointing", "lora"])
def test_a_learner_step_on_the_gpu_takes_the_cpu_step_gradients(capture_gradients, options):
    cpu_metrics = one_step("cpu", bf16=False, **options)
    (cpu_gradients,) = capture_gradients
    gpu_metrics = one_step("cuda", bf16=False, **options)
    gpu_gradients = capture_gradients[1]
    assert len(gpu_gradients) == len(cpu_gradients)
    for on_gpu, on_cpu in zip(gpu_gradients, cpu_gradients):
        assert on_gpu.device.type == "cuda"
        # fp32 on both (no TF32: PyTorch leaves it off for matmuls); summation order differs.
        torch.testing.assert_close(on_gpu.cpu(), on_cpu, rtol=1e-4, atol=1e-6)
    assert gpu_metrics["loss"] == pytest.approx(cpu_metrics["loss"], rel=1e-4, abs=1e-6)
    assert gpu_metrics["grad_norm"] == pytest.approx(cpu_metrics["grad_norm"], rel=1e-4)


def test_bf16_autocast_on_the_gpu_stays_near_the_fp32_step(capture_gradients):
    fp32 = one_step("cuda", bf16=False)
    bf16 = one_step("cuda", bf16=True)
    assert bf16["grad_norm"] == pytest.approx(fp32["grad_norm"], rel=0.05)
    cosine = torch.nn.functional.cosine_similarity(torch.cat([g.flatten() for g in capture_gradients[0]]),
                                                   torch.cat([g.flatten() for g in capture_gradients[1]]), dim=0)
    assert cosine > 0.99


def test_a_grpo_run_trains_and_evaluates_on_the_gpu(tmp_path, tiny_model_dir, addition_files, text_length_reward):
    train, test = addition_files
    recipe = tiny_recipe(tmp_path, tiny_model_dir, train, test, training={"bf16": True},
                         rewards=[{"name": "accuracy"}, {"name": "tag_count", "weight": 0.5}, text_length_reward])
    torch.cuda.reset_peak_memory_stats()
    trainer = GRPOTrainer(recipe, recipe.run_dir)
    assert trainer.learner.device.type == "cuda" and trainer.learner.use_bf16
    final = trainer.train()
    assert torch.cuda.max_memory_allocated() > sum(p.numel() * 4 for p in trainer.learner.model.parameters())

    before = load_file(str(tiny_model_dir / "model.safetensors"))
    after = load_file(str(final / "model.safetensors"))
    assert any(not torch.equal(before[name], after[name]) for name in before)
    rows = read_metrics(recipe.run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2]
    # Sampled by generate's cached decoding and scored by the learner's full pass, both under bf16
    # autocast on the GPU: close, not equal.
    assert 0 <= rows[-1]["sync/logprob_abs_diff_mean"] < 0.05
    # A saved model is evaluated on the GPU too (the HF backend generates with it there).
    scores = evaluate_model_dir(recipe, str(final))
    assert 0.0 <= scores["eval/accuracy"] <= 1.0
