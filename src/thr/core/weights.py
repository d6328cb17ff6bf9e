"""Dominant-token thresholds and THR-guided token advantages (spec sections 3 and 4).

Everything here works on many groups at once: ``[B, T]`` tensors plus ``group_ids [B]`` (or a
contiguous ``group_size``). A token is dominant when ``|s| > tau`` of its group; its weight is

    reweight:  w = 1 + p * sign(THR) if dominant else 1
    dominant:  w = 1 + p * sign(THR) if dominant else 0     (train on dominant tokens only)

(``off`` and the ``entropy`` control complete :data:`TOKEN_ADVANTAGE_MODES`, the registry that
:func:`steered_advantages` dispatches on)

and its advantage ``A_{j,k} = A_j * w_{j,k}``. ``p = 0`` in ``reweight`` is plain GRPO exactly.
"""

from __future__ import annotations

from typing import Literal

import torch

from ._checks import check_mask, check_tensor
from .advantages import resolve_group_ids
from .masked import masked_mean

ThresholdMode = Literal["nthr", "quantile", "absolute"]
WeightMode = Literal["reweight", "dominant"]


def influence_threshold(
    influence: torch.Tensor, response_mask: torch.Tensor, positive: torch.Tensor, *, group_size: int | None = None,
    group_ids: torch.Tensor | None = None, mode: ThresholdMode = "nthr", beta: float = 1.0, quantile: float = 0.2,
    value: float = 0.0,
) -> torch.Tensor:
    """Per-group threshold ``tau`` on ``|s|``, returned per response: ``[B]``.

    - ``nthr``: ``tau = beta * min_{i in P} mean_k s_{i,k}`` (NTHR's rule). Groups with no
      positive response get ``tau = +inf`` (no dominant token; their THR is zero anyway).
    - ``quantile``: keep the top ``quantile`` fraction of ``|s|`` of the group's valid tokens:
      ``tau`` is the ``1 - quantile`` quantile of ``|s|`` (ties may keep slightly more or fewer).
    - ``absolute``: ``tau = value`` for every group.
    """
    check_tensor("influence", influence, ndim=2)
    mask = check_mask("response_mask", response_mask, tuple(influence.shape))
    B = influence.shape[0]
    gid = resolve_group_ids(B, group_size=group_size, group_ids=group_ids, device=influence.device)
    if mode == "absolute":
        return torch.full((B,), float(value), dtype=influence.dtype, device=influence.device)
    tau = torch.full((int(gid.max()) + 1,), float("inf"), dtype=influence.dtype, device=influence.device)
    if mode == "nthr":
        if positive.shape != (B,):
            raise ValueError(f"positive has shape {tuple(positive.shape)}, expected ({B},)")
        count = mask.sum(1)
        mean_s = masked_mean(influence, mask, dim=1)
        usable = positive.bool() & (count > 0)
        big = torch.full_like(mean_s, float("inf"))
        per_resp = torch.where(usable, mean_s, big)
        tau = tau.scatter_reduce(0, gid, per_resp, reduce="amin", include_self=True)
        return torch.where(torch.isinf(tau), tau, beta * tau)[gid]
    if mode == "quantile":
        if not 0.0 < quantile <= 1.0:
            raise ValueError(f"quantile (fraction of tokens kept) must be in (0, 1], got {quantile}")
        for g in range(tau.shape[0]):
            vals = influence[(gid == g)[:, None] & mask].abs()
            if vals.numel():
                tau[g] = torch.quantile(vals.to(torch.float64), 1.0 - quantile).to(tau.dtype)
                # strict ">" keeps the max when quantile == 1: lower tau just below it
                if quantile == 1.0:
                    tau[g] = -1.0
        return tau[gid]
    raise ValueError(f"threshold mode must be 'nthr', 'quantile' or 'absolute', got {mode!r}")


def thr_token_advantages(
    advantages: torch.Tensor, thr: torch.Tensor, influence: torch.Tensor, response_mask: torch.Tensor,
    tau: torch.Tensor, *, mode: WeightMode = "reweight", p: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Token advantages ``[B, T]`` from sequence advantages ``[B]`` and THR ``[B, T]``.

    Args:
        advantages: ``[B]`` group advantages ``A_j``.
        thr: ``[B, T]`` THR (``A_j * s``).
        influence: ``[B, T]`` influence ``s`` (dominance is ``|s| > tau``).
        response_mask: ``[B, T]``; padding gets advantage 0.
        tau: ``[B]`` threshold of each response's group (see :func:`influence_threshold`).
        mode: ``"reweight"`` or ``"dominant"``.
        p: steering strength in ``(-1, 1)``; ``p > 0`` exploitation, ``p < 0`` exploration.

    Returns:
        ``(token_advantages [B, T], metrics)`` with ``thr/frac_dominant``,
        ``thr/frac_positive``, ``thr/frac_negative`` (shares of valid tokens by THR sign),
        ``thr/dominant_positive_share``, ``thr/mean``, ``thr/abs_mean``, ``thr/weight_mean``.
    """
    check_tensor("thr", thr, ndim=2)
    mask = check_mask("response_mask", response_mask, tuple(thr.shape))
    for name, t in (("influence", influence),):
        if tuple(t.shape) != tuple(thr.shape):
            raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {tuple(thr.shape)} like thr")
    if advantages.shape != (thr.shape[0],) or tau.shape != (thr.shape[0],):
        raise ValueError(
            f"advantages {tuple(advantages.shape)} and tau {tuple(tau.shape)} must both be ({thr.shape[0]},)"
        )
    if not -1.0 < p < 1.0:
        raise ValueError(f"p must be in (-1, 1) so that token weights stay positive, got {p}")
    if mode not in ("reweight", "dominant"):
        raise ValueError(f"mode must be 'reweight' or 'dominant', got {mode!r}")
    dominant = (influence.abs() > tau.to(influence.dtype)[:, None]) & mask
    steer = 1.0 + p * torch.sign(thr)
    base = torch.ones_like(thr) if mode == "reweight" else torch.zeros_like(thr)
    weights = torch.where(dominant, steer, base)
    token_adv = advantages.to(thr.dtype)[:, None] * weights * mask
    metrics = thr_metrics(thr, mask, dominant)
    metrics["thr/weight_mean"] = float(masked_mean(weights, mask))
    return token_adv, metrics


def thr_metrics(thr: torch.Tensor, response_mask: torch.Tensor, dominant: torch.Tensor) -> dict[str, float]:
    """Summary statistics of THR over valid tokens (``thr/...`` namespace)."""
    mask = response_mask.bool()
    n = mask.sum().clamp(min=1).to(thr.dtype)
    vals = thr[mask]
    n_dom = dominant.sum().clamp(min=1)
    return {
        "thr/frac_dominant": float(dominant.sum() / n),
        "thr/frac_positive": float((vals > 0).sum() / n),
        "thr/frac_negative": float((vals < 0).sum() / n),
        "thr/dominant_positive_share": float(((thr > 0) & dominant).sum() / n_dom),
        "thr/mean": float(vals.mean()) if vals.numel() else 0.0,
        "thr/abs_mean": float(vals.abs().mean()) if vals.numel() else 0.0,
    }


def _grpo_tokens(advantages, thr, influence, mask, tau, *, p, entropy, fraction):
    """``off``: plain GRPO, ``A_j`` on every valid token; THR statistics still reported."""
    dominant = (influence.abs() > tau[:, None]) & mask
    return advantages.to(influence.dtype)[:, None] * mask, thr_metrics(thr, mask, dominant)


def _reweight_tokens(advantages, thr, influence, mask, tau, *, p, entropy, fraction):
    """``reweight``: ``w = 1 + p sign(THR)`` on dominant tokens, 1 elsewhere."""
    return thr_token_advantages(advantages, thr, influence, mask, tau, mode="reweight", p=p)


def _dominant_tokens(advantages, thr, influence, mask, tau, *, p, entropy, fraction):
    """``dominant``: ``w = 1 + p sign(THR)`` on dominant tokens, 0 elsewhere."""
    return thr_token_advantages(advantages, thr, influence, mask, tau, mode="dominant", p=p)


def _entropy_tokens(advantages, thr, influence, mask, tau, *, p, entropy, fraction):
    """``entropy``: the control without THR (:func:`entropy_token_advantages`, ``fraction`` kept);
    THR statistics are still reported."""
    if entropy is None:
        raise ValueError("mode='entropy' needs the token entropies: pass entropy=[B, T]")
    _, metrics = _grpo_tokens(advantages, thr, influence, mask, tau, p=p, entropy=entropy, fraction=fraction)
    token_adv, selected = entropy_token_advantages(advantages, entropy, mask, fraction=fraction)
    return token_adv, {**metrics, **selected}


# The token-advantage modes. Every entry has one signature:
#   (advantages [B], thr [B, T], influence [B, T], mask [B, T] bool, tau [B], *, p, entropy [B, T] | None,
#    fraction) -> (token_advantages [B, T], metrics)
# A new mode is one function and one entry here (the configs take their choices from this dict).
TOKEN_ADVANTAGE_MODES = {
    "off": _grpo_tokens,
    "reweight": _reweight_tokens,
    "dominant": _dominant_tokens,
    "entropy": _entropy_tokens,
}
SteerMode = Literal[tuple(TOKEN_ADVANTAGE_MODES)]  # type: ignore[valid-type]


def steered_advantages(
    advantages: torch.Tensor, influence: torch.Tensor, response_mask: torch.Tensor, positive: torch.Tensor, *,
    group_size: int | None = None, group_ids: torch.Tensor | None = None, mode: SteerMode = "reweight",
    p: float = 0.0, threshold: ThresholdMode = "nthr", beta: float = 1.0, quantile: float = 0.2, value: float = 0.0,
    entropy: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """From influence ``[B, T]`` to token advantages ``[B, T]``: THR, threshold, then the mode.

    ``mode`` names an entry of :data:`TOKEN_ADVANTAGE_MODES`: ``off`` (plain GRPO token
    advantages, ``A_j`` on every valid token), ``reweight``, ``dominant`` or ``entropy`` (keep
    ``A_j`` on the top ``quantile`` of the batch's tokens by ``entropy [B, T]``). Every mode
    reports THR statistics. Returns ``(token_advantages [B, T], metrics)``; metrics include
    ``thr/tau_mean`` over groups with a finite threshold.
    """
    if mode not in TOKEN_ADVANTAGE_MODES:
        raise ValueError(f"mode must be one of {list(TOKEN_ADVANTAGE_MODES)}, got {mode!r}")
    check_tensor("influence", influence, ndim=2)
    mask = check_mask("response_mask", response_mask, tuple(influence.shape))
    thr = advantages.to(influence.dtype)[:, None] * influence
    tau = influence_threshold(
        influence, mask, positive, group_size=group_size, group_ids=group_ids,
        mode=threshold, beta=beta, quantile=quantile, value=value,
    )
    token_adv, metrics = TOKEN_ADVANTAGE_MODES[mode](advantages, thr, influence, mask, tau, p=p, entropy=entropy,
                                                     fraction=quantile)
    finite = torch.isfinite(tau)
    metrics["thr/tau_mean"] = float(tau[finite].mean()) if bool(finite.any()) else 0.0
    return token_adv, metrics


def entropy_token_advantages(
    advantages: torch.Tensor, entropy: torch.Tensor, response_mask: torch.Tensor, *, fraction: float = 0.2
) -> tuple[torch.Tensor, dict[str, float]]:
    """Control: keep ``A_j`` only on the top ``fraction`` of valid tokens by entropy (batch-wide).

    ``advantages [B]``, ``entropy [B, T]``, ``response_mask [B, T]`` -> ``([B, T], metrics)``.
    This is the high-entropy ("forking") token selection used as a baseline to THR: it selects
    by uncertainty alone, without THR's cross-token interactions.
    """
    mask = check_mask("response_mask", response_mask, tuple(entropy.shape))
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction of tokens kept must be in (0, 1], got {fraction}")
    vals = entropy[mask]
    if vals.numel() == 0:
        return torch.zeros_like(entropy), {"thr/frac_selected": 0.0}
    cutoff = torch.quantile(vals.double(), 1.0 - fraction).to(entropy.dtype)
    selected = (entropy >= cutoff) & mask
    token_adv = advantages.to(entropy.dtype)[:, None] * selected
    return token_adv, {"thr/frac_selected": float(selected.sum() / mask.sum())}
