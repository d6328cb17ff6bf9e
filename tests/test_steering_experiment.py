"""The steering experiment's pipeline end to end (quick variant) and its statistics."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXP = ROOT / "experiments" / "steering"
sys.path.insert(0, str(EXP))

import aggregate  # noqa: E402
import methods  # noqa: E402


def test_mean_ci_matches_t_interval():
    stat = aggregate.mean_ci([0.1, 0.2, 0.3])
    assert stat["n"] == 3 and math.isclose(stat["mean"], 0.2)
    # sd = 0.1, t(2) = 4.303: half-width 4.303 * 0.1 / sqrt(3)
    assert math.isclose(stat["ci95"], 4.303 * 0.1 / math.sqrt(3), rel_tol=1e-9)
    assert math.isclose(stat["sd"], 0.1, rel_tol=1e-9)
    assert math.isnan(aggregate.mean_ci([0.5])["ci95"]) and aggregate.mean_ci([])["n"] == 0


def test_paired_deltas_use_same_seed():
    runs = {
        "base-qwen2": {0: _rec(0.1), 1: _rec(0.3)},
        "grpo": {0: _rec(0.2), 1: _rec(0.5)},
        "thr+0.5": {0: _rec(0.3), 1: _rec(0.55)},
    }
    table = aggregate.summarize(runs)
    d = table["thr+0.5"]["vs_grpo"]["greedy"]
    assert math.isclose(d["mean"], (0.1 + 0.05) / 2) and d["n"] == 2
    assert math.isclose(table["grpo"]["vs_base"]["greedy"]["mean"], (0.1 + 0.2) / 2)
    assert table["grpo"]["vs_grpo"] == {}


def _rec(greedy: float) -> dict:
    return {"greedy": greedy, "pass_at_k": {1: greedy, 8: greedy + 0.1}, "pass@1": greedy, "pass@8": greedy + 0.1,
            "pass@16": None, "pass@maxK": greedy + 0.1, "lik_correct": 0.01, "lik_incorrect": -0.01,
            "reward_last": 0.5, "clip_frac": 0.01, "mid_greedy": greedy, "mid_pass@maxK": greedy + 0.05}


def test_every_method_is_a_valid_train_config():
    from thr.config import load_config
    from thr.rl.config import TrainConfig

    for name, overrides in methods.METHODS.items():
        cfg = load_config(TrainConfig, overrides)
        cfg.validate()
        assert methods.baseline_of(name) in methods.METHODS


@pytest.mark.slow
def test_quick_sweep_end_to_end(tmp_path, monkeypatch):
    """Train, score and tabulate the quick variant: every run finishes and lands in the table."""
    env_cache = tmp_path / "cache"
    out = tmp_path / "sweep"
    cmd = [sys.executable, str(EXP / "run.py"), "--quick", "--out", str(out), "--methods", "grpo,thr+0.5,llama/grpo"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900,
                         env={**__import__("os").environ, "THR_CACHE_DIR": str(env_cache)})
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    table = results["table"]
    assert set(table) == {"base-qwen2", "base-llama", "grpo", "thr+0.5", "llama/grpo"}
    for name, row in table.items():
        assert row["abs"]["greedy"]["n"] == 1, name
        assert set(map(int, row["curve"])) == {1, 2, 4}, name
    # the trained runs logged the likelihood dynamics and a real change of the weights
    lik = table["thr+0.5"]["abs"]["lik_incorrect"]
    assert lik["n"] == 1 and lik["mean"] != 0.0
    md = (out / "results.md").read_text()
    assert "| thr+0.5 | 1 |" in md and "llama/grpo" in md
    # a second call skips finished runs and only re-aggregates
    res2 = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "THR_CACHE_DIR": str(env_cache)})
    assert res2.returncode == 0 and res2.stdout.count("done before") == 5

    # the likelihood probe on the same (cached) quick model: THR's first-order prediction of the
    # head-only step must match the measured change of the correct responses' log-likelihood
    sys.path.insert(0, str(EXP))
    import run as run_mod

    probe = out / "probe"
    cmd = [sys.executable, str(EXP / "likelihood_probe.py"), "--out", str(probe), "--seeds", "0", "--batches", "3",
           *run_mod.QUICK_OVERRIDES]
    res3 = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "THR_CACHE_DIR": str(env_cache)})
    assert res3.returncode == 0, res3.stdout[-2000:] + res3.stderr[-2000:]
    table = json.loads((probe / "probe_summary.json").read_text())["table"]
    head = table["head/all"]
    assert head["groups"] >= 1
    rel = abs(head["actual"]["mean"] - head["predicted"]["mean"]) / abs(head["predicted"]["mean"])
    assert rel < 0.05 and head["sign_agreement"] == 1.0
    assert table["head/thr<0"]["actual"]["mean"] < 0 < table["head/thr>0"]["actual"]["mean"]


def test_claim_verdicts():
    v = aggregate.verdict
    assert v({"mean": 0.05, "ci95": 0.02, "n": 3}, +1) == "reproduced"
    assert v({"mean": -0.05, "ci95": 0.02, "n": 3}, +1) == "contradicted"
    assert v({"mean": 0.01, "ci95": 0.03, "n": 3}, +1).startswith("not shown")
    assert v({"mean": 0.005, "ci95": 0.01, "n": 3}, 0).startswith("consistent")
    assert v({"mean": 0.0, "ci95": 0.05, "n": 3}, 0).startswith("inconclusive")
    assert v({"mean": 0.1, "ci95": float("nan"), "n": 1}, +1) == "not enough seeds"
    runs = {"a": {0: {"greedy": 0.5}, 1: {"greedy": 0.6}}, "b": {0: {"greedy": 0.4}, 2: {"greedy": 0.1}}}
    d = aggregate.paired(runs, "a", "b", "greedy")
    assert d["n"] == 1 and math.isclose(d["mean"], 0.1)


def test_aggregate_without_runs_keeps_recorded_results(tmp_path):
    (tmp_path / "results.md").write_text("recorded\n")
    with pytest.raises(FileNotFoundError, match="no finished runs"):
        aggregate.aggregate(tmp_path, ["grpo"], [0])
    assert (tmp_path / "results.md").read_text() == "recorded\n"


def test_shared_base_and_mid_run_evaluation_are_read(tmp_path):
    """The base model (scored once, under seed 0) stands for every seed; a run's mid-run evaluation
    (``eval.every``) is read apart from its final one."""
    def write_run(method, seed, steps, evals):
        rd = methods.run_dir(tmp_path, method, seed)
        rd.mkdir(parents=True)
        rows = [{"step": s, "eval/greedy_accuracy": g, "eval/pass@1": g, "eval/pass@8": p8} for s, g, p8 in evals]
        (rd / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        final = {k: v for k, v in rows[-1].items() if k != "step"}
        (rd / "summary.json").write_text(json.dumps({"steps": steps, "final_eval": final}))

    write_run("base-qwen2", 0, 0, [(0, 0.3, 0.5)])
    for seed in (0, 1):
        write_run("grpo", seed, 16, [(12, 0.6 + seed / 10, 0.8), (16, 0.9, 0.95)])
    runs = aggregate.collect(tmp_path, ["grpo"], [0, 1])
    assert runs["base-qwen2"][0] is runs["base-qwen2"][1]
    rec = runs["grpo"][1]
    assert (rec["greedy"], rec["pass@maxK"], rec["mid_step"], rec["mid_greedy"], rec["mid_pass@maxK"]) == (0.9, 0.95, 12, 0.7, 0.8)
    gain = aggregate.summarize(runs)["grpo"]["vs_base"]["mid_greedy"]
    assert gain["n"] == 2 and math.isclose(gain["mean"], 0.65 - 0.3)


def test_power_table_gives_the_seeds_a_target_interval_needs():
    """sd 2 points: n = 10 gives 2.262 * 2 / sqrt(10) = 1.43 <= 1.5, n = 9 gives 1.54 > 1.5."""
    runs = {"grpo": {k: {"greedy": 0.5} for k in range(3)},
            "thr+0.5": {0: {"greedy": 0.48}, 1: {"greedy": 0.50}, 2: {"greedy": 0.52}}}
    md = aggregate.power_markdown(runs)
    row = next(line for line in md.splitlines() if line.startswith("| thr+0.5 − grpo | greedy"))
    assert row.split("|")[5].strip() == "2.0" and row.split("|")[6].strip() == "10"


def test_greedy_extension_seeds_count_for_greedy_only(tmp_path):
    """Seeds run without Pass@K sampling (``run.py --greedy-extension``) add to the greedy columns
    and their paired differences, and leave every Pass@K figure to the seeds that sampled."""
    def write_run(method, seed, greedy, pass8):
        rd = methods.run_dir(tmp_path, method, seed)
        rd.mkdir(parents=True)
        final = {"eval/greedy_accuracy": greedy, **({"eval/pass@8": pass8} if pass8 is not None else {})}
        (rd / "metrics.jsonl").write_text(json.dumps({"step": 16, **final}) + "\n")
        (rd / "summary.json").write_text(json.dumps({"steps": 16, "final_eval": final}))

    for seed in range(4):
        sampled = seed < 2
        write_run("grpo", seed, 0.90, 0.95 if sampled else None)
        write_run("thr+0.5", seed, 0.90 + 0.01 * seed, 0.96 if sampled else None)
    runs = aggregate.collect(tmp_path, ["grpo", "thr+0.5"], list(range(4)))
    row = aggregate.summarize(runs)["thr+0.5"]
    assert row["abs"]["greedy"]["n"] == 4 and row["abs"]["pass@maxK"]["n"] == 2
    assert row["vs_grpo"]["greedy"]["n"] == 4 and math.isclose(row["vs_grpo"]["greedy"]["mean"], 0.015)
    assert row["vs_grpo"]["pass@maxK"]["n"] == 2 and math.isclose(row["vs_grpo"]["pass@maxK"]["mean"], 0.01)
    assert set(row["curve"]) == {8} and row["curve"][8]["n"] == 2
    paired_curve = row["curve_vs_grpo"][8]  # the paired Pass@K curve of the figure's bottom row
    assert paired_curve["n"] == 2 and math.isclose(paired_curve["mean"], 0.01)
    md = aggregate.markdown(aggregate.summarize(runs), {})
    assert "| thr+0.5 | 4 / 2 |" in md


def test_greedy_extension_settings():
    """The extension adds seeds after the sweep's, samples nothing and covers the greedy comparisons."""
    import run as run_mod

    ext = run_mod.GREEDY_EXTENSION
    assert ext["eval_n"] == 0 and min(ext["seeds"]) > max(run_mod.FULL_SETTINGS["seeds"])
    assert {"grpo", "thr+0.5"} <= set(ext["methods"]) <= set(methods.METHODS)
