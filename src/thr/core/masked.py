"""Masked reductions and per-token log-probabilities, memory-bounded over the vocabulary.

All functions take ``response_mask`` (``[B, T]``, bool or 0/1 float); positions where it is 0 are
padding and never contribute.
"""

from __future__ import annotations

import torch


def masked_mean(values: torch.Tensor, response_mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``values`` where ``response_mask`` is 1; 0 where nothing is selected."""
    m = response_mask.to(values.dtype)
    total = (values * m).sum() if dim is None else (values * m).sum(dim)
    count = m.sum() if dim is None else m.sum(dim)
    return total / count.clamp(min=1)


def selective_log_softmax(
    logits: torch.Tensor, token_ids: torch.Tensor, *, temperature: float = 1.0, chunk_size: int = 1024
) -> torch.Tensor:
    """``log softmax(logits / temperature)[token_ids]`` without a full log-softmax copy.

    logits ``[..., V]``, token_ids ``[...]`` -> ``[...]`` in float32 (float64 for float64 logits).
    Rows are processed ``chunk_size`` at a time, so extra memory is ``O(chunk_size * V)``.
    """
    out_dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    flat = logits.reshape(-1, logits.shape[-1])
    ids = token_ids.reshape(-1)
    parts = []
    for start in range(0, flat.shape[0], chunk_size):
        rows = flat[start : start + chunk_size].to(out_dtype) / temperature
        picked = rows.gather(-1, ids[start : start + chunk_size, None]).squeeze(-1)
        parts.append(picked - torch.logsumexp(rows, dim=-1))
    if not parts:
        return torch.zeros(token_ids.shape, dtype=out_dtype, device=logits.device)
    return torch.cat(parts).reshape(token_ids.shape)


def entropy_from_logits(logits: torch.Tensor, *, temperature: float = 1.0, chunk_size: int = 1024) -> torch.Tensor:
    """Entropy of ``softmax(logits / temperature)`` per row: ``[..., V] -> [...]`` (float32/64)."""
    out_dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    flat = logits.reshape(-1, logits.shape[-1])
    parts = []
    for start in range(0, flat.shape[0], chunk_size):
        logp = torch.log_softmax(flat[start : start + chunk_size].to(out_dtype) / temperature, dim=-1)
        parts.append(-(logp.exp() * logp).sum(-1))
    if not parts:
        return torch.zeros(logits.shape[:-1], dtype=out_dtype, device=logits.device)
    return torch.cat(parts).reshape(logits.shape[:-1])
