"""Every YAML preset loads into TrainConfig and validates; the loader's override rules."""

from dataclasses import asdict
from pathlib import Path

import pytest

from thr.config import load_config, parse_cli
from thr.rl.config import TrainConfig

PRESETS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", PRESETS, ids=[p.name for p in PRESETS])
def test_preset_loads_and_validates(path):
    cfg = load_config(TrainConfig, ["--config", str(path)])
    assert isinstance(cfg, TrainConfig)


def test_paper_recipe_values():
    cfg = load_config(TrainConfig, ["--config", str(Path(__file__).resolve().parents[1] / "configs/qwen2.5-math-1.5b.yaml")])
    assert (cfg.rollout.group_size, cfg.rollout.temperature, cfg.optim.clip_eps_low, cfg.optim.lr) == (8, 1.0, 0.2, 1e-6)
    assert (cfg.rollout.prompts_per_step, cfg.rollout.max_new_tokens) == (256, 3072)
    assert Path(__file__).resolve().parents[1].joinpath(cfg.data.train).is_file()


def test_embedded_preset_is_the_builtin_default():
    cfg = load_config(TrainConfig, ["--config", str(Path(__file__).resolve().parents[1] / "configs/embedded.yaml")])
    assert asdict(cfg) == asdict(load_config(TrainConfig, []))


def test_embedded_task_and_data_must_agree():
    with pytest.raises(ValueError, match="data.train=columns but embedded.task=arith"):
        load_config(TrainConfig, ["embedded.task=arith"])
    with pytest.raises(ValueError, match=r"embedded\.\*: ops_per_problem, event_weights"):
        load_config(TrainConfig, ["embedded.ops_per_problem=5"])
    cfg = load_config(TrainConfig, ["embedded.task=arith", "data.train=arith", "data.eval=arith"])
    assert cfg.embedded.task == "arith"


def test_override_priority_and_forms(tmp_path):
    preset = tmp_path / "x.yaml"
    preset.write_text("thr:\n  p: 0.3\nsteps: 5\n")
    cfg = load_config(TrainConfig, ["--config", str(preset), "thr.p=-0.2", "--optim.lr", "3e-4", "--resume"])
    assert cfg.thr.p == -0.2 and cfg.steps == 5 and cfg.optim.lr == 3e-4 and cfg.resume is True
    assert parse_cli(["--log-progress=false"])[1] == {"log_progress": "false"}


def test_yaml_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("thr:\n  pp: 0.3\n")
    with pytest.raises(ValueError, match=r"bad.yaml: unknown config key 'thr.pp'. Did you mean 'p'"):
        load_config(TrainConfig, ["--config", str(bad)])
    with pytest.raises(ValueError, match="does not exist"):
        load_config(TrainConfig, ["--config", str(tmp_path / "missing.yaml")])
