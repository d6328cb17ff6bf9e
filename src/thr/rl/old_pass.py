"""The old-policy pass: old log-probs, entropy and THR influence in one no-grad forward per micro-batch.

:func:`old_policy_pass` runs the pass over a :class:`thr.rl.batch.RolloutBatch` and returns an
:class:`OldPass`. THR is computed right after the forward that produced the LM-head inputs, which
are then dropped (memory stays one micro-batch of states).

:class:`OldPassTHR` turns one micro-batch (LM-head inputs, the forward's logits, the old
log-probs) into influence ``[B_micro, t]`` following ``cfg.thr`` (``algorithm``,
``reuse_logits``, ``approx_top_k``, ``max_kept_gb``; documented in
:class:`thr.rl.config.THRSection`).

With ``thr.influence=network``, :meth:`OldPassTHR.network` instead calls
:func:`thr.core.network_token_influence` on the micro-batch's prompt + response layout, over the
parameters that ``thr.network_params`` selects (:func:`select_network_parameters`).

Reusing the logits saves THR's own softmax products, but is only right when the LM head is a
plain linear map (``logits == hidden @ W.T``: no soft-capping, no logit scale, no LoRA on the
head). That is checked once, on the first micro-batch, on a few rows.
"""

from __future__ import annotations

import contextlib
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from thr.core import entropy_from_logits, network_token_influence, selective_log_softmax, token_influence, token_self_influence
from thr.models.loading import capture_head_inputs, lm_head_weight
from thr.rl.batch import RolloutBatch, policy_forward


@dataclass
class OldPass:
    """What the update needs from the policy that sampled the batch (all ``[B, T]``, float32).

    log_probs: old log-probs of the response tokens at the rollout temperature.
    entropy: entropy of each token's distribution.
    influence: THR influence ``s`` of each token on its group's positive responses.
    ref_log_probs: reference-model log-probs (``optim.kl_coef > 0`` only, else None).
    thr_seconds: wall time spent in THR (part of the pass).
    """

    log_probs: torch.Tensor
    entropy: torch.Tensor
    influence: torch.Tensor
    ref_log_probs: torch.Tensor | None
    thr_seconds: float


@torch.no_grad()
def old_policy_pass(
    model,
    batch: RolloutBatch,
    positive: torch.Tensor,
    thr_pass: "OldPassTHR",
    *,
    rows_per_micro: int,
    reference: Callable[[RolloutBatch], torch.Tensor] | None = None,
) -> OldPass:
    """Old log-probs, entropy, (reference log-probs) and THR influence of ``batch``, fused per
    micro-batch of ``rows_per_micro`` rows (whole groups). ``positive``: ``[B]`` bool, the set P;
    ``reference(sub)``: reference log-probs of a sub-batch, when the KL term is on."""
    tau, device = thr_pass.tau, batch.response_ids.device
    B, T = batch.response_ids.shape
    old_lp = torch.zeros(B, T, device=device)
    entropy = torch.zeros(B, T, device=device)
    influence = torch.zeros(B, T, device=device, dtype=torch.float32)
    ref_lp = torch.zeros(B, T, device=device) if reference is not None else None
    W = lm_head_weight(model)
    thr_seconds = 0.0
    model.eval()
    for start in range(0, B, rows_per_micro):
        idx = torch.arange(start, min(B, start + rows_per_micro), device=device)
        sub = batch.rows(idx)
        t = sub.response_width
        with capture_head_inputs(model) as captured:
            logits = policy_forward(model, sub)
        sub_lp = selective_log_softmax(logits, sub.response_ids, temperature=tau)
        old_lp[idx, :t] = sub_lp
        entropy[idx, :t] = entropy_from_logits(logits, temperature=tau)
        hidden = captured[-1][:, :-1]
        if not thr_pass.use_logits(hidden, W, logits, sub.response_mask):
            logits = None  # freed before THR (thr.reuse_logits: auto with bf16 logits, off, or a non-linear head)
        t0 = time.perf_counter()
        if sub.response_mask.any() and thr_pass.c.influence == "network":  # over thr.network_params
            influence[idx, :t] = thr_pass.network(model, sub, positive[idx]).float()
        elif sub.response_mask.any():
            influence[idx, :t] = thr_pass(hidden, W, sub.response_ids, sub.response_mask, positive[idx],
                                          logits=logits, log_probs=sub_lp).float()
        thr_seconds += time.perf_counter() - t0
        del logits, hidden, captured
        if ref_lp is not None:
            ref_lp[idx, :t] = reference(sub)
    model.train()
    return OldPass(old_lp, entropy, influence, ref_lp, thr_seconds)

# (rtol, atol relative to the row's largest |logit|) of the plain-linear-head check, by logits dtype
_HEAD_TOL = {torch.float64: 1e-6, torch.float32: 5e-3}  # float32: room for TF32 matmuls
_HALF_TOL = 2e-2  # bf16 / fp16 logits: the model's product rounds every logit
_CHECK_ROWS = 4


def head_is_linear(hidden: torch.Tensor, weight: torch.Tensor, logits: torch.Tensor, mask: torch.Tensor) -> tuple[bool, str]:
    """Whether ``logits`` equal ``hidden @ weight.T`` on a few valid rows, with the reason if not."""
    if logits.shape[-1] != weight.shape[0] or logits.shape[:-1] != hidden.shape[:-1]:
        return False, f"logits shape {tuple(logits.shape)} does not match hidden {tuple(hidden.shape)} x W {tuple(weight.shape)}"
    bi, ti = mask.nonzero(as_tuple=True)
    if bi.numel() == 0:
        return True, ""
    pick = torch.linspace(0, bi.numel() - 1, min(_CHECK_ROWS, bi.numel()), device=bi.device).round().long()
    bi, ti = bi[pick], ti[pick]
    ref = torch.nn.functional.linear(hidden[bi, ti].to(weight.dtype), weight).double()
    got = logits[bi, ti].double()
    tol = _HEAD_TOL.get(logits.dtype, _HALF_TOL)
    bound = tol * ref.abs() + tol * ref.abs().amax(-1, keepdim=True)
    err = (got - ref).abs()
    if bool((err <= bound).all()):
        return True, ""
    worst = float((err / ref.abs().amax(-1, keepdim=True).clamp(min=1e-30)).max())
    return False, (f"the model's logits differ from hidden @ lm_head.weight.T by up to {worst:.3g} of the row's "
                   f"largest logit (tolerance {tol:g} for {logits.dtype}): the head is not a plain linear map "
                   "(soft-capping, a logit scale or LoRA on the head)")


class OldPassTHR:
    """Influence of one old-pass micro-batch per ``thr`` (a :class:`~thr.rl.config.THRSection`)."""

    def __init__(self, thr, group_size: int, temperature: float, head_adapter: bool = False):
        """``head_adapter``: the LM head carries a (LoRA) adapter, so its logits are never reused."""
        self.c, self.G, self.tau = thr, group_size, temperature
        self.max_kept = None if not thr.max_kept_gb else int(thr.max_kept_gb * 2**30 / 4)  # float32 elements
        self.head_adapter = head_adapter
        self.head_linear: bool | None = None  # decided on the first micro-batch that wants the logits
        self.log_probs_ok = False  # approx may take the old log-probs as its normalizer (see use_logits)
        self.network_params: list[torch.nn.Parameter] | None = None  # influence=network: chosen on first use

    def use_logits(self, hidden: torch.Tensor, weight: torch.Tensor, logits: torch.Tensor, mask: torch.Tensor) -> bool:
        """Whether this micro-batch's logits go to THR (if not, drop them before calling THR).

        ``on`` raises ``ValueError`` when the head is not plain linear; ``auto`` reuses only
        float32/float64 logits and falls back to recomputing (said once on stderr). Also decides
        whether ``algorithm=approx`` may normalize with the old log-probs (plain linear head and
        float32/float64 logits only: otherwise ``hidden @ W.T`` and the log-probs disagree).
        """
        mode, full = self.c.reuse_logits, logits.dtype in (torch.float32, torch.float64)
        wants_check = self.c.influence == "full" and (mode != "off" or self.c.algorithm == "approx")
        if self.head_linear is None and wants_check and bool(mask.any()):
            ok, why = head_is_linear(hidden, weight, logits, mask)
            if self.head_adapter:  # equal at LoRA init (B = 0), not after training: never reuse
                ok, why = False, "the LM head carries a LoRA adapter (THR uses its base weight)"
            if not ok and mode == "on":
                raise ValueError(f"thr.reuse_logits=on: {why}. Set thr.reuse_logits=auto or off to recompute "
                                 "the probabilities from hidden @ lm_head.weight.T")
            if not ok:
                print(f"thr: recomputing THR's probabilities from hidden @ lm_head.weight.T, since {why}", file=sys.stderr)
            self.head_linear = ok
        self.log_probs_ok = bool(self.head_linear) and full
        if self.c.influence != "full" or mode == "off" or not bool(mask.any()):
            return False
        if mode == "auto" and not full:
            return False  # bf16/fp16 logits would round the probabilities (about 2 % relative error)
        return bool(self.head_linear)

    def __call__(self, hidden: torch.Tensor, weight: torch.Tensor, response_ids: torch.Tensor, response_mask: torch.Tensor,
                 positive: torch.Tensor, *, logits: torch.Tensor | None = None,
                 log_probs: torch.Tensor | None = None) -> torch.Tensor:
        """Influence ``[B_micro, t]``; ``logits`` only if :meth:`use_logits` said so, ``log_probs`` the
        old log-probs of the micro-batch (at the rollout temperature; used by ``algorithm=approx``)."""
        with self._matmul_precision(hidden, weight):
            return self._influence(hidden, weight, response_ids, response_mask, positive, logits, log_probs)

    def network(self, model, sub, positive: torch.Tensor) -> torch.Tensor:
        """``influence=network``: influence ``[B_micro, t]`` over ``network_params`` of one micro-batch
        (a :class:`thr.rl.batch.RolloutBatch` of whole groups; prompt + response layout)."""
        if self.network_params is None:
            self.network_params = select_network_parameters(model, self.c.network_params)
        P = sub.prompt_width
        response = torch.zeros(sub.attention_mask.shape, dtype=torch.bool, device=sub.attention_mask.device)
        response[:, P:] = sub.response_mask
        s = network_token_influence(model, sub.input_ids, sub.attention_mask, response, positive, group_size=self.G,
                                    temperature=self.tau, parameters=self.network_params,
                                    rows_per_pass=self.c.network_rows or None)
        return s[:, P:]

    def _matmul_precision(self, hidden: torch.Tensor, weight: torch.Tensor):
        """TF32 for THR's float32 products on CUDA per ``thr.tf32`` (restored afterwards)."""
        mode = self.c.tf32
        half = weight.dtype in (torch.bfloat16, torch.float16) or hidden.dtype in (torch.bfloat16, torch.float16)
        if not hidden.is_cuda or mode == "off" or (mode == "auto" and not half):
            return contextlib.nullcontext()
        return _tf32_matmuls()

    def _influence(self, hidden, weight, response_ids, response_mask, positive, logits, log_probs) -> torch.Tensor:
        c = self.c
        if c.influence == "self":
            # the control: each token's own <g,g><h,h>, counted only where the group has a correct answer
            s = token_self_influence(hidden, weight, response_ids, response_mask, temperature=self.tau,
                                     chunk_size=c.chunk_size)
            has_pos = positive.view(-1, self.G).any(1).repeat_interleave(self.G)
            return s * has_pos[:, None]
        common = dict(group_size=self.G, temperature=self.tau, chunk_size=c.chunk_size, method=c.method,
                      max_kept_elements=self.max_kept, logits=logits)
        if c.algorithm == "approx":
            return token_influence(hidden, weight, response_ids, response_mask, positive, algorithm="approx",
                                   top_k=c.approx_top_k, token_log_probs=log_probs if self.log_probs_ok else None,
                                   **common)
        return token_influence(hidden, weight, response_ids, response_mask, positive, **common)


_BLOCK = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks)\.(\d+)\.")


def select_network_parameters(model, spec: str) -> list[torch.nn.Parameter]:
    """The trainable parameters named by ``thr.network_params``: ``all``, ``last:N`` or ``re:REGEX``.

    ``last:N``: blocks are found by name (``...layers.<i>.``, as in Qwen2, Llama and their peft
    wrappers); the parameters registered after the last block (final norm, LM head) are kept, those
    before the first (embeddings, so also a head tied to them) are not.
    """
    named = list(model.named_parameters())
    trainable = [(n, p) for n, p in named if p.requires_grad]
    if spec == "all":
        chosen = trainable
    elif spec.startswith("re:"):
        rx = re.compile(spec[3:])
        chosen = [(n, p) for n, p in trainable if rx.search(n)]
    elif spec.startswith("last:"):
        n_last = int(spec[5:])
        blocks = [(i, int(m.group(1))) for i, (n, _) in enumerate(named) if (m := _BLOCK.search(n))]
        if not blocks:
            raise ValueError(f"thr.network_params={spec!r}: no transformer blocks found (parameter names like "
                             "model.layers.<i>.*); use re:REGEX")
        first = max(b for _, b in blocks) + 1 - n_last
        after = max(i for i, _ in blocks)
        keep = set()
        for i, (n, _) in enumerate(named):
            m = _BLOCK.search(n)
            if (m and int(m.group(1)) >= first) or (m is None and i > after):
                keep.add(n)
        chosen = [(n, p) for n, p in trainable if n in keep]
    else:
        raise ValueError(f"thr.network_params={spec!r} is not valid; use all, last:N or re:REGEX")
    if not chosen:
        raise ValueError(f"thr.network_params={spec!r} selects no trainable parameter")
    return [p for _, p in chosen]


@contextlib.contextmanager
def _tf32_matmuls():
    """TF32 for float32 CUDA matmuls inside the block; the previous setting is restored after.

    Uses only the ``fp32_precision`` API where torch has it (mixing it with the legacy
    ``allow_tf32`` flag makes later reads of either raise).
    """
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):
        previous = matmul.fp32_precision
        matmul.fp32_precision = "tf32"
        try:
            yield
        finally:
            matmul.fp32_precision = previous
        return
    previous = matmul.allow_tf32
    matmul.allow_tf32 = True
    try:
        yield
    finally:
        matmul.allow_tf32 = previous
