"""Policy-loss variants (GSPO, CISPO), mismatch corrections and the RLOO baseline: hand-computed
cases, slow loop references and the gradients that have a closed form."""
import math

import pytest
import torch

from r1train.algorithm import aggregate_loss, compute_group_advantages
from r1train.policy_loss import (
    LOG_RATIO_BOUND,
    TIS_MODES,
    compute_gspo_ratio,
    compute_mismatch_weights,
    compute_policy_loss,
)

from tests.test_algorithm import AGGREGATIONS, MAX_LEN, loop_aggregate, random_token_batch


# ----------------------------------------------------------------------------- slow references
def loop_gspo_loss(logp, old, adv, mask, epsilon_low, epsilon_high):
    """GSPO as the paper writes it: the mean over sequences of the clipped sequence-ratio surrogate."""
    total = 0.0
    for b in range(len(logp)):
        tokens = [t for t in range(len(mask[b])) if mask[b][t]]
        s = math.exp(sum(logp[b][t] - old[b][t] for t in tokens) / len(tokens))
        clipped = min(max(s, 1 - epsilon_low), 1 + epsilon_high)
        total += max(-adv[b] * s, -adv[b] * clipped)
    return total / len(logp)


def loop_mismatch_weights(old, engine, mask, mode, cap, floor):
    floor = 1 / cap if floor is None else floor
    weights = []
    for b in range(len(old)):
        tokens = [t for t in range(len(mask[b])) if mask[b][t]]
        ratios = {t: math.exp(old[b][t] - engine[b][t]) for t in tokens}
        product = math.prod(ratios.values())
        row = []
        for t in range(len(mask[b])):
            if t not in ratios:
                row.append(0.0)
            elif mode == "token_truncate":
                row.append(min(ratios[t], cap))
            elif mode == "token_mask":
                row.append(1.0 if floor <= ratios[t] <= cap else 0.0)
            elif mode == "sequence_truncate":
                row.append(min(product, cap))
            elif mode == "sequence_mask":
                row.append(1.0 if floor <= product <= cap else 0.0)
            else:  # geometric_mask
                row.append(1.0 if floor <= product ** (1 / len(tokens)) <= cap else 0.0)
        weights.append(row)
    return weights


def loop_rloo(rewards, group_size):
    out = []
    for start in range(0, len(rewards), group_size):
        group = rewards[start:start + group_size]
        for i, r in enumerate(group):
            others = group[:i] + group[i + 1:]
            out.append(0.0 if max(group) == min(group) else r - sum(others) / len(others))
    return out


def close(weights, expected):
    return torch.allclose(weights, torch.tensor(expected, dtype=weights.dtype), atol=1e-12)


def requires_grad(tensor):
    return tensor.clone().requires_grad_()


# ----------------------------------------------------------------------------- log-ratio bound
def test_an_exploding_ratio_gives_a_finite_loss():
    # log-ratio 100 with a negative advantage: exp(100) * 1 would overflow fp32 without the bound.
    logp = requires_grad(torch.tensor([[0.0, -1.0]]))
    old = torch.tensor([[-100.0, -1.0]])
    for policy_loss in ("ppo_clip", "gspo", "cispo"):
        loss, metrics = compute_policy_loss(logp.float(), old, torch.tensor([-1.0]), torch.ones(1, 2),
                                            policy_loss=policy_loss)
        loss.backward()
        assert math.isfinite(loss.item()) and torch.isfinite(logp.grad).all(), policy_loss
        logp.grad = None
    _, metrics = compute_policy_loss(logp.float(), old, torch.tensor([-1.0]), torch.ones(1, 2))
    assert metrics["ratio/max"] == pytest.approx(math.exp(LOG_RATIO_BOUND), rel=1e-5)


# ----------------------------------------------------------------------------- GSPO
def test_gspo_hand_computed():
    # Row 0: log-ratios 0.2 and 0.0 -> s = exp(0.1) = 1.105, A = +1, clipped at 1 + 0.05.
    # Row 1: one token, log-ratio log(0.99) -> s = 0.99 inside [0.95, 1.05], A = -2: loss 1.98.
    logp = torch.tensor([[0.2, 0.0], [math.log(0.99), 0.0]], dtype=torch.float64)
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    loss, m = compute_policy_loss(logp, torch.zeros_like(logp), torch.tensor([1.0, -2.0], dtype=torch.float64), mask,
                                  epsilon_low=0.05, epsilon_high=0.05, loss_aggregation="sequence_mean", policy_loss="gspo")
    assert loss.item() == pytest.approx((-1.05 + 1.98) / 2)
    # Every token of row 0 carries its sequence's ratio and is clipped with it.
    assert m["clip/high_frac"] == pytest.approx(2 / 3)
    ratio = compute_gspo_ratio(logp, torch.zeros_like(logp), mask)
    assert ratio[0].tolist() == pytest.approx([math.exp(0.1)] * 2)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gspo_matches_the_sequence_level_loop_and_its_gradient(seed):
    b = random_token_batch(seed)
    b["old"] = b["logp"] + (b["old"] - b["logp"]) * 0.2
    logp = requires_grad(b["logp"])
    loss, metrics = compute_policy_loss(logp, b["old"], b["adv"], b["mask"], epsilon_low=0.01, epsilon_high=0.015,
                                        loss_aggregation="sequence_mean", policy_loss="gspo")
    assert 0 < metrics["clip/high_frac"] < 1  # some sequences clipped, others not
    lists = {k: v.tolist() for k, v in b.items()}
    assert loss.item() == pytest.approx(loop_gspo_loss(lists["logp"], lists["old"], lists["adv"], lists["mask"],
                                                       0.01, 0.015), rel=1e-10)
    # Closed form: the gradient of the sequence-level objective, autograd through s_i itself.
    (grad,) = torch.autograd.grad(loss, logp)
    direct = requires_grad(b["logp"])
    s = torch.exp(((direct - b["old"]) * b["mask"]).sum(1) / b["mask"].sum(1))
    sequence_loss = torch.maximum(-b["adv"] * s, -b["adv"] * s.clamp(0.99, 1.015)).mean()
    (direct_grad,) = torch.autograd.grad(sequence_loss, direct)
    assert torch.allclose(grad, direct_grad, atol=1e-12)
    assert grad.abs().sum() > 0


@pytest.mark.parametrize("mode", AGGREGATIONS)
def test_gspo_equals_the_token_ratio_for_one_token_sequences(mode):
    b = random_token_batch(3, width=1)
    results = []
    for policy_loss in ("ppo_clip", "gspo"):
        logp = requires_grad(b["logp"])
        loss, metrics = compute_policy_loss(logp, b["old"], b["adv"], b["mask"], loss_aggregation=mode,
                                            max_completion_length=1, policy_loss=policy_loss)
        results.append((loss, torch.autograd.grad(loss, logp)[0], metrics))
    (ppo_loss, ppo_grad, ppo_metrics), (gspo_loss, gspo_grad, gspo_metrics) = results
    assert gspo_loss.item() == pytest.approx(ppo_loss.item(), rel=1e-12)
    assert torch.allclose(gspo_grad, ppo_grad, atol=1e-12)
    assert gspo_metrics["clip/high_frac"] == ppo_metrics["clip/high_frac"]


# ----------------------------------------------------------------------------- CISPO
def test_cispo_hand_computed_keeps_the_gradient_of_clipped_tokens():
    # Ratio 1.5, A = +1: PPO clips at 1.2 and drops the token's gradient; CISPO weights it by 1.2.
    for policy_loss, expected_grad in (("ppo_clip", 0.0), ("cispo", -1.2)):
        logp = torch.tensor([[math.log(1.5)]], dtype=torch.float64, requires_grad=True)
        loss, m = compute_policy_loss(logp, torch.zeros(1, 1, dtype=torch.float64), torch.tensor([1.0]),
                                      torch.ones(1, 1), policy_loss=policy_loss)
        loss.backward()
        assert loss.item() == pytest.approx(-1.2) and logp.grad.item() == pytest.approx(expected_grad)
        assert m["clip/high_frac"] == 1.0
    # Ratio 0.5, A = +1: CISPO truncates the weight from below too (0.8), whatever A's sign.
    logp = torch.tensor([[math.log(0.5)]], dtype=torch.float64, requires_grad=True)
    loss, m = compute_policy_loss(logp, torch.zeros(1, 1, dtype=torch.float64), torch.tensor([1.0]),
                                  torch.ones(1, 1), policy_loss="cispo")
    loss.backward()
    assert loss.item() == pytest.approx(-0.8) and logp.grad.item() == pytest.approx(-0.8)
    assert m["clip/low_frac"] == 1.0
    # Ratio 1.5, A = -1: PPO does not clip on this side (loss 1.5, gradient 1.5); CISPO still caps
    # the weight at 1.2 (loss and gradient 1.2).
    for policy_loss, expected in (("ppo_clip", 1.5), ("cispo", 1.2)):
        logp = torch.tensor([[math.log(1.5)]], dtype=torch.float64, requires_grad=True)
        loss, _ = compute_policy_loss(logp, torch.zeros(1, 1, dtype=torch.float64), torch.tensor([-1.0]),
                                      torch.ones(1, 1), policy_loss=policy_loss)
        loss.backward()
        assert loss.item() == pytest.approx(expected) and logp.grad.item() == pytest.approx(expected), policy_loss


@pytest.mark.parametrize("mode", AGGREGATIONS)
def test_cispo_weights_carry_no_gradient(mode):
    """The gradient is the clipped weight times the plain policy gradient -A * grad(logp)."""
    b = random_token_batch(4)
    logp = requires_grad(b["logp"])
    loss, _ = compute_policy_loss(logp, b["old"], b["adv"], b["mask"], epsilon_low=0.2, epsilon_high=0.28,
                                  loss_aggregation=mode, max_completion_length=MAX_LEN, policy_loss="cispo")
    (grad,) = torch.autograd.grad(loss, logp)
    weight = torch.exp(b["logp"] - b["old"]).clamp(0.8, 1.28)
    plain = requires_grad(b["logp"])
    (expected,) = torch.autograd.grad(aggregate_loss(-b["adv"].unsqueeze(1) * weight * plain, b["mask"], mode,
                                                     MAX_LEN), plain)
    assert torch.allclose(grad, expected, atol=1e-12)
    # The loss's value is that of -A * clipped weight, per token, aggregated.
    lists = {k: v.tolist() for k, v in b.items()}
    per_token = [[-lists["adv"][r] * min(max(math.exp(lists["logp"][r][t] - lists["old"][r][t]), 0.8), 1.28)
                  for t in range(MAX_LEN)] for r in range(5)]
    assert loss.item() == pytest.approx(loop_aggregate(per_token, lists["mask"], mode, MAX_LEN), rel=1e-10)


# ----------------------------------------------------------------------------- mismatch corrections
def test_mismatch_weights_hand_computed():
    # Learner/engine token ratios 2.5 and 0.6 on row 0; 1.0 and (padding) on row 1.
    old = torch.tensor([[math.log(2.5), math.log(0.6)], [0.0, 0.0]], dtype=torch.float64)
    engine = torch.zeros(2, 2, dtype=torch.float64)
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    cases = {
        "token_truncate": [[2.0, 0.6], [1.0, 0.0]],       # 2.5 capped at 2
        "token_mask": [[0.0, 1.0], [1.0, 0.0]],           # 2.5 outside [0.5, 2]: masked
        "sequence_truncate": [[1.5, 1.5], [1.0, 0.0]],    # product 1.5, below the cap
        "sequence_mask": [[1.0, 1.0], [1.0, 0.0]],        # product 1.5 inside [0.5, 2]
        "geometric_mask": [[1.0, 1.0], [1.0, 0.0]],       # sqrt(1.5) = 1.22 inside [0.5, 2]
    }
    for mode, expected in cases.items():
        weights, metrics = compute_mismatch_weights(old, engine, mask, mode, cap=2.0)
        assert close(weights, expected), mode
        assert metrics["mismatch/ratio_mean"] == pytest.approx((2.5 + 0.6 + 1.0) / 3)
        assert metrics["mismatch/ratio/max"] == pytest.approx(2.5)
        assert metrics["mismatch/ratio/min"] == pytest.approx(0.6)
    # Tighter bounds: the sequence product 1.5 leaves [0.9, 1.2]; the geometric mean 1.22 does too.
    weights, m = compute_mismatch_weights(old, engine, mask, "sequence_mask", cap=1.2, floor=0.9)
    assert close(weights, [[0.0, 0.0], [1.0, 0.0]]) and m["tis/masked_frac"] == pytest.approx(2 / 3)
    weights, _ = compute_mismatch_weights(old, engine, mask, "geometric_mask", cap=1.25, floor=0.9)
    assert close(weights, [[1.0, 1.0], [1.0, 0.0]])
    weights, m = compute_mismatch_weights(old, engine, mask, "sequence_truncate", cap=1.2)
    assert close(weights, [[1.2, 1.2], [1.0, 0.0]]) and m["tis/clipped_frac"] == pytest.approx(2 / 3)
    # k3 of KL(engine || learner), rho - 1 - log rho per token.
    k3 = [(r - 1 - math.log(r)) for r in (2.5, 0.6, 1.0)]
    assert m["mismatch/kl"] == pytest.approx(sum(k3) / 3)


@pytest.mark.parametrize("mode", TIS_MODES)
@pytest.mark.parametrize("seed", [5, 7])
def test_mismatch_weights_match_loop(mode, seed):
    b = random_token_batch(seed)
    # Seeds and scale chosen so that every mode keeps some tokens and cuts others (seed 5 masks every
    # sequence in the sequence modes, seed 7 some).
    b["engine"] = b["old"] + (b["engine"] - b["logp"]) * 0.6
    cap, floor = (1.1, 0.95) if mode == "geometric_mask" else (1.5, None if mode.endswith("truncate") else 0.7)
    weights, metrics = compute_mismatch_weights(b["old"], b["engine"], b["mask"], mode, cap, floor)
    lists = {k: v.tolist() for k, v in b.items()}
    expected = loop_mismatch_weights(lists["old"], lists["engine"], lists["mask"], mode, cap, floor)
    assert torch.allclose(weights, torch.tensor(expected, dtype=torch.float64), atol=1e-12)
    ratios = [math.exp(lists["old"][r][t] - lists["engine"][r][t]) for r in range(5) for t in range(MAX_LEN)
              if lists["mask"][r][t]]
    assert metrics["mismatch/kl"] == pytest.approx(sum(x - 1 - math.log(x) for x in ratios) / len(ratios))
    assert metrics["mismatch/ratio/max"] == pytest.approx(max(ratios))


@pytest.mark.parametrize("mode", TIS_MODES)
def test_mismatch_weight_scales_the_gradient_and_is_detached(mode):
    b = random_token_batch(8)
    logp, engine = requires_grad(b["logp"]), requires_grad(b["engine"])
    cap = 1.1 if mode == "geometric_mask" else 1.5
    loss, _ = compute_policy_loss(logp, logp.detach(), b["adv"], b["mask"], engine_logprobs=engine, tis_cap=cap,
                                  tis_mode=mode)
    grad_logp, grad_engine = torch.autograd.grad(loss, (logp, engine), allow_unused=True)
    assert grad_engine is None
    weights, _ = compute_mismatch_weights(b["logp"], b["engine"], b["mask"], mode, cap)
    assert torch.allclose(grad_logp, -b["adv"].unsqueeze(1) * weights * b["mask"] / b["mask"].sum(), atol=1e-12)


def test_mismatch_weights_reject_bad_bounds():
    b = random_token_batch(9)
    with pytest.raises(ValueError, match="floor"):
        compute_mismatch_weights(b["old"], b["engine"], b["mask"], "token_truncate", 2.0, floor=0.5)
    with pytest.raises(ValueError, match="floor <= 1 <= cap"):
        compute_mismatch_weights(b["old"], b["engine"], b["mask"], "token_mask", 0.9)
    with pytest.raises(ValueError, match="mode"):
        compute_mismatch_weights(b["old"], b["engine"], b["mask"], "icepop", 2.0)
    with pytest.raises(ValueError, match="dual_clip"):
        compute_policy_loss(b["logp"], b["old"], b["adv"], b["mask"], dual_clip=3.0, policy_loss="gspo")


# ----------------------------------------------------------------------------- RLOO
def test_leave_one_out_hand_computed():
    # Group [1, 0, 0, 0]: the first sample's baseline is 0 (A = 1), the others' 1/3 (A = -1/3).
    adv, _ = compute_group_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), 4, "none", baseline="leave_one_out")
    assert adv.tolist() == pytest.approx([1.0, -1 / 3, -1 / 3, -1 / 3])


@pytest.mark.parametrize("seed", [0, 1])
def test_leave_one_out_matches_loop_and_is_a_rescaled_group_mean(seed):
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randint(0, 3, (24,), generator=g).double() / 2  # some all-equal groups
    adv, _ = compute_group_advantages(rewards, 4, "none", baseline="leave_one_out")
    assert torch.allclose(adv, torch.tensor(loop_rloo(rewards.tolist(), 4), dtype=torch.float64), atol=1e-12)
    for scaling in ("group", "batch", "none"):
        loo, _ = compute_group_advantages(rewards, 4, scaling, baseline="leave_one_out")
        mean, _ = compute_group_advantages(rewards, 4, scaling)
        assert torch.allclose(loo, mean * 4 / 3, atol=1e-12)
    with pytest.raises(ValueError, match="baseline"):
        compute_group_advantages(rewards, 4, "none", baseline="median")
