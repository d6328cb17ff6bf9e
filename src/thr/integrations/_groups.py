"""Helpers shared by the TRL and verl integrations: groups, positive sets, LM-head input states.

Nothing here imports TRL or verl, so all of it is tested on CPU without them.

- THR is defined per group of responses to one prompt (spec section 2). A data-parallel rank can
  only compute it for groups it holds whole: :func:`check_whole_groups` (static batch sizes),
  :func:`check_group_prompts` (the rows of each group share one prompt), :func:`dense_group_ids`
  (uid strings to group indices in any order) and :func:`balance_groups` (a token-balanced
  split over ranks that never splits a group).
- :func:`positive_responses` is the set P.
- :func:`capture_backbone_states` records the last-layer states (after the final norm: the
  LM-head input) from a forward hook on the decoder backbone. Unlike a hook on the LM head it
  also fires when the trainer computes log-probs with a fused head that never calls
  ``lm_head.forward`` (TRL 1.16 always does; verl does with ``use_fused_kernels``).
"""

from __future__ import annotations

import contextlib
import heapq
from collections.abc import Iterator, Sequence
from typing import Any

import torch


def check_whole_groups(rows_per_rank: int, group_size: int, *, what: str) -> None:
    """Raise ``ValueError`` unless ``rows_per_rank`` holds whole groups of ``group_size``."""
    if group_size < 1 or rows_per_rank % group_size:
        raise ValueError(
            f"THR needs every group of {group_size} responses on one process, but each process holds "
            f"{rows_per_rank} responses ({what}), which is not a multiple of {group_size}. "
            f"Choose sizes so that {what} is a multiple of num_generations={group_size}."
        )


def check_group_prompts(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, group_size: int) -> None:
    """Raise ``RuntimeError`` when a contiguous block of ``group_size`` rows mixes prompts.

    Rows of one group were sampled from the same prompt, so their (padded) prompt ids and masks
    are equal. A mismatch means the batch is not laid out as whole contiguous groups and THR
    would score tokens against the wrong responses.
    """
    B = prompt_ids.shape[0]
    if B % group_size:
        raise RuntimeError(f"batch of {B} responses is not a multiple of the group size {group_size}")
    ids = (prompt_ids * prompt_mask).view(B // group_size, group_size, -1)
    masks = prompt_mask.view(B // group_size, group_size, -1)
    same = (ids == ids[:, :1]).all(-1).all(-1) & (masks == masks[:, :1]).all(-1).all(-1)
    if not bool(same.all()):
        bad = int((~same).nonzero()[0, 0])
        raise RuntimeError(
            f"rows {bad * group_size}..{bad * group_size + group_size - 1} of the local batch do not share one "
            "prompt: the batch is not laid out as contiguous groups, so THR cannot be computed"
        )


def positive_responses(
    rewards: torch.Tensor | None,
    advantages: torch.Tensor,
    positive_reward: float | None,
) -> torch.Tensor:
    """The set P as a bool ``[B]`` mask.

    ``positive_reward=None``: responses with ``A_j > 0`` (spec: the rule for non-binary rewards;
    for binary 0/1 rewards it is exactly "reward == 1" in every group that has a gradient, and
    a group where all responses are correct has ``A = 0`` and so no THR effect either way).
    A number: responses whose total reward is ``>= positive_reward`` (e.g. ``1.0`` for a
    correctness reward of 1 plus optional format bonuses). NaN rewards are never positive.
    """
    if positive_reward is None:
        return advantages > 0
    if rewards is None:
        raise ValueError("positive_reward is set but no rewards were given")
    return torch.nan_to_num(rewards, nan=float("-inf")) >= positive_reward


def dense_group_ids(uids: Sequence[Any]) -> torch.Tensor:
    """``[B]`` int64 group index per row, numbered by first appearance of each uid."""
    index: dict[Any, int] = {}
    return torch.tensor([index.setdefault(u, len(index)) for u in uids], dtype=torch.long)


def group_rewards_mixed(rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """``[num_groups]`` bool: whether the rewards within each group differ (a gradient exists)."""
    n = int(group_ids.max()) + 1 if group_ids.numel() else 0
    hi = torch.full((n,), float("-inf"), dtype=torch.float64).scatter_reduce(
        0, group_ids, rewards.double(), reduce="amax", include_self=True)
    lo = torch.full((n,), float("inf"), dtype=torch.float64).scatter_reduce(
        0, group_ids, rewards.double(), reduce="amin", include_self=True)
    return hi > lo


def check_complete_groups(group_ids: torch.Tensor, rewards: torch.Tensor, group_size: int) -> None:
    """Raise ``RuntimeError`` when a group with mixed rewards has fewer than ``group_size`` rows here.

    Such a group was split across ranks: its THR would be computed against part of the group.
    Incomplete groups with equal rewards (padding rows, all-correct or all-wrong groups) have
    ``A = 0`` and are harmless.
    """
    counts = torch.bincount(group_ids)
    mixed = group_rewards_mixed(rewards, group_ids)
    bad = (counts != group_size) & mixed
    if bool(bad.any()):
        g = int(bad.nonzero()[0, 0])
        raise RuntimeError(
            f"a group with mixed rewards has {int(counts[g])} of its {group_size} responses on this rank: "
            "groups were split across data-parallel ranks, so THR cannot be computed. "
            "Keep whole groups per rank (the THR plugin's group-preserving batch balancing does this)."
        )


def balance_groups(
    workloads: Sequence[float],
    uids: Sequence[Any],
    num_ranks: int,
    is_padding: Sequence[bool] | None = None,
) -> list[list[int]]:
    """Split row indices into ``num_ranks`` equal-size partitions without splitting a group.

    Groups (rows sharing a uid) are placed whole, largest workload first, on the least-loaded
    rank that still has room; padding rows (no-op filler rows, never part of a real group)
    then fill the remaining slots. Each partition keeps its groups contiguous. Raises
    ``ValueError`` when the sizes make a whole-group split impossible.
    """
    n = len(workloads)
    if len(uids) != n or (is_padding is not None and len(is_padding) != n):
        raise ValueError("workloads, uids and is_padding must have the same length")
    if num_ranks < 1 or n % num_ranks:
        raise ValueError(f"{n} rows cannot be split equally over {num_ranks} ranks")
    per_rank = n // num_ranks
    pad = [i for i in range(n) if is_padding is not None and is_padding[i]]
    groups: dict[Any, list[int]] = {}
    for i in range(n):
        if not (is_padding is not None and is_padding[i]):
            groups.setdefault(uids[i], []).append(i)
    order = sorted(groups.values(), key=lambda rows: (-sum(workloads[r] for r in rows), rows[0]))
    heap = [(0.0, rank) for rank in range(num_ranks)]
    parts: list[list[int]] = [[] for _ in range(num_ranks)]
    for rows in order:
        skipped = []
        while heap and len(parts[heap[0][1]]) + len(rows) > per_rank:
            skipped.append(heapq.heappop(heap))
        if not heap:
            raise ValueError(
                f"cannot place whole groups of {len(rows)} rows on {num_ranks} ranks of {per_rank} rows each: "
                "make the number of prompts per step a multiple of the data-parallel size"
            )
        load, rank = heapq.heappop(heap)
        parts[rank].extend(rows)
        heapq.heappush(heap, (load + sum(workloads[r] for r in rows), rank))
        for item in skipped:
            heapq.heappush(heap, item)
    for rank in range(num_ranks):
        need = per_rank - len(parts[rank])
        parts[rank].extend(pad[:need])
        pad = pad[need:]
    return parts


def backbone_module(model: Any) -> torch.nn.Module:
    """The decoder backbone of a causal LM (through DDP/FSDP-style ``.module`` and peft wrappers)."""
    inner = model
    while isinstance(getattr(inner, "module", None), torch.nn.Module):
        inner = inner.module
    if hasattr(inner, "get_base_model"):  # peft.PeftModel
        inner = inner.get_base_model()
    backbone = getattr(inner, "base_model", None)
    if not isinstance(backbone, torch.nn.Module) or backbone is inner:
        raise ValueError(f"cannot find the decoder backbone of {type(inner).__name__} (no base_model submodule)")
    return backbone


def _last_hidden(output: Any) -> torch.Tensor:
    hidden = getattr(output, "last_hidden_state", None)
    if hidden is None and isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        hidden = output[0]
    if not isinstance(hidden, torch.Tensor):
        raise RuntimeError(f"backbone returned {type(output).__name__} without last_hidden_state")
    return hidden


@contextlib.contextmanager
def capture_backbone_states(model: Any, transform=None) -> Iterator[list[torch.Tensor]]:
    """Record ``transform(last_hidden_state)`` (detached) of every backbone forward in the block."""
    captured: list[torch.Tensor] = []

    def hook(_module: Any, _args: Any, output: Any) -> None:
        hidden = _last_hidden(output).detach()
        captured.append(transform(hidden) if transform is not None else hidden)

    handle = backbone_module(model).register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()
