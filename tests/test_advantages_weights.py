"""Group advantages, thresholds and THR token weights against slow references."""

import statistics

import pytest
import torch

import thr
from thr.core import influence_threshold, steered_advantages
from thr.core.weights import thr_token_advantages


def loop_advantages(rewards, groups, mode, unbiased, eps):
    out = [0.0] * len(rewards)
    for g in set(groups):
        idx = [i for i, x in enumerate(groups) if x == g]
        vals = [rewards[i] for i in idx]
        mean = sum(vals) / len(vals)
        if len(set(vals)) == 1:
            continue
        std = statistics.stdev(vals) if unbiased else statistics.pstdev(vals)
        for i in idx:
            out[i] = (rewards[i] - mean) / (std + eps) if mode == "grpo" else rewards[i] - mean
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("mode", ["grpo", "drgrpo"])
@pytest.mark.parametrize("unbiased", [True, False])
def test_group_advantages_match_loops(mode, unbiased):
    g = torch.Generator().manual_seed(0)
    rewards = torch.randint(0, 3, (24,), generator=g).double() / 2
    rewards[0:4] = 1.0  # a uniform group
    expected = loop_advantages(rewards.tolist(), [i // 4 for i in range(24)], mode, unbiased, 1e-6)
    got, metrics = thr.group_advantages(rewards, group_size=4, mode=mode, unbiased_std=unbiased)
    assert torch.allclose(got, expected, atol=1e-12)
    assert (got[:4] == 0).all() and metrics["reward/frac_groups_uniform"] >= 1 / 6
    # explicit, shuffled group ids
    perm = torch.randperm(24, generator=g)
    gid = (torch.arange(24) // 4 * 7 + 3)[perm]
    got2, _ = thr.group_advantages(rewards[perm], group_ids=gid, mode=mode, unbiased_std=unbiased)
    assert torch.allclose(got2, expected[perm], atol=1e-12)


def test_group_advantages_bad_input():
    with pytest.raises(ValueError, match="multiple of group_size"):
        thr.group_advantages(torch.zeros(5), group_size=2)
    with pytest.raises(ValueError, match="exactly one"):
        thr.group_advantages(torch.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        thr.group_advantages(torch.tensor([1.0, float("nan")]), group_size=2)
    with pytest.raises(ValueError, match="floating-point"):
        thr.group_advantages(torch.tensor([1, 0]), group_size=2)


def hand_case():
    # one group of 3 responses x 4 tokens; response 2 has one padding token
    influence = torch.tensor([[4.0, 0.5, 3.0, -2.5], [-3.0, 0.2, 2.0, 1.0], [0.1, -0.1, 5.0, 9.9]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 0]], dtype=torch.bool)
    positive = torch.tensor([True, False, True])
    advantages = torch.tensor([1.0, -2.0, 1.0], dtype=torch.float64)
    return influence, mask, positive, advantages


def test_nthr_threshold_by_hand():
    influence, mask, positive, _ = hand_case()
    # mean s of positive responses: r0 = (4+.5+3-2.5)/4 = 1.25, r2 = (0.1-0.1+5)/3 = 5/3
    tau = influence_threshold(influence, mask, positive, group_size=3, mode="nthr", beta=1.0)
    assert torch.allclose(tau, torch.full((3,), 1.25, dtype=torch.float64))
    tau2 = influence_threshold(influence, mask, positive, group_size=3, mode="nthr", beta=0.5)
    assert torch.allclose(tau2, torch.full((3,), 0.625, dtype=torch.float64))
    none = influence_threshold(influence, mask, torch.zeros(3, dtype=torch.bool), group_size=3)
    assert torch.isinf(none).all()


def test_quantile_and_absolute_thresholds():
    influence, mask, positive, _ = hand_case()
    tau = influence_threshold(influence, mask, positive, group_size=3, mode="quantile", quantile=0.25)
    dominant = (influence.abs() > tau[:, None]) & mask
    vals = influence[mask].abs()
    assert dominant.sum() == (vals > torch.quantile(vals, 0.75)).sum()
    assert not dominant[2, 3]  # padding never dominant even though |s| = 9.9
    tau_abs = influence_threshold(influence, mask, positive, group_size=3, mode="absolute", value=2.0)
    assert (tau_abs == 2.0).all()


def test_p_zero_reweight_is_plain_grpo_exactly():
    influence, mask, positive, advantages = hand_case()
    thr_vals = advantages[:, None] * influence
    tau = torch.full((3,), 1.25, dtype=torch.float64)
    adv, _ = thr_token_advantages(advantages, thr_vals, influence, mask, tau, mode="reweight", p=0.0)
    assert torch.equal(adv, advantages[:, None] * mask)
    off, _ = steered_advantages(advantages, influence, mask, positive, group_size=3, mode="off")
    assert torch.equal(off, advantages[:, None] * mask)


@pytest.mark.parametrize("p", [0.5, -0.5])
def test_reweight_sign_logic(p):
    influence, mask, positive, advantages = hand_case()
    thr_vals = advantages[:, None] * influence
    tau = torch.full((3,), 1.25, dtype=torch.float64)
    adv, metrics = thr_token_advantages(advantages, thr_vals, influence, mask, tau, mode="reweight", p=p)
    # response 0 (A=+1): s=4 (THR +4, dominant) -> 1+p; s=0.5 not dominant -> 1; s=-2.5 (THR -2.5) -> 1-p
    assert adv[0, 0] == 1 + p and adv[0, 1] == 1 and adv[0, 3] == 1 - p
    # response 1 (A=-2): s=-3 -> THR=+6 -> weight 1+p; s=2 -> THR=-4 -> weight 1-p; s=0.2 -> 1
    assert adv[1, 0] == -2 * (1 + p) and adv[1, 2] == -2 * (1 - p) and adv[1, 1] == -2
    assert adv[2, 3] == 0  # padding
    # p > 0 amplifies the positive-THR tokens; p < 0 the negative ones
    pos_thr = (thr_vals > 0) & mask & (influence.abs() > 1.25)
    assert ((adv.abs() > advantages.abs()[:, None]) == (pos_thr if p > 0 else (thr_vals < 0) & mask & (influence.abs() > 1.25))).all()
    assert metrics["thr/frac_dominant"] == pytest.approx(6 / 11)


def test_dominant_mode_masks_exactly_the_tokens_below_tau():
    influence, mask, positive, advantages = hand_case()
    adv, _ = steered_advantages(advantages, influence, mask, positive, group_size=3, mode="dominant", p=0.0)
    below = (influence.abs() <= 1.25) | ~mask
    assert (adv[below] == 0).all()
    assert torch.equal(adv[~below], (advantages[:, None] * mask.double())[~below])


def test_weight_validation():
    influence, mask, positive, advantages = hand_case()
    with pytest.raises(ValueError, match="p must be in"):
        thr_token_advantages(advantages, influence, influence, mask, torch.zeros(3), p=1.0)
    with pytest.raises(ValueError, match="mode must be"):
        thr_token_advantages(advantages, influence, influence, mask, torch.zeros(3), mode="nope")
    with pytest.raises(ValueError, match="threshold mode"):
        influence_threshold(influence, mask, positive, group_size=3, mode="median")


def test_entropy_selection_keeps_top_fraction():
    from thr.core.weights import entropy_token_advantages

    entropy = torch.tensor([[0.1, 0.9, 0.5, 0.3, 0.7], [0.2, 0.8, 0.4, 0.6, 5.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]], dtype=torch.bool)
    adv, m = entropy_token_advantages(torch.tensor([1.0, -1.0], dtype=torch.float64), entropy, mask, fraction=0.34)
    kept = adv != 0
    # 9 valid tokens, top 34% by entropy: 0.9, 0.8, 0.7 (the 5.0 is padding and never counts)
    assert kept.sum() == 3 and kept[0, 1] and kept[1, 1] and kept[0, 4] and not kept[1, 4]
    assert m["thr/frac_selected"] == pytest.approx(3 / 9)
