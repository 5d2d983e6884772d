"""Every (rollout.backend, rollout.placement) pair a recipe can name either builds its engine from the
recipe and generates, or is refused by `r1train validate` in one line. (vllm, remote) needs running
workers and is built from a recipe in tests/test_rollout_workers.py."""
from __future__ import annotations

import importlib.util

import pytest
import yaml

from r1train.cli import main
from r1train.config import BACKENDS_BY_PLACEMENT, recipe_from_dict
from r1train.engines import ENGINE_BY_RECIPE
from r1train.engines.base import SamplingSettings
from r1train.engines import engine_from_recipe as engine_for
from r1train.engines.kv_cache_size import kv_bytes_per_token, recipe_kv_cache_gib


def recipe_for(model_dir, backend: str, placement: str = "colocate", **rollout):
    return recipe_from_dict({
        "model": {"name": str(model_dir)},
        "data": {"max_prompt_tokens": 100},
        "rollout": {"backend": backend, "placement": placement, "max_new_tokens": 6, **rollout},
    })


def test_every_allowed_pair_has_an_engine_and_no_other():
    allowed = {(backend, placement) for placement, backends in BACKENDS_BY_PLACEMENT.items() for backend in backends}
    assert set(ENGINE_BY_RECIPE) == allowed


@pytest.mark.parametrize("backend, placement", [
    ("hf", "remote"),  # the hf backend generates in the learner's process: it has no workers
])
def test_validate_refuses_a_pair_without_an_engine_in_one_line(tmp_path, capsys, backend, placement):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"rollout": {"backend": backend, "placement": placement,
                                                "remote_urls": ["http://127.0.0.1:8001"]}}))

    assert main(["validate", str(path)]) == 2

    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rollout.backend" in err[0] and "placement: colocate" in err[0]


@pytest.mark.parametrize("async_generation", [False, True])
def test_hf_colocate_builds_from_the_recipe_and_generates(tiny_model_dir, make_tiny_model, tokenizer, chat_prompts,
                                                          async_generation):
    model = make_tiny_model()
    recipe = recipe_for(tiny_model_dir, "hf", async_generation=async_generation, temperature=1.0)
    if async_generation:
        recipe.algorithm.tis_cap = 2.0

    engine = engine_for(recipe, model, str(tiny_model_dir), tokenizer)

    assert (engine.model is model) != async_generation  # async: a copy of its own, the learner trains the original
    completions = engine.generate(chat_prompts[:1], 2, SamplingSettings(max_new_tokens=6))
    assert len(completions) == 2 and all(len(c.token_ids) == len(c.logprobs) > 0 for c in completions)


@pytest.mark.vllm
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed")
def test_vllm_auto_kv_cache_reserves_what_its_largest_batch_can_fill(tiny_model_dir, make_tiny_model, tokenizer):
    from transformers import AutoConfig

    recipe = recipe_for(tiny_model_dir, "vllm")
    assert recipe.rollout.vllm_kv_cache_gib == "auto"

    engine = engine_for(recipe, make_tiny_model(), str(tiny_model_dir), tokenizer)
    try:
        reserved = sum(storage.nbytes() for storage in engine._kv_cache_storages())
        cache_config = engine.llm.llm_engine.vllm_config.cache_config
        block_tokens, blocks = cache_config.block_size, cache_config.num_gpu_blocks
    finally:
        engine.close()
    itemsize = engine.dtype.itemsize
    wanted = recipe_kv_cache_gib(recipe, tiny_model_dir, itemsize, block_tokens) * 1024**3
    block_bytes = block_tokens * kv_bytes_per_token(AutoConfig.from_pretrained(tiny_model_dir), itemsize)
    assert reserved == blocks * block_bytes  # vLLM's blocks are the size the formula counts
    assert wanted - block_bytes < reserved <= wanted  # as many whole blocks as the size holds


@pytest.mark.vllm
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed")
def test_vllm_colocate_builds_from_the_recipe_and_generates(tiny_model_dir, make_tiny_model, tokenizer, chat_prompts):
    recipe = recipe_for(tiny_model_dir, "vllm", vllm_kv_cache_gib=0.25)

    engine = engine_for(recipe, make_tiny_model(), str(tiny_model_dir), tokenizer)
    try:
        completions = engine.generate(chat_prompts[:1], 2, SamplingSettings(max_new_tokens=6))
        assert len(completions) == 2 and all(len(c.token_ids) == len(c.logprobs) > 0 for c in completions)
        assert engine.llm.llm_engine.model_config.max_model_len == 106  # data.max_prompt_tokens + max_new_tokens
    finally:
        engine.close()


@pytest.mark.vllm
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed")
def test_a_closed_engine_leaves_its_layers_to_be_freed(tiny_model_dir, make_tiny_model, tokenizer):
    """vLLM's per-layer reload records (a module-level WeakKeyDictionary) kept most of a dropped
    engine's layers, and their weights, alive through records that refer back to them: every
    pipeline stage that generates left its engine's weights behind. close() drops the records. (The
    pipeline's release between stages runs too: a traceback vLLM keeps can hold the frame that
    built the first engine, see r1train/stage_memory.py.)"""
    import gc
    import weakref

    from r1train.stage_memory import release_finished_stage

    engine = engine_for(recipe_for(tiny_model_dir, "vllm", vllm_kv_cache_gib=0.05), make_tiny_model(),
                        str(tiny_model_dir), tokenizer)
    engine.sync_weights(make_tiny_model(seed=1))
    engine_model = engine.engine_model()
    layers = [weakref.ref(module) for module in engine_model.modules()]
    del engine_model
    engine.close()
    del engine
    release_finished_stage()
    gc.collect()
    alive = [type(layer()).__name__ for layer in layers if layer() is not None]
    assert alive == []  # before: the embedding, every linear layer and norm (their weights with them)
