"""Exact token influence ``s`` and Token Hidden Reward ``THR = A_j * s`` (spec sections 2 and 6).

For one group of G responses with last-layer states ``h_{j,k}`` (the input of the LM head that
predicts token ``y_{j,k}``), unembedding ``W [V, d]`` and temperature ``tau``::

    pi_{j,k} = softmax(W h_{j,k} / tau),   g_{j,k} = onehot(y_{j,k}) - pi_{j,k}
    s_{j,k}  = <d ln pi(y_{j,k}) / dW, sum_{i in P} d ln pi(y_i) / dW>
             = tau^-2 * sum_{i in P} sum_k' <g_{i,k'}, g_{j,k}> <h_{i,k'}, h_{j,k}>

Two exact algorithms, neither of which builds ``[G, T, V]``:

- M-form: ``M = sum_{i in P, k'} g h^T`` (``[V, d]``), then ``s = g^T M h``. About
  ``2 V d (N + N+)`` multiply-adds for N valid tokens, N+ of them in positive responses.
- pair-form: ``<g, g'> = [y = y'] - pi'[y] - pi[y'] + <pi, pi'>`` against the stored
  positive probabilities ``[N+, V]``. About ``V d (N + N+) + N N+ (V + d)``; cheaper when the
  token counts are below ``d``, and only used while ``N+ * V`` fits ``max_pair_elements``.

Both stream over ``chunk_size`` tokens at a time, recomputing probabilities from ``h`` and
``W``: peak extra memory is ``O(V d + chunk_size V)``. Computation is in float64 for float64
inputs and in float32 otherwise (bf16/fp16 inputs are upcast; results are float32).
"""

from __future__ import annotations

from typing import Literal

import torch

from ._checks import check_finite, check_float, check_mask, check_temperature, check_tensor
from .advantages import resolve_group_ids

Method = Literal["auto", "mform", "pair"]
DEFAULT_CHUNK = 1024


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _validate_group(
    hidden_states: torch.Tensor,
    lm_head_weight: torch.Tensor,
    response_ids: torch.Tensor,
    response_mask: torch.Tensor,
    positive: torch.Tensor | None,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Check shapes, dtypes, finiteness and id range; return (bool mask, bool positive)."""
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
    check_finite("lm_head_weight", lm_head_weight)
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


def _probs(h: torch.Tensor, W: torch.Tensor, temperature: float) -> torch.Tensor:
    """``softmax(h W^T / temperature)`` for a chunk ``h [c, d]`` -> ``[c, V]``."""
    return torch.softmax((h @ W.T) / temperature, dim=-1)


def _positive_gradient(H_pos: torch.Tensor, Y_pos: torch.Tensor, W: torch.Tensor, temperature: float, chunk: int) -> torch.Tensor:
    """``M = sum_{positive tokens} (onehot(y) - pi) h^T`` ``[V, d]``."""
    M = torch.zeros_like(W)
    for a in range(0, H_pos.shape[0], chunk):
        h, y = H_pos[a : a + chunk], Y_pos[a : a + chunk]
        M.index_add_(0, y, h)
        M.sub_(_probs(h, W, temperature).T @ h)
    return M


def _influence_mform(H, Y, H_pos, Y_pos, W, temperature, chunk):
    M = _positive_gradient(H_pos, Y_pos, W, temperature, chunk)
    out = torch.empty(H.shape[0], dtype=H.dtype, device=H.device)
    for a in range(0, H.shape[0], chunk):
        h, y = H[a : a + chunk], Y[a : a + chunk]
        Mh = h @ M.T  # [c, V]
        p = _probs(h, W, temperature)
        out[a : a + chunk] = Mh.gather(1, y[:, None]).squeeze(1) - (p * Mh).sum(-1)
    return out


def _influence_pair(H, Y, H_pos, Y_pos, W, temperature, chunk):
    P_pos = torch.cat([_probs(H_pos[a : a + chunk], W, temperature) for a in range(0, H_pos.shape[0], chunk)])
    out = torch.empty(H.shape[0], dtype=H.dtype, device=H.device)
    for a in range(0, H.shape[0], chunk):
        h, y = H[a : a + chunk], Y[a : a + chunk]
        p = _probs(h, W, temperature)
        gg = (y[:, None] == Y_pos[None, :]).to(H.dtype)
        gg -= P_pos.index_select(1, y).T  # pi'[y]
        gg -= p.index_select(1, Y_pos)  # pi[y']
        gg += p @ P_pos.T  # <pi, pi'>
        out[a : a + chunk] = (gg * (h @ H_pos.T)).sum(-1)
    return out


def choose_method(num_tokens: int, num_positive: int, V: int, d: int, chunk_size: int, max_pair_elements: int | None = None) -> str:
    """``"pair"`` when its multiply-add count is lower and ``[N+, V]`` fits the budget, else ``"mform"``."""
    budget = max_pair_elements if max_pair_elements is not None else chunk_size * V
    cost_m = 2 * V * d * (num_tokens + num_positive)
    cost_pair = V * d * (num_tokens + num_positive) + num_tokens * num_positive * (V + d)
    return "pair" if cost_pair < cost_m and num_positive * V <= budget else "mform"


def _influence_valid(
    hidden_states, lm_head_weight, response_ids, mask, pos, temperature, chunk_size, method, max_pair_elements
) -> torch.Tensor:
    """Influence of every valid token of one validated group, ``[G, T]`` (zeros at padding)."""
    dtype = _compute_dtype(hidden_states, lm_head_weight)
    G, T, _ = hidden_states.shape
    out = torch.zeros(G, T, dtype=dtype, device=hidden_states.device)
    pos_tok = mask & pos[:, None]
    if not bool(pos_tok.any()):
        return out
    W = lm_head_weight.to(dtype)
    H, Y = hidden_states[mask].to(dtype), response_ids[mask].long()
    H_pos, Y_pos = hidden_states[pos_tok].to(dtype), response_ids[pos_tok].long()
    if method == "auto":
        method = choose_method(H.shape[0], H_pos.shape[0], W.shape[0], W.shape[1], chunk_size, max_pair_elements)
    if method == "mform":
        s = _influence_mform(H, Y, H_pos, Y_pos, W, temperature, chunk_size)
    elif method == "pair":
        s = _influence_pair(H, Y, H_pos, Y_pos, W, temperature, chunk_size)
    else:
        raise ValueError(f"method must be 'auto', 'mform' or 'pair', got {method!r}")
    out[mask] = s / (temperature * temperature)
    return out


@torch.no_grad()
def token_influence(
    hidden_states: torch.Tensor,
    lm_head_weight: torch.Tensor,
    response_ids: torch.Tensor,
    response_mask: torch.Tensor,
    positive: torch.Tensor,
    *,
    temperature: float = 1.0,
    chunk_size: int = DEFAULT_CHUNK,
    method: Method = "auto",
    max_pair_elements: int | None = None,
) -> torch.Tensor:
    """Influence ``s`` of every token of one group on the group's positive responses.

    Args:
        hidden_states: ``[G, T, d]`` last-layer states (after the final norm) that predict each
            response token, i.e. the LM-head inputs at positions ``prompt_len - 1 + k``.
        lm_head_weight: ``[V, d]`` unembedding matrix.
        response_ids: ``[G, T]`` response token ids (any value at padding).
        response_mask: ``[G, T]`` 1 for real response tokens, 0 for padding.
        positive: ``[G]`` bool, the responses counted as correct (the set P).
        temperature: the policy temperature (logits are divided by it).
        chunk_size: tokens per streamed chunk; peak extra memory ``O(V d + chunk_size V)``.
        method: ``"mform"``, ``"pair"`` or ``"auto"`` (the cheaper exact one; see module doc).
        max_pair_elements: memory budget (elements) of the pair-form's ``[N+, V]`` buffer.

    Returns:
        ``[G, T]`` influence, zero at padding and everywhere when no response is positive.
    """
    mask, pos = _validate_group(hidden_states, lm_head_weight, response_ids, response_mask, positive, temperature)
    if not (isinstance(chunk_size, int) and chunk_size > 0):
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    return _influence_valid(
        hidden_states, lm_head_weight, response_ids, mask, pos, temperature, chunk_size, method, max_pair_elements
    )


def _signed(advantages: torch.Tensor, influence: torch.Tensor, name: str = "advantages") -> torch.Tensor:
    check_tensor(name, advantages, ndim=1)
    check_float(name, advantages)
    if advantages.shape[0] != influence.shape[0]:
        raise ValueError(f"{name} has shape {tuple(advantages.shape)}, expected ({influence.shape[0]},)")
    return advantages.to(influence.dtype)[:, None] * influence


def token_hidden_reward(
    hidden_states: torch.Tensor,
    lm_head_weight: torch.Tensor,
    response_ids: torch.Tensor,
    response_mask: torch.Tensor,
    advantages: torch.Tensor,
    positive: torch.Tensor,
    *,
    temperature: float = 1.0,
    chunk_size: int = DEFAULT_CHUNK,
    method: Method = "auto",
    max_pair_elements: int | None = None,
) -> torch.Tensor:
    """THR ``[G, T]`` of one group: ``advantages[j] * s[j, k]`` (``advantages`` is ``[G]``).

    Arguments as in :func:`token_influence`.
    """
    influence = token_influence(
        hidden_states, lm_head_weight, response_ids, response_mask, positive,
        temperature=temperature, chunk_size=chunk_size, method=method, max_pair_elements=max_pair_elements,
    )
    return _signed(advantages, influence)


@torch.no_grad()
def token_influence_batched(
    hidden_states: torch.Tensor,
    lm_head_weight: torch.Tensor,
    response_ids: torch.Tensor,
    response_mask: torch.Tensor,
    positive: torch.Tensor,
    *,
    group_size: int | None = None,
    group_ids: torch.Tensor | None = None,
    temperature: float = 1.0,
    chunk_size: int = DEFAULT_CHUNK,
    method: Method = "auto",
    max_pair_elements: int | None = None,
) -> torch.Tensor:
    """Influence ``[B, T]`` for many groups at once (each token scored against its own group).

    ``hidden_states [B, T, d]``, ``response_ids``/``response_mask [B, T]``, ``positive [B]``;
    groups by ``group_size`` (contiguous) or ``group_ids [B]``. Groups with no positive response
    or no valid token get zeros.
    """
    mask, pos = _validate_group(hidden_states, lm_head_weight, response_ids, response_mask, positive, temperature)
    gid = resolve_group_ids(hidden_states.shape[0], group_size=group_size, group_ids=group_ids, device=hidden_states.device)
    out = torch.zeros(mask.shape, dtype=_compute_dtype(hidden_states, lm_head_weight), device=hidden_states.device)
    for g in range(int(gid.max()) + 1):
        rows = (gid == g).nonzero().squeeze(1)
        if not bool(mask[rows].any()):
            continue
        out[rows] = _influence_valid(
            hidden_states[rows], lm_head_weight, response_ids[rows], mask[rows], pos[rows],
            temperature, chunk_size, method, max_pair_elements,
        )
    return out


def token_hidden_reward_batched(
    hidden_states: torch.Tensor,
    lm_head_weight: torch.Tensor,
    response_ids: torch.Tensor,
    response_mask: torch.Tensor,
    advantages: torch.Tensor,
    positive: torch.Tensor,
    **kwargs,
) -> torch.Tensor:
    """THR ``[B, T]`` for many groups: ``advantages [B]`` times :func:`token_influence_batched`."""
    influence = token_influence_batched(hidden_states, lm_head_weight, response_ids, response_mask, positive, **kwargs)
    return _signed(advantages, influence)


@torch.no_grad()
def token_self_influence(
    hidden_states: torch.Tensor,
    lm_head_weight: torch.Tensor,
    response_ids: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    temperature: float = 1.0,
    chunk_size: int = DEFAULT_CHUNK,
) -> torch.Tensor:
    """Self-term ``||g||^2 ||h||^2 / tau^2`` of every token alone, ``[B, T]`` (no cross-token sum).

    The diagonal of the influence sum: ``||g||^2 = 1 - 2 pi[y] + ||pi||^2`` is entropy-like (large
    when the model is unsure). Used as the control that isolates THR's cross-token part.
    """
    mask, _ = _validate_group(hidden_states, lm_head_weight, response_ids, response_mask, None, temperature)
    dtype = _compute_dtype(hidden_states, lm_head_weight)
    W = lm_head_weight.to(dtype)
    H, Y = hidden_states[mask].to(dtype), response_ids[mask].long()
    vals = torch.empty(H.shape[0], dtype=dtype, device=H.device)
    for a in range(0, H.shape[0], chunk_size):
        h, y = H[a : a + chunk_size], Y[a : a + chunk_size]
        p = _probs(h, W, temperature)
        g_sq = 1 - 2 * p.gather(1, y[:, None]).squeeze(1) + (p * p).sum(-1)
        vals[a : a + chunk_size] = g_sq * (h * h).sum(-1)
    out = torch.zeros(mask.shape, dtype=dtype, device=hidden_states.device)
    out[mask] = vals / (temperature * temperature)
    return out
