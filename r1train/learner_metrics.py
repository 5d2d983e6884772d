"""The learner's metrics of one batch: token-weighted means of the loss terms over its
micro-batches (extremes for the keys ending /max or /min), and the loss, gradient norm and
learning rate of the optimiser steps taken."""
from __future__ import annotations

import math


class MetricTotals:
    """Token-weighted sums of the loss metrics over micro-batches, and per-step sums."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.weights: dict[str, float] = {}
        self.maxima: dict[str, float] = {}
        self.minima: dict[str, float] = {}
        self.tokens = 0
        self.steps = 0
        self.loss = 0.0
        self.grad_norm = 0.0
        self.nan_skipped_steps = 0
        self.lr: float | None = None

    def add_micro_batch(self, metrics: dict[str, float], completion_tokens: int, tokens: int) -> None:
        self.tokens += tokens
        for key, value in metrics.items():
            if key.endswith("/max"):
                self.maxima[key] = max(self.maxima.get(key, -math.inf), value)
            elif key.endswith("/min"):
                self.minima[key] = min(self.minima.get(key, math.inf), value)
            else:
                self.sums[key] = self.sums.get(key, 0.0) + value * completion_tokens
                self.weights[key] = self.weights.get(key, 0.0) + completion_tokens

    def add_step(self, loss: float, grad_norm: float) -> None:
        self.steps += 1
        self.loss += loss
        self.grad_norm += grad_norm

    def result(self) -> dict[str, float]:
        out = {key: self.sums[key] / max(self.weights[key], 1) for key in self.sums}
        out.update(self.maxima)
        out.update(self.minima)
        if self.steps:
            out["loss"] = self.loss / self.steps
            out["grad_norm"] = self.grad_norm / self.steps
        if self.lr is not None:
            out["lr"] = self.lr
        out["nan_skipped_steps"] = self.nan_skipped_steps
        return out
