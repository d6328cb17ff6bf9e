"""examples/verl/run_grpo_thr.sh: its overrides compose with verl's Hydra config and pass ``ray.init``.

The script is run as written with a stand-in ``python3`` first on ``PATH`` that records its
arguments; they are composed with verl 0.9.1's own ``ppo_trainer`` config, and verl's
``run_ppo`` builds the runtime env and calls the real ``ray.init`` with it (a local Ray; the
task runner is a stub that stops right after). Needs verl and Ray (the ``verl-cpu`` extra).
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("verl", reason="needs verl (pip install -e '.[verl-cpu]'; see docs/integrations.md)")
ray = pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "verl" / "run_grpo_thr.sh"
THR_VARS = ["THR_MODE", "THR_P", "THR_THRESHOLD", "THR_BETA", "THR_QUANTILE", "THR_VALUE", "THR_POSITIVE_REWARD",
            "THR_CHUNK_SIZE", "THR_METHOD"]


def script_overrides(tmp_path: Path, script: Path = SCRIPT, **env: str) -> list[str]:
    """The Hydra overrides ``script`` passes to ``python3 -m verl.trainer.main_ppo``."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "python3"
    fake.write_text('#!/usr/bin/env bash\nprintf "%s\\0" "$@" > "$ARGS_OUT"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    out = tmp_path / "args"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("THR_")}
    subprocess.run(["bash", str(script)], check=True, timeout=60,
                   env={**clean, **env, "PATH": f"{bindir}:{clean['PATH']}", "ARGS_OUT": str(out)})
    args = out.read_bytes().decode().split("\0")[:-1]
    assert args[:2] == ["-m", "verl.trainer.main_ppo"], args[:2]
    return args[2:]


def compose(overrides: list[str]):
    import verl
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    config_dir = str(Path(verl.__file__).parent / "trainer" / "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        return hydra_compose(config_name="ppo_trainer", overrides=overrides)


class _Stop(Exception):
    pass


class _StubRunner:
    @staticmethod
    def remote(*_a, **_k):
        raise _Stop

    @classmethod
    def options(cls, **_k):
        return cls


def ray_init_like_verl(config) -> dict:
    """verl's ``run_ppo`` up to and including ``ray.init``; returns the workers' env vars."""
    from verl.trainer.main_ppo import run_ppo

    assert not ray.is_initialized()
    try:
        with pytest.raises(_Stop):
            run_ppo(config, _StubRunner)
        return dict(ray.get_runtime_context().runtime_env.get("env_vars", {}))
    finally:
        ray.shutdown()


def test_script_overrides_pass_ray_init(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_DEDUP_LOGS", "0")
    overrides = script_overrides(tmp_path, THR_P="0.3", THR_CHUNK_SIZE="512", THR_POSITIVE_REWARD="1")
    config = compose(overrides)
    env = config.ray_kwargs.ray_init.runtime_env.env_vars
    assert sorted(k for k in env if k.startswith("THR_")) == sorted(THR_VARS)  # all nine are forwarded
    assert all(isinstance(v, str) for v in env.values()), {k: type(v).__name__ for k, v in env.items()}
    assert config.algorithm.adv_estimator == "grpo_thr" and config.trainer.use_v1
    config.ray_kwargs.ray_init.num_cpus = 1
    got = ray_init_like_verl(config)
    assert got["VERL_USE_EXTERNAL_MODULES"] == "thr.integrations.verl"
    assert (got["THR_P"], got["THR_CHUNK_SIZE"], got["THR_POSITIVE_REWARD"], got["THR_MODE"]) == ("0.3", "512", "1", "reweight")
    from thr.integrations.verl import settings_from_env

    s = settings_from_env(got)  # what the workers will read
    assert (s.p, s.chunk_size, s.positive_reward, s.quantile, s.method) == (0.3, 512, 1.0, 0.2, "auto")
