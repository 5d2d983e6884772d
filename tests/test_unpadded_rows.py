"""Unpadded learner passes: the sequence and its attention rows, logprobs and gradients equal to
plain rows, and a model switched to them that behaves and saves as a plain sdpa model elsewhere."""
import json

import pytest
import torch

from r1train.batching import collate, plan_micro_batches
from r1train.logprobs import compute_token_logprobs
from r1train import unpadded_rows
from r1train.packing import ScoringBatch, pack, padded_row_length, plan_packs
from r1train.unpadded_rows import (NAME, QUERY_COST_PAIRS, ROW_COST_PAIRS, attention_in_matmuls, common_prefix_length,
                                   gather_tokens, pack_unpadded, unpadded, use_unpadded_rows)
from tests.test_packing import assert_scored_alike, scored, tiny_model

CPU = torch.device("cpu")


def system_prompted_samples(questions=3, group_size=3, seed=1, system=(3, 4, 5, 6)):
    """GRPO-shaped samples whose prompts share a start (a system prompt), then differ; completions
    of 0-7 tokens (an empty one included)."""
    g = torch.Generator().manual_seed(seed)
    prompt_ids, completion_ids = [], []
    for question in range(questions):
        prompt = list(system) + torch.randint(7, 256, (question + 1,), generator=g).tolist()
        for _ in range(group_size):
            prompt_ids.append(prompt)
            completion_ids.append(torch.randint(1, 256, (int(torch.randint(1, 8, (1,), generator=g)),),
                                                generator=g).tolist())
    completion_ids[group_size + 1] = []
    return prompt_ids, completion_ids


# ----------------------------------------------------------------------------- the layout
def test_common_prefix_length():
    assert common_prefix_length([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2
    assert common_prefix_length([[1, 2], [1, 2]]) == 2
    assert common_prefix_length([[5], [1, 2]]) == 0


def test_sequence_holds_every_token_once_with_the_shared_prefix_first():
    prompt_ids = [[1, 2, 3], [1, 2, 3], [1, 2, 4, 5]]
    completion_ids = [[7, 8], [9], [6]]
    batch = pack_unpadded(prompt_ids, completion_ids, [[0, 1], [2]], 0, CPU, row_width=4)
    assert batch.input_ids.tolist() == [[1, 2, 3, 7, 8, 9, 4, 5, 6]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 3, 4, 3, 2, 3, 4]]  # each token at its own sample's position
    # Completion tokens and the tokens predicting them: a completion's first from its prompt's last.
    assert batch.target.tolist() == [7, 8, 9, 6]
    assert batch.source.tolist() == [2, 3, 2, 7]
    assert batch.sample.tolist() == [0, 0, 1, 2] and batch.column.tolist() == [0, 1, 0, 0]
    layout = batch.layout
    # Rows 4 wide: the prefix [1, 2]; pack 1 (its prompt's rest, both completions); pack 2.
    assert layout["row_queries"].tolist() == [[0, 1, 0, 0], [2, 3, 4, 5], [6, 7, 8, 0]]
    # Keys: the prefix, then the row's own (the pack's rest and completions), padded with token 0.
    assert layout["row_keys"].tolist() == [[0, 1, 0, 0, 0, 0], [0, 1, 2, 3, 4, 5], [0, 1, 6, 7, 8, 0]]
    assert layout["token_slots"].tolist() == [0, 1, 4, 5, 6, 7, 8, 9, 10]  # row * 4 + column
    allowed = batch.attention_mask[:, 0].int()
    # The same mask as an additive bias, for the CPU's matmul attention.
    assert torch.equal(layout["score_bias"], torch.where(batch.attention_mask, 0.0, float("-inf")))
    assert allowed[0].tolist() == [[1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0],  # the prefix: causal on itself
                                   [1, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0]]  # padding slots: every real key
    assert allowed[1].tolist() == [[1, 1, 1, 0, 0, 0],  # prompt rest: the prefix and itself
                                   [1, 1, 1, 1, 0, 0],  # completion 1
                                   [1, 1, 1, 1, 1, 0],
                                   [1, 1, 1, 0, 0, 1]]  # completion 2: not completion 1
    assert allowed[2, 3].tolist() == [1, 1, 1, 1, 1, 0]


def visible(batch: ScoringBatch) -> dict[int, set[int]]:
    """For every token of an unpadded batch, the tokens its attention rows let it see."""
    layout, mask = batch.layout, batch.attention_mask[:, 0]
    width = layout["row_queries"].shape[1]
    seen = {}
    for token, slot in enumerate(layout["token_slots"].tolist()):
        row, column = divmod(slot, width)
        assert layout["row_queries"][row, column] == token
        seen[token] = set(layout["row_keys"][row][mask[row, column]].tolist())
    return seen


def expected_visible(prompt_ids, completion_ids, packs, prefix):
    """What each real token of `pack_unpadded`'s sequence may see: the shared prefix, its own
    prompt's rest and its own completion, up to itself."""
    want, start = {t: set(range(t + 1)) for t in range(prefix)}, prefix
    for members in packs:
        rest = list(range(start, start + len(prompt_ids[members[0]]) - prefix))
        want.update({t: set(range(prefix)) | set(rest[:i + 1]) for i, t in enumerate(rest)})
        start += len(rest)
        for index in members:
            completion = list(range(start, start + len(completion_ids[index])))
            want.update({t: set(range(prefix)) | set(rest) | set(completion[:i + 1]) for i, t in enumerate(completion)})
            start += len(completion)
    return want


@pytest.mark.parametrize("row_width", [1, 2, 3, 5, 8, 64, None])
def test_every_token_sees_exactly_its_own_context_whatever_the_row_width(row_width):
    """Narrow rows split a pack across rows and a long completion into chunks, each keyed by its
    pack's rest and its completion so far; every token still sees what it would in a row of its own."""
    prompt_ids, completion_ids = system_prompted_samples(questions=3, group_size=3)
    packs = [[0, 1, 2], [3, 4], [5], [6, 7, 8]]
    batch = pack_unpadded(prompt_ids, completion_ids, packs, 0, CPU, width_multiple=1, row_width=row_width)
    want = expected_visible(prompt_ids, completion_ids, packs, 4)
    seen = visible(batch)
    assert {t: seen[t] for t in want} == want
    assert set(seen) == set(range(batch.input_ids.shape[1]))  # every token, padding included, in one slot
    if row_width:
        assert batch.layout["row_queries"].shape[1] == row_width


def test_rows_are_as_wide_as_the_estimated_cost_is_least():
    """Long completions in a pack cost attention quadratically in one row; the chosen rows are
    narrower than the pack and never cost more, by the estimate, than one row per pack."""
    prompt_ids = [[1, 2, 3, 4, question] for question in range(4) for _ in range(8)]
    completion_ids = [[5] * (50 + sample % 20) for sample in range(32)]
    packs = [list(range(g * 8, g * 8 + 8)) for g in range(4)]
    chosen = pack_unpadded(prompt_ids, completion_ids, packs, 0, CPU, width_multiple=32)
    whole = pack_unpadded(prompt_ids, completion_ids, packs, 0, CPU, width_multiple=32, row_width=512)

    def estimate(batch):
        rows, width = batch.layout["row_queries"].shape
        return rows * (ROW_COST_PAIRS + width * (QUERY_COST_PAIRS + batch.layout["row_keys"].shape[1]))

    assert chosen.layout["row_queries"].shape[1] < 512
    assert estimate(chosen) < estimate(whole) / 2
    assert visible(chosen) == visible(whole)


def test_one_pack_or_nothing_shared_leaves_no_prefix_keys():
    alone = pack_unpadded([[1, 2, 3], [1, 2, 3]], [[7], [8]], [[0, 1]], 0, CPU, row_width=5)
    assert alone.input_ids.tolist() == [[1, 2, 3, 7, 8]] and alone.layout["row_queries"].shape[0] == 1
    assert alone.layout["row_keys"].tolist() == [[0, 1, 2, 3, 4]]
    apart = pack_unpadded([[1, 2], [3, 4]], [[7], [8]], [[0], [1]], 0, CPU, width_multiple=4, row_width=4)
    # No prefix: two packs of 3 own keys each, and a row for the sequence's padding (6 tokens to 8).
    assert apart.layout["row_queries"].shape == (3, 4) and apart.layout["row_keys"].shape == (3, 3)


def test_the_sequence_ends_in_padding_up_to_the_multiple_in_a_row_of_its_own():
    batch = pack_unpadded([[1, 2], [1, 3]], [[7, 8], [9]], [[0], [1]], 0, CPU, width_multiple=4, row_width=4)
    assert batch.input_ids.tolist() == [[1, 2, 7, 8, 3, 9, 0, 0]]  # 6 tokens, 2 of padding
    assert batch.position_ids[0, 6:].tolist() == [0, 0]
    queries = batch.layout["row_queries"]
    assert queries.shape == (4, 4) and queries[3, :2].tolist() == [6, 7]  # prefix, 2 packs, padding
    assert batch.layout["row_keys"][3].tolist() == [0, 6, 7, 0]
    # Padding sees the prefix and earlier padding: never read, it only has to stay finite.
    assert batch.attention_mask[3, 0, :2].int().tolist() == [[1, 1, 0, 0], [1, 1, 1, 0]]
    assert batch.target.tolist() == [7, 8, 9] and batch.source.tolist() == [1, 2, 4]


def test_identical_prompts_predict_from_the_prefix():
    """All prompts equal: the packs have no rest of the prompt, and a completion's first token is
    predicted by the prefix's last."""
    batch = pack_unpadded([[1, 2], [1, 2], [1, 2]], [[7], [8], [9]], [[0, 1], [2]], 0, CPU)
    assert batch.input_ids.tolist() == [[1, 2, 7, 8, 9]]
    assert batch.source.tolist() == [1, 1, 1]


def test_pack_unpadded_refuses_samples_with_another_prompt():
    with pytest.raises(ValueError, match="does not share its pack's prompt"):
        pack_unpadded([[1, 2], [1, 3]], [[7], [8]], [[0, 1]], 0, CPU)


def test_unpadded_micro_batches_are_budgeted_by_tokens():
    lengths = [10, 9, 3, 3]
    assert plan_micro_batches(lengths, 20) == [[0, 1], [2, 3]]  # padded: 2 x 10, then 2 x 3
    assert plan_micro_batches(lengths, 22, padded=False) == [[0, 1, 2], [3]]  # 10 + 9 + 3, then 3


# ----------------------------------------------------------------------------- equal to plain rows
@pytest.mark.parametrize("width_multiple, row_width", [(1, None), (32, None), (1, 2), (1, 5)],
                         ids=["cheapest", "cheapest-32", "rows-of-2", "rows-of-5"])
@pytest.mark.parametrize("packs", [
    [[0, 1, 2], [3, 4, 5], [6, 7, 8]],  # whole groups
    [[0, 1], [2], [3, 4, 5], [6], [7, 8]],  # split groups: rows of uneven length
    [[i] for i in range(9)],  # one sample a row, the prefix still shared
], ids=["groups", "split", "single"])
def test_logprobs_and_gradients_equal_plain_rows(packs, width_multiple, row_width):
    """Llama's RMSNorm computes in fp32 even in a float64 model, and the shared prefix changes the
    order in which gradient contributions are summed, so agreement is to fp32 rounding."""
    prompt_ids, completion_ids = system_prompted_samples()
    order = [i for members in packs for i in members]
    plain = ScoringBatch.from_padded(*collate(prompt_ids, completion_ids, 0, CPU))
    weights = torch.randn(9, plain.width, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    want = scored(tiny_model("sdpa"), plain, weights)

    model = tiny_model("sdpa")
    assert use_unpadded_rows(model)
    batch = pack_unpadded(prompt_ids, completion_ids, packs, 0, CPU, width_multiple, row_width)
    # Every token once: the 4 shared ones, each pack's rest of its prompt, every completion; then
    # padding up to the multiple.
    rests = sum(len(prompt_ids[members[0]]) - 4 for members in packs)
    tokens = 4 + rests + sum(len(c) for c in completion_ids)
    assert batch.input_ids.shape == (1, padded_row_length(tokens, width_multiple))
    assert_scored_alike(scored(model, batch, weights[order]), want, order)


def test_under_bf16_autocast_it_scores_as_packed_rows_do():
    """bf16 rounds differently along each path; both stay as close to the float32 values."""
    prompt_ids, completion_ids = system_prompted_samples(questions=4, group_size=4)
    packs = plan_packs(prompt_ids, completion_ids, 4096, 4096)
    padded_model, model = tiny_model("sdpa", torch.float32), tiny_model("sdpa", torch.float32)
    use_unpadded_rows(model)
    exact, _ = compute_token_logprobs(padded_model, pack(prompt_ids, completion_ids, packs, 0, CPU))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        packed, _ = compute_token_logprobs(padded_model, pack(prompt_ids, completion_ids, packs, 0, CPU))
        flat, _ = compute_token_logprobs(model, pack_unpadded(prompt_ids, completion_ids, packs, 0, CPU, 32))
    packed_error, flat_error = (packed - exact).abs().max(), (flat - exact).abs().max()
    assert flat_error < 2 * packed_error + 1e-3


# ----------------------------------------------------------------------------- the CPU attention
def attention_inputs(dtype, rows=5, heads=6, key_heads=2, queries=7, keys=11, seed=3):
    """Rows of grouped-query attention and a mask in which every query sees at least one key."""
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(rows, h, n, 8, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
               for h, n in ((heads, queries), (key_heads, keys), (key_heads, keys)))
    mask = torch.rand(rows, 1, queries, keys, generator=g) < 0.5
    mask[..., 0] = True
    return q, k, v, mask


def sdpa_rows(q, k, v, mask, scaling=None):
    """torch's sdpa with the key-value heads repeated, as transformers calls it: [R, Lq, H, D]."""
    groups = q.shape[1] // k.shape[1]
    return torch.nn.functional.scaled_dot_product_attention(
        q, k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1), attn_mask=mask, scale=scaling
    ).transpose(1, 2)


@pytest.mark.parametrize("scaling", [None, 0.3])
def test_matmul_attention_equals_sdpa_in_float64(scaling):
    q, k, v, mask = attention_inputs(torch.float64)
    weights = torch.randn(5, 7, 6, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    got = attention_in_matmuls(q, k, v, mask, scaling)
    want = sdpa_rows(q, k, v, mask, scaling)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    got_grads = torch.autograd.grad((got * weights).sum(), (q, k, v))
    want_grads = torch.autograd.grad((want * weights).sum(), (q, k, v))
    for got_grad, want_grad in zip(got_grads, want_grads):
        torch.testing.assert_close(got_grad, want_grad, rtol=1e-10, atol=1e-12)


def test_a_float_bias_attends_as_its_bool_mask():
    q, k, v, mask = attention_inputs(torch.float64)
    bias = torch.zeros(mask.shape).masked_fill_(~mask, float("-inf"))
    torch.testing.assert_close(attention_in_matmuls(q, k, v, bias), attention_in_matmuls(q, k, v, mask),
                               rtol=0, atol=0)


def test_matmul_attention_in_bf16_is_as_close_as_sdpa_under_autocast():
    """Scores and softmax stay float32 (autocast would make the score matmul bf16); only the
    probabilities are rounded, so the error stays near the kernel's own."""
    q, k, v, mask = attention_inputs(torch.bfloat16, queries=32, keys=64)
    exact = sdpa_rows(q.double(), k.double(), v.double(), mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = attention_in_matmuls(q, k, v, mask)
    kernel = sdpa_rows(q, k, v, mask)
    assert ours.dtype == torch.bfloat16
    assert (ours.double() - exact).abs().mean() < 2 * (kernel.double() - exact).abs().mean()


# ----------------------------------------------------------------------------- the gathers
def test_gathered_tokens_sum_their_slots_gradients_in_float32(monkeypatch):
    """A prefix token is a key in every row: its gradient is the sum of all of them. Summed in
    bfloat16, 300 slots would lose two to three digits; the sum stays float32 (cast a part of the
    slots at a time), returned in the tokens' dtype."""
    monkeypatch.setattr(unpadded_rows, "SLOTS_PER_SUM", 7)
    g = torch.Generator().manual_seed(5)
    tokens = torch.randn(4, 3, requires_grad=True)
    index = torch.randint(0, 4, (20, 15), generator=g)
    rows = gather_tokens(tokens, index, torch.bfloat16)
    assert rows.dtype == torch.bfloat16 and rows.shape == (20, 15, 3)
    upstream = torch.randn(20, 15, 3, generator=g).to(torch.bfloat16)
    (got,) = torch.autograd.grad(rows, tokens, upstream)
    want = torch.zeros(4, 3, dtype=torch.float64).index_add_(0, index.flatten(), upstream.double().flatten(0, 1))
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=1e-6)


def test_a_gather_with_its_inverse_takes_each_tokens_gradient_from_its_own_slot():
    """Queries: every token sits in one slot; the other slots (row padding pointing at token 0)
    receive no gradient, so reading each token's own slot is the whole sum."""
    tokens = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    index = torch.tensor([[3, 0, 1], [4, 2, 0]])  # slot 5 is padding
    slots = torch.tensor([1, 2, 4, 0, 3])
    upstream = torch.randn(2, 3, 2, dtype=torch.float64)
    upstream[1, 2] = 0
    (got,) = torch.autograd.grad(gather_tokens(tokens, index, torch.float64, slots), tokens, upstream)
    (want,) = torch.autograd.grad(tokens[index], tokens, upstream)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_compiled_gathers_give_eager_gradients():
    """Inside a compiled layer: the gathers fuse into inductor's kernels, the sum stays aten's."""
    def attend(tokens, keys_index, query_index, slots):
        keys = gather_tokens(tokens, keys_index, torch.float32)
        queries = gather_tokens(tokens, query_index, torch.float32, slots)
        return (queries.unsqueeze(2) * keys.unsqueeze(1)).sum(-1).tanh()

    g = torch.Generator().manual_seed(6)
    tokens = torch.randn(6, 4, generator=g, requires_grad=True)
    keys_index = torch.randint(0, 6, (3, 5), generator=g)
    query_index, slots = torch.tensor([[0, 1], [2, 3], [4, 5]]), torch.arange(6)
    upstream = torch.randn(3, 2, 5, generator=g)
    want = torch.autograd.grad(attend(tokens, keys_index, query_index, slots), tokens, upstream)
    compiled = torch.compile(attend, backend="inductor", fullgraph=True)
    got = torch.autograd.grad(compiled(tokens, keys_index, query_index, slots), tokens, upstream)
    torch.testing.assert_close(got, want)


# ----------------------------------------------------------------------------- the switched model
def test_only_sdpa_models_switch():
    assert use_unpadded_rows(tiny_model("sdpa")) and not use_unpadded_rows(tiny_model("eager"))
    assert not unpadded(tiny_model("sdpa"))


def test_calls_without_a_layout_are_plain_sdpa(tmp_path):
    """Generation, evaluation or another stage's passes through a switched model get sdpa's
    outputs, and a saved model carries no trace of the switch."""
    reference, model = tiny_model("sdpa"), tiny_model("sdpa")
    use_unpadded_rows(model)
    input_ids = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 0]])
    attention_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    want = reference(input_ids=input_ids, attention_mask=attention_mask).logits
    got = model(input_ids=input_ids, attention_mask=attention_mask).logits
    assert torch.equal(got, want)
    assert torch.equal(model.generate(input_ids[:1], max_new_tokens=4, do_sample=False),
                       reference.generate(input_ids[:1], max_new_tokens=4, do_sample=False))
    model.save_pretrained(tmp_path)
    assert NAME not in (tmp_path / "config.json").read_text()
    assert json.loads((tmp_path / "config.json").read_text()).get("_attn_implementation") in (None, "sdpa")
