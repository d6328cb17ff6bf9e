"""Token influence over any set of parameters (the whole network, LoRA adapters, the last blocks).

THR as the paper defines it (and :func:`thr.core.token_influence`) differentiates the LM head
only. The same quantity for any parameter set ``theta`` is a directional derivative::

    s_{j,k} = < d l_{j,k} / d theta ,  v_g >,   v_g = d L_P^g / d theta
            = d/de  l_{j,k}(theta + e v_g)  at e = 0

with ``l_{j,k} = ln pi(y_{j,k})`` (logits divided by the temperature) and
``L_P^g = sum_{i in P_g} sum_k' l_{i,k'}`` the summed log-likelihood of the correct responses of
token ``(j, k)``'s group ``g``: the spec's definition (section 2) with ``theta`` in place of ``W``.
Per group, one backward over the positive rows gives ``v_g``, and one forward-mode pass along
``v_g`` (``torch.func.jvp`` over ``torch.func.functional_call``) gives ``s`` of every token of
the group at once: about ``1 + 2 (N+/N) + jvp`` forwards, where a jvp costs about 2-3 forwards
and keeps no activations. With ``theta = {lm_head.weight}`` (an untied head) it equals
:func:`thr.core.token_influence` exactly.

Attention kernels: the fused SDPA kernels (flash / memory-efficient, CPU and CUDA) have no
forward-mode derivative, so the jvp runs inside ``sdpa_kernel(MATH)`` (the composite, exact
``softmax(QK^T) V``); ``eager`` attention works as is. Any other op without a forward-mode
formula (e.g. ``flash_attention_2``) falls back to double-backward (``method="auto"``), which
computes the same product with ``u -> <d(u . l)/d theta, v>`` differentiated in ``u``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any, Literal

import torch

from ._checks import check_mask, check_temperature, check_tensor

NetworkMethod = Literal["auto", "jvp", "double_backward"]


def _named(model: torch.nn.Module, parameters: Iterable[torch.Tensor] | None) -> tuple[list[str], list[torch.Tensor]]:
    """Names and tensors of the parameter set (default: every parameter that requires grad)."""
    named = list(model.named_parameters())
    if parameters is None:
        chosen = [(n, p) for n, p in named if p.requires_grad]
    else:
        by_id = {id(p): n for n, p in named}
        chosen, seen = [], set()
        for p in parameters:
            if not isinstance(p, torch.Tensor) or id(p) not in by_id:
                raise ValueError("parameters must be parameters of model (as in model.parameters()); got one that is not")
            if id(p) not in seen:
                seen.add(id(p))
                chosen.append((by_id[id(p)], p))
    if not chosen:
        raise ValueError("the parameter set is empty (parameters=None takes every parameter with requires_grad)")
    return [n for n, _ in chosen], [p for _, p in chosen]


def _validate(input_ids, attention_mask, response_mask, positive, group_size, temperature):
    check_tensor("input_ids", input_ids, ndim=2)
    if input_ids.is_floating_point() or input_ids.dtype == torch.bool:
        raise ValueError(f"input_ids must be an integer tensor, got dtype {input_ids.dtype}")
    B, L = input_ids.shape
    attn = check_mask("attention_mask", attention_mask, (B, L))
    mask = check_mask("response_mask", response_mask, (B, L))
    check_tensor("positive", positive, ndim=1)
    if positive.shape[0] != B:
        raise ValueError(f"positive has shape {tuple(positive.shape)}, expected ({B},)")
    if positive.dtype != torch.bool and (positive.is_floating_point() or not bool(((positive == 0) | (positive == 1)).all())):
        raise ValueError(f"positive must be a bool tensor (or 0/1 ints), got dtype {positive.dtype}")
    if not (isinstance(group_size, int) and group_size >= 1) or B % group_size:
        raise ValueError(f"group_size={group_size!r} must be a positive int dividing the batch size {B}")
    check_temperature(temperature)
    if bool(mask[:, 0].any()):
        raise ValueError("response_mask is 1 in column 0: a response token needs a state one position earlier")
    if bool((mask & ~attn).any()):
        raise ValueError("response_mask is 1 where attention_mask is 0")
    return attn, mask, positive.bool()


class _TokenLogProbs:
    """``l [R, C]``: log-probabilities of the tokens in columns ``start..L-1`` of some rows (0 off the mask)."""

    def __init__(self, model, names, input_ids, attention_mask, position_ids, mask, start, temperature):
        self.model, self.names, self.tau = model, names, temperature
        chosen = set(names)  # the other parameters enter as constants: no graph, no tangent through them
        self.frozen = {n: p.detach() for n, p in model.named_parameters() if n not in chosen}
        self.ids, self.attn, self.pos, self.start = input_ids, attention_mask, position_ids, start
        self.mask = mask[:, start:]
        self.targets = input_ids[:, start:]
        self.keep = input_ids.shape[1] - start + 1  # logits at positions start-1 .. L-1
        self.takes_keep = True

    def __call__(self, params: tuple[torch.Tensor, ...], rows: torch.Tensor) -> torch.Tensor:
        from torch.func import functional_call

        kwargs: dict[str, Any] = dict(input_ids=self.ids[rows], attention_mask=self.attn[rows],
                                      position_ids=self.pos[rows], use_cache=False)
        state = {**self.frozen, **dict(zip(self.names, params, strict=True))}
        logits = None
        if self.takes_keep:
            try:
                logits = functional_call(self.model, state, (), {**kwargs, "logits_to_keep": self.keep}).logits
            except TypeError:  # a model without logits_to_keep: full logits, sliced below
                self.takes_keep = False
        if logits is None:
            logits = functional_call(self.model, state, (), kwargs).logits
        z = logits[:, -self.keep : -1]
        z = z.double() if z.dtype == torch.float64 else z.float()
        if self.tau != 1.0:
            z = z / self.tau
        lp = z.gather(-1, self.targets[rows, :, None]).squeeze(-1) - z.logsumexp(-1)
        return torch.where(self.mask[rows], lp, torch.zeros((), dtype=lp.dtype, device=lp.device))


def _math_sdpa():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.MATH])


def _chunks(rows: torch.Tensor, size: int | None) -> list[torch.Tensor]:
    return list(rows.split(size)) if size else [rows]


def _gradient(f: _TokenLogProbs, params, rows, rows_per_pass) -> list[torch.Tensor]:
    """``v = d (sum of l over rows) / d theta`` (one backward per chunk of rows, accumulated)."""
    leaves = tuple(p.detach().requires_grad_(True) for p in params)
    v = [torch.zeros_like(p) for p in params]
    with torch.enable_grad():
        for chunk in _chunks(rows, rows_per_pass):
            grads = torch.autograd.grad(f(leaves, chunk).sum(), leaves, allow_unused=True)
            for acc, g in zip(v, grads, strict=True):
                if g is not None:
                    acc.add_(g)
    return v


def _no_forward_mode(err: Exception) -> bool:
    """Whether ``err`` says an op (or a custom ``autograd.Function``) has no forward-mode derivative."""
    msg = str(err).lower()
    return isinstance(err, NotImplementedError) or any(
        key in msg for key in ("forward ad", "forward mode", "forward-mode", "functorch", "jvp"))


def _directional_jvp(f: _TokenLogProbs, params, v, rows) -> torch.Tensor:
    from torch.func import jvp

    primals = tuple(p.detach() for p in params)
    with torch.no_grad(), _math_sdpa():
        _, tangent = jvp(lambda *ps: f(ps, rows), primals, tuple(v))
    return tangent


def _directional_double_backward(f: _TokenLogProbs, params, v, rows) -> torch.Tensor:
    leaves = tuple(p.detach().requires_grad_(True) for p in params)
    with torch.enable_grad(), _math_sdpa():
        lp = f(leaves, rows)
        u = torch.zeros_like(lp, requires_grad=True)
        grads = torch.autograd.grad((lp * u).sum(), leaves, create_graph=True, allow_unused=True)
        dot = sum((g * t).sum() for g, t in zip(grads, v, strict=True) if g is not None)
        if not isinstance(dot, torch.Tensor) or not dot.requires_grad:
            return torch.zeros_like(lp)
        return torch.autograd.grad(dot, u)[0]


def network_token_influence(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_mask: torch.Tensor,
    positive: torch.Tensor, *, group_size: int, temperature: float = 1.0,
    parameters: Iterable[torch.Tensor] | None = None, position_ids: torch.Tensor | None = None,
    rows_per_pass: int | None = None, method: NetworkMethod = "auto",
) -> torch.Tensor:
    """Influence ``s [B, L]`` of every response token on its group's correct responses, over ``parameters``.

    Args:
        model: a causal LM called as ``model(input_ids=, attention_mask=, position_ids=,
            use_cache=False, logits_to_keep=)`` returning ``.logits`` (Hugging Face style; peft
            wrappers work). Put it in eval mode (dropout would make the passes disagree).
        input_ids, attention_mask: ``[B, L]`` whole sequences (prompt and response, any padding).
        response_mask: ``[B, L]`` 1 at response tokens; token ``t``'s log-probability comes from
            the logits at position ``t - 1`` (so column 0 must be 0).
        positive: ``[B]`` bool, the correct responses (the set P of each group).
        group_size: groups are ``group_size`` contiguous rows.
        temperature: logits are divided by it (as in the policy loss).
        parameters: the set ``theta`` (default: every parameter of ``model`` that requires grad);
            frozen parameters may be listed too. A tied embedding/head weight counts both uses.
        position_ids: ``[B, L]``; default ``cumsum(attention_mask) - 1`` (left padding, as in
            ``generate`` and the trainer).
        rows_per_pass: rows per forward/backward/jvp (default: a whole group at once); lower it to
            bound memory (logits and their tangents are ``rows x L x V``).
        method: ``"jvp"`` (forward mode), ``"double_backward"`` or ``"auto"`` (jvp, falling back
            to double-backward with a warning where an op has no forward-mode derivative).

    Returns:
        ``[B, L]`` influence (float64 for a float64 model, else float32), zero where
        ``response_mask`` is 0 and for groups without a correct response.
    """
    attn, mask, pos = _validate(input_ids, attention_mask, response_mask, positive, group_size, temperature)
    if method not in ("auto", "jvp", "double_backward"):
        raise ValueError(f"method must be 'auto', 'jvp' or 'double_backward', got {method!r}")
    if rows_per_pass is not None and not (isinstance(rows_per_pass, int) and rows_per_pass >= 1):
        raise ValueError(f"rows_per_pass must be a positive int or None, got {rows_per_pass!r}")
    names, params = _named(model, parameters)
    dtype = torch.float64 if any(p.dtype == torch.float64 for p in params) else torch.float32
    B, L = input_ids.shape
    out = torch.zeros(B, L, dtype=dtype, device=input_ids.device)
    cols = mask.any(0).nonzero()
    if cols.numel() == 0:
        return out
    start = int(cols[0])
    if position_ids is None:
        position_ids = (attn.long().cumsum(-1) - 1).clamp(min=0)
    f = _TokenLogProbs(model, names, input_ids, attn.long(), position_ids, mask, start, temperature)
    has_tokens = mask.any(1)
    for g0 in range(0, B, group_size):
        rows = torch.arange(g0, g0 + group_size, device=input_ids.device)
        pos_rows = rows[pos[rows] & has_tokens[rows]]
        if pos_rows.numel() == 0:
            continue
        v = _gradient(f, params, pos_rows, rows_per_pass)
        for chunk in _chunks(rows[has_tokens[rows]], rows_per_pass):
            s = None
            if method in ("auto", "jvp"):
                try:
                    s = _directional_jvp(f, params, v, chunk)
                except (NotImplementedError, RuntimeError) as err:
                    if method == "jvp" or not _no_forward_mode(err):
                        raise
                    warnings.warn(f"network_token_influence: forward-mode AD is not supported by this model "
                                  f"({str(err).splitlines()[0]}); using double-backward", stacklevel=2)
                    method = "double_backward"
            if s is None:
                s = _directional_double_backward(f, params, v, chunk)
            out[chunk, start:] = s.to(dtype)
    return out
