"""GRPO maths: advantages, the clipped policy loss and its reduction, DAPO's batch filters.

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
LOSS_AGGREGATIONS = ("sequence_mean", "token_mean", "sum_over_max_len")


def compute_group_advantages(
    rewards: torch.Tensor, group_size: int, scaling: str = "group", eps: float = 1e-6
) -> tuple[torch.Tensor, dict[str, float]]:
    """Group-relative advantages: each reward minus its group's mean, optionally scaled.

    GRPO (Shao et al. 2024, DeepSeekMath, arXiv 2402.03300) divides by the group's standard
    deviation. Dividing by the whole batch's standard deviation instead is the "group mean, batch
    std" combination of Liu et al. 2025 ("Tricks or Traps?", arXiv 2508.08221). Dr. GRPO (Liu et
    al. 2025, arXiv 2503.20783) does not divide at all, because the std division weights easy and
    hard prompts unequally.

    A group whose rewards are all equal carries no learning signal: its advantages are exactly zero
    (not a rounding residue of the mean), and the share of such groups is reported.

    Args:
        rewards: [N] total reward per completion, N = num_groups * group_size, groups contiguous.
        group_size: G, completions per prompt.
        scaling: "group" (std of the group), "batch" (std of all N rewards) or "none".
        eps: added to the standard deviation before dividing.

    Returns:
        advantages: [N], same dtype as rewards.
        metrics: {"groups/zero_variance_frac": share of groups whose rewards are all equal}.
    """
    if scaling not in ADVANTAGE_SCALINGS:
        raise ValueError(f"unknown advantage scaling {scaling!r}; expected one of {ADVANTAGE_SCALINGS}")
    if rewards.dim() != 1 or rewards.numel() % group_size != 0:
        raise ValueError(f"rewards must be 1-D with a multiple of group_size={group_size} entries, got {tuple(rewards.shape)}")
    grouped = rewards.view(-1, group_size)  # [num_groups, G]
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if scaling == "group":
        centred = centred / (grouped.std(dim=1, keepdim=True) + eps)
    elif scaling == "batch":
        centred = centred / (rewards.std() + eps)
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


def overlong_mask(truncated: torch.Tensor) -> torch.Tensor:
    """DAPO's overlong filtering (arXiv 2503.14476): completions cut off at the length limit get no
    loss, since their reward judges an unfinished answer.

    Args:
        truncated: [N] bool, True where generation hit max_new_tokens.

    Returns:
        [N] bool sample mask, True for samples that keep their loss.
    """
    return ~truncated.bool()


def soft_overlong_penalty(lengths: torch.Tensor, max_len: int, buffer: int, penalty: float = 1.0) -> torch.Tensor:
    """DAPO's soft overlong punishment (arXiv 2503.14476), added to the reward.

    No penalty up to `max_len - buffer` tokens, then a penalty growing linearly to `-penalty` at
    `max_len`, and `-penalty` beyond it.

    Args:
        lengths: [N] completion lengths in tokens.
        max_len: the generation limit (max_new_tokens).
        buffer: length of the linear zone (DAPO's L_cache), 0 < buffer <= max_len.
        penalty: magnitude of the penalty at and beyond max_len.

    Returns:
        [N] float penalties, each in [-penalty, 0].
    """
    if not 0 < buffer <= max_len:
        raise ValueError(f"buffer must be in (0, max_len={max_len}], got {buffer}")
    over = (lengths.float() - (max_len - buffer)).clamp(min=0.0)
    return -penalty * (over / buffer).clamp(max=1.0)


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


def compute_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    dual_clip: float | None = None,
    aggregation: str = "token_mean",
    max_completion_length: int | None = None,
    ref_logprobs: torch.Tensor | None = None,
    beta: float = 0.0,
    engine_logprobs: torch.Tensor | None = None,
    tis_cap: float | None = None,
    entropy: torch.Tensor | None = None,
    entropy_coef: float = 0.0,
    batch_sequences: int | None = None,
    batch_tokens: int | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The GRPO loss for one (micro-)batch: clipped surrogate, optional KL, TIS weight, entropy.

    Per token, with ratio r = exp(logp - old) and advantage A of its sequence:
        pg  = max(-A * r, -A * clip(r, 1 - eps_low, 1 + eps_high))    PPO clip; eps_high > eps_low
                                                                       is DAPO's clip-higher
        pg  = min(pg, -A * dual_clip)  where A < 0                     dual clip (Ye et al. 2020,
                                                                       arXiv 1912.09729)
        pg *= min(exp(old - engine), tis_cap), detached                truncated importance
                                                                       sampling (Yao et al. 2025)
        loss = pg + beta * k3 - entropy_coef * entropy
    where k3 = exp(ref - logp) - (ref - logp) - 1 is Schulman's unbiased, non-negative KL
    estimator, used by GRPO (arXiv 2402.03300). The TIS weight corrects for the rollout engine
    sampling from slightly different probabilities than the learner computes ("Your efficient RL
    framework secretly brings you off-policy RL training", Yao et al. 2025).

    Args:
        logprobs: [B, T] learner logprobs of the completion tokens, with gradient.
        old_logprobs: [B, T] logprobs of the policy that sampled the batch (detached).
        advantages: [B] per-sequence advantage.
        mask: [B, T] 1 on completion tokens that count.
        eps_low, eps_high: clip range [1 - eps_low, 1 + eps_high] of the ratio.
        dual_clip: c > 1 bounds the loss of negative-advantage tokens at -c * A; None disables.
        aggregation, max_completion_length, batch_sequences, batch_tokens: see `aggregate_loss`.
        ref_logprobs: [B, T] frozen reference model logprobs; required when beta > 0.
        beta: KL weight.
        engine_logprobs: [B, T] rollout engine logprobs; with tis_cap, enables the TIS weight.
        tis_cap: C, the cap of the importance weight; None disables TIS.
        entropy: [B, T] per-token entropy of the learner's distribution; measured when given.
        entropy_coef: weight of the entropy bonus (needs `entropy` with gradient).

    Returns:
        loss: scalar.
        metrics: token means of kl, clip/low_frac, clip/high_frac, clip/dual_frac, ratio/mean,
            tis/clipped_frac, entropy, and ratio/max (a max); keys appear when measurable.
    """
    if beta > 0 and ref_logprobs is None:
        raise ValueError("beta > 0 needs ref_logprobs")
    if entropy_coef > 0 and entropy is None:
        raise ValueError("entropy_coef > 0 needs entropy")
    mask_bool = mask.bool()
    adv = advantages.to(logprobs.dtype).unsqueeze(1)  # [B, 1]
    ratio = torch.exp(logprobs - old_logprobs)
    clipped_ratio = ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    pg = torch.maximum(-adv * ratio, -adv * clipped_ratio)
    dual_active = torch.zeros_like(mask_bool)
    if dual_clip is not None:
        dual_bound = -adv * dual_clip
        dual_active = (adv < 0) & (pg > dual_bound)
        pg = torch.where(adv < 0, torch.minimum(pg, dual_bound), pg)
    metrics: dict[str, float] = {}
    if engine_logprobs is not None and tis_cap is not None:
        raw_weight = torch.exp(old_logprobs - engine_logprobs).detach()
        pg = pg * raw_weight.clamp(max=tis_cap)
        metrics["tis/clipped_frac"] = _token_mean(raw_weight > tis_cap, mask_bool)
    loss_mat = pg
    if ref_logprobs is not None:
        log_ratio_ref = ref_logprobs - logprobs
        kl = torch.exp(log_ratio_ref) - log_ratio_ref - 1.0
        if beta > 0:
            loss_mat = loss_mat + beta * kl
        metrics["kl"] = _token_mean(kl, mask_bool)
    if entropy is not None:
        if entropy_coef > 0:
            loss_mat = loss_mat - entropy_coef * entropy
        metrics["entropy"] = _token_mean(entropy, mask_bool)
    loss = aggregate_loss(loss_mat, mask, aggregation, max_completion_length, batch_sequences, batch_tokens)

    # The clip takes effect (and zeroes the gradient) only on the side the advantage pushes to.
    metrics["clip/low_frac"] = _token_mean((ratio < 1.0 - eps_low) & (adv < 0), mask_bool)
    metrics["clip/high_frac"] = _token_mean((ratio > 1.0 + eps_high) & (adv > 0), mask_bool)
    metrics["clip/dual_frac"] = _token_mean(dual_active, mask_bool)
    metrics["ratio/mean"] = _token_mean(ratio, mask_bool)
    metrics["ratio/max"] = ratio.detach()[mask_bool].max().item() if mask_bool.any() else 1.0
    return loss, metrics


def _groups_all_equal(grouped: torch.Tensor) -> torch.Tensor:
    return grouped.max(dim=1).values == grouped.min(dim=1).values


def _token_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    values = values.detach().float()
    if not mask.any():
        return 0.0
    return values[mask].mean().item()
