"""Keeping a CPU run's resident memory down where glibc's allocator would hold on to freed memory.

A GRPO step on CPU alternates phases that free most of what they allocate: generation, then the
learner's micro-batches (activations of hundreds of MiB each). glibc keeps freed blocks mapped for
reuse, and blocks freed in one phase, scattered over the heap, add to the next phase's peak.
Three tools help, each a no-op where the C library is not glibc:
- `map_large_allocations` (the recipe's `training.cpu_low_memory`): allocations from 4 MiB up get
  their own memory mapping, which goes back to the OS the moment it is freed (glibc otherwise
  raises this threshold as large blocks are freed, up to 32 MiB, and serves them from the heap).
  It trades time for memory: every fresh mapping is paid in page faults (`docs/PERFORMANCE.md`
  has the measured peak memory and time). Off by default.
- `return_free_memory` (malloc_trim): hands the heap's free pages back between phases; the vLLM
  engine calls it when it sleeps, always, as it costs one trim per step, and also when it wakes
  up and after the weight push that follows (its staging copies freed) with
  `training.cpu_low_memory` or `model.gradient_checkpointing`, where the learner's own
  peak is low enough that the regrown KV cache and weights on top of what the learner freed
  would set the run's peak (the pages it gives back there are faulted in again); and the engines'
  `release_idle_memory`, which evaluation calls after its generation (after each chunk of it with
  engines that take it in chunks), since no sleep follows (r1train/evaluation.py).
- `release_pages` (madvise MADV_DONTNEED): zeroes memory without making it resident. The CPU
  engine's KV cache comes back zeroed after every sleep (`regrow_zeroed`), and is zeroed after an
  evaluation's generation (`zero_storages`); written with zeros, all of it (0.5 GiB in the main
  recipe) would be resident though a call's sequences fill only part of it.

All that freeing is paid in page faults when the memory is used again: 17.4-17.6 million minor
faults in a 40-step run of the equal-work recipe, 29-30 s of system time in a 169-172 s run on 2
cores.
torch can place its CPU tensors of 2 MiB and more in transparent huge pages (THP_MEM_ALLOC_ENABLE=1
in the environment, before torch starts), where a fault maps 2 MiB instead of 4 KiB: 7.0 million
faults against 18.4, 22 against 30 s of system time and 164 against 170 s in one pair of runs, but
a peak RSS 0.15 GiB higher (the evaluations set it), so r1train leaves it to the user
(benchmarks/results/main_command_equal_work_lr20_2026-12-06.md). Memory given to
`release_pages` goes back to small pages either way, so that what is written into it bit by bit
(the KV cache) stays resident only where written.
"""
from __future__ import annotations

import ctypes
import functools
import mmap
from collections.abc import Iterable

import torch

_M_MMAP_THRESHOLD = -3  # mallopt parameter number, from glibc's malloc.h
_MADV_DONTNEED = 4  # from Linux's mman-common.h
_MADV_NOHUGEPAGE = 15
LARGE_ALLOCATION_BYTES = 4 * 1024 * 1024


@functools.cache
def _glibc():
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim, libc.mallopt, libc.madvise  # noqa: B018 (all must exist)
        libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
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


def release_pages(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """For each (address, nbytes) range, hand the whole pages inside it back to the OS, where they
    are private anonymous memory (what torch's CPU allocator gets from malloc): they stop counting
    as resident and read as zeros until written. Returns each range's released part as (start, end)
    addresses, (address, address) where nothing was released (no glibc, no whole page, or memory
    that is not private anonymous: a file's pages would read as the file again, not as zeros).
    The bytes outside the released parts are left as they were. The process's memory map is read
    once for all the ranges (the KV cache has one storage per layer)."""
    libc = _glibc()
    mappings = _mappings() if libc else None
    released = []
    for address, nbytes in ranges:
        start = -(-address // mmap.PAGESIZE) * mmap.PAGESIZE
        end = (address + nbytes) // mmap.PAGESIZE * mmap.PAGESIZE
        ok = (mappings is not None and start < end and _private_anonymous(mappings, start, end)
              and libc.madvise(start, end - start, _MADV_DONTNEED) == 0)
        if ok:
            # Small pages from here on: released memory is written back a little at a time (the KV
            # cache, a block per sequence), and a huge page would make 2 MiB resident for each.
            libc.madvise(start, end - start, _MADV_NOHUGEPAGE)
        released.append((start, end) if ok else (address, address))
    return released


def regrow_zeroed(storage_sizes: list[tuple[torch.UntypedStorage, int]]) -> None:
    """Give each shrunk KV cache storage its size in bytes back, all zero. The C heap may serve them
    from memory the learner just freed, and vLLM's CPU attention turns non-finite leftovers in
    unwritten cache slots into NaN outputs. The zeros come from the OS where it can give them
    (`release_pages`): only the blocks a step writes become resident, not the whole cache."""
    for storage, nbytes in storage_sizes:
        storage.resize_(nbytes)
    zero_storages([storage for storage, _ in storage_sizes])


def zero_storages(storages: list[torch.UntypedStorage]) -> None:
    """Set every byte of each storage to zero. The whole pages get their zeros from the OS
    (`release_pages`) and are not resident until written again; the partial pages at either end
    are written."""
    released = release_pages([(storage.data_ptr(), storage.nbytes()) for storage in storages])
    for storage, (start, end) in zip(storages, released):
        address = storage.data_ptr()
        flat = torch.empty(0, dtype=torch.uint8).set_(storage)
        flat[: start - address].zero_()
        flat[end - address:].zero_()


def _mappings() -> list[tuple[int, int, bool]] | None:
    """(low, high, private and anonymous) for each of the process's mappings, in address order (the
    brk heap counts as anonymous); None where /proc/self/maps cannot be read."""
    try:
        lines = open("/proc/self/maps").read().splitlines()
    except OSError:
        return None
    mappings = []
    for line in lines:
        fields = line.split(maxsplit=5)
        low, high = (int(bound, 16) for bound in fields[0].split("-"))
        name = fields[5].strip() if len(fields) > 5 else ""
        mappings.append((low, high, fields[1][3] == "p" and name in ("", "[heap]")))
    return mappings


def _private_anonymous(mappings: list[tuple[int, int, bool]], start: int, end: int) -> bool:
    """Whether the mappings that cover [start, end) leave no gap and are all private and anonymous."""
    covered = start
    for low, high, private_anonymous in mappings:
        if high <= covered or low > covered:
            continue
        if not private_anonymous:
            return False
        covered = high
        if covered >= end:
            return True
    return False
