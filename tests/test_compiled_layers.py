"""`training.compile`: the learner's decoder layers compiled with torch.compile give the eager
learner's step, keep the module tree every other part relies on, and are refused where they
cannot work."""
from __future__ import annotations

import math

import pytest
import torch
from torch._dynamo.utils import counters

from r1train.compiled_layers import compile_decoder_layers, cpp_compiler_found, decoder_layers
from r1train.config import ConfigError, recipe_from_dict
from r1train.learner import PolicyLearner
from r1train.policy_loss import LossSettings
from tests.test_learner import capture_gradients, tiny_model, toy_batch  # noqa: F401 (fixture)

needs_compiler = pytest.mark.skipif(not cpp_compiler_found(), reason="torch.compile on a CPU needs a C++ compiler")


def two_steps(compile_layers: bool, **options) -> list[dict]:
    """Two optimiser steps on batches of different shapes (the second must not need a new graph)."""
    learner = PolicyLearner(tiny_model(), lr=1e-3, micro_batch_tokens=24, bf16=False,
                            compile_layers=compile_layers, **options)
    assert learner.compiled == compile_layers
    settings = LossSettings(max_completion_length=8)
    return [learner.train_on_batch(toy_batch(n=6, seed=0), settings),
            learner.train_on_batch(toy_batch(n=5, seed=1), settings)]


@needs_compiler
@pytest.mark.parametrize("options", [{}, {"unpadded_rows": False}, {"share_prompts": False},
                                     {"gradient_checkpointing": True}, {"use_lora": True, "lora_r": 4}],
                         ids=["unpadded", "padded", "unpacked", "checkpointing", "lora"])
def test_compiled_layers_take_the_eager_steps_gradients(capture_gradients, options):
    eager = two_steps(False, **options)
    eager_gradients = list(capture_gradients)
    capture_gradients.clear()
    torch._dynamo.reset()  # compile afresh: graphs cached by an earlier test would not be counted
    counters.clear()
    compiled = two_steps(True, **options)
    # The layers ran as compiled graphs, a handful for every layer and batch shape (not one per
    # shape), and so did the output layer's chunks (statistics with and without entropies, gradient).
    assert 1 <= counters["stats"]["unique_graphs"] <= 4 + 3
    assert len(capture_gradients) == len(eager_gradients) == 2
    for compiled_step, eager_step in zip(capture_gradients, eager_gradients):
        for with_compile, without in zip(compiled_step, eager_step):
            # fp32 on both; fused kernels sum in another order.
            torch.testing.assert_close(with_compile, without, rtol=1e-4, atol=1e-6)
    for with_compile, without in zip(compiled, eager):
        assert with_compile["loss"] == pytest.approx(without["loss"], rel=1e-4, abs=1e-6)
        assert with_compile["grad_norm"] == pytest.approx(without["grad_norm"], rel=1e-4)


@needs_compiler
def test_compiling_keeps_the_module_tree_and_parameter_names():
    model = tiny_model()
    names = [name for name, _ in model.named_parameters()]
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    assert compile_decoder_layers(model, torch.device("cpu"))
    assert [name for name, _ in model.named_parameters()] == names  # checkpoints and weight sync see the same keys
    assert all(torch.equal(model.state_dict()[name], tensor) for name, tensor in state.items())
    assert len(decoder_layers(model)) == model.config.num_hidden_layers


def test_without_a_cpp_compiler_the_learner_runs_eagerly_and_says_why(monkeypatch, capsys):
    monkeypatch.setattr("r1train.compiled_layers.shutil.which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    learner = PolicyLearner(tiny_model(), lr=1e-3, micro_batch_tokens=24, bf16=False, compile_layers=True)
    assert not learner.compiled
    assert "no C++ compiler found" in capsys.readouterr().out
    metrics = learner.train_on_batch(toy_batch(n=4), LossSettings(max_completion_length=8))
    assert math.isfinite(metrics["loss"])  # a step taken, eagerly


def test_compile_is_refused_with_fsdp():
    raw = {"model": {"name": "tiny"}, "training": {"compile": True, "fsdp": True}}
    with pytest.raises(ConfigError, match="does not combine with training.fsdp"):
        recipe_from_dict(raw)


def test_with_the_hf_backend_the_learner_runs_eagerly_and_says_why(capsys):
    """The hf backend generates with the learner's own model, which compiled layers would
    recompile for every decoding shape; a recipe asking for both still runs."""
    recipe = recipe_from_dict({"model": {"name": "tiny"}, "rollout": {"backend": "hf"}, "training": {"compile": True}})
    learner = PolicyLearner.from_recipe(tiny_model(), recipe)
    assert not learner.compiled
    assert "runs eagerly with rollout.backend: hf" in capsys.readouterr().out
