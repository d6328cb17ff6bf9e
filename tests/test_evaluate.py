"""Tests for thr.eval.evaluate: the Pass@K estimator, metrics, resume/rescore and the ``thr eval`` command."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
import json
from math import comb
from pathlib import Path
from typing import Any

import pytest
import torch

from thr.data.problems import Problem, load_problems
from thr.eval.run import EvalConfig, cli_main
from thr.eval.evaluate import (
    compute_metrics,
    evaluate_problems,
    k_values,
    pass_at_k,
    read_records,
    score_response,
)
from thr.models.tiny import build_model, build_tokenizer



@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny models: extra threads only contend on a shared 2-core box (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _brute_pass_at_k(n: int, c: int, k: int) -> float:
    """Share of k-subsets of n samples (the first c correct) holding at least one correct sample."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 10])
def test_pass_at_k_matches_brute_force(n: int) -> None:
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(_brute_pass_at_k(n, c, k), abs=1e-12)


def test_pass_at_k_large_n_is_stable() -> None:
    assert pass_at_k(1024, 1, 1) == pytest.approx(1 / 1024)
    assert pass_at_k(1024, 0, 512) == 0.0 and pass_at_k(1024, 600, 512) == 1.0
    exact = 1 - comb(1024 - 3, 256) / comb(1024, 256)
    assert pass_at_k(1024, 3, 256) == pytest.approx(exact, rel=1e-12)
    values = [pass_at_k(256, 5, k) for k in k_values(256)]
    assert values == sorted(values)
    with pytest.raises(ValueError, match="0 <= c <= n"):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError, match="1 <= k <= n"):
        pass_at_k(4, 1, 5)


def test_k_values() -> None:
    assert k_values(1) == [1] and k_values(16) == [1, 2, 4, 8, 16] and k_values(6) == [1, 2, 4, 6]


def test_compute_metrics_and_scoring() -> None:
    problems = [Problem(str(i), f"q{i}", "4", "toy") for i in range(2)]
    rec = lambda ok, reason="stop": {"correct": ok, "finish_reason": reason, "num_tokens": 5}
    records = {("toy", "0", "greedy", 0): rec(True), ("toy", "1", "greedy", 0): rec(False, "length")}
    records.update({("toy", "0", "sample", s): rec(s < 2) for s in range(4)})
    records.update({("toy", "1", "sample", s): rec(False) for s in range(4)})
    m = compute_metrics(problems, records, n=4, greedy=True)
    assert m["greedy_accuracy"] == 0.5 and m["greedy_truncated"] == 0.5 and m["num_problems"] == 2
    assert m["pass@1"] == pytest.approx(0.25) and m["mean@4"] == pytest.approx(0.25)
    assert m["pass@2"] == pytest.approx((1 - 1 / 6) / 2) and m["pass@4"] == 0.5
    del records[("toy", "1", "sample", 3)]
    with pytest.raises(ValueError, match="no sample generation #3 for toy problem '1'"):
        compute_metrics(problems, records, n=4, greedy=True)
    assert score_response("so \\boxed{4}", "stop", "4") == (True, "4")
    assert score_response("so \\boxed{4}", "length", "4") == (False, "4")
    assert score_response("so \\boxed{4}", "length", "4", score_truncated=True)[0] is True
    assert score_response("", "stop", "4") == (False, None)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny_eval")
    tok = build_tokenizer()
    build_model(tok, hidden_size=64, num_layers=2, max_position_embeddings=2048).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_evaluate_problems_resume_reproduces_uninterrupted_run(tiny_dir: Path, tmp_path: Path) -> None:
    from thr.eval.evaluate import load_model

    model, tok = load_model(str(tiny_dir))
    problems = load_problems("arith", split="test", limit=5)
    opts: dict[str, Any] = dict(n=4, max_new_tokens=6, batch_size=8, prompt_template="plain", seed=3)
    records = tmp_path / "gen.jsonl"
    full = evaluate_problems(model, tok, problems, records_path=records, **opts)
    assert set(full) >= {"greedy_accuracy", "pass@1", "pass@2", "pass@4", "mean@4", "num_problems", "truncated"}
    lines = records.read_text().splitlines()
    assert len(lines) == 5 * (1 + 4)
    # simulate a kill: the last sampling chunk (2 problems x 4 samples) lost, a torn line left behind
    records.write_text("\n".join(lines[:-8]) + "\n" + lines[-8][:20])
    again = evaluate_problems(model, tok, problems, records_path=records, **opts)
    assert again == full
    after = {k: (r["response"], r["correct"]) for k, r in read_records(records).items()}
    before = {_key(r): (r["response"], r["correct"]) for r in map(json.loads, lines)}
    assert after == before  # regenerated chunk identical to the first run
    size = records.stat().st_size
    evaluate_problems(model, tok, problems, records_path=records, **opts)
    assert records.stat().st_size == size  # complete: nothing regenerated
    fresh = evaluate_problems(model, tok, problems, records_path=records, **{**opts, "max_new_tokens": 5})
    assert records.stat().st_size > size and fresh["mean_response_tokens"] <= 5  # other settings: regenerated


def _key(r: dict[str, Any]) -> tuple[str, str, str, int]:
    return (r["source"], r["problem_id"], r["mode"], r["sample"])


def test_empty_completion_is_wrong_not_a_crash(tiny_dir: Path) -> None:
    from thr.eval.evaluate import load_model

    model, tok = load_model(str(tiny_dir))
    handle = model.lm_head.register_forward_hook(lambda _m, _i, out: out + 1e4 * torch.nn.functional.one_hot(
        torch.tensor(tok.eos_token_id), out.shape[-1]).to(out.dtype))  # fmt: skip
    try:
        m = evaluate_problems(model, tok, load_problems("gsm8k", limit=2), n=2, max_new_tokens=4, prompt_template="plain")
    finally:
        handle.remove()
    assert m["greedy_accuracy"] == 0.0 and m["pass@2"] == 0.0 and m["truncated"] == 0.0


def test_correct_answers_are_counted(tiny_dir: Path, tmp_path: Path) -> None:
    """Hooks make the real model answer "7" then EOS: gold 7 counts as solved, gold 8 does not."""
    from thr.eval.evaluate import load_model

    model, tok = load_model(str(tiny_dir))
    state = {"prefill": False}

    def see_input(_m: Any, args: tuple[torch.Tensor, ...]) -> None:
        state["prefill"] = args[0].shape[-1] > 1

    def force(_m: Any, _i: Any, out: torch.Tensor) -> torch.Tensor:
        token = ord("7") if state["prefill"] else tok.eos_token_id
        return out + 1e4 * torch.nn.functional.one_hot(torch.tensor(token), out.shape[-1]).to(out.dtype)

    hooks = [model.get_input_embeddings().register_forward_pre_hook(see_input), model.lm_head.register_forward_hook(force)]
    problems = [Problem(str(i), f"What is {i}?", gold, "toy") for i, gold in enumerate(["7", "8", "7", "7.0"])]
    try:
        m = evaluate_problems(model, tok, problems, n=4, max_new_tokens=8, prompt_template="boxed", records_path=tmp_path / "r.jsonl")
    finally:
        for h in hooks:
            h.remove()
    assert m["greedy_accuracy"] == 0.75 and m["pass@1"] == 0.75 and m["pass@4"] == 0.75 and m["truncated"] == 0.0
    recs = read_records(tmp_path / "r.jsonl")
    assert recs[("toy", "0", "sample", 3)]["correct"] is True and recs[("toy", "1", "greedy", 0)]["correct"] is False


def test_thr_eval_end_to_end_with_resume_and_rescore(tiny_dir: Path, tmp_path: Path, capsys: Any) -> None:
    out = tmp_path / "eval"
    argv = f"--model {tiny_dir} --benchmarks math500,aime24 --n 4 --limit 3 --max_new_tokens 16 --output_dir {out}"
    assert cli_main(argv.split()) == 0
    for name in ("generations.jsonl", "results.json", "results.md", "pass_at_k.png"):
        assert (out / name).is_file(), name
    results = json.loads((out / "results.json").read_text())
    assert list(results["benchmarks"]) == ["math500", "aime24"]
    for metrics in [*results["benchmarks"].values(), results["overall"]]:
        assert {"greedy_accuracy", "pass@1", "pass@2", "pass@4", "mean@4"} <= set(metrics)
    assert results["overall"]["num_problems"] == 6 and results["config"]["n"] == 4
    recs = [json.loads(x) for x in (out / "generations.jsonl").read_text().splitlines()]
    assert len(recs) == 2 * 3 * (1 + 4)
    assert all(r["finish_reason"] in ("stop", "length") and isinstance(r["correct"], bool) for r in recs)
    assert "| math500 | 3 |" in (out / "results.md").read_text()
    assert "math500" in capsys.readouterr().out
    size = (out / "generations.jsonl").stat().st_size
    assert cli_main(argv.split()) == 0
    assert (out / "generations.jsonl").stat().st_size == size  # resumed: nothing regenerated
    strip = lambda res: {b: {k: v for k, v in m.items() if k != "seconds"} for b, m in res["benchmarks"].items()}
    assert strip(json.loads((out / "results.json").read_text())) == strip(results)
    assert cli_main([*argv.split(), "--rescore"]) == 0
    assert len((out / "generations.jsonl").read_text().splitlines()) == 30
    other = tmp_path / "cmp"
    assert cli_main(["--compare", f"{out},{out / 'results.json'}", "--output_dir", str(other)]) == 0
    assert (other / "pass_at_k.png").is_file() and "## math500" in (other / "comparison.md").read_text()


def test_several_models_are_compared(tiny_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "multi"
    argv = ["--model", f"{tiny_dir},{tiny_dir}", "--benchmarks", "aime24", "--n", "2", "--limit", "1"]
    assert cli_main([*argv, "--max_new_tokens", "4", "--output_dir", str(out)]) == 0
    slug = f"{tiny_dir.parent.name}__{tiny_dir.name}"
    for sub in (f"0_{slug}", f"1_{slug}"):
        assert (out / sub / "results.json").is_file()
    assert (out / "comparison.md").is_file() and (out / "pass_at_k.png").is_file()


def test_cli_errors_and_help(capsys: Any) -> None:
    assert cli_main(["--model", "x", "--benchmarks", "math501"]) == 2
    err = capsys.readouterr().err
    assert "unknown benchmark(s) ['math501']" in err and "math500" in err
    assert cli_main(["--benchmarks", "math500"]) == 2
    assert "--model" in capsys.readouterr().err
    assert cli_main(["--model", "x", "--n", "4", "--temperature", "0"]) == 2
    assert cli_main(["--model", "x", "--bogus", "1"]) == 2
    assert "unknown config key" in capsys.readouterr().err
    assert cli_main(["--help"]) == 0
    assert "--max_new_tokens" in capsys.readouterr().out
    assert EvalConfig().temperature == 1.0 and EvalConfig().prompt_template == "auto"


def test_auto_template_is_the_saved_models_own(tiny_dir: Path, tmp_path: Path, monkeypatch: Any) -> None:
    import shutil

    import thr.eval.evaluate

    model = tmp_path / "final"
    shutil.copytree(tiny_dir, model)
    (model / "thr_prompt.json").write_text('{"prompt_template": "plain"}')  # as thr train writes it
    used: list[str] = []
    real = thr.eval.evaluate.format_prompt
    monkeypatch.setattr(thr.eval.evaluate, "format_prompt", lambda tok, p, t: used.append(t) or real(tok, p, t))
    out = tmp_path / "eval"
    assert cli_main(["--model", str(model), "--benchmarks", "gsm8k", "--n", "0", "--limit", "2",
                     "--max_new_tokens", "2", "--output_dir", str(out)]) == 0
    assert used == ["plain", "plain"]
    assert json.loads((out / "results.json").read_text())["prompt_template"] == "plain"
    assert "prompt_template=plain" in (out / "results.md").read_text()
    used.clear()
    assert cli_main(["--model", str(model), "--benchmarks", "gsm8k", "--n", "0", "--limit", "1", "--max_new_tokens", "2",
                     "--prompt_template", "boxed", "--output_dir", str(tmp_path / "boxed")]) == 0
    assert used == ["boxed"]  # an explicit template wins


def test_missing_local_model_path_says_so(tmp_path: Path, capsys: Any) -> None:
    for name in ("/nonexistent", str(tmp_path / "nope"), "./final", "~/nope-thr-model", "runs/thr-default/final"):
        assert cli_main(["--model", name, "--benchmarks", "gsm8k", "--output_dir", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert f"--model={name!r}: the path does not exist" in err and "Repo id" not in err, err
    from thr.models.loading import looks_like_local_path

    assert not looks_like_local_path("Qwen/Qwen2.5-Math-1.5B") and not looks_like_local_path("gpt2")


def test_terminal_table_states_units_and_overall() -> None:
    from thr.eval.tables import format_table

    m = lambda acc: {"num_problems": 10, "greedy_accuracy": acc, "pass@1": acc, "truncated": 0.0}  # noqa: E731
    text = format_table({"model": "x", "benchmarks": {"a": m(0.5), "b": m(0.25)}, "overall": m(0.375) | {"num_problems": 20}})
    assert "in %" in text and "unweighted mean over the 2 benchmarks" in text
    assert "unweighted" not in format_table({"model": "x", "benchmarks": {"a": m(0.5)}, "overall": m(0.5)})
