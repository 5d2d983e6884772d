"""The inverse-CDF sampler (r1train/engines/cpu_sampler.py): each token drawn with its probability."""
from __future__ import annotations

import math

import pytest
import torch

from r1train.engines.cpu_sampler import BLOCK, draw_uniforms, install, plain_sampling, sample_tokens, sample_with_logprobs

# Just under 1: the largest uniform torch.rand can return in float64.
LAST_UNIFORM = 1.0 - 2.0 ** -53


def chi_square_bound(dof: int, z: float = 3.72) -> float:
    """The chi-square statistic a correct sampler exceeds with probability about 1e-4 (z = 3.72:
    the normal's 1e-4 tail), by the Wilson-Hilferty approximation."""
    a = 2.0 / (9.0 * dof)
    return dof * (1.0 - a + z * math.sqrt(a)) ** 3


def chi_square(tokens: torch.Tensor, probs: torch.Tensor) -> tuple[float, int]:
    """Pearson's statistic of the draws against `probs`, over tokens expected at least 20 times."""
    expected = probs.double() / probs.double().sum() * len(tokens)
    observed = torch.bincount(tokens, minlength=len(probs)).double()
    counted = expected >= 20
    return float(((observed[counted] - expected[counted]) ** 2 / expected[counted]).sum()), int(counted.sum()) - 1


def interval_width(probs: torch.Tensor, token: int) -> float:
    """The length of the set of uniforms that draw `token` from the row `probs`, found by bisection
    (the draw never decreases as the uniform grows): the probability the sampler gives `token`."""
    def first_uniform_drawing_beyond(limit: int) -> float:
        low, high = 0.0, LAST_UNIFORM
        if int(sample_tokens(probs[None], torch.tensor([low], dtype=torch.float64))) > limit:
            return low
        for _ in range(80):
            middle = (low + high) / 2
            if int(sample_tokens(probs[None], torch.tensor([middle], dtype=torch.float64))) > limit:
                high = middle
            else:
                low = middle
        return high
    return first_uniform_drawing_beyond(token) - first_uniform_drawing_beyond(token - 1)


def test_draws_follow_the_probabilities_and_never_a_zero_one():
    torch.manual_seed(0)
    vocab = 2 * BLOCK + 452  # two full blocks and a short one
    logits = torch.randn(vocab) * 2
    logits[100:200] = -math.inf  # banned tokens, one run inside a block
    logits[BLOCK - 3:BLOCK + 3] = -math.inf  # and one across a block's edge
    logits[2100] = 5.0  # a likely token in the short block
    probs = logits.softmax(-1)
    draws = 200_000
    tokens = sample_tokens(probs.expand(draws, vocab), draw_uniforms(draws, {}))

    assert not torch.bincount(tokens, minlength=vocab)[probs == 0].any()
    statistic, dof = chi_square(tokens, probs)
    assert dof > 300 and statistic < chi_square_bound(dof)


def test_each_row_is_drawn_from_its_own_distribution_at_any_total():
    torch.manual_seed(1)
    vocab, draws = 700, 100_000
    peaked = torch.zeros(vocab)
    peaked[[3, 650]] = torch.tensor([1.0, 3.0])
    flat = torch.full((vocab,), 7.0)  # unnormalised: only the ratios count
    probs = torch.stack([peaked, flat]).repeat(draws, 1)
    tokens = sample_tokens(probs, draw_uniforms(len(probs), {})).view(draws, 2)

    assert set(tokens[:, 0].tolist()) == {3, 650}
    share = (tokens[:, 0] == 650).double().mean().item()
    assert abs(share - 0.75) < 4 * math.sqrt(0.75 * 0.25 / draws)
    statistic, dof = chi_square(tokens[:, 1], flat)
    assert dof == vocab - 1 and statistic < chi_square_bound(dof)


def test_the_ends_of_the_unit_interval_draw_the_first_and_last_possible_tokens():
    vocab = 3 * BLOCK + 5
    probs = torch.zeros(vocab)
    probs[[7, BLOCK, vocab - 2]] = torch.tensor([0.2, 0.5, 0.3])
    ends = torch.tensor([0.0, LAST_UNIFORM], dtype=torch.float64)
    assert sample_tokens(probs.expand(2, vocab), ends).tolist() == [7, vocab - 2]


@pytest.mark.parametrize("token", [5_000, BLOCK - 1, BLOCK, 49_151])
def test_a_rare_tokens_probability_holds_to_a_millionth_of_itself(token):
    """A token of probability about 1e-9 among 49,152 (SmolLM2's vocabulary): a running float32
    sum of the probabilities drifts by far more than that (about 1e-5), which would make such a
    token's interval empty or many times too wide."""
    probs = torch.rand(49_152, generator=torch.Generator().manual_seed(2)) + 0.5
    probs[token] = probs.sum() * 1e-9
    probability = probs[token].double().item() / probs.double().sum().item()
    assert interval_width(probs, token) == pytest.approx(probability, rel=1e-6)


def test_a_seeded_request_draws_from_its_own_generator():
    torch.manual_seed(3)
    first = draw_uniforms(4, {2: torch.Generator().manual_seed(9)})
    second = draw_uniforms(4, {2: torch.Generator().manual_seed(9)})
    assert first[2] == second[2] and first[0] != second[0]
    assert first.dtype == torch.float64 and ((first >= 0) & (first < 1)).all()


@pytest.fixture
def vllm_topk_topp_sampler():
    pytest.importorskip("vllm")
    from vllm.platforms import current_platform

    # The CPU build's kernels, the Gumbel-max one among them, from the library this CPU runs
    # (`import vllm._C` loads the AVX-512 one, which aborts on an AVX2-only CPU).
    current_platform.import_kernels()
    from vllm.v1.sample.ops.topk_topp_sampler import TopKTopPSampler

    return TopKTopPSampler


def runner_with(sampler):
    """What `install` reads of a vLLM model runner: its sampler, with `sampler` as its top-k/top-p stage."""
    from types import SimpleNamespace

    from vllm.v1.sample.sampler import Sampler

    whole = Sampler(sampler.logprobs_mode)
    whole.topk_topp_sampler = sampler
    return SimpleNamespace(sampler=whole)


def test_install_takes_the_place_of_vllms_cpu_gumbel_sampler_only(vllm_topk_topp_sampler):
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        pytest.skip("vLLM's CPU build samples with its Gumbel-max kernel; this vLLM is not one")
    sampler = vllm_topk_topp_sampler()
    assert install(runner_with(sampler)) and sampler.forward.__func__ is not vllm_topk_topp_sampler.forward_cpu
    assert not install(runner_with(sampler))  # already replaced: left as it is
    assert not install(runner_with(vllm_topk_topp_sampler(use_fp64_gumbel=True)))


@pytest.mark.parametrize("mode", ["raw_logprobs", "processed_logits", "processed_logprobs"])
def test_the_installed_sampler_returns_what_vllms_does_beside_the_tokens(vllm_topk_topp_sampler, mode):
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        pytest.skip("vLLM's CPU build samples with its Gumbel-max kernel; this vLLM is not one")
    torch.manual_seed(4)
    logits = torch.randn(6, 3000)
    top_k = torch.full((6,), 5)
    ours, theirs = vllm_topk_topp_sampler(mode), vllm_topk_topp_sampler(mode)
    assert install(runner_with(ours))
    tokens, returned = ours.forward(logits.clone(), {}, top_k, None)
    _, expected = theirs.forward(logits.clone(), {}, top_k, None)

    allowed = logits.topk(5, dim=-1).indices
    assert (allowed == tokens[:, None]).any(-1).all()
    if expected is None:
        assert returned is None
    else:
        torch.testing.assert_close(returned, expected)  # not overwritten by the draw


def test_a_row_without_a_finite_probability_still_gets_a_token_id_in_the_vocabulary():
    probs = torch.full((2, 3000), math.nan)
    probs[1] = 1.0
    tokens = sample_tokens(probs, torch.tensor([0.5, 0.5], dtype=torch.float64))
    assert 0 <= int(tokens[0]) < 3000 and int(tokens[1]) == 1500


def test_the_drawn_tokens_logprobs_and_ranks_are_those_of_the_whole_rows():
    torch.manual_seed(5)
    logits = (torch.randn(6, 3000) * 4).to(torch.bfloat16)  # bf16, as the engine's: many ties
    logits[2, 1000:] = -math.inf
    kept = logits.clone()
    uniforms = torch.rand(6, dtype=torch.float64)
    tokens, logprobs, ranks = sample_with_logprobs(logits, uniforms)

    assert torch.equal(logits, kept)
    weights = logits.float().softmax(-1)
    assert torch.equal(tokens, sample_tokens(weights, uniforms))
    expected = logits.float().log_softmax(-1)  # vLLM's raw log-probs and ranks
    chosen = expected.gather(1, tokens[:, None])
    torch.testing.assert_close(logprobs, chosen.squeeze(1), rtol=0, atol=2e-6)
    assert torch.equal(ranks, (expected >= chosen).sum(-1))
    assert sample_with_logprobs(logits, uniforms, ranked=False)[2] is None


def sampling_metadata(rows: int, vocab: int, **changes):
    """vLLM's metadata of a batch of `rows` requests that ask for a plain draw and its log-prob."""
    from vllm.v1.sample.logits_processor import LogitsProcessors
    from vllm.v1.sample.metadata import SamplingMetadata

    fields = dict(temperature=torch.ones(rows), all_greedy=False, all_random=True, top_p=None, top_k=None,
                  generators={}, max_num_logprobs=0, no_penalties=True, prompt_token_ids=None,
                  frequency_penalties=torch.zeros(rows), presence_penalties=torch.zeros(rows),
                  repetition_penalties=torch.ones(rows), output_token_ids=[[] for _ in range(rows)],
                  allowed_token_ids_mask=None, bad_words_token_ids={}, logitsprocs=LogitsProcessors())
    return SamplingMetadata(**(fields | changes))


@pytest.mark.parametrize("max_num_logprobs", [0, None])
def test_a_plain_batch_gets_what_vllms_sampler_returns_for_the_same_draws(vllm_topk_topp_sampler, max_num_logprobs):
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        pytest.skip("vLLM's CPU build samples with its Gumbel-max kernel; this vLLM is not one")
    runner = runner_with(vllm_topk_topp_sampler())
    vllm_forward = runner.sampler.forward
    assert install(runner)
    logits = (torch.randn(5, 3000) * 3).to(torch.bfloat16)
    metadata = sampling_metadata(5, 3000, max_num_logprobs=max_num_logprobs)
    assert plain_sampling(metadata, "raw_logprobs")

    torch.manual_seed(8)
    ours = runner.sampler(logits.clone(), metadata)
    torch.manual_seed(8)  # the same uniforms, through vLLM's whole sampler with the inverse-CDF draw
    theirs = vllm_forward(logits.clone(), metadata)
    assert torch.equal(ours.sampled_token_ids, theirs.sampled_token_ids)
    assert ours.sampled_token_ids.dtype == theirs.sampled_token_ids.dtype == torch.int32
    if max_num_logprobs is None:
        assert ours.logprobs_tensors is None and theirs.logprobs_tensors is None
        return
    assert torch.equal(ours.logprobs_tensors.logprob_token_ids, theirs.logprobs_tensors.logprob_token_ids)
    torch.testing.assert_close(ours.logprobs_tensors.logprobs, theirs.logprobs_tensors.logprobs, rtol=0, atol=2e-6)
    assert torch.equal(ours.logprobs_tensors.selected_token_ranks, theirs.logprobs_tensors.selected_token_ranks)


@pytest.mark.parametrize("change", ["temperature", "greedy row", "top_k", "top_p", "more logprobs", "penalties",
                                    "banned words", "processed logprobs"])
def test_any_other_batch_goes_through_vllms_sampler(vllm_topk_topp_sampler, change):
    rows, vocab = 4, 3000
    changes, mode = {
        "temperature": ({"temperature": torch.tensor([1.0, 0.7, 1.0, 1.0])}, "raw_logprobs"),
        "greedy row": ({"all_random": False, "temperature": torch.tensor([1.0, 0.0, 1.0, 1.0])}, "raw_logprobs"),
        "top_k": ({"top_k": torch.full((rows,), 5)}, "raw_logprobs"),
        "top_p": ({"top_p": torch.full((rows,), 0.9)}, "raw_logprobs"),
        "more logprobs": ({"max_num_logprobs": 5}, "raw_logprobs"),
        "penalties": ({"no_penalties": False}, "raw_logprobs"),
        "banned words": ({"bad_words_token_ids": {0: [[7]]}}, "raw_logprobs"),
        "processed logprobs": ({}, "processed_logprobs"),
    }[change]
    assert plain_sampling(sampling_metadata(rows, vocab), "raw_logprobs")
    assert not plain_sampling(sampling_metadata(rows, vocab, **changes), mode)


def test_a_logit_processor_at_work_or_of_unknown_kind_sends_the_batch_to_vllms_sampler(vllm_topk_topp_sampler):
    from vllm.v1.sample.logits_processor import LogitsProcessors
    from vllm.v1.sample.logits_processor.builtin import LogitBiasLogitsProcessor

    bias = LogitBiasLogitsProcessor(None, torch.device("cpu"), False)
    assert plain_sampling(sampling_metadata(4, 3000, logitsprocs=LogitsProcessors([bias])), "raw_logprobs")
    bias.biases[0] = {5: 2.0}  # a request asked for a logit bias
    assert not plain_sampling(sampling_metadata(4, 3000, logitsprocs=LogitsProcessors([bias])), "raw_logprobs")

    class OwnProcessor(LogitBiasLogitsProcessor):
        pass

    unknown = LogitsProcessors([OwnProcessor(None, torch.device("cpu"), False)])
    assert not plain_sampling(sampling_metadata(4, 3000, logitsprocs=unknown), "raw_logprobs")
