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
"""
from __future__ import annotations

import os
import shutil

import torch

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
        layer.compile(dynamic=True)
    return True
