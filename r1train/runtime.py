"""Process set-up shared by every stage: seeds, CPU threads, and the rollout engine a recipe asks for."""
from __future__ import annotations

import random

import torch

from r1train.config import Recipe
from r1train.threads import usable_cpus


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:
        pass


def set_threads(threads: int | None) -> None:
    """Torch's intra-op threads: `threads`, or by default one per core this process may use
    (r1train/threads.py), never more than torch's own default."""
    torch.set_num_threads(threads or min(torch.get_num_threads(), usable_cpus()))


def engine_for(recipe: Recipe, model, model_dir: str, tokenizer):
    """The rollout engine of `recipe.rollout`, generating from `model` (HF) or a copy of it (vLLM)."""
    from r1train.engines import engine_from_recipe

    return engine_from_recipe(recipe, model, model_dir, tokenizer)
