"""Two ways to push the learner's weights to `vllm serve` rollout workers: from disk, or over NCCL.

Disk (`DiskWeightPush`, works everywhere). The learner writes its weights once, as safetensors
shards in the engine's dtype, to a new folder under a directory every worker can read, renamed into
place only when complete (a worker never reads a half-written folder). Each worker then reloads
them through vLLM's own in-place reload (`Worker.reload_weights(weights_path=...)`), reached over
the server's development route `/collective_rpc` (servers started with VLLM_SERVER_DEV_MODE=1).
The previous version's folder is removed once every worker has the new one, so the directory holds
at most one model. Tied embeddings: `checkpoint_weights` yields the tied tensor under both names and
both are written, because vLLM loads both and keeps the last one.

NCCL (`NCCLWeightPush`, CUDA on the learner and every worker). vLLM 0.32's weight-transfer API
(`vllm.distributed.weight_transfer`, dense "nccl" backend), driven by its
`NCCLTrainerWeightTransferEngine`: the first push asks every server for its worker count
(`/get_world_size`), opens an NCCL group of 1 + all workers and tells each server its workers' rank
offset (`/init_weight_transfer_engine`); each push then posts `/start_weight_update`, posts
`/update_weights` (names, dtypes, shapes) to every server at once while the learner broadcasts the
tensors, and posts `/finish_weight_update`. Servers need `--weight-transfer-config
'{"backend": "nccl"}'`. This path follows the installed vLLM source but has not been run by this
project (no GPUs here); the per-worker log-prob check after every push is its safeguard.
"""
from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from r1train.engines.weights import checkpoint_weights

SHARD_BYTES = 1 << 30  # one safetensors file per GiB: the learner holds at most one shard's copy


class DiskWeightPush:
    """Write the weights to `root/<version>/` once; every worker reloads them from there.

    Args:
        root: a folder every worker can read (same path on the workers' machines); None makes a
            temporary one, removed by close(), or when this object is collected or the interpreter
            exits if a failed run never reaches close() (one model's copy per failed run otherwise).
        reload: `reload(url, folder)` asks the worker at `url` to load the weights in `folder`.
        urls: the workers.
        dtype: dtype the weights are written in (the workers').
    """

    def __init__(self, root: str | Path | None, reload: Callable[[str, str], None], urls: list[str], dtype: torch.dtype):
        self._temporary = tempfile.TemporaryDirectory(prefix="r1train-weights-") if root is None else None
        self.root = Path(self._temporary.name if self._temporary else root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.reload, self.urls, self.dtype = reload, urls, dtype
        self.version = 0
        self._current: Path | None = None

    def push(self, model: torch.nn.Module) -> None:
        self.version += 1
        folder = self._write(model)
        with ThreadPoolExecutor(max_workers=len(self.urls)) as pool:
            for future in [pool.submit(self.reload, url, str(folder)) for url in self.urls]:
                future.result()
        if self._current is not None:
            shutil.rmtree(self._current, ignore_errors=True)
        self._current = folder

    def _write(self, model: torch.nn.Module) -> Path:
        from safetensors.torch import save_file

        partial = Path(tempfile.mkdtemp(prefix=".writing-", dir=self.root))
        shard: dict[str, torch.Tensor] = {}
        size, index = 0, 0
        for name, tensor in checkpoint_weights(model, self.dtype):
            # safetensors refuses two names on one storage (a tied weight already in the engine dtype)
            shard[name] = tensor.detach().to("cpu", copy=True).contiguous()
            size += shard[name].nbytes
            if size >= SHARD_BYTES:
                save_file(shard, str(partial / f"model-{index:05d}.safetensors"))
                shard, size, index = {}, 0, index + 1
        if shard:
            save_file(shard, str(partial / f"model-{index:05d}.safetensors"))
        folder = self.root / f"v{self.version:06d}"
        partial.rename(folder)  # atomic: a worker sees the whole folder or none of it
        return folder

    def close(self) -> None:
        if self._current is not None:
            shutil.rmtree(self._current, ignore_errors=True)
            self._current = None
        if self._temporary is not None:
            self._temporary.cleanup()


class NCCLWeightPush:
    """Broadcast the weights from the learner's CUDA device to every worker over one NCCL group."""

    def __init__(self, urls: list[str], dtype: torch.dtype, timeout_s: float, get: Callable[[str, str], dict],
                 master_address: str = "127.0.0.1", master_port: int | None = None):
        self.urls, self.dtype, self.timeout_s, self._get = urls, dtype, timeout_s, get
        self.master_address, self.master_port = master_address, master_port
        self._sender = None  # vLLM's trainer-side NCCL engine, created by the first push

    def push(self, model: torch.nn.Module) -> None:
        if self._sender is None:
            self._sender = self._connect(model)
        self._sender.send_weights()

    def _connect(self, model: torch.nn.Module):
        from r1train.engines.vllm_engine import import_vllm

        import_vllm()
        from vllm.distributed.weight_transfer import WeightTransferTrainerFactory
        from vllm.distributed.weight_transfer.nccl_engine import NCCLTrainerInitInfo

        world_sizes = [self._get(url, "/get_world_size")["world_size"] for url in self.urls]
        init_info = NCCLTrainerInitInfo(
            master_address=self.master_address,
            master_port=self.master_port or _free_port(),
            world_size=1 + sum(world_sizes),
            rank=0,
        )
        client = _AllServersClient(self.urls, world_sizes, self.timeout_s)
        return WeightTransferTrainerFactory.trainer_init(init_info, client=client, source=_learner_source(model, self.dtype))

    def close(self, post: Callable[[str, str], Any]) -> None:
        """Tear down the NCCL group; the servers keep running (they were started outside)."""
        if self._sender is not None:
            self._sender.shutdown()
            for url in self.urls:
                post(url, "/shutdown_weight_transfer_engine")
            self._sender = None


class _AllServersClient:
    """vLLM's `VLLMWeightSyncClient` protocol over several servers at once.

    Every call goes to all servers concurrently (their workers all sit in the same NCCL broadcast).
    vLLM's trainer engine places the workers at rank offset 1, after the learner; server k's
    workers are shifted further by the worker counts of servers 0..k-1.
    """

    def __init__(self, urls: list[str], world_sizes: list[int], timeout_s: float):
        from vllm.distributed.weight_transfer import HTTPVLLMWeightSyncClient

        self.clients = [HTTPVLLMWeightSyncClient(url, timeout=timeout_s) for url in urls]
        self.offsets = [sum(world_sizes[:k]) for k in range(len(urls))]

    def _all(self, call) -> None:
        with ThreadPoolExecutor(max_workers=len(self.clients)) as pool:
            for future in [pool.submit(call, k, client) for k, client in enumerate(self.clients)]:
                future.result()

    def init_weight_transfer_engine(self, init_info: dict[str, Any]) -> None:
        self._all(lambda k, c: c.init_weight_transfer_engine({**init_info, "rank_offset": init_info["rank_offset"] + self.offsets[k]}))

    def start_weight_update(self) -> None:
        self._all(lambda k, c: c.start_weight_update())

    def update_weights(self, update_info) -> None:
        self._all(lambda k, c: c.update_weights(update_info))

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        self._all(lambda k, c: c.finish_weight_update(weight_version))


def _learner_source(model: torch.nn.Module, dtype: torch.dtype):
    """A vLLM `WeightSource` replaying `checkpoint_weights(model)` on every push."""
    from vllm.distributed.weight_transfer import ParamMeta, WeightSource

    class LearnerWeights(WeightSource):
        def __init__(self):
            self._meta: list[ParamMeta] | None = None

        def metadata(self) -> list[ParamMeta]:
            if self._meta is None:  # names, dtypes and shapes never change during training
                self._meta = [ParamMeta(n, t.dtype, tuple(t.shape)) for n, t in checkpoint_weights(model, dtype)]
            return self._meta

        def __iter__(self):
            return checkpoint_weights(model, dtype)

    return LearnerWeights()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]
