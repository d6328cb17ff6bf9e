"""CPU smoke run of benchmarks/trainer_thr_overhead.py (tiny overrides of the real configs)."""

from __future__ import annotations

import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def test_trainer_thr_overhead_cpu_smoke(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import trainer_thr_overhead as bench

    out = tmp_path / "out.jsonl"
    bench.main(["--device", "cpu", "--layers", "1", "--hidden", "64", "--vocab", "1000", "--T", "32",
                "--models", "qwen2.5-math-1.5b", "--repeats", "1", "--out", str(out)])
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert "machine" in lines[0]
    recs = {r["path"]: r for r in lines[1:]}
    assert set(recs) == {"forward", *bench.PATHS}
    assert {"seconds", "peak_extra_mb", "lm_head_seconds", "device_name"} <= set(recs["forward"])
    for path in bench.PATHS:
        r = recs[path]
        assert {"seconds", "peak_extra_mb", "thr_over_forward", "thr_over_lm_head", "rel_l2_vs_recompute",
                "device", "case", "tokens"} <= set(r)
        assert r["seconds"] > 0 and r["thr_over_forward"] > 0 and r["case"] == "qwen2.5-math-1.5b-G8-T32"
    assert recs["thr_reuse"]["rel_l2_vs_recompute"] < 1e-4  # float32 logits of a plain head
    assert recs["thr_approx"]["vocab_sizes"] and recs["thr_approx"]["rel_l2_vs_recompute"] < 0.5
