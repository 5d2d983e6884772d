"""Data parallelism across processes: the few places the ranks of one run talk to each other.

Under `accelerate launch` (or torchrun) every process runs the whole trainer on its own share of
each step's prompts: it generates and scores its groups (so advantages stay local), and the
learner sums gradients across processes (`r1train/learner.py`). The helpers here cover the rest:
agreeing on how many prompts to draw, averaging metrics, and letting only the main process write
files. Outside a multi-process launch every helper is a no-op, so the trainer reads the same in
both cases.

Deliberate simplifications: a run counts as distributed when the launcher set WORLD_SIZE > 1 (a
one-process `accelerate launch` runs exactly as plain `r1train run`); collectives go through
torch.distributed's default process group; metrics travel as pickled dicts (`all_gather_object`),
which is cheap for a few dozen floats per step and copes with a key that only some ranks have.
"""
from __future__ import annotations

import contextlib
import math
import os
import warnings
from typing import Any

import torch
import torch.distributed as dist

# Metrics that are counts or rates of the whole run: summed over ranks rather than averaged.
SUMMED_METRICS = ("rewards/errors", "sampling/prompts_drawn", "sampling/groups_dropped", "sampling/unfiltered_fallback",
                  "throughput/gen_tokens_per_s", "throughput/learn_tokens_per_s")


def launched_distributed() -> bool:
    """Whether a launcher started this process as one of several (WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def make_accelerator():
    """An `accelerate.Accelerator` for a multi-process launch, or None for a single process.

    Without CUDA the processes run on CPU with the gloo backend: accelerate's launcher spawns
    several local processes only under a multi-GPU config and does not pass `use_cpu` on to them,
    so the CPU choice is made here. DDP's broadcast of buffers before a forward pass is off:
    processes run different numbers of forward passes (they hold different samples), so such
    broadcasts would pair up wrongly, and the models' buffers (rotary frequencies) are constants.
    """
    if not launched_distributed():
        return None
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true"):  # set by `accelerate launch`
        from r1train.config import ConfigError

        raise ConfigError(
            "the accelerate config uses accelerate's FSDP plugin; r1train shards with FSDP itself (generation, "
            "the weight push to vLLM and checkpoints must gather the shards): set training.fsdp: true in the "
            "recipe and launch with recipes/accelerate/fsdp_8gpu.yaml (or cpu_2proc.yaml on CPU)")
    from accelerate import Accelerator, DistributedDataParallelKwargs

    # torch deprecates broadcast_buffers=False for forward_sync_buffers, which accelerate does not
    # expose yet; the old flag does what is wanted here.
    warnings.filterwarnings("ignore", message="`broadcast_buffers` is deprecated", category=FutureWarning)
    accelerator = Accelerator(cpu=not torch.cuda.is_available(),
                              kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)])
    if accelerator.state.deepspeed_plugin is not None:
        # DeepSpeed wants a per-device batch size, which accelerate reads from a prepared data
        # loader; the learner prepares none and sizes micro-batches by tokens. DeepSpeed uses the
        # number for its own bookkeeping (batch-size checks, throughput), not to split batches.
        accelerator.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = 1
    return accelerator


def _active() -> bool:
    """Whether this process is one of several. Under a multi-process launch the process group is
    started on first use (by accelerate, whose Accelerator made later joins the same group), so the
    helpers also work before the trainer exists, e.g. while the pipeline prepares the run folder."""
    if not launched_distributed():
        return False
    if not dist.is_initialized():
        from accelerate import PartialState

        PartialState(cpu=not torch.cuda.is_available())
    return True


def world_size() -> int:
    return dist.get_world_size() if _active() else 1


def rank() -> int:
    return dist.get_rank() if _active() else 0


def is_main_process() -> bool:
    return rank() == 0


def shard(items: list, rank: int, world_size: int) -> list:
    """Rank `rank`'s share of `items` (every world_size-th item, so a batch that lists one source's
    prompts after another's is split evenly by source); `world_size` must divide its length."""
    if len(items) % world_size:
        raise ValueError(f"cannot split {len(items)} items evenly across {world_size} processes")
    return items[rank::world_size]


def _device() -> torch.device:
    # NCCL reduces only CUDA tensors; gloo only CPU ones.
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _all_reduce(values: list[float], op: str) -> list[float]:
    if not _active():
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=_device())
    dist.all_reduce(tensor, op=getattr(dist.ReduceOp, op))
    return tensor.tolist()


def all_reduce_sum(values: list[float]) -> list[float]:
    """Element-wise sums over all ranks (float64, so integer counts stay exact)."""
    return _all_reduce(values, "SUM")


def all_reduce_max(value: int) -> int:
    return int(_all_reduce([value], "MAX")[0])


def all_ranks(flag: bool) -> bool:
    """True when `flag` is true on every rank: a decision every rank then takes alike."""
    return bool(_all_reduce([float(flag)], "MIN")[0])


def batch_std(values: torch.Tensor) -> float:
    """The standard deviation (Bessel-corrected, as torch.std) of all ranks' `values` together.

    Two reductions: the count and sum give the mean, then the squared deviations from it are
    summed (no sum-of-squares cancellation). Example: ranks holding [0., 1.] and [2., 3.] both get
    torch.tensor([0., 1., 2., 3.]).std() = 1.291.
    """
    values = values.double()
    count, total = all_reduce_sum([values.numel(), values.sum().item()])
    mean = total / count
    (squares,) = all_reduce_sum([((values - mean) ** 2).sum().item()])
    return math.sqrt(squares / (count - 1)) if count > 1 else float("nan")


def barrier() -> None:
    if _active():
        dist.barrier()


@contextlib.contextmanager
def main_process_first():
    """Run the block on the main process first, then on the others (e.g. cleaning up files)."""
    if not is_main_process():
        barrier()
    try:
        yield
    finally:
        if is_main_process():
            barrier()


def gather_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """The step's metrics over all ranks (see `combine_rank_metrics`); unchanged for one process."""
    if not _active():
        return metrics
    per_rank: list[dict[str, Any]] = [{} for _ in range(dist.get_world_size())]
    dist.all_gather_object(per_rank, metrics)
    return combine_rank_metrics(per_rank)


def combine_rank_metrics(per_rank: list[dict[str, Any]]) -> dict[str, float]:
    """Merge per-rank metric dicts: maxima (keys ending in "max") take the max, minima (ending in
    "/min") the min, counts and throughputs (`SUMMED_METRICS`) the sum, everything else the mean
    over the ranks that have it.

    Ranks hold equal numbers of prompts, so the mean of per-rank means is the batch mean for
    per-sample metrics (reward/mean, accuracy, format_rate, completion_len/mean). Token-weighted
    learner metrics (clip fractions, entropy) and reward/std are approximated by the mean of the
    per-rank values.

    Args:
        per_rank: one dict per rank; values are numbers or None (None values are skipped).
    Returns:
        One dict with every key any rank reported.
    """
    keys = list(dict.fromkeys(key for metrics in per_rank for key in metrics))
    out: dict[str, float] = {}
    for key in keys:
        values = [m[key] for m in per_rank if m.get(key) is not None]
        if not values:
            out[key] = None
        elif key.endswith("max"):
            out[key] = max(values)
        elif key.endswith("/min"):
            out[key] = min(values)
        elif key in SUMMED_METRICS:
            out[key] = sum(values)
        else:
            out[key] = sum(values) / len(values)
    return out


class NullLogger:
    """What the non-main ranks log through: nothing (the main rank writes the run's files)."""

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        pass

    def log_samples(self, step: int, samples: list[dict[str, Any]]) -> None:
        pass

    def progress(self, step: int, postfix: dict[str, float]) -> None:
        pass

    def close(self) -> None:
        pass
