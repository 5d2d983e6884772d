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

`vllm serve` rollout workers run the model in processes r1train does not start itself (the
server's engine core), so there the registration comes from vLLM's general-plugin entry point
(`vllm_plugin`, named in pyproject.toml), which vLLM calls in each of its processes; the worker's
command line then asks for the kernels with `--kernel-config` (`served_kernel_config`). A plugin
only registers: a vLLM process that does not ask for "r1train_cpu" keeps vLLM's own choice.

vLLM's SiLU-and-multiply kernel for CPU is left out: at the same shape it was 2.7x slower than the
native two operators, which is what vLLM uses on x86.
"""
from __future__ import annotations

import functools

import torch

from r1train.hardware import cpu_feature

PROVIDER = "r1train_cpu"
PLUGIN_GROUP = "vllm.general_plugins"


@functools.cache  # asked on every dispatch of a norm; the CPU does not change
def bf16_rounds_to_nearest() -> bool:
    """Whether vLLM's kernel library for this CPU rounds fp32 to bf16 to nearest, as PyTorch does.
    It does in the AVX-512-bf16 library (the AMX machines'); the AVX2 one truncates, seen on an AMD
    EPYC: the fused add's sums came out rounded towards zero in 28% of the elements, a bias that the
    residual stream would carry through every layer. The plain AVX-512 library was not measured and
    is kept out with it. There bf16 calls keep the native path; the engine computes in fp32 on such
    CPUs anyway."""
    return cpu_feature("_is_avx512_bf16_supported")


def _takes(x: torch.Tensor, weight: torch.Tensor | None, variance_size: int | None,
           residual: torch.Tensor | None = None) -> bool:
    """Whether the C++ kernels can take this call: they compute what the native path does, up to
    rounding (once at the end, where the native path rounds twice)."""
    if variance_size is not None or weight is None or weight.dtype != x.dtype or not x.is_contiguous():
        return False
    if x.dtype == torch.bfloat16 and not bf16_rounds_to_nearest():
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

    on_cpu = current_platform.is_cpu()
    # Loads the torch.ops._C kernels. vLLM's CPU build ships one library per instruction set
    # (AVX-512 with bf16, AVX-512, AVX2) and the platform picks the one this CPU runs: importing
    # `vllm._C` directly loads the AVX-512 one, which dies of an illegal instruction on AVX2 CPUs.
    current_platform.import_kernels()
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


def vllm_plugin() -> None:
    """vLLM general-plugin entry point: register the kernels in every vLLM process on a CPU."""
    from vllm.platforms import current_platform

    if current_platform.is_cpu():
        register()


def plugin_installed() -> bool:
    """Whether this environment's r1train declares `vllm_plugin` to vLLM (an install from
    pyproject.toml does), so that processes r1train does not start register the kernels too."""
    from importlib.metadata import entry_points

    target = f"{__name__}:{vllm_plugin.__name__}"
    return any(entry.value == target for entry in entry_points(group=PLUGIN_GROUP))


def served_kernel_config() -> dict | None:
    """The `--kernel-config` of a `vllm serve` CPU worker that puts the kernels first, or None
    where the plugin is not installed (the worker would then not know the provider)."""
    return {"ir_op_priority": _kernels_first()} if plugin_installed() else None


def ir_op_priority() -> dict[str, list[str]]:
    """The `kernel_config["ir_op_priority"]` that puts the kernels first (registering them first)."""
    register()
    return _kernels_first()


def _kernels_first() -> dict[str, list[str]]:
    return {"rms_norm": [PROVIDER], "fused_add_rms_norm": [PROVIDER]}
