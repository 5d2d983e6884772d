"""GRPO maths: hand-computed cases, slow loop references, composability and gradients."""
import math

import pytest
import torch

from r1train.algorithm import (
    aggregate_loss,
    compute_group_advantages,
    select_informative_groups,
)
from r1train.policy_loss import compute_policy_loss

AGGREGATIONS = ("sequence_mean", "token_mean", "sum_over_max_len")
MAX_LEN = 7


# ----------------------------------------------------------------------------- slow references
def loop_advantages(rewards, group_size, scaling, eps):
    rewards = [float(r) for r in rewards]
    out = []
    batch_mean = sum(rewards) / len(rewards)
    batch_std = math.sqrt(sum((r - batch_mean) ** 2 for r in rewards) / (len(rewards) - 1))
    for start in range(0, len(rewards), group_size):
        group = rewards[start:start + group_size]
        mean = sum(group) / len(group)
        std = math.sqrt(sum((r - mean) ** 2 for r in group) / (len(group) - 1))
        for r in group:
            if max(group) == min(group):
                out.append(0.0)
            elif scaling == "group":
                out.append((r - mean) / (std + eps))
            elif scaling == "batch":
                out.append((r - mean) / (batch_std + eps))
            else:
                out.append(r - mean)
    return out


def loop_aggregate(loss_mat, mask, mode, max_len):
    rows = [[loss_mat[b][t] for t in range(len(mask[b])) if mask[b][t]] for b in range(len(mask))]
    if mode == "sequence_mean":
        return sum(sum(r) / max(len(r), 1) for r in rows) / len(rows)
    if mode == "token_mean":
        return sum(sum(r) for r in rows) / sum(len(r) for r in rows)
    return sum(sum(r) for r in rows) / (max_len * len(rows))


def loop_policy_loss(logp, old, adv, mask, epsilon_low, epsilon_high, dual_clip, mode, ref, beta, engine, cap, ent, ent_coef):
    per_token = []
    for b in range(len(logp)):
        row = []
        for t in range(len(logp[b])):
            ratio = math.exp(logp[b][t] - old[b][t])
            clipped = min(max(ratio, 1 - epsilon_low), 1 + epsilon_high)
            pg = max(-adv[b] * ratio, -adv[b] * clipped)
            if dual_clip is not None and adv[b] < 0:
                pg = min(pg, -adv[b] * dual_clip)
            if cap is not None:
                pg *= min(math.exp(old[b][t] - engine[b][t]), cap)
            d = ref[b][t] - logp[b][t]
            row.append(pg + beta * (math.exp(d) - d - 1) - ent_coef * ent[b][t])
        per_token.append(row)
    return loop_aggregate(per_token, mask, mode, MAX_LEN)


def random_token_batch(seed, rows=5, width=MAX_LEN):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, width + 1, (rows,), generator=g)
    mask = (torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)).double()
    def noise(scale):
        return torch.randn(rows, width, generator=g, dtype=torch.float64) * scale

    logp = -1.0 + noise(0.3)
    return dict(logp=logp, old=logp + noise(0.3), adv=torch.randn(rows, generator=g, dtype=torch.float64),
                mask=mask, ref=logp + noise(0.3), engine=logp + noise(0.5), ent=noise(1.0).abs())


# ----------------------------------------------------------------------------- advantages
def test_group_advantages_hand_computed():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0])
    # Group 1: mean 0.5, unbiased std sqrt(1/3): +-0.5 * sqrt(3). Group 2: all equal -> zeros.
    adv, metrics = compute_group_advantages(rewards, 4, "group", eps=0.0)
    half_sqrt3 = 0.5 * math.sqrt(3)
    assert torch.allclose(adv, torch.tensor([half_sqrt3, -half_sqrt3, -half_sqrt3, half_sqrt3, 0, 0, 0, 0]))
    assert metrics["groups/zero_variance_frac"] == 0.5
    # Dr. GRPO: centred only.
    adv, _ = compute_group_advantages(rewards, 4, "none")
    assert torch.allclose(adv, torch.tensor([0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0]))
    # Batch std of all eight rewards: sqrt(5.5 / 7).
    adv, _ = compute_group_advantages(rewards, 4, "batch", eps=0.0)
    assert torch.allclose(adv[:4], torch.tensor([0.5, -0.5, -0.5, 0.5]) / math.sqrt(5.5 / 7))


def test_equal_rewards_give_exact_zeros():
    # The mean of three 1/3s need not round back to 1/3; the advantages must still be exactly zero.
    rewards = torch.tensor([1 / 3, 1 / 3, 1 / 3, 0.1, 0.1, 0.1], dtype=torch.float64)
    for scaling in ("group", "batch", "none"):
        adv, metrics = compute_group_advantages(rewards, 3, scaling)
        assert torch.equal(adv, torch.zeros(6, dtype=torch.float64))
        assert metrics["groups/zero_variance_frac"] == 1.0


@pytest.mark.parametrize("scaling", ["group", "batch", "none"])
def test_group_advantages_match_loop(scaling):
    g = torch.Generator().manual_seed(1)
    rewards = torch.randint(0, 3, (24,), generator=g).double() / 2  # many ties, some equal groups
    adv, metrics = compute_group_advantages(rewards, 4, scaling, eps=1e-6)
    expected = loop_advantages(rewards.tolist(), 4, scaling, 1e-6)
    assert torch.allclose(adv, torch.tensor(expected, dtype=torch.float64), atol=1e-12)
    equal_groups = sum(len(set(rewards[i:i + 4].tolist())) == 1 for i in range(0, 24, 4))
    assert metrics["groups/zero_variance_frac"] == pytest.approx(equal_groups / 6)


def test_group_advantages_reject_bad_input():
    with pytest.raises(ValueError, match="scaling"):
        compute_group_advantages(torch.zeros(4), 2, "median")
    with pytest.raises(ValueError, match="multiple of group_size"):
        compute_group_advantages(torch.zeros(5), 2)


# ----------------------------------------------------------------------------- DAPO helpers
def test_select_informative_groups():
    rewards = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0])
    assert select_informative_groups(rewards, 2).tolist() == [False, True, False]


# ----------------------------------------------------------------------------- aggregation
def test_aggregate_hand_computed():
    loss_mat = torch.tensor([[1.0, 2.0, 3.0], [4.0, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    assert aggregate_loss(loss_mat, mask, "sequence_mean").item() == pytest.approx((2 + 4) / 2)
    assert aggregate_loss(loss_mat, mask, "token_mean").item() == pytest.approx(10 / 4)
    assert aggregate_loss(loss_mat, mask, "sum_over_max_len", max_completion_length=5).item() == pytest.approx(10 / 10)
    with pytest.raises(ValueError, match="max_completion_length"):
        aggregate_loss(loss_mat, mask, "sum_over_max_len")
    with pytest.raises(ValueError, match="unknown loss aggregation"):
        aggregate_loss(loss_mat, mask, "median")


@pytest.mark.parametrize("mode", AGGREGATIONS)
def test_aggregate_matches_loop(mode):
    batch = random_token_batch(2)
    value = aggregate_loss(batch["logp"], batch["mask"], mode, MAX_LEN)
    assert value.item() == pytest.approx(loop_aggregate(batch["logp"].tolist(), batch["mask"].tolist(), mode, MAX_LEN))


@pytest.mark.parametrize("mode", AGGREGATIONS)
def test_aggregate_composes_over_micro_batches(mode):
    batch = random_token_batch(3, rows=7)
    loss_mat, mask = batch["logp"].clone().requires_grad_(), batch["mask"]
    whole = aggregate_loss(loss_mat, mask, mode, MAX_LEN)
    (whole_grad,) = torch.autograd.grad(whole, loss_mat)
    parts, total = [slice(0, 2), slice(2, 3), slice(3, 7)], 0.0
    for rows in parts:
        total = total + aggregate_loss(loss_mat[rows], mask[rows], mode, MAX_LEN,
                                       batch_sequences=7, batch_tokens=int(mask.sum()))
    (parts_grad,) = torch.autograd.grad(total, loss_mat)
    assert total.item() == pytest.approx(whole.item(), abs=1e-12)
    assert torch.allclose(parts_grad, whole_grad, atol=1e-12)
    # Without the global normaliser the micro-batch losses do not add up (the test can fail).
    if mode != "sum_over_max_len":
        naive = sum(aggregate_loss(loss_mat[rows], mask[rows], mode, MAX_LEN) for rows in parts)
        assert naive.item() != pytest.approx(whole.item())


# ----------------------------------------------------------------------------- policy loss
def one_token(logp, adv, **kwargs):
    kwargs.setdefault("epsilon_low", 0.2)
    kwargs.setdefault("epsilon_high", 0.2)
    return compute_policy_loss(torch.tensor([[logp]]), torch.tensor([[0.0]]), torch.tensor([adv]),
                               torch.ones(1, 1), **kwargs)


def test_policy_loss_hand_computed():
    # Ratio 1.5 with A = +1 is clipped at 1 + epsilon_high = 1.2.
    loss, m = one_token(math.log(1.5), 1.0)
    assert loss.item() == pytest.approx(-1.2) and m["clip/high_frac"] == 1.0 and m["clip/low_frac"] == 0.0
    # Clip-higher: epsilon_high 0.28 lets the same ratio reach 1.28.
    loss, _ = one_token(math.log(1.5), 1.0, epsilon_high=0.28)
    assert loss.item() == pytest.approx(-1.28)
    # Ratio 0.5 with A = -1: max(0.5, 0.8) = 0.8, the low clip is active.
    loss, m = one_token(math.log(0.5), -1.0)
    assert loss.item() == pytest.approx(0.8) and m["clip/low_frac"] == 1.0
    # Ratio 5 with A = -1: PPO gives max(5, 1.2) = 5; dual clip 3 bounds it at 3.
    loss, m = one_token(math.log(5.0), -1.0)
    assert loss.item() == pytest.approx(5.0) and m["clip/dual_frac"] == 0.0
    loss, m = one_token(math.log(5.0), -1.0, dual_clip=3.0)
    assert loss.item() == pytest.approx(3.0) and m["clip/dual_frac"] == 1.0
    assert m["ratio/mean"] == pytest.approx(5.0) and m["ratio/max"] == pytest.approx(5.0)


def test_k3_kl_and_tis_hand_computed():
    logp, old = torch.tensor([[math.log(0.25)]]), torch.tensor([[math.log(0.25)]])
    ref = torch.tensor([[math.log(0.5)]])  # ref - logp = log 2: k3 = 2 - log 2 - 1
    k3 = 1.0 - math.log(2.0)
    loss, m = compute_policy_loss(logp, old, torch.tensor([0.0]), torch.ones(1, 1), ref_logprobs=ref, beta=0.1)
    assert m["kl"] == pytest.approx(k3) and loss.item() == pytest.approx(0.1 * k3)
    # Engine gave the token probability 0.05: weight 0.25 / 0.05 = 5, capped at 2.
    engine = torch.tensor([[math.log(0.05)]])
    loss, m = compute_policy_loss(logp, old, torch.tensor([1.0]), torch.ones(1, 1), engine_logprobs=engine, tis_cap=2.0)
    assert loss.item() == pytest.approx(-2.0) and m["tis/clipped_frac"] == 1.0
    loss, m = compute_policy_loss(logp, old, torch.tensor([1.0]), torch.ones(1, 1), engine_logprobs=engine, tis_cap=10.0)
    assert loss.item() == pytest.approx(-5.0) and m["tis/clipped_frac"] == 0.0


@pytest.mark.parametrize("mode", AGGREGATIONS)
@pytest.mark.parametrize("dual_clip", [None, 2.0])
def test_policy_loss_matches_loop(mode, dual_clip):
    b = random_token_batch(4)
    settings = dict(epsilon_low=0.2, epsilon_high=0.28, dual_clip=dual_clip, beta=0.05, tis_cap=1.5, entropy_coef=0.01)
    loss, metrics = compute_policy_loss(
        b["logp"], b["old"], b["adv"], b["mask"], epsilon_low=0.2, epsilon_high=0.28, dual_clip=dual_clip,
        loss_aggregation=mode, max_completion_length=MAX_LEN, ref_logprobs=b["ref"], beta=0.05,
        engine_logprobs=b["engine"], tis_cap=1.5, entropy=b["ent"], entropy_coef=0.01,
    )
    lists = {k: v.tolist() for k, v in b.items()}
    expected = loop_policy_loss(lists["logp"], lists["old"], lists["adv"], lists["mask"], settings["epsilon_low"],
                                settings["epsilon_high"], dual_clip, mode, lists["ref"], 0.05, lists["engine"], 1.5,
                                lists["ent"], 0.01)
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    tokens = [(bi, t) for bi in range(5) for t in range(MAX_LEN) if lists["mask"][bi][t]]
    ratios = [math.exp(lists["logp"][bi][t] - lists["old"][bi][t]) for bi, t in tokens]
    assert metrics["ratio/max"] == pytest.approx(max(ratios))
    assert metrics["ratio/mean"] == pytest.approx(sum(ratios) / len(ratios))
    high = sum(r > 1.28 and lists["adv"][bi] > 0 for r, (bi, _) in zip(ratios, tokens))
    assert metrics["clip/high_frac"] == pytest.approx(high / len(tokens))


@pytest.mark.parametrize("mode", AGGREGATIONS)
def test_unclipped_on_policy_gradient_is_policy_gradient(mode):
    """mu = 1 (old = current, detached), clip inactive: the gradient is that of -A * logp."""
    b = random_token_batch(5)
    logp = b["logp"].clone().requires_grad_()
    loss, _ = compute_policy_loss(logp, logp.detach(), b["adv"], b["mask"], loss_aggregation=mode,
                                  max_completion_length=MAX_LEN)
    (grad,) = torch.autograd.grad(loss, logp)
    plain = aggregate_loss(-b["adv"].unsqueeze(1) * logp, b["mask"], mode, MAX_LEN)
    (plain_grad,) = torch.autograd.grad(plain, logp)
    assert torch.allclose(grad, plain_grad, atol=1e-12)
    assert grad.abs().sum() > 0


def test_tis_weight_scales_gradient_and_is_detached():
    b = random_token_batch(6)
    logp = b["logp"].clone().requires_grad_()
    engine = b["engine"].clone().requires_grad_()
    loss, _ = compute_policy_loss(logp, logp.detach(), b["adv"], b["mask"], engine_logprobs=engine, tis_cap=1.5)
    grad_logp, grad_engine = torch.autograd.grad(loss, (logp, engine), allow_unused=True)
    assert grad_engine is None
    weight = torch.exp(logp.detach() - b["engine"]).clamp(max=1.5)
    tokens = b["mask"].sum()
    assert torch.allclose(grad_logp, -b["adv"].unsqueeze(1) * weight * b["mask"] / tokens, atol=1e-12)


def test_policy_loss_requires_its_inputs():
    b = random_token_batch(7)
    with pytest.raises(ValueError, match="ref_logprobs"):
        compute_policy_loss(b["logp"], b["old"], b["adv"], b["mask"], beta=0.1)
    with pytest.raises(ValueError, match="entropy"):
        compute_policy_loss(b["logp"], b["old"], b["adv"], b["mask"], entropy_coef=0.1)


def test_batch_scaling_divides_by_the_whole_batch_std_when_given():
    from r1train.distributed import batch_std

    rewards = torch.tensor([0.0, 1.0, 2.0, 4.0])  # groups of 2, centred: [-0.5, 0.5, -1, 1]
    advantages, _ = compute_group_advantages(rewards, 2, "batch", eps=0.0, batch_std=2.0)
    assert advantages.tolist() == [-0.25, 0.25, -0.5, 0.5]
    assert batch_std(rewards) == pytest.approx(rewards.std().item())  # one process: its own std


def test_tis_weight_mean_reports_the_weight_the_loss_is_multiplied_by():
    logprobs = torch.zeros(1, 3, requires_grad=True)
    old = torch.zeros(1, 3)
    engine = torch.tensor([[0.0, -math.log(1.5), -math.log(4.0)]])  # weights 1, 1.5, 4 -> capped 2
    _, m = compute_policy_loss(logprobs, old, torch.ones(1), torch.ones(1, 3), engine_logprobs=engine, tis_cap=2.0)
    assert m["tis/weight_mean"] == pytest.approx((1.0 + 1.5 + 2.0) / 3)
