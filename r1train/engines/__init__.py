"""Rollout engines: one interface (base.RolloutEngine), three engines.

    "hf"      transformers generate on the learner's own model object (works everywhere)
    "vllm"    vLLM in the learner's process, weights pushed after every optimiser step
    "remote"  `vllm serve` worker processes, weights pushed from disk or over NCCL

A recipe's (rollout.backend, rollout.placement) picks one through `ENGINE_BY_RECIPE`, and each
engine takes its own options from the recipe (`from_recipe`). Only the chosen engine's module is
imported, so vLLM is imported only when it is used.
"""
from __future__ import annotations

from pathlib import Path

import torch

from r1train.engines.base import Completion, RolloutEngine, SamplingSettings

BACKENDS = ("hf", "vllm", "remote")
# (rollout.backend, rollout.placement) -> engine; config.BACKENDS_BY_PLACEMENT refuses the other pairs.
ENGINE_BY_RECIPE = {("hf", "colocate"): "hf", ("vllm", "colocate"): "vllm", ("vllm", "remote"): "remote"}


def make_engine(
    backend: str, model: torch.nn.Module, model_dir: str | Path | None, tokenizer, **options
) -> RolloutEngine:
    """Build the rollout engine `backend` names.

    Args:
        backend: "hf", "vllm" or "remote" (see the module docstring).
        model: the learner's model; the HF engine generates with it directly.
        model_dir: safetensors folder the vLLM engine starts from (the learner's starting weights).
        tokenizer: the learner's tokenizer.
        **options: the backend's own keyword arguments: HFEngine (batch_size, autocast_dtype,
            eos_token_ids, seed), VLLMEngine (max_model_len, seed, kv_cache_gib,
            gpu_memory_utilization, sleep_mode, dtype, eos_token_ids), RemoteVLLMEngine
            (remote_urls, seed, weight_sync, weight_sync_dir, model_names, min_model_len, timeout_s,
            master_address, master_port, eos_token_ids).
    """
    if backend == "hf":
        return _engine_class("hf")(model, tokenizer, **options)
    if backend == "vllm":
        if model_dir is None:
            raise ValueError("the vllm backend needs model_dir, a safetensors folder of the starting weights")
        return _engine_class("vllm")(model_dir, tokenizer, **options)
    if backend == "remote":
        return _engine_class("remote")(tokenizer=tokenizer, **options)
    raise ValueError(f"unknown rollout backend {backend!r}; expected one of {', '.join(BACKENDS)}")


def engine_from_recipe(recipe, model: torch.nn.Module, model_dir: str | Path, tokenizer) -> RolloutEngine:
    """The engine of the recipe's rollout backend and placement, built from the recipe's options."""
    r = recipe.rollout
    return _engine_class(ENGINE_BY_RECIPE[r.backend, r.placement]).from_recipe(recipe, model, model_dir, tokenizer)


def generation_model(recipe, model: torch.nn.Module) -> torch.nn.Module:
    """`model`, for an engine that only generates with it (evaluation, rejection sampling), placed
    where that engine computes: the HF backend generates with the model itself, on the GPU where
    there is one; vLLM loads its own weights from the folder, so the model stays on the CPU."""
    if recipe.rollout.backend == "hf":
        from r1train.hardware import compute_device

        model.to(compute_device())
    return model


def _engine_class(backend: str):
    if backend == "hf":
        from r1train.engines.hf import HFEngine

        return HFEngine
    if backend == "vllm":
        from r1train.engines.vllm_engine import VLLMEngine

        return VLLMEngine
    from r1train.engines.remote import RemoteVLLMEngine

    return RemoteVLLMEngine


__all__ = ["BACKENDS", "ENGINE_BY_RECIPE", "Completion", "RolloutEngine", "SamplingSettings", "engine_from_recipe", "generation_model", "make_engine"]
