"""Seeding every random stream a stage uses (Python's, torch's, numpy's) from the recipe's seed."""
from __future__ import annotations

import random

import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:
        pass
