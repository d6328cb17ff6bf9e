"""Exact token influence ``s`` and Token Hidden Reward ``THR = A_j * s`` (spec sections 2 and 6).

For one group of G responses with last-layer states ``h_{j,k}`` (the input of the LM head that
predicts token ``y_{j,k}``), unembedding ``W [V, d]`` and temperature ``tau``::

    pi_{j,k} = softmax(W h_{j,k} / tau),   g_{j,k} = onehot(y_{j,k}) - pi_{j,k}
    s_{j,k}  = <d ln pi(y_{j,k}) / dW, sum_{i in P} d ln pi(y_i) / dW>
             = tau^-2 * sum_{i in P} sum_k' <g_{i,k'}, g_{j,k}> <h_{i,k'}, h_{j,k}>

Two exact algorithms, neither of which builds ``[G, T, V]``. With N valid tokens, N+ of them
in positive responses (processed first), in multiply-adds (one LM-head product is ``N V d``):

- M-form: ``M = sum_{i in P, k'} g h^T = E^T H+ - P+^T H+`` (``[V, d]``), then
  ``s = (M[y] - pi^T M) . h``. Cost ``V d (N + N+)`` plus the logits ``V d (N + R)``, where R
  counts the positive tokens whose probabilities did not fit ``max_kept_elements`` and are
  recomputed: ``(2 + N+/N) x`` the LM-head product when they are all kept.
- pair-form: ``<g, g'> = [y = y'] - pi'[y] - pi[y'] + <pi, pi'>`` against the stored positive
  probabilities ``P+ [N+, V]``. Cost ``V d N + N N+ (V + d)``; cheaper when the token counts
  are below ``d``, and only used while ``N+ * V`` fits ``max_pair_elements``.

Both stream over ``chunk_size`` tokens into reused buffers: peak extra memory is
``O(V d + chunk_size V)`` plus the kept probabilities (at most ``max_kept_elements``).
When ``logits`` (``[G, T, V]``, e.g. from the old-log-prob forward) are passed, the
probabilities are taken from them and no logits product is done: the M-form then costs
``V d (N + N+)``. Computation is in float64 for float64 inputs and in float32 otherwise
(bf16/fp16 inputs are upcast, so every product accumulates in float32; results are float32).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from ._checks import check_finite, check_float, check_mask, check_temperature, check_tensor
from .advantages import resolve_group_ids

Method = Literal["auto", "mform", "pair"]
DEFAULT_CHUNK = 1024
DEFAULT_KEPT_ELEMENTS = 1 << 29  # float32 probabilities of positive tokens kept (2 GiB)
ProbFn = Callable[[int, int, "torch.Tensor | None"], torch.Tensor]


def _compute_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32


def _validate_group(
    hidden_states: torch.Tensor,
    lm_head_weight: torch.Tensor,
    response_ids: torch.Tensor,
    response_mask: torch.Tensor,
    positive: torch.Tensor | None,
    temperature: float,
    check_weight: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Check shapes, dtypes, finiteness and id range; return (bool mask, bool positive).

    ``check_weight=False`` skips the ``O(V d)`` finiteness scan of the weight (for callers that
    read only some rows of it and check those).
    """
    check_tensor("hidden_states", hidden_states, ndim=3)
    check_tensor("lm_head_weight", lm_head_weight, ndim=2)
    check_tensor("response_ids", response_ids, ndim=2)
    check_float("hidden_states", hidden_states)
    check_float("lm_head_weight", lm_head_weight)
    check_temperature(temperature)
    G, T, d = hidden_states.shape
    V, d_w = lm_head_weight.shape
    if d_w != d:
        raise ValueError(
            f"hidden size mismatch: hidden_states {tuple(hidden_states.shape)} has d={d}, "
            f"lm_head_weight {tuple(lm_head_weight.shape)} has d={d_w}"
        )
    if tuple(response_ids.shape) != (G, T):
        raise ValueError(f"response_ids has shape {tuple(response_ids.shape)}, expected (G, T) = {(G, T)}")
    if response_ids.is_floating_point() or response_ids.dtype == torch.bool:
        raise ValueError(f"response_ids must be an integer tensor, got dtype {response_ids.dtype}")
    mask = check_mask("response_mask", response_mask, (G, T))
    if not bool(mask.any()):
        raise ValueError(f"response_mask selects no token (shape {(G, T)}): nothing to score")
    ids = response_ids[mask]
    if bool(((ids < 0) | (ids >= V)).any()):
        raise ValueError(
            f"response_ids has ids outside [0, {V}) at valid positions (min {int(ids.min())}, max {int(ids.max())}): "
            f"vocabulary mismatch with lm_head_weight of shape {tuple(lm_head_weight.shape)}"
        )
    check_finite("hidden_states", hidden_states, mask)
    if check_weight:
        _check_finite_rows("lm_head_weight", lm_head_weight)
    pos = None
    if positive is not None:
        check_tensor("positive", positive, ndim=1)
        if positive.shape[0] != G:
            raise ValueError(f"positive has shape {tuple(positive.shape)}, expected ({G},) for hidden_states of G={G}")
        if positive.dtype != torch.bool:
            if positive.is_floating_point() or not bool(((positive == 0) | (positive == 1)).all()):
                raise ValueError(f"positive must be a bool tensor (or 0/1 ints), got dtype {positive.dtype}")
        pos = positive.bool()
    return mask, pos


def _check_finite_rows(name: str, x: torch.Tensor, elements: int = 1 << 24) -> None:
    """NaN/inf check of a large 2-D tensor: one summing pass (NaN/inf propagate into the sum); only
    if the sum is not finite (or overflowed), a block scan finds the culprit without big temporaries."""
    if x.numel() == 0 or bool(torch.isfinite(x.sum())):
        return
    step = max(1, elements // max(1, x.shape[1]))
    for a in range(0, x.shape[0], step):
        if not bool(torch.isfinite(x[a : a + step]).all()):
            bad = (~torch.isfinite(x[a : a + step])).nonzero()[0]
            raise ValueError(f"{name} contains NaN or inf (first at index {[a + int(bad[0]), int(bad[1])]}); "
                             f"shape {tuple(x.shape)}")


def _rows(buf: torch.Tensor | None, n: int, V: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The first ``n`` rows of a reusable ``[chunk, V]`` buffer (a fresh tensor when ``buf`` is None)."""
    if buf is None or buf.shape[0] < n:
        return torch.empty(n, V, dtype=dtype, device=device)
    return buf[:n]


def softmax_(x: torch.Tensor) -> torch.Tensor:
    """Row softmax of ``x [c, V]`` in place (no extra ``[c, V]`` buffer)."""
    x.sub_(x.amax(-1, keepdim=True))
    x.exp_()
    x.div_(x.sum(-1, keepdim=True))
    return x


def head_probs(H: torch.Tensor, W: torch.Tensor, temperature: float) -> ProbFn:
    """Probabilities of tokens ``[a, b)`` recomputed as ``softmax(H W^T / tau)``."""
    Hs = H / temperature if temperature != 1.0 else H

    def probs(a: int, b: int, buf: torch.Tensor | None) -> torch.Tensor:
        out = _rows(buf, b - a, W.shape[0], H.dtype, H.device)
        return softmax_(torch.mm(Hs[a:b], W.T, out=out))

    return probs


def token_runs(bi: torch.Tensor, ti: torch.Tensor) -> list[tuple[int, int, int, int]]:
    """Maximal runs ``(start, end, b, t0)`` of tokens ``k`` with ``(bi, ti)[k] = (b, t0 + k - start)``."""
    n = bi.shape[0]
    brk = torch.ones(n, dtype=torch.bool, device=bi.device)
    brk[1:] = (bi[1:] != bi[:-1]) | (ti[1:] != ti[:-1] + 1)
    starts = brk.nonzero().squeeze(1).tolist()
    b0, t0 = bi[starts].tolist(), ti[starts].tolist()
    return [(s, e, b, t) for s, e, b, t in zip(starts, starts[1:] + [n], b0, t0, strict=True)]


def copy_rows(src: torch.Tensor, runs, a: int, b: int, out: torch.Tensor) -> torch.Tensor:
    """``out[k - a] = src[b_k, t_k]`` for tokens ``[a, b)``, by slices of runs (no gathered temporary)."""
    for s, e, row, t0 in runs:
        lo, hi = max(s, a), min(e, b)
        if lo < hi:
            out[lo - a : hi - a].copy_(src[row, t0 + lo - s : t0 + hi - s])
    return out


def logit_probs(logits: torch.Tensor, bi: torch.Tensor, ti: torch.Tensor, temperature: float, dtype: torch.dtype) -> ProbFn:
    """Probabilities of tokens ``[a, b)`` from precomputed ``logits [B, T, V]`` at ``(bi, ti)``.

    Rows are copied slice by slice straight into the float32 buffer (any strides, any dtype).
    """
    runs = token_runs(bi, ti)

    def probs(a: int, b: int, buf: torch.Tensor | None) -> torch.Tensor:
        out = copy_rows(logits, runs, a, b, _rows(buf, b - a, logits.shape[-1], dtype, logits.device))
        if temperature != 1.0:
            out.div_(temperature)
        return softmax_(out)

    return probs


def _spans(n_pos: int, n: int, chunk: int) -> list[tuple[int, int]]:
    """Chunks of the positive tokens ``[0, n_pos)`` then of the others ``[n_pos, n)``."""
    pos = [(a, min(a + chunk, n_pos)) for a in range(0, n_pos, chunk)]
    return pos + [(a, min(a + chunk, n)) for a in range(n_pos, n, chunk)]


def influence_mform(H, Y, n_pos, probs: ProbFn, V: int, chunk: int, max_kept: int) -> torch.Tensor:
    """M-form over tokens ordered positives first; probabilities of up to ``max_kept`` elements are kept."""
    spans = _spans(n_pos, H.shape[0], chunk)
    pos_spans = [s for s in spans if s[1] <= n_pos]
    keep, kept_elems = set(), 0
    for a, b in pos_spans:
        if kept_elems + (b - a) * V <= max_kept:
            keep.add(a)
            kept_elems += (b - a) * V
    buf = None
    if len(keep) < len(spans):  # one reusable [chunk, V] buffer for everything not kept
        buf = torch.empty(max(b - a for a, b in spans), V, dtype=H.dtype, device=H.device)
    M = torch.zeros(V, H.shape[1], dtype=H.dtype, device=H.device)
    M.index_add_(0, Y[:n_pos], H[:n_pos])
    kept: dict[int, torch.Tensor] = {}
    for a, b in pos_spans:
        p = probs(a, b, None if a in keep else buf)
        kept[a] = p  # chunks in the buffer are overwritten by the next one, except the last
        M.addmm_(p.T, H[a:b], alpha=-1.0)
    kept = {a: p for a, p in kept.items() if a in keep or a == pos_spans[-1][0]}
    out = torch.empty(H.shape[0], dtype=H.dtype, device=H.device)
    for a, b in [s for s in spans if s[0] in kept] + [s for s in spans if s[0] not in kept]:
        p = kept.pop(a) if a in kept else probs(a, b, buf)  # kept chunks (and the buffer's last) go first
        out[a:b] = ((M.index_select(0, Y[a:b]) - torch.mm(p, M)) * H[a:b]).sum(-1)
        del p
    return out


def influence_pair(H, Y, n_pos, probs: ProbFn, V: int, chunk: int) -> torch.Tensor:
    """Pair-form over tokens ordered positives first (stores ``P+ [N+, V]``)."""
    H_pos, Y_pos = H[:n_pos], Y[:n_pos]
    P_pos = torch.empty(n_pos, V, dtype=H.dtype, device=H.device)
    for a in range(0, n_pos, chunk):
        probs(a, min(a + chunk, n_pos), P_pos[a : a + chunk])
    out = torch.empty(H.shape[0], dtype=H.dtype, device=H.device)
    buf = None
    for a, b in _spans(n_pos, H.shape[0], chunk):
        h, y = H[a:b], Y[a:b]
        p = P_pos[a:b] if b <= n_pos else probs(a, b, buf)
        if b > n_pos and buf is None:
            buf = p
        gg = torch.mm(p, P_pos.T)  # <pi, pi'>
        gg -= P_pos.index_select(1, y).T  # pi'[y]
        gg -= p.index_select(1, Y_pos)  # pi[y']
        gg += y[:, None] == Y_pos[None, :]
        out[a:b] = (gg * torch.mm(h, H_pos.T)).sum(-1)
    return out


def influence_macs(
    num_tokens: int, num_positive: int, V: int, d: int, chunk_size: int, *,
    have_logits: bool = False, max_kept_elements: int | None = None,
) -> dict[str, int]:
    """Multiply-adds of the products of each exact form (the cost model of :func:`choose_method`).

    One LM-head product over the same tokens is ``num_tokens * V * d``.
    """
    N, Np = num_tokens, num_positive
    kept = DEFAULT_KEPT_ELEMENTS if max_kept_elements is None else max_kept_elements
    kept_chunks = min(kept // max(1, min(chunk_size, Np) * V), -(-Np // chunk_size))
    recomputed = max(0, Np - kept_chunks * chunk_size - chunk_size)  # the buffer keeps the last chunk too
    logit_products = 0 if have_logits else V * d * (N + recomputed)
    mform = V * d * (N + Np) + logit_products
    pair = N * Np * (V + d) + (0 if have_logits else V * d * N)
    return {"mform": mform, "pair": pair}


def choose_method(
    num_tokens: int,
    num_positive: int,
    V: int,
    d: int,
    chunk_size: int,
    max_pair_elements: int | None = None,
    *,
    have_logits: bool = False,
    max_kept_elements: int | None = None,
) -> str:
    """``"pair"`` when its multiply-add count is lower and ``[N+, V]`` fits the budget, else ``"mform"``.

    ``have_logits``: probabilities come from precomputed logits (no logits product in either form).
    ``max_kept_elements``: the M-form's budget of kept positive probabilities (the rest are recomputed).
    """
    budget = max_pair_elements if max_pair_elements is not None else chunk_size * V
    cost = influence_macs(num_tokens, num_positive, V, d, chunk_size, have_logits=have_logits,
                          max_kept_elements=max_kept_elements)
    return "pair" if cost["pair"] < cost["mform"] and num_positive * V <= budget else "mform"


def _group_tokens(mask: torch.Tensor, pos: torch.Tensor, rows: torch.Tensor | None = None):
    """Coordinates ``(bi, ti)`` of a group's valid tokens, positive responses first, and N+."""
    m = mask if rows is None else mask[rows]
    pos_tok = m & pos[:, None] if rows is None else m & pos[rows][:, None]
    bi_p, ti_p = pos_tok.nonzero(as_tuple=True)
    bi_n, ti_n = (m & ~pos_tok).nonzero(as_tuple=True)
    bi, ti = torch.cat([bi_p, bi_n]), torch.cat([ti_p, ti_n])
    if rows is not None:
        bi = rows[bi]
    return bi, ti, int(bi_p.shape[0])


def _influence_valid(hidden_states, lm_head_weight, response_ids, mask, pos, temperature, opts, rows=None, logits=None):
    """Influence ``[N]`` of one group's valid tokens and their coordinates ``(bi, ti)``.

    ``rows`` selects the group's rows of batched inputs (None: the whole batch is the group).
    """
    chunk, method, max_pair, max_kept = opts
    dtype = _compute_dtype(hidden_states, lm_head_weight, logits)
    bi, ti, n_pos = _group_tokens(mask, pos, rows)
    if n_pos == 0:
        return None, bi, ti
    V, d = lm_head_weight.shape
    H, Y = hidden_states[bi, ti].to(dtype), response_ids[bi, ti].long()
    if method == "auto":
        method = choose_method(H.shape[0], n_pos, V, d, chunk, max_pair, have_logits=logits is not None,
                               max_kept_elements=max_kept)
    if method not in ("mform", "pair"):
        raise ValueError(f"method must be 'auto', 'mform' or 'pair', got {method!r}")
    if logits is not None:
        probs, kept = logit_probs(logits, bi, ti, temperature, dtype), 0  # recomputing is cheap: keep none
    else:
        probs = head_probs(H, lm_head_weight.to(dtype), temperature)
        kept = DEFAULT_KEPT_ELEMENTS if max_kept is None else max_kept
    if method == "mform":
        s = influence_mform(H, Y, n_pos, probs, V, chunk, kept)
    else:
        s = influence_pair(H, Y, n_pos, probs, V, chunk)
    if logits is not None and not bool(torch.isfinite(s).all()):
        raise ValueError("logits contain NaN or inf at valid positions (influence is not finite)")
    return s / (temperature * temperature), bi, ti


def _check_opts(chunk_size, max_pair_elements, max_kept_elements, logits=None, shape=None, V=None) -> None:
    if not (isinstance(chunk_size, int) and chunk_size > 0):
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    for name, v in (("max_pair_elements", max_pair_elements), ("max_kept_elements", max_kept_elements)):
        if v is not None and not (isinstance(v, int) and v >= 0):
            raise ValueError(f"{name} must be a non-negative int or None, got {v!r}")
    if logits is not None:
        check_tensor("logits", logits, ndim=3)
        check_float("logits", logits)
        if tuple(logits.shape) != (*shape, V):
            raise ValueError(f"logits has shape {tuple(logits.shape)}, expected (G, T, V) = {(*shape, V)}")


Algorithm = Literal["exact", "approx"]


@torch.no_grad()
def token_influence(
    hidden_states: torch.Tensor, lm_head_weight: torch.Tensor, response_ids: torch.Tensor,
    response_mask: torch.Tensor, positive: torch.Tensor, *, group_size: int | None = None,
    group_ids: torch.Tensor | None = None, algorithm: Algorithm = "exact", temperature: float = 1.0,
    chunk_size: int = DEFAULT_CHUNK, method: Method = "auto", max_pair_elements: int | None = None,
    max_kept_elements: int | None = None, logits: torch.Tensor | None = None, top_k: int = 0,
    token_log_probs: torch.Tensor | None = None, vocab: torch.Tensor | None = None,
    return_vocab_sizes: bool = False,
):
    """Influence ``s`` of every token on its group's positive responses.

    Args:
        hidden_states: ``[B, T, d]`` last-layer states (after the final norm) that predict each
            response token, i.e. the LM-head inputs at positions ``prompt_len - 1 + k``.
        lm_head_weight: ``[V, d]`` unembedding matrix.
        response_ids: ``[B, T]`` response token ids (any value at padding).
        response_mask: ``[B, T]`` 1 for real response tokens, 0 for padding.
        positive: ``[B]`` bool, the responses counted as correct (the set P).
        group_size, group_ids: the groups: contiguous blocks of ``group_size`` rows, or a group
            index per row ``[B]``; neither: all ``B`` rows are one group. Each token is scored
            against its own group; groups with no positive response or no valid token get zeros.
        algorithm: ``"exact"`` (this module) or ``"approx"``, the restricted-vocabulary
            approximation of :mod:`thr.core.approx` (``top_k``, ``token_log_probs``, ``vocab``
            and ``return_vocab_sizes`` apply to it only).
        temperature: the policy temperature (logits are divided by it).
        chunk_size: tokens per streamed chunk; peak extra memory ``O(V d + chunk_size V)``.
        method: ``"mform"``, ``"pair"`` or ``"auto"`` (the cheaper exact one; see module doc).
        max_pair_elements: memory budget (elements) of the pair-form's ``[N+, V]`` buffer
            (default ``chunk_size * V``).
        max_kept_elements: M-form budget (elements) of positive-token probabilities kept between
            its two passes instead of recomputed (default ``DEFAULT_KEPT_ELEMENTS``, 2 GiB of
            float32; 0 recomputes them all).
        logits: optional ``[B, T, V]`` logits that predict ``response_ids`` (before the
            temperature), e.g. those of the old-log-prob forward: the probabilities are taken
            from them instead of recomputed from ``hidden_states @ lm_head_weight.T``. They must
            be the logits of the same states and weight (any float dtype; read chunk by chunk,
            never copied whole).
        top_k: ``approx``: add the ``top_k`` most probable tokens of every valid token's
            distribution to the restricted vocabulary ``S``.
        token_log_probs: ``approx``: ``[B, T]`` ``ln pi(y)`` at ``temperature`` (e.g. the old
            log-probs): exact normalization without full logits.
        vocab: ``approx``: extra token ids to include in ``S`` (``torch.arange(V)``: exact).
        return_vocab_sizes: ``approx``: also return the ``|S|`` of every group (a list; 0 for
            groups with no positive response).

    Returns:
        ``[B, T]`` influence, zero at padding (and ``(influence, sizes)`` with ``return_vocab_sizes``).
    """
    one_group = group_size is None and group_ids is None
    if algorithm == "approx":
        from .approx import approx_influence

        return approx_influence(
            hidden_states, lm_head_weight, response_ids, response_mask, positive,
            group_size=(hidden_states.shape[0] if hidden_states.ndim == 3 else 1) if one_group else group_size,
            group_ids=group_ids, temperature=temperature, top_k=top_k, logits=logits, token_log_probs=token_log_probs,
            vocab=vocab, chunk_size=chunk_size, method=method, max_pair_elements=max_pair_elements,
            max_kept_elements=max_kept_elements, return_vocab_sizes=return_vocab_sizes,
        )
    if algorithm != "exact":
        raise ValueError(f"algorithm must be 'exact' or 'approx', got {algorithm!r}")
    if top_k or token_log_probs is not None or vocab is not None or return_vocab_sizes:
        raise ValueError("top_k, token_log_probs, vocab and return_vocab_sizes apply to algorithm='approx' only")
    opts = (chunk_size, method, max_pair_elements, max_kept_elements)
    return _exact_influence(hidden_states, lm_head_weight, response_ids, response_mask, positive,
                            None if one_group else (group_size, group_ids), temperature, opts, logits)


def _exact_influence(hidden_states, lm_head_weight, response_ids, response_mask, positive, groups, temperature,
                     opts, logits) -> torch.Tensor:
    """Exact influence ``[B, T]``: one group (``groups`` None) or ``(group_size, group_ids)``."""
    mask, pos = _validate_group(hidden_states, lm_head_weight, response_ids, response_mask, positive, temperature)
    _check_opts(opts[0], opts[2], opts[3], logits, tuple(mask.shape), lm_head_weight.shape[0])
    out = torch.zeros(mask.shape, dtype=_compute_dtype(hidden_states, lm_head_weight, logits), device=hidden_states.device)
    if groups is None:
        rows_of_groups, W = [None], lm_head_weight
    else:
        gid = resolve_group_ids(hidden_states.shape[0], group_size=groups[0], group_ids=groups[1], device=hidden_states.device)
        rows_of_groups = [(gid == g).nonzero().squeeze(1) for g in range(int(gid.max()) + 1)]
        W = lm_head_weight if logits is not None else lm_head_weight.to(out.dtype)  # upcast once for all groups
    for rows in rows_of_groups:
        s, bi, ti = _influence_valid(hidden_states, W, response_ids, mask, pos, temperature, opts, rows, logits)
        if s is not None:
            out[bi, ti] = s
    return out


def _signed(advantages: torch.Tensor, influence: torch.Tensor, name: str = "advantages") -> torch.Tensor:
    check_tensor(name, advantages, ndim=1)
    check_float(name, advantages)
    if advantages.shape[0] != influence.shape[0]:
        raise ValueError(f"{name} has shape {tuple(advantages.shape)}, expected ({influence.shape[0]},)")
    return advantages.to(influence.dtype)[:, None] * influence


def token_hidden_reward(
    hidden_states: torch.Tensor, lm_head_weight: torch.Tensor, response_ids: torch.Tensor,
    response_mask: torch.Tensor, advantages: torch.Tensor, positive: torch.Tensor, **options,
) -> torch.Tensor:
    """THR ``[B, T]``: ``advantages[j] * s[j, k]`` (``advantages`` is ``[B]``).

    ``options`` as in :func:`token_influence` (groups, ``algorithm``, ``temperature``, ...).
    """
    if options.get("return_vocab_sizes"):
        raise ValueError("return_vocab_sizes: call token_influence for the sizes")
    influence = token_influence(hidden_states, lm_head_weight, response_ids, response_mask, positive, **options)
    return _signed(advantages, influence)


@torch.no_grad()
def token_self_influence(
    hidden_states: torch.Tensor, lm_head_weight: torch.Tensor, response_ids: torch.Tensor,
    response_mask: torch.Tensor, *, temperature: float = 1.0, chunk_size: int = DEFAULT_CHUNK,
) -> torch.Tensor:
    """Self-term ``||g||^2 ||h||^2 / tau^2`` of every token alone, ``[B, T]`` (no cross-token sum).

    The diagonal of the influence sum: ``||g||^2 = 1 - 2 pi[y] + ||pi||^2`` is entropy-like (large
    when the model is unsure). Used as the control that isolates THR's cross-token part.
    """
    mask, _ = _validate_group(hidden_states, lm_head_weight, response_ids, response_mask, None, temperature)
    dtype = _compute_dtype(hidden_states, lm_head_weight)
    bi, ti = mask.nonzero(as_tuple=True)
    H, Y = hidden_states[bi, ti].to(dtype), response_ids[bi, ti].long()
    probs = head_probs(H, lm_head_weight.to(dtype), temperature)
    vals = torch.empty(H.shape[0], dtype=dtype, device=H.device)
    buf = None
    for a in range(0, H.shape[0], chunk_size):
        b = min(a + chunk_size, H.shape[0])
        p = buf = probs(a, b, buf)
        g_sq = 1 - 2 * p.gather(1, Y[a:b, None]).squeeze(1) + (p * p).sum(-1)
        vals[a:b] = g_sq * (H[a:b] * H[a:b]).sum(-1)
    out = torch.zeros(mask.shape, dtype=dtype, device=hidden_states.device)
    out[bi, ti] = vals / (temperature * temperature)
    return out
