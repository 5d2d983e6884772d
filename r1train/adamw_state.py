"""AdamW whose two moment estimates can be stored in bfloat16: half the optimiser's memory.

AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization", 2019) keeps two fp32 tensors
per parameter, the running mean of the gradients and of their squares: 8 bytes per parameter,
twice the fp32 weights themselves (1.0 GiB of a 135M model's run). Stored in bfloat16 they take
half. Keeping optimiser state in fewer bits is an established trade (Dettmers et al., "8-bit
Optimizers via Block-wise Quantization", 2022, go down to 8 bits with block-wise scaling); bf16
keeps fp32's exponent range, so no scaling is needed, and loses mantissa bits: each moment is
rounded to about 3 significant digits after every update.

The update itself runs in fp32: each parameter's moments are widened, updated, and rounded back,
a slice of at most CHUNK_ELEMENTS at a time, so the fp32 temporaries stay small next to the memory
saved. The update is torch's fused AdamW kernel where it applies (`fused_kernel_applies`): one
pass over each slice instead of a dozen elementwise operators, 0.37 -> 0.18-0.20 s a step for the 135M
model on the 2-core AMX machine (`benchmarks/bench_optimizer.py`); elsewhere it is the arithmetic
of `torch.optim.AdamW`'s single-tensor path. With fp32 state this class reproduces
`torch.optim.AdamW` with the same kernel (tests check both); `make_adamw` returns torch's own
optimiser for fp32 state all the same.

Deliberate simplifications: round-to-nearest, not stochastic rounding; plain (non-sharded) tensors
only (the config refuses it with FSDP); no amsgrad, no foreach path.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch

STATE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
CHUNK_ELEMENTS = 1 << 22  # 4M elements: 16 MiB per fp32 temporary
_MOMENTS = ("exp_avg", "exp_avg_sq")


def make_adamw(parameters: Iterable[torch.nn.Parameter], lr: float, betas: tuple[float, float],
               weight_decay: float, state_dtype: str = "float32") -> torch.optim.Optimizer:
    """torch's AdamW for fp32 moments, `AdamWLowPrecisionState` for bf16 ones (`training.optimizer_state_dtype`)."""
    if state_dtype not in STATE_DTYPES:
        raise ValueError(f"unknown optimiser state dtype {state_dtype!r}; expected one of {tuple(STATE_DTYPES)}")
    if state_dtype == "float32":
        parameters = list(parameters)
        return torch.optim.AdamW(parameters, lr=lr, betas=betas, weight_decay=weight_decay,
                                 fused=fused_kernel_applies(parameters) or None)
    return AdamWLowPrecisionState(parameters, lr=lr, betas=betas, weight_decay=weight_decay,
                                  state_dtype=STATE_DTYPES[state_dtype])


def fused_kernel_applies(parameters: list[torch.nn.Parameter]) -> bool:
    """Whether torch's fused AdamW kernel can take these parameters: plain floating-point tensors,
    all on the CPU or all on one CUDA device. It updates each tensor in one pass where the default
    path runs a dozen elementwise operators over it; on a 2-core AMD EPYC a 135M model's step took
    0.088 s against 0.638 s (benchmarks/results/optimizer_step_2026-12-04.txt). Sharded (DTensor)
    parameters keep the default path."""
    from torch.distributed.tensor import DTensor

    if not parameters:
        return False
    devices = {p.device for p in parameters}
    return (len(devices) == 1 and next(iter(devices)).type in ("cpu", "cuda")
            and all(p.is_floating_point() and not isinstance(p, DTensor) for p in parameters))


class AdamWLowPrecisionState(torch.optim.Optimizer):
    """AdamW with `exp_avg` and `exp_avg_sq` kept in `state_dtype`; see the module docstring.

    Args:
        parameters: the parameters to optimise (fp32 master weights).
        lr, betas, eps, weight_decay: as `torch.optim.AdamW` (decoupled decay, bias-corrected moments).
        state_dtype: dtype of the two moments (torch.bfloat16 halves their memory).
    """

    def __init__(self, parameters, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, state_dtype: torch.dtype = torch.bfloat16):
        parameters = list(parameters)
        super().__init__(parameters, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self.state_dtype = state_dtype
        self.fused = fused_kernel_applies([p for group in self.param_groups for p in group["params"]])

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    self._update(param, group)
        return loss

    def _update(self, param: torch.Tensor, group: dict) -> None:
        state = self.state[param]
        if not state:
            state["step"] = torch.tensor(0.0)
            for name in _MOMENTS:
                state[name] = torch.zeros_like(param, dtype=self.state_dtype, memory_format=torch.contiguous_format)
        state["step"] += 1
        flat_param, flat_grad = param.view(-1), param.grad.reshape(-1)
        flat_avg, flat_avg_sq = state["exp_avg"].view(-1), state["exp_avg_sq"].view(-1)
        update = self._fused_update if self.fused else self._single_tensor_update
        for start in range(0, flat_param.numel(), CHUNK_ELEMENTS):
            piece = slice(start, start + CHUNK_ELEMENTS)
            exp_avg = flat_avg[piece].to(torch.float32, copy=True)
            exp_avg_sq = flat_avg_sq[piece].to(torch.float32, copy=True)
            update(flat_param[piece], flat_grad[piece], exp_avg, exp_avg_sq, state["step"], group)
            flat_avg[piece].copy_(exp_avg)
            flat_avg_sq[piece].copy_(exp_avg_sq)

    @staticmethod
    def _fused_update(p, grad, exp_avg, exp_avg_sq, step: torch.Tensor, group: dict) -> None:
        """torch's fused AdamW kernel (what `torch.optim.AdamW(fused=True)` calls), on fp32 slices."""
        beta1, beta2 = group["betas"]
        # The kernel computes the bias corrections from the step count, a tensor on the parameters' device.
        torch._fused_adamw_([p], [grad], [exp_avg], [exp_avg_sq], [], [step.to(p.device)], lr=group["lr"], beta1=beta1,
                            beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"], amsgrad=False,
                            maximize=False)

    @staticmethod
    def _single_tensor_update(p, grad, exp_avg, exp_avg_sq, step: torch.Tensor, group: dict) -> None:
        """torch.optim.AdamW's single-tensor arithmetic, in the same order."""
        lr, eps, (beta1, beta2) = group["lr"], group["eps"], group["betas"]
        step = step.item()
        step_size = lr / (1 - beta1**step)
        bias_correction2_sqrt = (1 - beta2**step) ** 0.5
        p.mul_(1 - lr * group["weight_decay"])
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
        p.addcdiv_(exp_avg, denom, value=-step_size)

    def load_state_dict(self, state_dict: dict) -> None:
        """Load as torch does (which casts the moments to the parameters' dtype), then narrow them
        back to `state_dtype`, so a resumed run keeps the memory saving."""
        super().load_state_dict(state_dict)
        for state in self.state.values():
            for name in _MOMENTS:
                if name in state:
                    state[name] = state[name].to(self.state_dtype).contiguous()
