"""AdamW with bf16 moments (r1train/adamw_state.py): exact with fp32 state, close and half the
memory with bf16 state, resumable, and reachable from a recipe."""
import copy

import pytest
import torch

from r1train import adamw_state
from r1train.adamw_state import AdamWLowPrecisionState, make_adamw
from r1train.config import ConfigError, recipe_from_dict
from r1train.learner import PolicyLearner
from r1train.policy_loss import LossSettings
from tests.test_learner import tiny_model, toy_batch

SETTINGS = dict(lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1)


def parameters(seed: int = 0) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(shape, generator=g)) for shape in [(37, 11), (5,), (300,)]]


def run(optimizer_params: list[torch.nn.Parameter], optimizer, steps: int, seed: int = 1) -> None:
    """`steps` updates with gradients drawn from a fixed stream (same for every optimiser)."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        for p in optimizer_params:
            p.grad = torch.randn(p.shape, generator=g) * 0.1 + 0.05
        optimizer.step()


def test_fp32_state_takes_torchs_fused_kernel_and_its_updates():
    fused_params, reference = parameters(), parameters()
    optimizer = make_adamw(fused_params, **SETTINGS)
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["fused"] is True
    run(fused_params, optimizer, steps=30)
    run(reference, torch.optim.AdamW(reference, **SETTINGS), steps=30)  # the default (foreach) path
    for p, q in zip(fused_params, reference):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6)


def test_the_fused_kernel_is_asked_for_only_where_it_applies():
    assert adamw_state.fused_kernel_applies(parameters())
    assert not adamw_state.fused_kernel_applies([])
    on_meta = [torch.nn.Parameter(torch.empty(3, device="meta"))]
    assert not adamw_state.fused_kernel_applies(on_meta)
    assert make_adamw(on_meta, **SETTINGS).defaults["fused"] is None


@pytest.mark.parametrize("fused", [True, False], ids=["fused_kernel", "single_tensor"])
def test_fp32_state_reproduces_torch_adamw_exactly(monkeypatch, fused):
    monkeypatch.setattr(adamw_state, "CHUNK_ELEMENTS", 64)  # the (37, 11) and (300,) tensors go in slices
    ours, reference = parameters(), parameters()
    optimizer = AdamWLowPrecisionState(ours, state_dtype=torch.float32, **SETTINGS)
    assert optimizer.fused  # plain CPU tensors: the kernel applies
    optimizer.fused = fused  # elsewhere (sharded tensors) the single-tensor arithmetic runs
    run(ours, optimizer, steps=7)
    run(reference, torch.optim.AdamW(reference, **SETTINGS, fused=fused or None, foreach=False), steps=7)
    for p, q in zip(ours, reference):
        assert torch.equal(p, q)


def test_bf16_state_halves_the_moments_and_stays_close_to_fp32_adamw():
    start, ours, reference = parameters(), parameters(), parameters()
    optimizer = make_adamw(ours, state_dtype="bfloat16", **SETTINGS)
    run(ours, optimizer, steps=30)
    run(reference, make_adamw(reference, **SETTINGS), steps=30)
    for p in ours:
        state = optimizer.state[p]
        assert state["exp_avg"].dtype == state["exp_avg_sq"].dtype == torch.bfloat16
        assert state["exp_avg"].nbytes == p.nbytes // 2
    for p, q, p0 in zip(ours, reference, start):
        moved = (q - p0).abs().max()
        assert moved > 0.1  # 30 steps of lr 1e-2 went somewhere
        # Rounding the moments to bf16 changes each step by well under a percent of its size.
        assert (p - q).abs().max() < 0.01 * moved


def test_bf16_state_resumes_exactly_from_a_state_dict():
    ours = parameters()
    optimizer = make_adamw(ours, state_dtype="bfloat16", **SETTINGS)
    run(ours, optimizer, steps=3)
    saved_params = [p.detach().clone() for p in ours]
    saved_state = copy.deepcopy(optimizer.state_dict())  # its tensors are the live ones otherwise
    run(ours, optimizer, steps=4, seed=2)

    resumed = [torch.nn.Parameter(p.clone()) for p in saved_params]
    again = make_adamw(resumed, state_dtype="bfloat16", **SETTINGS)
    again.load_state_dict(saved_state)  # torch widens the moments to the parameters' dtype on load
    assert all(s["exp_avg_sq"].dtype == torch.bfloat16 for s in again.state.values())
    run(resumed, again, steps=4, seed=2)
    for p, q in zip(ours, resumed):
        assert torch.equal(p, q)


def test_the_learner_takes_bf16_optimizer_state_from_a_recipe():
    raw = {"rewards": [{"name": "format"}], "training": {"optimizer_state_dtype": "bfloat16"}}
    recipe = recipe_from_dict(raw)
    model = tiny_model()
    before = [p.detach().clone() for p in model.parameters()]
    learner = PolicyLearner.from_recipe(model, recipe)
    learner.train_on_batch(toy_batch(n=6), LossSettings())
    moments = [t for s in learner.optimizer.state.values() for k, t in s.items() if k.startswith("exp_avg")]
    assert moments and all(t.dtype == torch.bfloat16 for t in moments)
    assert all(not torch.equal(p, b) for p, b in zip(model.parameters(), before))


@pytest.mark.parametrize("training, message", [
    ({"optimizer_state_dtype": "float16"}, "training.optimizer_state_dtype: 'float16' is not one of"),
    ({"optimizer_state_dtype": "bfloat16", "fsdp": True}, "does not combine with training.fsdp"),
])
def test_bad_optimizer_state_settings_are_refused(training, message):
    with pytest.raises(ConfigError, match=message):
        recipe_from_dict({"rewards": [{"name": "format"}], "training": training})
