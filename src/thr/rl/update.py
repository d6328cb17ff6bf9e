"""The update: ``ppo_epochs`` x ``mini_batches`` optimizer steps of the clipped policy loss.

:func:`update_policy` reads the rollout batch, its token advantages and the :class:`OldPass`,
and returns the update's metrics (``loss/*``, ``optim/*``). Mini-batches hold whole groups, in an
order seeded by ``(seed, step)``; micro-batches accumulate gradients within a mini-batch, each
weighted by the whole mini-batch's token / sequence counts so the sum is the full-batch loss.
"""

from __future__ import annotations

from typing import Any

import torch

from thr.core import entropy_from_logits, policy_loss, selective_log_softmax
from thr.rl.batch import RolloutBatch, policy_forward
from thr.rl.old_pass import OldPass

_ADDITIVE = {"loss/policy", "loss/kl_ref", "loss/entropy", "loss/total"}  # summed over micro-batches


def update_policy(
    model,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    batch: RolloutBatch,
    token_adv: torch.Tensor,
    old: OldPass,
    *,
    optim: Any,
    group_size: int,
    temperature: float,
    norm_length: int,
    seed: int,
) -> dict[str, float]:
    """Optimizer steps on ``batch`` (``B`` rows, whole groups of ``group_size``) with token
    advantages ``token_adv [B, T]``. ``optim``: the ``optim.*`` section of the train config;
    ``norm_length``: the Dr.GRPO length normaliser (``rollout.max_new_tokens``); ``seed``: seeds
    the mini-batch order."""
    o, G, B = optim, group_size, batch.response_ids.shape[0]
    device = batch.response_ids.device
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}  # a skipped mini-batch has loss 0 and no ratio/clip statistics
    gen = torch.Generator().manual_seed(seed)
    trainable = [p for p in model.parameters() if p.requires_grad]
    # Rows whose token advantages are all zero (uniform groups) have exactly zero gradient
    # when no KL or entropy term is on: their forward/backward is skipped.
    skip_rows = o.skip_zero_advantage and o.kl_coef == 0 and o.entropy_coef == 0
    active = token_adv.ne(0).any(1) if skip_rows else torch.ones(B, dtype=torch.bool, device=device)
    for _epoch in range(o.ppo_epochs):
        group_order = torch.randperm(B // G, generator=gen)
        for mini in group_order.chunk(o.mini_batches):
            rows = (mini[:, None] * G + torch.arange(G)[None]).reshape(-1).to(device)
            optimizer.zero_grad(set_to_none=True)
            step_metrics = _accumulate(model, batch, token_adv, old, rows, rows[active[rows]], trainable, o,
                                       temperature, norm_length)
            grad_norm = torch.nn.utils.clip_grad_norm_(trainable, o.max_grad_norm if o.max_grad_norm > 0 else float("inf"))
            optimizer.step()
            scheduler.step()
            step_metrics["loss/grad_norm"] = float(grad_norm)
            for k, v in step_metrics.items():
                sums[k] = sums.get(k, 0.0) + v
                counts[k] = counts.get(k, 0) + 1
    out = {k: v / counts[k] for k, v in sums.items()}
    out["optim/lr"] = scheduler.get_last_lr()[0]
    out["optim/updated_rows_frac"] = float(active.float().mean())
    return out


def _accumulate(model, batch, token_adv, old, rows, kept, trainable, o, temperature, norm_length) -> dict[str, float]:
    """Forward/backward of the ``kept`` rows of one mini-batch (``rows``), gradients accumulated."""
    mask = batch.response_mask[rows]
    denoms = dict(num_tokens=float(mask.sum().clamp(min=1)), num_seqs=float(rows.numel()),
                  norm_length=float(norm_length))
    if o.aggregation == "seq-mean-token-mean":
        denoms["num_seqs"] = float((mask.sum(1) > 0).sum().clamp(min=1))
    micro_batches = kept.split(o.micro_batch_size) if kept.numel() else ()
    if not micro_batches:  # zero gradient: the optimizer still steps, as it would without skipping
        # (a trainable parameter outside the graph would have had grad None, not 0; models have none)
        for p in trainable:
            p.grad = torch.zeros_like(p)
        return {"loss/policy": 0.0, "loss/total": 0.0}
    step_metrics: dict[str, float] = {}
    for micro in micro_batches:
        sub = batch.rows(micro)
        t = sub.response_width
        logits = policy_forward(model, sub)
        logp = selective_log_softmax(logits, sub.response_ids, temperature=temperature)
        ent = entropy_from_logits(logits, temperature=temperature) if o.entropy_coef else None
        ref = old.ref_log_probs[micro, :t] if old.ref_log_probs is not None else None
        loss, m = policy_loss(
            logp, old.log_probs[micro, :t], token_adv[micro, :t], sub.response_mask,
            loss_type=o.loss_type, clip_eps_low=o.clip_eps_low, clip_eps_high=o.clip_eps_high,
            aggregation=o.aggregation, ref_log_probs=ref, kl_coef=o.kl_coef, entropy=ent,
            entropy_coef=o.entropy_coef, **denoms,
        )
        loss.backward()
        share = float(micro.numel()) / kept.numel()
        for k, v in m.items():  # additive losses sum; ratios/fractions are averaged by share
            step_metrics[k] = step_metrics.get(k, 0.0) + (v if k in _ADDITIVE else v * share)
    return step_metrics
