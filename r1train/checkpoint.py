"""Crash-safe checkpoints: written whole to a temporary folder, then renamed into place.

A checkpoint folder `step-000012/` holds the trainable weights (full model, or only the LoRA
adapter), the optimiser and scheduler state, every RNG state and the trainer's own state (step,
data position). Every file is flushed to disk before the folder is renamed, and the rename is
atomic, so a crash at any point leaves either the old set of checkpoints or the new one: a crash
while writing leaves a `.tmp-*` folder, which is ignored and cleaned up, and the previous
checkpoint stays usable. Old checkpoints are renamed to `.del-*` before they are deleted, so a
crash halfway through a deletion never leaves a half-deleted folder that looks complete.

`trainer_state.json` is written last: a `step-*` folder without it is never loaded.
"""
from __future__ import annotations

import errno
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

_PREFIX = "step-"
_TMP = ".tmp-"
_DELETING = ".del-"


def save_checkpoint(directory: Path, step: int, trainable: dict[str, torch.Tensor], optimizer_state: dict,
                    trainer_state: dict[str, Any], keep: int, rng_state: dict[str, Any] | None = None) -> Path:
    """Write checkpoint `step` atomically and keep only the newest `keep` checkpoints.

    `rng_state` is the RNG states to store (`current_rng_state()`; default: taken now). A caller
    that writes from another thread takes them first, on its own thread, while they are the step's.
    Returns the checkpoint folder, `directory/step-NNNNNN`.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"{_PREFIX}{step:06d}"
    tmp = directory / f"{_TMP}{final.name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir()
        save_file(unshared(trainable), str(tmp / "weights.safetensors"))
        torch.save(optimizer_state, tmp / "optimizer.pt")
        torch.save(rng_state if rng_state is not None else current_rng_state(), tmp / "rng.pt")
        (tmp / "trainer_state.json").write_text(json.dumps({"step": step, **trainer_state}, indent=2))
        for file in tmp.iterdir():
            _fsync_file(file)
        _fsync_dir(tmp)
    except (OSError, RuntimeError) as exc:  # torch.save wraps a failed write in a RuntimeError
        free = _free_bytes(directory)  # measured before the partial folder frees its space again
        shutil.rmtree(tmp, ignore_errors=True)  # nothing half-written stays behind
        raise CheckpointWriteError(final, latest_checkpoint(directory), exc, free) from exc
    if final.exists():  # the same step saved again (e.g. a rerun with more steps): retire the old one
        _retire(final)
    os.replace(tmp, final)
    _fsync_dir(directory)
    for old in list_checkpoints(directory)[:-keep]:
        _retire(old)
    _remove_retired(directory)
    return final


def unshared(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`tensors` as safetensors takes them: contiguous, no two on one storage (it refuses those).
    Only the tensors that need it are copied: a whole copy of the weights would add their size
    (513 MiB for the 135M model in fp32) to the run's memory at every checkpoint. Parameters come
    once per tensor from `named_parameters` (a tied weight under one name), so usually none is."""
    seen: set[int] = set()
    out = {}
    for name, tensor in tensors.items():
        tensor = tensor.detach()
        pointer = tensor.untyped_storage().data_ptr()
        if pointer in seen or not tensor.is_contiguous():
            tensor = tensor.clone(memory_format=torch.contiguous_format)  # one copy, contiguous
        seen.add(pointer)
        out[name] = tensor
    return out


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (most often: the disk is full); the message says which
    checkpoint is the last good one, which a rerun resumes from."""

    def __init__(self, checkpoint: Path, last_good: Path | None, cause: BaseException, free_bytes: int | None):
        # torch.save reports a full disk as "unexpected pos ..." without an errno: the free space
        # left on the disk tells instead.
        full = _is_disk_full(cause) or (free_bytes is not None and free_bytes < _NEARLY_FULL)
        if full:
            left = f" ({free_bytes / 2**20:.1f} MiB left)" if free_bytes is not None else ""
            reason, fix = f"the disk is full{left}", "free some space, then run the same command again to resume"
        else:
            reason, fix = " ".join(str(cause).split())[:200] or type(cause).__name__, "run the same command again to resume"
        kept = f"the last good checkpoint is {last_good}" if last_good else "no earlier checkpoint was written"
        super().__init__(f"cannot write checkpoint {checkpoint}: {reason}; nothing half-written was left, "
                         f"{kept}; {fix}")


_NEARLY_FULL = 64 * 2**20  # bytes: less than this left after a failed write counts as a full disk


def _is_disk_full(error: BaseException | None) -> bool:
    """ENOSPC or EDQUOT anywhere in the exception chain."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        error = error.__cause__ or error.__context__
    return False


def _free_bytes(directory: Path) -> int | None:
    try:
        stats = os.statvfs(directory)
    except OSError:
        return None
    return stats.f_bavail * stats.f_frsize


def list_checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoint folders, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    complete = [p for p in directory.iterdir() if p.name.startswith(_PREFIX) and (p / "trainer_state.json").is_file()]
    return sorted(complete)


def latest_checkpoint(directory: Path) -> Path | None:
    found = list_checkpoints(directory)
    return found[-1] if found else None


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict, dict[str, Any]]:
    """Returns (trainable weights, optimiser state, trainer state) and restores the RNG states."""
    path = Path(path)
    weights = load_file(str(path / "weights.safetensors"))
    optimizer_state = torch.load(path / "optimizer.pt", weights_only=False)
    trainer_state = json.loads((path / "trainer_state.json").read_text())
    _set_rng_state(torch.load(path / "rng.pt", weights_only=False))
    return weights, optimizer_state, trainer_state


def clean_partial(directory: Path) -> None:
    """Remove what a crash in the middle of a save or a deletion left behind."""
    directory = Path(directory)
    if not directory.is_dir():
        return
    for tmp in directory.glob(f"{_TMP}{_PREFIX}*"):
        shutil.rmtree(tmp, ignore_errors=True)
    for retired in directory.glob(f"{_DELETING}{_PREFIX}*"):
        original = directory / retired.name[len(_DELETING):]
        # A crash between retiring a checkpoint and renaming its replacement into place: the
        # retired copy is complete (it was renamed whole), so put it back.
        if not original.exists() and (retired / "trainer_state.json").is_file():
            os.replace(retired, original)
    _remove_retired(directory)


def _retire(folder: Path) -> None:
    target = folder.with_name(_DELETING + folder.name)
    if target.exists():
        shutil.rmtree(target)
    os.replace(folder, target)


def _remove_retired(directory: Path) -> None:
    for retired in directory.glob(f"{_DELETING}{_PREFIX}*"):
        shutil.rmtree(retired, ignore_errors=True)


def current_rng_state() -> dict[str, Any]:
    """Every RNG state a resume restores (Python, NumPy, torch CPU and CUDA)."""
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    try:
        import numpy as np

        state["numpy"] = np.random.get_state()
    except ImportError:
        pass
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "numpy" in state:
        import numpy as np

        np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
