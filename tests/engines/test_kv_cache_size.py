"""`rollout.vllm_kv_cache_gib: auto`: the cache the engine's largest batch can fill, between two whole-length
sequences and the 2 GiB fixed default it replaced; a number passes through; bad values are refused."""
from __future__ import annotations

import pytest
from transformers import LlamaConfig, Qwen2Config

from r1train.config import recipe_from_dict
from r1train.config_parsing import ConfigError
from r1train.engines.kv_cache_size import (AUTO_KV_CACHE_MAX_GIB, batch_kv_cache_bytes, kv_bytes_per_token,
                                           recipe_kv_cache_gib)
from r1train.evaluation import EVAL_CHUNK_COMPLETIONS

GIB = 1024**3
# The embedded default model's attention: 30 layers, 9 query heads, 3 KV heads of 64 (576 / 9).
SMOLLM_135M = LlamaConfig(num_hidden_layers=30, hidden_size=576, num_attention_heads=9, num_key_value_heads=3)


def test_bytes_per_token_are_keys_and_values_of_every_layer():
    assert kv_bytes_per_token(SMOLLM_135M, 4) == 2 * 30 * 3 * 64 * 4
    assert kv_bytes_per_token(SMOLLM_135M, 2) == 2 * 30 * 3 * 64 * 2
    # A head size given apart from hidden_size / heads is the one used.
    qwen = Qwen2Config(num_hidden_layers=2, hidden_size=256, num_attention_heads=4, num_key_value_heads=2)
    qwen.head_dim = 128
    assert kv_bytes_per_token(qwen, 2) == 2 * 2 * 2 * 128 * 2


def test_a_config_without_an_attention_layout_gives_none():
    class NoAttention:
        num_hidden_layers = 4

    assert kv_bytes_per_token(NoAttention(), 2) is None


def test_the_main_recipe_shape_needs_each_groups_prompt_once_and_each_samples_completion():
    per_token = kv_bytes_per_token(SMOLLM_135M, 4)
    size = batch_kv_cache_bytes(per_token, prompts=16, sequences=16 * 8, max_prompt_tokens=256, max_new_tokens=64,
                                block_tokens=32)
    blocks = 16 * 8 + 16 * 8 * (2 + 1)  # 8 prompt blocks a group; 2 completion blocks and a partial one a sample
    assert size == blocks * 32 * per_token
    assert 0.6 * GIB < size < 0.8 * GIB  # in fp32: a third of the 2 GiB the engine reserved before


def test_the_cache_holds_two_whole_sequences_at_least():
    size = batch_kv_cache_bytes(1000, prompts=1, sequences=2, max_prompt_tokens=2000, max_new_tokens=8,
                                block_tokens=32)
    assert size == 2 * 63 * 32 * 1000  # 2008 tokens fill 63 blocks; the batch alone would need 63 + 2 * 2


def test_the_cache_is_never_larger_than_the_old_default():
    per_token = kv_bytes_per_token(SMOLLM_135M, 4)
    size = batch_kv_cache_bytes(per_token, prompts=64, sequences=64 * 16, max_prompt_tokens=512, max_new_tokens=4096,
                                block_tokens=16)
    assert size == int(AUTO_KV_CACHE_MAX_GIB * GIB)


def test_a_recipe_number_passes_through(tiny_model_dir):
    assert recipe_kv_cache_gib(recipe_from_dict({"rollout": {"vllm_kv_cache_gib": 3}}), tiny_model_dir, 4, 32) == 3.0


@pytest.mark.parametrize("rollout, rejection_samples, sequences", [
    ({"prompts_per_step": 16, "group_size": 8}, 8, 128),  # the default shape: every batch 128 sequences
    ({"prompts_per_step": 16, "group_size": 16}, 8, 256),  # the rollout batch is the largest
    ({"prompts_per_step": 16, "group_size": 4}, 32, 512),  # a rejection sampling chunk is
    ({"prompts_per_step": 2, "group_size": 4}, 4, EVAL_CHUNK_COMPLETIONS),  # an evaluation chunk is
])
def test_auto_sizes_the_cache_for_the_largest_batch_the_engine_runs(tiny_model_dir, rollout, rejection_samples,
                                                                      sequences):
    from transformers import AutoConfig

    recipe = recipe_from_dict({"data": {"max_prompt_tokens": 100}, "rollout": {"max_new_tokens": 20, **rollout},
                               "rejection": {"samples": rejection_samples}})
    assert recipe.rollout.vllm_kv_cache_gib == "auto"  # the default
    per_token = kv_bytes_per_token(AutoConfig.from_pretrained(tiny_model_dir), 4)
    expected = batch_kv_cache_bytes(per_token, prompts=rollout["prompts_per_step"], sequences=sequences,
                                    max_prompt_tokens=100, max_new_tokens=20, block_tokens=32)
    assert recipe_kv_cache_gib(recipe, tiny_model_dir, 4, 32) == expected / GIB


@pytest.mark.parametrize("value", [0, -1, "big", True, None])
def test_a_bad_size_is_refused_naming_the_key(value):
    with pytest.raises(ConfigError, match=r"rollout.vllm_kv_cache_gib: must be 'auto' or a positive number"):
        recipe_from_dict({"rollout": {"vllm_kv_cache_gib": value}})
