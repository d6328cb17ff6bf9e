"""The numbers behind the THR diagnostics, computed from per-token group records.

A *group record* is the layout of the trainer's ``groups.jsonl`` (and of ``thr analyze``'s
``groups.jsonl``)::

    {"step"?, "group", "problem", "answer", "tau"?,
     "responses": [{"correct", "advantage", "tokens": [str], "thr": [...], "influence": [...],
                    "entropy": [...], "prob": [...], "self"?: [...]}]}

Only *mixed* groups (at least one correct and one incorrect response) carry information: a group
whose rewards are all equal has zero advantages, so zero THR everywhere. Every statistic here is
computed on the mixed groups; the counts of the other kinds are reported beside it.

Definitions (stated again in ``docs/diagnostics.md``):

- dominant token: ``|influence| > tau`` of its group (NTHR: ``tau = beta * min_{i in P} mean_k s``);
- top-q overlap of one response with ``n`` tokens: ``k = ceil(q n)``; ``A`` the ``k`` tokens with
  the largest ``|THR|``, ``B`` the ``k`` with the largest entropy (ties by position);
  ``overlap = |A & B| / k`` and ``jaccard = |A & B| / |A | B|``. Two independent random choices
  give ``E[overlap] = k / n`` (the *chance* level reported beside it).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

DENSITY_BINS = 40
OVERLAP_BINS = 10


def is_mixed(group: dict[str, Any]) -> bool:
    flags = [bool(r["correct"]) for r in group["responses"]]
    return any(flags) and not all(flags)


def group_kinds(groups: list[dict[str, Any]]) -> dict[str, int]:
    """How many groups are mixed, all correct or all incorrect."""
    kinds = {"mixed": 0, "all_correct": 0, "all_incorrect": 0}
    for g in groups:
        flags = [bool(r["correct"]) for r in g["responses"]]
        key = "mixed" if any(flags) and not all(flags) else ("all_correct" if all(flags) else "all_incorrect")
        kinds[key] += 1
    return kinds


def group_tau(group: dict[str, Any], beta: float = 1.0) -> float:
    """The group's NTHR threshold: the logged ``tau`` if present, else ``beta * min_{i in P} mean_k s``."""
    if group.get("tau") is not None:
        return float(group["tau"])
    means = [float(np.mean(r["influence"])) for r in group["responses"] if r["correct"] and len(r["influence"])]
    return beta * min(means) if means else math.inf


def _tokens(groups: Iterable[dict[str, Any]], key: str, correct: bool | None) -> np.ndarray:
    vals = [v for g in groups for r in g["responses"] if correct is None or bool(r["correct"]) == correct for v in r[key]]
    return np.asarray(vals, dtype=np.float64)


def _dominant(groups: Iterable[dict[str, Any]], correct: bool) -> tuple[np.ndarray, np.ndarray]:
    """(dominant flags, THR) of every token of the responses of one correctness."""
    flags, thr = [], []
    for g in groups:
        tau = group_tau(g)
        for r in g["responses"]:
            if bool(r["correct"]) == correct:
                flags.extend(abs(float(s)) > tau for s in r["influence"])
                thr.extend(float(t) for t in r["thr"])
    return np.asarray(flags, dtype=bool), np.asarray(thr, dtype=np.float64)


def _class_stats(thr: np.ndarray, dominant: np.ndarray) -> dict[str, Any]:
    n = int(thr.size)
    nd = int(dominant.sum())
    safe = max(n, 1)
    return {
        "tokens": n,
        "mean": float(thr.mean()) if n else 0.0,
        "median": float(np.median(thr)) if n else 0.0,
        "frac_positive": float((thr > 0).sum() / safe),
        "frac_negative": float((thr < 0).sum() / safe),
        "frac_dominant": float(nd / safe),
        "dominant_positive_share": float(((thr > 0) & dominant).sum() / max(nd, 1)),
    }


def symlog_edges(values: np.ndarray, bins: int, linthresh: float) -> np.ndarray:
    """``bins + 1`` edges symmetric around 0, evenly spaced in ``u = sign(x) log10(1 + |x| / c)``."""
    u_max = float(np.log10(1.0 + np.abs(values).max() / linthresh)) if values.size else 1.0
    u = np.linspace(-u_max, u_max, bins + 1) if u_max > 0 else np.linspace(-1.0, 1.0, bins + 1)
    return np.sign(u) * linthresh * (10.0 ** np.abs(u) - 1.0)


def thr_density(groups: list[dict[str, Any]], bins: int = DENSITY_BINS) -> dict[str, Any]:
    """Distribution of THR for tokens of correct and incorrect responses (mixed groups only).

    THR is heavy-tailed, so both classes share ``bins`` bins evenly spaced on a symmetric log
    scale (``linthresh`` = the median nonzero ``|THR|``; the outer edges are the largest ``|THR|``).
    ``*_share`` is the fraction of the class's tokens in each bin (it sums to 1): a density with
    respect to that log scale. Dominance uses each group's NTHR ``tau``.
    """
    mixed = [g for g in groups if is_mixed(g)]
    dom_c, thr_c = _dominant(mixed, True)
    dom_i, thr_i = _dominant(mixed, False)
    both = np.concatenate([thr_c, thr_i])
    nonzero = np.abs(both[both != 0])
    linthresh = float(np.median(nonzero)) if nonzero.size else 1.0
    edges = symlog_edges(both, bins, linthresh)

    def share(vals: np.ndarray) -> list[float]:
        counts, _ = np.histogram(np.clip(vals, edges[0], edges[-1]), bins=edges)
        return (counts / max(vals.size, 1)).tolist()

    u = np.sign(edges) * np.log10(1.0 + np.abs(edges) / linthresh)
    mid = (u[:-1] + u[1:]) / 2
    centers = np.sign(mid) * linthresh * (10.0 ** np.abs(mid) - 1.0)
    all_dom = np.concatenate([dom_c, dom_i])
    return {
        "groups": group_kinds(groups),
        "bin_edges": edges.tolist(),
        "bin_centers": centers.tolist(),
        "linthresh": linthresh,
        "correct_share": share(thr_c),
        "incorrect_share": share(thr_i),
        "correct": _class_stats(thr_c, dom_c),
        "incorrect": _class_stats(thr_i, dom_i),
        "frac_dominant": float(all_dom.sum() / max(all_dom.size, 1)),
        "threshold": "nthr: |influence| > beta * min over correct responses of their mean influence",
    }


def top_k_set(values: np.ndarray, k: int) -> set[int]:
    """Positions of the ``k`` largest values (ties broken by earlier position)."""
    order = sorted(range(len(values)), key=lambda i: (-values[i], i))
    return set(order[:k])


def response_overlap(thr: Iterable[float], entropy: Iterable[float], q: float = 0.2) -> dict[str, float]:
    """Top-``q`` overlap of one response's high-``|THR|`` and high-entropy tokens (module doc)."""
    a_vals = np.abs(np.asarray(list(thr), dtype=np.float64))
    e_vals = np.asarray(list(entropy), dtype=np.float64)
    n = a_vals.size
    if n == 0 or e_vals.size != n:
        raise ValueError(f"thr and entropy must be non-empty and of equal length, got {n} and {e_vals.size}")
    k = max(1, math.ceil(q * n))
    a, b = top_k_set(a_vals, k), top_k_set(e_vals, k)
    inter = len(a & b)
    return {"overlap": inter / k, "jaccard": inter / len(a | b), "chance": k / n, "k": k, "n": n}


def overlap_distribution(
    groups: list[dict[str, Any]], q: float = 0.2, min_tokens: int = 5, bins: int = OVERLAP_BINS
) -> dict[str, Any]:
    """Per-response top-``q`` overlaps (mixed groups, responses with >= ``min_tokens`` tokens)."""
    rows = {True: [], False: []}
    for g in groups:
        if not is_mixed(g):
            continue
        for r in g["responses"]:
            if len(r["thr"]) >= min_tokens:
                rows[bool(r["correct"])].append(response_overlap(r["thr"], r["entropy"], q))
    edges = np.linspace(0.0, 1.0, bins + 1)

    def describe(items: list[dict[str, float]]) -> dict[str, Any]:
        ov = np.asarray([x["overlap"] for x in items], dtype=np.float64)
        jac = np.asarray([x["jaccard"] for x in items], dtype=np.float64)
        counts, _ = np.histogram(ov, bins=edges)
        return {
            "responses": len(items),
            "overlap": ov.tolist(),
            "hist_counts": counts.tolist(),
            "mean": float(ov.mean()) if ov.size else 0.0,
            "median": float(np.median(ov)) if ov.size else 0.0,
            "jaccard_mean": float(jac.mean()) if jac.size else 0.0,
            "chance_mean": float(np.mean([x["chance"] for x in items])) if items else 0.0,
        }

    both = rows[True] + rows[False]
    return {
        "q": q,
        "min_tokens": min_tokens,
        "definition": f"|top-{q:.0%} by |THR| & top-{q:.0%} by entropy| / k, k = ceil({q} * tokens); chance = k / tokens",
        "bin_edges": edges.tolist(),
        "all": describe(both),
        "correct": describe(rows[True]),
        "incorrect": describe(rows[False]),
    }


def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (as ``scipy.stats.rankdata``)."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(x.size, dtype=np.float64)
    sorted_x = x[order]
    i = 0
    while i < x.size:
        j = i
        while j + 1 < x.size and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    """Pearson correlation, or None when fewer than 3 points or a constant input."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.size < 3 or x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    return pearson(rankdata(x), rankdata(y)) if np.asarray(x).size >= 3 else None


def _pair(x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    return {"pearson": pearson(x, y), "spearman": spearman(x, y), "tokens": int(np.asarray(x).size)}


def self_term_correlations(groups: list[dict[str, Any]], max_points: int = 4000) -> dict[str, Any]:
    """How much of THR the entropy-like self-term ``||g||^2 ||h||^2`` explains (mixed groups).

    ``cross_share_correct``: for tokens of correct responses the influence is the self-term plus
    the cross-token sum; this is ``sum |s - self| / (sum |self| + sum |s - self|)``. Tokens of
    incorrect responses are not in P, so their influence is cross-token only. ``scatter`` holds up
    to ``max_points`` evenly spaced ``(self, THR, correct)`` points for the plot.
    """
    mixed = [g for g in groups if is_mixed(g) and all("self" in r for r in g["responses"])]
    if not mixed:
        return {"available": False, "reason": "no mixed group with a logged self-term"}
    out: dict[str, Any] = {"available": True}
    for name, flag in (("correct", True), ("incorrect", False)):
        self_t, infl = _tokens(mixed, "self", flag), _tokens(mixed, "influence", flag)
        out[f"self_vs_influence_{name}"] = _pair(self_t, infl)
    self_all, thr_all, ent_all = _tokens(mixed, "self", None), _tokens(mixed, "thr", None), _tokens(mixed, "entropy", None)
    out["self_vs_abs_thr"] = _pair(self_all, np.abs(thr_all))
    out["entropy_vs_abs_thr"] = _pair(ent_all, np.abs(thr_all))
    out["entropy_vs_self"] = _pair(ent_all, self_all)
    s_c, self_c = _tokens(mixed, "influence", True), _tokens(mixed, "self", True)
    cross = np.abs(s_c - self_c).sum()
    out["cross_share_correct"] = float(cross / max(np.abs(self_c).sum() + cross, 1e-30))
    flags = np.asarray([bool(r["correct"]) for g in mixed for r in g["responses"] for _ in r["thr"]])
    idx = np.linspace(0, self_all.size - 1, min(max_points, self_all.size)).astype(int) if self_all.size else []
    out["scatter"] = {"self": self_all[idx].tolist(), "thr": thr_all[idx].tolist(), "correct": flags[idx].tolist()}
    return out
