"""Gated MLPs keeping two intermediate tensors: the same gradients as autograd's, less saved."""
from __future__ import annotations

import pytest
import torch

from r1train.mlp_recompute import recompute_mlp_products


def loss_and_grads(model, input_ids, autocast: bool = False):
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits = model(input_ids=input_ids).logits
    loss = logits.float().log_softmax(-1)[..., :1000].mean()
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def saved_bytes(model, input_ids) -> int:
    """Bytes of activations autograd keeps for the backward pass of one forward: distinct storages,
    the parameters' own left out (they are kept anyway, and the MLP's hooks hide its weight from
    these outer hooks)."""
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages = {}

    def pack(t):
        if t.untyped_storage().data_ptr() not in parameters:
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=input_ids).logits.sum()
    return sum(storages.values())


@pytest.fixture
def input_ids():
    return torch.randint(0, 1000, (3, 17), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
def test_gradients_are_autograds_own_bit_for_bit(make_tiny_model, input_ids, autocast):
    plain = make_tiny_model()
    patched = make_tiny_model()
    assert recompute_mlp_products(patched) == plain.config.num_hidden_layers
    loss_plain, grads_plain = loss_and_grads(plain, input_ids, autocast)
    loss_patched, grads_patched = loss_and_grads(patched, input_ids, autocast)
    assert torch.equal(loss_plain, loss_patched)
    assert grads_plain.keys() == grads_patched.keys() and len(grads_plain) == len(list(plain.parameters()))
    for name, grad in grads_plain.items():
        assert torch.equal(grad, grads_patched[name]), name


def test_each_mlp_keeps_two_intermediate_tensors_instead_of_four(make_tiny_model, input_ids):
    plain, patched = make_tiny_model(), make_tiny_model()
    recompute_mlp_products(patched)
    config = plain.config
    intermediate = input_ids.numel() * config.intermediate_size * 4  # one fp32 [tokens, intermediate] tensor
    saved = saved_bytes(plain, input_ids) - saved_bytes(patched, input_ids)
    assert saved == 2 * intermediate * config.num_hidden_layers


def test_without_gradients_the_mlp_computes_what_it_did(make_tiny_model, input_ids):
    plain, patched = make_tiny_model(), make_tiny_model()
    recompute_mlp_products(patched)
    with torch.no_grad():
        assert torch.equal(plain(input_ids=input_ids).logits, patched(input_ids=input_ids).logits)


def test_lora_adapters_on_the_down_projection_get_autograds_gradients(make_tiny_model, input_ids):
    from r1train.optimiser import with_lora

    plain = with_lora(make_tiny_model(), 4, 8, 0.0, "all-linear")
    patched = with_lora(make_tiny_model(), 4, 8, 0.0, "all-linear")
    for model in (plain, patched):  # LoRA's B starts at zero: give the adapters something to pass on
        torch.manual_seed(1)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.1)
    assert recompute_mlp_products(patched) == 2
    _, grads_plain = loss_and_grads(plain, input_ids)
    _, grads_patched = loss_and_grads(patched, input_ids)
    assert any("down_proj.lora_A" in name for name in grads_plain)
    for name, grad in grads_plain.items():
        assert torch.equal(grad, grads_patched[name]), name


def test_models_with_checkpointed_layers_or_another_mlp_are_left_alone(make_tiny_model):
    checkpointed = make_tiny_model()
    checkpointed.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert recompute_mlp_products(checkpointed) == 0
    gelu = make_tiny_model()
    for layer in gelu.model.layers:
        layer.mlp.act_fn = torch.nn.GELU()
    assert recompute_mlp_products(gelu) == 0
