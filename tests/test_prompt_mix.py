"""Mixing general prompts into RL batches: the sampler's ratio and resumability, and rewards scoped
by `applies_to`."""
from __future__ import annotations

import asyncio
import re

import pytest

from r1train.config import ConfigError, RewardSpec, recipe_from_dict
from r1train.data import PromptSampler
from r1train.prompt_mix import MixedPromptSampler, general_count, tag_sources
from r1train.reward_scope import scope_reward
from r1train.scoring import build_scorer

REASONING = [{"question": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(10)]
GENERAL = [{"question": f"Write about topic {i}.", "topic": i} for i in range(6)]


@pytest.mark.parametrize("size, ratio, expected", [
    (8, 0.25, 2),  # exact
    (8, 0.0, 0),  # no mixing
    (3, 0.5, 2),  # 1.5 rounds up
    (1, 0.4, 0),  # 0.4 rounds down: a batch of one stays a reasoning prompt
    (4, 0.99, 4),  # a ratio near 1 may fill the batch, never overfill it
])
def test_general_count(size, ratio, expected):
    assert general_count(size, ratio) == expected


@pytest.mark.parametrize("size, ratio", [(1, 0.6), (2, 0.5), (3, 0.5), (7, 0.3), (8, 0.7), (5, 0.0)])
def test_a_batch_holds_every_drawn_prompt_once(size, ratio):
    sampler, _, _ = mixed(ratio=ratio)
    batch = sampler.next_batch(size)
    general = [row for row in batch if row["prompt_source"] == "general"]
    assert len(batch) == size and len(general) == general_count(size, ratio)
    assert len({row["question"] for row in batch}) == size


def mixed(ratio=0.25, seed=0):
    reasoning = [dict(row) for row in REASONING]
    general = tag_sources(reasoning, GENERAL)
    return MixedPromptSampler(PromptSampler(reasoning, seed), PromptSampler(general, seed), ratio), reasoning, general


def test_rows_of_both_sources_share_their_columns_and_name_their_source():
    sampler, reasoning, general = mixed()
    assert all(set(row) == {"question", "answer", "topic", "prompt_source"} for row in reasoning + general)
    assert {row["prompt_source"] for row in reasoning} == {"reasoning"}
    assert {row["prompt_source"] for row in general} == {"general"}
    assert general[0]["answer"] is None and reasoning[0]["topic"] is None
    assert GENERAL[0] == {"question": "Write about topic 0.", "topic": 0}  # the loaded rows are not changed


def test_every_batch_holds_the_ratio_and_each_source_walks_its_own_epochs():
    sampler, _, _ = mixed(ratio=0.25)
    batches = [sampler.next_batch(8) for _ in range(5)]
    # Spread out, so a prefix of the batch (the logged samples) holds both kinds.
    assert all([i for i, row in enumerate(batch) if row["prompt_source"] == "general"] == [2, 6] for batch in batches)
    general_drawn = [row["question"] for batch in batches for row in batch if row["prompt_source"] == "general"]
    # 10 general prompts drawn from 6: the first epoch is a permutation of all six.
    assert sorted(general_drawn[:6]) == sorted(row["question"] for row in GENERAL)
    assert sampler.state_dict() == {"reasoning": {"epoch": 2, "position": 10}, "general": {"epoch": 1, "position": 4}}


def test_a_restored_sampler_draws_what_the_uninterrupted_one_would():
    straight, _, _ = mixed()
    for _ in range(3):
        straight.next_batch(4)
    state = straight.state_dict()
    expected = [row["question"] for row in straight.next_batch(4)]

    resumed, _, _ = mixed()
    resumed.load_state_dict(state)
    assert [row["question"] for row in resumed.next_batch(4)] == expected
    with pytest.raises(ValueError, match="without data.general mixing"):
        resumed.load_state_dict({"epoch": 0, "position": 3})  # a checkpoint of an unmixed run


def test_a_scoped_reward_sees_only_its_rows_and_gives_none_elsewhere():
    seen = []

    def length(completions, **columns):
        seen.append((list(completions), {k: list(v) for k, v in columns.items()}))
        return [float(len(c)) for c in completions]

    columns = {"prompt_source": ["reasoning", "general", "general"], "answer": ["1", None, None],
               "prompts": ["p0", "p1", "p2"]}
    general_only = scope_reward(length, "general")
    assert general_only(["a", "bb", "ccc"], **columns) == [None, 2.0, 3.0]
    assert seen[-1] == (["bb", "ccc"], {"prompt_source": ["general", "general"], "answer": [None, None],
                                        "prompts": ["p1", "p2"]})
    assert scope_reward(length, "reasoning")(["a", "bb", "ccc"], **columns) == [1.0, None, None]
    assert scope_reward(length, "all")(["a", "bb", "ccc"], **columns) == [1.0, 2.0, 3.0]
    # Not called at all when no row is in scope; rows without a source column are reasoning prompts.
    calls = len(seen)
    assert general_only(["a"], prompt_source=["reasoning"]) == [None] and len(seen) == calls
    assert scope_reward(length, "reasoning")(["a", "bb"], answer=["1", "2"]) == [1.0, 2.0]
    assert general_only(["a", "bb"], answer=["1", "2"]) == [None, None]


def test_an_async_reward_keeps_working_when_scoped():
    async def constant(completions, **columns):
        return [0.5] * len(completions)

    result = scope_reward(constant, "general")(["a", "b"], prompt_source=["general", "reasoning"])
    assert asyncio.run(result) == [0.5, None]


def test_the_scorer_weights_each_prompt_by_the_rewards_that_judge_it(tmp_path):
    reward_file = tmp_path / "rewards_file.py"
    reward_file.write_text("def politeness(completions, **columns):\n"
                           "    return [1.0 if 'please' in c else 0.0 for c in completions]\n")
    scorer = build_scorer([
        RewardSpec(name="accuracy"),  # reasoning by default
        RewardSpec(path=str(reward_file), function="politeness", weight=2.0, applies_to="general"),
        RewardSpec(name="format", weight=0.5, applies_to="all"),
    ])
    texts = ["<think>x</think><answer>2</answer>", "<think>x</think><answer>please</answer>", "please"]
    result = scorer.score(texts, ["q0", "q1", "q2"], {"prompt_source": ["reasoning", "general", "general"],
                                                       "answer": ["2", None, None]})
    assert result.per_function == {"accuracy": [1.0, None, None], "politeness": [None, 1.0, 1.0],
                                   "format": [1.0, 1.0, 0.0]}
    assert result.total.tolist() == pytest.approx([1.5, 2.5, 2.0])
    assert result.metrics["reward/accuracy"] == 1.0 and result.errors == []


@pytest.mark.parametrize("rewards, message", [
    ([{"name": "accuracy", "applies_to": "generic"}], "rewards[0].applies_to: 'generic' is not one of"),
    ([{"name": "format", "applies_to": "general"}], "no reward has `applies_to: reasoning`"),
])
def test_applies_to_is_checked_when_the_recipe_loads(rewards, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        recipe_from_dict({"rewards": rewards})
