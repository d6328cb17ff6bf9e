"""The verl plugin's THR logic on CPU tensors (verl itself needs Ray and GPUs; see docs/integrations.md).

Covered: response states from verl's packed and padded layouts against per-sequence forwards;
the log-prob-like layout of the influence field; uid-based regrouping of shuffled rows split over
ranks; the split-group guard; group-preserving balancing; THR weights multiplied into verl-style
GRPO advantages; settings from the environment; the post-import patch mechanism. The
registration against verl's registries runs only where verl is importable.
"""

from __future__ import annotations

import sys

import pytest
import torch

from thr.core import steered_advantages, token_influence
from thr.integrations._groups import balance_groups, capture_backbone_states
from thr.integrations.verl import (
    THRSettings,
    settings_from_env,
    _PostImportPatcher,
    apply_thr,
    rank_influence,
    response_states,
    response_values,
    sequence_layout,
)
from thr.models.loading import capture_head_inputs
from thr.models.tiny import build_model, build_tokenizer


def test_response_states_match_per_sequence_forward():
    tok = build_tokenizer()
    model = build_model(tok, hidden_size=32, num_layers=1, num_heads=2).eval()
    gen = torch.Generator().manual_seed(0)
    lens, resp = [7, 5, 9], [3, 4, 2]
    seqs = [torch.randint(0, 256, (L,), generator=gen) for L in lens]
    expected, per_seq = [], []
    with torch.no_grad():
        for s, L, R in zip(seqs, lens, resp):
            with capture_head_inputs(model) as cap:  # the LM-head input of each position
                model(input_ids=s[None])
            per_seq.append(cap[-1][0])
            expected.append(cap[-1][0, L - R - 1 : L - 1])  # states predicting the response tokens
    packed = torch.cat(per_seq + [torch.zeros(2, 32)])[None]  # verl's packed layout plus a static pad
    for got, want in zip(response_states(packed, lens, resp, packed=True), expected):
        torch.testing.assert_close(got, want)
    ids = torch.zeros(3, max(lens), dtype=torch.long)
    attn = torch.zeros_like(ids)
    for i, s in enumerate(seqs):
        ids[i, : len(s)], attn[i, : len(s)] = s, 1
    with torch.no_grad(), capture_backbone_states(model) as cap:  # padded layout, backbone hook
        model(input_ids=ids, attention_mask=attn)
    for got, want in zip(response_states(cap[-1], lens, resp, packed=False), expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="non-empty prompt"):
        response_states(packed, [3], [3], packed=True)


def test_sequence_layout_is_the_inverse_of_verls_response_slice():
    lens, resp = [6, 4, 5], [2, 3, 1]
    vals = [torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0, 5.0]), torch.tensor([6.0])]
    flat = sequence_layout(vals, lens, resp)
    assert flat.shape == (15,)
    # sequence i ends at e_i = 6, 10, 15; its response values sit at [e_i - R_i - 1, e_i - 1)
    assert flat.nonzero().squeeze(1).tolist() == [3, 4, 6, 7, 8, 13]
    for got, want in zip(response_values(flat, lens, resp), vals):
        assert torch.equal(got, want)


def make_groups(num_groups=3, G=4, d=6, V=11, seed=0):
    gen = torch.Generator().manual_seed(seed)
    B = num_groups * G
    lens = torch.randint(2, 6, (B,), generator=gen)
    T = int(lens.max())
    states = torch.randn(B, T, d, generator=gen, dtype=torch.float64)
    ids = torch.randint(0, V, (B, T), generator=gen)
    mask = torch.arange(T)[None] < lens[:, None]
    W = torch.randn(V, d, generator=gen, dtype=torch.float64)
    rewards = torch.tensor([1.0, 0, 0, 1] * (num_groups - 1) + [1.0] * G)  # last group: all correct
    uids = [f"uid-{g}" for g in range(num_groups) for _ in range(G)]
    return states, ids, mask, W, rewards, uids, lens


def per_row(x, lens):
    return [x[i, : int(lens[i])] for i in range(x.shape[0])]


@pytest.mark.parametrize("positive_reward", [1.0, None])
def test_rank_influence_regroups_shuffled_rows_across_ranks(positive_reward):
    G = 4
    states, ids, mask, W, rewards, uids, lens = make_groups(G=G)
    positive = rewards >= 1.0
    if positive_reward is None:  # A_j > 0: the all-correct group has no positive response
        positive[-G:] = False
    want = per_row(token_influence(states, W, ids, mask, positive, group_size=G), lens)
    perm = torch.randperm(len(uids), generator=torch.Generator().manual_seed(3)).tolist()
    parts = balance_groups([float(lens[i]) for i in perm], [uids[i] for i in perm], num_ranks=3)
    seen = []
    for part in parts:  # each "rank" gets a shuffled subset of whole groups
        rows = [perm[i] for i in part]
        got = rank_influence(
            [states[r, : lens[r]] for r in rows], [ids[r, : lens[r]] for r in rows], [mask[r, : lens[r]] for r in rows],
            [uids[r] for r in rows], rewards[rows], W, group_size=G, positive_reward=positive_reward)
        for r, g in zip(rows, got):
            torch.testing.assert_close(g, want[r].float())
        seen += rows
    assert sorted(seen) == list(range(len(uids)))
    if positive_reward is None:
        assert all(float(want[r].abs().sum()) == 0 for r in range(len(uids) - G, len(uids)))


def test_rank_influence_refuses_a_split_group_with_mixed_rewards():
    states, ids, mask, W, rewards, uids, lens = make_groups(G=4)
    rows = [0, 1, 2, 8, 9, 10, 11]  # 3 of the 4 rows of group 0 (mixed), all of group 2
    args = ([states[r] for r in rows], [ids[r] for r in rows], [mask[r] for r in rows], [uids[r] for r in rows],
            rewards[rows], W)
    with pytest.raises(RuntimeError, match="split across data-parallel ranks"):
        rank_influence(*args, group_size=4)
    rows = [8, 9, 10, 0, 1, 2, 3]  # 3 of the uniform group 2: harmless (A = 0), scored as zero
    out = rank_influence([states[r] for r in rows], [ids[r] for r in rows], [mask[r] for r in rows],
                         [uids[r] for r in rows], rewards[rows], W, group_size=4)
    assert all(float(o.abs().sum()) == 0 for o in out[:3]) and any(float(o.abs().sum()) > 0 for o in out[3:])


def test_balance_groups_keeps_groups_whole_with_equal_sizes():
    G, n_groups, ranks = 4, 6, 2
    uids = [f"u{g}" for g in range(n_groups) for _ in range(G)] + ["pad"] * 4
    padding = [False] * (n_groups * G) + [True] * 4
    perm = torch.randperm(len(uids), generator=torch.Generator().manual_seed(1)).tolist()
    uids, padding = [uids[i] for i in perm], [padding[i] for i in perm]
    work = [float(1 + (i * 7) % 5) for i in range(len(uids))]
    parts = balance_groups(work, uids, ranks, padding)
    assert sorted(i for p in parts for i in p) == list(range(len(uids)))
    assert all(len(p) == len(uids) // ranks for p in parts)
    for p in parts:
        real = [uids[i] for i in p if not padding[i]]
        assert all(real.count(u) == G for u in set(real))  # every group on this rank is whole
    loads = [sum(work[i] for i in p if not padding[i]) for p in parts]
    assert max(loads) - min(loads) <= max(sum(work[i] for i in range(len(uids)) if uids[i] == u) for u in set(uids))
    with pytest.raises(ValueError, match="whole groups"):
        balance_groups([1.0] * 12, [f"u{i // 4}" for i in range(12)], 2)  # 3 groups of 4 on 2 ranks of 6


def test_apply_thr_multiplies_token_weights_into_grpo_advantages():
    G, p = 4, 0.5
    states, ids, mask, W, rewards, uids, lens = make_groups(G=G)
    gid = torch.arange(len(uids)) // G
    mean = torch.zeros(3).index_add_(0, gid, rewards) / G
    std = torch.stack([rewards[gid == g].std() for g in range(3)])
    seq_adv = torch.where(std[gid] > 0, (rewards - mean[gid]) / (std[gid] + 1e-6), torch.zeros_like(rewards))
    verl_adv = seq_adv[:, None] * mask  # verl's GRPO: A_j on every valid token
    infl = token_influence(states, W, ids, mask, seq_adv > 0, group_size=G).float()
    want, _ = steered_advantages(seq_adv, infl, mask, seq_adv > 0, group_size=G, mode="reweight", p=p)
    perm = torch.randperm(len(uids), generator=torch.Generator().manual_seed(5))
    got, metrics = apply_thr(verl_adv[perm], infl[perm], mask[perm].float(), rewards[perm], [uids[i] for i in perm],
                             THRSettings(mode="reweight", p=p))
    torch.testing.assert_close(got, want[perm].to(got.dtype))
    ratio = got[mask[perm] & (verl_adv[perm] != 0)] / verl_adv[perm][mask[perm] & (verl_adv[perm] != 0)]
    assert set(ratio.round(decimals=4).tolist()) <= {1.0, 1.0 + p, 1.0 - p} and (ratio != 1).any()
    assert 0 < metrics["thr/frac_dominant"] < 1
    same, _ = apply_thr(verl_adv, infl, mask.float(), rewards, uids, THRSettings(mode="off"))
    assert same is verl_adv


def test_settings_from_env():
    s = settings_from_env({"THR_MODE": "dominant", "THR_P": "-0.3", "THR_POSITIVE_REWARD": "1",
                              "THR_CHUNK_SIZE": "256", "THR_THRESHOLD": "quantile", "THR_QUANTILE": "0.1"})
    assert (s.mode, s.p, s.positive_reward, s.chunk_size, s.threshold, s.quantile) == ("dominant", -0.3, 1.0, 256, "quantile", 0.1)
    assert settings_from_env({}) == THRSettings()
    with pytest.raises(ValueError, match="p must be in"):
        settings_from_env({"THR_P": "1.5"})


def test_post_import_patcher_patches_on_import_and_when_already_imported(tmp_path, monkeypatch):
    pkg = tmp_path / "thr_patch_probe"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "mod.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    patcher = _PostImportPatcher()
    calls = []
    patcher.add("thr_patch_probe.mod", lambda m: calls.append(m.VALUE) or setattr(m, "VALUE", 2))
    try:
        import thr_patch_probe.mod as mod

        assert mod.VALUE == 2 and calls == [1]
        patcher.add("thr_patch_probe.mod", lambda m: setattr(m, "VALUE", 3))  # already imported: patched now
        assert mod.VALUE == 3
    finally:
        if patcher in sys.meta_path:
            sys.meta_path.remove(patcher)
        for name in ("thr_patch_probe.mod", "thr_patch_probe"):
            sys.modules.pop(name, None)


def test_registration_against_verl():
    pytest.importorskip("verl", reason="verl needs ray and its other heavy dependencies")
    from verl.trainer.ppo import core_algos

    import thr.integrations.verl as plugin

    plugin.install()
    fn = core_algos.get_adv_estimator_fn(plugin.ESTIMATOR)
    rewards = torch.zeros(4, 3)
    rewards[[0, 3], 2] = 1.0
    mask = torch.ones(4, 3)
    index = ["a", "a", "b", "b"]
    with pytest.raises(RuntimeError, match="v1 trainer"):
        fn(token_level_rewards=rewards, response_mask=mask, index=index)
    plugin._ADVANTAGE_CONTEXT["active"] = True
    try:
        adv, _ = fn(token_level_rewards=rewards, response_mask=mask, index=index)
    finally:
        plugin._ADVANTAGE_CONTEXT["active"] = False
    ref, _ = core_algos.compute_grpo_outcome_advantage(token_level_rewards=rewards, response_mask=mask, index=index)
    torch.testing.assert_close(adv, ref)


def test_apply_thr_keeps_verl_padding_rows_out_of_metrics_and_advantages():
    G, p = 4, 0.5
    states, ids, mask, W, rewards, uids, _ = make_groups(G=G)
    gid = torch.arange(len(uids)) // G
    mean = torch.zeros(3).index_add_(0, gid, rewards) / G
    seq_adv = rewards - mean[gid]
    verl_adv = seq_adv[:, None] * mask
    infl = token_influence(states, W, ids, mask, seq_adv > 0, group_size=G).float()
    want, want_metrics = apply_thr(verl_adv, infl, mask.float(), rewards, uids, THRSettings(mode="reweight", p=p))
    n_pad, T = 4, mask.shape[1]  # verl's synthetic rows: one masked-out token, reward 0, their own uid

    def pad(x, v=0.0):
        return torch.cat([x, torch.full((n_pad, *x.shape[1:]), v, dtype=x.dtype)])

    padding = [False] * len(uids) + [True] * n_pad
    got, metrics = apply_thr(pad(verl_adv), pad(infl, 0.7), pad(mask.float()), pad(rewards), uids + ["pad0"] * n_pad,
                             THRSettings(mode="reweight", p=p), is_padding=padding)
    assert metrics == want_metrics  # e.g. frac_positive_responses over the 12 real rows, not 16
    torch.testing.assert_close(got[: len(uids)], want)
    assert torch.equal(got[len(uids):], torch.zeros(n_pad, T))
    _, diluted = apply_thr(pad(verl_adv), pad(infl), pad(mask.float()), pad(rewards), uids + ["pad0"] * n_pad,
                           THRSettings(mode="reweight", p=p))  # without the flags: what the plugin reported before
    assert diluted["thr/frac_positive_responses"] < want_metrics["thr/frac_positive_responses"]
