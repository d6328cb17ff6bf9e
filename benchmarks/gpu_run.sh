#!/usr/bin/env bash
# The one prepared GPU check of THR's cost (issue "THR at the cost of a matrix product").
#
#   bash benchmarks/gpu_run.sh [OUT_DIR]      # OUT_DIR defaults to $OUT, else ./bench_out
#
# Needs a CUDA build of torch (PYTHON=... to pick the interpreter) and this repo's src/ (no
# install needed). Every step has its own time limit and the steps run most-important first, so
# the whole script stays under ~8 minutes on one H100/H200 and a step that runs out of time
# still leaves the JSON lines it already wrote. Outputs (JSON lines, one record per line):
#   env.txt                 nvidia-smi, torch/CUDA versions
#   cuda_exact.jsonl        CUDA float32/bf16 results against CPU float64 (exactness on the device)
#   thr_cost_main.jsonl     the key shapes: mid G8 T512, Qwen2.5-Math-1.5B and Llama-3.2-3B at G8 T4096
#   trainer_thr.jsonl       THR inside the trainer's old-policy pass (random-init Qwen/Llama, bf16):
#                           forward, THR recomputed / with reused logits / approximation
#   thr_cost_tf32.jsonl     the same float32 cases with TF32 matmuls allowed
#   thr_cost_kept4g.jsonl   Qwen G8 T4096 with 4 GiB of kept positive probabilities (default 2 GiB)
#   thr_approx.jsonl        restricted-vocabulary speed-up and error, plus bf16-vs-float64 error
#   thr_cost_rest.jsonl     the rest of the full preset (G16, shorter T)
#   network_thr.jsonl       network THR (thr.network_token_influence) against the old-policy forward,
#                           bf16, up to a random-init Qwen2.5-1.5B shape at G8 x (256 + 1024) tokens
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-bench_out}}"
mkdir -p "$OUT_DIR"
PY="${PYTHON:-python}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

{ nvidia-smi || true; "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"; } \
  > "$OUT_DIR/env.txt" 2>&1
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "no CUDA device visible to $PY; see $OUT_DIR/env.txt" >&2
  exit 2
fi

step() {  # step SECONDS NAME CMD...: run with a time limit, log its stderr, keep going on failure
  local limit="$1" name="$2"; shift 2
  local t0=$SECONDS
  echo "== $name (limit ${limit}s)" >&2
  timeout --signal=INT "$limit" "$@" 2> "$OUT_DIR/$name.stderr" || echo "   $name exited with $?" >&2
  echo "   $name took $((SECONDS - t0))s" >&2
}

step 60 cuda_exact "$PY" - "$OUT_DIR/cuda_exact.jsonl" <<'EOF'
import json, sys, torch
from thr.core import token_influence
from thr.core import token_influence


def token_influence_approx(*args, return_vocab_size=False, **kwargs):
    if return_vocab_size:
        out, sizes = token_influence(*args, algorithm="approx", return_vocab_sizes=True, **kwargs)
        return out, sizes[0]
    return token_influence(*args, algorithm="approx", **kwargs)
torch.manual_seed(0)
G, T, d, V = 8, 96, 64, 3000
H, W = torch.randn(G, T, d, dtype=torch.float64), torch.randn(V, d, dtype=torch.float64) * 0.3
Y, mask = torch.randint(0, V, (G, T)), torch.rand(G, T) > 0.1
pos = torch.tensor([1, 0, 1, 1, 0, 0, 1, 0], dtype=torch.bool)
ref = token_influence(H, W, Y, mask, pos, temperature=0.9)
logits = torch.einsum("gtd,vd->gtv", H, W)
with open(sys.argv[1], "w") as f:
    for dt in (torch.float32, torch.bfloat16):
        Hc, Wc, Yc, mc, pc = H.to("cuda", dt), W.to("cuda", dt), Y.cuda(), mask.cuda(), pos.cuda()
        ref_r = token_influence(Hc.double().cpu(), Wc.double().cpu(), Y, mask, pos, temperature=0.9)
        runs = {m: token_influence(Hc, Wc, Yc, mc, pc, temperature=0.9, method=m, chunk_size=100) for m in ("mform", "pair")}
        runs["mform-nokeep"] = token_influence(Hc, Wc, Yc, mc, pc, temperature=0.9, method="mform", chunk_size=100, max_kept_elements=0)
        runs["logits"] = token_influence(Hc, Wc, Yc, mc, pc, temperature=0.9, logits=logits.to("cuda", dt))
        runs["approx-full-vocab"] = token_influence_approx(Hc, Wc, Yc, mc, pc, temperature=0.9, vocab=torch.arange(V, device="cuda"))
        for name, s in runs.items():
            s = s.double().cpu()
            rec = {"dtype": str(dt), "path": name, "rel_l2_vs_float64_same_inputs": float((s - ref_r).norm() / ref_r.norm()),
                   "rel_l2_vs_float64_unrounded": float((s - ref).norm() / ref.norm())}
            print(json.dumps(rec)); f.write(json.dumps(rec) + "\n")
EOF

MAIN='mid-G8-T512$|qwen2.5-math-1.5b-G8-T4096$|llama-3.2-3b-G8-T4096$'
step 240 thr_cost_main "$PY" benchmarks/thr_cost.py --device cuda --preset full --cases "$MAIN" --out "$OUT_DIR/thr_cost_main.jsonl"
step 120 trainer_thr "$PY" benchmarks/trainer_thr_overhead.py --device cuda --out "$OUT_DIR/trainer_thr.jsonl"
step 60 thr_cost_tf32 "$PY" benchmarks/thr_cost.py --device cuda --preset full --cases "$MAIN" --dtypes float32 --tf32 --out "$OUT_DIR/thr_cost_tf32.jsonl"
step 45 thr_cost_kept4g "$PY" benchmarks/thr_cost.py --device cuda --preset full --cases 'qwen2.5-math-1.5b-G8-T4096$' --max-kept-gb 4 --no-logits --out "$OUT_DIR/thr_cost_kept4g.jsonl"
step 90 thr_approx "$PY" benchmarks/thr_approx_error.py --device cuda --preset full --bf16 --bf16-case qwen2.5-math-1.5b,8,256,1536,151936 --repeats 3 --out "$OUT_DIR/thr_approx.jsonl"
step 90 thr_cost_rest "$PY" benchmarks/thr_cost.py --device cuda --preset full --cases '(qwen|llama).*(G16|T(64|512|1024)$)' --repeats 2 --out "$OUT_DIR/thr_cost_rest.jsonl"
step 150 network_thr "$PY" benchmarks/network_thr_cost.py --device cuda --dtype bfloat16 --cases embedded,small,qwen2.5-1.5b --groups 1 --repeats 3 --out "$OUT_DIR/network_thr.jsonl"
echo "done: $OUT_DIR" >&2
