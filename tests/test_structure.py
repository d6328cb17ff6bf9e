"""The package's structure: the registries, the one config mechanism, the generated --help, the layers."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
import typing
from pathlib import Path
from typing import Literal

import pytest
import torch

from thr.config import Range, check_choices, from_env, load_config
from thr.core import AGGREGATIONS, POLICY_LOSSES, TOKEN_ADVANTAGE_MODES, policy_loss, steered_advantages
from thr.core.weights import influence_threshold
from thr.rl.config import TrainConfig
from thr.rl.steering import THRSettings, steer

SRC = Path(__file__).resolve().parents[1] / "src" / "thr"


def _group_batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    B, T = 8, 6
    advantages = torch.randn(B, generator=g, dtype=torch.float64)
    influence = torch.randn(B, T, generator=g, dtype=torch.float64)
    entropy = torch.rand(B, T, generator=g, dtype=torch.float64)
    mask = torch.rand(B, T, generator=g) > 0.2
    positive = torch.tensor([True, False, True, False, False, True, False, True])
    return advantages, influence, entropy, mask, positive


def test_every_token_advantage_mode_is_registered_and_dispatch_equals_the_direct_call():
    assert set(TOKEN_ADVANTAGE_MODES) == {"off", "reweight", "dominant", "entropy"}
    advantages, influence, entropy, mask, positive = _group_batch()
    thr = advantages[:, None] * influence
    tau = influence_threshold(influence, mask, positive, group_size=4)
    for mode, fn in TOKEN_ADVANTAGE_MODES.items():
        got, metrics = steered_advantages(advantages, influence, mask, positive, group_size=4, mode=mode, p=0.3,
                                          entropy=entropy)
        direct, direct_metrics = fn(advantages, thr, influence, mask, tau, p=0.3, entropy=entropy, fraction=0.2)
        assert torch.equal(got, direct), mode
        assert {k: v for k, v in metrics.items() if k != "thr/tau_mean"} == direct_metrics, mode
        settings = THRSettings(mode=mode, p=0.3)
        via_settings, _ = steer(settings, advantages, influence, mask, positive, group_size=4, entropy=entropy)
        assert torch.equal(via_settings, got), mode


def test_every_loss_and_aggregation_is_registered_and_dispatch_equals_the_direct_call():
    assert set(POLICY_LOSSES) == {"grpo", "gspo_token"}
    assert set(AGGREGATIONS) == {"token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"}
    g = torch.Generator().manual_seed(1)
    old = torch.randn(4, 5, generator=g, dtype=torch.float64)
    logp = (old + 0.1 * torch.randn(4, 5, generator=g, dtype=torch.float64)).requires_grad_()
    adv = torch.randn(4, 5, generator=g, dtype=torch.float64)
    mask = torch.rand(4, 5, generator=g) > 0.3
    for loss_type, ratio_fn in POLICY_LOSSES.items():
        for aggregation, agg_fn in AGGREGATIONS.items():
            loss, _ = policy_loss(logp, old, adv, mask, loss_type=loss_type, aggregation=aggregation, clip_eps_low=0.1,
                                  clip_eps_high=0.3)
            ratio, _ = ratio_fn(logp, old, mask)
            mat = -torch.minimum(ratio * adv, ratio.clamp(0.9, 1.3) * adv)
            direct = agg_fn(mat, mask.double(), None, None, None)
            assert torch.equal(loss, direct), (loss_type, aggregation)


def test_config_choices_come_from_the_registries():
    hints = typing.get_type_hints(type(TrainConfig().thr))
    assert typing.get_args(hints["mode"]) == tuple(TOKEN_ADVANTAGE_MODES)
    optim = typing.get_type_hints(type(TrainConfig().optim))
    assert typing.get_args(optim["loss_type"]) == tuple(POLICY_LOSSES)
    assert typing.get_args(optim["aggregation"]) == tuple(AGGREGATIONS)


@dataclasses.dataclass
class _Toy:
    """A toy config.

    color: a choice.
    size: a bounded number.
    """

    color: Literal["red", "blue"] = "red"
    size: typing.Annotated[int, Range(ge=1, le=9)] = 3


def test_literal_choices_and_range_bounds_are_validated_from_the_type():
    assert load_config(_Toy, ["color=blue", "--size", "9"]) == _Toy("blue", 9)
    with pytest.raises(ValueError, match=r"color='green' is not valid; choose one of \['red', 'blue'\]"):
        load_config(_Toy, ["color=green"])
    with pytest.raises(ValueError, match="size must be <= 9, got 10"):
        load_config(_Toy, ["size=10"])
    with pytest.raises(ValueError, match=r"color='pink' is not valid"):
        check_choices(_Toy(color="pink"))  # a config built in code
    with pytest.raises(ValueError, match="size must be >= 1, got 0"):
        check_choices(_Toy(size=0))
    with pytest.raises(ValueError, match="thr.mode='sometimes' is not valid"):
        TrainConfig(thr=dataclasses.replace(TrainConfig().thr, mode="sometimes")).validate()
    assert from_env(_Toy, {"TOY_COLOR": "blue", "TOY_SIZE": ""}, "TOY_") == _Toy("blue", 3)


def _help_lines(module: str, argv: list[str], capsys) -> list[str]:
    import importlib

    assert importlib.import_module(module).cli_main(argv) == 0
    return capsys.readouterr().out.splitlines()


@pytest.mark.parametrize("module, cfg_path", [
    ("thr.rl.trainer", "thr.rl.config:TrainConfig"),
    ("thr.eval.run", "thr.eval.run:EvalConfig"),
    ("thr.analysis.analyze", "thr.analysis.analyze:AnalyzeConfig"),
    ("thr.analysis.report", "thr.analysis.report:ReportConfig"),
])
def test_help_of_every_command_lists_every_field_with_type_default_and_doc(module, cfg_path, capsys):
    import importlib

    mod, name = cfg_path.split(":")
    cfg = getattr(importlib.import_module(mod), name)()
    lines = _help_lines(module, ["--help"], capsys)

    def check(section, prefix=""):
        for f in dataclasses.fields(section):
            value = getattr(section, f.name)
            if dataclasses.is_dataclass(value):
                check(value, f"{prefix}{f.name}.")
                continue
            line = next((x for x in lines if x.split()[:1] == [f"--{prefix}{f.name}"]), None)
            assert line is not None, f"--{prefix}{f.name} missing from {module} --help"
            _, type_name, word, default, *doc = line.split()
            assert word == "default" and type_name and default and doc, line
            assert "(undocumented)" not in line, f"{type(section).__name__}.{f.name} needs a 'name: text' doc line"

    check(cfg)


def test_one_thr_settings_dataclass_for_the_trainer_and_the_adapters():
    from thr.integrations.verl import settings_from_env

    assert issubclass(type(TrainConfig().thr), THRSettings)
    assert settings_from_env({"THR_MODE": "dominant", "THR_P": "0.1"}) == THRSettings(mode="dominant", p=0.1)
    trl = pytest.importorskip("thr.integrations.trl")
    names = {f.name for f in dataclasses.fields(trl.THRConfig) if f.name.startswith("thr_")}
    assert names == {f"thr_{f.name}" for f in dataclasses.fields(THRSettings)} | {"thr_log_metrics"}


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return out


def test_core_imports_only_torch_and_the_standard_library():
    for path in (SRC / "core").glob("*.py"):
        for name in _imports(path):
            top = name.split(".")[0]
            assert top == "torch" or top in sys.stdlib_module_names or name == "__future__", (path.name, name)


def test_configs_do_not_load_the_warm_start_or_the_trainer():
    code = ("import sys, thr.rl.config, thr.eval.run, thr.analysis.report; "
            "print(sorted(m for m in sys.modules if m in ('thr.models.embedded', 'thr.rl.trainer', 'thr.models.sft')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_no_module_over_500_lines_and_no_function_over_80():
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        assert len(text.splitlines()) <= 500, path
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert node.end_lineno - node.lineno + 1 <= 80, f"{path}:{node.name}"
