"""The shipped warm start of the embedded default and what a few RL steps do to it.

These run on the real default (the shipped 230k-parameter model, the real task and reward), so
they check the testbed itself: the shipped files are intact and load with their prompt and
task; the base model sits where docs/embedded.md says; and RL moves it in the right direction
by a margin far above floating-point noise (checked under both CPU numerics,
ATEN_CPU_CAPABILITY=default and the native one; docs/embedded.md).
"""

from __future__ import annotations

import pytest
import torch

from thr.models.embedded import EmbeddedConfig, cache_key, load_info, warm_start
from thr.models.shipped import shipped_path


@pytest.fixture(scope="module")
def shipped():
    path = shipped_path(cache_key(EmbeddedConfig()))
    assert path is not None, "the default recipe's warm start must ship in src/thr/models/embedded_weights/ with intact hashes"
    return path


def test_default_recipe_resolves_to_the_shipped_warm_start(shipped, tmp_path):
    from thr.data.prompts import load_prompt_info

    assert warm_start(cache_dir=tmp_path, progress=False) == shipped  # no training on an empty cache
    info = load_info(shipped)
    assert info["warnings"] == [] and info["config"]["task"] == "columns"
    report = info["eval"]["imitation"]
    assert report["excess_per_token"] < 0.01  # at the plateau: the teacher's entropy floor
    assert abs(report["model_success"] - report["teacher_success"]) < 0.05
    assert 0.25 <= info["eval"]["greedy"]["accuracy"] <= 0.5
    prompt = load_prompt_info(shipped)
    assert prompt["prompt_template"] == "plain" and prompt["task"]["name"] == "columns"


def test_a_few_rl_steps_raise_the_right_solutions_likelihood(shipped, tmp_path, monkeypatch):
    """Eight steps of the default (GRPO + THR p=0.2, lr 3e-4) raise the mean log-probability of
    the right worked solutions of held-out problems by more than half a nat (1.23 measured, the same
    under both CPU numerics; printed with -s)."""
    from thr.config import load_config
    from thr.data.problems import load_task
    from thr.models.imitation import solution_log_probs
    from thr.rl.trainer import Trainer
    from thr.rl.config import TrainConfig

    monkeypatch.setenv("THR_CACHE_DIR", str(tmp_path / "cache"))  # never the user's cache
    cfg = load_config(TrainConfig, [f"output_dir={tmp_path / 'run'}", "steps=8", "data.eval=", "log.progress=false",
                                    "log.groups_every=0", "save_every=0"])
    trainer = Trainer(cfg)
    problems = load_task("columns", "test", **cfg.embedded.task_kwargs())[:64]
    rows = [{"problem": p.problem, "solution": p.meta["solution"]} for p in problems]
    before, _ = solution_log_probs(trainer.model, trainer.tokenizer, rows)
    trainer.train()
    after, _ = solution_log_probs(trainer.model, trainer.tokenizer, rows)
    gain = float((after - before).mean())
    print(f"mean log-prob gain of the right solutions after 8 steps: {gain:.3f} nats")
    assert gain > 0.5, f"mean log-prob gain of the right solutions: {gain:.3f} nats"
    assert torch.isfinite(after).all()
