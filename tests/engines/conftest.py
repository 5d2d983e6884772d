"""Helpers for the engine tests: prompts built with the real chat template, and a reference scorer."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def chat_prompts(tokenizer):
    """Three chat-formatted prompts of different lengths, as token ids."""

    def encode(question: str) -> list[int]:
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True
        )["input_ids"]

    return [encode("What is 2 + 3?"), encode("Hi"), encode("Name three colours, then count to five.")]


@pytest.fixture(scope="session")
def long_chat_prompts(tokenizer):
    """Prompts sharing a long system prompt, longer than 128 tokens (several of vLLM's KV blocks,
    even at its CPU default size), so the prefix cache holds blocks that a weight sync must invalidate."""
    system = "Think step by step, then answer inside <answer> tags. " * 12

    def encode(question: str) -> list[int]:
        return tokenizer.apply_chat_template(
            [{"role": "system", "content": system}, {"role": "user", "content": question}],
            add_generation_prompt=True,
        )["input_ids"]

    prompts = [encode("What is 2 + 3?"), encode("What is 7 * 6?"), encode("Is 17 prime?")]
    assert min(len(p) for p in prompts) > 128
    return prompts


def teacher_forced_logprobs(model, completions, autocast_dtype=None) -> list[torch.Tensor]:
    """The learner's view: one full forward pass per completion, log_softmax of the raw logits.

    Returns, per completion, the fp32 log-prob of each of its tokens given everything before it.
    """
    out = []
    with torch.no_grad(), torch.autocast("cpu", dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
        for c in completions:
            ids = torch.tensor([c.prompt_token_ids + c.token_ids])
            logprobs = torch.log_softmax(model(ids).logits[0].float(), dim=-1)  # [L, V]
            start = len(c.prompt_token_ids)
            targets = torch.tensor(c.token_ids)
            out.append(logprobs[start - 1 : -1].gather(1, targets[:, None]).squeeze(1))
    return out


@pytest.fixture(scope="session")
def score():
    return teacher_forced_logprobs
