"""Per-token quantities of sampled groups: THR, influence, self-term, entropy, probability.

:func:`token_statistics` works on plain tensors (LM-head inputs, the unembedding, token ids), so
it can be checked on hand-built cases; :func:`forward_statistics` feeds it from a model forward;
:func:`group_records` turns the result into the ``groups.jsonl`` layout of :mod:`thr.analysis.stats`.
Probabilities and entropy are those of ``softmax(W h / temperature)``, the distribution THR is
defined on (spec section 1).
"""

from __future__ import annotations

from typing import Any

import torch

from thr.core import (
    entropy_from_logits,
    influence_threshold,
    selective_log_softmax,
    token_influence,
    token_self_influence,
)

STAT_KEYS = ("thr", "influence", "self", "entropy", "prob")


@torch.no_grad()
def token_statistics(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    response_ids: torch.Tensor,
    response_mask: torch.Tensor,
    correct: torch.Tensor,
    advantages: torch.Tensor,
    *,
    group_size: int,
    temperature: float = 1.0,
    beta: float = 1.0,
    chunk_size: int = 1024,
    method: str = "auto",
) -> dict[str, torch.Tensor]:
    """All per-token diagnostics of whole groups.

    Args:
        hidden: ``[B, T, d]`` LM-head inputs predicting each response token.
        weight: ``[V, d]`` unembedding.
        response_ids, response_mask: ``[B, T]``.
        correct: ``[B]`` bool, the positive set P.
        advantages: ``[B]`` group advantages.
        group_size: responses per group (groups are contiguous).

    Returns:
        ``thr``, ``influence``, ``self``, ``entropy``, ``prob`` (``[B, T]``, zero at padding) and
        ``tau`` (``[B]``, the NTHR threshold of each response's group; ``inf`` without a correct one).
    """
    mask = response_mask.bool()
    influence = token_influence(
        hidden, weight, response_ids, mask, correct, group_size=group_size,
        temperature=temperature, chunk_size=chunk_size, method=method,
    )
    self_term = token_self_influence(hidden, weight, response_ids, mask, temperature=temperature, chunk_size=chunk_size)
    entropy = torch.zeros_like(influence)
    logp = torch.zeros_like(influence)
    H, Y = hidden[mask], response_ids[mask].long()
    W = weight.to(influence.dtype)
    ent_parts, lp_parts = [], []
    for a in range(0, H.shape[0], chunk_size):
        logits = H[a : a + chunk_size].to(W.dtype) @ W.T
        ent_parts.append(entropy_from_logits(logits, temperature=temperature))
        lp_parts.append(selective_log_softmax(logits, Y[a : a + chunk_size], temperature=temperature))
    entropy[mask] = torch.cat(ent_parts).to(entropy.dtype)
    logp[mask] = torch.cat(lp_parts).to(logp.dtype)
    tau = influence_threshold(influence, mask, correct, group_size=group_size, mode="nthr", beta=beta)
    thr = advantages.to(influence.dtype)[:, None] * influence
    return {"thr": thr, "influence": influence, "self": self_term, "entropy": entropy,
            "prob": logp.exp() * mask, "tau": tau}


@torch.no_grad()
def forward_statistics(model: Any, batch: Any, correct: torch.Tensor, advantages: torch.Tensor, *, group_size: int,
                       temperature: float, beta: float, chunk_size: int, method: str, micro_batch_size: int) -> dict[str, torch.Tensor]:
    """:func:`token_statistics` of a :class:`thr.rl.batch.RolloutBatch`, whole groups per forward."""
    from thr.models.loading import capture_head_inputs, lm_head_weight
    from thr.rl.batch import policy_forward

    B, T = batch.response_ids.shape
    out = {k: torch.zeros(B, T) for k in STAT_KEYS}
    out["tau"] = torch.zeros(B)
    W = lm_head_weight(model)
    rows = max(1, micro_batch_size // group_size) * group_size
    model.eval()
    for start in range(0, B, rows):
        idx = torch.arange(start, min(B, start + rows), device=batch.response_ids.device)
        sub = batch.rows(idx)
        if not bool(sub.response_mask.any()):
            continue  # every response of these groups is empty: nothing to score
        with capture_head_inputs(model) as captured:
            policy_forward(model, sub)
        hidden = captured[-1][:, :-1]
        t = sub.response_width
        stats = token_statistics(
            hidden, W, sub.response_ids, sub.response_mask, correct[idx], advantages[idx], group_size=group_size,
            temperature=temperature, beta=beta, chunk_size=chunk_size, method=method,
        )
        for k in STAT_KEYS:
            out[k][idx.cpu(), :t] = stats[k].float().cpu()
        out["tau"][idx.cpu()] = stats["tau"].float().cpu()
    return out


def _round(values: torch.Tensor) -> list[float]:
    return [float(f"{v:.6g}") for v in values.float().tolist()]


def group_records(problems: list[Any], samples: list[Any], scores: list[Any], stats: dict[str, torch.Tensor],
                  advantages: torch.Tensor, response_mask: torch.Tensor, tokenizer: Any, group_size: int) -> list[dict[str, Any]]:
    """One ``groups.jsonl`` record per problem (the trainer's layout plus ``self`` and ``tau``)."""
    records = []
    for g, problem in enumerate(problems):
        responses = []
        for j in range(g * group_size, (g + 1) * group_size):
            n = int(response_mask[j].sum())
            entry: dict[str, Any] = {
                "text": samples[j].text, "reward": scores[j].reward, "correct": bool(scores[j].correct),
                "advantage": float(advantages[j]), "finish_reason": samples[j].finish_reason,
                "tokens": [tokenizer.decode([i]) for i in samples[j].response_ids[:n]],
            }
            for key in STAT_KEYS:
                entry[key] = _round(stats[key][j, :n])
            responses.append(entry)
        tau = float(stats["tau"][g * group_size])
        records.append({"group": g, "problem": problem.problem, "answer": problem.answer,
                        "tau": tau if tau != float("inf") else None, "responses": responses})
    return records
