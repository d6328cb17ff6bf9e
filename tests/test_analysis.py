"""THR diagnostics: the numbers behind every figure on constructed cases, and ``thr analyze`` end to end."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch

from thr.analysis import stats
from thr.analysis.analyze import summarize
from thr.analysis.heatmap import NEG_RGB, POS_RGB, group_html, pick_groups, token_color
from thr.analysis.tokens import token_statistics

torch.set_num_threads(1)


# ----------------------------------------------------------------------------- constructed tensors
def _reference_influence(hidden, W, ids, mask, correct, temperature):
    """``s_{j,k} = <d ln pi(y_jk)/dW, sum_{i in P, k'} d ln pi(y_ik')/dW>`` by autograd, token by token."""
    G, T, _ = hidden.shape
    grads = {}
    for j in range(G):
        for k in range(T):
            if mask[j, k]:
                Wv = W.clone().requires_grad_(True)
                torch.log_softmax(Wv @ hidden[j, k] / temperature, -1)[ids[j, k]].backward()
                grads[j, k] = Wv.grad
    pos = sum(g for (j, _), g in grads.items() if correct[j])
    out = torch.zeros(G, T, dtype=W.dtype)
    for (j, k), g in grads.items():
        out[j, k] = (g * pos).sum()
    return out


def _hand_built_group():
    """One group of 4 responses (2 correct), 5 tokens each; token 2 of every response has h = 0.

    h = 0 gives the uniform distribution: the largest possible entropy ln V, probability 1/V, and
    zero influence, self-term and THR. So in every response the top-1 entropy token is position 2
    while the top-1 |THR| token is elsewhere: the top-20% overlap (k = 1) is exactly 0.
    """
    gen = torch.Generator().manual_seed(0)
    G, T, d, V = 4, 5, 6, 7
    hidden = torch.randn(G, T, d, generator=gen, dtype=torch.float64) * 2
    hidden[:, 2] = 0.0
    W = torch.randn(V, d, generator=gen, dtype=torch.float64)
    ids = torch.randint(0, V, (G, T), generator=gen)
    mask = torch.ones(G, T, dtype=torch.bool)
    correct = torch.tensor([True, False, True, False])
    rewards = correct.double()
    adv = (rewards - rewards.mean()) / (rewards.std() + 1e-6)
    return hidden, W, ids, mask, correct, adv


def _records(out, correct, adv):
    responses = []
    for j in range(len(correct)):
        r = {"correct": bool(correct[j]), "advantage": float(adv[j]), "tokens": list("abcde")}
        r.update({k: out[k][j].tolist() for k in ("thr", "influence", "self", "entropy", "prob")})
        responses.append(r)
    return [{"step": 0, "group": 0, "problem": "p", "answer": "1", "tau": float(out["tau"][0]), "responses": responses}]


def test_token_statistics_match_definitions_on_hand_built_tensors():
    hidden, W, ids, mask, correct, adv = _hand_built_group()
    tau_t = 0.7
    out = token_statistics(hidden, W, ids, mask, correct, adv, group_size=4, temperature=tau_t)
    ref = _reference_influence(hidden, W, ids, mask, correct, tau_t)
    torch.testing.assert_close(out["influence"], ref, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(out["thr"], adv[:, None] * ref, rtol=1e-9, atol=1e-9)
    probs = torch.softmax(hidden @ W.T / tau_t, -1)
    p_y = probs.gather(-1, ids[..., None]).squeeze(-1)
    g_sq = 1 - 2 * p_y + (probs**2).sum(-1)
    torch.testing.assert_close(out["self"], g_sq * (hidden**2).sum(-1) / tau_t**2)
    torch.testing.assert_close(out["prob"], p_y)
    torch.testing.assert_close(out["entropy"], -(probs * probs.log()).sum(-1))
    # the h = 0 column: uniform distribution, maximal entropy, no influence at all
    assert torch.allclose(out["entropy"][:, 2], torch.full((4,), math.log(7), dtype=torch.float64))
    assert torch.all(out["entropy"][:, 2] > out["entropy"][:, [0, 1, 3, 4]].max(1).values)
    assert torch.all(out["influence"][:, 2] == 0) and torch.all(out["self"][:, 2] == 0)
    mean_pos = ref[correct].mean(1)
    assert float(out["tau"][0]) == pytest.approx(float(mean_pos.min()))


def test_overlap_and_dominance_numbers_from_hand_built_tensors():
    hidden, W, ids, mask, correct, adv = _hand_built_group()
    out = token_statistics(hidden, W, ids, mask, correct, adv, group_size=4)
    records = _records(out, correct, adv)
    ov = stats.overlap_distribution(records, q=0.2)
    assert ov["all"]["responses"] == 4
    assert ov["all"]["overlap"] == [0.0] * 4  # top-1 entropy token (h = 0) never has the top |THR|
    assert ov["all"]["chance_mean"] == pytest.approx(0.2)
    assert ov["all"]["hist_counts"][0] == 4
    dens = stats.thr_density(records)
    tau = float(out["tau"][0])
    dominant = out["influence"].abs() > tau
    assert dens["correct"]["frac_dominant"] == pytest.approx(float(dominant[correct].double().mean()))
    assert dens["incorrect"]["frac_dominant"] == pytest.approx(float(dominant[~correct].double().mean()))
    assert dens["frac_dominant"] == pytest.approx(float(dominant.double().mean()))
    thr_c = out["thr"][correct]
    assert dens["correct"]["frac_positive"] == pytest.approx(float((thr_c > 0).double().mean()))
    assert sum(dens["correct_share"]) == pytest.approx(1.0) and sum(dens["incorrect_share"]) == pytest.approx(1.0)


# ----------------------------------------------------------------------------- constructed records
def _resp(correct, thr, influence, entropy=None, self_term=None):
    n = len(thr)
    r = {"correct": correct, "advantage": 1.0 if correct else -1.0, "reward": float(correct), "tokens": [f"t{i}" for i in range(n)],
         "thr": thr, "influence": influence, "entropy": entropy or [0.5] * n, "prob": [0.5] * n}
    if self_term is not None:
        r["self"] = self_term
    return r


def test_density_numbers_on_a_known_case():
    mixed = {"tau": 2.5, "responses": [
        _resp(True, [1.0, 2.0, 3.0, -1.0], [1.0, 2.0, 3.0, -1.0]),
        _resp(False, [-4.0, -5.0, 0.5], [4.0, 5.0, -0.5]),
    ]}
    uniform_ok = {"responses": [_resp(True, [0.0, 0.0], [9.0, 9.0]), _resp(True, [0.0], [9.0])]}
    uniform_bad = {"responses": [_resp(False, [0.0], [0.0]), _resp(False, [0.0], [0.0])]}
    d = stats.thr_density([mixed, uniform_ok, uniform_bad], bins=8)
    assert d["groups"] == {"mixed": 1, "all_correct": 1, "all_incorrect": 1}
    assert d["correct"]["tokens"] == 4 and d["incorrect"]["tokens"] == 3  # uniform groups left out
    assert d["correct"]["frac_positive"] == pytest.approx(0.75) and d["incorrect"]["frac_positive"] == pytest.approx(1 / 3)
    assert d["correct"]["mean"] == pytest.approx(1.25) and d["incorrect"]["median"] == pytest.approx(-4.0)
    # dominant: |s| > 2.5 -> the 3.0 token of the correct response, 4 and 5 of the incorrect one
    assert d["correct"]["frac_dominant"] == pytest.approx(0.25) and d["incorrect"]["frac_dominant"] == pytest.approx(2 / 3)
    assert d["frac_dominant"] == pytest.approx(3 / 7)
    assert d["correct"]["dominant_positive_share"] == 1.0 and d["incorrect"]["dominant_positive_share"] == 0.0
    # symlog bins: linthresh = median nonzero |THR| = 2, outer edges = +-max |THR| = +-5
    assert d["linthresh"] == pytest.approx(2.0)
    edges = np.asarray(d["bin_edges"])
    assert edges[0] == pytest.approx(-5.0) and edges[-1] == pytest.approx(5.0) and len(edges) == 9
    u = np.sign(edges) * np.log10(1 + np.abs(edges) / 2.0)
    assert np.allclose(np.diff(u), np.diff(u)[0])  # evenly spaced in the symlog coordinate
    share_i = np.asarray(d["incorrect_share"])
    # bin width in u is log10(1 + 5/2) / 4 = 0.136: -5 and -4 (u = -0.477) in bin 0, 0.5 (u = 0.097) in bin 4
    assert share_i[0] == pytest.approx(2 / 3) and share_i[4] == pytest.approx(1 / 3)
    assert share_i.sum() == pytest.approx(1.0)
    assert len(d["bin_centers"]) == 8 and all(a < c < b for a, c, b in zip(edges[:-1], d["bin_centers"], edges[1:]))


def test_group_tau_falls_back_to_the_nthr_rule():
    g = {"responses": [_resp(True, [1, 1], [2.0, 4.0]), _resp(True, [1], [1.0]), _resp(False, [1], [-9.0])]}
    assert stats.group_tau(g) == pytest.approx(1.0)  # min(mean(2, 4), mean(1))
    assert stats.group_tau(g, beta=0.5) == pytest.approx(0.5)
    assert stats.group_tau({"responses": [_resp(False, [0], [0])]}) == math.inf


def test_response_overlap_definition():
    thr = [5.0, -4.0, 0.1, 0.2, 0.3]
    ent = [0.1, 3.0, 2.0, 0.0, 0.0]
    r = stats.response_overlap(thr, ent, q=0.4)  # k = 2: {0, 1} by |THR|, {1, 2} by entropy
    assert (r["k"], r["n"]) == (2, 5)
    assert r["overlap"] == pytest.approx(0.5) and r["jaccard"] == pytest.approx(1 / 3) and r["chance"] == pytest.approx(0.4)
    same = stats.response_overlap([1, 9, 3, 7, 5, 0, 0, 0, 0, 0], [0.1, 0.9, 0.3, 0.7, 0.5, 0, 0, 0, 0, 0], q=0.2)
    assert same["overlap"] == 1.0 and same["jaccard"] == 1.0
    assert stats.top_k_set(np.array([1.0, 1.0, 1.0]), 2) == {0, 1}  # ties: earlier positions
    with pytest.raises(ValueError):
        stats.response_overlap([1.0], [1.0, 2.0])


def test_overlap_distribution_filters_and_histogram():
    hi = _resp(True, [9, 1, 1, 1, 1], [9, 1, 1, 1, 1], entropy=[5, 0, 0, 0, 0])  # overlap 1
    lo = _resp(False, [9, 1, 1, 1, 1], [9, 1, 1, 1, 1], entropy=[0, 5, 0, 0, 0])  # overlap 0
    short = _resp(False, [1, 2], [1, 2], entropy=[1, 2])  # fewer than min_tokens
    uniform = {"responses": [_resp(True, [0] * 6, [1] * 6), _resp(True, [0] * 6, [1] * 6)]}
    o = stats.overlap_distribution([{"responses": [hi, lo, short]}, uniform], q=0.2, min_tokens=5)
    assert o["correct"]["overlap"] == [1.0] and o["incorrect"]["overlap"] == [0.0]
    assert o["all"]["responses"] == 2 and o["all"]["mean"] == pytest.approx(0.5)
    assert o["all"]["hist_counts"] == [1] + [0] * 8 + [1]
    assert o["all"]["chance_mean"] == pytest.approx(0.2)
    assert "ceil" in o["definition"]


def test_rank_correlations_and_cross_token_share():
    assert stats.rankdata(np.array([10.0, 20.0, 20.0, 5.0])).tolist() == [2.0, 3.5, 3.5, 1.0]
    assert stats.spearman(np.array([1, 2, 3, 4.0]), np.array([1, 4, 9, 16.0])) == pytest.approx(1.0)
    assert stats.pearson(np.array([1, 1, 1.0]), np.array([1, 2, 3.0])) is None
    # correct tokens: s = self (no cross part) in one group, s = self + 3 * self in another
    g1 = {"responses": [_resp(True, [1.0, 2.0, 3.0], [1.0, 2.0, 3.0], self_term=[1.0, 2.0, 3.0]),
                        _resp(False, [-1.0, -2.0, -4.0], [1.0, 2.0, 4.0], self_term=[3.0, 2.0, 1.0])]}
    c = stats.self_term_correlations([g1])
    assert c["available"] and c["cross_share_correct"] == pytest.approx(0.0)
    assert c["self_vs_influence_correct"]["spearman"] == pytest.approx(1.0)
    assert c["self_vs_influence_incorrect"]["spearman"] == pytest.approx(-1.0)
    assert c["self_vs_abs_thr"]["tokens"] == 6 and len(c["scatter"]["self"]) == 6
    g2 = {"responses": [_resp(True, [4.0, 8.0], [4.0, 8.0], self_term=[1.0, 2.0]), _resp(False, [1.0], [1.0], self_term=[1.0])]}
    assert stats.self_term_correlations([g2])["cross_share_correct"] == pytest.approx(0.75)  # |4-1|+|8-2| over 3+9
    assert not stats.self_term_correlations([{"responses": [_resp(True, [1], [1]), _resp(False, [1], [1])]}])["available"]


# ----------------------------------------------------------------------------- heat map
def test_heatmap_colors_and_markup():
    assert token_color(2.0, 2.0) == POS_RGB and token_color(-5.0, 2.0) == NEG_RGB and token_color(0.0, 2.0) == (255, 255, 255)
    half = token_color(-1.0, 2.0)
    assert half == tuple(round(255 + (c - 255) * 0.5) for c in NEG_RGB)
    ok = _resp(True, [1.0, 2.0, -0.5], [1.0, 3.0, -0.5], self_term=[1.0, 1.0, 1.0])
    ok["tokens"] = ["<script>", "a b", "\n"]
    bad = _resp(False, [-2.0, 0.0], [2.0, 0.0])
    html = group_html({"step": 3, "group": 1, "problem": "1+1 <b>", "answer": "2", "tau": 1.5, "responses": [ok, bad]})
    spans = re.findall(r'<span class="(tok(?: dom)?)" style="[^"]*" ([^>]*)>', html)
    assert len(spans) == 5
    assert [cls for cls, _ in spans].count("tok dom") == 2  # |s| > 1.5: 3.0 and 2.0
    assert 'data-thr="-0.5"' in html and 'data-s="3"' in html and 'data-self="1"' in html and 'data-h="0.5"' in html
    assert "<script>" not in html and "&lt;script&gt;" in html and "1+1 &lt;b&gt;" in html
    assert html.count("badge ok") == 1 and html.count("badge bad") == 1
    assert 'class="resp correct"' in html and 'class="resp incorrect"' in html


# ----------------------------------------------------------------------------- thr analyze, end to end
def test_analyze_cli_writes_consistent_outputs(tiny_policy_dir, tmp_path, capsys):
    from thr.analysis.analyze import cli_main

    out = tmp_path / "an"
    rc = cli_main([f"--model={tiny_policy_dir}", "--data", "arith", "--group-size", "6", "--num-prompts", "16",
                   "--max-new-tokens", "24", f"--output-dir={out}", "--progress=false", "--heatmap-groups=2"])
    assert rc == 0 and "dominant tokens" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    records = [json.loads(line) for line in (out / "groups.jsonl").read_text().splitlines()]
    assert len(records) == 16 and all(len(g["responses"]) == 6 for g in records)
    assert summary["groups"]["mixed"] >= 1, "precondition: the tiny policy must give mixed groups"
    for g in records:
        for r in g["responses"]:
            n = len(r["tokens"])
            assert all(len(r[k]) == n for k in ("thr", "influence", "self", "entropy", "prob"))
            assert np.allclose(r["thr"], np.asarray(r["influence"]) * r["advantage"], rtol=1e-4, atol=1e-6)
            assert all(0 <= p <= 1 for p in r["prob"]) and all(h >= 0 for h in r["entropy"])
    again = json.loads(json.dumps(summarize(records, q=0.2, min_tokens=5)))
    for key in ("groups", "density", "overlap", "tokens", "accuracy"):
        assert summary[key] == again[key]
    assert summary["self_term"]["available"]
    for name in ("thr_density.png", "overlap.png", "self_vs_thr.png", "heatmap.html"):
        assert (out / name).stat().st_size > 1000
    html = (out / "heatmap.html").read_text()
    assert html.count('class="group"') == 2
    shown = pick_groups(records, 2)
    assert stats.is_mixed(shown[0])
    assert html.count('<span class="tok') == sum(len(r["tokens"]) for g in shown for r in g["responses"])
