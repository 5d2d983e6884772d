"""Masked attention with the backward pass written out (r1train/masked_attention.py): the same
outputs and gradients as transformers' sdpa attention, and sdpa wherever it does not apply."""
import pytest
import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from r1train import masked_attention
from r1train.masked_attention import masked_attention as attention
from tests.test_packing import tiny_model


class Layer(torch.nn.Module):
    """What the attention functions read of a layer: its key/value grouping and causality."""
    num_key_value_groups = 3
    is_causal = True


def packed_mask(segments: list[list[int]]) -> torch.Tensor:
    """[R, 1, L, L] boolean mask of packed rows (segment 0 the prompt, j > 0 completion j)."""
    segment = torch.tensor(segments)
    query, key = segment.unsqueeze(2), segment.unsqueeze(1)
    causal = torch.ones(segment.shape[1], segment.shape[1], dtype=torch.bool).tril()
    return (causal & ((key == 0) | (key == query))).unsqueeze(1)


def inputs(dtype=torch.float64, rows=2, length=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    query = torch.randn(rows, 6, length, 8, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    key = torch.randn(rows, 2, length, 8, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    value = torch.randn(rows, 2, length, 8, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    grad = torch.randn(rows, length, 6, 8, generator=g, dtype=torch.float64).to(dtype)
    return query, key, value, grad


def outputs_and_gradients(function, mask, dtype=torch.float64):
    query, key, value, grad = inputs(dtype)
    out = function(Layer(), query, key, value, mask, scaling=0.3)[0]
    out.backward(grad)
    return out.detach(), [t.grad for t in (query, key, value)]


MASK = packed_mask([[0, 0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 3], [0, 0, 0, 1, 1, 2, 2, 2, 2, 2, 3, 3]])


def test_outputs_and_gradients_equal_sdpa_under_a_packed_mask():
    got, got_grads = outputs_and_gradients(attention, MASK)
    want, want_grads = outputs_and_gradients(sdpa_attention_forward, MASK)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def test_in_bf16_the_gradients_are_as_close_to_float64_as_sdpas():
    _, exact = outputs_and_gradients(sdpa_attention_forward, MASK)
    _, ours = outputs_and_gradients(attention, MASK, torch.bfloat16)
    _, theirs = outputs_and_gradients(sdpa_attention_forward, MASK, torch.bfloat16)
    for o, t, e in zip(ours, theirs, exact):
        ours_error, theirs_error = ((x.double() - e).norm() / e.norm() for x in (o, t))
        assert ours_error < 2 * theirs_error + 1e-3


def test_a_query_that_sees_no_key_gets_zero_gradients_not_nan():
    mask = MASK.clone()
    mask[0, 0, 5] = False  # query 5 of row 0 sees nothing
    query, key, value, grad = inputs()
    out = attention(Layer(), query, key, value, mask, scaling=0.3)[0]
    out.backward(grad)
    assert all(torch.isfinite(t.grad).all() for t in (query, key, value))
    assert (query.grad[0, :, 5] == 0).all()


@pytest.mark.parametrize("case", ["no gradient", "no mask", "dropout"])
def test_everything_else_is_sdpas(case, monkeypatch):
    taken = []
    monkeypatch.setattr(masked_attention._FlashForwardWrittenBackward, "apply",
                        lambda *args: taken.append(True) or pytest.fail("the written-out pass was taken"))
    query, key, value, _ = inputs()
    mask, dropout = (None, 0.0) if case == "no mask" else (MASK, 0.5 if case == "dropout" else 0.0)
    with torch.set_grad_enabled(case != "no gradient"):
        attention(Layer(), query, key, value, mask, dropout=dropout, scaling=0.3)
    assert not taken


def test_use_in_points_only_an_sdpa_model_at_it():
    model = tiny_model("sdpa")
    assert masked_attention.use_in(model) and model.config._attn_implementation == masked_attention.NAME
    eager = tiny_model("eager")
    assert not masked_attention.use_in(eager) and eager.config._attn_implementation == "eager"


def test_a_model_pointed_at_it_generates_as_with_sdpa():
    """Generation (no gradient, transformers' own masks) is sdpa's."""
    prompt = torch.tensor([[5, 9, 17, 3]])
    want = tiny_model("sdpa").generate(prompt, max_new_tokens=6, do_sample=False)
    got = tiny_model(masked_attention.NAME).generate(prompt, max_new_tokens=6, do_sample=False)
    assert torch.equal(got, want)
