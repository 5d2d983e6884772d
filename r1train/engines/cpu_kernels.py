"""vLLM's own C++ RMS-norm kernels for its CPU build, which vLLM does not use on x86.

vLLM routes every RMS norm through its IR ops (`vllm.ir.ops.rms_norm`, `fused_add_rms_norm`),
each with a list of implementations chosen per platform. On CPU the list holds only the
PyTorch-native one: eight or so small eager operators per call (casts to fp32 and back, pow,
mean, rsqrt, two multiplies), twice per layer and decoding step. The CPU build ships fused kernels
for both (`torch.ops._C.rms_norm`, `torch.ops._C.fused_add_rms_norm`), registered for GPUs only.
At the toy recipes' decoding shape (128 rows of 576 bf16 values) a fused call took about a ninth of
the native one's time; the norms were 14% of generation in the profile
(benchmarks/results/profile_2026-12-02.md).

`ir_op_priority()` registers them as an implementation named "r1train_cpu" and returns the
`kernel_config` entry that puts it first. vLLM appends its platform default (native), which serves
every call the kernels cannot take: a strided input (the kernel reads it as contiguous and returns
wrong values), a weight of another dtype, a variance over part of the hidden size.

vLLM's SiLU-and-multiply kernel for CPU is left out: at the same shape it was 2.7x slower than the
native two operators, which is what vLLM uses on x86.
"""
from __future__ import annotations

import torch

PROVIDER = "r1train_cpu"


def _takes(x: torch.Tensor, weight: torch.Tensor | None, variance_size: int | None,
           residual: torch.Tensor | None = None) -> bool:
    """Whether the C++ kernels can take this call: they compute what the native path does, up to
    rounding (once at the end, where the native path rounds twice)."""
    if variance_size is not None or weight is None or weight.dtype != x.dtype or not x.is_contiguous():
        return False
    return residual is None or (residual.dtype == x.dtype and residual.is_contiguous())


def _rms_norm(x: torch.Tensor, weight: torch.Tensor | None, epsilon: float,
              variance_size: int | None = None) -> torch.Tensor:
    output = torch.empty_like(x)
    torch.ops._C.rms_norm(output, x, weight, epsilon)
    return output


def _fused_add_rms_norm(x: torch.Tensor, x_residual: torch.Tensor, weight: torch.Tensor | None,
                        epsilon: float, variance_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    # In place: x_residual becomes x + x_residual, x its normalised value.
    torch.ops._C.fused_add_rms_norm(x, x_residual, weight, epsilon)
    return x, x_residual


def register() -> None:
    """Add the kernels to vLLM's IR ops (once per process; CPU only)."""
    from vllm import ir
    from vllm.platforms import current_platform

    import vllm._C  # noqa: F401  (loads the torch.ops._C kernels)

    on_cpu = current_platform.is_cpu()
    if PROVIDER not in ir.ops.rms_norm.impls:
        ir.ops.rms_norm.register_impl(
            PROVIDER, supported=on_cpu,
            supports_args=lambda x, weight, epsilon, variance_size=None: _takes(x, weight, variance_size),
        )(_rms_norm)
    if PROVIDER not in ir.ops.fused_add_rms_norm.impls:
        ir.ops.fused_add_rms_norm.register_impl(
            PROVIDER, supported=on_cpu, inplace=True,
            supports_args=lambda x, x_residual, weight, epsilon, variance_size=None: _takes(
                x, weight, variance_size, x_residual),
        )(_fused_add_rms_norm)


def ir_op_priority() -> dict[str, list[str]]:
    """The `kernel_config["ir_op_priority"]` that puts the kernels first (registering them first)."""
    register()
    return {"rms_norm": [PROVIDER], "fused_add_rms_norm": [PROVIDER]}
