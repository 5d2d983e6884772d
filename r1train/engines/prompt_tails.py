"""A prompt's last, partial KV block computed once for all its samples (CPU engine).

vLLM's V1 engine shares KV blocks between requests only when a block is full: its prefix cache is
keyed by whole blocks. The n samples of a GRPO group are n requests with one prompt, so each
computes the prompt's last partial block itself: on a CPU, where a block is 32 tokens or a
multiple, that is up to 31 tokens of prefill per sample. With the main recipe's prompts (77-79
tokens) a generate call that samples one token took 3.4 s with 8 samples a prompt and 0.4-0.7 s
with one (benchmarks/results/generation_avx2_2026-12-05.md).

`PromptTailSharing` fills that gap through vLLM's public KV connector interface, from outside
vLLM (`kv_transfer_config`, `kv_connector_module_path`):
- Scheduler side: the first request seen for a prompt is its donor and computes normally. A later
  request with the same prompt tokens whose prefix-cache hit already covers the full blocks is
  told that the tokens of the partial block, all but the prompt's last, are "external" and load
  asynchronously: it waits without computing, its own fresh block allocated.
- Worker side: after the forward pass in which a donor computed its partial block
  (`wait_for_save`), that block is copied from every layer's cache into a small store; each
  waiting request whose prompt is there gets the copy written into its own block and is reported
  loaded (`get_finished`). Its next step computes only the prompt's last token, whose logits it
  samples from. The store entry goes once no live request has that prompt.

Safety: a waiting request whose donor ended without saving (aborted), or that waited
MAX_WAIT_STEPS, is reported loaded with its block failed (`get_block_ids_with_load_errors`), and
vLLM, told to recompute load failures (vllm_engine.PROMPT_TAILS_KV_TRANSFER), computes it itself.
The copies are exact: a donor's block and the copies hold the same values, and the samples'
logprobs agree with the learner's as before (tests/engines/test_prompt_tails.py). Weights pushed
between generate calls leave no stale block behind: a prompt's entry is dropped when its last
request finishes (the worker drops it at the next step, before any copy of that step; the
colocated engine also drops them all before the learner trains and after each push), and the
next request with that prompt is a new donor.

Only where the KV cache is one tensor per layer indexed by block first (vLLM's CPU attention:
[blocks, kv heads, block size, 2 x head size]): the colocated engine and the `vllm serve` workers
ask for it on CPU only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from vllm.distributed.kv_transfer.kv_connector.v1.base import KVConnectorBase_V1, KVConnectorMetadata

# Engine steps a request may wait for its donor's block before it computes the block itself. A
# donor saves in the step it is scheduled, a few steps later when its prompt is split over steps.
MAX_WAIT_STEPS = 64

PromptKey = tuple  # (prompt token ids, LoRA id, cache salt): requests that may share KV


@dataclass
class TailSharingMetadata(KVConnectorMetadata):
    """What the scheduler tells the worker before a step. After the forward pass the worker drops,
    then saves, then gives up on the abandoned (wait_for_save); the loads are served last
    (get_finished), so a block saved in this step reaches the requests waiting for it."""
    dropped: list[PromptKey] = field(default_factory=list)  # prompts no live request has any more
    saves: list[tuple[PromptKey, int]] = field(default_factory=list)  # (prompt, donor's partial block)
    loads: list[tuple[str, PromptKey, int]] = field(default_factory=list)  # (request, prompt, its block)
    abandoned: list[PromptKey] = field(default_factory=list)  # donor ended unsaved: fail their loads


@dataclass
class _Prompt:
    """Scheduler-side state of one prompt."""
    donor: str
    tail_block_index: int  # which of a request's blocks holds the partial one
    donor_blocks: list[int] = field(default_factory=list)
    saved: bool = False
    requests: set[str] = field(default_factory=set)  # live requests with this prompt


class PromptTailSharing(KVConnectorBase_V1):
    def __init__(self, vllm_config, role, kv_cache_config=None):
        super().__init__(vllm_config, role, kv_cache_config)
        self.block_size = vllm_config.cache_config.block_size
        # Scheduler side.
        self._prompts: dict[PromptKey, _Prompt] = {}
        self._key_of: dict[str, PromptKey] = {}
        self._next = TailSharingMetadata()
        # Worker side.
        self._kv_caches: list[torch.Tensor] = []
        self._store: dict[PromptKey, list[torch.Tensor]] = {}
        self._waiting: list[tuple[str, PromptKey, int, int]] = []  # (request, prompt, block, steps waited)
        self._failed_blocks: set[int] = set()
        self.copied_blocks = 0  # partial blocks written from a donor's copy (for tests and benchmarks)

    @property
    def requires_kv_delivery(self) -> bool:
        return False  # nothing leaves the engine: a request preempted while waiting can recompute

    # Scheduler side ----------------------------------------------------------------------------

    def get_num_new_matched_tokens(self, request, num_computed_tokens: int) -> tuple[int, bool]:
        if request.prompt_token_ids is None or request.num_tokens != request.num_prompt_tokens:
            return 0, False  # prompt embeddings, or a preempted request with output: computed as usual
        # Every prompt token but the last (each request computes that one for its own logits): the
        # full blocks vLLM shares, and the `shared` tokens of the partial block this connector copies.
        full_blocks, shared = divmod(request.num_prompt_tokens - 1, self.block_size)
        if shared == 0:
            return 0, False
        key = (tuple(request.prompt_token_ids), request.lora_request.lora_int_id if request.lora_request else 0,
               getattr(request, "cache_salt", None))
        self._key_of[request.request_id] = key
        prompt = self._prompts.get(key)
        if prompt is None:
            self._prompts[key] = _Prompt(request.request_id, full_blocks, requests={request.request_id})
            return 0, False
        prompt.requests.add(request.request_id)
        if request.request_id == prompt.donor or num_computed_tokens != full_blocks * self.block_size:
            return 0, False  # the donor itself, or full blocks missing from the cache: compute them
        return shared, True

    def update_state_after_alloc(self, request, blocks, num_external_tokens: int) -> None:
        key = self._key_of.get(request.request_id)
        if key is None:
            return
        prompt = self._prompts[key]
        block_ids = list(blocks.get_block_ids()[0])
        if request.request_id == prompt.donor:
            prompt.donor_blocks = block_ids
        elif num_external_tokens > 0:
            self._next.loads.append((request.request_id, key, block_ids[prompt.tail_block_index]))

    def build_connector_meta(self, scheduler_output) -> KVConnectorMetadata:
        cached = scheduler_output.scheduled_cached_reqs
        for request_id, new_blocks in zip(cached.req_ids, cached.new_block_ids):
            prompt = self._prompts.get(self._key_of.get(request_id))
            if prompt is not None and prompt.donor == request_id and new_blocks is not None:
                # vLLM's rule: a request resumed after preemption gets all its blocks anew.
                if request_id in cached.resumed_req_ids:
                    prompt.donor_blocks = list(new_blocks[0])
                else:
                    prompt.donor_blocks.extend(new_blocks[0])
        computed = {r.req_id: r.num_computed_tokens for r in scheduler_output.scheduled_new_reqs}
        computed.update(zip(cached.req_ids, cached.num_computed_tokens))
        for request_id, before in computed.items():
            key = self._key_of.get(request_id)
            prompt = self._prompts.get(key)
            if prompt is None or prompt.donor != request_id or prompt.saved:
                continue
            after = before + scheduler_output.num_scheduled_tokens.get(request_id, 0)
            if after >= len(key[0]) - 1 and prompt.tail_block_index < len(prompt.donor_blocks):
                self._next.saves.append((key, prompt.donor_blocks[prompt.tail_block_index]))
                prompt.saved = True
        meta, self._next = self._next, TailSharingMetadata()
        return meta

    def request_finished(self, request, block_ids) -> tuple[bool, dict[str, Any] | None]:
        key = self._key_of.pop(request.request_id, None)
        prompt = self._prompts.get(key)
        if prompt is not None:
            prompt.requests.discard(request.request_id)
            if request.request_id == prompt.donor and not prompt.saved:
                # Aborted before its block was computed: the waiting requests compute theirs, and
                # a later request with this prompt becomes a new donor.
                self._next.abandoned.append(key)
                del self._prompts[key]
            elif not prompt.requests:
                del self._prompts[key]
                self._next.dropped.append(key)
        return False, None  # the request's blocks are vLLM's to free now

    # Worker side -------------------------------------------------------------------------------

    def register_kv_caches(self, kv_caches: dict[str, torch.Tensor]) -> None:
        self._kv_caches = list(kv_caches.values())

    def start_load_kv(self, forward_context, **kwargs) -> None:
        meta = self._get_connector_metadata()
        self._waiting += [(request_id, key, block, 0) for request_id, key, block in meta.loads]

    def wait_for_layer_load(self, layer_name: str) -> None:
        return None  # nothing loads during the forward pass

    def save_kv_layer(self, layer_name: str, kv_layer, attn_metadata, **kwargs) -> None:
        return None  # saved whole after the forward pass (wait_for_save)

    def wait_for_save(self) -> None:
        meta = self._get_connector_metadata()
        for key in meta.dropped:  # first: a prompt can be dropped and donated again in one step
            self._store.pop(key, None)
        for key, block in meta.saves:
            self._store[key] = [cache[block].clone() for cache in self._kv_caches]
        if meta.abandoned:
            abandoned = set(meta.abandoned)
            self._waiting = [(r, k, b, MAX_WAIT_STEPS if k in abandoned else n) for r, k, b, n in self._waiting]

    def get_finished(self, finished_req_ids: set[str]) -> tuple[set[str] | None, set[str] | None]:
        loaded, still_waiting = set(), []
        for request_id, key, block, steps in self._waiting:
            source = self._store.get(key)
            if source is not None:
                for cache, saved in zip(self._kv_caches, source):
                    cache[block].copy_(saved)
                self.copied_blocks += 1
            elif steps + 1 >= MAX_WAIT_STEPS:
                self._failed_blocks.add(block)  # vLLM computes this block itself
            else:
                still_waiting.append((request_id, key, block, steps + 1))
                continue
            loaded.add(request_id)
        self._waiting = still_waiting
        return None, loaded or None

    def get_block_ids_with_load_errors(self) -> set[int]:
        failed, self._failed_blocks = self._failed_blocks, set()
        return failed

    def drop_saved_blocks(self) -> None:
        """Free the store now rather than at the next step (the engine calls this between generate
        calls: before the learner trains, and when weights change)."""
        if not self._waiting:
            self._store.clear()


def shut_down_worker_connector() -> None:
    """End this process's worker-side connector with the engine that made it. vLLM keeps it in a
    process global, which the next engine would otherwise inherit: one with sharing would adopt its
    state, one without would fail vLLM's check that every step brings the connector's metadata."""
    from vllm.distributed.kv_transfer import ensure_kv_transfer_shutdown

    if worker_connector() is not None:
        ensure_kv_transfer_shutdown()


def worker_connector() -> PromptTailSharing | None:
    """This process's worker-side connector, if the colocated engine runs one."""
    from vllm.distributed.kv_transfer import get_kv_transfer_group, has_kv_transfer_group

    connector = get_kv_transfer_group() if has_kv_transfer_group() else None
    return connector if isinstance(connector, PromptTailSharing) else None
