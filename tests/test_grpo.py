"""End to end: the GRPO trainer on a tiny model, through the same entry point as `r1train run`."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from r1train.config import recipe_from_dict
from r1train.grpo import GRPOTrainer, run_grpo
from r1train.models import load_model
from r1train.tracking import read_metrics


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture()
def text_length_reward(tmp_path) -> dict:
    """A custom reward (loaded from a file, as a user's would be) that varies within every group, so
    a random tiny model still gets non-zero advantages."""
    path = tmp_path / "text_length.py"
    path.write_text("def text_length(completions, **columns):\n    return [len(t) / 100 for t in completions]\n")
    return {"path": str(path), "function": "text_length"}


@pytest.fixture()
def addition_files(tmp_path):
    rows = [{"question": f"What is {a} + {b}?", "answer": str(a + b)} for a in range(1, 5) for b in range(1, 4)]
    return write_jsonl(tmp_path / "train.jsonl", rows), write_jsonl(tmp_path / "test.jsonl", rows[:3])


def tiny_recipe(tmp_path, model_dir, train, evaluation=None, **sections):
    raw = {
        "run_name": "tiny", "output_dir": str(tmp_path / "runs"), "seed": 0,
        "model": {"name": str(model_dir)},
        "data": {"train": train, "eval": evaluation, "max_prompt_tokens": 200},
        "rollout": {"backend": "hf", "group_size": 4, "prompts_per_step": 2, "max_new_tokens": 8},
        "rewards": [{"name": "accuracy"}, {"name": "tag_count", "weight": 0.5}, {"name": "cosine_length", "weight": 0.1}],
        "training": {"steps": 2, "learning_rate": 1e-3, "checkpoint_every": 1, "bf16": False},
        "evaluation": {"max_examples": 3, "samples": 2, "greedy": True},
        "logging": {"tensorboard": True, "progress": False},
    }
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return recipe_from_dict(raw)


def test_grpo_run_changes_parameters_and_logs_every_promised_metric(tmp_path, tiny_model_dir, addition_files,
                                                                  text_length_reward):
    train, test = addition_files
    recipe = tiny_recipe(tmp_path, tiny_model_dir, train, test,
                         rewards=[{"name": "accuracy"}, {"name": "tag_count", "weight": 0.5}, text_length_reward])
    run_dir = recipe.run_dir
    final = run_grpo(recipe, run_dir)

    before = load_file(str(Path(tiny_model_dir) / "model.safetensors"))
    after = load_file(str(final / "model.safetensors"))
    changed = [name for name in before if not torch.equal(before[name], after[name])]
    assert changed, "no parameter changed after two GRPO steps"

    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2]  # evaluation before training, then one row per step
    assert "eval/accuracy" in rows[0] and "eval/accuracy" in rows[-1]
    for key in ("reward/mean", "reward/std", "reward/accuracy", "reward/tag_count", "reward/text_length",
                "accuracy", "format_rate",
                "completion_len/mean", "completion_len/max", "completion_len/truncated_frac",
                "groups/zero_variance_frac", "clip/low_frac", "clip/high_frac", "entropy", "ratio/mean",
                "grad_norm", "lr", "time/generate", "time/score", "time/reference", "time/learn", "time/wake", "time/sync",
                "time/step", "throughput/gen_tokens_per_s", "throughput/learn_tokens_per_s",
                "sync/logprob_abs_diff_mean", "rewards/errors", "nan_skipped_steps"):
        assert key in rows[1], key
    # The HF engine generates with the learner's own weights: its logprobs agree up to fp32 noise.
    assert rows[1]["sync/logprob_abs_diff_mean"] < 1e-3
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert {s["step"] for s in samples} == {1, 2}
    assert {"prompt", "completion", "reward", "rewards", "answer"} <= set(samples[0])
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step-000001", "step-000002"]


def test_kl_and_lora_run_with_the_adapter_free_reference(tmp_path, tiny_model_dir, addition_files,
                                                        text_length_reward):
    train, _ = addition_files
    recipe = tiny_recipe(tmp_path, tiny_model_dir, train, algorithm={"beta": 0.1}, rewards=[text_length_reward],
                         model={"name": str(tiny_model_dir), "lora": {"enabled": True, "r": 4}},
                         training={"steps": 1, "learning_rate": 1e-2, "bf16": False})
    trainer = GRPOTrainer(recipe, recipe.run_dir)
    assert trainer.reference is None  # LoRA: the base model under disabled adapters is the reference
    # Fresh adapters are zero (B = 0), where policy and reference agree whether or not the adapters are
    # switched off; non-zero ones tell a reference that is the base model from one that is the policy.
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in trainer.learner.model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    prompts, completions = [[1, 2, 3, 4]], [[5, 6, 7, 8, 9]]
    base = load_model(str(tiny_model_dir)).to(trainer.learner.device)  # where the learner computes (a GPU where there is one)
    reference = trainer.learner.compute_logprobs(prompts, completions, disable_adapters=True)[0]
    policy = trainer.learner.compute_logprobs(prompts, completions)[0]
    torch.testing.assert_close(reference, trainer.learner.compute_logprobs(prompts, completions, model=base)[0])
    assert (policy - reference).abs().max() > 1e-2  # the adapters change the policy

    metrics, _ = trainer.step()
    assert metrics["kl"] > 1e-3  # measured against the base model, not the adapted policy
    assert metrics["time/reference"] > 0


def test_always_rewarded_completion_becomes_more_likely(tmp_path, tiny_model_dir, make_tiny_model, tokenizer):
    """A fixed toy task: one prompt, one-token completions, and only one token (the model's second
    most likely first token) is ever rewarded. GRPO must make that token more probable."""
    from rewards import register
    from r1train.prompts import encode_prompt

    question = "Say one word."
    prompt = encode_prompt(tokenizer, question, "{question}")
    with torch.no_grad():
        first_token_logits = make_tiny_model(seed=0)(torch.tensor([prompt])).logits[0, -1]
    target = first_token_logits.topk(2).indices[1].item()

    @register("test_grpo_prefers_one_token")
    def prefers_one_token(completions, **columns):
        return [1.0 if text == tokenizer.decode([target], skip_special_tokens=True) else 0.0 for text in completions]

    train = write_jsonl(tmp_path / "one.jsonl", [{"question": question}] * 4)
    recipe = tiny_recipe(tmp_path, tiny_model_dir, train,
                         data={"train": train, "prompt_template": "{question}", "max_prompt_tokens": 200},
                         rewards=[{"name": "test_grpo_prefers_one_token"}],
                         rollout={"backend": "hf", "group_size": 8, "prompts_per_step": 2, "max_new_tokens": 1,
                                  "top_k": 4, "stop": []},
                         algorithm={"tis_cap": None},  # top-k sampling rules out the importance correction
                         training={"steps": 8, "learning_rate": 1e-3, "bf16": False})
    trainer = GRPOTrainer(recipe, recipe.run_dir)

    def probability_of_target() -> float:
        return trainer.learner.compute_logprobs([prompt], [[target]])[0].exp().item()

    start = probability_of_target()
    rewards = []
    for _ in range(recipe.training.steps):
        metrics, _ = trainer.step()
        rewards.append(metrics["reward/mean"])
    assert probability_of_target() > 2 * start
    assert sum(rewards[-2:]) / 2 > sum(rewards[:2]) / 2


def test_completions_with_non_finite_engine_logprobs_are_left_out_not_the_whole_step(
        tmp_path, tiny_model_dir, addition_files, text_length_reward):
    """An engine that returns NaN logprobs for some completions (vLLM's CPU build did, reading
    leftovers of freed memory) costs those samples, not the step: the others still train."""
    train, _ = addition_files
    recipe = tiny_recipe(tmp_path, tiny_model_dir, train, rewards=[text_length_reward],
                         training={"steps": 1, "learning_rate": 1e-2, "bf16": False})
    trainer = GRPOTrainer(recipe, recipe.run_dir)
    generate = trainer.engine.generate

    def generate_with_two_broken(*args, **kwargs):
        completions = generate(*args, **kwargs)
        for completion in completions[:2]:
            completion.logprobs = [float("nan")] * len(completion.logprobs)
        return completions

    trainer.engine.generate = generate_with_two_broken
    before = {name: p.detach().clone() for name, p in trainer.learner.model.named_parameters()}
    metrics, _ = trainer.step()
    assert metrics["rollout/non_finite_logprob_samples"] == 2
    assert metrics["nan_skipped_steps"] == 0 and trainer.learner.consecutive_nan_steps == 0
    assert any(not torch.equal(p, before[name]) for name, p in trainer.learner.model.named_parameters())
    assert metrics["sync/logprob_abs_diff_mean"] < 1e-3  # the broken samples are not compared


@pytest.mark.parametrize("low_memory", [False, True])
def test_cpu_low_memory_alone_switches_the_allocator_setting(tmp_path, tiny_model_dir, addition_files, monkeypatch,
                                                             low_memory):
    calls = []
    monkeypatch.setattr("r1train.grpo.map_large_allocations", lambda: calls.append(True) or True)
    recipe = tiny_recipe(tmp_path, tiny_model_dir, addition_files[0],
                         training={"steps": 1, "bf16": False, "cpu_low_memory": low_memory})
    GRPOTrainer(recipe, recipe.run_dir)
    assert calls == ([True] if low_memory and not torch.cuda.is_available() else [])


def test_a_run_without_signal_warns_once_and_logs_thinking_and_the_no_think_and_per_value_evaluation(
        tmp_path, tiny_model_dir, addition_files, monkeypatch, caplog):
    import functools
    import logging

    import r1train.grpo
    from r1train.diagnostics import StallWatch

    # A random tiny model never answers right: with accuracy as the only reward, every group's
    # rewards are all equal. A two-step window lets a two-step run show the warning.
    monkeypatch.setattr(r1train.grpo, "StallWatch", functools.partial(StallWatch, window=2))
    train, test = addition_files
    recipe = tiny_recipe(tmp_path, tiny_model_dir, train, test, rewards=[{"name": "accuracy"}])
    recipe.evaluation.no_think = True
    recipe.evaluation.by = "answer"  # the three test questions' answers are 2, 3 and 4
    with caplog.at_level(logging.WARNING, logger="r1train"):
        run_grpo(recipe, recipe.run_dir)
    stalls = [r.getMessage() for r in caplog.records if "all-equal rewards" in r.getMessage()]
    assert len(stalls) == 1 and stalls[0].startswith("step 2:") and "algorithm.dynamic_sampling" in stalls[0]
    rows = read_metrics(recipe.run_dir / "metrics.jsonl")
    assert rows[1]["groups/zero_variance_frac"] == 1.0
    assert 0.0 <= rows[1]["think_nonempty_frac"] <= 1.0 and rows[1]["think_len"] >= 0.0
    for key in ("eval/no_think_accuracy", "eval/no_think_greedy_accuracy", "eval/thinking_gain",
                "eval/think_nonempty_frac", "eval/think_len", "eval/accuracy/answer=2", "eval/greedy_accuracy/answer=4"):
        assert key in rows[0] and key in rows[-1], key


def test_dynamic_sampling_with_no_informative_group_trains_on_its_last_draw(tmp_path, tiny_model_dir, addition_files):
    """A constant reward: every group is uninformative on every retry. The step then trains on the
    last draw as it came (no extra generation) and says so in its metrics."""
    train, _ = addition_files
    (tmp_path / "constant.py").write_text("def constant(completions, **columns):\n    return [1.0] * len(completions)\n")
    recipe = tiny_recipe(tmp_path, tiny_model_dir, train, rewards=[{"path": str(tmp_path / "constant.py"),
                                                                    "function": "constant"}],
                         algorithm={"dynamic_sampling": True, "max_sampling_retries": 1},
                         training={"steps": 1, "bf16": False})
    trainer = GRPOTrainer(recipe, recipe.run_dir)
    generate, draws = trainer.engine.generate, []

    def counting_generate(*args, **kwargs):
        draws.append(generate(*args, **kwargs))
        return draws[-1]

    trainer.engine.generate = counting_generate
    trainer.step()
    rollouts = trainer.collect_rollouts(2)
    assert len(draws) == 2 + 2  # the first try and one retry, per step; nothing more
    assert [c.token_ids for c in rollouts.completions] == [c.token_ids for c in draws[-1]]
    assert rollouts.metrics["sampling/unfiltered_fallback"] == 1
    assert rollouts.metrics["sampling/prompts_drawn"] == 4 and rollouts.metrics["sampling/groups_dropped"] == 4
