"""Weight sync at memory speed for the colocated vLLM engine: copy the learner's tensors straight
into the engine's own parameters, with the dtype cast fused into the copy.

vLLM's `reload_weights` path is general but slow for a per-step push (`docs/PERFORMANCE.md`
has the measured sync times): every sync it moves each layer to the meta device and back,
wraps every weight loader, binds arguments, and runs the loaders one tensor at a time on tensors
the caller first cast into new memory.

Where each learner tensor goes is a fixed fact of the two models, so it is learnt once: the first
sync runs vLLM's own loaders (`reload_weights`) on the learner's fp32 tensors while a torch
function mode records every `Tensor.copy_` whose source is one of them. The destination of such
a copy is a view of one engine parameter: a slice of the stacked `qkv_proj` for `q_proj`, the
`gate_proj` half of `gate_up_proj`, the first rows of a padded embedding. The recorded plan keeps,
per engine parameter, those views as (size, stride, offset), so every later sync is one `copy_`
per learner tensor. vLLM decides the mapping with its own loaders, so stacked, tied and padded
parameters of any architecture it loads come out as it would load them.

On CPU, vLLM hands each linear layer's weight to a packed oneDNN (or sgl-kernel) matmul and keeps
only an empty parameter (`dispatch_cpu_unquantized_gemm`). For those layers the plan fills a
fresh full-size staging tensor and runs the layer's `process_weights_after_loading` again, which
packs it (the packed copy is the only one kept). A layer holding a live weight that others read
packed (the tied `lm_head` on CPU) is re-packed after the copy. On GPU nothing is packed and
the copies alone are the sync; that path has not run here (no GPU with vLLM).

Since a push rebuilds every packed weight and rewrites every parameter it covers whole, the
engine's copy is dead weight between the learner's update and the push: `release` frees it (the
packed weights, and covered parameters such as the embedding shrunk to nothing) and the next
`push` brings it back. The CPU engine does so while it sleeps through the learn phase.

Not covered, by choice (the caller keeps `reload_weights` for them): LoRA adapters (the pushed
tensor is a sum, not a parameter), FSDP-sharded learners, quantized engines, and any model whose
loaders transform a tensor instead of copying it (the plan then misses a learner tensor and is
refused). The post-sync log-prob check in the trainer verifies every sync either way.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.overrides import TorchFunctionMode


@dataclass
class _Piece:
    """One learner tensor's place in an engine parameter: a strided view of it."""
    learner_name: str
    size: tuple[int, ...]
    stride: tuple[int, ...]
    offset: int  # elements from the start of the engine parameter


@dataclass
class _Target:
    """An engine parameter the learner's tensors are copied into."""
    module_name: str
    param_name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    pieces: list[_Piece] = field(default_factory=list)
    staged: bool = False  # the engine keeps only a packed copy: fill a fresh tensor and re-pack it

    @property
    def covered(self) -> bool:
        """Whether the pieces fill the whole parameter (else the rest, padding, keeps zeros)."""
        return sum(_numel(p.size) for p in self.pieces) == _numel(self.shape)


def learner_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """The learner's parameters under checkpoint names, each once (a tied weight under its first
    name); None when the direct copy does not apply (LoRA via peft, FSDP-sharded parameters)."""
    if hasattr(model, "get_base_model"):
        return None
    tensors = {}
    for name, param in model.named_parameters():
        if type(param.data) is not torch.Tensor:  # a DTensor shard (FSDP)
            return None
        tensors[name] = param.detach()
    return tensors


class _CopyRecorder(TorchFunctionMode):
    """Records each `Tensor.copy_(dst, src)` whose `src` is one of the learner's tensors."""

    def __init__(self, engine_model: torch.nn.Module, sources: dict[str, torch.Tensor]):
        super().__init__()
        self.engine_model = engine_model
        self.source_names = {_view_key(t): name for name, t in sources.items()}
        self.pieces: list[tuple[str, str, torch.Tensor, torch.Tensor]] = []  # (learner name, engine parameter name, its data, the copy destination)
        self.unmatched = 0  # copies from a learner tensor into memory that is no engine parameter

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.copy_ and len(args) >= 2 and isinstance(args[1], torch.Tensor):
            name = self.source_names.get(_view_key(args[1]))
            if name is not None:
                self._record(name, args[0])
        return func(*args, **kwargs)

    def _record(self, learner_name: str, dst: torch.Tensor) -> None:
        pointer = dst.untyped_storage().data_ptr()
        for module_name, module in self.engine_model.named_modules():
            for param_name, param in module.named_parameters(recurse=False):
                if param.numel() and param.untyped_storage().data_ptr() == pointer:
                    self.pieces.append((learner_name, f"{module_name}.{param_name}", param.data, dst))
                    return
        self.unmatched += 1


def _view_key(t: torch.Tensor) -> tuple:
    return (t.data_ptr(), tuple(t.shape), tuple(t.stride()))


class DirectWeightSync:
    """A plan that copies a learner's tensors into a vLLM model's parameters; see the module doc.

    Build it with `record(...)` around the first `reload_weights`; then `push(learner)` is a sync.
    """

    def __init__(self, engine_model: torch.nn.Module, targets: list[_Target], learner_shapes: dict[str, tuple]):
        self.engine_model = engine_model
        self.learner_shapes = learner_shapes
        self._released_storages: list[tuple[torch.UntypedStorage, int]] = []  # see release()
        self.released = False  # release() freed the engine's weights; the next push() brings them back
        modules = dict(engine_model.named_modules())
        self.targets_by_module: dict[str, list[_Target]] = {}
        for target in targets:
            self.targets_by_module.setdefault(target.module_name, []).append(target)
        # On CPU a module with `cpu_linear` computes from a packed copy of its weight: it is packed
        # again after its own targets are filled, and so is any other module sharing one of them
        # (the tied lm_head reads the embedding's weight).
        live = {id(getattr(modules[t.module_name], t.param_name)) for t in targets if not t.staged}
        self.shared_readers = [
            name for name, module in modules.items()
            if name not in self.targets_by_module and hasattr(module, "cpu_linear")
            and any(id(p) in live for p in module.parameters(recurse=False))
        ]

    @classmethod
    def record(cls, engine_model: torch.nn.Module, sources: dict[str, torch.Tensor]):
        """A context manager: run vLLM's loaders on `sources` inside it; `.plan` is then the plan,
        or None with `.refusal` saying why the direct copy cannot reproduce that load."""
        return _PlanRecording(cls, engine_model, sources)

    def accepts(self, tensors: dict[str, torch.Tensor] | None) -> bool:
        """Whether `tensors` (from `learner_tensors`) are what this plan was recorded for."""
        return tensors is not None and {n: tuple(t.shape) for n, t in tensors.items()} == self.learner_shapes

    @torch.no_grad()
    def release(self) -> None:
        """Free the engine's copy of every weight the next push rewrites whole: the packed matmul
        weights (each push packs new ones) and the parameters the plan covers entirely (the
        embedding). The engine cannot run until `push` brings them back."""
        modules = dict(self.engine_model.named_modules())
        for module_name, targets in self.targets_by_module.items():
            module = modules[module_name]
            for target in targets:
                storage = getattr(module, target.param_name).untyped_storage()
                if not target.staged and target.covered and storage.nbytes():
                    self._released_storages.append((storage, storage.nbytes()))
                    storage.resize_(0)
            if hasattr(module, "cpu_linear"):
                module.cpu_linear = _released_weights
        for module_name in self.shared_readers:
            modules[module_name].cpu_linear = _released_weights
        self.released = True

    @torch.no_grad()
    def push(self, tensors: dict[str, torch.Tensor]) -> None:
        """Copy `tensors` into the engine (cast to its dtype in the copy), re-packing what needs it."""
        for storage, nbytes in self._released_storages:  # rewritten whole by the copies below
            storage.resize_(nbytes)
        self._released_storages = []
        modules = dict(self.engine_model.named_modules())
        for module_name, targets in self.targets_by_module.items():
            module = modules[module_name]
            for target in targets:
                if target.staged:
                    base = (torch.empty if target.covered else torch.zeros)(target.shape, dtype=target.dtype)
                else:
                    base = getattr(module, target.param_name).data
                for piece in target.pieces:
                    base.as_strided(piece.size, piece.stride, piece.offset).copy_(tensors[piece.learner_name])
                if target.staged:
                    setattr(module, target.param_name, torch.nn.Parameter(base, requires_grad=False))
            if hasattr(module, "cpu_linear"):
                module.quant_method.process_weights_after_loading(module)  # packs; drops a staged weight
        for module_name in self.shared_readers:
            modules[module_name].quant_method.process_weights_after_loading(modules[module_name])
        self.released = False


WEIGHTS_RELEASED = ("the engine's weights were released while the learner trained (sleep with weights_stale=True); "
                    "push the learner's weights with sync_weights before generating")


def _released_weights(*args, **kwargs):
    raise RuntimeError(WEIGHTS_RELEASED)


class _PlanRecording:
    def __init__(self, plan_cls, engine_model: torch.nn.Module, sources: dict[str, torch.Tensor]):
        self.plan_cls, self.engine_model, self.sources = plan_cls, engine_model, sources
        self.recorder = _CopyRecorder(engine_model, sources)
        self.plan: DirectWeightSync | None = None
        self.refusal: str | None = None

    def __enter__(self):
        self.recorder.__enter__()
        return self

    def __exit__(self, *exc_info):
        self.recorder.__exit__(*exc_info)
        if exc_info[0] is None:
            self.plan, self.refusal = self._build()
        return False

    def _build(self) -> tuple[DirectWeightSync | None, str | None]:
        copied = {learner_name for learner_name, *_ in self.recorder.pieces}
        missing = sorted(set(self.sources) - copied)
        if missing:
            return None, f"vLLM's loaders did not copy {missing[:3]} as they are"
        if self.recorder.unmatched:
            return None, f"{self.recorder.unmatched} learner tensors were copied outside the engine's parameters"
        modules = dict(self.engine_model.named_modules())
        targets: dict[tuple, _Target] = {}
        for learner_name, full_name, base, view in self.recorder.pieces:
            module_name, _, param_name = full_name.rpartition(".")
            live = getattr(modules[module_name], param_name)
            # The parameter the engine holds now: the loaded one itself, or (CPU-packed layers) an
            # empty stand-in; a tied parameter shared by two modules is one target.
            staged = live.numel() == 0
            key = (module_name, param_name) if staged else id(live)
            target = targets.setdefault(key, _Target(module_name, param_name, tuple(base.shape), base.dtype, staged=staged))
            if not staged and tuple(live.shape) != tuple(base.shape):
                return None, f"{full_name} changed shape after loading"
            piece = _Piece(learner_name, tuple(view.shape), tuple(view.stride()), view.storage_offset() - base.storage_offset())
            if piece not in target.pieces:  # the tied weight arrives under two names
                target.pieces.append(piece)
        shapes = {name: tuple(t.shape) for name, t in self.sources.items()}
        return self.plan_cls(self.engine_model, list(targets.values()), shapes), None


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
