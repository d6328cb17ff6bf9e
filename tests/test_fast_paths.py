"""Fast paths of the exact influence (kept probabilities, precomputed logits, buffers, chunking)
and the restricted-vocabulary approximation, against the autograd reference of test_influence."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from test_influence import assert_close_rel, make_group, reference_influence

import thr
from thr.core import choose_method, token_influence
from thr.core import token_hidden_reward, token_influence


def token_influence_approx(*args, return_vocab_size=False, **kwargs):
    """The approximation through the one front, ``token_influence(..., algorithm="approx")``."""
    if return_vocab_size:
        out, sizes = token_influence(*args, algorithm="approx", return_vocab_sizes=True, **kwargs)
        return out, sizes[0]
    return token_influence(*args, algorithm="approx", **kwargs)


token_influence_approx_batched = token_influence_approx


def token_hidden_reward_approx(*args, **kwargs):
    return token_hidden_reward(*args, algorithm="approx", **kwargs)
from thr.core.masked import selective_log_softmax


@pytest.fixture(autouse=True)
def _float64_default():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def group_logits(H, W, mask):
    """``[G, T, V]`` logits with garbage (but finite) rows at padding."""
    return torch.einsum("gtd,vd->gtv", H.where(mask[..., None], 0.0), W)


POS = torch.tensor([True, False, True, False])

EXACT_PATHS = [
    dict(method="mform", chunk_size=2, max_kept_elements=0),  # every positive chunk recomputed
    dict(method="mform", chunk_size=2, max_kept_elements=2 * 7 * 2),  # two chunks kept, the rest recomputed
    dict(method="mform", chunk_size=3),  # all kept (default budget)
    dict(method="mform", chunk_size=1000),  # one chunk: the buffer's last chunk is reused
    dict(method="pair", chunk_size=3),
    dict(method="pair", chunk_size=1000),
]


@pytest.mark.parametrize("kwargs", EXACT_PATHS, ids=lambda k: "-".join(f"{v}" for v in k.values()))
@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("with_logits", [False, True], ids=["head", "logits"])
def test_exact_paths_match_autograd(kwargs, temperature, with_logits):
    H, W, Y, mask = make_group(seed=3)
    logits = group_logits(H, W, mask) if with_logits else None
    got = thr.token_influence(H, W, Y, mask, POS, temperature=temperature, logits=logits, **kwargs)
    assert_close_rel(got, reference_influence(H, W, Y, mask, POS, temperature), 1e-9)
    assert (got[~mask] == 0).all()


def test_chunk_size_and_budget_do_not_change_the_result():
    H, W, Y, mask = make_group(G=6, T=30, d=12, V=40, seed=4)
    pos = torch.tensor([1, 1, 0, 1, 0, 0], dtype=torch.bool)
    base = thr.token_influence(H, W, Y, mask, pos, method="mform", chunk_size=1)
    for chunk in (2, 7, 64, 4096):
        for kept in (0, 40 * chunk, None):
            for method in ("mform", "pair"):
                got = thr.token_influence(H, W, Y, mask, pos, method=method, chunk_size=chunk, max_kept_elements=kept,
                                          max_pair_elements=10**9)
                assert_close_rel(got, base, 1e-12)


def test_logits_path_uses_the_given_logits():
    """Probabilities come from ``logits``: shifting every row by a constant changes nothing, and the
    result equals the reference with ``W h`` replaced by those logits (here, equal by construction)."""
    H, W, Y, mask = make_group(seed=8)
    logits = group_logits(H, W, mask)
    shifted = logits + torch.randn(4, 6, 1)
    a = thr.token_influence(H, W, Y, mask, POS, logits=logits, chunk_size=2)
    b = thr.token_influence(H, W, Y, mask, POS, logits=shifted, chunk_size=2)
    assert_close_rel(b, a, 1e-12)
    c = thr.token_influence(H, W, Y, mask, POS, logits=logits.float().to(torch.bfloat16))
    assert c.dtype == torch.float64  # states are float64: computation stays float64
    assert_close_rel(c, a, 5e-2)


def test_batched_with_logits_and_shuffled_groups():
    parts = [make_group(G=3, T=7, d=6, V=11, seed=s) for s in range(3)]
    W = parts[0][1]
    H = torch.cat([p[0] for p in parts])
    Y = torch.cat([p[2] for p in parts])
    mask = torch.cat([p[3] for p in parts])
    pos = torch.tensor([1, 0, 1, 0, 0, 0, 0, 1, 1], dtype=torch.bool)
    logits = group_logits(H, W, mask)[:, :, :]  # a view is fine: rows are gathered chunk by chunk
    expected = torch.cat([reference_influence(H[i : i + 3], W, Y[i : i + 3], mask[i : i + 3], pos[i : i + 3])
                          for i in (0, 3, 6)])
    for kw in (dict(), dict(logits=logits), dict(logits=logits, method="pair"), dict(method="mform", max_kept_elements=0)):
        got = token_influence(H, W, Y, mask, pos, group_size=3, chunk_size=4, **kw)
        assert_close_rel(got, expected, 1e-9)
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(1))
    gid = torch.tensor([0, 0, 0, 5, 5, 5, 2, 2, 2])[perm]
    got = token_influence(H[perm], W, Y[perm], mask[perm], pos[perm], group_ids=gid, logits=logits[perm])
    assert_close_rel(got, expected[perm], 1e-9)


def test_logits_non_contiguous_view_like_the_trainer():
    """The trainer's logits are ``out.logits[:, :-1]`` (a non-contiguous view)."""
    H, W, Y, mask = make_group(seed=9)
    full = torch.cat([group_logits(H, W, mask), torch.randn(4, 1, 7)], dim=1)
    view = full[:, :-1]
    assert not view.is_contiguous()
    got = thr.token_influence(H, W, Y, mask, POS, logits=view, temperature=0.8)
    assert_close_rel(got, reference_influence(H, W, Y, mask, POS, 0.8), 1e-9)


def test_bfloat16_inputs_accumulate_in_float32():
    H, W, Y, mask = make_group(G=8, T=40, d=64, V=500, seed=11)
    pos = torch.tensor([1, 0, 1, 1, 0, 0, 1, 0], dtype=torch.bool)
    Hb, Wb = H.bfloat16(), W.bfloat16()
    exact_of_rounded = thr.token_influence(Hb.double(), Wb.double(), Y, mask, pos)
    for method in ("mform", "pair"):
        got = thr.token_influence(Hb, Wb, Y, mask, pos, method=method, chunk_size=64)
        assert got.dtype == torch.float32
        assert_close_rel(got.double(), exact_of_rounded, 1e-4)  # float32 accumulation error only


def test_self_influence_unchanged_by_chunking():
    H, W, Y, mask = make_group(G=5, T=9, d=6, V=13, seed=12)
    a = thr.token_self_influence(H, W, Y, mask, chunk_size=1)
    b = thr.token_self_influence(H, W, Y, mask, chunk_size=7)
    assert_close_rel(b, a, 1e-12)


def test_choose_method_with_logits_and_budget():
    # with logits the logits product is free in both forms: the pair-form wins below ~d tokens
    assert choose_method(512, 256, V=32000, d=1024, chunk_size=1024, have_logits=True) == "pair"
    assert choose_method(4096, 2048, V=32000, d=1024, chunk_size=1024, have_logits=True) == "mform"
    # recomputation (no budget to keep probabilities) makes the M-form dearer, never wrong
    assert choose_method(1500, 750, V=32000, d=1024, chunk_size=256, max_kept_elements=0,
                         max_pair_elements=10**9) == "pair"


@pytest.mark.parametrize("bad, match", [
    (dict(logits=torch.zeros(4, 6, 5)), "logits has shape"),
    (dict(logits=torch.zeros(4, 6, 7, dtype=torch.long)), "floating-point"),
    (dict(max_kept_elements=-1), "max_kept_elements"),
    (dict(logits=torch.full((4, 6, 7), float("nan"))), "NaN or inf"),
])
def test_bad_fast_path_arguments(bad, match):
    H, W, Y, mask = make_group(seed=0)
    with pytest.raises(ValueError, match=match):
        thr.token_influence(H, W, Y.clamp(min=0), mask, POS, **bad)


# ----------------------------------------------------------------------------- approximation


def approx_modes(H, W, Y, mask, temperature):
    logits = group_logits(H, W, mask)
    lp = selective_log_softmax(logits, Y.clamp(min=0), temperature=temperature)
    V = W.shape[0]
    return {
        "renormalized": dict(vocab=torch.arange(V)),
        "logits": dict(vocab=torch.arange(V), logits=logits),
        "log_probs": dict(vocab=torch.arange(V), token_log_probs=lp),
        "topk-head": dict(top_k=V),
        "topk-logits": dict(top_k=V, logits=logits),
        "topk-logits-log_probs": dict(top_k=V, logits=logits, token_log_probs=lp),
        "topk-head-log_probs": dict(top_k=V, token_log_probs=lp),
    }


@pytest.mark.parametrize("mode", ["renormalized", "logits", "log_probs", "topk-head", "topk-logits",
                                  "topk-logits-log_probs", "topk-head-log_probs"])
@pytest.mark.parametrize("method", ["mform", "pair"])
@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_approx_is_exact_on_the_full_vocabulary(mode, method, temperature):
    H, W, Y, mask = make_group(G=4, T=6, d=5, V=7, seed=3)
    kw = approx_modes(H, W, Y, mask, temperature)[mode]
    got, size = token_influence_approx(H, W, Y, mask, POS, temperature=temperature, method=method, chunk_size=3,
                                       return_vocab_size=True, **kw)
    assert size == 7
    assert_close_rel(got, reference_influence(H, W, Y, mask, POS, temperature), 1e-9)


def test_approx_vocabulary_is_group_tokens_plus_top_k():
    H, W, Y, mask = make_group(G=4, T=10, d=6, V=200, seed=5)
    _, size = token_influence_approx(H, W, Y, mask, POS, return_vocab_size=True)
    assert size == int(torch.unique(Y[mask]).numel())
    logits = group_logits(H, W, mask)
    _, size_k = token_influence_approx(H, W, Y, mask, POS, top_k=3, logits=logits, return_vocab_size=True)
    top = torch.topk(logits[mask], 3, dim=-1).indices
    assert size_k == int(torch.unique(torch.cat([Y[mask], top.flatten()])).numel())


def test_approx_error_shrinks_as_the_vocabulary_grows():
    """Exact tail probabilities (logits mode): adding top-k tokens only removes dropped terms."""
    H, W, Y, mask = make_group(G=6, T=20, d=8, V=300, seed=6)
    W = W * 0.3
    pos = torch.tensor([1, 0, 1, 0, 0, 1], dtype=torch.bool)
    logits = group_logits(H, W, mask)
    exact = thr.token_influence(H, W, Y, mask, pos)
    errs = [((token_influence_approx(H, W, Y, mask, pos, logits=logits, top_k=k) - exact).norm() / exact.norm()).item()
            for k in (0, 50, 300)]
    assert errs[2] < 1e-12 and errs[1] < errs[0]


def test_approx_batched_and_thr():
    parts = [make_group(G=3, T=7, d=6, V=30, seed=s) for s in range(2)]
    W = parts[0][1]
    H = torch.cat([p[0] for p in parts])
    Y = torch.cat([p[2] for p in parts])
    mask = torch.cat([p[3] for p in parts])
    pos = torch.tensor([1, 0, 0, 0, 0, 0], dtype=torch.bool)
    got, sizes = token_influence_approx_batched(H, W, Y, mask, pos, group_size=3, return_vocab_sizes=True)
    assert sizes[1] == 0 and (got[3:] == 0).all()  # the second group has no positive response
    assert torch.equal(got[:3], token_influence_approx(H[:3], W, Y[:3], mask[:3], pos[:3]))
    adv = torch.tensor([1.0, -0.5, -0.5])
    assert torch.equal(token_hidden_reward_approx(H[:3], W, Y[:3], mask[:3], adv, pos[:3]), adv[:, None] * got[:3])


@pytest.mark.parametrize("bad, match", [
    (dict(top_k=-1), "top_k"),
    (dict(vocab=torch.tensor([0, 99])), "vocab has ids"),
    (dict(vocab=torch.tensor([0.0])), "integer"),
    (dict(token_log_probs=torch.zeros(4, 5)), "token_log_probs has shape"),
])
def test_approx_bad_arguments(bad, match):
    H, W, Y, mask = make_group(seed=0)
    with pytest.raises(ValueError, match=match):
        token_influence_approx(H, W, Y.clamp(min=0), mask, POS, **bad)


# ----------------------------------------------------------------------------- memory bound

MEMORY_SCRIPT = textwrap.dedent("""
    import sys, torch, thr
    def rss_kb(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1])
    torch.manual_seed(0)
    G, T, d, V = 8, 256, 16, 40000          # full [G*T, V] float32 logits would be 328 MB
    H, W = torch.randn(G, T, d), torch.randn(V, d) / 4
    Y, mask = torch.randint(0, V, (G, T)), torch.ones(G, T, dtype=torch.bool)
    pos = torch.tensor([1, 0, 1, 0, 1, 0, 1, 0], dtype=torch.bool)
    thr.token_influence(H[:1, :8], W, Y[:1, :8], mask[:1, :8], pos[:1], chunk_size=64)  # warm up
    open("/proc/self/clear_refs", "w").write("5")
    base = rss_kb("VmRSS")
    thr.token_influence(H, W, Y, mask, pos, chunk_size=64, method=sys.argv[1], max_kept_elements=0)
    print((rss_kb("VmHWM") - base) / 1024)
""")


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux /proc/self/clear_refs")
@pytest.mark.parametrize("method", ["mform", "pair"])
def test_peak_memory_is_chunk_bounded(method):
    """Peak RSS growth stays far below the 328 MB of full logits (chunk 64: ~10 MB per buffer;
    the pair-form also holds P+ [1024, V] = 164 MB, its documented budget)."""
    out = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, method], capture_output=True, text=True, timeout=300, check=False,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    peak_mb = float(out.stdout.strip().splitlines()[-1])
    limit = 80 if method == "mform" else 250
    assert peak_mb < limit, peak_mb


def test_non_finite_weight_is_reported_with_its_index():
    H, W, Y, mask = make_group(seed=0)
    for bad in (float("nan"), float("inf")):
        W2 = W.clone()
        W2[3, 2] = bad
        with pytest.raises(ValueError, match=r"lm_head_weight contains NaN or inf \(first at index \[3, 2\]\)"):
            thr.token_influence(H, W2, Y.clamp(min=0), mask, POS)
    # the approximation checks only the rows it reads (the tokens of the group)
    W3 = W.clone()
    W3[int(Y[mask][0])] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        token_influence_approx(H, W3, Y.clamp(min=0), mask, POS)
