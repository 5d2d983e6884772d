"""Process set-up shared by every stage: seeds, CPU threads, and the rollout engine a recipe asks for."""
from __future__ import annotations

import random

import torch

from r1train.config import Recipe


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:
        pass


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)


def engine_for(recipe: Recipe, model, model_dir: str, tokenizer):
    """The rollout engine of `recipe.rollout`, generating from `model` (HF) or a copy of it (vLLM)."""
    from r1train.engines import make_engine

    r = recipe.rollout
    options = {"seed": recipe.seed}
    if r.backend == "hf" and r.async_generation:
        options["own_copy"] = True  # the learner updates its weights while the engine samples
    if r.backend == "vllm":
        options.update(kv_cache_gib=r.vllm_kv_cache_gib, sleep_mode=r.vllm_sleep,
                       max_model_len=recipe.data.max_prompt_tokens + r.max_new_tokens)
        if r.placement == "remote":
            options.update(remote_urls=list(r.remote_urls))
    return make_engine(r.backend if r.placement == "colocate" else "remote", model, model_dir, tokenizer, **options)
