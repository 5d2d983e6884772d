"""Gated MLPs that keep two of their four intermediate tensors for the backward pass, not four.

Llama, Qwen, Mistral and SmolLM compute their MLP as `down_proj(silu(gate_proj(x)) * up_proj(x))`.
Autograd keeps every input its backward pass needs: the gate projection `g` (for SiLU), `silu(g)`
and the up projection `u` (for the product), and the product itself (for `down_proj`'s weight
gradient): four tensors of the intermediate width, which is 2.7x the hidden width in the 135M
model. They are more than half of what a learner pass keeps for its backward pass, and those
activations are the largest part of the learner's peak memory (the memory account in `docs/PERFORMANCE.md`).

Here the MLP keeps `g` and `u` only. `silu(g)` and the product are computed again from them when
the backward pass reaches them: the same elementwise operators on the same inputs, so the same
values. The gradients are autograd's own to float rounding: bit for bit on the tiny test model
and on the 135M model's plain rows, but on the learner's shared-prompt rows of the 135M model they
differ in the last bits (a gradient norm 6e-8 apart, relative; the cause was not found), so a run
with it samples as one without it only until such differences change a sampled token. The price
is one SiLU and two products more per layer in the backward pass, elementwise work next to three
matmuls.

How: the gated product is a custom autograd function that saves only `g` and `u`, and `down_proj`
runs under saved-tensor hooks that store, in place of the product, a recipe to compute it again.
Only the product is swapped, whatever `down_proj` is (a plain layer, a LoRA-wrapped one).

Left as they are: MLPs of another form (another activation, no gate), and models trained with
gradient checkpointing (which recomputes the whole layer already; the hooks would keep `g` and
`u` alive past its checkpoints) or compiled layers (inductor decides what to keep by itself).
"""
from __future__ import annotations

import types

import torch

from r1train.compiled_layers import decoder_layers


class _GatedProduct(torch.autograd.Function):
    """silu(gate) * up, saving the two inputs only."""

    @staticmethod
    def forward(ctx, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(gate, up)
        return torch.nn.functional.silu(gate) * up

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        gate, up = ctx.saved_tensors
        # Autograd's own order for silu(gate) * up: the product's two gradients, then SiLU's.
        grad_up = grad * torch.nn.functional.silu(gate)
        grad_gate = torch.ops.aten.silu_backward(grad * up, gate)
        return grad_gate, grad_up


class _Recomputed:
    """Stands for a saved view of the gated product: computes the product again when unpacked."""

    __slots__ = ("gate", "up", "size", "stride", "offset")

    def __init__(self, gate: torch.Tensor, up: torch.Tensor, view: torch.Tensor):
        self.gate, self.up = gate, up
        self.size, self.stride, self.offset = view.size(), view.stride(), view.storage_offset()

    def tensor(self) -> torch.Tensor:
        product = torch.nn.functional.silu(self.gate) * self.up
        return product.as_strided(self.size, self.stride, self.offset)


def _forward(self, x: torch.Tensor) -> torch.Tensor:
    if not torch.is_grad_enabled():  # scoring and generation: nothing is saved anyway
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))
    gate, up = self.gate_proj(x), self.up_proj(x)
    product = _GatedProduct.apply(gate, up)
    storage = product.untyped_storage().data_ptr()

    def pack(saved: torch.Tensor):
        if saved.untyped_storage().data_ptr() == storage and saved.dtype == product.dtype:
            return _Recomputed(gate, up, saved)
        return saved

    def unpack(packed):
        return packed.tensor() if isinstance(packed, _Recomputed) else packed

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        return self.down_proj(product)


def _is_gated_silu_mlp(module: torch.nn.Module) -> bool:
    act = getattr(module, "act_fn", None)
    silu = isinstance(act, torch.nn.SiLU) or type(act).__name__ == "SiLUActivation"
    return silu and all(isinstance(getattr(module, name, None), torch.nn.Module)
                        for name in ("gate_proj", "up_proj", "down_proj"))


def recompute_mlp_products(model: torch.nn.Module) -> int:
    """Make the gated MLPs of `model`'s decoder layers keep two intermediate tensors instead of
    four (see the module doc). Returns how many MLPs now do; 0 where none has the form, or where
    the model checkpoints its layers."""
    if getattr(model, "is_gradient_checkpointing", False):
        return 0
    patched = 0
    for layer in decoder_layers(model):
        mlp = getattr(layer, "mlp", None)
        if mlp is not None and _is_gated_silu_mlp(mlp):
            mlp.forward = types.MethodType(_forward, mlp)
            patched += 1
    return patched
