"""Policy losses and engine/learner mismatch corrections: the per-token loss GRPO minimises.

Pure functions of tensors and scalars, like `r1train/algorithm.py` (which holds the advantages and
the loss aggregation): no model, no I/O, no recipe objects (`LossSettings` holds plain values). README.md ("GRPO: every algorithm
option") lists each option with its paper.

Layout as in `algorithm.py`: token tensors are [B, T], row b holds the completion tokens of sample b
left-aligned, `mask` is 1 on real completion tokens and 0 on padding.

Three ratios appear and are kept apart by name:
- the policy ratio `exp(logp - logp_old)`, learner against the policy that sampled the batch
  (identically 1 in value when each batch gets one optimiser step), which the policy loss clips;
- the mismatch ratio `exp(logp_old - logp_engine)`, the learner's probability of a sampled token
  against the rollout engine's for the same weights, which the importance correction truncates or
  masks;
- GSPO's sequence ratio, the policy ratio's geometric mean over a sequence.

Every `exp` of a log-ratio goes through `bounded_exp`: a token whose ratio explodes would otherwise
make the loss infinite and the step be skipped.

Deliberate simplifications: the mismatch correction weights the policy-gradient term only (not
the KL or entropy terms), and masked tokens or sequences keep counting in the aggregation's
normalisers, as a zero advantage would.
"""
from __future__ import annotations

import dataclasses
import math

import torch

from r1train.algorithm import aggregate_loss

# verl clamps the log-ratio at the same bound before its exp; exp(20) is about 5e8, finite in fp32.
LOG_RATIO_BOUND = 20.0

POLICY_LOSSES = ("ppo_clip", "gspo", "cispo")
# One value picks the level (token, sequence, geometric mean over the sequence) and the mode
# (truncate the weight at the cap, or mask what leaves [floor, cap]).
TIS_MODES = ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask", "geometric_mask")


@dataclasses.dataclass(frozen=True)
class LossSettings:
    """The scalar arguments of `compute_policy_loss`, under the recipe's `algorithm` names.

    These defaults are the recipe's defaults too (`config_sections.AlgorithmConfig` takes them from
    here); README.md ("GRPO: every algorithm option") says what each does.
    """

    policy_loss: str = "ppo_clip"
    epsilon_low: float = 0.2
    epsilon_high: float = 0.2
    dual_clip: float | None = None
    loss_aggregation: str = "token_mean"
    max_completion_length: int | None = None  # the generation limit; needed by "sum_over_max_len"
    beta: float = 0.0
    tis_cap: float | None = 2.0  # applies when the batch carries engine logprobs; None turns it off
    tis_mode: str = "token_truncate"
    tis_floor: float | None = None
    entropy_coef: float = 0.0

    def zero_advantage_contributes(self) -> bool:
        """Whether a sample with advantage 0 still has a loss (a KL or an entropy term); when not,
        its forward pass can be skipped."""
        return self.beta > 0 or self.entropy_coef > 0

    def as_kwargs(self) -> dict:
        return dataclasses.asdict(self)


_DEFAULTS = LossSettings()


def bounded_exp(log_ratio: torch.Tensor) -> torch.Tensor:
    """exp of a log-ratio clamped to [-LOG_RATIO_BOUND, LOG_RATIO_BOUND] (no gradient outside)."""
    return torch.exp(log_ratio.clamp(-LOG_RATIO_BOUND, LOG_RATIO_BOUND))


def compute_gspo_ratio(logprobs: torch.Tensor, old_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """GSPO's sequence-level importance ratio, in the token form that carries its gradient.

    GSPO (Zheng et al. 2025, arXiv 2507.18071) replaces the token ratio by the sequence's
    length-normalised ratio s_i = exp(mean_t(logp_t - old_t)), clipped per sequence. The token form
    s_i,t = sg(s_i) * exp(logp_t - sg(logp_t)) (the paper's GSPO-token with one advantage per
    sequence) equals s_i in value on every token and has gradient s_i * grad(logp_t); averaged over
    the sequence's tokens (`loss_aggregation: sequence_mean`) it is exactly GSPO's gradient
    s_i * mean_t grad(logp_t).

    Args:
        logprobs: [B, T] learner logprobs, with gradient.
        old_logprobs: [B, T] logprobs of the sampling policy (detached).
        mask: [B, T] 1 on completion tokens.

    Returns:
        [B, T] ratio, s_i on every position of row i (padding included).

    Example: tokens with log-ratios 0.2 and 0.0 give s = exp(0.1) on both.
    """
    mask = mask.to(logprobs.dtype)
    sequence_log_ratio = ((logprobs - old_logprobs) * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)  # [B]
    sequence_log_ratio = sequence_log_ratio.clamp(-LOG_RATIO_BOUND, LOG_RATIO_BOUND).detach()
    return torch.exp(sequence_log_ratio).unsqueeze(1) * torch.exp(logprobs - logprobs.detach())


def compute_mismatch_weights(
    old_logprobs: torch.Tensor,
    engine_logprobs: torch.Tensor,
    mask: torch.Tensor,
    mode: str = "token_truncate",
    cap: float = 2.0,
    floor: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Importance weights correcting for the rollout engine's probabilities differing from the learner's.

    With the per-token mismatch log-ratio l_t = logp_old_t - logp_engine_t (learner over engine),
    and L = sum_t l_t over a sequence's tokens:
        token_truncate     w_t = min(exp(l_t), cap)            TIS (Yao et al. 2025, "Your efficient RL
                                                               framework secretly brings you off-policy
                                                               RL training")
        token_mask         w_t = 1 if floor <= exp(l_t) <= cap  IcePop (Ling team 2025, "Every step
                           else 0                               evolves", arXiv 2510.18855)
        sequence_truncate  w_t = min(exp(L), cap)              sequence-level TIS and
        sequence_mask      w_t = 1 if floor <= exp(L) <= cap    masked IS (Liu, Li et al. 2025, "When
                                                               speed kills stability", blog; Y. Li,
                                                               verl's rollout-correction notes)
        geometric_mask     w_t = 1 if floor <= exp(L / |y|) <= cap
                                                               geometric-mean sequence mask (same
                                                               sources; bounds near 1, e.g. 0.999-1.001)
    Sequence weights are the same on every token of the sequence. The weights are detached: they
    rescale the gradient, they are not optimised.

    Args:
        old_logprobs: [B, T] learner logprobs of the sampled tokens under the sampling weights.
        engine_logprobs: [B, T] the rollout engine's logprobs of the same tokens.
        mask: [B, T] 1 on completion tokens.
        mode: one of TIS_MODES.
        cap: upper bound of the weight (truncate) or of the kept range (mask), >= 1.
        floor: lower bound of the kept range for the mask modes; None means 1 / cap.

    Returns:
        weights: [B, T] detached, 0 on padding.
        metrics: token means over the mask of mismatch/kl (k3 estimate of KL(engine || learner),
            non-negative), mismatch/ratio_mean (the raw token ratio exp(l_t), before truncation),
            mismatch/ratio/max and mismatch/ratio/min; tis/clipped_frac (truncate modes: share of
            tokens whose weight was cut) or tis/masked_frac (mask modes: share of tokens given weight 0);
            tis/weight_mean, the token mean of the weights returned.
    """
    if mode not in TIS_MODES:
        raise ValueError(f"unknown importance correction mode {mode!r}; expected one of {TIS_MODES}")
    if mode.endswith("truncate") and floor is not None:
        raise ValueError(f"floor bounds the kept range of the mask modes; {mode!r} only truncates at the cap")
    floor = 1.0 / cap if floor is None else floor
    if not 0 < floor <= 1 <= cap:
        raise ValueError(f"need 0 < floor <= 1 <= cap, got floor={floor}, cap={cap}")
    mask_bool = mask.bool()
    maskf = mask.to(old_logprobs.dtype)
    log_ratio = ((old_logprobs - engine_logprobs) * maskf).detach()  # [B, T], 0 on padding
    token_ratio = bounded_exp(log_ratio)
    log_floor, log_cap = math.log(floor), math.log(cap)
    if mode == "token_truncate":
        weights, cut = token_ratio.clamp(max=cap), token_ratio > cap
    elif mode == "token_mask":
        cut = (log_ratio < log_floor) | (log_ratio > log_cap)
        weights = (~cut).to(token_ratio.dtype)
    else:
        sequence_log_ratio = log_ratio.sum(dim=1, keepdim=True)  # [B, 1]
        if mode == "geometric_mask":
            sequence_log_ratio = sequence_log_ratio / maskf.sum(dim=1, keepdim=True).clamp(min=1.0)
        if mode == "sequence_truncate":
            sequence_ratio = bounded_exp(sequence_log_ratio)
            weights, cut = sequence_ratio.clamp(max=cap), sequence_ratio > cap
        else:
            cut = (sequence_log_ratio < log_floor) | (sequence_log_ratio > log_cap)
            weights = (~cut).to(token_ratio.dtype)
        weights, cut = weights.expand_as(log_ratio), cut.expand_as(log_ratio)
    # k3 with rho = learner / engine, sampled from the engine: E[rho - 1 - log rho] = KL(engine || learner).
    k3 = token_ratio - 1.0 - log_ratio.clamp(-LOG_RATIO_BOUND, LOG_RATIO_BOUND)
    metrics = {
        "mismatch/kl": _token_mean(k3, mask_bool),
        "mismatch/ratio_mean": _token_mean(token_ratio, mask_bool),
        "mismatch/ratio/max": token_ratio[mask_bool].max().item() if mask_bool.any() else 1.0,
        "mismatch/ratio/min": token_ratio[mask_bool].min().item() if mask_bool.any() else 1.0,
        ("tis/clipped_frac" if mode.endswith("truncate") else "tis/masked_frac"): _token_mean(cut, mask_bool),
        "tis/weight_mean": _token_mean(weights, mask_bool),  # what the loss applies; 1 when they agree
    }
    return weights * maskf, metrics


def compute_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    epsilon_low: float = _DEFAULTS.epsilon_low,
    epsilon_high: float = _DEFAULTS.epsilon_high,
    dual_clip: float | None = _DEFAULTS.dual_clip,
    loss_aggregation: str = _DEFAULTS.loss_aggregation,
    max_completion_length: int | None = _DEFAULTS.max_completion_length,
    ref_logprobs: torch.Tensor | None = None,
    beta: float = _DEFAULTS.beta,
    engine_logprobs: torch.Tensor | None = None,
    tis_cap: float | None = _DEFAULTS.tis_cap,
    entropy: torch.Tensor | None = None,
    entropy_coef: float = _DEFAULTS.entropy_coef,
    batch_sequences: int | None = None,
    batch_tokens: int | None = None,
    policy_loss: str = _DEFAULTS.policy_loss,
    tis_mode: str = _DEFAULTS.tis_mode,
    tis_floor: float | None = _DEFAULTS.tis_floor,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The GRPO loss for one (micro-)batch: policy loss, mismatch correction, optional KL, entropy.

    Per token, with advantage A of its sequence and r = exp(logp - old):
        ppo_clip  pg = max(-A * r, -A * clip(r, 1 - epsilon_low, 1 + epsilon_high))   PPO clip as in GRPO
                  (arXiv 2402.03300); epsilon_high > epsilon_low is DAPO's clip-higher (arXiv 2503.14476);
                  with dual_clip c, pg = min(pg, -A * c) where A < 0 (Ye et al. 2020, arXiv 1912.09729)
        gspo      the same clip applied to GSPO's sequence ratio (`compute_gspo_ratio`,
                  arXiv 2507.18071): every token of a sequence is clipped or not together
        cispo     pg = -A * sg(clip(r, 1 - epsilon_low, 1 + epsilon_high)) * r / sg(r): the clipped ratio
                  weights the token's plain policy gradient and carries no gradient itself, so
                  no token's gradient is dropped (MiniMax-M1, arXiv 2506.13585)
        pg *= w, the detached mismatch weight of `compute_mismatch_weights` (tis_mode, tis_cap,
              tis_floor), when engine logprobs and tis_cap are given
        loss = pg + beta * k3 - entropy_coef * entropy
    where k3 = exp(ref - logp) - (ref - logp) - 1 is Schulman's unbiased, non-negative KL estimator
    (GRPO). The papers' own reductions: GSPO is a mean over sequences (`sequence_mean`), CISPO a
    mean over tokens (`token_mean`).

    Args:
        logprobs: [B, T] learner logprobs of the completion tokens, with gradient.
        old_logprobs: [B, T] logprobs of the policy that sampled the batch (detached).
        advantages: [B] per-sequence advantage.
        mask: [B, T] 1 on completion tokens that count.
        epsilon_low, epsilon_high: clip range [1 - epsilon_low, 1 + epsilon_high] of the ratio (GSPO's paper uses
            3e-4 and 4e-4 for its sequence ratio).
        dual_clip: c > 1 bounds the loss of negative-advantage tokens at -c * A (ppo_clip only).
        loss_aggregation, max_completion_length, batch_sequences, batch_tokens: see `aggregate_loss`.
        ref_logprobs: [B, T] frozen reference model logprobs; required when beta > 0.
        beta: KL weight.
        engine_logprobs: [B, T] rollout engine logprobs; with tis_cap, enables the mismatch weight.
        tis_cap: the cap of the mismatch weight or kept range; None disables the correction.
        entropy: [B, T] per-token entropy of the learner's distribution; measured when given.
        entropy_coef: weight of the entropy bonus (needs `entropy` with gradient).
        policy_loss: one of POLICY_LOSSES.
        tis_mode, tis_floor: level, mode and lower bound of the mismatch correction (see
            `compute_mismatch_weights`).

    Returns:
        loss: scalar.
        metrics: token means of kl, clip/low_frac, clip/high_frac, clip/dual_frac, ratio/mean,
            entropy, the mismatch metrics of `compute_mismatch_weights`, and ratio/max (a max);
            keys appear when measurable. For cispo the clip fractions count truncated weights
            whatever the advantage's sign.
    """
    if policy_loss not in POLICY_LOSSES:
        raise ValueError(f"unknown policy loss {policy_loss!r}; expected one of {POLICY_LOSSES}")
    if dual_clip is not None and policy_loss != "ppo_clip":
        raise ValueError(f"dual_clip applies to policy_loss 'ppo_clip', not {policy_loss!r}")
    if beta > 0 and ref_logprobs is None:
        raise ValueError("beta > 0 needs ref_logprobs")
    if entropy_coef > 0 and entropy is None:
        raise ValueError("entropy_coef > 0 needs entropy")
    mask_bool = mask.bool()
    adv = advantages.to(logprobs.dtype).unsqueeze(1)  # [B, 1]
    if policy_loss == "gspo":
        ratio = compute_gspo_ratio(logprobs, old_logprobs, mask)
    else:
        ratio = bounded_exp(logprobs - old_logprobs)
    clipped_ratio = ratio.clamp(1.0 - epsilon_low, 1.0 + epsilon_high)
    below, above = ratio < 1.0 - epsilon_low, ratio > 1.0 + epsilon_high
    dual_active = torch.zeros_like(mask_bool)
    if policy_loss == "cispo":
        pg = -adv * clipped_ratio.detach() * torch.exp(logprobs - logprobs.detach())
    else:
        pg = torch.maximum(-adv * ratio, -adv * clipped_ratio)
        # The clip takes effect (and zeroes the gradient) only on the side the advantage pushes to.
        below, above = below & (adv < 0), above & (adv > 0)
        if dual_clip is not None:
            dual_bound = -adv * dual_clip
            dual_active = (adv < 0) & (pg > dual_bound)
            pg = torch.where(adv < 0, torch.minimum(pg, dual_bound), pg)
    metrics: dict[str, float] = {}
    if engine_logprobs is not None and tis_cap is not None:
        weights, mismatch_metrics = compute_mismatch_weights(old_logprobs, engine_logprobs, mask, tis_mode, tis_cap,
                                                             tis_floor)
        pg = pg * weights
        metrics.update(mismatch_metrics)
    loss_mat = pg
    if ref_logprobs is not None:
        log_ratio_ref = (ref_logprobs - logprobs).clamp(-LOG_RATIO_BOUND, LOG_RATIO_BOUND)
        kl = torch.exp(log_ratio_ref) - log_ratio_ref - 1.0
        if beta > 0:
            loss_mat = loss_mat + beta * kl
        metrics["kl"] = _token_mean(kl, mask_bool)
    if entropy is not None:
        if entropy_coef > 0:
            loss_mat = loss_mat - entropy_coef * entropy
        metrics["entropy"] = _token_mean(entropy, mask_bool)
    loss = aggregate_loss(loss_mat, mask, loss_aggregation, max_completion_length, batch_sequences, batch_tokens)

    metrics["clip/low_frac"] = _token_mean(below, mask_bool)
    metrics["clip/high_frac"] = _token_mean(above, mask_bool)
    metrics["clip/dual_frac"] = _token_mean(dual_active, mask_bool)
    metrics["ratio/mean"] = _token_mean(ratio, mask_bool)
    metrics["ratio/max"] = ratio.detach()[mask_bool].max().item() if mask_bool.any() else 1.0
    return loss, metrics


def _token_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    values = values.detach().float()
    if not mask.any():
        return 0.0
    return values[mask].mean().item()
