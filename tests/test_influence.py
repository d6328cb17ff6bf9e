"""Exact token influence / THR against an autograd reference (spec section 2)."""

import pytest
import torch

import thr
from thr.core import choose_method, token_influence, token_self_influence



@pytest.fixture(autouse=True)
def _float64_default():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def make_group(G=4, T=6, d=5, V=7, seed=0, pad=True):
    g = torch.Generator().manual_seed(seed)
    H = torch.randn(G, T, d, generator=g)
    W = torch.randn(V, d, generator=g)
    Y = torch.randint(0, V, (G, T), generator=g)
    mask = torch.ones(G, T, dtype=torch.bool)
    if pad:
        lengths = torch.randint(1, T + 1, (G,), generator=g)
        lengths[0] = T
        mask = torch.arange(T)[None, :] < lengths[:, None]
        Y = torch.where(mask, Y, torch.full_like(Y, -100))  # garbage ids at padding
        H = torch.where(mask[..., None], H, torch.full_like(H, 1e6))  # garbage states too
    return H, W, Y, mask


def grad_logp(W, h, y, temperature):
    Wg = W.clone().requires_grad_(True)
    logp = torch.log_softmax(Wg @ h / temperature, dim=-1)[y]
    return torch.autograd.grad(logp, Wg)[0]


def reference_influence(H, W, Y, mask, positive, temperature=1.0):
    """Definition: <grad_W ln pi(y_jk), sum_{i in P} grad_W ln pi(y_i)>, token by token."""
    G, T, _ = H.shape
    total = torch.zeros_like(W)
    for i in range(G):
        for k in range(T):
            if positive[i] and mask[i, k]:
                total += grad_logp(W, H[i, k], Y[i, k], temperature)
    out = torch.zeros(G, T)
    for j in range(G):
        for k in range(T):
            if mask[j, k]:
                out[j, k] = (grad_logp(W, H[j, k], Y[j, k], temperature) * total).sum()
    return out


def assert_close_rel(actual, expected, rel=1e-6):
    scale = expected.abs().max().clamp(min=1e-12)
    assert ((actual - expected).abs().max() / scale).item() < rel, (actual, expected)


@pytest.mark.parametrize("method", ["mform", "pair", "auto"])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize(
    "positive",
    [[True, False, True, False], [False, False, True, False], [True, True, True, True]],
    ids=["two-correct", "one-correct", "all-correct"],
)
def test_matches_autograd(method, temperature, positive):
    H, W, Y, mask = make_group(seed=3)
    pos = torch.tensor(positive)
    got = thr.token_influence(H, W, Y, mask, pos, temperature=temperature, method=method, chunk_size=4)
    assert got.dtype == torch.float64
    expected = reference_influence(H, W, Y, mask, pos, temperature)
    assert_close_rel(got, expected)
    assert (got[~mask] == 0).all()


def test_no_correct_response_gives_zeros():
    H, W, Y, mask = make_group(seed=1)
    got = thr.token_influence(H, W, Y, mask, torch.zeros(4, dtype=torch.bool))
    assert (got == 0).all()


def test_repeated_tokens_across_responses():
    # V=2: nearly every token repeats across responses, exercising the [y == y'] term.
    H, W, Y, mask = make_group(G=3, T=5, V=2, seed=7)
    pos = torch.tensor([True, False, True])
    for method in ("mform", "pair"):
        got = thr.token_influence(H, W, Y, mask, pos, method=method, chunk_size=3)
        assert_close_rel(got, reference_influence(H, W, Y, mask, pos))


def test_methods_agree_on_larger_group_and_float32():
    H, W, Y, mask = make_group(G=8, T=40, d=16, V=50, seed=11)
    pos = torch.tensor([1, 0, 1, 1, 0, 0, 1, 0], dtype=torch.bool)
    a = thr.token_influence(H, W, Y, mask, pos, method="mform", chunk_size=17)
    b = thr.token_influence(H, W, Y, mask, pos, method="pair", chunk_size=64)
    assert_close_rel(a, b, 1e-10)
    c = thr.token_influence(H.float(), W.float(), Y, mask, pos, method="mform")
    assert c.dtype == torch.float32
    assert_close_rel(c.double(), a, 1e-4)
    d = thr.token_influence(H.bfloat16(), W.bfloat16(), Y, mask, pos)
    assert d.dtype == torch.float32
    assert_close_rel(d.double(), a, 5e-2)


def test_thr_is_advantage_times_influence():
    H, W, Y, mask = make_group(seed=5)
    pos = torch.tensor([True, False, False, True])
    adv = torch.tensor([0.8, -1.1, -0.4, 0.7])
    s = thr.token_influence(H, W, Y, mask, pos, temperature=0.9)
    r = thr.token_hidden_reward(H, W, Y, mask, adv, pos, temperature=0.9)
    assert torch.equal(r, adv[:, None] * s)


def test_identity_likelihood_change_of_correct_responses():
    """sum_j c_j THR_jk = directional derivative of sum_{i in P} ln pi(y_i) along grad_W L."""
    H, W, Y, mask = make_group(G=5, T=6, d=4, V=9, seed=13)
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0])
    pos = rewards > 0
    adv, _ = thr.group_advantages(rewards, group_size=5)
    c = 1.0 / mask.sum(1).double()  # seq-mean-token-mean coefficients, c_j = 1 / (G |y_j|) up to G
    temperature = 0.8

    def seq_logp(Wv):
        logits = torch.einsum("gtd,vd->gtv", H.where(mask[..., None], 0.0), Wv) / temperature
        lp = torch.log_softmax(logits, -1).gather(-1, Y.clamp(min=0)[..., None]).squeeze(-1)
        return (lp * mask).sum(1)  # [G]

    Wv = W.clone().requires_grad_(True)
    surrogate = (c * adv * seq_logp(Wv)).sum()
    direction = torch.autograd.grad(surrogate, Wv)[0]
    pos_ll = lambda Wx: seq_logp(Wx)[pos].sum()  # noqa: E731
    _, dderiv = torch.func.jvp(pos_ll, (W,), (direction,))
    thr_vals = thr.token_hidden_reward(H, W, Y, mask, adv, pos, temperature=temperature)
    predicted = (c[:, None] * thr_vals).sum()
    assert torch.allclose(dderiv, predicted, rtol=1e-9, atol=1e-12)
    # and a real (small) gradient-ascent step moves the likelihood by that amount to first order
    eta = 1e-6
    delta = (pos_ll(W + eta * direction) - pos_ll(W)) / eta
    assert torch.allclose(delta, predicted, rtol=1e-4)


def test_batched_equals_per_group_loop():
    parts = [make_group(G=3, T=7, d=6, V=11, seed=s) for s in range(3)]
    W = parts[0][1]
    H = torch.cat([p[0] for p in parts])
    Y = torch.cat([p[2] for p in parts])
    mask = torch.cat([p[3] for p in parts])
    pos = torch.tensor([1, 0, 1, 0, 0, 0, 0, 1, 1], dtype=torch.bool)
    expected = torch.cat([thr.token_influence(H[i : i + 3], W, Y[i : i + 3], mask[i : i + 3], pos[i : i + 3]) for i in (0, 3, 6)])
    got = token_influence(H, W, Y, mask, pos, group_size=3)
    assert torch.allclose(got, expected, rtol=1e-12, atol=1e-12)
    # explicit, shuffled group ids give the same values per row
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(0))
    gid = torch.tensor([0, 0, 0, 5, 5, 5, 2, 2, 2])[perm]
    got2 = token_influence(H[perm], W, Y[perm], mask[perm], pos[perm], group_ids=gid)
    assert torch.allclose(got2, expected[perm], rtol=1e-12, atol=1e-12)


def test_self_influence_is_diagonal_term():
    H, W, Y, mask = make_group(seed=2)
    got = token_self_influence(H, W, Y, mask, temperature=0.7)
    for j in range(4):
        for k in range(6):
            if mask[j, k]:
                g = grad_logp(W, H[j, k], Y[j, k], 0.7)
                assert torch.isclose(got[j, k], (g * g).sum(), rtol=1e-9)
            else:
                assert got[j, k] == 0


def test_choose_method_by_size():
    # few tokens, large model dimension: pair-form; many tokens: M-form
    assert choose_method(64, 32, V=32000, d=1024, chunk_size=1024) == "pair"
    assert choose_method(4096, 2048, V=32000, d=1024, chunk_size=1024) == "mform"
    # pair-form is refused when [N+, V] would exceed the memory budget
    assert choose_method(64, 2000, V=32000, d=4096, chunk_size=1024) == "mform"


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda a: a.update(hidden_states=a["hidden_states"][0]), "hidden_states must have 3"),
        (lambda a: a.update(lm_head_weight=a["lm_head_weight"][:, :3]), "hidden size mismatch"),
        (lambda a: a.update(response_ids=a["response_ids"][:, :3]), "response_ids has shape"),
        (lambda a: a.update(response_ids=a["response_ids"].double()), "integer tensor"),
        (lambda a: a.update(hidden_states=a["hidden_states"].long()), "floating-point"),
        (lambda a: a.update(response_ids=a["response_ids"] + 100), r"outside \[0, 7\)"),
        (lambda a: a.update(response_mask=torch.zeros(4, 6, dtype=torch.bool)), "selects no token"),
        (lambda a: a.update(response_mask=a["response_mask"][:2]), "response_mask has shape"),
        (lambda a: a.update(positive=torch.ones(3, dtype=torch.bool)), "positive has shape"),
        (lambda a: a.update(positive=torch.ones(4)), "bool tensor"),
        (lambda a: a["hidden_states"].__setitem__((0, 0, 0), float("nan")), "NaN or inf"),
        (lambda a: a.update(temperature=0.0), "temperature"),
    ],
)
def test_bad_input_raises_value_error(mutate, match):
    H, W, Y, mask = make_group(seed=0)
    args = dict(hidden_states=H.clone(), lm_head_weight=W, response_ids=Y.clamp(min=0), response_mask=mask,
                positive=torch.tensor([True, False, True, False]))
    mutate(args)
    temperature = args.pop("temperature", 1.0)
    with pytest.raises(ValueError, match=match):
        thr.token_influence(**args, temperature=temperature)
