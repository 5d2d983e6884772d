"""HFEngine on a tiny random Llama with the real SmolLM2 tokenizer."""
from __future__ import annotations

import pytest
import torch

from r1train.engines import make_engine
from r1train.engines.base import SamplingSettings
from r1train.engines.hf import HFEngine


@pytest.fixture(scope="module")
def model(make_tiny_model):
    return make_tiny_model(seed=0)


def greedy(max_new_tokens: int, **kwargs) -> SamplingSettings:
    return SamplingSettings(max_new_tokens=max_new_tokens, temperature=0.0, **kwargs)


def test_completions_are_grouped_by_prompt_with_one_logprob_per_token(model, tokenizer, chat_prompts):
    engine = HFEngine(model, tokenizer, batch_size=4)  # 6 sequences: two generate calls
    completions = engine.generate(chat_prompts, n=2, sampling=SamplingSettings(max_new_tokens=6, seed=0))

    assert [c.prompt_index for c in completions] == [0, 0, 1, 1, 2, 2]
    for c in completions:
        assert c.prompt_token_ids == chat_prompts[c.prompt_index]
        assert len(c.logprobs) == len(c.token_ids) == 6  # a random model does not end by itself
        assert c.finish_reason == "length" and c.truncated
        assert c.text == tokenizer.decode(c.token_ids, skip_special_tokens=True)
        assert all(lp <= 0 for lp in c.logprobs)


def test_logprobs_are_raw_temperature_one_logprobs_of_a_teacher_forced_pass(model, tokenizer, chat_prompts, score):
    # Sampled at temperature 0.7 with top-k: the returned log-probs must still be those of the raw
    # logits, i.e. what the learner computes, not those of the tempered, truncated distribution.
    engine = HFEngine(model, tokenizer)
    completions = engine.generate(chat_prompts, n=2, sampling=SamplingSettings(max_new_tokens=8, temperature=0.7, top_k=20, seed=1))
    reference = score(model, completions)
    for c, ref in zip(completions, reference):
        torch.testing.assert_close(torch.tensor(c.logprobs), ref, atol=1e-4, rtol=0)


def test_logprobs_under_bf16_autocast_match_the_learner_under_autocast(model, tokenizer, chat_prompts, score):
    engine = HFEngine(model, tokenizer, autocast_dtype=torch.bfloat16)
    completions = engine.generate(chat_prompts, n=2, sampling=SamplingSettings(max_new_tokens=8, seed=2))
    reference = score(model, completions, autocast_dtype=torch.bfloat16)
    diffs = torch.cat([(torch.tensor(c.logprobs) - ref).abs() for c, ref in zip(completions, reference)])
    assert diffs.mean() < 0.05  # cached decoding vs one full pass, both in bf16


def test_left_padding_does_not_change_what_a_prompt_generates(model, tokenizer, chat_prompts):
    engine = HFEngine(model, tokenizer)
    batched = engine.generate(chat_prompts, n=1, sampling=greedy(8))
    for prompt, together in zip(chat_prompts, batched):
        (alone,) = engine.generate([prompt], n=1, sampling=greedy(8))
        assert together.token_ids == alone.token_ids
        torch.testing.assert_close(torch.tensor(together.logprobs), torch.tensor(alone.logprobs), atol=1e-4, rtol=0)


def test_eos_ends_a_completion_is_kept_and_padding_is_stripped(model, tokenizer, chat_prompts):
    (free_run,) = HFEngine(model, tokenizer).generate(chat_prompts[:1], n=1, sampling=greedy(8))
    tokens = free_run.token_ids
    eos = tokens[2]
    assert eos not in tokens[:2]
    engine = HFEngine(model, tokenizer, eos_token_ids=[eos])  # pretend the third greedy token is EOS

    first, *others = engine.generate(chat_prompts, n=1, sampling=greedy(8))

    assert first.token_ids == tokens[:3] and first.finish_reason == "stop"
    assert len(first.logprobs) == 3
    for c in others:  # rows that ran on after the first stopped carry no padding or EOS-less stops
        assert c.finish_reason == ("stop" if eos in c.token_ids else "length")
        assert eos not in c.token_ids[:-1]


def test_stop_string_ends_generation_at_the_token_completing_it(model, tokenizer, chat_prompts):
    (free_run,) = HFEngine(model, tokenizer).generate(chat_prompts[:1], n=1, sampling=greedy(10))
    stop = tokenizer.decode(free_run.token_ids[:4], skip_special_tokens=True)[-5:]  # tail of the 4-token prefix
    assert stop.strip() and stop not in tokenizer.decode(free_run.token_ids[:3], skip_special_tokens=True)

    completions = HFEngine(model, tokenizer).generate(chat_prompts, n=2, sampling=greedy(10, stop=[stop]))

    first = completions[0]
    assert first.token_ids == free_run.token_ids[:4]
    assert first.finish_reason == "stop" and first.text.endswith(stop)
    for c in completions:
        assert (stop in c.text) == (c.finish_reason == "stop")


def test_a_stop_string_row_that_finishes_last_is_marked_stop_not_length(model, tokenizer, chat_prompts):
    # The only row (hence the last to finish) ends on a stop string: generation stops at that very
    # token, so the row's length equals its stop position; it is a finished sample, not a truncated one.
    (free_run,) = HFEngine(model, tokenizer).generate(chat_prompts[:1], n=1, sampling=greedy(10))
    stop = tokenizer.decode(free_run.token_ids[:4], skip_special_tokens=True)[-5:]
    assert stop not in tokenizer.decode(free_run.token_ids[:3], skip_special_tokens=True)

    (alone,) = HFEngine(model, tokenizer).generate(chat_prompts[:1], n=1, sampling=greedy(10, stop=[stop]))

    assert alone.token_ids == free_run.token_ids[:4]
    assert alone.finish_reason == "stop" and not alone.truncated


def test_generation_runs_in_eval_mode_without_grad_and_restores_train_mode(make_tiny_model, tokenizer, chat_prompts):
    model = make_tiny_model(seed=0).train()
    modes = []
    hook = model.model.layers[0].register_forward_hook(
        lambda module, args, output: modes.append((module.training, torch.is_grad_enabled()))
    )
    HFEngine(model, tokenizer).generate(chat_prompts[:1], n=1, sampling=greedy(3))
    hook.remove()

    assert modes and all(m == (False, False) for m in modes)
    assert model.training
    assert all(p.grad is None for p in model.parameters())


def test_seeds_repeat_samples_without_touching_the_global_random_stream(model, tokenizer, chat_prompts):
    settings = SamplingSettings(max_new_tokens=6)
    torch.manual_seed(123)
    expected_next_draw = torch.rand(1)

    torch.manual_seed(123)
    run_a = HFEngine(model, tokenizer, seed=7).generate(chat_prompts, 2, settings)
    engine_b = HFEngine(model, tokenizer, seed=7)
    run_b = engine_b.generate(chat_prompts, 2, settings)
    second_call = engine_b.generate(chat_prompts, 2, settings)  # the engine's stream carries on
    assert torch.equal(torch.rand(1), expected_next_draw)

    assert [c.token_ids for c in run_a] == [c.token_ids for c in run_b]
    assert [c.token_ids for c in second_call] != [c.token_ids for c in run_b]
    call_seeded = [HFEngine(model, tokenizer).generate(chat_prompts, 2, SamplingSettings(max_new_tokens=6, seed=5)) for _ in range(2)]
    assert [c.token_ids for c in call_seeded[0]] == [c.token_ids for c in call_seeded[1]]


def test_lora_model_generates_with_its_adapters(make_tiny_model, tokenizer, chat_prompts, score):
    from peft import LoraConfig, get_peft_model

    base = make_tiny_model(seed=0)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():  # a freshly initialised adapter is a no-op (B = 0); make it count
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    engine = make_engine("hf", peft_model, None, tokenizer)

    completions = engine.generate(chat_prompts[:2], n=2, sampling=SamplingSettings(max_new_tokens=6, seed=0))

    with_adapters = score(peft_model, completions)
    with peft_model.disable_adapter():
        without_adapters = score(peft_model, completions)
    for c, ref, plain in zip(completions, with_adapters, without_adapters):
        torch.testing.assert_close(torch.tensor(c.logprobs), ref, atol=1e-4, rtol=0)
        assert not torch.allclose(torch.tensor(c.logprobs), plain, atol=1e-2)


def test_sync_weights_accepts_only_the_shared_model(model, make_tiny_model, tokenizer):
    engine = HFEngine(model, tokenizer)
    engine.sync_weights(model)
    with pytest.raises(ValueError, match="different module"):
        engine.sync_weights(make_tiny_model(seed=1))


def test_make_engine_rejects_unknown_backends(model, tokenizer):
    with pytest.raises(ValueError, match="unknown rollout backend"):
        make_engine("tgi", model, None, tokenizer)
