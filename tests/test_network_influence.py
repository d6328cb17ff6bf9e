"""Network THR (``thr.network_token_influence``): exact against per-token autograd gradients."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import thr
from thr.models.loading import capture_head_inputs
from thr.models.tiny import build_model, build_tokenizer


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


@pytest.fixture
def float64_norms(monkeypatch):
    """Qwen2/Llama RMSNorm computes in float32 even for a float64 model (``.to(torch.float32)``),
    which limits any float64 comparison to ~1e-8; this keeps it in the input dtype."""
    from transformers.models.llama import modeling_llama
    from transformers.models.qwen2 import modeling_qwen2

    def forward(self, h):
        return self.weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))

    monkeypatch.setattr(modeling_qwen2.Qwen2RMSNorm, "forward", forward)
    monkeypatch.setattr(modeling_llama.LlamaRMSNorm, "forward", forward)


def make_batch(B=6, L=14, start=7, seed=0):
    """Left-padded prompts, right-padded responses from column ``start``; groups of 2 (one without a positive)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 256, (B, L), generator=g)
    attn = torch.ones(B, L, dtype=torch.long)
    attn[0, :3] = 0  # left padding
    attn[2, :1] = 0
    attn[1, 11:] = 0  # right padding (a shorter response)
    attn[4, 9:] = 0
    response = torch.zeros(B, L, dtype=torch.bool)
    response[:, start:] = True
    response &= attn.bool()
    positive = torch.tensor([True, False, False, False, True, True])  # group 1 has no correct response
    return ids, attn, response, positive


def token_log_probs(model, ids, attn, tau):
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=False).logits
    lp = torch.log_softmax(logits[:, :-1].double() / tau, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    return torch.cat([torch.zeros(ids.shape[0], 1, dtype=lp.dtype), lp], 1)


def explicit_influence(model, params, ids, attn, response, positive, G, tau):
    """The definition, token by token: <grad l_{j,k}, sum_{i in P_g} grad l_i> over ``params``."""
    lp = token_log_probs(model, ids, attn, tau)
    out = torch.zeros(ids.shape, dtype=torch.float64)
    for g0 in range(0, ids.shape[0], G):
        rows = range(g0, g0 + G)
        if not any(bool(positive[i]) for i in rows):
            continue
        total = sum(lp[i][response[i]].sum() for i in rows if positive[i])
        v = torch.autograd.grad(total, params, retain_graph=True, allow_unused=True)
        for i in rows:
            for t in response[i].nonzero().squeeze(1).tolist():
                grads = torch.autograd.grad(lp[i, t], params, retain_graph=True, allow_unused=True)
                out[i, t] = sum((a * b).sum() for a, b in zip(grads, v) if a is not None and b is not None)
    return out


def rel_err(a, b):
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("arch,tau", [("qwen2", 0.7), ("llama", 1.0)])
def test_whole_network_equals_per_token_gradients(tok, float64_norms, arch, tau):
    model = build_model(tok, arch=arch, hidden_size=32, num_layers=2, num_heads=2, dtype=torch.float64).eval()
    ids, attn, response, positive = make_batch()
    params = [p for p in model.parameters()]
    ref = explicit_influence(model, params, ids, attn, response, positive, 2, tau)
    assert ref[2:4].abs().sum() == 0 and ref[0].abs().sum() > 0
    for kw in ({}, {"method": "double_backward"}, {"rows_per_pass": 1}):
        got = thr.network_token_influence(model, ids, attn, response, positive, group_size=2, temperature=tau, **kw)
        assert got.dtype == torch.float64 and bool((got[~response] == 0).all())
        assert rel_err(got, ref) < 1e-12, kw


def test_unpatched_float32_norm_limits_agreement(tok):
    """Without the float64 norm patch, the model itself rounds to float32 inside RMSNorm: ~1e-8."""
    model = build_model(tok, hidden_size=32, num_layers=2, num_heads=2, dtype=torch.float64).eval()
    ids, attn, response, positive = make_batch()
    ref = explicit_influence(model, list(model.parameters()), ids, attn, response, positive, 2, 0.7)
    got = thr.network_token_influence(model, ids, attn, response, positive, group_size=2, temperature=0.7)
    assert rel_err(got, ref) < 1e-6


@pytest.mark.parametrize("tau", [1.0, 0.6])
def test_head_only_reproduces_token_influence(tok, tau):
    model = build_model(tok, hidden_size=32, num_layers=2, num_heads=2, dtype=torch.float64).eval()
    ids, attn, response, positive = make_batch()
    got = thr.network_token_influence(model, ids, attn, response, positive, group_size=2, temperature=tau,
                                      parameters=[model.lm_head.weight])
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    with capture_head_inputs(model) as captured:
        model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=False)
    hidden = captured[-1][:, :-1]  # the state at column t - 1 predicts token t
    ref = thr.token_influence(hidden, model.lm_head.weight.detach(), ids[:, 1:], response[:, 1:], positive,
                                      group_size=2, temperature=tau)
    assert got[:, 0].abs().sum() == 0
    assert rel_err(got[:, 1:], ref) < 1e-6


def test_subset_and_frozen_parameters(tok, float64_norms):
    """A parameter subset (the last block, frozen ones included) matches the explicit gradients over it."""
    model = build_model(tok, hidden_size=32, num_layers=3, num_heads=2, dtype=torch.float64).eval()
    model.model.layers[2].mlp.requires_grad_(False)
    params = list(model.model.layers[2].parameters())
    ids, attn, response, positive = make_batch(seed=1)
    for p in params:
        p.requires_grad_(True)  # the reference needs grads; the function does not
    ref = explicit_influence(model, params, ids, attn, response, positive, 2, 1.0)
    model.model.layers[2].mlp.requires_grad_(False)
    got = thr.network_token_influence(model, ids, attn, response, positive, group_size=2, parameters=params)
    assert rel_err(got, ref) < 1e-12


def test_eager_attention_matches_sdpa(tok):
    """Forward-mode AD through eager attention (float32; HF's eager mask gives NaN at left padding in float64)."""
    model = build_model(tok, hidden_size=32, num_layers=2, num_heads=2).eval()
    ids, attn, response, positive = make_batch()
    sdpa = thr.network_token_influence(model, ids, attn, response, positive, group_size=2)
    model.set_attn_implementation("eager")
    eager = thr.network_token_influence(model, ids, attn, response, positive, group_size=2, method="jvp")
    assert sdpa.dtype == torch.float32 and rel_err(eager, sdpa) < 1e-4


def test_lora_parameters(tok, float64_norms):
    peft = pytest.importorskip("peft")
    base = build_model(tok, hidden_size=32, num_layers=2, num_heads=2, dtype=torch.float64)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    model = peft.get_peft_model(base, config).eval()
    torch.manual_seed(0)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.1)  # B = 0 at init would make the A-gradients vanish
    lora = [p for p in model.parameters() if p.requires_grad]
    assert lora and all("lora" in n for n, p in model.named_parameters() if p.requires_grad)
    ids, attn, response, positive = make_batch(seed=2)
    ref = explicit_influence(model, lora, ids, attn, response, positive, 2, 0.8)
    got = thr.network_token_influence(model, ids, attn, response, positive, group_size=2, temperature=0.8)
    assert rel_err(got, ref) < 1e-12


def test_bad_inputs(tok):
    model = build_model(tok, hidden_size=32, num_layers=1, num_heads=2).eval()
    ids, attn, response, positive = make_batch()
    with pytest.raises(ValueError, match="group_size"):
        thr.network_token_influence(model, ids, attn, response, positive, group_size=4)
    bad = response.clone()
    bad[0, 0] = True
    with pytest.raises(ValueError, match="column 0"):
        thr.network_token_influence(model, ids, attn, bad, positive, group_size=2)
    with pytest.raises(ValueError, match="parameters of model"):
        thr.network_token_influence(model, ids, attn, response, positive, group_size=2,
                                    parameters=[torch.nn.Parameter(torch.zeros(2))])


def test_parameter_sets_of_the_trainer(tok):
    from thr.rl.old_pass import select_network_parameters

    model = build_model(tok, hidden_size=32, num_layers=3, num_heads=2)
    names = {id(p): n for n, p in model.named_parameters()}
    last = {names[id(p)] for p in select_network_parameters(model, "last:1")}
    assert last == {n for n, _ in model.named_parameters()
                    if n.startswith("model.layers.2.") or n in ("model.norm.weight", "lm_head.weight")}
    head = select_network_parameters(model, "re:^lm_head")
    assert len(head) == 1 and head[0] is model.lm_head.weight
    assert len(select_network_parameters(model, "all")) == len(list(model.parameters()))
    with pytest.raises(ValueError, match="selects no"):
        select_network_parameters(model, "re:nothing_here")


# ----------------------------------------------------------------------------- the trainer option
def trainer_cfg(policy_dir, out, *overrides):
    from conftest import tiny_embedded_config

    from thr.config import load_config
    from thr.rl.config import TrainConfig

    base = [
        f"output_dir={out}", f"model.name_or_path={policy_dir}", "steps=2", "seed=3", "rollout.temperature=0.9",
        "rollout.prompts_per_step=4", "rollout.group_size=8", "rollout.max_new_tokens=32", "rollout.batch_size=64",
        "optim.lr=1e-3", "optim.mini_batches=1", "optim.micro_batch_size=16", "data.train=arith", "data.eval=",
        "data.prompt_template=plain", "log.progress=false", "log.groups_every=1", "save_every=0",
        "thr.influence=network",
    ]
    cfg = load_config(TrainConfig, base + list(overrides))
    cfg.embedded = tiny_embedded_config()
    return cfg


def test_trainer_uses_network_influence(tiny_policy_dir, tmp_path, monkeypatch):
    import thr.rl.old_pass
    from thr.rl.trainer import Trainer

    calls = []
    real = thr.rl.old_pass.network_token_influence

    def spy(*args, **kwargs):
        calls.append(kwargs["parameters"])
        return real(*args, **kwargs)

    monkeypatch.setattr(thr.rl.old_pass, "network_token_influence", spy)
    trainer = Trainer(trainer_cfg(tiny_policy_dir, tmp_path))
    rollout = trainer.rollout

    def mixed_rollout(step):  # every group gets correct and incorrect responses, whatever the policy
        out = rollout(step)
        scores = [dataclasses.replace(s, correct=i % 3 == 0, reward=float(i % 3 == 0)) for i, s in enumerate(out.scores)]
        return dataclasses.replace(out, scores=scores)

    monkeypatch.setattr(trainer, "rollout", mixed_rollout)
    seen = []
    old_pass = trainer.old_policy_pass
    monkeypatch.setattr(trainer, "old_policy_pass", lambda batch, positive: seen.append(old_pass(batch, positive)) or seen[-1])
    before = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    metrics = [trainer.train_step(step) for step in range(2)]
    assert calls and all(len(p) == len(before) for p in calls)  # the whole network: every trainable parameter
    for old in seen:
        assert torch.isfinite(old.influence).all()
    assert all(old.influence.abs().sum() > 0 for old in seen)
    assert all(torch.isfinite(torch.tensor(m["loss/policy"])) for m in metrics)
    changed = [k for k, v in trainer.model.named_parameters() if not torch.equal(v.detach(), before[k])]
    assert len(changed) == len(before)


def test_trainer_head_only_network_equals_full(tiny_policy_dir, tmp_path):
    """The layout mapping: network influence over the LM head alone is the trainer's usual THR."""
    from thr.rl.batch import build_batch
    from thr.rl.trainer import Trainer
    from thr.rl.old_pass import OldPassTHR

    trainer = Trainer(trainer_cfg(tiny_policy_dir, tmp_path, "thr.network_params=re:^lm_head", "thr.network_rows=3"))
    torch.manual_seed(0)
    samples = trainer.rollout(0).samples
    batch = build_batch([s.prompt_ids for s in samples], [s.response_ids for s in samples],
                        trainer.tokenizer.pad_token_id, trainer.device)
    positive = torch.arange(len(samples)) % 3 == 0  # mixed groups whatever the policy
    network = trainer.old_policy_pass(batch, positive).influence
    full_cfg = trainer_cfg(tiny_policy_dir, tmp_path, "thr.influence=full").thr
    trainer.thr_pass = OldPassTHR(full_cfg, 8, trainer.cfg.rollout.temperature)
    full = trainer.old_policy_pass(batch, positive).influence
    assert full.abs().sum() > 0 and rel_err(network, full) < 1e-4


def test_first_order_identity_over_the_whole_network(tok, float64_norms):
    """Spec section 2's identity with theta = every parameter: one small gradient step on the GRPO
    surrogate sum_j A_j sum_k l_{j,k} changes L_P by lr * sum_{j,k} A_j s_{j,k} + O(lr^2)."""
    model = build_model(tok, hidden_size=32, num_layers=2, num_heads=2, dtype=torch.float64).eval()
    ids, attn, response, positive = make_batch()
    ids, attn, response, positive = ids[:2], attn[:2], response[:2], positive[:2]  # one group of 2
    adv = torch.tensor([1.0, -1.0], dtype=torch.float64)
    s = thr.network_token_influence(model, ids, attn, response, positive, group_size=2)
    predicted = float((adv[:, None] * s).sum())
    params = list(model.parameters())

    def loglik():
        return token_log_probs(model, ids, attn, 1.0) * response

    before = float(loglik()[positive].sum())
    grads = torch.autograd.grad((adv[:, None] * loglik()).sum(), params)
    errors = []
    for lr in (1e-4, 1e-5):
        with torch.no_grad():
            for p, g in zip(params, grads):
                p.add_(lr * g)
            actual = float(loglik()[positive].sum()) - before
            for p, g in zip(params, grads):
                p.sub_(lr * g)
        errors.append(abs(actual / (lr * predicted) - 1))
    assert errors[1] < 1e-3 and errors[1] < errors[0] / 5  # the gap shrinks with lr: first order


@pytest.mark.parametrize("override,match", [
    ("thr.influence=netwrk", "thr.influence"),
    ("thr.network_params=last:0", "network_params"),
    ("thr.network_params=first:2", "network_params"),
    ("thr.network_params=re:(", "bad regular expression"),
    ("thr.network_rows=-1", "network_rows"),
])
def test_network_config_errors(override, match):
    from thr.config import load_config
    from thr.rl.config import TrainConfig

    with pytest.raises(ValueError, match=match):
        load_config(TrainConfig, [override]).validate()
    load_config(TrainConfig, ["thr.influence=network", "thr.network_params=last:2", "thr.network_rows=2"]).validate()


def test_auto_falls_back_to_double_backward(tok, monkeypatch):
    """An op without a forward-mode formula (an old-style autograd.Function here) switches
    ``method="auto"`` to double-backward, with a warning and the same numbers."""
    from transformers.models.qwen2 import modeling_qwen2

    class Double(torch.autograd.Function):  # no jvp, no setup_context: functorch refuses it
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return g * 2

    model = build_model(tok, hidden_size=32, num_layers=2, num_heads=2, dtype=torch.float64).eval()
    ids, attn, response, positive = make_batch()
    ref = thr.network_token_influence(model, ids, attn, response, positive, group_size=2)
    mlp = modeling_qwen2.Qwen2MLP.forward
    monkeypatch.setattr(modeling_qwen2.Qwen2MLP, "forward", lambda self, x: mlp(self, Double.apply(x) / 2))
    with pytest.raises(RuntimeError, match="functorch"):
        thr.network_token_influence(model, ids, attn, response, positive, group_size=2, method="jvp")
    with pytest.warns(UserWarning, match="double-backward"):
        got = thr.network_token_influence(model, ids, attn, response, positive, group_size=2)
    assert rel_err(got, ref) < 1e-12
