"""The worker side of the verl plugin as pure torch: states, layouts and the influence step.

Nothing here imports verl. :func:`influence_field` is the whole influence step a verl FSDP worker
runs after its old-policy forward (``thr.integrations.verl`` calls it from the patched
``infer_batch``), so it is tested on CPU and, where a GPU is present, on CUDA.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from thr.core import group_advantages, token_influence
from thr.integrations._groups import (
    check_complete_groups,
    dense_group_ids,
    positive_responses,
)


def response_states(
    hidden: torch.Tensor, seq_lens: Sequence[int], response_lens: Sequence[int], *, packed: bool
) -> list[torch.Tensor]:
    """States predicting each response token, one ``[R_i, d]`` tensor per sequence.

    ``packed``: ``hidden`` is ``[1, N(+pad), d]`` (or ``[N, d]``) with the sequences (prompt then
    response, no padding) back to back; sequence ``i`` ends at ``end_i = sum(seq_lens[:i+1])``
    and its response tokens are predicted at ``[end_i - R_i - 1, end_i - 1)``. Otherwise
    ``hidden`` is ``[b, max_len, d]`` with each sequence left-aligned: rows ``[L_i - R_i - 1, L_i - 1)``.
    """
    if len(seq_lens) != len(response_lens):
        raise ValueError(f"{len(seq_lens)} sequence lengths but {len(response_lens)} response lengths")
    out = []
    if packed:
        flat = hidden.reshape(-1, hidden.shape[-1])
        end = 0
        for L, R in zip(seq_lens, response_lens):
            end += int(L)
            if int(L) - int(R) < 1:
                raise ValueError(f"sequence of length {L} with a response of {R}: THR needs a non-empty prompt")
            out.append(flat[end - int(R) - 1 : end - 1])
        if end > flat.shape[0]:
            raise ValueError(f"sequences hold {end} tokens but the packed states only {flat.shape[0]}")
        return out
    for i, (L, R) in enumerate(zip(seq_lens, response_lens)):
        if int(L) - int(R) < 1:
            raise ValueError(f"sequence of length {L} with a response of {R}: THR needs a non-empty prompt")
        out.append(hidden[i, int(L) - int(R) - 1 : int(L) - 1])
    return out


def states_to_host(states: Sequence[torch.Tensor]) -> torch.Tensor:
    """One micro-batch's response states ``[R_i, d]`` as a jagged tensor in CPU memory, in their dtype.

    The worker keeps every row's states until the last micro-batch is done (a group may span
    micro-batches), so they are held on the host: per rank ``sum_i R_i * d`` values in the
    model's compute dtype (bf16 under FSDP2 mixed precision), and only one group's travel back
    to the GPU at a time in :func:`rank_influence`. The GPU holds one micro-batch's response
    states only during this copy.
    """
    lens = torch.tensor([0] + [int(s.shape[0]) for s in states], dtype=torch.int64)
    flat = torch.cat(list(states)) if len(states) else torch.zeros(0, 0)
    return torch.nested.nested_tensor_from_jagged(flat.to("cpu"), lens.cumsum(0))


def sequence_layout(values: Sequence[torch.Tensor], seq_lens: Sequence[int], response_lens: Sequence[int]) -> torch.Tensor:
    """Per-response values ``[R_i]`` placed like verl's packed log-probs: ``[sum L_i]``, zeros elsewhere.

    The inverse of verl's ``response_from_nested`` (value at ``end_i - R_i - 1 + k`` belongs to
    response token ``k``), so the driver reads the result exactly like ``old_log_probs``.
    """
    total = int(sum(int(L) for L in seq_lens))
    ref = values[0] if len(values) else torch.zeros(0)
    flat = torch.zeros(total, dtype=ref.dtype, device=ref.device)
    end = 0
    for v, L, R in zip(values, seq_lens, response_lens):
        end += int(L)
        flat[end - int(R) - 1 : end - 1] = v
    return flat


def response_values(flat: torch.Tensor, seq_lens: Sequence[int], response_lens: Sequence[int]) -> list[torch.Tensor]:
    """verl's ``response_from_nested`` rule on a flat ``[sum L_i]`` tensor: the inverse of :func:`sequence_layout`."""
    out, end = [], 0
    for L, R in zip(seq_lens, response_lens):
        end += int(L)
        out.append(flat[end - int(R) - 1 : end - 1])
    return out


def _pad(rows: Sequence[torch.Tensor], value: float = 0.0) -> torch.Tensor:
    width = max((r.shape[0] for r in rows), default=0)
    out = rows[0].new_full((len(rows), width, *rows[0].shape[1:]), value)
    for i, r in enumerate(rows):
        out[i, : r.shape[0]] = r
    return out


def response_masks_any(response_masks: Sequence[torch.Tensor], rows: Sequence[int]) -> bool:
    """Whether any of ``rows`` has a valid response token (checked where the masks are: no device sync)."""
    return any(bool(response_masks[r].bool().any()) for r in rows)


@torch.no_grad()
def rank_influence(
    states: Sequence[torch.Tensor],
    response_ids: Sequence[torch.Tensor],
    response_masks: Sequence[torch.Tensor],
    uids: Sequence[Any],
    rewards: torch.Tensor,
    lm_head_weight: torch.Tensor,
    *,
    group_size: int,
    temperature: float = 1.0,
    positive_reward: float | None = None,
    chunk_size: int = 1024,
    method: str = "auto",
) -> list[torch.Tensor]:
    """Influence of every response token of one rank's rows, ``[R_i]`` float32 each, on the head's device.

    Rows may come in any order (verl reorders them); groups are rebuilt from ``uids``. Every
    group with mixed rewards must be complete on this rank (``group_size`` rows). P is
    ``rewards >= positive_reward``, or the rows above their group's mean reward when ``None``
    (``A_j > 0``). Groups are scored one at a time on ``lm_head_weight``'s device: states, ids and
    masks may live anywhere (on a verl worker the batch is on the CPU, the head on the GPU, and
    the states wherever the caller kept them), and only one group's are moved there at a time.
    """
    B = len(states)
    if not (len(response_ids) == len(response_masks) == len(uids) == B == rewards.shape[0]):
        raise ValueError("states, response_ids, response_masks, uids and rewards must describe the same rows")
    gid = dense_group_ids(uids)
    rewards = rewards.detach().double().cpu()
    check_complete_groups(gid, rewards, group_size)
    centered, _ = group_advantages(rewards, group_ids=gid, mode="drgrpo")
    positive = positive_responses(rewards, centered, positive_reward)
    dev = lm_head_weight.device
    W = lm_head_weight if lm_head_weight.dtype in (torch.float32, torch.float64) else lm_head_weight.float()  # once
    out: list[torch.Tensor] = [torch.zeros(s.shape[0], dtype=torch.float32, device=dev) for s in states]
    for g in range(int(gid.max()) + 1 if B else 0):
        rows = (gid == g).nonzero().squeeze(1).tolist()
        pos = positive[rows]
        if not bool(pos.any()) or not response_masks_any(response_masks, rows):
            continue
        s = token_influence(  # padded where the rows are (host memory on a verl worker), then one copy each
            _pad([states[r] for r in rows]).to(dev), W, _pad([response_ids[r].long() for r in rows]).to(dev),
            _pad([response_masks[r].bool() for r in rows], False).to(dev), pos.to(dev),
            temperature=temperature, chunk_size=chunk_size, method=method,
        )
        for i, r in enumerate(rows):
            out[r] = s[i, : states[r].shape[0]].float()
    return out


def influence_field(
    states: Sequence[torch.Tensor],
    input_ids: torch.Tensor,
    response_masks: Sequence[torch.Tensor],
    uids: Sequence[Any],
    rewards: torch.Tensor,
    lm_head_weight: torch.Tensor,
    cfg: dict,
) -> torch.Tensor:
    """The worker's influence step: ``thr_influence`` as a jagged tensor laid out like verl's ``log_probs``.

    The result lives on ``lm_head_weight``'s device (where verl's own ``log_probs`` are), its
    offsets moved there too; the batch's tensors may stay on the CPU.

    ``states``: per row ``[R_i, d]`` (states predicting the response tokens); ``input_ids``: the
    batch's jagged ``[B, L_i]`` ids; ``response_masks``: per row ``[R_i]``; ``cfg``: the settings the
    trainer passes (group_size, temperature, positive_reward, chunk_size, method).
    """
    seq_lens = input_ids.offsets().diff().tolist()
    resp_lens = [int(m.shape[0]) for m in response_masks]
    infl = rank_influence(
        states, [s[-R:] for s, R in zip(input_ids.unbind(), resp_lens)], response_masks, uids, rewards, lm_head_weight,
        group_size=cfg["group_size"], temperature=cfg["temperature"], positive_reward=cfg["positive_reward"],
        chunk_size=cfg["chunk_size"], method=cfg["method"])
    flat = sequence_layout(infl, seq_lens, resp_lens)  # on the head's device
    return torch.nested.nested_tensor_from_jagged(flat, input_ids.offsets().to(flat.device))
