"""The rollout engine interface shared by every generation backend.

The trainer hands an engine prompts that are already tokenised (chat template applied), so the
learner and the engine see exactly the same token ids; the engine returns, per completion, the
sampled token ids, the decoded text, the engine's own log-probability of each sampled token and
why generation ended. Completions come back grouped: the `n` completions of prompt i are
contiguous, in prompt order, which is the layout the group-relative advantage maths expects.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch


@dataclass
class SamplingSettings:
    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 disables top-k
    stop: list[str] = field(default_factory=list)  # generation ends after any of these strings
    seed: int | None = None


@dataclass
class Completion:
    prompt_index: int  # index into the list of prompts given to generate()
    prompt_token_ids: list[int]
    token_ids: list[int]  # sampled tokens, including a final EOS when the model emitted one
    text: str  # decoded completion, special tokens skipped
    logprobs: list[float] | None  # engine's log-prob of each sampled token; None if unsupported
    finish_reason: str  # "stop" (EOS or a stop string) or "length" (hit max_new_tokens)
    worker: int | None = None  # which remote rollout worker sampled it (None: an in-process engine)

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"

    @classmethod
    def decoded(cls, tokenizer, stop: list[str], prompt_index: int, prompt: list[int], token_ids: list[int],
                logprobs: list[float] | None, finish_reason: str, worker: int | None = None) -> "Completion":
        """A completion of `prompt` with its text decoded as rewards see it (`decode_completion`)."""
        return cls(prompt_index=prompt_index, prompt_token_ids=list(prompt), token_ids=token_ids,
                   text=decode_completion(tokenizer, token_ids, stop), logprobs=logprobs,
                   finish_reason=finish_reason, worker=worker)


def decode_completion(tokenizer, token_ids: list[int], stop: list[str]) -> str:
    """A completion's text: its decoded tokens, cut right after the first stop string.

    Generation ends on the token that completes a stop string, and that token can carry characters
    past it (the token "></" completing "</answer>"). They were not meant as part of the answer, and
    a strict format check would fail on them, so the text ends with the stop string.
    """
    text = tokenizer.decode(token_ids, skip_special_tokens=True)
    ends = [text.find(s) + len(s) for s in stop if s and s in text]
    return text[: min(ends)] if ends else text


def generate_many(engine, requests: list[tuple[list[list[int]], int, SamplingSettings]]) -> list[list[Completion]]:
    """Several `generate(prompts, n, sampling)` requests; an engine that can serve them in one call
    (vLLM: one continuous batch, mixed sampling settings) does, the others take them in turn."""
    together = getattr(engine, "generate_many", None)
    if together is not None:
        return together(requests)
    return [engine.generate(prompts, n, sampling) for prompts, n, sampling in requests]


@runtime_checkable
class RolloutEngine(Protocol):
    # Whether a call's `SamplingSettings.seed` gives each prompt its own random draws (HF, remote
    # workers: the trainer then seeds every call from (seed, step, draw), so a resumed run samples
    # what an uninterrupted one would). False where one request seed would give every prompt of a
    # call the same draws (colocated vLLM): the trainer leaves sampling to the engine's own stream.
    seeds_each_call: bool

    def generate(
        self, prompts: list[list[int]], n: int, sampling: SamplingSettings
    ) -> list[Completion]:
        """Sample `n` completions for each prompt; returns len(prompts) * n completions, grouped."""
        ...

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Make the engine generate from `model`'s current weights (LoRA merged)."""
        ...

    def sleep(self, weights_stale: bool = False) -> None:
        """Release generation memory while the learner trains (no-op where unsupported);
        `weights_stale`: the caller pushes new weights before the next generate(), so an engine
        may free its own copy too."""
        ...

    def wake_up(self) -> None:
        """Reclaim the memory released by sleep() before the next generate()."""
        ...

    def release_idle_memory(self) -> None:
        """Between generate() calls, give back the memory the last call touched and the next does
        not need (the awake engine's counterpart of sleep())."""
        ...

    def close(self) -> None:
        ...
