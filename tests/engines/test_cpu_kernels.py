"""cpu_kernels: vLLM's C++ RMS-norm kernels as an IR-op implementation on CPU, matching the native
path, and the native path still serving the calls the kernels cannot take."""
from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
import torch

if importlib.util.find_spec("vllm") is None:
    pytest.skip("vLLM is not installed", allow_module_level=True)

from r1train.engines import cpu_kernels  # noqa: E402

pytestmark = pytest.mark.vllm

# One bf16 rounding step either way at the outputs' magnitude (the kernels and the native path
# both compute in fp32 and round once at the end, but not in the same order).
TOLERANCE = {torch.bfloat16: dict(rtol=2**-7, atol=2**-6), torch.float32: dict(rtol=1e-5, atol=1e-5)}


@pytest.fixture(scope="module")
def ops():
    from vllm import ir

    cpu_kernels.register()
    return ir.ops


def inputs(dtype, rows=5, hidden=576, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x, residual = (torch.randn(rows, hidden, generator=generator).to(dtype) for _ in range(2))
    weight = (1 + 0.1 * torch.randn(hidden, generator=generator)).to(dtype)
    return x, residual, weight


# The dtype the kernels serve on every CPU; bf16 only where vLLM's library rounds it to nearest.
KERNEL_DTYPE = torch.bfloat16 if cpu_kernels.bf16_rounds_to_nearest() else torch.float32
BF16_KERNELS = pytest.mark.skipif(not cpu_kernels.bf16_rounds_to_nearest(),
                                  reason="this CPU's vLLM library truncates to bf16: bf16 keeps the native path")


@pytest.mark.parametrize("dtype", [pytest.param(torch.bfloat16, marks=BF16_KERNELS), torch.float32])
def test_the_kernels_compute_what_the_native_path_does(ops, dtype):
    x, residual, weight = inputs(dtype)
    ours = ops.rms_norm.impls[cpu_kernels.PROVIDER].impl_fn(x, weight, 1e-5)
    native = ops.rms_norm.impls["native"].impl_fn(x, weight, 1e-5)
    torch.testing.assert_close(ours, native, **TOLERANCE[dtype])

    native_out, native_residual = ops.fused_add_rms_norm.impls["native"].impl_fn(x, residual, weight, 1e-5)
    x_in, residual_in = x.clone(), residual.clone()
    ours_out, ours_residual = ops.fused_add_rms_norm.impls[cpu_kernels.PROVIDER].impl_fn(
        x_in, residual_in, weight, 1e-5)
    assert ours_out.data_ptr() == x_in.data_ptr() and ours_residual.data_ptr() == residual_in.data_ptr()  # in place
    torch.testing.assert_close(ours_residual, native_residual, rtol=0, atol=0)  # x + residual, rounded once
    torch.testing.assert_close(ours_out, native_out, **TOLERANCE[dtype])


def test_calls_the_kernels_cannot_take_go_to_the_native_path(ops):
    x, residual, weight = inputs(KERNEL_DTYPE)
    other = torch.float32 if KERNEL_DTYPE == torch.bfloat16 else torch.bfloat16
    strided = torch.cat([x, x], dim=1)[:, : x.shape[1]]  # the kernel would read it as contiguous
    with ops.rms_norm.set_priority([cpu_kernels.PROVIDER, "native"]):
        assert ops.rms_norm.dispatch(x, weight, 1e-5).provider == cpu_kernels.PROVIDER
        assert ops.rms_norm.dispatch(strided, weight, 1e-5).provider == "native"
        assert ops.rms_norm.dispatch(x, weight.to(other), 1e-5).provider == "native"
        assert ops.rms_norm.dispatch(x, weight, 1e-5, 64).provider == "native"  # variance over part
        torch.testing.assert_close(ops.rms_norm(strided, weight, 1e-5),
                                   ops.rms_norm.impls["native"].impl_fn(strided.contiguous(), weight, 1e-5))
    with ops.fused_add_rms_norm.set_priority([cpu_kernels.PROVIDER, "native"]):
        assert ops.fused_add_rms_norm.dispatch(x, residual, weight, 1e-5).provider == cpu_kernels.PROVIDER
        assert ops.fused_add_rms_norm.dispatch(x, residual.to(other), weight, 1e-5).provider == "native"


@pytest.mark.skipif(cpu_kernels.bf16_rounds_to_nearest(), reason="this CPU's vLLM library rounds bf16 to nearest")
def test_bf16_keeps_the_native_path_where_the_library_truncates(ops):
    x, residual, weight = inputs(torch.bfloat16)
    with ops.rms_norm.set_priority([cpu_kernels.PROVIDER, "native"]):
        assert ops.rms_norm.dispatch(x, weight, 1e-5).provider == "native"
    with ops.fused_add_rms_norm.set_priority([cpu_kernels.PROVIDER, "native"]):
        assert ops.fused_add_rms_norm.dispatch(x, residual, weight, 1e-5).provider == "native"


def test_registering_twice_keeps_one_implementation(ops):
    first = ops.rms_norm.impls[cpu_kernels.PROVIDER]
    assert cpu_kernels.ir_op_priority() == {"rms_norm": [cpu_kernels.PROVIDER],
                                            "fused_add_rms_norm": [cpu_kernels.PROVIDER]}
    assert ops.rms_norm.impls[cpu_kernels.PROVIDER] is first


def test_vllm_processes_r1train_does_not_start_register_the_kernels_through_the_plugin():
    # A fresh interpreter, as a `vllm serve` worker's engine core is: only vLLM's plugin loading
    # can have registered the kernels there.
    probe = ("from vllm.plugins import load_general_plugins; load_general_plugins(); "
             "from vllm import ir; print(sorted(ir.ops.rms_norm.impls), sorted(ir.ops.fused_add_rms_norm.impls))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1].count(f"'{cpu_kernels.PROVIDER}'") == 2
    assert cpu_kernels.plugin_installed()
