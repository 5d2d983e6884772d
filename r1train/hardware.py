"""Where a process computes and what its hardware computes fast: used by the trainers, the learner and the engines."""
from __future__ import annotations

import torch


def bf16_autocast_supported(device: torch.device) -> bool:
    """Whether bf16 autocast is faster than fp32 here: CUDA with bf16, or a CPU with native bf16
    instructions. Without them, CPU bf16 matmuls are emulated and slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        native = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # private, but the only probes
        return any(getattr(torch.cpu, probe, lambda: False)() for probe in native)
    return False


def compute_device() -> torch.device:
    """The device this process computes on: its current CUDA device where there is one (under a
    multi-process launch, the one accelerate gave it), otherwise the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
