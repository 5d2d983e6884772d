"""Rollouts from `vllm serve` worker processes; the learner's weights pushed to them after every step.

Placement: the learner keeps its own device(s); one or more vLLM servers (rollout workers) run
beside it, on other GPUs, other nodes, or other CPU cores, so generation and learning scale
separately. `r1train rollout-workers --model DIR --workers N` starts them (r1train/rollout_workers.py
shows the `vllm serve` command each one runs, for starting them by hand).

Generation. A step's prompts are cut into contiguous ranges, one per worker, so each worker samples
whole groups; every prompt is its own `/v1/completions` request (token ids in, `n` = group size), all
sent at once, and the step waits for all of them. Each prompt gets its own sampling seed, derived
from the engine seed, the call and the prompt's index: a seed shared by several prompts would give
them the same random draws (correlated groups), and seeding by index gives the same samples whatever
the number of workers. CPU workers get no seeds: vLLM's CPU build fails a seeded request whose
prefill is split over scheduler steps ("CPU Generator does not use offset"), which happens as soon
as a batch is large; they sample from their own streams. Every completion records which worker sampled it, so the trainer's post-sync
log-prob check is reported per worker: a worker that missed an update shows up by itself.

Weights (remote_weights.py): "disk" writes them once as safetensors, which every worker reloads;
"nccl" broadcasts them (CUDA on the learner and every worker); "auto" takes nccl where every side
has CUDA and disk otherwise. After a push every worker's prefix cache is reset, so no KV computed
with the old weights is reused.

Faults end in one line naming the worker, never a hang: at start the engine waits (with a progress
line) up to `timeout_s` for every worker, then checks each serves the run's model with a long
enough context; during the run a request that fails, or takes longer than `timeout_s`, stops the
step with a `RolloutWorkerError`. The run's last checkpoint stays, and `r1train run --resume`
continues once the worker is back.
"""
from __future__ import annotations

import json
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import torch

from r1train.engines.base import Completion, SamplingSettings
from r1train.engines.remote_weights import DiskWeightPush, NCCLWeightPush
from r1train.errors import RolloutWorkerError

START_HINT = "start them with `r1train rollout-workers --model MODEL_DIR --workers N`, or fix rollout.remote_urls"
RESUME_HINT = "the last checkpoint is kept: restart the worker, then `r1train run RECIPE --resume` continues"


class RemoteVLLMEngine:
    """Generate on `vllm serve` workers; push the learner's weights to them from disk or over NCCL.

    Args:
        remote_urls: base URLs of the workers, e.g. ["http://127.0.0.1:8001"].
        tokenizer: the learner's tokenizer; decodes completions (text = decoded token ids).
        seed: sampling seeds derive from it; None leaves sampling to the workers' own streams.
        weight_sync: "auto", "disk" or "nccl" (see the module docstring).
        weight_sync_dir: disk sync: a folder every worker can read; None: a temporary folder.
        model_names: the model the workers must serve: any of these names or folders (the
            learner's starting folder, the recipe's model name).
        min_model_len: the longest prompt + completion the run needs; a worker with a shorter
            context is refused.
        timeout_s: how long to wait for the workers at start, and for any one request.
        master_address, master_port: nccl sync: the learner's NCCL endpoint as the workers see it.
        eos_token_ids: extra token ids that end a completion, besides the model's own EOS.
    """

    seeds_each_call = True  # see RolloutEngine

    def __init__(
        self,
        remote_urls: list[str],
        tokenizer,
        *,
        seed: int | None = None,
        weight_sync: str = "auto",
        weight_sync_dir: str | Path | None = None,
        model_names: tuple[str, ...] = (),
        min_model_len: int | None = None,
        timeout_s: float = 600.0,
        master_address: str = "127.0.0.1",
        master_port: int | None = None,
        eos_token_ids: list[int] | None = None,
    ):
        if not remote_urls:
            raise ValueError("remote_urls must list at least one vLLM server")
        self.urls = [url.rstrip("/") for url in remote_urls]
        self.tokenizer = tokenizer
        self.seed = seed
        self.timeout_s = timeout_s
        self.eos_token_ids = eos_token_ids if eos_token_ids is not None else [tokenizer.eos_token_id]
        self._calls = 0
        wait_for_workers(self.urls, timeout_s)
        self.workers = [self._check_worker(url, model_names, min_model_len) for url in self.urls]
        dtype = getattr(torch, self.workers[0]["dtype"])
        everywhere_cuda = torch.cuda.is_available() and all(w["device"] == "cuda" for w in self.workers)
        self.seeded = all(w["device"] == "cuda" for w in self.workers)  # see the module docstring
        if weight_sync == "auto":
            weight_sync = "nccl" if everywhere_cuda else "disk"
        if weight_sync == "nccl" and not everywhere_cuda:
            devices = ", ".join(f"{url}: {w['device']}" for url, w in zip(self.urls, self.workers))
            raise RolloutWorkerError(
                f"rollout.weight_sync: nccl needs CUDA on the learner (here: {'cuda' if torch.cuda.is_available() else 'none'}) "
                f"and on every worker ({devices}): set rollout.weight_sync: disk or auto")
        self.weight_sync = weight_sync
        if weight_sync == "nccl":
            self._push = NCCLWeightPush(self.urls, dtype, timeout_s, self._get, master_address, master_port)
        else:
            self._push = DiskWeightPush(weight_sync_dir, self._reload_from, self.urls, dtype)

    @classmethod
    def from_recipe(cls, recipe, model: torch.nn.Module, model_dir, tokenizer) -> "RemoteVLLMEngine":
        r = recipe.rollout
        engine = cls(
            list(r.remote_urls), tokenizer, seed=recipe.seed, weight_sync=r.weight_sync,
            weight_sync_dir=r.weight_sync_dir, timeout_s=r.remote_timeout_s,
            model_names=(str(model_dir), recipe.model.name),
            min_model_len=recipe.data.max_prompt_tokens + r.max_new_tokens,
        )
        engine.sync_weights(model)  # workers keep the last weights pushed to them, maybe by another run
        return engine

    # -----------------------------------------------------------------------------------------
    def generate(self, prompts: list[list[int]], n: int, sampling: SamplingSettings) -> list[Completion]:
        """Sample `n` completions per prompt; returns len(prompts) * n completions, grouped by prompt."""
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        call = self._calls
        self._calls += 1
        if not prompts:
            return []
        owners = [i * len(self.urls) // len(prompts) for i in range(len(prompts))]  # whole groups per worker
        pool = ThreadPoolExecutor(max_workers=min(len(prompts), 256))
        futures = [pool.submit(self._complete, self.urls[w], prompt, n, sampling, self._seed(sampling, call, i))
                   for i, (w, prompt) in enumerate(zip(owners, prompts))]
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        pool.shutdown(wait=not pending, cancel_futures=True)  # one failed request fails the step: stop waiting
        for future in done:
            if future.exception() is not None:
                raise future.exception()
        completions = []
        for i, (worker, prompt, future) in enumerate(zip(owners, prompts, futures)):
            for choice in sorted(future.result(), key=lambda c: c["index"]):
                token_ids = list(choice["token_ids"])
                if choice["finish_reason"] not in ("stop", "length"):
                    raise RuntimeError(f"a completion ended with finish_reason={choice['finish_reason']!r}")
                completions.append(Completion.decoded(
                    self.tokenizer, sampling.stop, i, prompt, token_ids,
                    [float(x) for x in choice["logprobs"]["token_logprobs"]], choice["finish_reason"], worker))
        return completions

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Push `model`'s weights (LoRA merged) to every worker, then reset their prefix caches."""
        self._push.push(model)
        for url in self.urls:
            self._post(url, "/reset_prefix_cache", None)

    def sleep(self, weights_stale: bool = False) -> None:
        """The workers hold their own memory: nothing to free in the learner's process."""

    def wake_up(self) -> None:
        """See sleep()."""

    def release_idle_memory(self) -> None:
        """See sleep()."""

    def close(self) -> None:
        """Remove the pushed weights / tear down the NCCL group; the workers keep running."""
        if isinstance(self._push, NCCLWeightPush):
            self._push.close(lambda url, route: self._post(url, route, None))
        else:
            self._push.close()

    # -----------------------------------------------------------------------------------------
    def _seed(self, sampling: SamplingSettings, call: int, prompt_index: int) -> int | None:
        base = sampling.seed if sampling.seed is not None else (None if self.seed is None else self.seed + call)
        if base is None or not self.seeded:
            return None
        return (base * 1_000_003 + prompt_index) % 2**31

    def _complete(self, url: str, prompt: list[int], n: int, sampling: SamplingSettings, seed: int | None):
        body: dict[str, Any] = {
            "prompt": list(prompt),
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
        return self._post(url, "/v1/completions", body)["choices"]

    def _reload_from(self, url: str, folder: str) -> None:
        """Ask the worker to reload its weights, in place, from the safetensors in `folder`."""
        self._post(url, "/collective_rpc", {"method": "reload_weights", "kwargs": {"weights_path": folder}})

    def _check_worker(self, url: str, model_names: tuple[str, ...], min_model_len: int | None) -> dict[str, Any]:
        """The worker's model folder, context, dtype and device; refuses one that cannot serve this run."""
        (card,) = self._get(url, "/v1/models")["data"][:1]
        if model_names and not any(_same_model(card["root"], name) or card["id"] == name for name in model_names):
            raise RolloutWorkerError(
                f"rollout worker {url} serves {card['root']}, but this run needs {model_names[0]}: "
                f"restart the workers with --model {model_names[0]}")
        if min_model_len is not None and card["max_model_len"] < min_model_len:
            raise RolloutWorkerError(
                f"rollout worker {url} serves at most {card['max_model_len']} tokens, but this run needs "
                f"{min_model_len} (data.max_prompt_tokens + rollout.max_new_tokens): restart the workers "
                f"with --max-model-len {min_model_len}")
        try:
            info = self._get(url, "/server_info")["vllm_config"]  # a development route
        except RolloutWorkerError:
            raise RolloutWorkerError(
                f"rollout worker {url} lacks the weight-update routes: start it with VLLM_SERVER_DEV_MODE=1 "
                "(r1train rollout-workers does)") from None
        return {"root": card["root"], "max_model_len": card["max_model_len"],
                "dtype": re.search(r"\bdtype=torch\.(\w+)", info).group(1),
                "device": re.search(r"\bdevice_config=(\w+)", info).group(1)}

    def _post(self, url: str, route: str, body: dict | None) -> dict:
        data = json.dumps(body).encode() if body is not None else b""
        request = urllib.request.Request(url + route, data=data, headers={"Content-Type": "application/json"}, method="POST")
        return _answer(request, url, route, self.timeout_s)

    def _get(self, url: str, route: str) -> dict:
        return _answer(urllib.request.Request(url + route), url, route, self.timeout_s)


def _answer(request: urllib.request.Request, url: str, route: str, timeout_s: float) -> dict:
    """The JSON a worker answers, or a RolloutWorkerError naming it."""
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            text = response.read()
    except urllib.error.HTTPError as error:
        detail = error.read().decode(errors="replace")[:300]
        raise RolloutWorkerError(f"rollout worker {url} refused {route} (HTTP {error.code}: {detail})") from None
    except OSError as error:  # refused, reset, timed out: the worker is gone or stuck
        reason = getattr(error, "reason", error)
        raise RolloutWorkerError(f"rollout worker {url} did not answer {route} ({reason}); {RESUME_HINT}") from None
    return json.loads(text) if text else {}


def wait_for_workers(urls: list[str], timeout_s: float, check: Callable[[], None] | None = None,
                     poll_s: float = 2.0) -> None:
    """Return once every worker answers /health; print a progress line meanwhile, fail after timeout_s.

    `check`, called at every poll, may raise to stop waiting early (a worker process that exited).
    """
    start = time.monotonic()
    waiting, reason = list(urls), ""
    last_report = None
    while True:
        for url in list(waiting):
            try:
                urllib.request.urlopen(url + "/health", timeout=5).close()
                waiting.remove(url)
            except OSError as error:
                reason = getattr(error, "reason", error)
        elapsed = time.monotonic() - start
        if not waiting:
            if last_report is not None:
                print(f"r1train: rollout workers answer: {len(urls)}/{len(urls)}", file=sys.stderr, flush=True)
            return
        if check is not None:
            check()
        if elapsed > timeout_s:
            raise RolloutWorkerError(
                f"rollout worker {waiting[0]} did not answer within {timeout_s:.0f} s ({reason}): {START_HINT}")
        if last_report is None or elapsed - last_report >= 10:
            print(f"r1train: waiting for rollout workers: {len(urls) - len(waiting)}/{len(urls)} answer "
                  f"({waiting[0]}: {reason}), {elapsed:.0f}/{timeout_s:.0f} s", file=sys.stderr, flush=True)
            last_report = elapsed
        time.sleep(poll_s)


def _same_model(served: str, name: str) -> bool:
    """Whether a worker's model (its folder, as it was started) is `name` (a folder or a hub id)."""
    if served == name:
        return True
    served_path, path = Path(served).expanduser(), Path(name).expanduser()
    return served_path.exists() and path.exists() and served_path.resolve() == path.resolve()
