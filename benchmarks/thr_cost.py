"""Cost of exact THR against one LM-head product over the same tokens, side by side.

Usage::

    python benchmarks/thr_cost.py --quick                      # seconds, tiny shapes
    python benchmarks/thr_cost.py                              # the CPU-feasible preset
    python benchmarks/thr_cost.py --device cuda --preset full  # every shape up to T=4096, G=8/16
    python benchmarks/thr_cost.py --cases 'qwen.*G8-T64' --dtypes float32 --out cost.jsonl

Prints one JSON line per (case, dtype, path):

- ``path``: ``standalone`` (``token_influence`` recomputes the probabilities from ``h`` and ``W``)
  or ``logits`` (the trainer's fused path: logits of the old-log-prob forward are passed in; their
  production is not timed, as the forward makes them anyway);
- ``seconds`` (median of ``--repeats`` rounds; each round runs every timed function once, so
  load drift hits all alike), ``lmhead_seconds`` (``hidden @ W.T`` over the same tokens
  in the input dtype, streamed in ``--lmhead-chunk`` rows into one reused buffer) and ``ratio``
  (median over rounds of the per-round ratio); for bf16 also ``ratio_fp32`` against the float32 product (THR computes in float32);
- ``peak_extra_mb``: peak memory added by the call (CUDA allocator peak, or peak RSS growth on
  CPU), next to ``model_mb`` (the memory model below) and ``full_logits_mb`` (``[N, V]`` float32);
- ``macs_per_lmhead``: the cost model's multiply-adds divided by ``N V d``; ``gflops`` = 2 x model
  multiply-adds / seconds.

Cases whose model cost exceeds ``--max-tflop`` are not run: their line has ``"skipped": true`` and
the model's figures (multiply-adds, memory), so large shapes can be estimated from measured rates.
"""

from __future__ import annotations

import argparse
import os
import re
import time
from statistics import median

import torch
from _common import (
    DTYPES,
    PeakMemory,
    _rss_kb,
    emit,
    head_logits,
    machine_info,
    random_group,
    timed,
)

from thr.core.influence import (
    DEFAULT_CHUNK,
    DEFAULT_KEPT_ELEMENTS,
    choose_method,
    influence_macs,
    token_influence,
)

MODELS = {  # name: (d, V)
    "tiny": (64, 1000),
    "small": (256, 8000),
    "mid": (1024, 32000),
    "qwen2.5-math-1.5b": (1536, 151936),
    "llama-3.2-3b": (3072, 128256),
}
FULL_T = (64, 512, 1024, 4096)
PRESETS = {
    "quick": [("tiny", 4, 64), ("small", 8, 128), ("mid", 8, 64)],
    "cpu": [("tiny", 4, 64), ("small", 8, 128), ("mid", 8, 128), ("mid", 8, 512), ("qwen2.5-math-1.5b", 8, 32),
            ("qwen2.5-math-1.5b", 8, 128),
            ("llama-3.2-3b", 8, 16), ("qwen2.5-math-1.5b", 8, 4096), ("qwen2.5-math-1.5b", 16, 4096),
            ("llama-3.2-3b", 8, 4096), ("llama-3.2-3b", 16, 4096)],
    "full": [("mid", 8, 512), ("qwen2.5-math-1.5b", 8, 4096), ("llama-3.2-3b", 8, 4096)]
    + [(m, G, T) for m in ("qwen2.5-math-1.5b", "llama-3.2-3b") for G in (8, 16) for T in FULL_T
       if (G, T) != (8, 4096)] + [("tiny", 4, 64), ("small", 8, 128)],
}


def memory_model_mb(N, Np, V, d, dtype, chunk, method, have_logits, tau=1.0, max_kept=None):
    """Bytes the algorithm allocates (float32 compute) beyond its inputs, in MiB: the float32 copy
    of a bf16 weight (standalone), the gathered states, one ``[rows, V]`` buffer, and ``M [V, d]``
    plus the kept positive probabilities (M-form) or ``P+ [N+, V]`` (pair-form)."""
    e = 8 if dtype == torch.float64 else 4
    w_copy = 0 if (dtype in (torch.float32, torch.float64) or have_logits) else V * d * e
    states = N * d * e * (2 if tau != 1.0 else 1)
    if method == "pair":
        buf = min(chunk, N - Np) * V * e
        extra = Np * V * e + 3 * min(chunk, N) * Np * e
    else:
        budget = 0 if have_logits else (DEFAULT_KEPT_ELEMENTS if max_kept is None else max_kept)
        c = max(1, min(chunk, Np))
        kept_chunks = min(budget // (c * V), -(-Np // c))
        all_kept = kept_chunks * c >= Np and N == Np
        buf = 0 if all_kept else min(chunk, max(Np, N - Np)) * V * e
        extra = V * d * e + kept_chunks * c * V * e
    return (w_copy + states + buf + extra) / 2**20  # logits rows are copied straight into the buffer


def lmhead_fn(H, W, chunk):
    flat = H.reshape(-1, H.shape[-1])
    out = torch.empty(min(chunk, flat.shape[0]), W.shape[0], dtype=W.dtype, device=W.device)

    def run():
        for a in range(0, flat.shape[0], chunk):
            h = flat[a : a + chunk]
            torch.mm(h, W.T, out=out[: h.shape[0]])
        return out

    return run


def run_case(name, G, T, dtype_name, args, info):
    d, V = MODELS[name]
    dtype, dev = DTYPES[dtype_name], args.device
    N, Np = G * T, (G // 2) * T
    base = dict(case=f"{name}-G{G}-T{T}", G=G, T=T, d=d, V=V, N=N, N_pos=Np, dtype=dtype_name, device=dev,
                chunk=args.chunk, full_logits_mb=round(N * V * 4 / 2**20, 1))
    paths = ["standalone", "logits"] if not args.no_logits else ["standalone"]
    macs = {p: influence_macs(N, Np, V, d, args.chunk, have_logits=p == "logits", max_kept_elements=args.max_kept)
            for p in paths}
    methods = {p: args.method if args.method != "auto" else
               choose_method(N, Np, V, d, args.chunk, have_logits=p == "logits", max_kept_elements=args.max_kept)
               for p in paths}
    if min(macs[p][methods[p]] for p in paths) * 2 / 1e12 > args.max_tflop:
        for p in paths:
            m = methods[p]
            emit({**base, "path": p, "method": m, "skipped": True, "macs_per_lmhead": round(macs[p][m] / (N * V * d), 3),
                  "model_mb": round(memory_model_mb(N, Np, V, d, dtype, args.chunk, m, p == "logits",
                                                    max_kept=args.max_kept), 1),
                  "load_1m": info["load_1m"]}, args.out)
        return
    H, W, Y, mask, pos = random_group(G, T, d, V, dtype, dev, seed=args.seed)
    fns = {"lmhead": lmhead_fn(H, W, args.lmhead_chunk)}
    if dtype != torch.float32:
        fns["lmhead_fp32"] = lmhead_fn(H.float(), W.float(), args.lmhead_chunk)
    records = {}
    for p in paths:
        if p == "logits" and N * V * dtype.itemsize / 2**30 > args.max_logits_gb:
            emit({**base, "path": p, "skipped": True, "reason": f"logits over --max-logits-gb {args.max_logits_gb}"}, args.out)
            continue
        logits = head_logits(H, W, out_dtype=dtype) if p == "logits" else None
        kw = dict(chunk_size=args.chunk, method=methods[p], logits=logits, max_kept_elements=args.max_kept)
        if args.warmup:
            token_influence(H[:, :8], W, Y[:, :8], mask[:, :8], pos, **{**kw, "logits": None})
        with PeakMemory(dev) as mem:  # first call: peak memory (not timed)
            token_influence(H, W, Y, mask, pos, **kw)
        fns[p] = lambda kw=kw: token_influence(H, W, Y, mask, pos, **kw)
        m = methods[p]
        records[p] = {**base, "path": p, "method": m, "peak_extra_mb": round(mem.mb, 1),
                      "model_mb": round(memory_model_mb(N, Np, V, d, dtype, args.chunk, m, p == "logits",
                                                        max_kept=args.max_kept), 1),
                      "macs_per_lmhead": round(macs[p][m] / (N * V * d), 3)}
    times = interleaved(fns, dev, args.repeats, args.warmup)
    t_lm = median(times["lmhead"])
    for p, rec in records.items():
        t = median(times[p])
        ratios = [a / b for a, b in zip(times[p], times["lmhead"], strict=True)]
        rec.update(seconds=round(t, 4), lmhead_seconds=round(t_lm, 4), ratio=round(median(ratios), 3),
                   ratio_range=[round(min(ratios), 3), round(max(ratios), 3)])
        if "lmhead_fp32" in times:
            rec["ratio_fp32"] = round(median([a / b for a, b in zip(times[p], times["lmhead_fp32"], strict=True)]), 3)
        rec.update(gflops=round(2 * rec["macs_per_lmhead"] * N * V * d / t / 1e9, 1),
                   lmhead_gflops=round(2 * N * V * d / t_lm / 1e9, 1), repeats=args.repeats,
                   load_1m=machine_info(dev)["load_1m"])
        emit(rec, args.out)


def interleaved(fns: dict, device: str, repeats: int, warmup: int) -> dict[str, list[float]]:
    """Run every function once per round, ``repeats`` rounds: drifting machine load hits all alike."""
    for _ in range(warmup):
        for f in fns.values():
            f()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t, _ = timed(f, device, 1)
            times[k].append(t)
    return times


def _probe_child(name, G, T, dtype_name, chunk, max_kept, method, threads, conn):
    """Child of :func:`probe_memory`: build the group, reset the RSS high-water mark, run THR."""
    if threads:
        torch.set_num_threads(threads)
    d, V = MODELS[name]
    H, W, Y, mask, pos = random_group(G, T, d, V, DTYPES[dtype_name], "cpu")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    conn.send(_rss_kb("VmRSS"))
    token_influence(H, W, Y, mask, pos, chunk_size=chunk, max_kept_elements=max_kept, method=method)
    conn.send(-1)


def probe_memory(name, G, T, dtype_name, args):
    """Peak RSS growth of the standalone path at a shape too slow to finish on this machine: the
    run is stopped after ``--probe-seconds`` (every buffer is allocated within the first chunks)."""
    import multiprocessing as mp
    d, V = MODELS[name]
    N, Np = G * T, (G // 2) * T
    method = choose_method(N, Np, V, d, args.chunk, max_kept_elements=args.max_kept) if args.method == "auto" else args.method
    parent, child = mp.get_context("spawn").Pipe()
    proc = mp.get_context("spawn").Process(target=_probe_child, args=(name, G, T, dtype_name, args.chunk, args.max_kept,
                                                                      method, args.threads, child))
    proc.start()
    base_kb = parent.recv()
    t0 = time.perf_counter()
    finished = parent.poll(args.probe_seconds) and parent.recv() == -1
    hwm_kb = _rss_kb("VmHWM", f"/proc/{proc.pid}/status")
    proc.kill()
    proc.join()
    emit({"case": f"{name}-G{G}-T{T}", "G": G, "T": T, "d": d, "V": V, "N": N, "N_pos": Np, "dtype": dtype_name,
          "path": "standalone", "method": method, "chunk": args.chunk, "probe_seconds": round(time.perf_counter() - t0, 1),
          "finished": bool(finished), "peak_extra_mb": round((hwm_kb - base_kb) / 1024, 1),
          "model_mb": round(memory_model_mb(N, Np, V, d, DTYPES[dtype_name], args.chunk, method, False,
                                            max_kept=args.max_kept), 1),
          "full_logits_mb": round(N * V * 4 / 2**20, 1), "load_1m": round(os.getloadavg()[0], 2)}, args.out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    ap.add_argument("--quick", action="store_true", help="same as --preset quick --repeats 3")
    ap.add_argument("--cases", default=None, help="regex on case names, e.g. 'qwen.*G8-T(64|512)$'")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--method", choices=["auto", "mform", "pair"], default="auto")
    ap.add_argument("--chunk", type=int, default=DEFAULT_CHUNK)
    ap.add_argument("--max-kept-gb", type=float, default=None,
                    help="M-form budget of kept positive probabilities (default: the library's, 2 GiB)")
    ap.add_argument("--lmhead-chunk", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=None, help="default: 1 on cuda, 0 on cpu")
    ap.add_argument("--max-tflop", type=float, default=None, help="skip cases above (default: 3 on cpu, 1e9 on cuda)")
    ap.add_argument("--max-logits-gb", type=float, default=None, help="default 4 on cpu, 24 on cuda")
    ap.add_argument("--no-logits", action="store_true", help="only the standalone path")
    ap.add_argument("--tf32", action="store_true", help="allow TF32 for float32 matmuls on CUDA")
    ap.add_argument("--probe-seconds", type=float, default=None,
                    help="CPU: only measure the standalone path's peak memory, stopping each run after this long")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="also append the JSON lines to this file")
    args = ap.parse_args(argv)
    cuda = args.device.startswith("cuda")
    if args.quick:
        args.preset = "quick"
    args.warmup = (1 if cuda else 0) if args.warmup is None else args.warmup
    args.max_kept = None if args.max_kept_gb is None else int(args.max_kept_gb * 2**30 / 4)
    args.max_tflop = (1e9 if cuda else 3.0) if args.max_tflop is None else args.max_tflop
    args.max_logits_gb = (24.0 if cuda else 4.0) if args.max_logits_gb is None else args.max_logits_gb
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
    info = machine_info(args.device)
    emit({"machine": info, "preset": args.preset, "chunk": args.chunk}, args.out)
    for name, G, T in PRESETS[args.preset]:
        if args.cases and not re.search(args.cases, f"{name}-G{G}-T{T}"):
            continue
        for dt in args.dtypes.split(","):
            if args.probe_seconds:
                probe_memory(name, G, T, dt, args)
                continue
            with torch.no_grad():
                run_case(name, G, T, dt, args, info)


if __name__ == "__main__":
    main()
