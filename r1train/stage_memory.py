"""Freeing what a finished pipeline stage held before the next stage starts.

A stage's trainer, model, optimiser state and engine should go when the stage returns, but one
reference kept them all. vLLM stores an optional import's error at module level
(`vllm.multimodal.media.audio._torchcodec_import_exc` where torchcodec is not installed), and an
exception's traceback holds every frame it passed through. vLLM's modules are first imported while
the first engine is built, inside a trainer's constructor, so that traceback held the
constructor's frame and, through its `self` and its locals, the whole trainer: after a GRPO stage of
the 135M model 1.65 GiB of tensors (fp32 weights, AdamW's moments, ...) stayed alive into every
later stage, and on a GPU that memory is the device's, which the next stage's engine wants.

So between stages the pipeline drops the tracebacks of exceptions kept at module level (the
exceptions and their messages stay, for whatever raises them later), collects the garbage, and
hands the freed memory back (the C heap's free pages; CUDA's cached blocks).
"""
from __future__ import annotations

import gc
import sys

import torch

from r1train.heap import return_free_memory


def release_finished_stage() -> int:
    """Free what the stage that just returned left reachable only through stored tracebacks, and
    give the memory back; returns how many tracebacks were dropped."""
    dropped = sum(_drop_tracebacks(value) for value in _module_level_exceptions())
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return_free_memory()
    return dropped


def _module_level_exceptions():
    for module in list(sys.modules.values()):
        try:
            values = list(vars(module).values())
        except TypeError:  # an object standing in sys.modules without a __dict__
            continue
        # type(), not isinstance(): isinstance reads the value's __class__, and some module-level
        # objects warn on any attribute read (torch.distributed.reduce_op, deprecated).
        yield from (value for value in values if issubclass(type(value), BaseException))


def _drop_tracebacks(exception: BaseException) -> int:
    """Drop the traceback of `exception` and of the exceptions chained to it; how many it had."""
    dropped, seen = 0, set()
    while exception is not None and id(exception) not in seen:
        seen.add(id(exception))
        if exception.__traceback__ is not None:
            exception.__traceback__ = None
            dropped += 1
        exception = exception.__cause__ or exception.__context__
    return dropped
