"""The reward_model reward on a tiny, randomly initialised LlamaForSequenceClassification."""
from __future__ import annotations

import json

import pytest
import torch

from rewards import RewardSpecError, resolve_reward
from rewards.reward_model import placement

PROMPTS = ["Write one sentence about the sea.", "Write a haiku about snow.", "Name a colour."]
COMPLETIONS = ["The sea is wide.", "Snow falls\nsoftly on\nthe roofs.", "Blue, but a much longer answer here."]


def tiny_classifier(tokenizer, num_labels: int = 1):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, num_labels=num_labels,
                         pad_token_id=tokenizer.pad_token_id, initializer_range=0.3)
    torch.manual_seed(0)
    return LlamaForSequenceClassification(config).eval()


@pytest.fixture()
def reward_model_dir(tmp_path, tokenizer):
    folder = tmp_path / "rm"
    tiny_classifier(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def one_by_one(folder, texts_ids: list[list[int]]) -> list[float]:
    """Each sequence alone (no padding at all), where and in the dtype the reward scores: the scores
    batching must reproduce."""
    from transformers import AutoModelForSequenceClassification

    device, dtype = placement()
    model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=dtype).to(device).eval()
    with torch.no_grad():
        return [model(input_ids=torch.tensor([ids], device=device)).logits[0, 0].float().item() for ids in texts_ids]


def same_scores(scores: list[float], expected: list[float]) -> bool:
    """Equal up to the dtype's rounding: padded batches and single rows take different kernels."""
    if placement()[1] == torch.float32:
        return scores == pytest.approx(expected, abs=1e-4)
    return scores == pytest.approx(expected, rel=3e-2, abs=3e-2)


def test_scores_are_the_logit_of_the_chat_rendered_pair(reward_model_dir, tokenizer):
    _, reward = resolve_reward({"name": "reward_model", "kwargs": {"path": str(reward_model_dir), "batch_size": 2}})
    scores = reward(COMPLETIONS, prompts=PROMPTS, answer=[None] * 3)

    rendered = [tokenizer.apply_chat_template([{"role": "user", "content": p}, {"role": "assistant", "content": c}],
                                              tokenize=False) for p, c in zip(PROMPTS, COMPLETIONS)]
    assert "Write a haiku about snow." in rendered[1] and "Snow falls" in rendered[1]
    expected = one_by_one(reward_model_dir, [tokenizer(t, add_special_tokens=False)["input_ids"] for t in rendered])
    # Batches of 2 pad the shorter pair: padding must not move any score.
    assert same_scores(scores, expected)
    assert len(set(round(s, 4) for s in scores)) == 3  # a random model still tells them apart


def test_a_tokenizer_without_chat_template_scores_a_text_pair(tmp_path, tokenizer):
    folder = tmp_path / "rm-plain"
    tiny_classifier(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    settings = json.loads((folder / "tokenizer_config.json").read_text())
    settings.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))
    (folder / "chat_template.jinja").unlink(missing_ok=True)

    _, reward = resolve_reward({"name": "reward_model", "kwargs": {"path": str(folder)}})
    scores = reward(COMPLETIONS[:2], prompts=PROMPTS[:2])
    expected = one_by_one(folder, [tokenizer(p, c)["input_ids"] for p, c in zip(PROMPTS[:2], COMPLETIONS[:2])])
    assert same_scores(scores, expected)


@pytest.mark.parametrize("case, message", [
    ("missing", "has no config.json"),  # a folder that is not a model
    ("two_labels", "has 2 outputs"),  # a classifier, not a reward model
])
def test_bad_folders_fail_when_the_recipe_is_resolved(tmp_path, tokenizer, case, message):
    folder = tmp_path / case
    if case == "two_labels":
        tiny_classifier(tokenizer, num_labels=2).save_pretrained(folder)
    with pytest.raises(RewardSpecError, match=message) as error:
        resolve_reward({"name": "reward_model", "kwargs": {"path": str(folder)}})
    assert "\n" not in str(error.value)


def test_prompts_column_is_required(reward_model_dir):
    _, reward = resolve_reward({"name": "reward_model", "kwargs": {"path": str(reward_model_dir)}})
    with pytest.raises(KeyError, match="prompts"):
        reward(["x"])
