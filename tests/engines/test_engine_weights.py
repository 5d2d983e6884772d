"""checkpoint_weights: what a vLLM engine is sent after an optimiser step."""
from __future__ import annotations

import copy

import torch

from r1train.engines.weights import checkpoint_weights


def test_plain_model_sends_checkpoint_names_in_engine_dtype_with_the_tied_head(make_tiny_model):
    model = make_tiny_model(seed=0)
    sent = dict(checkpoint_weights(model, torch.bfloat16))

    assert set(sent) == set(model.state_dict())  # includes lm_head.weight, tied to the embedding
    assert all(t.dtype == torch.bfloat16 for t in sent.values())
    assert torch.equal(sent["lm_head.weight"], sent["model.embed_tokens.weight"])
    assert torch.equal(sent["model.norm.weight"], model.model.norm.weight.detach().to(torch.bfloat16))


def test_lora_is_merged_into_copies_under_the_base_names(make_tiny_model):
    from peft import LoraConfig, get_peft_model

    base_names = set(make_tiny_model(seed=0).state_dict())
    peft_model = get_peft_model(make_tiny_model(seed=0), LoraConfig(r=2, target_modules=["q_proj", "down_proj"]))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    before = {n: p.clone() for n, p in peft_model.named_parameters()}
    expected = copy.deepcopy(peft_model).merge_and_unload().state_dict()

    sent = dict(checkpoint_weights(peft_model, torch.float32))

    assert set(sent) == base_names
    for name, tensor in sent.items():
        torch.testing.assert_close(tensor, expected[name], atol=1e-6, rtol=0)
    q_proj = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(sent[q_proj], before["base_model.model." + q_proj.replace(".weight", ".base_layer.weight")])
    assert all(torch.equal(p, before[n]) for n, p in peft_model.named_parameters())  # learner untouched
