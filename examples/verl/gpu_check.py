"""GPU checks of the verl plugin, prepared for a machine with a CUDA GPU (not run yet; see docs/integrations.md).

    python examples/verl/gpu_check.py            # worker step on CUDA; then main_ppo if verl and vLLM import
    python examples/verl/gpu_check.py --worker   # only the worker step and its memory at the paper's shape

1. The worker's influence step on CUDA: ``tests/test_verl_worker_devices.py`` (its CUDA case: batch on the
   CPU, states and head on the GPU, values against ``thr.core``), then :func:`thr.integrations.verl.influence_field`
   at the paper's shape (Qwen2.5-Math-1.5B head ``V=151936, d=1536`` in fp32, G=8 responses of 3072
   tokens, bf16 states in host memory) with the peak extra GPU memory measured and compared with
   the estimate in docs/integrations.md.
2. If ``verl`` and ``vllm`` import: two steps of ``verl.trainer.main_ppo`` through
   ``examples/verl/run_grpo_thr.sh`` with a random-init tiny Qwen2 saved locally (byte tokenizer,
   no download) on the shipped MATH data: THR_P=0.2 (``thr/frac_dominant`` in (0, 1)), THR_P=0
   (``thr/weight_mean`` == 1), THR_MODE=off against ``algorithm.adv_estimator=grpo`` (same
   ``critic/advantages/*`` at step 1, rollouts seeded). Exit status 0 only if every check ran and passed.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
V, D, G, T = 151936, 1536, 8, 3072  # Qwen2.5-Math-1.5B head; the paper's group size and response length
GIB = 1 << 30


def estimate_peak_bytes(G: int, T: int, d: int, V: int, chunk: int = 1024, kept_elements: int = 1 << 29) -> dict:
    """Extra GPU bytes of the influence step for one group (docs/integrations.md): head, M, probabilities, states."""
    n = G * T
    kept_chunks = min(kept_elements // (chunk * V), -(-n // chunk))
    return {"head_fp32": V * d * 4, "M": V * d * 4, "probabilities": (kept_chunks + 1) * chunk * V * 4,
            "group_states": G * T * d * 2 + n * d * (2 + 4)}  # padded bf16, gathered bf16, fp32 copy


def worker_on_cuda() -> bool:
    ok = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", str(ROOT / "tests/test_verl_worker_devices.py")],
                        cwd=ROOT, check=False).returncode == 0
    from thr.integrations.verl import influence_field

    torch.manual_seed(0)
    W = torch.randn(V, D, device="cuda") * 0.02
    rows, prompt = 2 * G, 16  # two groups on this rank, every response at the full length
    states = [torch.randn(T, D, dtype=torch.bfloat16) for _ in range(rows)]  # in host memory, as the plugin keeps them
    ids = torch.nested.nested_tensor([torch.randint(0, V, (prompt + T,)) for _ in range(rows)], layout=torch.jagged)
    masks = [torch.ones(T, dtype=torch.int64) for _ in range(rows)]
    rewards = torch.tensor([1.0, 0.0] * (rows // 2))
    uids = [f"g{i // G}" for i in range(rows)]
    cfg = {"group_size": G, "temperature": 1.0, "positive_reward": None, "chunk_size": 1024, "method": "auto"}
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    out = influence_field(states, ids, masks, uids, rewards, W, cfg)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    est = estimate_peak_bytes(G, T, D, V)
    est_total = sum(est.values()) - est["head_fp32"]  # the head is allocated above, outside the measurement
    print(f"influence_field at G={G} T={T} V={V} d={D}: {time.time() - t0:.1f}s for {rows} rows; "
          f"peak extra GPU memory {peak / GIB:.2f} GiB (estimate without the head: {est_total / GIB:.2f} GiB; "
          f"with the gathered fp32 head: {(peak + est['head_fp32']) / GIB:.2f} GiB measured, "
          f"{sum(est.values()) / GIB:.2f} GiB estimated)")
    finite = bool(torch.isfinite(out.values()).all()) and out.device.type == "cuda"
    within = peak <= 1.1 * est_total
    print(f"worker step on CUDA: tests {'passed' if ok else 'FAILED'}, output finite on cuda: {finite}, "
          f"peak within 10% of the estimate: {within}")
    return ok and finite and within


def _tiny_model(out: Path) -> Path:
    from thr.models.tiny import build_model, build_tokenizer

    tok = build_tokenizer(model_max_length=1024)
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    build_model(tok, hidden_size=64, num_layers=2, num_heads=4, max_position_embeddings=1024).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _steps(log: str) -> list[dict[str, float]]:
    """verl's console logger lines ``step:N - key:value - ...`` as dicts."""
    steps = []
    for line in log.splitlines():
        if not line.startswith("step:"):
            continue
        d = {}
        for part in line.split(" - "):
            m = re.fullmatch(r"(.+?):(-?[0-9.eE+-]+|nan|inf)", part.strip())
            if m:
                d[m.group(1)] = float(m.group(2))
        steps.append(d)
    return steps


def _run(tmp: Path, name: str, env: dict, *overrides: str) -> list[dict[str, float]]:
    small = ["data.train_batch_size=8", "data.max_prompt_length=512", "data.max_response_length=128",
             "actor_rollout_ref.actor.ppo_mini_batch_size=8", "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8",
             "actor_rollout_ref.rollout.n=4", "actor_rollout_ref.rollout.gpu_memory_utilization=0.3",
             "actor_rollout_ref.rollout.seed=0", "trainer.val_before_train=false", "trainer.test_freq=-1",
             "trainer.save_freq=-1", f"trainer.default_local_dir={tmp / name / 'ckpt'}"]
    full_env = {**os.environ, "MODEL": str(tmp / "model"), "DATA": str(tmp / "data"), "NGPUS": "1", "STEPS": "2", **env}
    proc = subprocess.run(["bash", str(ROOT / "examples/verl/run_grpo_thr.sh"), *small, *overrides], cwd=ROOT,
                          env=full_env, capture_output=True, text=True, timeout=1800, check=False)
    (tmp / f"{name}.log").write_text(proc.stdout + proc.stderr)
    steps = _steps(proc.stdout)
    print(f"{name}: exit {proc.returncode}, {len(steps)} steps logged ({tmp / f'{name}.log'})")
    return steps if proc.returncode == 0 else []


def main_ppo_checks(tmp: Path) -> bool:
    _tiny_model(tmp / "model")
    subprocess.run([sys.executable, str(ROOT / "examples/verl/prepare_data.py"), "--limit", "64", "--out",
                    str(tmp / "data")], cwd=ROOT, check=True)
    thr = _run(tmp, "thr_p0.2", {"THR_P": "0.2"})
    zero = _run(tmp, "thr_p0", {"THR_P": "0"})
    off = _run(tmp, "thr_off", {"THR_MODE": "off"})
    grpo = _run(tmp, "grpo", {}, "algorithm.adv_estimator=grpo")
    checks = {
        "two steps each": all(len(s) >= 2 for s in (thr, zero, off, grpo)),
        "thr/frac_dominant in (0, 1)": bool(thr) and all(0 < s.get("thr/frac_dominant", -1) < 1 for s in thr),
        "THR_P=0: thr/weight_mean == 1": bool(zero) and all(abs(s.get("thr/weight_mean", 0) - 1) < 1e-6 for s in zero),
        "THR_MODE=off == grpo at step 1": bool(off and grpo) and all(
            abs(off[0].get(k, float("nan")) - grpo[0].get(k, float("nan"))) <= 1e-6
            for k in ("critic/advantages/mean", "critic/advantages/max", "critic/advantages/min", "critic/score/mean")),
    }
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}: {name}")
    return all(checks.values())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", action="store_true", help="only the worker step on CUDA")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check here (the CPU checks are in the test suite)")
        return 2
    ok = worker_on_cuda()
    if args.worker:
        return 0 if ok else 1
    if not (importlib.util.find_spec("verl") and importlib.util.find_spec("vllm")):
        print("verl or vllm not importable: main_ppo checks skipped (pip install 'thr-rl[verl]' vllm)")
        return 0 if ok else 1
    with tempfile.TemporaryDirectory(prefix="thr-verl-gpu-") as tmp:
        ok = main_ppo_checks(Path(tmp)) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
