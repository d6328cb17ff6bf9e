"""The embedded default across RL seeds and CPU numerics: the table of docs/embedded.md.

Each run is the README's `thr train` as a new user gets it (a fresh output directory and an
empty warm-start cache, so the shipped warm start or a local one is found as on a fresh clone),
with `seed=K` and, for the `default` numerics, `ATEN_CPU_CAPABILITY=default` (PyTorch's
non-vectorised kernels: another CPU's floating-point rounding on the same machine; on an AVX-512
machine use `--isa avx2` instead, which sets `ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2`).
After each run, Pass@K up to `--pass-k` is measured on the final model (over the first `--pass-problems` held-out
problems) and once per numerics on the base model (`--base-pass-problems`), outside the timed run.

One JSON summary per run goes to `<out>/<isa>-seed<K>.json` (a finished run is skipped, so a
killed sweep resumes), and `<out>/table.md` is rewritten after each run. Prints one JSON line per
run.

    python benchmarks/embedded_default.py --seeds 0 1 2 3 4 --isa native default --parallel 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ISA_ENV = {
    "native": {},
    "default": {"ATEN_CPU_CAPABILITY": "default"},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
}
ROOT = Path(__file__).resolve().parents[1]


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def pass_at_k_curve(model_dir: str, n: int, problems: int, isa: str, seed: int) -> dict[str, float]:
    """Pass@K (unbiased, K = 1, 2, 4, ..., n) of the model in ``model_dir`` on the held-out split,
    measured in a subprocess under the same numerics."""
    code = (
        "import json, sys, torch; torch.set_num_threads(1)\n"
        "from thr.eval.evaluate import evaluate_problems\n"
        "from thr.models.loading import load_policy\n"
        "from thr.data.problems import load_task\n"
        "from thr.data.prompts import load_prompt_info\n"
        "path, n, limit, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])\n"
        "info = load_prompt_info(path)\n"
        "task = info['task']\n"
        "problems = load_task(task['name'], 'test', **task['settings'])[:limit]\n"
        "model, tok = load_policy(path, dtype='float32', device='cpu')\n"
        "res = evaluate_problems(model.eval(), tok, problems, n=n, temperature=1.0, top_p=1.0, max_new_tokens=160,\n"
        "                        batch_size=256, prompt_template=info['prompt_template'], seed=seed, greedy=False)\n"
        "print(json.dumps({k: v for k, v in res.items() if k.startswith('pass@') or k.startswith('mean@')}))\n"
    )
    env = {**os.environ, **ISA_ENV[isa], "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code, model_dir, str(n), str(problems), str(seed)], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_one(isa: str, seed: int, args: argparse.Namespace) -> dict:
    out = Path(args.out)
    summary_path = out / f"{isa}-seed{seed}.json"
    if summary_path.exists():
        return json.loads(summary_path.read_text())
    run_dir = Path(args.runs) / f"{isa}-seed{seed}"
    cache = tempfile.mkdtemp(prefix="thr-empty-cache-")
    env = {**os.environ, **ISA_ENV[isa], "THR_CACHE_DIR": cache}
    env.pop("OMP_NUM_THREADS", None)  # as a user runs it: thr train picks its own thread count
    cmd = [sys.executable, "-m", "thr.cli", "train", f"seed={seed}", f"output_dir={run_dir}", "log.progress=false",
           *args.overrides]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{isa} seed {seed} failed:\n{proc.stderr[-3000:]}")
    summary = json.loads((run_dir / "summary.json").read_text())
    record = {
        "isa": isa, "seed": seed, "command": " ".join(["thr train", *cmd[4:]]), "env": ISA_ENV[isa],
        "base_greedy": summary["base_greedy_accuracy"], "final_greedy": summary["final_greedy_accuracy"],
        "base_pass_at_8": summary["base_pass_at_8"], "final_pass_at_8": summary["final_pass_at_8"],
        "train_wall_seconds": summary["wall_seconds"], "process_wall_seconds": round(wall, 1),
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "parallel_runs": args.parallel},
    }
    if args.pass_k:
        record["final_pass_curve"] = pass_at_k_curve(str(run_dir / "final"), args.pass_k, args.pass_problems, isa, seed)
        record["pass_problems"] = args.pass_problems
    out.mkdir(parents=True, exist_ok=True)
    summary_path.write_text(json.dumps(record, indent=2) + "\n")
    return record


def base_curve(isa: str, args: argparse.Namespace) -> dict:
    """Pass@K of the base (warm-started) model under ``isa``, cached in ``<out>/base-<isa>.json``."""
    path = Path(args.out) / f"base-{isa}.json"
    if path.exists():
        return json.loads(path.read_text())
    code = "from thr.models.embedded import warm_start; print(warm_start(progress=False))"
    env = {**os.environ, **ISA_ENV[isa], "OMP_NUM_THREADS": "1"}
    base = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    record = {"isa": isa, "model": base.stdout.strip().splitlines()[-1], "pass_problems": args.base_pass_problems}
    record["pass_curve"] = pass_at_k_curve(record["model"], args.pass_k, args.base_pass_problems, isa, 0)
    path.write_text(json.dumps(record, indent=2) + "\n")
    return record


def write_table(args: argparse.Namespace) -> None:
    out = Path(args.out)
    rows = sorted((json.loads(p.read_text()) for p in out.glob("*-seed*.json")), key=lambda r: (r["isa"], r["seed"]))
    k = f"pass@{args.pass_k}"
    bases = {p.stem[5:]: json.loads(p.read_text()) for p in out.glob("base-*.json")}
    lines = [f"| numerics | seed | greedy base -> final (gain) | pass@8 base -> final | {k} base -> final | wall (s) |",
             "| --- | --- | --- | --- | --- | --- |"]
    pct = lambda v: "n/a" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    for r in rows:
        gain = 100 * (r["final_greedy"] - r["base_greedy"])
        base_k = bases.get(r["isa"], {}).get("pass_curve", {}).get(k)
        final_k = r.get("final_pass_curve", {}).get(k)
        lines.append(f"| {r['isa']} | {r['seed']} | {pct(r['base_greedy'])} -> {pct(r['final_greedy'])} ({gain:+.1f}) | "
                     f"{pct(r['base_pass_at_8'])} -> {pct(r['final_pass_at_8'])} | {pct(base_k)} -> {pct(final_k)} | "
                     f"{r['process_wall_seconds']:.0f} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--isa", nargs="+", default=["native", "default"], choices=sorted(ISA_ENV))
    ap.add_argument("--parallel", type=int, default=1, help="runs at a time (each uses one thread)")
    ap.add_argument("--pass-k", type=int, default=64, help="largest K of the Pass@K measurement (0: skip it)")
    ap.add_argument("--pass-problems", type=int, default=100, help="held-out problems for the final models' Pass@K")
    ap.add_argument("--base-pass-problems", type=int, default=300, help="held-out problems for the base model's Pass@K")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/embedded_default"))
    ap.add_argument("--runs", default=str(ROOT / "runs/embedded_default"))
    ap.add_argument("overrides", nargs="*", help="extra thr train overrides")
    args = ap.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    jobs = [(isa, seed) for seed in args.seeds for isa in args.isa]
    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        for record in pool.map(lambda job: run_one(*job, args), jobs):
            print(json.dumps({k: v for k, v in record.items() if k not in ("machine", "env")}), flush=True)
            write_table(args)
    if args.pass_k:
        with ThreadPoolExecutor(max_workers=args.parallel) as pool:
            for record in pool.map(lambda isa: base_curve(isa, args), args.isa):
                print(json.dumps(record), flush=True)
    write_table(args)


if __name__ == "__main__":
    main()
