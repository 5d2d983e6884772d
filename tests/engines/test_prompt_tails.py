"""PromptTailSharing: a prompt's partial last KV block computed once for its samples.

The connector's bookkeeping is tested on its own (vLLM's scheduler and worker calls made by hand,
on small cache tensors), including the ways out when a donor never delivers; the real CPU engine
then shows the copies happen and the samples are those of an engine that computes every block.
"""
from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import pytest
import torch

if importlib.util.find_spec("vllm") is None:
    pytest.skip("vLLM is not installed", allow_module_level=True)

from r1train.engines import make_engine, prompt_tails  # noqa: E402
from r1train.engines.base import SamplingSettings  # noqa: E402
from r1train.engines.sync_check import SYNC_WARN_MEAN_ABS_DIFF, compare_logprobs  # noqa: E402
from r1train.hardware import bf16_autocast_supported  # noqa: E402

from tests.engines.conftest import teacher_forced_logprobs  # noqa: E402

BLOCK = 4
LAYERS = 3


def make_connector() -> prompt_tails.PromptTailSharing:
    config = SimpleNamespace(kv_transfer_config=object(), cache_config=SimpleNamespace(block_size=BLOCK))
    connector = prompt_tails.PromptTailSharing(config, role=None)
    # Per layer [blocks, kv heads, block size, 2 x head size], each block filled with its own id.
    connector.register_kv_caches({f"layer{i}": torch.arange(8.0).view(8, 1, 1, 1).repeat(1, 2, BLOCK, 6)
                                  for i in range(LAYERS)})
    return connector


def request(request_id: str, prompt: list[int]) -> SimpleNamespace:
    return SimpleNamespace(request_id=request_id, prompt_token_ids=prompt, num_prompt_tokens=len(prompt),
                           num_tokens=len(prompt), lora_request=None, cache_salt=None)


def blocks(*ids: int) -> SimpleNamespace:
    return SimpleNamespace(get_block_ids=lambda: (list(ids),))


def step(connector, new: dict[str, tuple[int, int]], running: dict[str, tuple[int, int, list[int]]] = {}):
    """One engine step: scheduler metadata for the new requests {id: (computed, scheduled)} and the
    running ones {id: (computed, scheduled, new blocks)}, then the worker's calls around the
    forward pass. Returns what get_finished reports loaded."""
    output = SimpleNamespace(
        scheduled_new_reqs=[SimpleNamespace(req_id=r, num_computed_tokens=c) for r, (c, _) in new.items()],
        scheduled_cached_reqs=SimpleNamespace(
            req_ids=list(running), num_computed_tokens=[c for c, _, _ in running.values()],
            new_block_ids=[(b,) if b else None for _, _, b in running.values()], resumed_req_ids=set()),
        num_scheduled_tokens={r: n for r, (_, n) in new.items()} | {r: n for r, (_, n, _) in running.items()},
    )
    connector.bind_connector_metadata(connector.build_connector_meta(output))
    connector.start_load_kv(None)
    connector.wait_for_save()
    loaded = connector.get_finished(set())[1] or set()
    connector.clear_connector_metadata()
    return loaded


PROMPT = [11, 12, 13, 14, 15, 16, 17]  # 7 tokens: one full block, then 2 shared + the last one


def test_the_first_sample_computes_the_partial_block_and_the_others_get_a_copy():
    connector = make_connector()
    donor, sample = request("a-0", PROMPT), request("a-1", PROMPT)
    assert connector.get_num_new_matched_tokens(donor, 4) == (0, False)
    connector.update_state_after_alloc(donor, blocks(0, 3), 0)
    # The other sample: its full block is cached (4 tokens); the 2 before the last are external.
    assert connector.get_num_new_matched_tokens(sample, 4) == (2, True)
    connector.update_state_after_alloc(sample, blocks(0, 5), 2)

    assert step(connector, {"a-0": (4, 3)}) == {"a-1"}
    caches = connector._kv_caches
    assert all(torch.equal(cache[5], cache[3]) for cache in caches)
    assert all(torch.equal(cache[6], torch.full_like(cache[6], 6.0)) for cache in caches)  # others untouched
    assert connector.copied_blocks == 1


def test_a_donor_whose_prompt_is_split_over_steps_saves_once_its_block_is_computed():
    connector = make_connector()
    donor, sample = request("a-0", PROMPT), request("a-1", PROMPT)
    connector.get_num_new_matched_tokens(donor, 0)
    connector.update_state_after_alloc(donor, blocks(2), 0)  # first chunk: 3 tokens, one block
    assert step(connector, {"a-0": (0, 3)}) == set()
    connector.get_num_new_matched_tokens(sample, 4)
    connector.update_state_after_alloc(sample, blocks(2, 5), 2)
    assert step(connector, {}, running={"a-0": (3, 4, [3])}) == {"a-1"}  # the rest, in a new block
    assert all(torch.equal(cache[5], cache[3]) for cache in connector._kv_caches)


def test_no_sharing_where_nothing_is_partial_or_the_full_blocks_are_not_cached():
    connector = make_connector()
    aligned = PROMPT[:5]  # all but the last token fill whole blocks: nothing left to share
    assert connector.get_num_new_matched_tokens(request("b-0", aligned), 4) == (0, False)
    assert connector.get_num_new_matched_tokens(request("b-1", aligned), 4) == (0, False)
    connector.get_num_new_matched_tokens(request("c-0", PROMPT), 4)
    assert connector.get_num_new_matched_tokens(request("c-1", PROMPT), 0) == (0, False)  # evicted blocks
    other = request("d-0", PROMPT[:6] + [99])  # another prompt: its own donor
    assert connector.get_num_new_matched_tokens(other, 4) == (0, False)


def test_a_waiting_sample_computes_its_block_itself_when_the_donor_is_aborted():
    connector = make_connector()
    donor, sample = request("a-0", PROMPT), request("a-1", PROMPT)
    connector.get_num_new_matched_tokens(donor, 4)
    connector.get_num_new_matched_tokens(sample, 4)
    connector.update_state_after_alloc(sample, blocks(0, 5), 2)
    assert step(connector, {}) == set()  # waiting for the donor
    connector.request_finished(donor, [])  # aborted before its prompt was computed
    assert step(connector, {}) == {"a-1"}  # reported loaded...
    assert connector.get_block_ids_with_load_errors() == {5}  # ...with its block failed: vLLM recomputes it
    assert connector.copied_blocks == 0
    # The next request with the prompt is a donor again, not left waiting on the aborted one.
    assert connector.get_num_new_matched_tokens(request("a-2", PROMPT), 4) == (0, False)


def test_a_sample_left_waiting_too_long_computes_its_block_itself():
    connector = make_connector()
    connector.get_num_new_matched_tokens(request("a-0", PROMPT), 4)
    sample = request("a-1", PROMPT)
    connector.get_num_new_matched_tokens(sample, 4)
    connector.update_state_after_alloc(sample, blocks(0, 5), 2)
    reported = [step(connector, {}) for _ in range(prompt_tails.MAX_WAIT_STEPS)]
    assert reported[-1] == {"a-1"} and not any(reported[:-1])
    assert connector.get_block_ids_with_load_errors() == {5}


def test_a_prompts_copy_goes_when_its_last_request_ends_and_a_new_call_starts_a_new_donor():
    connector = make_connector()
    donor, sample = request("a-0", PROMPT), request("a-1", PROMPT)
    connector.get_num_new_matched_tokens(donor, 4)
    connector.update_state_after_alloc(donor, blocks(0, 3), 0)
    connector.get_num_new_matched_tokens(sample, 4)
    connector.update_state_after_alloc(sample, blocks(0, 5), 2)
    step(connector, {"a-0": (4, 3)})
    connector.request_finished(donor, [0, 3])
    assert connector._store  # the sample still runs: the copy stays
    connector.request_finished(sample, [0, 5])
    # A later call (weights pushed in between): its first request computes the block anew.
    assert connector.get_num_new_matched_tokens(request("b-0", PROMPT), 4) == (0, False)
    step(connector, {})
    assert not connector._store
    connector._store[("stale",)] = [torch.zeros(1)]
    connector.drop_saved_blocks()  # what the engine calls before training and after a push
    assert not connector._store


# The real engine, on the tiny Llama. The tests run in fp32 or bf16 as the engine does; the token
# ids are compared where the engine computes in fp32 (bf16 sums in another batch may flip a
# near-tie of the tiny random model's logits).
ENGINE_FP32 = not bf16_autocast_supported(torch.device("cpu"))


def vllm_engine(tiny_model_dir, tokenizer, **options):
    return make_engine("vllm", None, tiny_model_dir, tokenizer, max_model_len=512, kv_cache_gib=0.5, seed=0, **options)


def test_the_engine_copies_a_prompts_partial_block_to_its_samples(tiny_model_dir, tokenizer, chat_prompts):
    from transformers import AutoModelForCausalLM

    engine = vllm_engine(tiny_model_dir, tokenizer)
    try:
        learner = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
        engine.sync_weights(learner)
        connector = prompt_tails.worker_connector()
        assert engine.shares_prompt_tails and connector is not None
        block = engine.llm.llm_engine.vllm_config.cache_config.block_size
        prompts = [p for p in chat_prompts if (len(p) - 1) % block]  # a partial block to share
        assert prompts
        completions = engine.generate(prompts, 4, SamplingSettings(max_new_tokens=6))
        assert connector.copied_blocks == 3 * len(prompts)  # every sample but each prompt's first
        # The copied blocks hold what computing them gives: the samples' logprobs are the learner's.
        autocast = None if ENGINE_FP32 else torch.bfloat16
        diff = compare_logprobs([c.logprobs for c in completions],
                                teacher_forced_logprobs(learner, completions, autocast))
        assert diff["mean_abs_diff"] < SYNC_WARN_MEAN_ABS_DIFF
        with pytest.raises(RuntimeError, match="close"):  # vLLM keeps one connector a process
            vllm_engine(tiny_model_dir, tokenizer)
    finally:
        engine.close()
    assert prompt_tails.worker_connector() is None  # closed with its engine


def test_shared_blocks_give_the_completions_of_an_engine_that_computes_every_block(
        tiny_model_dir, tokenizer, long_chat_prompts):
    if not ENGINE_FP32:
        pytest.skip("token ids compared in fp32 only (see ENGINE_FP32)")
    greedy = SamplingSettings(max_new_tokens=8, temperature=0.0)
    copies = [p for p in long_chat_prompts for _ in range(3)]  # one long system prompt, three questions
    results = []
    for share in (True, False):
        engine = vllm_engine(tiny_model_dir, tokenizer, share_prompt_tails=share)
        try:
            results.append(engine.generate(copies, 1, greedy))
            copied = prompt_tails.worker_connector().copied_blocks if share else 0
            block = engine.llm.llm_engine.vllm_config.cache_config.block_size
        finally:
            engine.close()
        partial = sum(1 for p in long_chat_prompts if (len(p) - 1) % block)
        assert partial and copied == (2 * partial if share else 0)
    shared, unshared = results
    assert [c.token_ids for c in shared] == [c.token_ids for c in unshared]
    worst = max(abs(a - b) for s, u in zip(shared, unshared) for a, b in zip(s.logprobs, u.logprobs))
    assert worst < 1e-4
