"""Policy losses against slow per-token references, and GSPO-token's per-token gradients."""

import math

import pytest
import torch

from thr.core import aggregate, policy_loss


def batch(B=4, T=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(B, T, generator=g, dtype=torch.float64) * 3
    new = old + 0.4 * torch.randn(B, T, generator=g, dtype=torch.float64)
    adv = torch.randn(B, T, generator=g, dtype=torch.float64)
    lengths = torch.tensor([5, 3, 1, 4])[:B]
    mask = torch.arange(T)[None] < lengths[:, None]
    ent = torch.rand(B, T, generator=g, dtype=torch.float64)
    ref = old + 0.1 * torch.randn(B, T, generator=g, dtype=torch.float64)
    return new, old, adv, mask, ent, ref


def reference_loss(new, old, adv, mask, loss_type, lo, hi, agg, ref=None, kl_coef=0.0, ent=None, ent_coef=0.0):
    B, T = new.shape
    per_tok = [[0.0] * T for _ in range(B)]
    kls = [[0.0] * T for _ in range(B)]
    for j in range(B):
        n_j = int(mask[j].sum())
        seq = sum(float(new[j, k] - old[j, k]) for k in range(T) if mask[j, k]) / max(n_j, 1)
        for k in range(T):
            if not mask[j, k]:
                continue
            r = math.exp(seq) if loss_type == "gspo_token" else math.exp(float(new[j, k] - old[j, k]))
            a = float(adv[j, k])
            per_tok[j][k] = -min(r * a, min(max(r, 1 - lo), 1 + hi) * a)
            if ref is not None:
                d = float(ref[j, k] - new[j, k])
                kls[j][k] = math.exp(d) - d - 1
    def agg_fn(mat):
        valid = [[mat[j][k] for k in range(T) if mask[j, k]] for j in range(B)]
        if agg == "token-mean":
            return sum(sum(v) for v in valid) / sum(len(v) for v in valid)
        if agg == "seq-mean-token-mean":
            return sum(sum(v) / len(v) for v in valid if v) / sum(1 for v in valid if v)
        return sum(sum(v) for v in valid) / (B * T)
    total = agg_fn(per_tok)
    if ref is not None:
        total += kl_coef * agg_fn(kls)
    if ent is not None:
        total -= ent_coef * agg_fn([[float(ent[j, k]) for k in range(T)] for j in range(B)])
    return total


@pytest.mark.parametrize("loss_type", ["grpo", "gspo_token"])
@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
@pytest.mark.parametrize("clip", [(0.2, 0.2), (0.2, 0.28), (0.05, 0.1)])
def test_policy_loss_matches_reference(loss_type, agg, clip):
    new, old, adv, mask, ent, ref = batch()
    loss, metrics = policy_loss(new, old, adv, mask, loss_type=loss_type, clip_eps_low=clip[0], clip_eps_high=clip[1],
                                aggregation=agg, ref_log_probs=ref, kl_coef=0.05, entropy=ent, entropy_coef=0.01)
    expected = reference_loss(new, old, adv, mask, loss_type, clip[0], clip[1], agg, ref, 0.05, ent, 0.01)
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    assert 0.0 <= metrics["loss/clip_frac"] <= 1.0 and "loss/kl_ref" in metrics


def test_grpo_gradient_per_token():
    new, old, adv, mask, _, _ = batch()
    lp = new.clone().requires_grad_(True)
    loss, _ = policy_loss(lp, old, adv, mask, clip_eps_low=0.2, clip_eps_high=0.28)
    loss.backward()
    r = torch.exp(new - old)
    n = mask.sum()
    inside = ((adv > 0) & (r < 1.28)) | ((adv < 0) & (r > 0.8))
    expected = torch.where(inside & mask, -r * adv / n, torch.zeros_like(r))
    assert torch.allclose(lp.grad, expected, atol=1e-12)


def test_gspo_token_gradients_follow_token_advantages():
    new, old, _, mask, _, _ = batch(seed=4)
    old = new.clone() - 0.001  # ratios inside the clip range
    adv = torch.zeros_like(new)
    adv[0] = torch.tensor([1.0, 2.0, -1.0, 0.5, 3.0])
    lp = new.clone().requires_grad_(True)
    loss, _ = policy_loss(lp, old, adv, mask, loss_type="gspo_token", aggregation="seq-mean-token-mean",
                          clip_eps_low=0.01, clip_eps_high=0.01)
    loss.backward()
    s0 = torch.exp((new[0] - old[0]).mean())
    expected = -s0 * adv[0] / 5 / 4  # token mean within the response, mean over 4 responses
    assert torch.allclose(lp.grad[0], expected, rtol=1e-10)
    assert len(set(lp.grad[0].tolist())) == 5  # every token gets its own gradient
    # sequence-level GSPO collapses token advantages to one number: one gradient for all tokens
    seq_adv = adv[0].mean().expand(5)
    lp2 = new.clone().requires_grad_(True)
    seq_ratio = torch.exp(((lp2[0] - old[0])).mean())
    (-(seq_ratio * seq_adv).mean()).backward()
    assert len(set(round(x, 12) for x in lp2.grad[0].tolist())) == 1


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_micro_batches_sum_to_full_batch(agg):
    new, old, adv, mask, _, _ = batch()
    full, _ = policy_loss(new, old, adv, mask, aggregation=agg)
    n_tok, n_seq = float(mask.sum()), float((mask.sum(1) > 0).sum())
    parts = [policy_loss(new[i:i + 2], old[i:i + 2], adv[i:i + 2], mask[i:i + 2], aggregation=agg,
                         num_tokens=n_tok, num_seqs=n_seq if agg != "seq-mean-token-sum-norm" else 4,
                         norm_length=5)[0] for i in (0, 2)]
    assert sum(parts).item() == pytest.approx(full.item(), rel=1e-12)


def test_sequence_advantages_broadcast_and_errors():
    new, old, adv, mask, _, _ = batch()
    seq_adv = torch.tensor([1.0, -1.0, 0.5, 0.0], dtype=torch.float64)
    a, _ = policy_loss(new, old, seq_adv, mask)
    b, _ = policy_loss(new, old, seq_adv[:, None].expand(4, 5), mask)
    assert a.item() == b.item()
    with pytest.raises(ValueError, match="loss_type"):
        policy_loss(new, old, adv, mask, loss_type="ppo2")
    with pytest.raises(ValueError, match="aggregation"):
        aggregate(new, mask, "mean")
    with pytest.raises(ValueError, match="old_log_probs has shape"):
        policy_loss(new, old[:2], adv, mask)
