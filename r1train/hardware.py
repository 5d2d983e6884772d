"""What the hardware computes fast: one probe, used by the learner, the SFT trainer and the vLLM engine."""
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
