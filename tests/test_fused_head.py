"""The output layer's hand-written backward pass against autograd on full logits, with its
elementwise work in aten's operators and compiled."""
import pytest
import torch

from r1train.fused_head import head_logprobs


def inputs(dtype=torch.float64, rows=5, hidden=8, vocab=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(rows, hidden, generator=g, dtype=dtype, requires_grad=True)
    w = torch.randn(vocab, hidden, generator=g, dtype=dtype, requires_grad=True)
    y = torch.randint(0, vocab, (rows,), generator=g)
    return h, w, y


def autograd_reference(h, w, y, temperature):
    logits = (h @ w.T).to(torch.promote_types(h.dtype, torch.float32)) / temperature  # fp32 at least
    logp = logits.log_softmax(-1)
    return logp.gather(-1, y.unsqueeze(-1)).squeeze(-1), -(logp.exp() * logp).sum(-1)


@pytest.mark.parametrize("compiled", [False, True], ids=["aten", "compiled"])
@pytest.mark.parametrize("temperature,chunk_size", [(1.0, 1024), (0.7, 2)])
def test_gradcheck_of_logprobs_and_entropy(temperature, chunk_size, compiled):
    h, w, y = inputs()
    assert torch.autograd.gradcheck(lambda h, w: head_logprobs(h, w, y, temperature, True, chunk_size, compiled),
                                    (h, w))
    assert torch.autograd.gradcheck(
        lambda h, w: head_logprobs(h, w, y, temperature, False, chunk_size, compiled)[0], (h, w))


@pytest.mark.parametrize("compiled", [False, True], ids=["aten", "compiled"])
@pytest.mark.parametrize("use", ["logprobs", "entropy", "both"])
def test_values_and_gradients_equal_autograd(use, compiled):
    h, w, y = inputs()
    weights = torch.randn(2, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    got, want = [], []
    for fn, out in ((lambda: head_logprobs(h, w, y, 0.7, True, chunk_size=3, compiled=compiled), got),
                    (lambda: autograd_reference(h, w, y, 0.7), want)):
        logprobs, entropy = fn()
        loss = {"logprobs": (weights[0] * logprobs).sum(), "entropy": (weights[1] * entropy).sum(),
                "both": (weights[0] * logprobs + weights[1] * entropy).sum()}[use]
        out.extend([logprobs.detach(), entropy.detach(), *torch.autograd.grad(loss, (h, w))])
    for a, b in zip(got, want):
        assert torch.allclose(a, b, atol=1e-12)


def test_frozen_output_layer_gets_no_gradient():
    h, w, y = inputs()
    w.requires_grad_(False)
    logprobs, _ = head_logprobs(h, w, y, 1.0, False)
    logprobs.sum().backward()
    assert h.grad is not None and w.grad is None


@pytest.mark.parametrize("compiled", [False, True], ids=["aten", "compiled"])
def test_bf16_autocast_computes_the_logits_in_bf16_and_the_normaliser_in_fp32(compiled):
    h, w, y = inputs(torch.float32, rows=6, hidden=32, vocab=50)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logprobs, entropy = head_logprobs(h, w, y, 1.0, True, compiled=compiled)
        want, want_entropy = autograd_reference(h.bfloat16(), w.bfloat16(), y, 1.0)
    assert logprobs.dtype == entropy.dtype == torch.float32
    assert torch.allclose(logprobs, want, atol=1e-5) and torch.allclose(entropy, want_entropy, atol=1e-5)
    grad_h, grad_w = torch.autograd.grad(logprobs.sum() + entropy.sum(), (h, w))
    assert grad_h.dtype == grad_w.dtype == torch.float32
    exact_h, exact_w = torch.autograd.grad(sum(t.sum() for t in autograd_reference(h, w, y, 1.0)), (h, w))
    assert torch.allclose(grad_h, exact_h, atol=0.05) and torch.allclose(grad_w, exact_w, atol=0.05)


def test_no_rows():
    h, w, y = inputs(rows=0)
    logprobs, entropy = head_logprobs(h, w, y, 1.0, True)
    assert logprobs.shape == entropy.shape == (0,)


def test_a_pass_with_entropies_and_the_backward_pass_take_half_the_rows(monkeypatch):
    """Entropies need a second fp32 [C, V] buffer (the probabilities), so such a pass holds half as
    many rows of logits: no more memory than a pass without them. The backward pass, which runs at
    the learn phase's peak, takes half either way."""
    from r1train import fused_head

    buffer_rows = []
    logits_class = fused_head._Logits

    def recording(weight, temperature, compute_dtype, rows, compiled):
        buffer_rows.append(rows)
        return logits_class(weight, temperature, compute_dtype, rows, compiled)

    monkeypatch.setattr(fused_head, "_Logits", recording)
    h, w, y = inputs(rows=8)
    logprobs, entropy = head_logprobs(h, w, y, 1.0, False, chunk_size=4)
    logprobs.sum().backward()
    logprobs, entropy = head_logprobs(h, w, y, 1.0, True, chunk_size=4)
    logprobs.sum().backward(retain_graph=True)  # the entropies out of the loss: a pass without them
    (logprobs.sum() + entropy.sum()).backward()
    assert buffer_rows == [4, 2, 2, 2, 2]


def test_a_bf16_weight_gradient_taken_a_slice_of_the_vocabulary_at_a_time_is_the_whole_product(monkeypatch):
    """Under bf16 autocast the weight's gradient is summed in fp32 from bf16 products over slices of
    the vocabulary: slicing must not change it."""
    from r1train import fused_head

    h, w, y = inputs(torch.float32, rows=9, hidden=16, vocab=40)

    def weight_gradient(vocab_rows):
        monkeypatch.setattr(fused_head, "_VOCAB_ROWS_PER_PRODUCT", vocab_rows)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logprobs, entropy = head_logprobs(h, w, y, 1.0, True, chunk_size=4)
        return torch.autograd.grad(logprobs.sum() + entropy.sum(), w)[0]

    whole, sliced = weight_gradient(1000), weight_gradient(7)  # 7 does not divide 40: a short last slice
    assert whole.dtype == torch.float32 and whole.abs().sum() > 0
    assert torch.allclose(sliced, whole, rtol=1e-6, atol=1e-7)
