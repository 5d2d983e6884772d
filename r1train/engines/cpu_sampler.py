"""Token sampling for vLLM's CPU build by inverse CDF, in place of its Gumbel-max kernel.

vLLM's CPU sampler draws a token with `torch.ops._C.fused_gumbel_argmax`: a SplitMix64 random
number and two logarithms for every vocabulary entry of every sequence, on one thread. For 64
sequences over SmolLM2's 49,152 tokens that took 9.1 ms a decoding step on the 2-core AMX machine,
about a ninth of a rollout call's time, more than the attention (torch.profiler over four calls
of the main recipe's shape, 2026-12-06; benchmarks/results/cpu_sampler_amx_2026-12-06.md).

Inverse-CDF sampling needs one uniform number per sequence instead, located in the cumulative
distribution of the probabilities. A float32 running sum over 49,152 entries drifts by up to
about 1e-5 of the total, enough to move rare tokens' probabilities, and a float64 one is slow
(3.6 ms), so the search has two levels: the number is located among blocks of `BLOCK` entries
(each block's sum in float32, a relative error of about 1e-6 on the block's weight), then inside
its block, by a float64 running sum of the block's entries. Each token is then drawn with its
probability to about one part in a million of that probability, a token of probability zero never.
The probabilities are made in place in vLLM's logits buffer (which its sampler hands over for
that): a fresh 12 MiB tensor a step costs more in page faults than the arithmetic.

Only the draw changes: the logits reaching it (after temperature, top-k, top-p), the log-probs
vLLM returns and per-request seeds keep their meaning. The random numbers come from torch's
global generator, which vLLM seeds with the engine's seed, or from a request's own generator when
the request carries a seed, so a seeded engine samples the same tokens run after run, though not
the tokens vLLM's kernel would have drawn. `install_in_engine` puts it in place on a colocated engine;
`vllm serve` workers keep vLLM's sampler.

Rollouts at temperature 1 with the sampled tokens' log-probs (what the trainer asks for) take a
shorter way through the whole sampler (`sample_with_logprobs`): vLLM computes a float32
log-softmax of every row for the log-probs, copies the logits to float32 again for the draw,
divides them by the temperature (1) and counts each row's larger entries to rank the token, four
passes over a [rows, vocabulary] tensor on top of the draw's own. The draw's block sums already
hold each row's normaliser, so the log-prob of the drawn token is its logit less the row's maximum
and the logarithm of their total, and only the rank needs one more pass. Every other request
(greedy rows, other temperatures, top-k or top-p, penalties, logit processors at work, more
log-probs) goes through vLLM's sampler as before, with the draw above.
"""
from __future__ import annotations

import functools
import types

import torch

BLOCK = 1024  # entries per first-level block: 48 blocks for a 49,152-token vocabulary


def sample_tokens(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """For each row of `probs` [B, V] (non-negative, any positive total), the token whose interval
    in the row's cumulative distribution holds `uniforms` [B] (float64 in [0, 1)); [B] long."""
    return _sample_tokens_and_totals(probs, uniforms)[0]


def _sample_tokens_and_totals(probs: torch.Tensor, uniforms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`sample_tokens`, and each row's total [B] (float64) found on the way."""
    rows, vocab = probs.shape
    full = vocab // BLOCK * BLOCK
    # Summed in float32: a float64 sum of a float32 tensor makes a float64 copy of it first.
    block_sums = probs[:, :full].reshape(rows, -1, BLOCK).sum(-1)
    if full < vocab:
        block_sums = torch.cat([block_sums, probs[:, full:].sum(-1, keepdim=True)], 1)
    block_sums = block_sums.double()
    block_ends = block_sums.cumsum(-1)
    target = uniforms.unsqueeze(1) * block_ends[:, -1:]
    block = torch.searchsorted(block_ends, target, right=True).clamp_(max=block_sums.shape[1] - 1)
    block_mass = block_sums.gather(1, block)
    # The number's place inside its block, as a share of the block's mass: in [0, 1) by
    # construction, kept there against rounding so the search below never runs off the block's end.
    share = ((target - (block_ends.gather(1, block) - block_mass)) / block_mass).clamp_(0.0, 1.0 - 2.0 ** -52)
    columns = block * BLOCK + torch.arange(BLOCK)
    inside = columns < vocab  # the last block may be short
    entries = probs.gather(1, columns.clamp(max=vocab - 1)) * inside
    entry_ends = entries.cumsum(-1, dtype=torch.float64)
    entry = torch.searchsorted(entry_ends, share * entry_ends[:, -1:], right=True)
    # A row without a finite probability (every logit -inf: vLLM's own draw fails there too)
    # still yields a token id the engine can take.
    return (block * BLOCK + entry).squeeze(1).clamp_(max=vocab - 1), block_ends[:, -1]


def sample_with_logprobs(logits: torch.Tensor, uniforms: torch.Tensor,
                         ranked: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Draw a token from each row of `logits` [B, V] at temperature 1; the tokens [B] long, their
    log-probs [B] float32 (as vLLM's float32 log-softmax gives them) and, if `ranked`, their ranks
    [B] long (the entries at or above them, as vLLM counts). `logits` is left as it is."""
    weights, peak = _unnormalised_probs(logits, copy=True)
    tokens, totals = _sample_tokens_and_totals(weights, uniforms)
    chosen = logits.gather(1, tokens.unsqueeze(1))
    logprobs = ((chosen.float() - peak).squeeze(1).double() - totals.log()).float()
    ranks = _count_at_or_above(logits, chosen) if ranked else None
    return tokens, logprobs, ranks


def _unnormalised_probs(logits: torch.Tensor, copy: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """exp(logits - row maximum) in float32, made in `logits` itself where it is float32 and not
    `copy`; and the row maxima [B, 1]."""
    weights = logits.to(torch.float32, copy=copy)
    peak = weights.amax(dim=-1, keepdim=True)
    return weights.sub_(peak).exp_(), peak


def _count_at_or_above(rows: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """[B] long: the entries of each row of `rows` [B, V] at or above its value in `values` [B, 1].
    vLLM's own compiled count where it is there (0.24 ms at 64 x 49,152 bf16 on the AMX machine,
    where the eager comparison and sum take 2 ms); the eager one elsewhere."""
    try:
        from vllm.v1.sample.ops.logprobs import batched_count_greater_than
    except ImportError:
        return (rows >= values).sum(dim=-1)
    # As vLLM calls it: the batch size left symbolic, so a batch of one does not compile it again.
    torch._dynamo.decorators.mark_unbacked(rows, 0)
    torch._dynamo.decorators.mark_unbacked(values, 0)
    return batched_count_greater_than(rows, values)


def draw_uniforms(rows: int, generators: dict[int, torch.Generator]) -> torch.Tensor:
    """[rows] float64 uniforms in [0, 1): torch's global generator, a seeded request's own where given."""
    uniforms = torch.rand(rows, dtype=torch.float64)
    for row, generator in generators.items():
        uniforms[row] = torch.rand(1, generator=generator, dtype=torch.float64)[0]
    return uniforms


def _forward(sampler, logits: torch.Tensor, generators: dict[int, torch.Generator],
             k: torch.Tensor | None, p: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """TopKTopPSampler.forward with the draw by inverse CDF (see the module's docstring)."""
    from vllm.v1.sample.ops.topk_topp_sampler import apply_top_k_top_p

    logits = apply_top_k_top_p(logits, k, p)
    logits_to_return = None
    if sampler.logprobs_mode == "processed_logits":
        logits_to_return = logits
    elif sampler.logprobs_mode == "processed_logprobs":
        logits_to_return = logits.log_softmax(dim=-1, dtype=torch.float32)
    # Made in vLLM's logits buffer, which its sampler may overwrite; in a copy where it is returned.
    weights, _ = _unnormalised_probs(logits, copy=logits_to_return is logits)
    return sample_tokens(weights, draw_uniforms(logits.shape[0], generators)), logits_to_return


def _processors_idle(processors) -> bool:
    """Whether every logit processor of a batch is one of vLLM's built-in ones, idle: present in
    every batch, they change nothing unless a request asks for min-p, a logit bias or min-tokens."""
    from vllm.v1.sample.logits_processor import builtin

    idle_when_empty = {builtin.MinPLogitsProcessor: "min_p_count", builtin.LogitBiasLogitsProcessor: "biases",
                       builtin.MinTokensLogitsProcessor: "min_toks"}
    return all(type(p) in idle_when_empty and not getattr(p, idle_when_empty[type(p)]) for p in processors.all)


def plain_sampling(metadata, logprobs_mode: str, predict_bonus_token: bool = False) -> bool:
    """Whether a batch asks for nothing but a draw at temperature 1 and at most the drawn tokens'
    raw log-probs: what `sample_with_logprobs` computes."""
    holder = metadata.thinking_budget_state_holder
    return (not predict_bonus_token and logprobs_mode == "raw_logprobs" and metadata.all_random
            and metadata.max_num_logprobs in (None, 0) and not metadata.logprob_token_ids
            and metadata.top_k is None and metadata.top_p is None and metadata.no_penalties
            and metadata.allowed_token_ids_mask is None and not metadata.bad_words_token_ids
            and (holder is None or not holder.has_tracked_requests())
            and _processors_idle(metadata.logitsprocs) and bool((metadata.temperature == 1.0).all()))


def _sampler_forward(sampler, vllm_forward, logits: torch.Tensor, sampling_metadata, predict_bonus_token: bool = False,
                     logprobs_mode_override=None):
    """vLLM's `Sampler.forward`, through `sample_with_logprobs` for plain batches."""
    from vllm.v1.outputs import LogprobsTensors, SamplerOutput

    mode = logprobs_mode_override or sampler.logprobs_mode
    if not plain_sampling(sampling_metadata, mode, predict_bonus_token):
        return vllm_forward(logits, sampling_metadata, predict_bonus_token, logprobs_mode_override)
    uniforms = draw_uniforms(logits.shape[0], sampling_metadata.generators)
    wanted = sampling_metadata.max_num_logprobs == 0
    tokens, logprobs, ranks = sample_with_logprobs(logits, uniforms, ranked=wanted)
    sampled = tokens.to(torch.int32).unsqueeze(-1)
    returned = None
    if wanted:
        returned = LogprobsTensors(logprob_token_ids=sampled, logprobs=logprobs.unsqueeze(-1),
                                   selected_token_ranks=ranks)
    return SamplerOutput(sampled_token_ids=sampled, logprobs_tensors=returned)


def install_in_engine(llm) -> bool:
    """`install` in every model runner of an in-process `vllm.LLM`; True where all took it."""
    return all(llm.collective_rpc(lambda worker: install(worker.model_runner)))


def install(model_runner) -> bool:
    """Sample with `sample_tokens` in this vLLM model runner, plain batches with
    `sample_with_logprobs`; False (nothing changed) where its sampler is not vLLM's CPU Gumbel-max
    one or asks for float64 Gumbel noise."""
    sampler = model_runner.sampler.topk_topp_sampler
    gumbel_max = getattr(type(sampler), "forward_cpu", None)
    if gumbel_max is None or getattr(sampler.forward, "__func__", None) is not gumbel_max or sampler.use_fp64_gumbel:
        return False
    sampler.forward = types.MethodType(_forward, sampler)
    whole = model_runner.sampler
    whole.forward = functools.partial(_sampler_forward, whole, whole.forward)
    return True
