"""THR inside TRL's GRPOTrainer (trl 1.16) on a tiny local model, CPU only.

THR off (and reweight with p = 0) reproduces plain GRPOTrainer's loss and update; p != 0 changes
them; the token advantages handed to TRL equal thr.core's on states read independently through
the LM head; the GSPO-token override equals thr.core's gspo_token loss and gradient; LoRA works;
a 2-process accelerate run keeps whole groups per process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

pytest.importorskip("trl")
from datasets import Dataset  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

from thr.core import group_advantages, policy_loss, steered_advantages, token_influence  # noqa: E402
from thr.integrations._groups import check_group_prompts, check_whole_groups  # noqa: E402
from thr.integrations.trl import THRConfig, THRGRPOTrainer  # noqa: E402
from thr.models.loading import capture_head_inputs, lm_head_weight  # noqa: E402
from thr.models.tiny import build_model, build_tokenizer  # noqa: E402

G = 4
PROMPTS = ["1+1=", "2+3=", "4+4=", "5+1="]
COMMON = dict(per_device_train_batch_size=8, num_generations=G, max_completion_length=8, max_steps=1, logging_steps=1,
              report_to="none", bf16=False, use_cpu=True, save_strategy="no", learning_rate=1e-2, seed=0,
              dataloader_num_workers=0)


def parity_reward(completion_ids, **_):
    """1 when the first completion token id is even: about half of each group, so groups are mixed."""
    return [float(len(c) > 0 and c[0] % 2 == 0) for c in completion_ids]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-trl")
    tok = build_tokenizer()
    build_model(tok, hidden_size=32, num_layers=1, num_heads=2).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def make(tiny_dir, tmp_path, cls=THRGRPOTrainer, cfg_cls=THRConfig, **overrides):
    args = cfg_cls(output_dir=str(tmp_path / cls.__name__), **{**COMMON, **overrides})
    return cls(tiny_dir, parity_reward, args=args, train_dataset=Dataset.from_dict({"prompt": PROMPTS}),
               processing_class=build_tokenizer())


def train_one(trainer):
    trainer.train()
    params = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    return trainer.state.log_history[0], params


@pytest.fixture(scope="module")
def plain_run(tiny_dir, tmp_path_factory):
    return train_one(make(tiny_dir, tmp_path_factory.mktemp("plain"), GRPOTrainer, GRPOConfig))


@pytest.mark.parametrize("mode,p", [("off", 0.0), ("reweight", 0.0)])
def test_thr_off_and_p0_equal_plain_grpo(tiny_dir, tmp_path, plain_run, mode, p):
    plain_log, plain_params = plain_run
    assert plain_log["reward_std"] > 0, "precondition: groups must have mixed rewards"
    log, params = train_one(make(tiny_dir, tmp_path, thr_mode=mode, thr_p=p))
    assert log["loss"] == plain_log["loss"]
    for k, v in plain_params.items():
        assert torch.equal(params[k], v), k
    assert "thr/frac_dominant" in log and log["thr/abs_mean"] > 0  # THR was computed (metrics) all the same


def test_thr_on_changes_loss_and_update(tiny_dir, tmp_path, plain_run):
    plain_log, plain_params = plain_run
    log, params = train_one(make(tiny_dir, tmp_path, thr_mode="reweight", thr_p=0.5))
    assert log["thr/frac_dominant"] > 0 and log["thr/weight_mean"] != 1.0
    assert log["loss"] != plain_log["loss"]
    assert any(not torch.equal(params[k], v) for k, v in plain_params.items())


def generation_batch():
    return [{"prompt": p} for p in PROMPTS[:2] for _ in range(G)]


@pytest.mark.parametrize("case", ["own_pass", "trl_old_pass", "positive_reward"])
def test_token_advantages_match_core(tiny_dir, tmp_path, case):
    """States read through the LM head (non-fused forward) give the same token advantages."""
    extra = {"num_iterations": 2} if case == "trl_old_pass" else {}
    if case == "positive_reward":
        extra["thr_positive_reward"] = 1.0
    tr = make(tiny_dir, tmp_path, thr_mode="reweight", thr_p=0.5, **extra)
    tr.model.train()
    out = tr._generate_and_score_completions(generation_batch())
    assert ("old_per_token_logps" in out) == (case == "trl_old_pass")
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
    attn = torch.cat([out["prompt_mask"], out["completion_mask"]], 1)
    T, mask = out["completion_ids"].shape[1], out["completion_mask"]
    with torch.no_grad(), capture_head_inputs(tr.model) as cap:
        tr.model(input_ids=ids, attention_mask=attn)  # plain forward: logits through lm_head
    states = cap[-1][:, -T - 1 : -1]
    rewards = torch.tensor(parity_reward(out["completion_ids"].tolist()))
    adv, _ = group_advantages(rewards, group_size=G, unbiased_std=True, eps=1e-4)  # TRL's formula
    positive = rewards >= 1.0
    infl = token_influence(states, lm_head_weight(tr.model), out["completion_ids"], mask, positive, group_size=G)
    expected, _ = steered_advantages(adv, infl, mask, positive, group_size=G, mode="reweight", p=0.5)
    assert out["advantages"].shape == mask.shape
    torch.testing.assert_close(out["advantages"], expected, rtol=1e-4, atol=1e-5)


def test_gspo_token_matches_core_loss_and_gradient(tiny_dir, tmp_path):
    tr = make(tiny_dir, tmp_path, thr_mode="reweight", thr_p=0.5, importance_sampling_level="sequence",
              loss_type="grpo", epsilon=0.2)
    tr.model.train()
    tr.current_gradient_accumulation_steps = 1
    inputs = tr._generate_and_score_completions(generation_batch())
    assert inputs["advantages"].dim() == 2
    mask = inputs["completion_mask"]
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
    attn = torch.cat([inputs["prompt_mask"], mask], 1)
    T = mask.shape[1]
    with torch.no_grad():
        lp0, _, _ = tr._get_per_token_logps_and_entropies(tr.model, ids, attn, T)
    gen = torch.Generator().manual_seed(1)
    shift = torch.tensor([0.5, -0.5])[torch.arange(lp0.shape[0]) % 2, None]  # s_j far from 1: some clipping
    inputs["old_per_token_logps"] = lp0 + shift + 0.3 * torch.randn(lp0.shape, generator=gen)

    def grads(loss):
        tr.model.zero_grad()
        loss.backward()
        return [p.grad.clone() for p in tr.model.parameters() if p.grad is not None]

    loss = tr.compute_loss(tr.model, inputs)
    got = grads(loss)
    lp, _, _ = tr._get_per_token_logps_and_entropies(tr.model, ids, attn, T)
    ref_loss, m = policy_loss(lp, inputs["old_per_token_logps"], inputs["advantages"], mask, loss_type="gspo_token",
                              clip_eps_low=0.2, clip_eps_high=0.2, aggregation="seq-mean-token-mean")
    assert m["loss/clip_frac"] > 0
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    for a, b in zip(got, grads(ref_loss)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    # TRL's own sequence-level ratio collapses the token advantages: a different gradient
    seq = GRPOTrainer._compute_loss(tr, tr.model, inputs)
    assert any(not torch.allclose(a, b, atol=1e-6) for a, b in zip(got, grads(seq)))


def test_lora_model_trains_with_thr(tiny_dir, tmp_path):
    peft = pytest.importorskip("peft")
    args = THRConfig(output_dir=str(tmp_path), **{**COMMON, "learning_rate": 5e-2}, thr_p=0.5)
    tr = THRGRPOTrainer(tiny_dir, parity_reward, args=args, train_dataset=Dataset.from_dict({"prompt": PROMPTS}),
                        processing_class=build_tokenizer(),
                        peft_config=peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    before = {k: v.detach().clone() for k, v in tr.model.named_parameters()}
    tr.train()
    log = tr.state.log_history[0]
    assert log["thr/frac_dominant"] > 0
    after = dict(tr.model.named_parameters())
    changed = {k for k, v in before.items() if not torch.equal(after[k].detach(), v)}
    assert changed and all("lora_" in k for k in changed)


def test_group_checks():
    check_whole_groups(8, 4, what="x")
    with pytest.raises(ValueError, match="multiple of num_generations=4"):
        check_whole_groups(6, 4, what="per_device_train_batch_size * steps_per_generation")
    ids = torch.tensor([[1, 2], [1, 2], [3, 4], [3, 4]])
    check_group_prompts(ids, torch.ones_like(ids), 2)
    with pytest.raises(RuntimeError, match="do not share one prompt"):
        check_group_prompts(ids[[0, 2, 1, 3]], torch.ones_like(ids), 2)
    with pytest.raises(TypeError, match="THRConfig"):
        THRGRPOTrainer("unused", parity_reward, args=GRPOConfig(output_dir="unused", use_cpu=True, bf16=False))
    with pytest.raises(ValueError, match="p must be in"):
        THRConfig(output_dir="unused", use_cpu=True, bf16=False, thr_p=1.0)


TWO_PROC_SCRIPT = """
import json, os, sys, torch
torch.set_num_threads(1)
from datasets import Dataset
from thr.integrations.trl import THRConfig, THRGRPOTrainer
from thr.models.tiny import build_tokenizer

class Recording(THRGRPOTrainer):
    def _apply_thr(self, out):
        super()._apply_thr(out)
        rec = {"rank": self.accelerator.process_index, "world": self.accelerator.num_processes,
               "prompts": out["prompt_ids"].tolist(), "adv_dim": out["advantages"].dim()}
        with open(os.path.join(sys.argv[2], f"rank{rec['rank']}_{self.state.global_step}.json"), "w") as f:
            json.dump(rec, f)

def reward(completion_ids, **_):
    return [float(len(c) > 0 and c[0] % 2 == 0) for c in completion_ids]

args = THRConfig(output_dir=sys.argv[2], per_device_train_batch_size=8, num_generations=4, max_completion_length=6,
                 max_steps=2, logging_steps=1, report_to="none", bf16=False, use_cpu=True, save_strategy="no",
                 learning_rate=1e-2, seed=0, thr_p=0.5, dataloader_num_workers=0)
ds = Dataset.from_dict({"prompt": ["1+1=", "2+3=", "4+4=", "5+1=", "6+2=", "7+7="]})
tr = Recording(sys.argv[1], reward, args=args, train_dataset=ds, processing_class=build_tokenizer())
tr.train()
"""


@pytest.mark.slow
def test_two_processes_keep_whole_groups(tiny_dir, tmp_path):
    script = tmp_path / "two_proc.py"
    script.write_text(textwrap.dedent(TWO_PROC_SCRIPT))
    out = tmp_path / "records"
    out.mkdir()
    # torchrun, not `accelerate launch --cpu --num_processes 2`: with accelerate 1.15 the latter starts one process
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port,
           str(script), tiny_dir, str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    records = [json.loads(p.read_text()) for p in sorted(Path(out).glob("rank*.json"))]
    assert {r["rank"] for r in records} == {0, 1} and all(r["world"] == 2 for r in records)
    assert len(records) == 4  # 2 steps x 2 processes
    by_step: dict[str, list[list]] = {}
    for path, r in zip(sorted(Path(out).glob("rank*.json")), records):
        assert r["adv_dim"] == 2 and len(r["prompts"]) == 2 * G  # two whole groups per process
        rows = r["prompts"]
        groups = [rows[i : i + G] for i in range(0, len(rows), G)]
        assert all(all(row == g[0] for row in g) for g in groups), "a group was split across processes"
        by_step.setdefault(path.stem.split("_")[1], []).append([tuple(g[0]) for g in groups])
    for ranks in by_step.values():  # the processes of one step hold different groups
        assert not set(ranks[0]) & set(ranks[1])
