"""Bounded kernel caches on CPU: a run's memory must not grow with every new batch shape.

torch's CPU kernels keep per-shape state that lives as long as the process:
- oneDNN (torch's bf16 and fp32 matmuls) caches a primitive for every matmul shape it meets,
  each with its own scratchpad, up to 1,024 of them by default. The learner's matmuls take a new
  row count nearly every step (micro-batches of packed rows of varying length), so the cache fills
  with primitives no later step reuses: the main recipe's process grew by about 25 MiB a step, from
  3.4 GiB at step 2 to a 5.05 GiB peak at the end of its 60 steps. Within a step every decoder
  layer reuses the same dozen shapes, so a small cache loses nothing: with
  `ONEDNN_PRIMITIVE_CACHE_CAPACITY=64` the same run peaked at 4.47 GiB, sampled the same
  completions and evaluated the same, and was no slower (steps summed 314 against 338 s; AMX
  machine, benchmarks/results/kernel_caches_amx_2026-12-05.md). r1train sets that capacity unless
  the user set it; oneDNN reads it when it makes its first primitive, so a program that runs torch
  matmuls before importing r1train keeps oneDNN's default. (vLLM's own oneDNN reads the same
  variable; its generation was as fast.)
- the CPU flash-attention kernel keeps its compiled micro-kernels for every sequence length,
  without a limit: the packed rows' lengths are rounded up for it (`r1train/packing.py`,
  ROW_LENGTH_MULTIPLE), which bounds how many lengths a run meets.
"""
from __future__ import annotations

import os

ONEDNN_PRIMITIVE_CACHE_CAPACITY = 64


def bound_onednn_primitive_cache() -> None:
    """Cap oneDNN's primitive cache (see above) unless the environment already sets it."""
    if "ONEDNN_PRIMITIVE_CACHE_CAPACITY" not in os.environ and "DNNL_PRIMITIVE_CACHE_CAPACITY" not in os.environ:
        os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = str(ONEDNN_PRIMITIVE_CACHE_CAPACITY)
