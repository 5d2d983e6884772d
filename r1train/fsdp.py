"""Fully sharded data parallelism (torch FSDP2) for the GRPO learner: `training.fsdp: true`.

Under a multi-process launch each process then keeps 1/N of the weights, gradients and AdamW
state instead of all of them. Every decoder layer is one shard group and the model itself the
root group (embeddings, final norm, untied output layer); a group's weights are gathered just
before its forward pass and dropped again after it, so at most a layer or two are whole at once.

r1train applies FSDP itself rather than through accelerate's FSDP plugin because three things
outside the learner's forward and backward must see whole weights, and each needs care here:
- the learner's scoring pass (`r1train/logprobs.py`) reaches the decoder and output layer
  directly instead of calling the model's forward, so it is registered as an FSDP forward method
  of the root (`token_logprobs`); HF generation goes through the model's own forward;
- a gathered group costs a collective, so every process must run the same number of forward
  passes: the learner pads with empty passes, HF generation runs in lock-step (`synced_gpus`);
- the weight push to vLLM, checkpoints and the saved model gather full tensors one at a time
  (every process takes part; only the main one keeps them).

Deliberate simplifications: one flat mesh over all processes (no hybrid sharding across nodes),
no CPU offload, no LoRA (adapters are small enough to replicate), and a frozen reference model is
kept whole on every process.
"""
from __future__ import annotations

import functools

import torch

TOKEN_LOGPROBS = "token_logprobs"  # name of the root's registered scoring method


def is_sharded(model: torch.nn.Module) -> bool:
    """Whether `model` was sharded by `shard_model`."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated blocks of a transformers causal LM (the classes it names as never to be split)."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    layers = [module for module in model.modules() if type(module).__name__ in names]
    if not layers:
        raise ValueError(f"{type(model).__name__} names no decoder layer class (_no_split_modules); "
                         "training.fsdp needs one to shard by")
    return layers


def shard_model(model: torch.nn.Module, device: torch.device, score_fn) -> torch.nn.Module:
    """Shard `model` in place across all processes of the default process group.

    Args:
        model: a transformers causal LM, on any device (moved to `device` first).
        device: this process's device; the mesh is built over that device type.
        score_fn: `score_fn(model, *args, **kwargs)`, the learner's scoring pass; it becomes
            `model.token_logprobs(*args, **kwargs)` with the root's gather and release around it.
    Returns:
        The same module object, now an FSDP module.
    """
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    model.to(device)
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    setattr(model, TOKEN_LOGPROBS, functools.partial(score_fn, model))
    register_fsdp_forward_method(model, TOKEN_LOGPROBS)
    return model


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor behind a shard (a collective: every process must call it in the same
    order); a tensor that is not sharded comes back as it is."""
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's state dict on the main process, on CPU; {} on the others (collective)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


@torch.no_grad()
def load_full_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Copy whole tensors (by parameter name) into this process's shards, without communication:
    every process holds the same `weights` (each read the checkpoint) and keeps its own slice."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    for name, param in model.named_parameters():
        if name not in weights:
            continue
        tensor = weights[name].to(param.dtype)
        if isinstance(param, DTensor):
            if tuple(tensor.shape) != tuple(param.shape):
                raise ValueError(f"{name}: checkpoint shape {tuple(tensor.shape)} != model shape {tuple(param.shape)}")
            local = distribute_tensor(tensor.to(param.device), param.device_mesh, param.placements, src_data_rank=None)
            param.to_local().copy_(local.to_local())
        else:
            param.copy_(tensor)


def full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimiser state of the whole model, keyed by parameter name, on the main process (collective)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer,
                                    options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Inverse of `full_optimizer_state`; every process passes the whole state (collective)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
