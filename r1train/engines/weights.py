"""The learner's weights as a vLLM engine wants them: checkpoint names, LoRA merged, engine dtype.

Used by both vLLM backends to push weights after an optimiser step. The learner's model is never
modified: a LoRA delta is added to a copy of its base weight as that weight is produced (a
merge_adapter/unmerge_adapter round trip would leave fp32 rounding drift in the trained weights).
Tensors are produced lazily, one cast copy at a time, so a push never holds a second full model;
a model sharded with FSDP is gathered one tensor at a time, on every process alike.

Deliberate simplifications: plain LoRA only (DoRA and other peft tuners are refused), and a LoRA on
a tied embedding is not propagated to the tied output layer.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch

from r1train.fsdp import full_tensor


def checkpoint_weights(model: torch.nn.Module, dtype: torch.dtype) -> Iterator[tuple[str, torch.Tensor]]:
    """(checkpoint name, tensor) for every weight of `model`, LoRA merged, cast to `dtype`.

    Args:
        model: a transformers causal LM, or a peft model wrapping one.
        dtype: the engine's weight dtype (tensors stay on the model's device).

    Yields:
        (name, tensor) with the names a `save_pretrained` checkpoint of the base model would use.
        A tied parameter is yielded under each of its names (`model.embed_tokens.weight` and
        `lm_head.weight`), because vLLM loads both and keeps whichever comes last.
    """
    base, lora_layers = _unwrap_peft(model)
    for name, param in base.named_parameters(remove_duplicate=False):
        if ".lora_" in name or ".original_module." in name:
            continue  # LoRA factors are folded in below; peft's frozen originals are superseded
        tensor = full_tensor(param.detach())  # a sharded (FSDP) weight is gathered whole
        module_name = name.removesuffix(".base_layer.weight")
        delta = _lora_delta(lora_layers[module_name]) if module_name in lora_layers else None
        if delta is not None:
            tensor = tensor + delta.to(tensor.dtype)
        checkpoint_name = name.replace(".base_layer.", ".").replace(".modules_to_save.default.", ".")
        yield checkpoint_name, tensor.to(dtype)


def _unwrap_peft(model: torch.nn.Module) -> tuple[torch.nn.Module, dict[str, torch.nn.Module]]:
    """The plain transformers model inside `model`, and its LoRA layers by module name."""
    if not hasattr(model, "get_base_model"):
        return model, {}
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()
    layers = {}
    for name, module in base.named_modules():
        if isinstance(module, LoraLayer):
            if any(module.use_dora.get(a, False) for a in module.active_adapters):
                raise NotImplementedError("pushing DoRA adapters to a rollout engine is not supported")
            layers[name] = module
    return base, layers


def _lora_delta(layer: torch.nn.Module) -> torch.Tensor | None:
    """The sum of the active adapters' weight deltas, None if there is nothing to add."""
    if layer.merged:  # the base weight already holds the delta
        return None
    deltas = [
        layer.get_delta_weight(adapter)
        for adapter in layer.active_adapters
        if adapter in layer.lora_A or adapter in getattr(layer, "lora_embedding_A", {})
    ]
    return sum(deltas[1:], deltas[0]) if deltas else None
