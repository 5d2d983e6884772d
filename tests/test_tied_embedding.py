"""A tied embedding's gradient added in place: the same gradients as autograd's own sum."""
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from r1train.logprobs import compute_token_logprobs
from r1train.packing import ScoringBatch
from r1train.tied_embedding import lookup_embeddings

PAD = 0


def tiny_model(tied=True):
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=64, tie_word_embeddings=tied, pad_token_id=PAD)
    return LlamaForCausalLM(config).double()


def batch():
    """Two rows; the second is right-padded with the pad token, which must get no gradient."""
    input_ids = torch.tensor([[5, 9, PAD, 7, 3, 9, 11, 4], [6, 2, 8, 13, 10, PAD, PAD, PAD]])
    attention_mask = (torch.arange(8) < torch.tensor([[8], [5]])).long()
    completion_mask = torch.zeros_like(input_ids)
    completion_mask[0, 3:] = 1
    completion_mask[1, 2:5] = 1
    return ScoringBatch.from_padded(input_ids, attention_mask, completion_mask)


def gradients(model, passes, in_place):
    """Parameter gradients after `passes` backward passes (accumulated), through the in-place path
    or with the model looking its embeddings up itself (autograd then sums the tied weight's two
    gradients)."""
    model.zero_grad()
    for _ in range(passes):
        logprobs, entropy = compute_token_logprobs(model, batch(), with_entropy=True, tied_gradient_in_place=in_place)
        (logprobs.sum() + 0.3 * entropy.sum()).backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def test_gradients_equal_autograds_sum_over_accumulated_passes():
    model = tiny_model()
    for passes in (1, 2):
        in_place, plain = gradients(model, passes, True), gradients(model, passes, False)
        for name in plain:
            assert torch.allclose(in_place[name], plain[name], atol=1e-12), (passes, name)
    assert in_place["model.embed_tokens.weight"][PAD].abs().sum() > 0  # the output layer scores the pad token


def test_the_output_layers_gradient_is_accumulated_once_and_the_lookups_rows_added_to_it():
    """What saves the memory: the weight's gradient is accumulated only from the output layer, at
    the start of the backward pass, and the lookup's rows are added into `.grad` afterwards."""
    model = tiny_model()
    weight = model.model.embed_tokens.weight
    accumulated = []
    weight.register_post_accumulate_grad_hook(lambda p: accumulated.append(p.grad.clone()))
    logprobs, _ = compute_token_logprobs(model, batch(), tied_gradient_in_place=True)
    logprobs.sum().backward()
    assert len(accumulated) == 1
    added = weight.grad - accumulated[0]
    # Tokens at positions that lead to a scored prediction; not the pad token, and not a row's
    # last token (4, 10), after which nothing is scored.
    feeding = {5, 9, 7, 3, 11, 6, 2, 8, 13}
    assert all(added[t].abs().sum() > 0 for t in feeding)
    assert added[[t for t in range(64) if t not in feeding]].abs().max() == 0


def test_declines_without_grad_untied_or_frozen():
    ids = torch.tensor([[1, 2, 3]])
    tied = tiny_model()
    with torch.no_grad():
        assert lookup_embeddings(tied, ids) is None
    assert lookup_embeddings(tiny_model(tied=False), ids) is None
    tied.model.embed_tokens.weight.requires_grad_(False)
    assert lookup_embeddings(tied, ids) is None
    assert lookup_embeddings(tiny_model(), ids) is not None


def test_by_default_the_model_looks_up_its_embeddings_and_autograd_grad_sees_the_whole_gradient():
    """The in-place path is asked for (the learner, whose losses go through .backward()); without
    it, torch.autograd.grad gets the tied weight's whole gradient and `.grad` is left alone."""
    model = tiny_model()
    weight = model.model.embed_tokens.weight
    logprobs, _ = compute_token_logprobs(model, batch())
    (whole,) = torch.autograd.grad(logprobs.sum(), weight)
    assert weight.grad is None
    logprobs, _ = compute_token_logprobs(model, batch(), tied_gradient_in_place=True)
    logprobs.sum().backward()
    assert torch.allclose(weight.grad, whole, atol=1e-12)
