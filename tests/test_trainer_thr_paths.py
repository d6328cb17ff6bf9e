"""THR paths of the trainer's old-policy pass: reused logits, the approximation, the head check."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from thr.config import load_config
from thr.models.loading import lm_head_weight, output_embeddings
from thr.rl.batch import build_batch
from thr.rl.trainer import Trainer
from thr.rl.config import TrainConfig
from thr.rl.old_pass import OldPassTHR

from conftest import tiny_embedded_config


def make_cfg(policy_dir, out, *overrides: str) -> TrainConfig:
    base = [
        f"output_dir={out}", f"model.name_or_path={policy_dir}", "steps=1", "seed=3", "rollout.temperature=0.9",
        "rollout.prompts_per_step=4", "rollout.group_size=8", "rollout.max_new_tokens=32", "rollout.batch_size=64",
        "optim.micro_batch_size=12", "data.train=arith", "data.eval=", "data.prompt_template=plain", "log.progress=false", "save_every=0",
    ]
    cfg = load_config(TrainConfig, base + list(overrides))
    cfg.embedded = tiny_embedded_config()
    return cfg


@pytest.fixture(scope="module")
def setup(tiny_policy_dir, tmp_path_factory):
    """A tiny float32 Trainer, one real rollout batch (4 micro-batches of one group) and its exact influence."""
    trainer = Trainer(make_cfg(tiny_policy_dir, tmp_path_factory.mktemp("run")))
    torch.manual_seed(0)
    rollout = trainer.rollout(0)
    samples, scores = rollout.samples, rollout.scores
    batch = build_batch([s.prompt_ids for s in samples], [s.response_ids for s in samples],
                        trainer.tokenizer.pad_token_id, trainer.device)
    positive = torch.tensor([s.correct for s in scores])
    assert positive.any() and not positive.all(), "precondition: mixed rewards"
    ref = influence(trainer, batch, positive, reuse_logits="off")
    assert ref.abs().sum() > 0
    return trainer, batch, positive, ref


def influence(trainer, batch, positive, **thr) -> torch.Tensor:
    cfg = copy.deepcopy(trainer.cfg.thr)
    for k, v in thr.items():
        setattr(cfg, k, v)
    trainer.thr_pass = OldPassTHR(cfg, trainer.cfg.rollout.group_size, trainer.cfg.rollout.temperature)
    return trainer.old_policy_pass(batch, positive).influence


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("mode", ["on", "auto"])
def test_reused_logits_equal_recomputed(setup, mode):
    trainer, batch, positive, ref = setup
    got = influence(trainer, batch, positive, reuse_logits=mode)
    assert trainer.thr_pass.head_linear is True  # float32 logits of a plain head: reused in both modes
    assert rel(got, ref) < 1e-5


@pytest.mark.parametrize("reuse", ["on", "off"])
def test_approx_covering_the_vocab_is_exact(setup, reuse):
    trainer, batch, positive, ref = setup
    V = lm_head_weight(trainer.model).shape[0]
    got = influence(trainer, batch, positive, algorithm="approx", approx_top_k=V, reuse_logits=reuse)
    assert rel(got, ref) < 1e-5
    small = influence(trainer, batch, positive, algorithm="approx", reuse_logits=reuse)  # group tokens only
    assert torch.isfinite(small).all() and small.abs().sum() > 0


def test_kept_budget_maps_to_elements(setup):
    trainer, batch, positive, ref = setup
    assert OldPassTHR(dataclasses.replace(trainer.cfg.thr, max_kept_gb=0.5), 8, 1.0).max_kept == 2**27
    got = influence(trainer, batch, positive, reuse_logits="off", method="mform", max_kept_gb=1e-12)  # keeps nothing
    assert rel(got, ref) < 1e-5


def test_scaled_head_is_detected(setup, capsys):
    trainer, batch, positive, ref = setup
    handle = output_embeddings(trainer.model).register_forward_hook(lambda _m, _a, out: out * 1.5)  # a logit scale
    try:
        with pytest.raises(ValueError, match="not a plain linear map.*thr.reuse_logits=auto or off"):
            influence(trainer, batch, positive, reuse_logits="on")
        got = influence(trainer, batch, positive, reuse_logits="auto")
        assert trainer.thr_pass.head_linear is False
        assert capsys.readouterr().err.count("recomputing THR's probabilities") == 1  # said once
        assert rel(got, ref) < 1e-6
    finally:
        handle.remove()


def test_approx_ignores_log_probs_of_a_scaled_head(setup):
    """With a non-linear head the old log-probs do not match hidden @ W.T: approx must not use them."""
    trainer, batch, positive, ref = setup
    V = lm_head_weight(trainer.model).shape[0]
    handle = output_embeddings(trainer.model).register_forward_hook(lambda _m, _a, out: out * 1.5)
    try:
        got = influence(trainer, batch, positive, algorithm="approx", approx_top_k=V, reuse_logits="off")
        assert trainer.thr_pass.head_linear is False and trainer.thr_pass.log_probs_ok is False
        assert rel(got, ref) < 1e-5  # covering the vocabulary: exact, normalized from hidden @ W.T
    finally:
        handle.remove()


def test_head_check_on_small_tensors():
    cfg = TrainConfig().thr
    H, W = torch.randn(2, 3, 4), torch.randn(5, 4)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    on = dataclasses.replace(cfg, reuse_logits="on")
    assert OldPassTHR(on, 2, 1.0).use_logits(H, W, H @ W.T, mask)
    assert not OldPassTHR(cfg, 2, 1.0).use_logits(H, W, (H @ W.T).bfloat16(), mask)  # auto: float32/64 only
    assert not OldPassTHR(on, 2, 1.0).use_logits(H, W, H @ W.T, mask & False)  # nothing to score: undecided
    with pytest.raises(ValueError, match="LoRA adapter"):
        OldPassTHR(on, 2, 1.0, head_adapter=True).use_logits(H, W, H @ W.T, mask)
    with pytest.raises(ValueError, match="not a plain linear map"):  # soft-capping
        OldPassTHR(on, 2, 1.0).use_logits(H, W, 2 * torch.tanh(H @ W.T / 2), mask)


@pytest.mark.parametrize(
    "override, match",
    [("thr.reuse_logits=maybe", "thr.reuse_logits='maybe' is not valid"),
     ("thr.algorithm=fast", "thr.algorithm='fast' is not valid"),
     ("thr.approx_top_k=-1", "thr.approx_top_k must be >= 0"),
     ("thr.approx_top_k=8", "set thr.algorithm=approx or thr.approx_top_k=0"),
     ("thr.max_kept_gb=-1", "thr.max_kept_gb must be a finite number >= 0")],
)
def test_thr_config_errors(override, match):
    with pytest.raises(ValueError, match=match):
        load_config(TrainConfig, [override])


def test_tf32_switch_restores_global_setting_and_skips_cpu():
    import contextlib

    from thr.rl.config import THRSection
    from thr.rl.old_pass import OldPassTHR, _tf32_matmuls

    before = torch.get_float32_matmul_precision()
    with _tf32_matmuls():
        assert torch.backends.cuda.matmul.fp32_precision == "tf32"
    assert torch.get_float32_matmul_precision() == before  # readable: no legacy/new API mix
    torch.set_float32_matmul_precision("medium")  # a user's own setting survives too
    try:
        with _tf32_matmuls():
            pass
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(before)
    h, w = torch.zeros(2, 3, 4, dtype=torch.bfloat16), torch.zeros(5, 4, dtype=torch.bfloat16)
    for mode in ("auto", "on", "off"):  # CPU tensors: never touches the CUDA setting
        ctx = OldPassTHR(THRSection(tf32=mode), 2, 1.0)._matmul_precision(h, w)
        assert isinstance(ctx, contextlib.nullcontext)


def test_tf32_config_validation():
    from thr.rl.config import TrainConfig

    cfg = TrainConfig()
    cfg.thr.tf32 = "yes"
    with pytest.raises(ValueError, match="thr.tf32"):
        cfg.validate()
