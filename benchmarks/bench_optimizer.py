"""The optimiser step alone: torch's AdamW on its default (foreach) path, and r1train's optimiser as
the learner makes it (`make_adamw`, r1train/adamw_state.py): torch's fused kernel for fp32 moments
where the parameters allow it, and AdamW with bf16 moments (`training.optimizer_state_dtype:
bfloat16`), over the parameters
of the SmolLM2-135M architecture with random gradients. One warm-up step each (it allocates the
moments), then the sides alternate and each one's median over the repeats is printed, with the
gradient-norm clip beside them for scale.

    .venv/bin/python benchmarks/bench_optimizer.py [--repeats 5]
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from bench_learner import load_model
from r1train.adamw_state import make_adamw

SETTINGS = dict(lr=1e-6, betas=(0.9, 0.99), weight_decay=0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    model, description = load_model("config")
    sides = {}
    for name, make in {
        "torch AdamW, default path": lambda params: torch.optim.AdamW(params, **SETTINGS),
        "r1train, fp32 moments (fused)": lambda params: make_adamw(params, **SETTINGS),
        "r1train, bf16 moments": lambda params: make_adamw(params, state_dtype="bfloat16", **SETTINGS),
    }.items():
        params = [torch.nn.Parameter(p.detach().clone()) for p in model.parameters()]
        for p in params:
            p.grad = torch.randn_like(p) * 1e-3
        sides[name] = (params, make(params))
    assert sides["r1train, fp32 moments (fused)"][1].defaults["fused"], "make_adamw did not take the fused kernel"
    count = sum(p.numel() for p in model.parameters())
    print(f"model: {description}, {count / 1e6:.0f}M parameters (fp32)")
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}")

    timings = {name: [] for name in sides}
    for repeat in range(args.repeats + 1):  # the first round allocates the moments
        for name, (_, optimizer) in sides.items():
            start = time.perf_counter()
            optimizer.step()
            if repeat:
                timings[name].append(time.perf_counter() - start)
    params = sides["torch AdamW, default path"][0]
    start = time.perf_counter()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    clip = time.perf_counter() - start

    default = statistics.median(timings["torch AdamW, default path"])
    for name, values in timings.items():
        median = statistics.median(values)
        print(f"{name + ':':32s}{median:7.3f} s a step (median of {len(values)}), {default / median:.2f}x the default")
    print(f"{'gradient-norm clip, for scale:':32s}{clip:7.3f} s")


if __name__ == "__main__":
    main()
