"""Is the rollout engine generating from the learner's weights? Compare their log-probabilities.

A weight that silently fails to reach the engine (a wrong name, a tied tensor loaded twice, a stale
prefix cache) changes nothing visible except the engine's log-probabilities of its own samples. So
after every sync the trainer scores the sampled tokens with the learner and compares: both sides
compute log_softmax of raw logits at temperature 1, so the only legitimate difference is numerical.

The bound. The learner runs fp32 weights under bf16 autocast, vLLM runs bf16 weights: each logit
carries a relative error of a few bf16 ulps (2^-8), which shows up as a mean absolute log-prob
difference of a few hundredths. Measured on this project's machines (sampled tokens, temperature 1):

    SmolLM2-135M-Instruct, vLLM CPU vs learner (fp32 + bf16 autocast)  mean 0.016, max 0.4
    tiny random test Llama (wide init, peaked logits), same setup       mean 0.05-0.07, max 0.7
    the same tiny model with the sync skipped after a weight change     mean 1.75, max 9.8
    the same with the weights synced but the prefix cache not reset     mean 1.0,  max 8.1

The maximum is set by rare low-probability tokens and is noisy, so only the mean is checked:
`SYNC_WARN_MEAN_ABS_DIFF` sits well above what bf16 explains and well below what a missed update
does.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

SYNC_WARN_MEAN_ABS_DIFF = 0.1


def compare_logprobs(
    engine_logprobs: Sequence[Sequence[float] | torch.Tensor] | torch.Tensor,
    learner_logprobs: Sequence[Sequence[float] | torch.Tensor] | torch.Tensor,
    mask: torch.Tensor | None = None,
) -> dict[str, float]:
    """Mean and max absolute difference between two sets of per-token log-probabilities.

    Args:
        engine_logprobs: per completion, the engine's log-prob of each sampled token: a list of N
            sequences (ragged), or an [N, T] tensor.
        learner_logprobs: the learner's log-probs of the same tokens: a list of N sequences with
            the same lengths, or an [N, T] tensor with each completion left-aligned in its row
            (rows are cut to the engine's lengths when the engine side is a list).
        mask: [N, T], 1 on the tokens to compare, when both sides are [N, T] tensors (default:
            every position).

    Returns:
        {"mean_abs_diff": float, "max_abs_diff": float} over all compared tokens (0.0 for none).
    """
    diffs = _flat_abs_diffs(engine_logprobs, learner_logprobs, mask)
    if diffs.numel() == 0:
        return {"mean_abs_diff": 0.0, "max_abs_diff": 0.0}
    return {"mean_abs_diff": diffs.mean().item(), "max_abs_diff": diffs.max().item()}


def sync_warning(stats: dict[str, float], bound: float = SYNC_WARN_MEAN_ABS_DIFF) -> str | None:
    """A warning message when `compare_logprobs` stats exceed what bf16 explains, else None."""
    if stats["mean_abs_diff"] <= bound:
        return None
    return (
        f"engine and learner log-probs differ by {stats['mean_abs_diff']:.3f} on average "
        f"(max {stats['max_abs_diff']:.3f}), more than bf16 explains ({bound}): "
        "the engine's weights may not match the learner's"
    )


def compare_logprobs_by_worker(
    engine_logprobs: Sequence[Sequence[float] | torch.Tensor],
    learner_logprobs: Sequence[Sequence[float] | torch.Tensor],
    workers: Sequence[int],
) -> dict[str, dict[str, float]]:
    """`compare_logprobs` over each rollout worker's completions, by worker index.

    Args:
        engine_logprobs, learner_logprobs: per completion, as for `compare_logprobs` (lists).
        workers: per completion, the index of the worker that sampled it.

    Returns:
        {worker index: {"mean_abs_diff", "max_abs_diff"}} for every worker that sampled any.
    """
    by_worker: dict[int, tuple[list, list]] = {}
    for engine_row, learner_row, worker in zip(engine_logprobs, learner_logprobs, workers):
        engine_rows, learner_rows = by_worker.setdefault(worker, ([], []))
        engine_rows.append(engine_row)
        learner_rows.append(learner_row)
    return {worker: compare_logprobs(*rows) for worker, rows in sorted(by_worker.items())}


def sync_check_metrics(
    engine_logprobs: Sequence[Sequence[float] | torch.Tensor],
    learner_logprobs: Sequence[Sequence[float] | torch.Tensor],
    workers: Sequence[int | None],
) -> tuple[dict[str, float], list[str]]:
    """A step's `sync/*` metrics and the warnings worth printing.

    With remote rollout workers (`workers` holds each completion's worker index) every worker gets
    its own check, `sync/worker<i>/logprob_abs_diff_{mean,max}`, and the worst worker's mean is
    `sync/worst_worker_logprob_abs_diff_mean`: a worker that missed an update shows up by itself
    instead of being averaged away. In-process engines (worker None) get the overall check only.
    """
    overall = compare_logprobs(engine_logprobs, learner_logprobs)
    checks = {"": overall}
    if workers and workers[0] is not None:
        checks = {f"worker{w}/": d for w, d in compare_logprobs_by_worker(engine_logprobs, learner_logprobs, workers).items()}
    metrics, warnings = {}, []
    for name, check in checks.items():
        warning = sync_warning(check)
        if warning:
            warnings.append(f"rollout {name[:-1]}: {warning}" if name else warning)
        metrics[f"sync/{name}logprob_abs_diff_mean"] = check["mean_abs_diff"]
        metrics[f"sync/{name}logprob_abs_diff_max"] = check["max_abs_diff"]
    metrics["sync/logprob_abs_diff_mean"] = overall["mean_abs_diff"]
    metrics["sync/logprob_abs_diff_max"] = overall["max_abs_diff"]
    if "" not in checks:
        metrics["sync/worst_worker_logprob_abs_diff_mean"] = max(d["mean_abs_diff"] for d in checks.values())
    return metrics, warnings


def step_sync_metrics(engine_logprobs: Sequence[torch.Tensor], learner_logprobs: Sequence[torch.Tensor | None],
                      staleness: int = 0, workers: Sequence[int | None] | None = None) -> tuple[dict[str, float], list[str]]:
    """A training step's check of the previous sync: its metrics and the warnings worth printing.

    The learner's first forward pass of a step runs on the weights last pushed to the engine, so
    comparing its logprobs with the engine's checks that push. Samples the learner skipped (None:
    zero advantage) are left out. A stale batch (async mode) was sampled with older weights than
    the learner's: the difference then measures how far the policy moved, is logged as such
    (`async/*`), and is no sync failure.
    """
    workers = workers or [None] * len(engine_logprobs)
    kept = [(e, l, w) for e, l, w in zip(engine_logprobs, learner_logprobs, workers) if l is not None]
    if not kept:
        return {}, []
    engine, learner, workers = zip(*kept)
    if staleness:
        diff = compare_logprobs(engine, learner)
        return {"async/logprob_abs_diff_mean": diff["mean_abs_diff"],
                "async/logprob_abs_diff_max": diff["max_abs_diff"]}, []
    return sync_check_metrics(engine, learner, workers)


def _flat_abs_diffs(engine, learner, mask: torch.Tensor | None) -> torch.Tensor:
    if isinstance(engine, torch.Tensor) and engine.dim() == 2:
        if not isinstance(learner, torch.Tensor) or learner.shape != engine.shape:
            raise ValueError("an [N, T] engine tensor needs an [N, T] learner tensor of the same shape")
        keep = torch.ones_like(engine, dtype=torch.bool) if mask is None else mask.bool()
        return (engine.float() - learner.float()).abs()[keep]
    if mask is not None:
        raise ValueError("mask applies only when both sides are [N, T] tensors")
    if len(engine) != len(learner):
        raise ValueError(f"{len(engine)} engine completions but {len(learner)} learner completions")
    rows = []
    for i, (engine_row, learner_row) in enumerate(zip(engine, learner)):
        engine_row = torch.as_tensor(engine_row, dtype=torch.float32)
        learner_row = torch.as_tensor(learner_row, dtype=torch.float32).detach().cpu()
        if isinstance(learner, torch.Tensor):
            learner_row = learner_row[: engine_row.numel()]  # padded learner row
        if learner_row.numel() != engine_row.numel():
            raise ValueError(f"completion {i}: {engine_row.numel()} engine log-probs, {learner_row.numel()} learner's")
        rows.append((engine_row - learner_row).abs())
    return torch.cat(rows) if rows else torch.zeros(0)
