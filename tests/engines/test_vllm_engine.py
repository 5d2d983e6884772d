"""VLLMEngine: the real vLLM CPU build, in-process, on the tiny Llama; weight sync checked by logprobs."""
from __future__ import annotations

import importlib.util

import pytest
import torch
from transformers import AutoModelForCausalLM

from r1train.engines import make_engine
from r1train.engines.base import SamplingSettings
from r1train.engines.direct_sync import learner_tensors
from r1train.engines.weights import checkpoint_weights
from r1train.engines.sync_check import SYNC_WARN_MEAN_ABS_DIFF, compare_logprobs
from r1train.hardware import bf16_autocast_supported
from tests.engines.test_cpu_sampler import chi_square, chi_square_bound

if importlib.util.find_spec("vllm") is None:
    pytest.skip("vLLM is not installed", allow_module_level=True)

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def engine(tiny_model_dir, tokenizer):
    """One engine for the whole module: start-up costs several seconds."""
    engine = make_engine("vllm", None, tiny_model_dir, tokenizer, max_model_len=512, kv_cache_gib=1, seed=0)
    yield engine
    engine.close()


@pytest.fixture
def learner(tiny_model_dir, engine):
    """A fresh learner model with the folder's weights, and the engine synced back to them."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    engine.sync_weights(model)
    return model


def perturb_(model: torch.nn.Module, scale: float = 0.1, seed: int = 1) -> None:
    """Add noise of `scale` times each matrix's std to every weight matrix (an optimiser step, roughly)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.add_(torch.randn(p.shape, generator=generator) * scale * p.std())


# The engine computes in bf16 only where the CPU has native bf16 (emulated bf16 is ~4x slower).
ENGINE_DTYPE = torch.bfloat16 if bf16_autocast_supported(torch.device("cpu")) else torch.float32


def test_engine_dtype_follows_the_hardware(engine):
    assert engine.dtype == ENGINE_DTYPE


def test_on_cpu_the_engines_rms_norms_run_through_vllms_cpp_kernels(engine):
    from vllm import ir

    from r1train.engines.cpu_kernels import PROVIDER

    hidden = torch.ones(4, 64, dtype=ENGINE_DTYPE)
    weight = torch.ones(64, dtype=ENGINE_DTYPE)
    assert ir.ops.rms_norm.dispatch(hidden, weight, 1e-5).provider == PROVIDER
    assert ir.ops.fused_add_rms_norm.dispatch(hidden, hidden.clone(), weight, 1e-5).provider == PROVIDER


def test_on_cpu_the_engine_draws_each_token_with_its_own_probability(engine, learner, chat_prompts):
    """The colocated engine samples by inverse CDF (cpu_sampler.py). The first token of three
    prompts, 600 draws each in one call, top-k at temperature 1, against the engine's own log-probs
    of each prompt's k tokens: each row of a batch is drawn from its own distribution."""
    assert engine.samples_by_inverse_cdf
    inputs = [{"prompt_token_ids": prompt} for prompt in chat_prompts]
    ranked = engine._sampling_params_cls(n=1, max_tokens=1, logprobs=20, temperature=1.0)
    tops, params = [], []
    for request in engine.llm.generate(inputs, ranked, use_tqdm=False):
        logprobs = sorted(((e.logprob, token) for token, e in request.outputs[0].logprobs[0].items()), reverse=True)
        # k under 20 with no tie between the k-th and the next (bf16 logits tie often): top-k is one set.
        k = max(k for k in range(2, 20) if logprobs[k - 1][0] > logprobs[k][0])
        tops.append({token: logprob for logprob, token in logprobs[:k]})
        params.append(engine._sampling_params_cls(n=600, max_tokens=1, top_k=k, temperature=1.0))

    for top, request in zip(tops, engine.llm.generate(inputs, params, use_tqdm=False)):
        tokens = torch.tensor([sample.token_ids[0] for sample in request.outputs])
        assert set(tokens.tolist()) <= set(top)
        ids = torch.tensor(list(top))
        probs = torch.zeros(int(ids.max()) + 1).index_put_((ids,), torch.tensor(list(top.values())).softmax(-1))
        statistic, dof = chi_square(tokens, probs)
        assert dof >= 5 and statistic < chi_square_bound(dof)


def test_rollouts_at_temperature_1_take_the_samplers_short_way_with_logprobs_that_match_the_learner(
        engine, learner, chat_prompts, score, monkeypatch):
    """Rollouts as the trainer asks for them (temperature 1, the drawn tokens' log-probs): every
    decoding step is drawn by `sample_with_logprobs` (cpu_sampler.py), whose log-probs are the learner's."""
    from r1train.engines import cpu_sampler

    assert engine.samples_by_inverse_cdf
    decided = []
    plain_sampling = cpu_sampler.plain_sampling

    def recorded(*args, **kwargs):
        decided.append(plain_sampling(*args, **kwargs))
        return decided[-1]

    monkeypatch.setattr(cpu_sampler, "plain_sampling", recorded)
    completions = engine.generate(chat_prompts, n=3, sampling=SamplingSettings(max_new_tokens=12, temperature=1.0))
    assert len(decided) >= 12 and all(decided)
    assert all(len(c.logprobs) == len(c.token_ids) for c in completions)
    assert diff_to_learner(learner, completions, score)["mean_abs_diff"] < SYNC_WARN_MEAN_ABS_DIFF


def diff_to_learner(model, completions, score) -> dict[str, float]:
    # The learner side in the engine's precision: bf16 autocast against a bf16 engine, else fp32.
    learner = score(model, completions, autocast_dtype=torch.bfloat16 if ENGINE_DTYPE == torch.bfloat16 else None)
    return compare_logprobs([c.logprobs for c in completions], learner)


def test_completions_are_grouped_with_raw_logprobs_that_match_the_learner(engine, learner, tokenizer, chat_prompts, score):
    # Temperature 0.7 and top-k: the returned log-probs must still be the raw temperature-1 ones.
    sampling = SamplingSettings(max_new_tokens=12, temperature=0.7, top_k=50)
    completions = engine.generate(chat_prompts, n=3, sampling=sampling)

    assert [c.prompt_index for c in completions] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for c in completions:
        assert c.prompt_token_ids == chat_prompts[c.prompt_index]
        assert len(c.logprobs) == len(c.token_ids) == 12 and c.finish_reason == "length"
        assert c.text == tokenizer.decode(c.token_ids, skip_special_tokens=True)
    assert diff_to_learner(learner, completions, score)["mean_abs_diff"] < SYNC_WARN_MEAN_ABS_DIFF


def test_sync_brings_the_engine_to_the_learners_changed_weights(engine, learner, long_chat_prompts, score):
    sampling = SamplingSettings(max_new_tokens=16)
    engine.generate(long_chat_prompts, n=2, sampling=sampling)  # fills the prefix cache with old-weight KV
    perturb_(learner)

    stale = diff_to_learner(learner, engine.generate(long_chat_prompts, n=2, sampling=sampling), score)
    assert engine._direct_sync is not None and engine._direct_sync.accepts(learner_tensors(learner))
    engine.sync_weights(learner)  # the direct copy: the fixture's first sync recorded its plan
    synced = diff_to_learner(learner, engine.generate(long_chat_prompts, n=2, sampling=sampling), score)

    assert stale["mean_abs_diff"] > 5 * SYNC_WARN_MEAN_ABS_DIFF  # the check can tell a missed sync
    assert synced["mean_abs_diff"] < SYNC_WARN_MEAN_ABS_DIFF


def sync_through_vllms_loaders(engine, model) -> None:
    """The general path the direct copy replaces, as the reference it must reproduce."""
    weights = checkpoint_weights(model, engine.dtype)
    engine.llm.collective_rpc(lambda worker: worker.model_runner.reload_weights(weights_iterator=weights))
    assert engine.llm.reset_prefix_cache()


def test_the_direct_copy_leaves_the_engine_as_vllms_loaders_do(engine, learner, long_chat_prompts):
    """Bit for bit: the same greedy tokens and the same log-probs as after vLLM's own load, for
    weights changed everywhere (stacked qkv and gate_up slices, norms, the tied embedding)."""
    greedy = SamplingSettings(max_new_tokens=16, temperature=0.0)
    perturb_(learner, scale=0.2, seed=3)
    with torch.no_grad():
        for p in learner.parameters():
            if p.dim() == 1:
                p.mul_(1.3)  # the norms too
    engine.sync_weights(learner)
    direct = engine.generate(long_chat_prompts, n=1, sampling=greedy)
    sync_through_vllms_loaders(engine, learner)
    loaded = engine.generate(long_chat_prompts, n=1, sampling=greedy)
    assert [c.token_ids for c in direct] == [c.token_ids for c in loaded]
    assert [c.logprobs for c in direct] == [c.logprobs for c in loaded]
    perturb_(learner, scale=0.2, seed=4)
    engine.sync_weights(learner)  # and it changes them: a direct copy that did nothing fails here
    assert [c.logprobs for c in engine.generate(long_chat_prompts, n=1, sampling=greedy)] != [c.logprobs for c in loaded]


def test_sync_of_only_the_tied_embedding_reaches_the_output_layer(engine, learner, chat_prompts, score):
    with torch.no_grad():
        embedding = learner.get_input_embeddings().weight
        assert embedding is learner.get_output_embeddings().weight
        embedding.mul_(1.25)
    sampling = SamplingSettings(max_new_tokens=16)
    stale = engine.generate(chat_prompts, n=6, sampling=sampling)
    engine.sync_weights(learner)
    synced = engine.generate(chat_prompts, n=6, sampling=sampling)
    # 96 tokens a side; an output layer left at the old weights is off by far more than rounding.
    assert diff_to_learner(learner, stale, score)["mean_abs_diff"] > 3 * SYNC_WARN_MEAN_ABS_DIFF
    assert diff_to_learner(learner, synced, score)["mean_abs_diff"] < SYNC_WARN_MEAN_ABS_DIFF


def test_sync_merges_lora_adapters_without_changing_the_learner(engine, learner, chat_prompts, score):
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(learner, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    before = {n: p.clone() for n, p in peft_model.named_parameters()}

    engine.sync_weights(peft_model)
    completions = engine.generate(chat_prompts, n=2, sampling=SamplingSettings(max_new_tokens=12))

    assert all(torch.equal(p, before[n]) for n, p in peft_model.named_parameters())
    assert diff_to_learner(peft_model, completions, score)["mean_abs_diff"] < SYNC_WARN_MEAN_ABS_DIFF
    with peft_model.disable_adapter():
        assert diff_to_learner(peft_model, completions, score)["mean_abs_diff"] > 5 * SYNC_WARN_MEAN_ABS_DIFF


def test_stop_strings_and_eos_end_completions_and_are_kept(engine, learner, tokenizer, chat_prompts):
    greedy = SamplingSettings(max_new_tokens=10, temperature=0.0)
    (free_run,) = engine.generate(chat_prompts[:1], n=1, sampling=greedy)
    tokens = free_run.token_ids
    stop = tokenizer.decode(tokens[:4], skip_special_tokens=True)[-5:]
    assert stop.strip() and stop not in tokenizer.decode(tokens[:3], skip_special_tokens=True)

    (stopped,) = engine.generate(chat_prompts[:1], n=1, sampling=SamplingSettings(max_new_tokens=10, temperature=0.0, stop=[stop]))
    assert stopped.token_ids == tokens[:4] and stopped.finish_reason == "stop" and stopped.text.endswith(stop)

    assert tokens[2] not in tokens[:2]
    eos_ids = engine.eos_token_ids
    engine.eos_token_ids = [tokens[2]]  # pretend the third greedy token is an end-of-sequence token
    try:
        (ended,) = engine.generate(chat_prompts[:1], n=1, sampling=greedy)
    finally:
        engine.eos_token_ids = eos_ids
    assert ended.token_ids == tokens[:3] and ended.finish_reason == "stop" and len(ended.logprobs) == 3


def test_requests_generated_together_come_back_as_separate_calls_give_them(engine, learner, chat_prompts):
    from r1train.engines.base import generate_many

    greedy = SamplingSettings(max_new_tokens=10, temperature=0.0)
    sampled = SamplingSettings(max_new_tokens=6, temperature=1.0)
    together_sampled, together_greedy = generate_many(engine, [(chat_prompts, 3, sampled), (chat_prompts[:2], 1, greedy)])
    assert [c.prompt_index for c in together_sampled] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert all(len(c.token_ids) == 6 for c in together_sampled)
    alone = engine.generate(chat_prompts[:2], 1, greedy)
    assert [c.token_ids for c in together_greedy] == [c.token_ids for c in alone]
    assert [c.prompt_index for c in together_greedy] == [0, 1]
    reports, running = [], []  # each prompt's completions as they finish, for a progress bar
    scheduler = engine._scheduler()

    def report(count):
        reports.append(count)
        running.append(len(scheduler.running))

    capped = engine.generate_many([(chat_prompts, 3, sampled), (chat_prompts[:2], 1, greedy)], progress=report,
                                  max_running=2)
    assert sorted(reports) == [1, 1, 3, 3, 3] and max(running) <= 2  # 11 sequences, at most 2 at a time
    assert [c.token_ids for c in capped[1]] == [c.token_ids for c in alone]
    assert scheduler.max_num_active_reqs > 2  # vLLM's own cap again after the call


def test_requests_of_one_call_share_the_kv_blocks_of_their_prompt(engine, learner, long_chat_prompts):
    # On CPU vLLM would use 128-token blocks, longer than this prompt (and most prompts): then nothing
    # is shared and each of a prompt's samples computes the prompt again (the engine picks smaller
    # blocks). vLLM shares the full blocks; the prompt's last, partial one is copied (prompt_tails),
    # so the second request computes only the prompt's last token.
    prompt = long_chat_prompts[0][:100]
    block = engine.llm.llm_engine.vllm_config.cache_config.block_size
    assert (len(prompt) - 1) % block  # a partial block
    assert engine.llm.reset_prefix_cache()
    params = engine._sampling_params(1, SamplingSettings(max_new_tokens=2))
    first, second = engine.llm.generate([{"prompt_token_ids": prompt}] * 2, params, use_tqdm=False)
    assert not first.num_cached_tokens  # nothing was cached before this call
    assert second.num_cached_tokens == (len(prompt) - 1 if engine.shares_prompt_tails
                                        else (len(prompt) - 1) // block * block)


def test_a_call_seed_repeats_the_samples(engine, learner, chat_prompts):
    sampling = SamplingSettings(max_new_tokens=8, temperature=0.8, top_p=0.9, seed=11)
    first = engine.generate(chat_prompts, n=2, sampling=sampling)
    again = engine.generate(chat_prompts, n=2, sampling=sampling)
    assert [c.token_ids for c in first] == [c.token_ids for c in again]
    assert len({tuple(c.token_ids) for c in first[:2]}) == 2  # the n samples of a prompt still differ


def test_idle_memory_goes_back_between_calls_and_the_engine_still_works(engine, learner, chat_prompts):
    """release_idle_memory() (evaluation calls it between chunks) zeroes the KV cache through the OS
    and resets the prefix cache, whose blocks it emptied: greedy decoding gives what it gave before."""
    greedy = SamplingSettings(max_new_tokens=12, temperature=0.0)
    before = [c.token_ids for c in engine.generate(chat_prompts, n=1, sampling=greedy)]

    def nonzero_bytes():
        return sum(int(torch.empty(0, dtype=torch.uint8).set_(storage).count_nonzero())
                   for storage in engine._kv_cache_storages())

    assert nonzero_bytes() > 0  # the call wrote its blocks
    engine.release_idle_memory()
    assert nonzero_bytes() == 0
    assert [c.token_ids for c in engine.generate(chat_prompts, n=1, sampling=greedy)] == before


def test_sleep_frees_the_kv_cache_and_wake_up_brings_back_the_same_engine(engine, learner, chat_prompts):
    """On CPU, sleep() shrinks the KV cache's storage to nothing; after wake-up (which resets the
    prefix cache, whose blocks were lost) greedy decoding gives what it gave before."""
    greedy = SamplingSettings(max_new_tokens=12, temperature=0.0)
    before = [c.token_ids for c in engine.generate(chat_prompts, n=1, sampling=greedy)]
    storages = engine._kv_cache_storages()
    full = sum(storage.nbytes() for storage in storages)
    assert full >= 1024**3  # the fixture's kv_cache_gib=1
    engine.sleep()
    assert sum(storage.nbytes() for storage in storages) == 0
    engine.sleep()  # a second call changes nothing
    after = [c.token_ids for c in engine.generate(chat_prompts, n=1, sampling=greedy)]  # wakes up itself
    assert sum(storage.nbytes() for storage in storages) == full
    assert after == before
    # The weight push after a sleep also finds the engine awake and working.
    engine.sleep()
    engine.sync_weights(learner)
    assert [c.token_ids for c in engine.generate(chat_prompts, n=1, sampling=greedy)] == before


def test_sleep_with_stale_weights_frees_them_until_the_next_push(engine, learner, chat_prompts):
    """The trainer pushes new weights after every update, so the CPU engine frees its own copy
    while the learner trains: the packed matmul weights and the embedding. Generating before the
    push fails and says why; after the push the engine gives, bit for bit, what it gave before."""
    greedy = SamplingSettings(max_new_tokens=12, temperature=0.0)
    before = engine.generate(chat_prompts, n=1, sampling=greedy)
    engine_model = engine.engine_model()
    embedding = engine_model.model.embed_tokens.weight
    size = embedding.untyped_storage().nbytes()
    assert engine.frees_stale_weights
    engine.sleep(weights_stale=True)
    assert embedding.untyped_storage().nbytes() == 0
    packed = [module for module in engine_model.modules() if hasattr(module, "cpu_linear")]
    assert packed  # every linear layer, the output layer included: their packed weights are gone
    for module in packed:
        with pytest.raises(RuntimeError, match="released"):
            module.cpu_linear(torch.zeros(1, 4), None, None)
    with pytest.raises(RuntimeError, match="sync_weights"):
        engine.generate(chat_prompts, n=1, sampling=greedy)
    engine.sync_weights(learner)
    assert embedding.untyped_storage().nbytes() == size
    after = engine.generate(chat_prompts, n=1, sampling=greedy)
    assert [c.token_ids for c in after] == [c.token_ids for c in before]
    assert [c.logprobs for c in after] == [c.logprobs for c in before]


def test_trim_on_wake_hands_the_heap_back_before_the_cache_returns(engine, learner, chat_prompts, monkeypatch):
    """With trim_on_wake (training.cpu_low_memory) the wake-up trims the heap first, and only then
    regrows the cache; without it only the sleep trims."""
    from r1train.engines import vllm_engine

    events = []
    monkeypatch.setattr(vllm_engine, "return_free_memory", lambda: events.append("trim"))
    regrow = vllm_engine.regrow_zeroed
    monkeypatch.setattr(vllm_engine, "regrow_zeroed", lambda *a: (events.append("regrow"), regrow(*a)))
    for trim in (False, True):
        monkeypatch.setattr(engine, "trim_on_wake", trim)
        events.clear()
        engine.sleep()
        engine.wake_up()
        regrown = events.index("regrow")
        assert events[:regrown] == ["trim", "trim"] if trim else ["trim"]


def test_trim_on_wake_trims_the_heap_again_after_a_push(engine, learner, monkeypatch):
    """With trim_on_wake the heap is trimmed after a weight push too (what the push freed: its
    staging copies), as the trainer takes it: sleep, wake-up, push; without it only the sleep trims."""
    from r1train.engines import vllm_engine

    engine.sync_weights(learner)  # records the direct-sync plan
    events = []
    monkeypatch.setattr(vllm_engine, "return_free_memory", lambda: events.append("trim"))
    regrow = vllm_engine.regrow_zeroed
    monkeypatch.setattr(vllm_engine, "regrow_zeroed", lambda *a: (events.append("regrow"), regrow(*a)))
    push = engine._direct_sync.push
    monkeypatch.setattr(engine._direct_sync, "push", lambda *a: (events.append("push"), push(*a)))
    for trim in (False, True):
        monkeypatch.setattr(engine, "trim_on_wake", trim)
        events.clear()
        engine.sleep(weights_stale=True)
        engine.wake_up()
        engine.sync_weights(learner)
        assert events == (["trim", "trim", "regrow", "push", "trim"] if trim else ["trim", "regrow", "push"])


@pytest.mark.parametrize(("checkpointing", "low_memory", "trims"),
                         [(False, False, False), (True, False, True), (False, True, True), (True, True, True)])
def test_the_heap_is_trimmed_on_wake_where_the_learner_keeps_its_peak_low(checkpointing, low_memory, trims):
    """With gradient checkpointing (the main recipe) the learner's peak is below the engine's
    regrowth on top of the heap the learner left, so the wake-up trims; otherwise only
    `training.cpu_low_memory` asks for it."""
    from r1train.config import recipe_from_dict
    from r1train.engines.vllm_engine import trims_heap_on_wake

    recipe = recipe_from_dict({"model": {"gradient_checkpointing": checkpointing},
                               "data": {"train": "data/arithmetic/train.jsonl"}, "training": {"cpu_low_memory": low_memory}})
    assert trims_heap_on_wake(recipe) is trims
