"""How much of the learner's time bf16 autocast costs: one PolicyLearner pass with fp32 weights under
bf16 autocast (what r1train does), with bf16 weights and no autocast (the upper bound of keeping a
bf16 compute copy of the weights), and with fp32 weights under autocast in one micro-batch of
16,384 tokens instead of 4,096 (fewer weight casts). The main recipe's batch shape: 16 prompts x 8,
prompts of 95-105 tokens, completions of 12-30. One warm-up round, then the median of 3; the three
sides alternate.

    .venv/bin/python benchmarks/bench_learner_dtype.py
"""
from __future__ import annotations

import copy
import statistics
import time

import torch

from bench_learner import load_model, make_batch
from r1train.learner import PolicyLearner
from r1train.policy_loss import LossSettings


def main() -> None:
    model, description = load_model("smollm2-135m-instruct")
    model.train()
    batch = make_batch(16, 8, (95, 105), (12, 30), model.config.vocab_size)
    settings = LossSettings(max_completion_length=30)
    sides = {
        "fp32 weights, bf16 autocast": PolicyLearner(copy.deepcopy(model), lr=1e-6, micro_batch_tokens=4096, bf16=True),
        "bf16 weights, no autocast": PolicyLearner(copy.deepcopy(model).to(torch.bfloat16), lr=1e-6,
                                                   micro_batch_tokens=4096, bf16=False),
        "fp32 weights, autocast, 16k-token micro-batch": PolicyLearner(copy.deepcopy(model), lr=1e-6,
                                                                      micro_batch_tokens=16384, bf16=True),
    }
    print(f"model: {description}; {torch.get_num_threads()} torch threads; batch of {len(batch)} sequences")
    timings = {name: [] for name in sides}
    for repeat in range(4):
        for name, learner in sides.items():
            start = time.perf_counter()
            learner.train_on_batch(batch, settings)
            elapsed = time.perf_counter() - start
            if repeat:
                timings[name].append(elapsed)
            print(f"  {'warm-up' if not repeat else f'run {repeat}'} {name}: {elapsed:.2f} s", flush=True)
    first = statistics.median(timings[next(iter(sides))])
    for name, times in timings.items():
        print(f"{name + ':':48s} median {statistics.median(times):.2f} s ({first / statistics.median(times):.2f}x)")


if __name__ == "__main__":
    main()
