"""The KV cache a colocated vLLM engine reserves: `rollout.vllm_kv_cache_gib`, a size in GiB or "auto".

On a CPU vLLM allocates the whole cache with `torch.zeros` when the engine starts, so every byte of
it is resident from then on (in GRPO until the engine first sleeps, and for the whole stage in
evaluation and rejection sampling). A fixed default of 2 GiB made a small model's recipe pay for a
cache several times what its rollouts fill. "auto" reserves what the engine's largest batch can fill:

    blocks = prompts_per_step * ceil(max_prompt_tokens / block)              # a group's prompt, shared
           + sequences * (ceil(max_new_tokens / block) + 1)                  # each sample's tokens
    sequences = the most run at once: a rollout batch (prompts_per_step * group_size), a rejection
                sampling chunk (prompts_per_step * rejection.samples) or an evaluation chunk
                (EVAL_CHUNK_COMPLETIONS)

The prompt's full blocks are computed once per group (prefix caching); the `+ 1` holds a sample's
copy of the prompt's last, partial block and the block its completion starts in mid-way. vLLM gives
a sequence blocks for its actual length, so `max_prompt_tokens`, a bound, leaves room for an
evaluation's prompts too. It never gives less than two sequences of the engine's whole length
(vLLM refuses to start with less than one) nor more than AUTO_KV_CACHE_MAX_GIB, the fixed default
it replaced: on a GPU, long completions of a large model would otherwise ask for more memory than
before. A smaller cache than a batch needs costs time, not correctness: vLLM runs fewer sequences
at once and queues the rest.
"""
from __future__ import annotations

import math
from pathlib import Path

from r1train.evaluation import EVAL_CHUNK_COMPLETIONS

AUTO_KV_CACHE_MAX_GIB = 2.0
_GIB = 1024**3


def kv_bytes_per_token(model_config, dtype_bytes: int) -> int | None:
    """Bytes of keys and values one token holds across all layers, from a transformers config;
    None where the config does not spell out a plain attention layout (layers, KV heads, head size)."""
    config = model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config
    layers = getattr(config, "num_hidden_layers", None)
    heads = getattr(config, "num_attention_heads", None)
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None)
    if head_dim is None and heads and getattr(config, "hidden_size", None):
        head_dim = config.hidden_size // heads
    if not (layers and kv_heads and head_dim):
        return None
    return 2 * layers * kv_heads * head_dim * dtype_bytes


def batch_kv_cache_bytes(bytes_per_token: int, *, prompts: int, sequences: int, max_prompt_tokens: int,
                         max_new_tokens: int, block_tokens: int) -> int:
    """The cache a batch of `sequences` samples of `prompts` prompts can fill (the module's formula),
    between two whole-length sequences and AUTO_KV_CACHE_MAX_GIB."""
    prompt_blocks = math.ceil(max_prompt_tokens / block_tokens)
    sample_blocks = math.ceil(max_new_tokens / block_tokens) + 1
    blocks = prompts * prompt_blocks + sequences * sample_blocks
    two_sequences = 2 * math.ceil((max_prompt_tokens + max_new_tokens) / block_tokens)
    size = max(blocks, two_sequences) * block_tokens * bytes_per_token
    return min(size, int(AUTO_KV_CACHE_MAX_GIB * _GIB))


def recipe_kv_cache_gib(recipe, model_dir: str | Path, dtype_bytes: int, block_tokens: int) -> float:
    """`rollout.vllm_kv_cache_gib` as GiB: the recipe's number, or for "auto" the size above for the
    recipe's largest batch and the model in `model_dir` (AUTO_KV_CACHE_MAX_GIB where its config
    does not give the attention layout)."""
    rollout = recipe.rollout
    if rollout.vllm_kv_cache_gib != "auto":
        return float(rollout.vllm_kv_cache_gib)
    from transformers import AutoConfig

    per_token = kv_bytes_per_token(AutoConfig.from_pretrained(model_dir), dtype_bytes)
    if per_token is None:
        return AUTO_KV_CACHE_MAX_GIB
    prompts = rollout.prompts_per_step
    sequences = max(prompts * rollout.group_size, prompts * recipe.rejection.samples, EVAL_CHUNK_COMPLETIONS)
    size = batch_kv_cache_bytes(per_token, prompts=prompts, sequences=sequences,
                                max_prompt_tokens=recipe.data.max_prompt_tokens,
                                max_new_tokens=rollout.max_new_tokens, block_tokens=block_tokens)
    return size / _GIB
