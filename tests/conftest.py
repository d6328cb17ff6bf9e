"""Shared fixtures: a tiny policy warm-started on an easy arithmetic task (cached per session)."""

from __future__ import annotations

import pytest
import torch

# Tests run on CPU with deterministic small models; keep thread count stable for reproducibility.
torch.set_num_threads(1)  # tiny models: one thread is faster than two fighting over 2 cores

TINY_TASK = dict(task="arith", ops="+-", min_operands=2, max_operands=2, max_value=12, n_sft_examples=150, n_test=50)


def tiny_embedded_config():
    from thr.models.embedded import EmbeddedConfig

    return EmbeddedConfig(
        hidden_size=64, num_layers=2, num_heads=2, sft_steps=200, batch_size=32, lr=5e-3, warmup_steps=10,
        eval_problems=0, eval_pass_problems=0, max_new_tokens=32, **TINY_TASK,
    )


@pytest.fixture(scope="session")
def tiny_policy_dir(tmp_path_factory):
    """A ``save_pretrained`` directory of a tiny Qwen2 policy that solves some easy sums.

    Built by the project's own warm start (real SFT on the built-in task), so sampled groups have
    mixed rewards and RL steps have non-zero advantages.
    """
    from thr.models.embedded import warm_start

    cache = tmp_path_factory.mktemp("thr-cache")
    return warm_start(tiny_embedded_config(), cache_dir=cache, progress=False)
