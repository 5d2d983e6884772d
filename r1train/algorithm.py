"""GRPO maths: advantages, the loss's reduction, DAPO's batch filters.

The per-token policy losses (PPO clip, GSPO, CISPO) and the engine/learner mismatch corrections
live in `r1train/policy_loss.py`.

Everything here is a pure function of tensors and scalars that returns tensors and a dict of
plain-float metrics: no model, no I/O, no config objects. The learner (`r1train/learner.py`) calls
these functions; tests check them against hand-computed cases and slow loop implementations.
README.md ("GRPO: every algorithm option") has one table of every option, its default and its paper.

Layout: N completions come grouped, the G completions of one prompt contiguous (N = prompts * G).
Token tensors are [B, T]: row b holds the completion tokens of sample b left-aligned, `mask` is 1
on real completion tokens and 0 on padding.

Deliberate simplifications:
- Standard deviations are the unbiased (Bessel-corrected) ones, as `torch.std` computes them.
- Metrics are token means over the tokens given; the learner weights them across micro-batches.
"""
from __future__ import annotations

import torch

ADVANTAGE_SCALINGS = ("group", "batch", "none")
ADVANTAGE_BASELINES = ("group_mean", "leave_one_out")
LOSS_AGGREGATIONS = ("sequence_mean", "token_mean", "sum_over_max_len")


def compute_group_advantages(
    rewards: torch.Tensor, group_size: int, scaling: str = "group", eps: float = 1e-6,
    baseline: str = "group_mean",
    batch_std: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Group-relative advantages: each reward minus a baseline from its group, optionally scaled.

    GRPO (Shao et al. 2024, DeepSeekMath, arXiv 2402.03300) divides by the group's standard
    deviation. Dividing by the whole batch's standard deviation instead is the "group mean, batch
    std" combination of Liu et al. 2025 ("Tricks or Traps?", arXiv 2508.08221). Dr. GRPO (Liu et
    al. 2025, arXiv 2503.20783) does not divide at all, because the std division weights easy and
    hard prompts unequally.

    The baseline is the group's mean, or with "leave_one_out" the mean of the group's other G - 1
    rewards (RLOO, Ahmadian et al. 2024, arXiv 2402.14740), which keeps the baseline independent of
    the sample it is subtracted from. It equals G / (G - 1) times the group-mean advantage, so with
    "group" or "batch" scaling it changes only the step size; RLOO proper is "leave_one_out" with
    scaling "none".

    A group whose rewards are all equal carries no learning signal: its advantages are exactly zero
    (not a rounding residue of the mean), and the share of such groups is reported.

    Args:
        rewards: [N] total reward per completion, N = num_groups * group_size, groups contiguous.
        group_size: G, completions per prompt.
        scaling: "group" (std of the group), "batch" (std of all N rewards) or "none".
        eps: added to the standard deviation before dividing.
        baseline: "group_mean" or "leave_one_out".
        batch_std: with scaling="batch", the standard deviation of the whole batch when `rewards`
            is only one process's share of it (default: the std of `rewards`).

    Returns:
        advantages: [N], same dtype as rewards.
        metrics: {"groups/zero_variance_frac": share of groups whose rewards are all equal}.
    """
    if scaling not in ADVANTAGE_SCALINGS:
        raise ValueError(f"unknown advantage scaling {scaling!r}; expected one of {ADVANTAGE_SCALINGS}")
    if baseline not in ADVANTAGE_BASELINES:
        raise ValueError(f"unknown advantage baseline {baseline!r}; expected one of {ADVANTAGE_BASELINES}")
    if rewards.dim() != 1 or rewards.numel() % group_size != 0:
        raise ValueError(f"rewards must be 1-D with a multiple of group_size={group_size} entries, got {tuple(rewards.shape)}")
    grouped = rewards.view(-1, group_size)  # [num_groups, G]
    if baseline == "leave_one_out":
        if group_size < 2:
            raise ValueError("a leave-one-out baseline needs group_size >= 2")
        others_mean = (grouped.sum(dim=1, keepdim=True) - grouped) / (group_size - 1)
        centred = grouped - others_mean
    else:
        centred = grouped - grouped.mean(dim=1, keepdim=True)
    if scaling == "group":
        centred = centred / (grouped.std(dim=1, keepdim=True) + eps)
    elif scaling == "batch":
        centred = centred / ((rewards.std() if batch_std is None else batch_std) + eps)
    zero_variance = _groups_all_equal(grouped)  # [num_groups]
    advantages = centred.masked_fill(zero_variance.unsqueeze(1), 0.0).reshape(-1)
    return advantages, {"groups/zero_variance_frac": zero_variance.float().mean().item()}


def select_informative_groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """DAPO's dynamic sampling filter (Yu et al. 2025, arXiv 2503.14476): keep groups whose
    rewards are not all equal (all-equal groups have zero advantage and give no gradient).

    Args:
        rewards: [N] rewards, groups of `group_size` contiguous.
        group_size: G.

    Returns:
        [N / G] bool, True for a group worth training on.
    """
    return ~_groups_all_equal(rewards.view(-1, group_size))


def aggregate_loss(
    loss_mat: torch.Tensor,
    mask: torch.Tensor,
    mode: str,
    max_completion_length: int | None = None,
    batch_sequences: int | None = None,
    batch_tokens: int | None = None,
) -> torch.Tensor:
    """Reduce a per-token loss to a scalar.

    Every mode is a sum over sequences divided by a constant of the whole batch, which makes it
    composable: split a batch into micro-batches, pass each the batch's `batch_sequences` and
    `batch_tokens`, and the sum of the micro-batch losses (and of their gradients) equals the loss
    of the batch taken at once.

    - "sequence_mean": mean over each sequence's tokens, then mean over sequences (GRPO,
      arXiv 2402.03300). Long completions get less weight per token.
    - "token_mean": mean over all tokens of the batch (DAPO, arXiv 2503.14476).
    - "sum_over_max_len": sum over tokens divided by max_completion_length * sequences
      (Dr. GRPO, arXiv 2503.20783): a constant, so length no longer biases the gradient.

    Args:
        loss_mat: [B, T] per-token loss.
        mask: [B, T] 1 on tokens that count, 0 elsewhere.
        mode: one of LOSS_AGGREGATIONS.
        max_completion_length: the generation limit; required for "sum_over_max_len".
        batch_sequences: sequences in the whole batch (default: B). A masked-out sequence counts.
        batch_tokens: mask tokens in the whole batch (default: mask.sum()).

    Returns:
        scalar loss.
    """
    mask = mask.to(loss_mat.dtype)
    sequences = loss_mat.shape[0] if batch_sequences is None else batch_sequences
    if mode == "sequence_mean":
        per_sequence = (loss_mat * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        return per_sequence.sum() / max(sequences, 1)
    if mode == "token_mean":
        tokens = mask.sum().item() if batch_tokens is None else batch_tokens
        return (loss_mat * mask).sum() / max(tokens, 1)
    if mode == "sum_over_max_len":
        if max_completion_length is None:
            raise ValueError("loss aggregation 'sum_over_max_len' needs max_completion_length")
        return (loss_mat * mask).sum() / (max_completion_length * max(sequences, 1))
    raise ValueError(f"unknown loss aggregation {mode!r}; expected one of {LOSS_AGGREGATIONS}")


def _groups_all_equal(grouped: torch.Tensor) -> torch.Tensor:
    return grouped.max(dim=1).values == grouped.min(dim=1).values

