"""Where a process computes and what its hardware computes fast: used by the trainers, the learner and the engines."""
from __future__ import annotations

import torch


def bf16_autocast_supported(device: torch.device) -> bool:
    """Whether bf16 autocast is faster than fp32 here: CUDA with bf16, or a CPU with native bf16
    instructions. Without them, CPU bf16 matmuls are emulated and slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_feature("_is_amx_tile_supported") or cpu_feature("_is_avx512_bf16_supported")
    return False


def cpu_feature(probe: str) -> bool:
    """One of torch.cpu's feature probes (`_is_avx512_bf16_supported`, ...): private, but the only
    ones; False where this torch build lacks it."""
    check = getattr(torch.cpu, probe, None)
    return bool(check and check())


# The token budget per forward/backward pass that `training.micro_batch_tokens: auto` gives, from
# the main toy recipe's learner batch on the two kinds of 2-core CPU: with bf16 activations (AMX)
# 4096 was 1.1x faster than 1024 (2048 not measured there); in fp32 (AVX2, no native bf16) a
# token's activations take twice the bytes and 1024 was the fastest of 1024/2048/4096, at half the
# peak memory of 4096 (benchmarks/results/micro_batch_tokens_avx2_2026-12-04.txt). GPUs keep 4096.
MICRO_BATCH_TOKENS_BF16 = 4096
MICRO_BATCH_TOKENS_FP32_CPU = 1024


def micro_batch_token_budget(setting: int | str, device: torch.device, bf16: bool) -> int:
    """`training.micro_batch_tokens` as a number of tokens: itself, or for "auto" the budget
    measured best for how this learner computes (`bf16`: whether it runs under bf16 autocast)."""
    if setting != "auto":
        return int(setting)
    return MICRO_BATCH_TOKENS_FP32_CPU if device.type == "cpu" and not bf16 else MICRO_BATCH_TOKENS_BF16


def compute_device() -> torch.device:
    """The device this process computes on: its current CUDA device where there is one (under a
    multi-process launch, the one accelerate gave it), otherwise the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
