"""Tests of the embedded warm start (thr.models.embedded) with a very small, fast config."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest
import torch

from thr.models.embedded import (
    INFO_FILE,
    EmbeddedConfig,
    cache_key,
    default_cache_dir,
    load_info,
    warm_start,
)
from thr.models.sft import encode_sft, lr_at

TINY = EmbeddedConfig(
    task="arith",
    hidden_size=32,
    num_layers=1,
    num_heads=2,
    sft_steps=40,
    batch_size=16,
    lr=3e-3,
    warmup_steps=5,
    n_sft_examples=300,
    n_test=20,
    target_val_accuracy=1.0,  # never reached: checks run at steps 20, 30, 40 and training goes on
    val_problems=8,
    check_after=20,
    check_every=10,
    eval_problems=4,
    eval_pass_problems=2,
    eval_pass_k=2,
    max_new_tokens=8,
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return warm_start(TINY, cache_dir=tmp_path_factory.mktemp("cache"), progress=False)


def test_warm_start_writes_loadable_model(trained: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert trained.name == cache_key(TINY)
    model = AutoModelForCausalLM.from_pretrained(trained)
    tok = AutoTokenizer.from_pretrained(trained)
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert tok("Solution: 7")["input_ids"] == list(b"Solution: 7")
    assert tok.eos_token_id == model.config.eos_token_id
    out = model.generate(
        **tok(["Problem: Compute 1+2.\nSolution:"], return_tensors="pt"), max_new_tokens=4, do_sample=False
    )
    assert out.shape[1] > 0
    info = load_info(trained)
    assert info["config"] == dataclasses.asdict(TINY)
    assert info["n_params"] == sum(p.numel() for p in model.parameters())
    assert info["wall_seconds"] > 0 and set(info["eval"]) == {"greedy", "sample_t1_k2"}
    assert 0.0 <= info["eval"]["greedy"]["accuracy"] <= 1.0
    assert info["sft_steps_run"] == TINY.sft_steps
    assert [step for step, _ in info["val_accuracy"]] == [20, 30, 40]


def test_loss_goes_down(trained: Path) -> None:
    loss = load_info(trained)["loss"]
    assert loss["last10_mean"] < 0.7 * loss["first"]
    assert loss["curve"][-1] < loss["curve"][0]


def test_cache_is_reused(trained: Path) -> None:
    stamp = (trained / INFO_FILE).stat().st_mtime_ns
    start = time.perf_counter()
    again = warm_start(TINY, cache_dir=trained.parent, progress=False)
    assert again == trained and time.perf_counter() - start < 1.0
    assert (trained / INFO_FILE).stat().st_mtime_ns == stamp
    assert sorted(p.name for p in trained.parent.iterdir()) == [trained.name]


def test_reproducible_and_force(trained: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    other = warm_start(TINY, cache_dir=tmp_path, progress=False)
    a, b = load_file(trained / "model.safetensors"), load_file(other / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    stamp = (other / INFO_FILE).stat().st_mtime_ns
    forced = warm_start(TINY, cache_dir=tmp_path, progress=False, force=True)
    assert forced == other and (other / INFO_FILE).stat().st_mtime_ns != stamp
    assert sorted(p.name for p in tmp_path.iterdir()) == [other.name]


def test_interrupted_run_leaves_nothing(tmp_path: Path) -> None:
    def boom(step: int, loss: float) -> None:
        if step == 3:
            raise KeyboardInterrupt("simulated kill")

    cfg = dataclasses.replace(TINY, seed=7)
    with pytest.raises(KeyboardInterrupt):
        warm_start(cfg, cache_dir=tmp_path, progress=False, on_step=boom)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_force_keeps_old_entry(trained: Path) -> None:
    def boom(step: int, loss: float) -> None:
        raise RuntimeError("fail")

    with pytest.raises(RuntimeError):
        warm_start(TINY, cache_dir=trained.parent, progress=False, force=True, on_step=boom)
    assert sorted(p.name for p in trained.parent.iterdir()) == [trained.name]
    assert load_info(trained)["config"] == dataclasses.asdict(TINY)


def test_encode_sft_masks_prompt() -> None:
    from thr.models.tiny import build_tokenizer

    tok = build_tokenizer()
    ex = [
        {"problem": "Compute 1+2.", "solution": " 1+2=3. \\boxed{3}", "answer": "3"},
        {"problem": "Compute 10+20+3.", "solution": " 10+20=30. 30+3=33. \\boxed{33}", "answer": "33"},
    ]
    ids, labels = encode_sft(tok, ex)
    prompt_len = len("Problem: Compute 1+2.\nSolution:")
    assert ids.shape == labels.shape and ids.shape[0] == 2
    assert (labels[0, :prompt_len] == -100).all()
    target = labels[0][labels[0] != -100].tolist()
    assert target == list(ex[0]["solution"].encode()) + [tok.eos_token_id]
    assert ids[0, prompt_len + len(target) :].eq(tok.pad_token_id).all()


def test_config_validation_key_and_schedule(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="arch"):
        EmbeddedConfig(arch="gpt2").validate()  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="divisible"):
        EmbeddedConfig(hidden_size=30, num_heads=4).validate()
    with pytest.raises(ValueError, match="ops"):
        EmbeddedConfig(task="arith", ops="/").validate()
    with pytest.raises(ValueError, match="event_weights"):
        EmbeddedConfig(event_weights="1,x").validate()
    with pytest.raises(ValueError, match="carry_slip"):
        EmbeddedConfig(carry_slip=1.5).validate()
    with pytest.raises(ValueError, match="eval_problems"):
        EmbeddedConfig(n_test=10, eval_problems=20).validate()
    assert cache_key(TINY) == cache_key(dataclasses.replace(TINY))
    assert cache_key(TINY) != cache_key(dataclasses.replace(TINY, sft_steps=41))
    # what does not change the weights does not change the key: evaluation-only and other-task fields
    for change in ({"max_new_tokens": 99}, {"eval_problems": 3}, {"use_shipped": False}, {"carry_slip": 0.5}):
        assert cache_key(TINY) == cache_key(dataclasses.replace(TINY, **change)), change
    columns_cfg = EmbeddedConfig()
    assert cache_key(columns_cfg) == cache_key(dataclasses.replace(columns_cfg, ops="+", val_problems=7))
    assert cache_key(columns_cfg) == cache_key(dataclasses.replace(columns_cfg, target_val_accuracy=0))  # int == float
    assert cache_key(columns_cfg) != cache_key(dataclasses.replace(columns_cfg, carry_slip=0.6))
    assert cache_key(TINY) != cache_key(dataclasses.replace(TINY, val_problems=9))  # it has a target: it trains on it
    assert lr_at(0, TINY) == pytest.approx(TINY.lr / 5)
    assert lr_at(4, TINY) == pytest.approx(TINY.lr)
    assert lr_at(TINY.sft_steps, TINY) == pytest.approx(TINY.lr * TINY.min_lr_ratio)
    monkeypatch.setenv("THR_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("THR_CACHE_DIR")
    assert default_cache_dir() == Path.home() / ".cache" / "thr" / "embedded"


def test_stops_at_accuracy_target(monkeypatch: pytest.MonkeyPatch) -> None:
    from thr.models import sft
    from thr.models.tiny import build_model, build_tokenizer

    seen: list[int] = []

    def fake_accuracy(model, tokenizer, problems, cfg) -> float:
        seen.append(len(problems))
        return 0.5 if len(seen) == 2 else 0.1

    monkeypatch.setattr(sft, "_val_accuracy", fake_accuracy)
    tok = build_tokenizer()
    model = build_model(tok, hidden_size=32, num_layers=1, num_heads=2)
    cfg = dataclasses.replace(TINY, target_val_accuracy=0.4)
    out = sft.sft_train(model, tok, cfg, progress=False)
    assert out["steps"] == 30 and len(out["losses"]) == 30
    assert out["val"] == [[20, 0.1], [30, 0.5]] and seen == [8, 8]


def test_columns_warm_start_reports_its_plateau_and_ships(tmp_path: Path, monkeypatch, capsys) -> None:
    """A short columns warm start is far from its plateau and says so; exported with a manifest,
    it is what warm_start returns for that recipe on an empty cache, until a file is altered."""
    from thr.models import shipped

    cfg = EmbeddedConfig(hidden_size=32, num_layers=1, num_heads=2, sft_steps=20, batch_size=8, warmup_steps=5,
                         n_sft_examples=200, n_test=20, val_problems=16, eval_problems=4, eval_pass_problems=2,
                         eval_pass_k=2, max_new_tokens=140)
    path = warm_start(cfg, cache_dir=tmp_path / "cache", progress=False)
    info = load_info(path)
    report = info["eval"]["imitation"]
    assert report["n_problems"] == 16 and 0 < report["floor_per_token"] < report["loss_per_token"]
    assert report["excess_per_token"] > 0.05  # 20 steps: nowhere near the teacher's entropy floor
    assert any("plateau" in w for w in info["warnings"]) and "plateau" in capsys.readouterr().err
    root = tmp_path / "ship"
    dest = shipped.export(path, command="test", root=root)
    assert dest.name == path.name and shipped.shipped_path(path.name, root=root) == dest
    monkeypatch.setattr(shipped, "SHIPPED_ROOT", root)
    assert warm_start(cfg, cache_dir=tmp_path / "empty", progress=False) == dest  # no training
    assert not (tmp_path / "empty" / path.name).exists()
    assert warm_start(cfg, cache_dir=tmp_path / "cache", progress=False) == dest  # shipped beats a local copy
    assert warm_start(dataclasses.replace(cfg, use_shipped=False), cache_dir=tmp_path / "cache", progress=False) == path
    with pytest.raises(ValueError, match="already a shipped"):
        shipped.export(dest, command="test", root=root)
    (dest / "extra.txt").write_text("not in the manifest")
    assert shipped.shipped_path(path.name, root=root) is None  # every file must be listed
    (dest / "extra.txt").unlink()
    assert shipped.shipped_path(path.name, root=root) == dest
    with (dest / "model.safetensors").open("r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02")
    assert shipped.shipped_path(path.name, root=root) is None
