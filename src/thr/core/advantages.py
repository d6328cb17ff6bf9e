"""Group-relative advantages (GRPO, Dr.GRPO) for rewards of many groups at once.

Rewards are a flat ``[B]`` tensor. Groups are given either by ``group_size`` (the layout
``[num_groups * G]``, each group contiguous) or by explicit ``group_ids`` (``[B]`` integers, any
order), never both.
"""

from __future__ import annotations

from typing import Literal

import torch

from ._checks import check_float, check_tensor


def resolve_group_ids(
    batch_size: int, *, group_size: int | None, group_ids: torch.Tensor | None, device: torch.device
) -> torch.Tensor:
    """Dense group index ``[B]`` in ``0..num_groups-1`` from either layout."""
    if (group_size is None) == (group_ids is None):
        raise ValueError("pass exactly one of group_size (contiguous groups) or group_ids ([B] ints)")
    if group_ids is None:
        if not isinstance(group_size, int) or group_size < 1:
            raise ValueError(f"group_size must be a positive int, got {group_size!r}")
        if batch_size % group_size:
            raise ValueError(f"batch of {batch_size} is not a multiple of group_size={group_size}")
        return torch.arange(batch_size, device=device) // group_size
    check_tensor("group_ids", group_ids, ndim=1)
    if group_ids.shape[0] != batch_size:
        raise ValueError(f"group_ids has shape {tuple(group_ids.shape)}, expected ({batch_size},)")
    if group_ids.is_floating_point():
        raise ValueError(f"group_ids must be an integer tensor, got dtype {group_ids.dtype}")
    return torch.unique(group_ids, return_inverse=True)[1].to(device)


def group_advantages(
    rewards: torch.Tensor, *, group_size: int | None = None, group_ids: torch.Tensor | None = None,
    mode: Literal["grpo", "drgrpo"] = "grpo", unbiased_std: bool = True, eps: float = 1e-6,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Advantages ``[B]`` from rewards ``[B]``.

    ``grpo``: ``A = (r - mean_group(r)) / (std_group(r) + eps)``, std with Bessel's correction
    when ``unbiased_std`` (torch.std's default, as TRL and verl do), else the population std.
    ``drgrpo``: ``A = r - mean_group(r)`` (no std normalisation). A group whose rewards are all
    equal, or that has one member, gets ``A = 0``.

    Returns ``(advantages [B], metrics)`` with ``reward/mean``, ``reward/std`` and
    ``reward/frac_groups_uniform`` (share of groups with zero advantage everywhere).
    """
    check_tensor("rewards", rewards, ndim=1)
    check_float("rewards", rewards)
    if mode not in ("grpo", "drgrpo"):
        raise ValueError(f"mode must be 'grpo' or 'drgrpo', got {mode!r}")
    if not bool(torch.isfinite(rewards).all()):
        raise ValueError("rewards contain NaN or inf")
    gid = resolve_group_ids(rewards.shape[0], group_size=group_size, group_ids=group_ids, device=rewards.device)
    num_groups = int(gid.max()) + 1 if gid.numel() else 0
    count = torch.zeros(num_groups, dtype=rewards.dtype, device=rewards.device).index_add_(0, gid, torch.ones_like(rewards))
    total = torch.zeros_like(count).index_add_(0, gid, rewards)
    mean = total / count
    centered = rewards - mean[gid]
    sq = torch.zeros_like(count).index_add_(0, gid, centered**2)
    denom = (count - 1).clamp(min=1) if unbiased_std else count
    std = (sq / denom).sqrt()
    uniform = sq == 0
    if mode == "grpo":
        advantages = centered / (std[gid] + eps)
    else:
        advantages = centered
    advantages = torch.where(uniform[gid], torch.zeros_like(advantages), advantages)
    metrics = {
        "reward/mean": float(rewards.mean()) if rewards.numel() else 0.0,
        "reward/std": float(rewards.std(unbiased=False)) if rewards.numel() else 0.0,
        "reward/frac_groups_uniform": float(uniform.float().mean()) if num_groups else 0.0,
    }
    return advantages, metrics
