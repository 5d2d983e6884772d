"""PolicyLearner on a tiny Llama: exact gradients under micro-batching, training, LoRA, state."""
import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from r1train.algorithm import aggregate_loss, compute_group_advantages
from r1train.batching import collate, plan_micro_batches
from r1train.engines.weights import checkpoint_weights
from r1train.hardware import MICRO_BATCH_TOKENS_BF16, MICRO_BATCH_TOKENS_FP32_CPU, micro_batch_token_budget
from r1train.learner import PolicyLearner, TrainBatch
from r1train.policy_loss import LossSettings
from r1train.optimiser import lr_factor

AGGREGATIONS = ("sequence_mean", "token_mean", "sum_over_max_len")


def tiny_model(dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=256, tie_word_embeddings=True)
    return LlamaForCausalLM(config).to(dtype)


def toy_batch(n=6, seed=0, advantages=None):
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(1, 256, (int(torch.randint(2, 6, (1,), generator=g)),), generator=g).tolist()
               for _ in range(n)]
    completions = [torch.randint(1, 256, (int(torch.randint(1, 8, (1,), generator=g)),), generator=g).tolist()
                   for _ in range(n)]
    if advantages is None:
        advantages = torch.randn(n, generator=g, dtype=torch.float64)
    return TrainBatch(prompts, completions, advantages)


@pytest.fixture
def capture_gradients(monkeypatch):
    """Record the gradients of every optimiser step, as they are before clipping."""
    captured, original = [], torch.nn.utils.clip_grad_norm_

    def clip_and_record(parameters, *args, **kwargs):
        parameters = list(parameters)
        captured.append([p.grad.clone() for p in parameters])
        return original(parameters, *args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip_and_record)
    return captured


def plain_policy_gradient(model, batch, mode, max_len):
    """Reference: one padded batch, full logits, loss = aggregate(-A * logp); clip inactive at mu = 1."""
    input_ids, attention_mask, completion_mask = collate(batch.prompt_ids, batch.completion_ids, 0, torch.device("cpu"))
    model.zero_grad()
    logprobs = model(input_ids=input_ids, attention_mask=attention_mask).logits.log_softmax(-1)
    token_logprobs = logprobs[:, :-1].gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    rows = [token_logprobs[b][completion_mask[b, 1:].bool()] for b in range(len(batch))]
    logp = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
    mask = torch.nn.utils.rnn.pad_sequence([torch.ones(len(r)) for r in rows], batch_first=True)
    aggregate_loss(-batch.advantages.unsqueeze(1) * logp, mask, mode, max_len).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    return grads


# ----------------------------------------------------------------------------- pure helpers
def test_plan_micro_batches_respects_budget():
    lengths = [5, 30, 12, 7, 7, 40, 3, 25]
    groups = plan_micro_batches(lengths, token_budget=50)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for group in groups:
        padded = len(group) * max(lengths[i] for i in group)
        assert padded <= 50 or len(group) == 1
    assert plan_micro_batches([80, 10], token_budget=50) == [[0], [1]]  # too long: alone


def test_auto_micro_batch_budget_follows_how_the_learner_computes(monkeypatch):
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert micro_batch_token_budget("auto", cpu, bf16=False) == MICRO_BATCH_TOKENS_FP32_CPU
    assert micro_batch_token_budget("auto", cpu, bf16=True) == MICRO_BATCH_TOKENS_BF16
    assert micro_batch_token_budget("auto", gpu, bf16=False) == MICRO_BATCH_TOKENS_BF16
    assert micro_batch_token_budget(2048, cpu, bf16=False) == 2048  # a number is taken as it is
    assert MICRO_BATCH_TOKENS_FP32_CPU < MICRO_BATCH_TOKENS_BF16  # fp32 activations: twice the bytes a token
    # The learner resolves "auto" (its default) with the precision it will compute in.
    assert PolicyLearner(tiny_model(), bf16=False).micro_batch_tokens == MICRO_BATCH_TOKENS_FP32_CPU
    monkeypatch.setattr("r1train.learner.bf16_autocast_supported", lambda device: True)
    assert PolicyLearner(tiny_model(), bf16=True).micro_batch_tokens == MICRO_BATCH_TOKENS_BF16
    assert PolicyLearner(tiny_model(), bf16=True, micro_batch_tokens=512).micro_batch_tokens == 512


def test_lr_schedules():
    assert [lr_factor(s, 2, 10, "constant") for s in range(4)] == [0.5, 1.0, 1.0, 1.0]
    assert lr_factor(2, 2, 10, "linear") == 1.0 and lr_factor(6, 2, 10, "linear") == 0.5
    assert lr_factor(10, 2, 10, "linear") == 0.0
    assert lr_factor(6, 2, 10, "cosine") == pytest.approx(0.5) and lr_factor(10, 2, 10, "cosine") == pytest.approx(0.0)


# ----------------------------------------------------------------------------- exact gradients
@pytest.mark.parametrize("mode", AGGREGATIONS)
def test_micro_batched_gradient_equals_plain_policy_gradient(mode, capture_gradients):
    """Token-budget micro-batches, chunked logprobs, zero-advantage skipping: same gradient as
    the plain policy gradient of the whole batch at once (mu = 1, so the clip is inactive)."""
    advantages = torch.tensor([0.5, -1.0, 0.0, 2.0, -0.3, 0.0], dtype=torch.float64)
    batch = toy_batch(advantages=advantages)
    model = tiny_model(torch.float64)
    expected = plain_policy_gradient(model, batch, mode, max_len=8)
    learner = PolicyLearner(model, lr=1e-3, micro_batch_tokens=16, bf16=False, logprob_chunk_size=3,
                            max_grad_norm=1e9)
    learner.train_on_batch(batch, LossSettings(loss_aggregation=mode, max_completion_length=8, tis_cap=None))
    assert len(capture_gradients) == 1
    for got, want in zip(capture_gradients[0], expected):
        assert torch.allclose(got, want, atol=1e-10)


def test_micro_batch_budget_does_not_change_gradient_with_all_terms(capture_gradients):
    """KL, TIS, entropy and mini-batches with stored old logprobs: the budget changes nothing."""
    batch = toy_batch(n=8, seed=3)
    batch.ref_logprobs = [torch.randn(len(c), dtype=torch.float64) * 0.1 - 5 for c in batch.completion_ids]
    batch.engine_logprobs = [torch.randn(len(c), dtype=torch.float64) * 0.1 - 5.5 for c in batch.completion_ids]
    settings = LossSettings(beta=0.04, tis_cap=2.0, entropy_coef=0.01, epsilon_high=0.28, dual_clip=3.0)
    gradients = []
    for budget in (8, 1000):
        learner = PolicyLearner(tiny_model(torch.float64), lr=1e-2, micro_batch_tokens=budget, bf16=False,
                                mini_batches=2, updates_per_batch=2)
        learner.train_on_batch(batch, settings)
        gradients.append(list(capture_gradients))
        capture_gradients.clear()
    assert len(gradients[0]) == 4
    for small, large in zip(*gradients):
        for got, want in zip(small, large):
            assert torch.allclose(got, want, atol=1e-10)


def test_sample_mask_drops_samples(capture_gradients):
    batch = toy_batch(seed=4)
    kept = TrainBatch(batch.prompt_ids[:4], batch.completion_ids[:4], batch.advantages[:4])
    batch.sample_mask = torch.tensor([True, True, True, True, False, False])
    gradients = []
    for b in (batch, kept):
        learner = PolicyLearner(tiny_model(torch.float64), lr=1e-3, bf16=False)
        learner.train_on_batch(b, LossSettings())
        gradients.append(capture_gradients.pop())
    for got, want in zip(*gradients):
        assert torch.allclose(got, want, atol=1e-12)


# ----------------------------------------------------------------------------- shared prompts
def grouped_batch(prompts=3, group_size=4, seed=5):
    """GRPO-shaped: every prompt repeated over its group, so the learner can pack, and every prompt
    starting alike (a system prompt), which unpadded rows run once."""
    g = torch.Generator().manual_seed(seed)
    prompt_ids, completion_ids = [], []
    for _ in range(prompts):
        prompt = [2, 3, 4] + torch.randint(1, 256, (int(torch.randint(1, 6, (1,), generator=g)),), generator=g).tolist()
        for _ in range(group_size):
            prompt_ids.append(prompt)
            completion_ids.append(torch.randint(1, 256, (int(torch.randint(1, 9, (1,), generator=g)),),
                                                generator=g).tolist())
    batch = TrainBatch(prompt_ids, completion_ids, torch.randn(len(prompt_ids), generator=g, dtype=torch.float64))
    batch.ref_logprobs = [torch.randn(len(c), dtype=torch.float64) * 0.1 - 5 for c in completion_ids]
    batch.engine_logprobs = [torch.randn(len(c), dtype=torch.float64) * 0.1 - 5.5 for c in completion_ids]
    return batch


def decoder_input_tokens(kwargs) -> int:
    """Tokens a decoder call runs: its token ids, or the embeddings looked up for them (a tied
    embedding is looked up outside the decoder when training: r1train/tied_embedding.py)."""
    if kwargs.get("input_ids") is not None:
        return kwargs["input_ids"].numel()
    return kwargs["inputs_embeds"].shape[:-1].numel()


@pytest.mark.parametrize("options", [{}, {"gradient_checkpointing": True}, {"use_lora": True, "lora_r": 4}],
                         ids=["full", "checkpointing", "lora"])
def test_shared_prompt_packing_changes_no_logprob_or_gradient(options, capture_gradients):
    """Packed and unpacked learners take the same steps (old logprobs, KL, TIS, entropy, mini-batches)
    and score the same logprobs, while the packed one runs fewer tokens through the decoder.
    Agreement is to fp32 rounding: Llama's RMSNorm computes in fp32 even in a float64 model."""
    batch = grouped_batch()
    settings = LossSettings(beta=0.04, tis_cap=2.0, entropy_coef=0.01, epsilon_high=0.28)
    runs = {}
    for share_prompts, unpadded_rows in ((True, True), (True, False), (False, True)):
        model = tiny_model(torch.float64)
        decoder_tokens = []
        model.get_decoder().register_forward_pre_hook(
            lambda module, args, kwargs: decoder_tokens.append(decoder_input_tokens(kwargs)), with_kwargs=True)
        learner = PolicyLearner(model, lr=1e-2, micro_batch_tokens=64, bf16=False, mini_batches=2,
                                updates_per_batch=2, share_prompts=share_prompts, unpadded_rows=unpadded_rows,
                                **options)
        learner.train_on_batch(batch, settings)
        logprobs = learner.compute_logprobs(batch.prompt_ids, batch.completion_ids)
        reference = learner.compute_logprobs(batch.prompt_ids, batch.completion_ids,
                                             disable_adapters=learner.use_lora)
        runs[share_prompts, unpadded_rows] = (list(capture_gradients), logprobs, reference, sum(decoder_tokens))
        capture_gradients.clear()
    plain_grads, plain_lp, plain_ref, plain_tokens = runs[False, True]
    packed_tokens, unpadded_tokens = runs[True, False][3], runs[True, True][3]
    assert unpadded_tokens < packed_tokens < 0.8 * plain_tokens  # padding and the shared prompt start once
    for packed_grads, packed_lp, packed_ref, _ in (runs[True, False], runs[True, True]):
        assert len(packed_grads) == len(plain_grads) == 4
        for packed_step, plain_step in zip(packed_grads, plain_grads):
            for got, want in zip(packed_step, plain_step):
                assert torch.allclose(got, want, rtol=1e-5, atol=1e-7)
        for got, want in zip(packed_lp + packed_ref, plain_lp + plain_ref):
            assert torch.allclose(got, want, atol=1e-6)


def test_mlps_that_keep_fewer_activations_take_the_same_steps(capture_gradients):
    """The gated MLPs' recomputed products (r1train/mlp_recompute.py) leave every gradient and
    every weight bit for bit as autograd's own, through old logprobs, KL, TIS, entropy and
    mini-batches."""
    batch = grouped_batch()
    settings = LossSettings(beta=0.04, tis_cap=2.0, entropy_coef=0.01, epsilon_high=0.28)
    runs = {}
    for recompute in (True, False):
        learner = PolicyLearner(tiny_model(), lr=1e-2, micro_batch_tokens=64, bf16=False, mini_batches=2,
                                updates_per_batch=2, recompute_mlp_products=recompute)
        assert learner.recomputed_mlps == (2 if recompute else 0)
        metrics = learner.train_on_batch(batch, settings)
        runs[recompute] = (list(capture_gradients), [p.detach().clone() for p in learner.model.parameters()], metrics)
        capture_gradients.clear()
    (grads, weights, metrics), (plain_grads, plain_weights, plain_metrics) = runs[True], runs[False]
    assert len(grads) == len(plain_grads) == 4
    for step, plain_step in zip(grads, plain_grads):
        assert all(torch.equal(got, want) for got, want in zip(step, plain_step))
    assert all(torch.equal(got, want) for got, want in zip(weights, plain_weights))
    assert metrics["loss"] == plain_metrics["loss"]


def test_a_separate_reference_model_is_packed_for_its_own_attention():
    """The frozen reference may use another attention implementation than the policy: its rows
    get its kind of mask (additive for eager), or none where it cannot take packed rows."""
    batch = grouped_batch()
    learner = PolicyLearner(tiny_model(torch.float64), bf16=False)
    plain = PolicyLearner(tiny_model(torch.float64), bf16=False, share_prompts=False)
    for attention in ("eager", "flash_attention_2"):
        reference = tiny_model(torch.float64, seed=1)
        reference.config._attn_implementation = attention
        packs = learner.scorer.plan(batch.prompt_ids, batch.completion_ids, list(range(len(batch))), reference)
        assert max(len(members) for group in packs for members in group) == (4 if attention == "eager" else 1)
        if attention == "eager":
            got = learner.compute_logprobs(batch.prompt_ids, batch.completion_ids, model=reference)
            want = plain.compute_logprobs(batch.prompt_ids, batch.completion_ids, model=reference)
            for a, b in zip(got, want):
                assert torch.allclose(a, b, atol=1e-6)


# ----------------------------------------------------------------------------- training
def test_training_changes_parameters_and_reports_metrics():
    model = tiny_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    learner = PolicyLearner(model, lr=1e-3, micro_batch_tokens=32, mini_batches=2, updates_per_batch=2,
                            gradient_checkpointing=True, lr_schedule="cosine", warmup_steps=1, total_steps=12)
    batch = toy_batch(n=8)
    for _ in range(3):
        metrics = learner.train_on_batch(batch, LossSettings(epsilon_high=0.28))
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert len(changed) == len(before)
    for key in ("loss", "grad_norm", "lr", "throughput/learn_tokens_per_s", "nan_skipped_steps", "entropy",
                "clip/low_frac", "clip/high_frac", "clip/dual_frac", "ratio/mean", "ratio/max"):
        assert math.isfinite(metrics[key]), key
    assert metrics["nan_skipped_steps"] == 0 and metrics["entropy"] > 0
    assert metrics["ratio/max"] > 1.0  # later passes see a policy that moved away from the old one
    assert 0 < metrics["lr"] < 1e-3  # cosine decay after warm-up


def test_rewarded_completion_becomes_more_likely():
    """GRPO on a fixed toy task: completion [7, 8, 9] always earns reward 1, the others 0."""
    model = tiny_model()
    learner = PolicyLearner(model, lr=3e-3)
    prompt = [1, 2, 3]
    candidates = [[7, 8, 9], [10, 11, 12], [13, 14], [15]]
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0])

    def rewarded_logprob():
        return learner.compute_logprobs([prompt], [candidates[0]])[0].sum().item()

    start = rewarded_logprob()
    advantages, _ = compute_group_advantages(rewards, group_size=4)
    for _ in range(5):
        learner.train_on_batch(TrainBatch([prompt] * 4, candidates, advantages), LossSettings())
    assert rewarded_logprob() > start + 1.0


def test_non_finite_loss_skips_the_step():
    model = tiny_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    learner = PolicyLearner(model, lr=1e-3)
    batch = toy_batch(advantages=torch.tensor([1.0, float("nan"), 0.5, -1.0, 0.2, -0.2]))
    metrics = learner.train_on_batch(batch, LossSettings())
    assert metrics["nan_skipped_steps"] == 1 and learner.consecutive_nan_steps == 1
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    learner.train_on_batch(toy_batch(), LossSettings())
    assert learner.consecutive_nan_steps == 0


def test_state_dict_round_trip():
    learner = PolicyLearner(tiny_model(), lr=1e-3, lr_schedule="linear", warmup_steps=2, total_steps=10)
    learner.train_on_batch(toy_batch(), LossSettings())
    state = learner.state_dict()
    fresh = PolicyLearner(tiny_model(), lr=1e-3, lr_schedule="linear", warmup_steps=2, total_steps=10)
    fresh.load_state_dict(state)
    assert fresh.optimizer.param_groups[0]["lr"] == learner.optimizer.param_groups[0]["lr"]
    assert fresh.scheduler.last_epoch == 1
    first = next(iter(fresh.optimizer.state.values()))["exp_avg"]
    assert torch.equal(first, next(iter(learner.optimizer.state.values()))["exp_avg"])


# ----------------------------------------------------------------------------- LoRA
def test_lora_trains_adapters_and_merges_under_base_names():
    base_names = set(tiny_model().state_dict())
    model = tiny_model()
    # fp32 throughout: merging is exact there, while bf16 autocast rounds merged and unmerged
    # weights differently (about 1e-3 in the logprobs).
    learner = PolicyLearner(model, lr=1e-2, use_lora=True, lora_r=4, bf16=False)
    trainable = [n for n, p in learner.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    frozen_before = {n: p.detach().clone() for n, p in learner.model.named_parameters()
                     if not p.requires_grad}
    batch = toy_batch()
    initial = learner.compute_logprobs(batch.prompt_ids, batch.completion_ids)
    for _ in range(2):
        learner.train_on_batch(batch, LossSettings())
    for name, p in learner.model.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, frozen_before[name]), name
    assert set(learner.trainable_state()) == set(trainable)

    merged = dict(checkpoint_weights(learner.model, torch.float32))
    assert set(merged) == base_names  # includes the tied lm_head.weight
    assert torch.equal(merged["lm_head.weight"], merged["model.embed_tokens.weight"])
    plain = tiny_model()
    plain.load_state_dict(merged)
    plain_learner = PolicyLearner(plain, lr=1e-3, bf16=False)
    trained = learner.compute_logprobs(batch.prompt_ids, batch.completion_ids)
    for a, b in zip(plain_learner.compute_logprobs(batch.prompt_ids, batch.completion_ids), trained):
        assert torch.allclose(a, b, atol=1e-5)
    # With adapters disabled the LoRA model is the frozen initial policy: the reference model.
    reference = learner.compute_logprobs(batch.prompt_ids, batch.completion_ids, disable_adapters=True)
    assert all(torch.allclose(r, i, atol=1e-6) for r, i in zip(reference, initial))
    assert not all(torch.allclose(t, i, atol=1e-3) for t, i in zip(trained, initial))


@pytest.mark.parametrize("count, parts, sizes", [
    (10, 4, [3, 3, 2, 2]),  # was [3, 3, 3, 1]: a 1-sample mini-batch taking a full-rate step
    (9, 4, [3, 2, 2, 2]),  # was [3, 3, 3]: one optimiser step fewer than the schedule counts on
    (8, 4, [2, 2, 2, 2]),
    (3, 4, [1, 1, 1]),  # fewer samples than parts: one part each
    (0, 4, [0]),
])
def test_mini_batches_are_as_even_as_possible(count, parts, sizes):
    from r1train.batching import split_evenly

    split = split_evenly(list(range(count)), parts)
    assert [len(part) for part in split] == sizes
    assert [i for part in split for i in part] == list(range(count))  # contiguous, in order
