"""Keeping a CPU run's resident memory down where glibc's allocator would hold on to freed memory.

A GRPO step on CPU alternates phases that free most of what they allocate: generation, then the
learner's micro-batches (activations of hundreds of MiB each). glibc keeps freed blocks mapped for
reuse, and blocks freed in one phase, scattered over the heap, add to the next phase's peak.
Two settings help, both no-ops where the C library is not glibc:
- `map_large_allocations` (the recipe's `training.cpu_low_memory`): allocations from 4 MiB up get
  their own memory mapping, which goes back to the OS the moment it is freed (glibc otherwise
  raises this threshold as large blocks are freed, up to 32 MiB, and serves them from the heap).
  It trades time for memory: every fresh mapping is paid in page faults (the README's Performance
  section has the measured peak memory and time). Off by default.
- `return_free_memory` (malloc_trim): hands the heap's free pages back between phases; the vLLM
  engine calls it when it sleeps, always, as it costs one trim per step, and also when it wakes
  up with `training.cpu_low_memory` or `model.gradient_checkpointing`, where the learner's own
  peak is low enough that the regrown KV cache and weights on top of what the learner freed
  would set the run's peak (the pages it gives back there are faulted in again); and evaluation
  calls it after each chunk of its generation, which no sleep follows (r1train/evaluation.py).
"""
from __future__ import annotations

import ctypes
import functools

_M_MMAP_THRESHOLD = -3  # mallopt parameter number, from glibc's malloc.h
LARGE_ALLOCATION_BYTES = 4 * 1024 * 1024


@functools.cache
def _glibc():
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim, libc.mallopt  # noqa: B018 (both must exist)
        return libc
    except (OSError, AttributeError):
        return None


def map_large_allocations() -> bool:
    """Serve allocations of LARGE_ALLOCATION_BYTES and more from their own mappings; True if set."""
    libc = _glibc()
    return bool(libc and libc.mallopt(_M_MMAP_THRESHOLD, LARGE_ALLOCATION_BYTES))


def return_free_memory() -> None:
    """Give the heap's free pages back to the OS (glibc's malloc_trim)."""
    libc = _glibc()
    if libc:
        libc.malloc_trim(0)
