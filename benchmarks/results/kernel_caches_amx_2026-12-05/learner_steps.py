"""The learner alone, a new batch shape every step (as in a run), the process's RSS after each step's
heap trim. Run from the repository root: .venv/bin/python benchmarks/results/kernel_caches_amx_2026-12-05/learner_steps.py
Environment: STEPS (15), COMPILE (1), FIXED (set: the same batch every step), ONEDNN_PRIMITIVE_CACHE_CAPACITY.
"""
import sys, os, time; sys.path.insert(0, "benchmarks")
import torch
from bench_learner import make_batch, load_model
from r1train.learner import PolicyLearner
from r1train.policy_loss import LossSettings
from r1train.heap import return_free_memory
def rss():
    with open("/proc/self/statm") as f: return int(f.read().split()[1]) * 4096 / 2**20
model, _ = load_model("smollm2-135m-instruct"); model.train()
l = PolicyLearner(model, lr=1e-6, micro_batch_tokens=4096, compile_layers=os.environ.get("COMPILE", "1") == "1",
                  gradient_checkpointing=True)
settings = LossSettings(max_completion_length=64)
import random
for i in range(int(os.environ.get("STEPS", "15"))):
    # a new batch shape every step, as a run has
    batch = make_batch(16, 8, (95, 105), (12, 64 if os.environ.get("FIXED") else random.randint(20, 64)), model.config.vocab_size)
    t0 = time.perf_counter(); l.train_on_batch(batch, settings); dt = time.perf_counter() - t0
    return_free_memory()
    print(f"step {i}: {rss():.0f} MiB {dt:.2f} s", flush=True)
