"""Weight sync into the colocated vLLM engine: vLLM's loaders (`reload_weights`) against the
direct copy (r1train/engines/direct_sync.py), on the real model, with the sync check's figures.

Each repetition changes every weight of the learner a little (as an optimiser step does), syncs,
and times the sync alone. After the last sync of each path it samples a few completions and
compares vLLM's log-probs with the learner's (the trainer's sync check), and checks that a sync
skipped after a weight change shows up there.

    .venv/bin/python benchmarks/bench_sync.py              # the default 135M model, 5 syncs per path
    .venv/bin/python benchmarks/bench_sync.py --repeats 10
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_generation import build_prompts, learner_logprobs  # noqa: E402
from r1train.engines.base import SamplingSettings
from r1train.engines.sync_check import compare_logprobs
from r1train.engines.weights import checkpoint_weights
from r1train.models import DEFAULT_MODEL, load_model_and_tokenizer


def nudge_(model: torch.nn.Module, seed: int) -> None:
    """A small change to every weight, as one optimiser step makes."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 1e-3 * p.std())


def sync_through_loaders(engine, model) -> None:
    weights = checkpoint_weights(model, engine.dtype)
    engine.llm.collective_rpc(lambda worker: worker.model_runner.reload_weights(weights_iterator=weights))
    assert engine.llm.reset_prefix_cache()


def logprob_check(engine, model, prompts, bf16: bool) -> dict:
    completions = engine.generate(prompts, 4, SamplingSettings(max_new_tokens=32))
    return compare_logprobs([c.logprobs for c in completions], learner_logprobs(model, completions, bf16))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from r1train.engines.vllm_engine import VLLMEngine

    model, tokenizer, model_dir = load_model_and_tokenizer(args.model)
    engine = VLLMEngine(model_dir, tokenizer, max_model_len=512, kv_cache_gib=0.5)
    bf16 = engine.dtype == torch.bfloat16
    prompts = build_prompts(tokenizer, 4)
    start = time.perf_counter()
    engine.sync_weights(model)  # records the direct copy's plan, through vLLM's loaders
    record_s = time.perf_counter() - start

    results = {"machine": platform.processor() or platform.machine(), "cpus": len(os.sched_getaffinity(0)),
               "load_avg_1min_at_start": os.getloadavg()[0], "threads": torch.get_num_threads(),
               "parameters": sum(p.numel() for p in model.parameters()), "first_sync_with_recording_s": round(record_s, 3)}
    for path, sync in (("vllm_loaders", sync_through_loaders), ("direct_copy", lambda e, m: e.sync_weights(m))):
        seconds = []
        for i in range(args.repeats):
            nudge_(model, seed=len(seconds) + (100 if path == "direct_copy" else 0) + i)
            start = time.perf_counter()
            sync(engine, model)
            seconds.append(time.perf_counter() - start)
        results[path] = {"median_s": round(statistics.median(seconds), 3), "all_s": [round(s, 3) for s in seconds],
                         "sync_check_after": logprob_check(engine, model, prompts, bf16)}
    nudge_(model, seed=999)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.05)  # a change a step could make, left unsynced
    results["sync_check_skipped_sync"] = logprob_check(engine, model, prompts, bf16)
    results["load_avg_1min_at_end"] = os.getloadavg()[0]
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
