"""Rollouts from separate `vllm serve` processes, weights pushed to them over NCCL.

Placement: the learner keeps its own GPU(s); one or more vLLM servers run on other GPUs of the same
node (or other nodes), so generation and learning scale separately. Prompts are split across the
servers and sent as token ids to the OpenAI-compatible `/v1/completions` route; after each optimiser
step the learner's weights are broadcast to every server's workers through vLLM 0.32's
weight-transfer API (`vllm.distributed.weight_transfer`, dense "nccl" backend), then each server's
prefix cache is reset so no KV computed with the old weights is reused.

Start each server with the development routes (weight transfer, world size, prefix-cache reset) and
the NCCL weight-transfer engine enabled, one per GPU (or group of GPUs with --tensor-parallel-size):

    VLLM_SERVER_DEV_MODE=1 CUDA_VISIBLE_DEVICES=1 vllm serve MODEL_DIR --port 8001 \\
        --dtype bfloat16 --max-model-len 2048 --logprobs-mode raw_logprobs \\
        --weight-transfer-config '{"backend": "nccl"}'

and give the learner `remote_urls=["http://127.0.0.1:8001", ...]`. MODEL_DIR is the same safetensors
folder the learner starts from. The learner joins the NCCL group as rank 0 from its current CUDA
device; the servers must reach `master_address:master_port` (defaults: 127.0.0.1 and a free port,
right when the servers run on the learner's node).

How weight sync works (vLLM's protocol, driven by `NCCLTrainerWeightTransferEngine`): the first sync
asks every server for its worker count (`/get_world_size`), opens an NCCL group of 1 + all workers,
and tells each server its workers' rank offset (`/init_weight_transfer_engine`). Each sync then
posts `/start_weight_update`, posts `/update_weights` (parameter names, dtypes, shapes) to every
server at once while the learner broadcasts the tensors, and posts `/finish_weight_update`.

What is tested and what is not. Generation against a real `vllm serve` (CPU build, tiny model) is
covered by tests/engines/test_remote_engine.py. The weight-transfer path needs NCCL, hence CUDA GPUs on
both sides, and has not been run by this project: it follows the installed vLLM 0.32 source
(`weight_transfer/nccl_engine.py`, `clients.py`, `entrypoints/rl/online/api_router.py`), but its
rendezvous, the rank offsets given to several servers, and the logprob agreement after a sync are
untested. The trainer's post-sync logprob check (sync_check.py) is the safeguard: a broken
transfer shows up there on the first step.
"""
from __future__ import annotations

import json
import socket
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from r1train.engines.base import Completion, SamplingSettings, decode_completion
from r1train.engines.weights import checkpoint_weights


class RemoteVLLMEngine:
    """Generate on `vllm serve` processes; push weights to them over NCCL.

    Args:
        remote_urls: base URLs of the servers, e.g. ["http://127.0.0.1:8001"].
        tokenizer: the learner's tokenizer; decodes completions (text = decoded token ids).
        seed: per-call sampling seeds are derived from it (seed, seed + 1, ...), so a run repeats;
            None leaves sampling to the servers' own `--seed` stream.
        master_address: address of the learner's NCCL endpoint as the servers see it.
        master_port: its port; None picks a free one.
        dtype: dtype the weights travel in (the servers' dtype).
        timeout_s: per HTTP request, and for the servers to come up.
        eos_token_ids: extra token ids that end a completion, besides the model's own EOS.
    """

    def __init__(
        self,
        remote_urls: list[str],
        tokenizer,
        *,
        seed: int | None = None,
        master_address: str = "127.0.0.1",
        master_port: int | None = None,
        dtype: str = "bfloat16",
        timeout_s: float = 600.0,
        eos_token_ids: list[int] | None = None,
    ):
        if not remote_urls:
            raise ValueError("remote_urls must list at least one vLLM server")
        self.urls = [url.rstrip("/") for url in remote_urls]
        self.tokenizer = tokenizer
        self.seed = seed
        self.master_address = master_address
        self.master_port = master_port
        self.dtype = getattr(torch, dtype)
        self.timeout_s = timeout_s
        self.eos_token_ids = eos_token_ids if eos_token_ids is not None else [tokenizer.eos_token_id]
        self._calls = 0
        self._sender = None  # vLLM's trainer-side NCCL engine, created by the first sync
        for url in self.urls:
            _wait_until_healthy(url, timeout_s)

    def generate(self, prompts: list[list[int]], n: int, sampling: SamplingSettings) -> list[Completion]:
        """Sample `n` completions per prompt; returns len(prompts) * n completions, grouped by prompt."""
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        seed = sampling.seed if sampling.seed is not None else (None if self.seed is None else self.seed + self._calls)
        self._calls += 1
        chunks = _split(len(prompts), len(self.urls))  # contiguous prompt ranges, one per server
        with ThreadPoolExecutor(max_workers=len(self.urls)) as pool:
            replies = list(
                pool.map(
                    lambda job: self._complete(job[0], prompts[job[1] : job[2]], n, sampling, seed),
                    [(url, start, end) for url, (start, end) in zip(self.urls, chunks) if end > start],
                )
            )
        completions = []
        for (start, _end), choices in zip([c for c in chunks if c[1] > c[0]], replies):
            for choice in sorted(choices, key=lambda c: c["index"]):
                prompt_index = start + choice["index"] // n  # vLLM numbers choices prompt-major
                token_ids = list(choice["token_ids"])
                if choice["finish_reason"] not in ("stop", "length"):
                    raise RuntimeError(f"a completion ended with finish_reason={choice['finish_reason']!r}")
                completions.append(
                    Completion(
                        prompt_index=prompt_index,
                        prompt_token_ids=list(prompts[prompt_index]),
                        token_ids=token_ids,
                        text=decode_completion(self.tokenizer, token_ids, sampling.stop),
                        logprobs=[float(x) for x in choice["logprobs"]["token_logprobs"]],
                        finish_reason=choice["finish_reason"],
                    )
                )
        return completions

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Broadcast `model`'s weights (LoRA merged) to every server, then reset their prefix caches."""
        if self._sender is None:
            self._sender = self._connect(model)
        self._sender.send_weights()
        for url in self.urls:
            _post(url, "/reset_prefix_cache", None, self.timeout_s)

    def sleep(self) -> None:
        """The servers have GPUs of their own: nothing to free on the learner's."""

    def wake_up(self) -> None:
        """See sleep()."""

    def close(self) -> None:
        """Tear down the NCCL group; the servers keep running (they were started outside)."""
        if self._sender is not None:
            self._sender.shutdown()
            for url in self.urls:
                _post(url, "/shutdown_weight_transfer_engine", None, self.timeout_s)
            self._sender = None

    def _complete(self, url: str, prompts: list[list[int]], n: int, sampling: SamplingSettings, seed: int | None):
        body: dict[str, Any] = {
            "prompt": [list(p) for p in prompts],
            "n": n,
            "max_tokens": sampling.max_new_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "top_k": sampling.top_k,
            "stop": list(sampling.stop),
            "include_stop_str_in_output": True,
            "stop_token_ids": self.eos_token_ids,
            "logprobs": 0,  # the sampled token's own (raw, temperature-1) log-prob
            "return_token_ids": True,
        }
        if seed is not None:
            body["seed"] = seed
        return _post(url, "/v1/completions", body, self.timeout_s)["choices"]

    def _connect(self, model: torch.nn.Module):
        """Open the NCCL group with every server's workers (vLLM's trainer-side handshake)."""
        from r1train.engines.vllm_engine import import_vllm

        import_vllm()
        from vllm.distributed.weight_transfer import WeightTransferTrainerFactory
        from vllm.distributed.weight_transfer.nccl_engine import NCCLTrainerInitInfo

        world_sizes = [_get(url, "/get_world_size", self.timeout_s)["world_size"] for url in self.urls]
        init_info = NCCLTrainerInitInfo(
            master_address=self.master_address,
            master_port=self.master_port or _free_port(),
            world_size=1 + sum(world_sizes),
            rank=0,
        )
        client = _AllServersClient(self.urls, world_sizes, self.timeout_s)
        return WeightTransferTrainerFactory.trainer_init(init_info, client=client, source=_learner_source(model, self.dtype))


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
    """A vLLM `WeightSource` replaying `checkpoint_weights(model)` on every sync."""
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


def _split(count: int, parts: int) -> list[tuple[int, int]]:
    """`count` items cut into `parts` contiguous, near-equal (start, end) ranges."""
    bounds = [round(k * count / parts) for k in range(parts + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def _post(url: str, route: str, body: dict | None, timeout_s: float) -> dict:
    data = json.dumps(body).encode() if body is not None else b""
    request = urllib.request.Request(url + route, data=data, headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        text = response.read()
    return json.loads(text) if text else {}


def _get(url: str, route: str, timeout_s: float) -> dict:
    with urllib.request.urlopen(url + route, timeout=timeout_s) as response:
        return json.loads(response.read())


def _wait_until_healthy(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url + "/health", timeout=10):
                return
        except OSError as error:
            if time.monotonic() > deadline:
                raise ConnectionError(f"no vLLM server answered at {url}/health within {timeout_s:.0f} s") from error
            time.sleep(2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]
