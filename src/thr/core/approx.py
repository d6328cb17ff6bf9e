"""Restricted-vocabulary approximation of token influence (spec section 6; opt-in only).

The exact influence sums ``<g, g'> = sum_v (onehot(y) - pi)_v (onehot(y') - pi')_v`` over the whole
vocabulary. This approximation keeps only a subset ``S`` of the vocabulary: the tokens present in
the group's responses, optionally the ``top_k`` most probable tokens of every probability vector,
and any ``vocab`` ids passed in. Every product then runs on ``W[S]`` (``[|S|, d]``) instead of
``W [V, d]``, so the cost falls by about ``|S| / V`` (``|S|`` of a few thousand against V = 152k).

How ``pi`` is restricted to ``S`` (``lse`` is the log-partition over the whole vocabulary):

- ``logits`` given (``[G, T, V]``, e.g. the old-log-prob forward's): ``pi_v`` for ``v`` in ``S`` are the
  exact full-softmax probabilities, and ``top_k`` is read from them (no head product at all; with
  ``token_log_probs`` too, ``lse = logit_y / tau - ln pi(y)`` saves the log-sum-exp pass);
- ``token_log_probs`` given (``[G, T]``, ``ln pi(y)`` at the temperature, e.g. the old log-probs):
  ``lse = z_y / tau - ln pi(y)`` with ``z = W[S] h``: again the exact probabilities on ``S``;
- neither, ``top_k = 0``: ``pi`` is renormalized over ``S`` (``softmax(W[S] h / tau)``);
- neither, ``top_k > 0``: one streamed pass of the full head product finds the top-k and ``lse``
  (this costs one LM-head product, so the speed-up is then at most about 2-3x).

The approximation is exact when ``S`` covers the whole vocabulary (``vocab=torch.arange(V)``);
otherwise it drops the terms of tokens outside ``S``: mostly ``<pi, pi'>`` of the tail and the tail
part of ``M``. Its error against the exact value is measured by ``benchmarks/thr_approx_error.py``.
"""

from __future__ import annotations

import torch

from ._checks import check_float, check_tensor
from .advantages import resolve_group_ids
from .influence import (
    DEFAULT_CHUNK,
    DEFAULT_KEPT_ELEMENTS,
    Method,
    _check_finite_rows,
    _check_opts,
    _compute_dtype,
    _group_tokens,
    _validate_group,
    choose_method,
    copy_rows,
    influence_mform,
    influence_pair,
    token_runs,
)


def _check_extra(token_log_probs, vocab, top_k, shape, V) -> None:
    if not (isinstance(top_k, int) and top_k >= 0):
        raise ValueError(f"top_k must be a non-negative int, got {top_k!r}")
    if token_log_probs is not None:
        check_tensor("token_log_probs", token_log_probs, ndim=2)
        check_float("token_log_probs", token_log_probs)
        if tuple(token_log_probs.shape) != tuple(shape):
            raise ValueError(f"token_log_probs has shape {tuple(token_log_probs.shape)}, expected {tuple(shape)}")
    if vocab is not None:
        check_tensor("vocab", vocab, ndim=1)
        if vocab.is_floating_point() or vocab.dtype == torch.bool:
            raise ValueError(f"vocab must be an integer tensor of token ids, got dtype {vocab.dtype}")
        if vocab.numel() and bool(((vocab < 0) | (vocab >= V)).any()):
            raise ValueError(f"vocab has ids outside [0, {V})")


def _full_pass(H, W, logits, bi, ti, temperature, top_k, chunk, dtype, need_lse=True):
    """One streamed pass over full rows (one reused ``[chunk, V]`` buffer): (top-k ids, lse ``[N]`` or None)."""
    tops, lse = [], torch.empty(H.shape[0], dtype=dtype, device=H.device) if need_lse else None
    V = logits.shape[-1] if logits is not None else W.shape[0]
    buf = torch.empty(min(chunk, H.shape[0]), V, dtype=dtype, device=H.device)
    runs = token_runs(bi, ti) if logits is not None else None
    for a in range(0, H.shape[0], chunk):
        b = min(a + chunk, H.shape[0])
        z = copy_rows(logits, runs, a, b, buf[: b - a]) if logits is not None else torch.mm(H[a:b], W.T, out=buf[: b - a])
        if need_lse:
            lse[a:b] = torch.logsumexp(z.div_(temperature), -1)
        if top_k:  # the temperature does not change the order
            tops.append(torch.unique(torch.topk(z, min(top_k, V), dim=-1).indices))
    return tops, lse


def _restricted_probs(H, W_S, S, lse, logits, bi, ti, temperature):
    """Probability source on ``S``: exact (``lse`` known, or from ``logits``) or renormalized."""
    Hs = H / temperature if temperature != 1.0 else H

    def probs(a: int, b: int, buf: torch.Tensor | None) -> torch.Tensor:
        if logits is not None:  # gather only the S columns of the rows: O(c |S|), lse from the first pass
            z = logits[bi[a:b, None], ti[a:b, None], S[None, :]]
            out = z.to(H.dtype) if buf is None else buf[: b - a].copy_(z)
            return out.div_(temperature).sub_(lse[a:b, None]).exp_()
        out = torch.mm(Hs[a:b], W_S.T, out=None if buf is None else buf[: b - a])
        if lse is not None:
            return out.sub_(lse[a:b, None]).exp_()
        out.sub_(out.amax(-1, keepdim=True)).exp_()
        return out.div_(out.sum(-1, keepdim=True))

    return probs


def _approx_group(hidden_states, W, response_ids, mask, pos, rows, extra, opts):
    """Approximate influence ``[N]`` of one group's valid tokens, their coordinates and ``|S|``."""
    temperature, top_k, logits, token_log_probs, vocab = extra
    chunk, method, max_pair, max_kept = opts
    bi, ti, n_pos = _group_tokens(mask, pos, rows)
    if n_pos == 0:
        return None, bi, ti, 0
    dtype = _compute_dtype(hidden_states, W, logits)
    H, Y = hidden_states[bi, ti].to(dtype), response_ids[bi, ti].long()
    parts = [Y] + ([vocab.to(Y.device).long()] if vocab is not None else [])
    lse = None
    if logits is not None and token_log_probs is not None:  # lse = z_y / tau - ln pi(y): no logsumexp pass
        lse = logits[bi, ti, Y].to(dtype) / temperature - token_log_probs[bi, ti].to(dtype)
    if top_k or (logits is not None and lse is None):
        Wc = W.to(dtype) if logits is None else None
        need = lse is None and (logits is not None or token_log_probs is None)
        tops, full_lse = _full_pass(H, Wc, logits, bi, ti, temperature, top_k, chunk, dtype, need_lse=need)
        parts += tops
        lse = full_lse if lse is None else lse
    S = torch.unique(torch.cat(parts))  # sorted
    W_S = W.index_select(0, S).to(dtype)
    _check_finite_rows("lm_head_weight", W_S)  # the rows in use (all of them were checked for top-k passes)
    Y_S = torch.searchsorted(S, Y)
    if lse is None and token_log_probs is not None:
        z_y = (H * W_S.index_select(0, Y_S)).sum(-1) / temperature
        lse = z_y - token_log_probs[bi, ti].to(dtype)
    probs = _restricted_probs(H, W_S, S, lse, logits, bi, ti, temperature)
    m, d = W_S.shape
    if method == "auto":
        method = choose_method(H.shape[0], n_pos, m, d, chunk, max_pair, have_logits=logits is not None,
                               max_kept_elements=max_kept)
    if method == "mform":
        kept = DEFAULT_KEPT_ELEMENTS if max_kept is None else max_kept
        s = influence_mform(H, Y_S, n_pos, probs, m, chunk, kept)
    elif method == "pair":
        s = influence_pair(H, Y_S, n_pos, probs, m, chunk)
    else:
        raise ValueError(f"method must be 'auto', 'mform' or 'pair', got {method!r}")
    return s / (temperature * temperature), bi, ti, m


@torch.no_grad()
def approx_influence(
    hidden_states: torch.Tensor, lm_head_weight: torch.Tensor, response_ids: torch.Tensor,
    response_mask: torch.Tensor, positive: torch.Tensor, *, group_size: int | None = None,
    group_ids: torch.Tensor | None = None, temperature: float = 1.0, top_k: int = 0,
    logits: torch.Tensor | None = None, token_log_probs: torch.Tensor | None = None,
    vocab: torch.Tensor | None = None, chunk_size: int = DEFAULT_CHUNK, method: Method = "auto",
    max_pair_elements: int | None = None, max_kept_elements: int | None = None, return_vocab_sizes: bool = False,
):
    """Approximate influence ``[B, T]`` of many groups (each on its own restricted vocabulary ``S``).

    Called by :func:`thr.core.token_influence` with ``algorithm="approx"``; arguments as there.
    """
    full_pass = top_k > 0 and logits is None  # reads every row of the weight
    mask, pos = _validate_group(hidden_states, lm_head_weight, response_ids, response_mask, positive, temperature,
                                check_weight=full_pass)
    _check_opts(chunk_size, max_pair_elements, max_kept_elements, logits, tuple(mask.shape), lm_head_weight.shape[0])
    _check_extra(token_log_probs, vocab, top_k, tuple(mask.shape), lm_head_weight.shape[0])
    gid = resolve_group_ids(hidden_states.shape[0], group_size=group_size, group_ids=group_ids, device=hidden_states.device)
    out = torch.zeros(mask.shape, dtype=_compute_dtype(hidden_states, lm_head_weight, logits), device=hidden_states.device)
    extra = (temperature, top_k, logits, token_log_probs, vocab)
    opts = (chunk_size, method, max_pair_elements, max_kept_elements)
    sizes = []
    for g in range(int(gid.max()) + 1):
        rows = (gid == g).nonzero().squeeze(1)
        s, bi, ti, m = _approx_group(hidden_states, lm_head_weight, response_ids, mask, pos, rows, extra, opts)
        sizes.append(m)
        if s is not None:
            out[bi, ti] = s
    return (out, sizes) if return_vocab_sizes else out
