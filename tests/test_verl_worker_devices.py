"""The verl worker's influence step (``influence_field``) with the batch on the CPU and the states on another device.

On a verl GPU worker the batch read from TransferQueue (ids, response masks, jagged offsets) stays on
the CPU while the captured hidden states and the gathered LM head live on CUDA. These tests run
that exact split: on CUDA when a GPU is present (real ``token_influence``, values checked against
``thr.core`` on the CPU); everywhere, on the ``meta`` device, which stands in for a second device
on CPU-only machines: torch refuses to mix meta and CPU tensors in one op as it refuses CUDA and
CPU. On meta ``token_influence`` cannot compute values, so it is replaced by a stand-in that checks
device agreement of its arguments and returns zeros on the states' device; the nested-tensor
construction is real torch in both cases.
"""

from __future__ import annotations

import pytest
import torch

import thr.integrations._verl_worker as worker
from thr.core import token_influence

DEVICES = ["meta"] + (["cuda"] if torch.cuda.is_available() else [])


def _batch(G=4, groups=2, d=8, V=13, seed=0):
    """A rank's batch as verl holds it: jagged ids/masks on CPU, states per row, rewards, uids."""
    gen = torch.Generator().manual_seed(seed)
    B = G * groups
    prompt = torch.randint(2, 5, (B,), generator=gen)
    resp = torch.randint(1, 6, (B,), generator=gen)
    ids = [torch.randint(0, V, (int(p + r),), generator=gen) for p, r in zip(prompt, resp)]
    masks = [torch.ones(int(r), dtype=torch.int64) for r in resp]
    masks[1][-1] = 0  # a masked-out last token
    states = [torch.randn(int(r), d, generator=gen, dtype=torch.float32) for r in resp]
    W = torch.randn(V, d, generator=gen)
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0] * groups)[:B]
    uids = [f"u{i // G}" for i in range(B)]
    cfg = {"group_size": G, "temperature": 1.0, "positive_reward": None, "chunk_size": 1024, "method": "auto"}
    return states, torch.nested.nested_tensor(ids, layout=torch.jagged), masks, uids, rewards, W, cfg


def _device_checking_influence(hidden_states, lm_head_weight, response_ids, response_mask, positive, **_):
    devices = {t.device for t in (hidden_states, lm_head_weight, response_ids, response_mask, positive)}
    if len(devices) != 1:
        raise RuntimeError(f"Expected all tensors to be on the same device, but found {sorted(map(str, devices))}")
    return torch.zeros(response_ids.shape, dtype=torch.float32, device=hidden_states.device)


@pytest.mark.parametrize("device", DEVICES)
def test_influence_step_with_cpu_batch_and_device_states(device, monkeypatch):
    states, ids, masks, uids, rewards, W, cfg = _batch()
    if device == "meta":
        monkeypatch.setattr(worker, "token_influence", _device_checking_influence)
    out = worker.influence_field([s.to(device) for s in states], ids, masks, uids, rewards, W.to(device), cfg)
    assert out.is_nested and out.device.type == torch.device(device).type
    assert out.offsets().device == out.values().device
    if device == "meta":  # meta tensors hold no data: layout only
        assert out.offsets().shape == ids.offsets().shape and out.values().shape == (int(ids.offsets()[-1]),)
        return
    assert torch.equal(out.offsets().cpu(), ids.offsets())
    want = _reference(states, ids, masks, rewards, W, cfg)
    torch.testing.assert_close(out.values().cpu(), want, rtol=1e-5, atol=1e-6)


def _reference(states, ids, masks, rewards, W, cfg):
    """thr.core on the padded CPU batch, placed like verl's log-probs."""
    G = cfg["group_size"]
    lens = [m.shape[0] for m in masks]
    T = max(lens)
    H = torch.zeros(len(states), T, W.shape[1])
    Y = torch.zeros(len(states), T, dtype=torch.long)
    M = torch.zeros(len(states), T, dtype=torch.bool)
    for i, (s, x, m) in enumerate(zip(states, ids.unbind(), masks)):
        H[i, : lens[i]], Y[i, : lens[i]], M[i, : lens[i]] = s, x[-lens[i]:], m.bool()
    mean = rewards.view(-1, G).mean(1).repeat_interleave(G)
    s = token_influence(H, W, Y, M, rewards > mean, group_size=G)
    seq_lens = ids.offsets().diff().tolist()
    return worker.sequence_layout([s[i, : lens[i]].float() for i in range(len(lens))], seq_lens, lens)


def test_influence_step_values_on_cpu():
    states, ids, masks, uids, rewards, W, cfg = _batch(seed=1)
    out = worker.influence_field(states, ids, masks, uids, rewards, W, cfg)
    torch.testing.assert_close(out.values(), _reference(states, ids, masks, rewards, W, cfg), rtol=1e-5, atol=1e-6)
    assert bool(out.values().abs().sum() > 0)
