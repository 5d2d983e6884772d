"""The learner's decoder layers compiled with torch.compile (`training.compile`).

A small model's step on a CPU is mostly not matmuls: dtype casts, norms, activations and the
residual adds are dozens of separate operators per layer, each a pass over memory. Inductor fuses
them into a few generated kernels per layer. Only the decoder layers are compiled ("regional"
compilation): they are alike, so one graph serves all of them and compiling takes seconds, not
minutes, and the embedding, the output layer (r1train/fused_head.py) and the loss stay as they are.

`nn.Module.compile` compiles in place, so parameter names, checkpoints, the weight sync to the
engines and LoRA adapters see the same module tree as without it. Shapes are marked dynamic from
the first call: every micro-batch has another token count, and recompiling for each would cost
more than it saves.

With gradient checkpointing (`model.gradient_checkpointing`), a layer's backward pass reruns its
forward pass to get the activations it dropped. transformers wraps the compiled layer in that
checkpoint; here the checkpoint goes inside the compiled layer instead, with a policy that keeps the
attention kernel's outputs (the attention output and its log-sum-exp, 1.2 KB a token and layer for
the default model in bf16, against 1.1 KB for the layer's input that checkpointing keeps anyway) and
recomputes everything else. The rerun then skips attention, the one part of a layer whose cost grows
with the row length and which CPU kernels run far below the matmul rate (KEPT_IN_CHECKPOINTS below
has the figures).
"""
from __future__ import annotations

import functools
import os
import shutil
import types

import torch
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

# Inductor turns the graphs into C++ on a CPU and needs a compiler for it.
CPP_COMPILERS = ("g++", "clang++", "c++")


def cpp_compiler_found() -> bool:
    """Whether inductor can build CPU kernels here: $CXX or one of the usual compilers on PATH."""
    candidates = ([os.environ["CXX"]] if os.environ.get("CXX") else []) + list(CPP_COMPILERS)
    return any(shutil.which(name) for name in candidates)


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated decoder blocks of an HF causal LM (through a peft wrapper too); [] if none."""
    layers = getattr(model.get_decoder(), "layers", None)
    return list(layers) if isinstance(layers, torch.nn.ModuleList) else []


def compile_decoder_layers(model: torch.nn.Module, device: torch.device) -> bool:
    """Compile `model`'s decoder layers in place; returns False (and says why) where it cannot."""
    layers = decoder_layers(model)
    if not layers:
        print(f"r1train: training.compile: {type(model).__name__} has no decoder layer list to compile; "
              "the learner runs eagerly", flush=True)
        return False
    if device.type == "cpu" and not cpp_compiler_found():
        print("r1train: training.compile: no C++ compiler found (g++, clang++ or $CXX), which torch.compile "
              "needs on a CPU; the learner runs eagerly (install one, e.g. `apt install g++`, or set "
              "training.compile: false to silence this)", flush=True)
        return False
    for layer in layers:
        if getattr(layer, "gradient_checkpointing", False):
            checkpoint_inside(layer)
        layer.compile(dynamic=True)
    return True


# The attention kernels whose outputs a checkpointed layer keeps (those torch has). On the 2-core
# Zen 4 CPU the flash kernel's forward pass took 16-21 ms a layer at the main recipe's packed rows,
# against 36-46 ms for its backward pass.
KEPT_IN_CHECKPOINTS = tuple(
    getattr(torch.ops.aten, name).default
    for name in ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
                 "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention")
    if hasattr(torch.ops.aten, name))


def _keep_attention(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    return CheckpointPolicy.MUST_SAVE if op in KEPT_IN_CHECKPOINTS else CheckpointPolicy.PREFER_RECOMPUTE


def checkpoint_inside(layer: torch.nn.Module) -> None:
    """Move `layer`'s gradient checkpoint from transformers' wrapper into its forward pass, keeping the
    attention kernel's outputs. Bound as a method, so a deep copy of the model checkpoints its own
    layers."""
    layer.gradient_checkpointing = False
    layer.forward = types.MethodType(_checkpointed_forward, layer)


def _checkpointed_forward(layer: torch.nn.Module, *args, **kwargs):
    forward = functools.partial(type(layer).forward, layer)
    # As transformers' wrapper: only training passes are checkpointed, and never one that writes a
    # KV cache (the rerun would write it twice).
    if torch.is_grad_enabled() and layer.training and kwargs.get("past_key_values") is None:
        return checkpoint(forward, *args, use_reentrant=False, **kwargs,
                          context_fn=functools.partial(create_selective_checkpoint_contexts, _keep_attention))
    return forward(*args, **kwargs)
