"""Rollout engines: one interface (base.RolloutEngine), three placements.

    "hf"      transformers generate on the learner's own model object (works everywhere)
    "vllm"    vLLM in the learner's process, weights pushed after every optimiser step
    "remote"  `vllm serve` processes on other GPUs, weights pushed over NCCL

Only the chosen backend's module is imported, so vLLM is imported only when it is used.
"""
from __future__ import annotations

from pathlib import Path

import torch

from r1train.engines.base import Completion, RolloutEngine, SamplingSettings

BACKENDS = ("hf", "vllm", "remote")


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
            (remote_urls, seed, master_address, master_port, dtype, timeout_s, eos_token_ids).
    """
    if backend == "hf":
        from r1train.engines.hf import HFEngine

        return HFEngine(model, tokenizer, **options)
    if backend == "vllm":
        from r1train.engines.vllm_engine import VLLMEngine

        if model_dir is None:
            raise ValueError("the vllm backend needs model_dir, a safetensors folder of the starting weights")
        return VLLMEngine(model_dir, tokenizer, **options)
    if backend == "remote":
        from r1train.engines.remote import RemoteVLLMEngine

        return RemoteVLLMEngine(tokenizer=tokenizer, **options)
    raise ValueError(f"unknown rollout backend {backend!r}; expected one of {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "Completion", "RolloutEngine", "SamplingSettings", "make_engine"]
