"""Shared-prompt packing: the plan, the packed rows, and logprobs and gradients equal to plain rows."""
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from r1train.batching import collate
from r1train.logprobs import compute_token_logprobs
from r1train.packing import ScoringBatch, pack, pack_length, packing_supported, plan_packs


def tiny_model(attention="sdpa", dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=256, tie_word_embeddings=True,
                         attn_implementation=attention)
    return LlamaForCausalLM(config).to(dtype)


def grouped_samples(prompts=3, group_size=4, seed=1):
    """GRPO-shaped samples: each prompt (2-8 tokens) repeated over its group, completions of 1-9."""
    g = torch.Generator().manual_seed(seed)

    def tokens(low, high):
        return torch.randint(1, 256, (int(torch.randint(low, high, (1,), generator=g)),), generator=g).tolist()

    prompt_ids, completion_ids = [], []
    for _ in range(prompts):
        prompt = tokens(2, 9)
        for _ in range(group_size):
            prompt_ids.append(prompt)
            completion_ids.append(tokens(1, 10))
    return prompt_ids, completion_ids


def scored(model, batch, weights):
    """Logprobs, entropies and the gradient of a weighted sum of both."""
    model.zero_grad()
    logprobs, entropy = compute_token_logprobs(model, batch, chunk_size=5, with_entropy=True)
    ((logprobs + 0.3 * entropy) * weights).sum().backward()
    return logprobs.detach(), entropy.detach(), [p.grad.clone() for p in model.parameters()]


def assert_scored_alike(got, want, order):
    """`scored` results of the same samples, `got`'s in `order` of `want`'s, equal to fp32 rounding."""
    (got_lp, got_ent, got_grads), (want_lp, want_ent, want_grads) = got, want
    assert torch.allclose(got_lp, want_lp[order], atol=1e-6)
    assert torch.allclose(got_ent, want_ent[order], atol=1e-6)
    for got_grad, want_grad in zip(got_grads, want_grads):
        assert torch.isfinite(got_grad).all()
        assert torch.allclose(got_grad, want_grad, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- the plan
def test_plan_groups_samples_by_prompt_within_the_budget():
    prompt_ids, completion_ids = grouped_samples(prompts=3, group_size=4)
    packs = plan_packs(prompt_ids, completion_ids, token_budget=10_000, hidden_size=4096)
    assert sorted(i for members in packs for i in members) == list(range(12))
    assert sorted(map(sorted, packs)) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]  # whole groups

    tight = plan_packs(prompt_ids, completion_ids, token_budget=16, hidden_size=4096)
    assert len(tight) > 3
    for members in tight:
        assert len({tuple(prompt_ids[i]) for i in members}) == 1
        assert pack_length(members, prompt_ids, completion_ids) <= 16 or len(members) == 1


def test_plan_leaves_rows_unpacked_when_attention_would_cost_more_than_the_prompt_saves():
    prompt_ids = [[1] * 400] * 4
    completion_ids = [[5] * 500] * 4
    # A wide model: a row's attention is cheap next to its projections, so the shared prompt wins.
    assert plan_packs(prompt_ids, completion_ids, token_budget=10_000, hidden_size=4096) == [[0, 1, 2, 3]]
    # A narrow one: the masked attention between completions costs more than the prompt saves.
    assert plan_packs(prompt_ids, completion_ids, token_budget=10_000, hidden_size=64) == [[0], [1], [2], [3]]
    assert plan_packs(prompt_ids, completion_ids, 10_000, hidden_size=None) == [[0], [1], [2], [3]]  # off


# ----------------------------------------------------------------------------- the rows
def test_packed_row_layout():
    batch = pack([[1, 2, 3], [1, 2, 3]], [[7, 8], [9]], [[0, 1]], pad_token_id=0,
                 device=torch.device("cpu"))
    assert batch.input_ids.tolist() == [[1, 2, 3, 7, 8, 9]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 3, 4, 3]]  # positions restart after the prompt
    assert batch.source.tolist() == [2, 3, 2]  # both completions start from the prompt's last token
    assert batch.target.tolist() == [7, 8, 9]
    assert batch.sample.tolist() == [0, 0, 1] and batch.column.tolist() == [0, 1, 0]
    allowed = batch.attention_mask[0, 0].int().tolist()
    assert allowed[5] == [1, 1, 1, 0, 0, 1]  # completion 2 sees the prompt and itself, not completion 1
    assert allowed[4] == [1, 1, 1, 1, 1, 0]


def test_rows_are_padded_to_the_width_multiple_and_score_the_same_tokens():
    prompt_ids, completion_ids = [[1, 2, 3], [1, 2, 3], [4]], [[7, 8], [9], [5, 6]]
    for packs in ([[0, 1], [2]], [[0], [1], [2]]):  # shared rows (4-D mask) and plain ones (2-D)
        exact = pack(prompt_ids, completion_ids, packs, 0, torch.device("cpu"))
        rounded = pack(prompt_ids, completion_ids, packs, 0, torch.device("cpu"), width_multiple=4)
        assert exact.input_ids.shape[1] in (5, 6) and rounded.input_ids.shape[1] == 8
        assert rounded.input_ids[:, : exact.input_ids.shape[1]].tolist() == exact.input_ids.tolist()
        assert (rounded.input_ids[:, exact.input_ids.shape[1]:] == 0).all()
        rows, columns = exact.source // exact.input_ids.shape[1], exact.source % exact.input_ids.shape[1]
        assert rounded.source.tolist() == (rows * rounded.input_ids.shape[1] + columns).tolist()
        assert rounded.target.tolist() == exact.target.tolist()


def test_an_empty_completion_scores_nothing():
    batch = pack([[1, 2], [1, 2]], [[], [9]], [[0, 1]], pad_token_id=0, device=torch.device("cpu"))
    assert batch.source.tolist() == [1] and batch.target.tolist() == [9] and batch.sample.tolist() == [1]


def test_rows_without_shared_prompts_stay_plain():
    batch = pack([[1, 2], [3]], [[7, 8], [9]], [[0], [1]], pad_token_id=0, device=torch.device("cpu"))
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]] and batch.position_ids is None


def test_pack_refuses_samples_with_another_prompt():
    with pytest.raises(ValueError, match="does not share its pack's prompt"):
        pack([[1, 2], [1, 3]], [[7], [8]], [[0, 1]], pad_token_id=0, device=torch.device("cpu"))


def test_only_attention_that_takes_a_custom_mask_packs():
    assert packing_supported(tiny_model("sdpa")) and packing_supported(tiny_model("eager"))
    model = tiny_model("sdpa")
    model.config._attn_implementation = "flash_attention_2"
    assert not packing_supported(model)


# ----------------------------------------------------------------------------- equal to plain rows
@pytest.mark.parametrize("width_multiple", [1, 32])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_logprobs_and_gradients_equal_plain_rows(attention, width_multiple):
    """Whole groups and a split group (uneven row lengths, so padded rows in a packed batch); with
    the rows' width rounded up (the learner's, for bounded kernel caches) all rows end in padding.

    Llama's RMSNorm computes in fp32 even in a float64 model, and sharing the prompt changes the
    order in which its gradient contributions are summed, so agreement is to fp32 rounding."""
    model = tiny_model(attention)
    prompt_ids, completion_ids = grouped_samples(prompts=3, group_size=4)
    packs = [[0, 1, 2, 3], [4, 5], [6], [7], [8, 9, 10, 11]]
    order = [i for members in packs for i in members]
    plain = ScoringBatch.from_padded(*collate(prompt_ids, completion_ids, 0, torch.device("cpu")))
    packed = pack(prompt_ids, completion_ids, packs, 0, torch.device("cpu"), attention, width_multiple)
    assert packed.input_ids.shape[1] % width_multiple == 0
    weights = torch.randn(12, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(2))

    assert_scored_alike(scored(model, packed, weights[order]), scored(model, plain, weights), order)
