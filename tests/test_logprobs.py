"""Chunked completion logprobs equal a naive full-logits computation, values and gradients."""
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from r1train.logprobs import compute_token_logprobs
from r1train.packing import ScoringBatch


def tiny_model(dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=256, tie_word_embeddings=True)
    return LlamaForCausalLM(config).to(dtype)


def toy_batch():
    """Three right-padded rows: prompts of 4, 3 and 8 tokens, completions of 6, 4 and 2."""
    g = torch.Generator().manual_seed(0)
    input_ids = torch.randint(1, 256, (3, 10), generator=g)
    attention_mask = torch.ones(3, 10, dtype=torch.long)
    attention_mask[1, 7:] = 0
    input_ids[1, 7:] = 0
    completion_mask = torch.zeros(3, 10, dtype=torch.long)
    completion_mask[0, 4:] = 1
    completion_mask[1, 3:7] = 1
    completion_mask[2, 8:] = 1
    return input_ids, attention_mask, completion_mask


def naive_logprobs(model, input_ids, attention_mask, completion_mask, temperature=1.0):
    """Full [B, L, V] logits, log-softmax everywhere, then pick the completion tokens."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits / temperature
    logprobs = logits.log_softmax(-1)
    token_logprobs = logprobs[:, :-1].gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)  # [B, L-1]
    entropy = -(logprobs.exp() * logprobs).sum(-1)[:, :-1]
    rows_lp, rows_ent = [], []
    for b in range(input_ids.shape[0]):
        picked = completion_mask[b, 1:].bool()
        rows_lp.append(token_logprobs[b][picked])
        rows_ent.append(entropy[b][picked])
    pad = torch.nn.utils.rnn.pad_sequence
    return pad(rows_lp, batch_first=True), pad(rows_ent, batch_first=True)


@pytest.mark.parametrize("chunk_size", [1, 5, 1024])
def test_matches_naive_values(chunk_size):
    model = tiny_model()
    batch = toy_batch()
    logprobs, entropy = compute_token_logprobs(model, ScoringBatch.from_padded(*batch), chunk_size=chunk_size, with_entropy=True)
    expected_lp, expected_ent = naive_logprobs(model, *batch)
    assert logprobs.dtype == torch.float64 and logprobs.shape == (3, 6)
    assert torch.allclose(logprobs, expected_lp, atol=1e-10)
    assert torch.allclose(entropy, expected_ent, atol=1e-10)
    assert logprobs[2, 2:].abs().sum() == 0  # row 2 has two completion tokens, then zeros


def test_temperature_scores_the_tempered_distribution():
    model = tiny_model()
    batch = toy_batch()
    logprobs, _ = compute_token_logprobs(model, ScoringBatch.from_padded(*batch), temperature=0.7)
    expected, _ = naive_logprobs(model, *batch, temperature=0.7)
    assert torch.allclose(logprobs, expected, atol=1e-10)
    untempered, _ = compute_token_logprobs(model, ScoringBatch.from_padded(*batch))
    assert not torch.allclose(logprobs, untempered, atol=1e-3)


def test_matches_naive_gradient():
    model = tiny_model()
    batch = toy_batch()
    weights = torch.randn(3, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    def gradients(fn):
        model.zero_grad()
        logprobs, entropy = fn()
        ((logprobs + 0.3 * entropy) * weights).sum().backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    chunked = gradients(lambda: compute_token_logprobs(model, ScoringBatch.from_padded(*batch), chunk_size=4, with_entropy=True))
    naive = gradients(lambda: naive_logprobs(model, *batch))
    for name in naive:
        assert torch.allclose(chunked[name], naive[name], atol=1e-10), name
    assert chunked["model.embed_tokens.weight"].abs().sum() > 0  # tied with the output layer


def test_no_grad_and_bf16_autocast():
    model = tiny_model(torch.float32)
    batch = toy_batch()
    with torch.no_grad():
        reference, _ = compute_token_logprobs(model, ScoringBatch.from_padded(*batch))
    assert reference.grad_fn is None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lowp, entropy = compute_token_logprobs(model, ScoringBatch.from_padded(*batch), with_entropy=True)
    assert lowp.dtype == torch.float32  # the normaliser runs in fp32 even under autocast
    assert torch.allclose(lowp, reference, atol=0.1)
    lowp.sum().backward()
    assert model.model.layers[0].mlp.up_proj.weight.grad is not None


def test_through_peft_lora():
    from peft import LoraConfig, get_peft_model

    model = tiny_model()
    batch = toy_batch()
    base_logprobs, _ = compute_token_logprobs(model, ScoringBatch.from_padded(*batch))
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear"))
    peft_logprobs, _ = compute_token_logprobs(peft_model, ScoringBatch.from_padded(*batch))
    assert torch.allclose(peft_logprobs, base_logprobs.detach(), atol=1e-12)  # LoRA B starts at zero
    peft_logprobs.sum().backward()
    lora_a = next(p for n, p in peft_model.named_parameters() if "lora_A" in n)
    lora_b = next(p for n, p in peft_model.named_parameters() if "lora_B" in n)
    assert lora_b.grad is not None and lora_b.grad.abs().sum() > 0
    assert lora_a.grad is not None


def test_adapter_on_the_output_layer_goes_through_autograd():
    """An output layer that is not a plain linear one (here LoRA-wrapped) takes the checkpointed
    autograd path instead of the hand-written backward; both match full logits."""
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_model(), LoraConfig(r=4, target_modules=["lm_head"], init_lora_weights=False))
    assert type(model.get_output_embeddings()) is not torch.nn.Linear
    batch = toy_batch()
    weights = torch.randn(3, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    results = []
    for fn in (lambda: compute_token_logprobs(model, ScoringBatch.from_padded(*batch), chunk_size=4,
                                              with_entropy=True, temperature=0.7),
               lambda: naive_logprobs(model, *batch, temperature=0.7)):
        model.zero_grad()
        logprobs, entropy = fn()
        ((logprobs + 0.3 * entropy) * weights).sum().backward()
        results.append([logprobs.detach(), entropy.detach()]
                       + [p.grad.clone() for p in model.parameters() if p.requires_grad])
    for got, want in zip(*results):
        assert torch.allclose(got, want, atol=1e-10)


def test_rejects_completion_at_position_zero():
    input_ids, attention_mask, completion_mask = toy_batch()
    completion_mask[0, 0] = 1
    with pytest.raises(ValueError, match="position 0"):
        ScoringBatch.from_padded(input_ids, attention_mask, completion_mask)
