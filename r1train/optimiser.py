"""The optimiser core shared by the GRPO learner (`r1train/learner.py`) and the SFT trainer
(`r1train/sft.py`): LoRA wrapping, AdamW with a warm-up and decay schedule, skipping non-finite
steps, the trained parameters' state for checkpoints, and bf16 autocast.

A step whose loss or gradient norm is not finite is skipped whole: neither the weights nor the
learning-rate schedule move, so the schedule counts the optimiser steps actually taken and a run
that skips a step ends with the learning rate it would have had one step earlier.
`training.max_nan_steps` skipped steps in a row stop the run (`check_nan_limit`); skipped steps
leave the weights as they were, so the newest checkpoint is a good one.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from r1train.adamw_state import make_adamw
from r1train.checkpoint import latest_checkpoint

LR_SCHEDULES = ("constant", "linear", "cosine")


def lr_factor(step: int, warmup_steps: int, total_steps: int | None, schedule: str) -> float:
    """Multiplier of the base learning rate at optimiser step `step` (0-based): linear warm-up
    over `warmup_steps`, then constant, or a linear or cosine decay reaching 0 at `total_steps`.

    Example: lr_factor(0, 2, 10, "linear") == 0.5, lr_factor(6, 2, 10, "linear") == 0.5.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def with_lora(model: torch.nn.Module, r: int, alpha: int, dropout: float,
              target_modules: list[str] | str) -> torch.nn.Module:
    """`model` wrapped by peft with LoRA adapters: only the adapters train, the base stays frozen."""
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout,
                                            target_modules=target_modules, task_type="CAUSAL_LM"))


def bf16_autocast(device: torch.device, enabled: bool):
    """bf16 autocast on `device` where `enabled` (callers pass whether the hardware computes bf16
    natively, `r1train/hardware.py`); master weights stay fp32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trained parameters only (LoRA: the adapters), by `named_parameters` name."""
    return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}


@torch.no_grad()
def load_trainable_state(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Copy a checkpoint's trained parameters into `model`; ValueError when they do not match."""
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    missing, unexpected = sorted(set(params) - set(weights)), sorted(set(weights) - set(params))
    if missing or unexpected:
        example = f"{len(missing)} trained parameters, e.g. {missing[0]}" if missing else f"no {unexpected[0]}"
        raise ValueError(f"checkpoint's trained parameters do not match this model's (it lacks {example}); "
                         "was it written with other model or LoRA settings?")
    for name, tensor in weights.items():
        params[name].copy_(tensor)


class Optimiser:
    """AdamW over `parameters` with the learning-rate schedule, and the count of skipped steps.

    Args:
        parameters: the trained parameters.
        lr, betas, weight_decay: AdamW's.
        lr_schedule: one of LR_SCHEDULES; the decaying ones need `total_steps` (optimiser steps).
        warmup_steps: optimiser steps of linear warm-up.
        state_dtype: AdamW's moments in "float32" or "bfloat16" (`r1train/adamw_state.py`).
        prepare: wraps the optimiser before the schedule is attached (a data-parallel launch's
            `accelerator.prepare`); the schedule is never prepared, which would step it once per process.
    """

    def __init__(self, parameters: Iterable[torch.nn.Parameter], lr: float, betas: tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0, lr_schedule: str = "constant", warmup_steps: int = 0,
                 total_steps: int | None = None, prepare: Callable[[Any], Any] | None = None,
                 state_dtype: str = "float32"):
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown lr_schedule {lr_schedule!r}; expected one of {LR_SCHEDULES}")
        if lr_schedule != "constant" and total_steps is None:
            raise ValueError(f"lr_schedule {lr_schedule!r} needs total_steps")
        self.parameters = list(parameters)
        self.optimizer = make_adamw(self.parameters, lr=lr, betas=betas, weight_decay=weight_decay,
                                    state_dtype=state_dtype)
        if prepare is not None:
            self.optimizer = prepare(self.optimizer)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, warmup_steps, total_steps, lr_schedule))
        self.consecutive_nan_steps = 0  # reset by every step taken
        self.nan_skipped_steps = 0  # over the whole run

    @property
    def lr(self) -> float:
        """The learning rate the next step takes."""
        return self.optimizer.param_groups[0]["lr"]

    def step(self, finite: bool) -> bool:
        """End an optimiser step whose gradients are accumulated (and clipped): take it where the
        loss and gradient norm are `finite`, else skip it (weights and schedule stay); then clear
        the gradients. Returns whether the step was taken."""
        if finite:
            self.optimizer.step()
            self.scheduler.step()
            self.consecutive_nan_steps = 0
        else:
            self.consecutive_nan_steps += 1
            self.nan_skipped_steps += 1
        self.optimizer.zero_grad(set_to_none=True)
        return finite

    def release_state(self) -> None:
        """Drop AdamW's moments (twice the trained weights' bytes in fp32) once training is over,
        so that what runs after it in the process does not hold them too."""
        self.optimizer.state.clear()

    def check_nan_limit(self, limit: int, checkpoint_dir: Path, hint: str) -> None:
        """Raise FloatingPointError once `limit` steps in a row were skipped, naming the newest
        checkpoint (a good one: skipped steps change no weight) and `hint`, what to change."""
        if self.consecutive_nan_steps < limit:
            return
        latest = latest_checkpoint(checkpoint_dir)
        kept = f"the last good checkpoint kept is {latest}" if latest else "no checkpoint was written yet"
        raise FloatingPointError(f"{self.consecutive_nan_steps} consecutive steps with a non-finite loss or gradient; "
                                 f"stopping, {kept} ({hint})")

    def state_dict(self, optimizer_state: dict | None = None) -> dict[str, Any]:
        """Optimiser, schedule and skip counts for a checkpoint (`optimizer_state` replaces the
        optimiser's own, e.g. gathered from shards)."""
        return {"optimizer": self.optimizer.state_dict() if optimizer_state is None else optimizer_state,
                "scheduler": self.scheduler.state_dict(), "consecutive_nan_steps": self.consecutive_nan_steps,
                "nan_skipped_steps": self.nan_skipped_steps}

    def load_state_dict(self, state: dict[str, Any], load_optimizer: Callable[[dict], None] | None = None) -> None:
        """Restore what `state_dict` saved (`load_optimizer` loads the optimiser state instead of
        the optimiser itself, e.g. into shards)."""
        (load_optimizer or self.optimizer.load_state_dict)(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.consecutive_nan_steps = state.get("consecutive_nan_steps", 0)
        self.nan_skipped_steps = state.get("nan_skipped_steps", 0)
