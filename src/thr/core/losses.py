"""Policy losses that consume token advantages ``[B, T]`` (spec section 5).

- ``grpo``: PPO-clip per token, ``-min(r A, clip(r, 1 - eps_low, 1 + eps_high) A)`` with
  ``r = exp(log_probs - old_log_probs)``; ``eps_high > eps_low`` is DAPO's clip-higher.
- ``gspo_token``: GSPO-token. ``s_j = exp(mean_k (log_probs - old_log_probs))`` per response,
  token ratio ``r_{j,k} = sg[s_j] * pi_{j,k} / sg[pi_{j,k}]`` (numerically ``s_j``, gradient of
  ``ln pi_{j,k}`` scaled by ``s_j``), clipped at the sequence level, multiplied by the token's own
  advantage; token advantages that differ within a response keep their effect.

Aggregation of the ``[B, T]`` loss matrix:

- ``token-mean``: sum over valid tokens / number of valid tokens (DAPO);
- ``seq-mean-token-mean``: mean over responses of each response's token mean (original GRPO);
- ``seq-mean-token-sum-norm``: sum over valid tokens / (responses * ``norm_length``) (Dr.GRPO).

For gradient accumulation over micro-batches pass the whole batch's ``num_tokens`` /
``num_seqs``: each micro-batch then contributes its exact share and the sum of the
micro-batch losses equals the full-batch loss.
"""

from __future__ import annotations

from typing import Literal

import torch

from ._checks import check_float, check_mask, check_same_shape, check_tensor
from .masked import masked_mean

def _token_mean(loss_mat, m, num_tokens, num_seqs, norm_length):
    denom = num_tokens if num_tokens is not None else m.sum().clamp(min=1)
    return (loss_mat * m).sum() / denom


def _seq_mean_token_mean(loss_mat, m, num_tokens, num_seqs, norm_length):
    per_seq = masked_mean(loss_mat, m, dim=1)
    denom = num_seqs if num_seqs is not None else (m.sum(1) > 0).sum().clamp(min=1)
    return per_seq.sum() / denom


def _seq_mean_token_sum_norm(loss_mat, m, num_tokens, num_seqs, norm_length):
    length = norm_length if norm_length is not None else loss_mat.shape[1]
    denom = (num_seqs if num_seqs is not None else loss_mat.shape[0]) * length
    return (loss_mat * m).sum() / denom


# Aggregations: (loss_mat [B, T], mask [B, T] float, num_tokens, num_seqs, norm_length) -> scalar.
AGGREGATIONS = {
    "token-mean": _token_mean,
    "seq-mean-token-mean": _seq_mean_token_mean,
    "seq-mean-token-sum-norm": _seq_mean_token_sum_norm,
}
Aggregation = Literal[tuple(AGGREGATIONS)]  # type: ignore[valid-type]


def aggregate(
    loss_mat: torch.Tensor, response_mask: torch.Tensor, mode: Aggregation = "token-mean", *,
    num_tokens: float | None = None, num_seqs: float | None = None, norm_length: float | None = None,
) -> torch.Tensor:
    """Reduce a ``[B, T]`` per-token loss to a scalar with the named aggregation (:data:`AGGREGATIONS`)."""
    if mode not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {list(AGGREGATIONS)}, got {mode!r}")
    return AGGREGATIONS[mode](loss_mat, response_mask.to(loss_mat.dtype), num_tokens, num_seqs, norm_length)


def _grpo_ratio(log_probs, old_log_probs, mask):
    """``grpo``: the per-token ratio ``exp(log_probs - old_log_probs)``."""
    log_ratio = log_probs - old_log_probs
    return torch.exp(log_ratio), log_ratio


def _gspo_token_ratio(log_probs, old_log_probs, mask):
    """``gspo_token``: ``sg[s_j] * pi / sg[pi]`` with ``s_j`` the response's mean log-ratio, exponentiated."""
    log_ratio = log_probs - old_log_probs
    seq_log_ratio = masked_mean(log_ratio, mask, dim=1)  # [B]
    tok = seq_log_ratio.detach()[:, None] + log_probs - log_probs.detach()
    return torch.exp(tok), seq_log_ratio[:, None].expand_as(log_probs)


# The losses, by the importance ratio each clips. Every entry has one signature:
#   (log_probs [B, T], old_log_probs [B, T], mask [B, T] bool) -> (ratio [B, T], log_ratio [B, T])
# where ``ratio`` carries the gradient and ``log_ratio`` is its value for the KL-to-old metric.
# A new loss is one function and one entry here (the configs take their choices from this dict).
POLICY_LOSSES = {
    "grpo": _grpo_ratio,
    "gspo_token": _gspo_token_ratio,
}
LossType = Literal[tuple(POLICY_LOSSES)]  # type: ignore[valid-type]


def _check_loss_args(log_probs, old_log_probs, advantages, response_mask, loss_type, clip_eps_low, clip_eps_high,
                     kl_coef) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate :func:`policy_loss`'s inputs; returns the bool mask and the ``[B, T]`` advantages (no grad)."""
    check_tensor("log_probs", log_probs, ndim=2)
    check_float("log_probs", log_probs)
    check_same_shape("old_log_probs", old_log_probs, "log_probs", log_probs)
    mask = check_mask("response_mask", response_mask, tuple(log_probs.shape))
    if advantages.ndim == 1:
        advantages = advantages[:, None].expand_as(log_probs)
    check_same_shape("advantages", advantages, "log_probs", log_probs)
    if clip_eps_low < 0 or clip_eps_high < 0 or clip_eps_low >= 1:
        raise ValueError(f"clip range needs 0 <= clip_eps_low < 1 and clip_eps_high >= 0, got {clip_eps_low}, {clip_eps_high}")
    if kl_coef < 0:
        raise ValueError(f"kl_coef must be >= 0, got {kl_coef}")
    if loss_type not in POLICY_LOSSES:
        raise ValueError(f"loss_type must be one of {list(POLICY_LOSSES)}, got {loss_type!r}")
    return mask, advantages.to(log_probs.dtype).detach()


def policy_loss(
    log_probs: torch.Tensor, old_log_probs: torch.Tensor, advantages: torch.Tensor, response_mask: torch.Tensor, *,
    loss_type: LossType = "grpo", clip_eps_low: float = 0.2, clip_eps_high: float = 0.2,
    aggregation: Aggregation = "token-mean", ref_log_probs: torch.Tensor | None = None, kl_coef: float = 0.0,
    entropy: torch.Tensor | None = None, entropy_coef: float = 0.0, num_tokens: float | None = None,
    num_seqs: float | None = None, norm_length: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped policy-gradient loss (to minimise) and its metrics.

    Args:
        log_probs: ``[B, T]`` log-probs of the response tokens under the current policy (grad).
        old_log_probs: ``[B, T]`` the same under the policy that sampled them (no grad).
        advantages: ``[B, T]`` token advantages (``[B]`` is broadcast to every token).
        response_mask: ``[B, T]`` valid response tokens.
        loss_type: ``"grpo"`` or ``"gspo_token"``.
        clip_eps_low, clip_eps_high: clip range ``[1 - low, 1 + high]``.
        aggregation: see module doc; ``num_tokens``/``num_seqs``/``norm_length`` override the
            denominators (whole-batch values for micro-batching).
        ref_log_probs: ``[B, T]`` reference-model log-probs for the k3 KL penalty.
        kl_coef: KL coefficient (``>= 0``); the KL is aggregated like the policy loss.
        entropy: ``[B, T]`` token entropies (with grad) for an entropy bonus.
        entropy_coef: entropy bonus coefficient; the loss subtracts ``coef * entropy``.

    Returns:
        ``(loss, metrics)``: scalar loss and ``loss/...`` metrics (policy loss, clip fraction,
        KL, entropy, mean ratio).
    """
    mask, advantages = _check_loss_args(log_probs, old_log_probs, advantages, response_mask, loss_type,
                                        clip_eps_low, clip_eps_high, kl_coef)
    old_log_probs = old_log_probs.detach()
    agg = dict(num_tokens=num_tokens, num_seqs=num_seqs, norm_length=norm_length)
    ratio, log_ratio_value = POLICY_LOSSES[loss_type](log_probs, old_log_probs, mask)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_eps_low, 1.0 + clip_eps_high) * advantages
    pg_mat = -torch.minimum(unclipped, clipped)
    pg_loss = aggregate(pg_mat, mask, aggregation, **agg)
    loss = pg_loss

    with torch.no_grad():
        was_clipped = (clipped < unclipped) & mask
        n = mask.sum().clamp(min=1)
        metrics = {
            "loss/policy": float(pg_loss.detach()),
            "loss/clip_frac": float(was_clipped.sum() / n),
            "loss/ratio_mean": float(masked_mean(ratio.detach(), mask)),
            "loss/approx_kl_old": float(masked_mean(-log_ratio_value.detach(), mask)),
        }
    if ref_log_probs is not None:
        check_same_shape("ref_log_probs", ref_log_probs, "log_probs", log_probs)
        delta = ref_log_probs.detach() - log_probs
        kl_mat = torch.exp(delta) - delta - 1.0  # k3 estimator of KL(pi || ref)
        kl = aggregate(kl_mat, mask, aggregation, **agg)
        metrics["loss/kl_ref"] = float(kl.detach())
        if kl_coef > 0:
            loss = loss + kl_coef * kl
    if entropy is not None:
        check_same_shape("entropy", entropy, "log_probs", log_probs)
        ent = aggregate(entropy, mask, aggregation, **agg)
        metrics["loss/entropy"] = float(ent.detach())
        if entropy_coef != 0:
            loss = loss - entropy_coef * ent
    metrics["loss/total"] = float(loss.detach())
    return loss, metrics
