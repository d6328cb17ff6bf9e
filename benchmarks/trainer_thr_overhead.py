"""THR inside the trainer's fused old-policy pass, at real model shapes (random weights, no download).

Builds a causal LM from hard-coded published config numbers (Qwen2.5-Math-1.5B, Llama-3.2-3B)
with random init (``AutoModelForCausalLM.from_config`` on the device, bf16 on CUDA), makes G
responses of length T from random tokens (left-padded prompts of varying length, responses of
varying length, half of every group positive) and times, per micro-batch of whole groups, with
device sync:

- ``forward``: the old-policy forward exactly as ``thr.rl.trainer.Trainer.old_policy_pass`` runs it
  (``capture_head_inputs`` + ``policy_forward`` + ``selective_log_softmax`` + ``entropy_from_logits``);
  its line also has ``lm_head_seconds`` (the model's own LM head on the captured states);
- ``thr_recompute``: exact ``token_influence`` from the states (logits freed first:
  ``thr.reuse_logits=off``, or ``auto`` with bf16 logits);
- ``thr_reuse``: the same with the forward's logits (``thr.reuse_logits=on``; on CUDA these are
  bf16, so its ``rel_l2_vs_recompute`` shows the bf16 rounding);
- ``thr_approx_reuse`` / ``thr_approx``: ``token_influence(..., algorithm="approx")`` with the old
  log-probs, with / without the logits (``thr.algorithm=approx``, ``--top-k``);
- ``thr_reuse_fp32`` (only with ``--paths``): reuse of float32 logits (the upcast is not timed).

One JSON line per (case, path): ``seconds`` (median over ``--repeats`` rounds of the sum over
micro-batches), ``peak_extra_mb`` (allocator peak above what was allocated before the call;
peak RSS growth on CPU), for THR paths ``thr_over_forward`` and ``thr_over_lm_head``, and
``rel_l2_vs_recompute``. The first line describes the machine.

Random weights give near-uniform distributions and uniformly random tokens, so the approximation's
``|S|`` (``vocab_sizes``) is far larger than with a trained model on real text; the exact paths'
cost does not depend on the values. Rope scaling of Llama-3.2 is left out (no effect on cost).

    python benchmarks/trainer_thr_overhead.py --device cuda --out thr_trainer.jsonl
    python benchmarks/trainer_thr_overhead.py --device cpu --layers 1 --hidden 64 --vocab 1000 --T 32
"""

from __future__ import annotations

import argparse
import re
from statistics import median

import torch
from _common import PeakMemory, emit, machine_info, timed

from thr.core import (
    entropy_from_logits,
    selective_log_softmax,
    token_influence,
)
from thr.models.loading import capture_head_inputs, lm_head_weight, output_embeddings
from thr.rl.batch import build_batch, policy_forward

ARCHS = {  # published config numbers (no download)
    "qwen2.5-math-1.5b": dict(model_type="qwen2", hidden_size=1536, num_hidden_layers=28, num_attention_heads=12,
                              num_key_value_heads=2, intermediate_size=8960, vocab_size=151936, tie_word_embeddings=True,
                              rope_theta=10000.0, max_position_embeddings=4096, rms_norm_eps=1e-6),
    "llama-3.2-3b": dict(model_type="llama", hidden_size=3072, num_hidden_layers=28, num_attention_heads=24,
                         num_key_value_heads=8, intermediate_size=8192, vocab_size=128256, tie_word_embeddings=True,
                         rope_theta=500000.0, max_position_embeddings=131072, rms_norm_eps=1e-5),
}
CASES = [("qwen2.5-math-1.5b", 8, 1024), ("qwen2.5-math-1.5b", 8, 4096), ("llama-3.2-3b", 8, 1024)]
PATHS = ("thr_recompute", "thr_reuse", "thr_approx_reuse", "thr_approx")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}


def build_model(name: str, args, max_T: int):
    """Random-init causal LM with ``name``'s config numbers and the command line's overrides."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = dict(ARCHS[name])
    if args.hidden:
        cfg.update(hidden_size=args.hidden, num_attention_heads=4, num_key_value_heads=2, intermediate_size=2 * args.hidden)
    for key, value in (("num_hidden_layers", args.layers), ("vocab_size", args.vocab), ("num_attention_heads", args.heads),
                       ("num_key_value_heads", args.kv_heads), ("intermediate_size", args.intermediate)):
        if value:
            cfg[key] = value
    cfg["max_position_embeddings"] = max(cfg["max_position_embeddings"], args.prompt_len + max_T + 1)
    config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    dtype = DTYPES[args.dtype]
    torch.manual_seed(args.seed)
    with torch.device(args.device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    if next(model.parameters()).dtype != dtype:
        model = model.to(dtype)
    return model.eval(), cfg


def make_batch(G: int, groups: int, T: int, P: int, V: int, device: str, seed: int):
    """Random prompts (left-padded, lengths P..P/2) and responses (lengths T..~3T/4); half of every group positive."""
    gen = torch.Generator().manual_seed(seed)
    B = G * groups
    prompts = [torch.randint(1, V, (P - (j % G) * P // (2 * G),), generator=gen).tolist() for j in range(B)]
    responses = [torch.randint(1, V, (T - (j % G) * T // (4 * G),), generator=gen).tolist() for j in range(B)]
    batch = build_batch(prompts, responses, 0, torch.device(device))
    positive = (torch.arange(B) % G < G // 2).to(device)
    return batch, positive


def forward_fn(model, sub, tau):
    """The trainer's old-policy forward of one micro-batch: (logits, hidden, old log-probs, entropy)."""
    def run():
        with capture_head_inputs(model) as captured:
            logits = policy_forward(model, sub)
        lp = selective_log_softmax(logits, sub.response_ids, temperature=tau)
        ent = entropy_from_logits(logits, temperature=tau)
        return logits, captured[-1][:, :-1], lp, ent
    return run


def thr_fn(path, hidden, W, sub, pos, G, lp, logits, args):
    common = dict(group_size=G, temperature=args.temperature, chunk_size=args.chunk)
    ids, mask = sub.response_ids, sub.response_mask
    if path == "thr_recompute":
        return lambda: token_influence(hidden, W, ids, mask, pos, **common)
    if path in ("thr_reuse", "thr_reuse_fp32"):
        return lambda: token_influence(hidden, W, ids, mask, pos, logits=logits, **common)
    use = logits if path == "thr_approx_reuse" else None
    return lambda: token_influence(hidden, W, ids, mask, pos, algorithm="approx", top_k=args.top_k, logits=use,
                                                  token_log_probs=lp, return_vocab_sizes=True, **common)


def measure(fn, device):
    """(seconds, peak extra MB, result) of one synced call."""
    with PeakMemory(device) as mem:
        t, out = timed(fn, device, 1)
    return t, mem.mb, out


def one_round(model, W, batch, positive, G, args, paths):
    """Every path once over all micro-batches: {name: [seconds, peak MB]} and the THR results."""
    dev, rows = args.device, max(1, args.micro // G) * G
    stats = {k: [0.0, 0.0] for k in ("forward", "lm_head", *paths)}
    results = {p: torch.zeros(batch.response_ids.shape, device=dev) for p in paths}
    sizes: dict[str, list[int]] = {p: [] for p in paths if "approx" in p}

    def add(name, t, mb):
        stats[name][0] += t
        stats[name][1] = max(stats[name][1], mb)

    for start in range(0, batch.response_ids.shape[0], rows):
        idx = torch.arange(start, min(start + rows, batch.response_ids.shape[0]), device=dev)
        sub = batch.rows(idx)
        t = sub.response_width
        sec, mb, (logits, hidden, lp, _ent) = measure(forward_fn(model, sub, args.temperature), dev)
        add("forward", sec, mb)
        order = [p for p in paths if p != "thr_recompute"] + [p for p in paths if p == "thr_recompute"]
        for p in order:
            if p == "thr_recompute":  # as the trainer without reuse: the logits are freed first
                logits = None
                sec, mb, _ = measure(lambda h=hidden: output_embeddings(model)(h).shape, dev)  # the output is freed
                add("lm_head", sec, mb)
            use = logits.float() if p == "thr_reuse_fp32" else logits
            sec, mb, out = measure(thr_fn(p, hidden, W, sub, positive[idx], G, lp, use, args), dev)
            del use
            add(p, sec, mb)
            if isinstance(out, tuple):
                out, s = out
                sizes[p] += s
            results[p][idx, :t] = out.float()
        del logits, hidden, lp
    return stats, results, sizes


def run_case(model, W, name, G, T, arch, args, info):
    paths = [p for p in args.paths.split(",") if p]
    if "thr_recompute" not in paths:
        paths.append("thr_recompute")  # the reference of every error and of the LM-head timing
    batch, positive = make_batch(G, args.groups, T, args.prompt_len, arch["vocab_size"], args.device, args.seed)
    rounds, results, sizes = [], None, None
    with torch.no_grad():
        for r in range(args.warmup + args.repeats):
            stats, res, sz = one_round(model, W, batch, positive, G, args, paths)
            if r >= args.warmup:
                rounds.append(stats)
            results, sizes = (res, sz) if results is None else (results, sizes)
    sec = {k: median(s[k][0] for s in rounds) for k in rounds[0]}
    mb = {k: max(s[k][1] for s in rounds) for k in rounds[0]}
    mask = batch.response_mask
    base = dict(case=f"{name}-G{G}-T{T}", model=name, G=G, T=T, groups=args.groups, micro_rows=max(1, args.micro // G) * G,
                prompt_len=args.prompt_len, layers=arch["num_hidden_layers"], hidden=arch["hidden_size"],
                vocab=arch["vocab_size"], dtype=args.dtype, temperature=args.temperature, device=args.device,
                device_name=info.get("gpu") or info.get("cpu", ""), tokens=int(mask.sum()),
                positive_tokens=int(mask[positive].sum()), repeats=args.repeats)
    emit({**base, "path": "forward", "seconds": round(sec["forward"], 5), "peak_extra_mb": round(mb["forward"], 1),
          "lm_head_seconds": round(sec["lm_head"], 5), "lm_head_peak_extra_mb": round(mb["lm_head"], 1)}, args.out)
    ref = results["thr_recompute"]
    for p in paths:
        rec = {**base, "path": p, "seconds": round(sec[p], 5), "peak_extra_mb": round(mb[p], 1),
               "forward_seconds": round(sec["forward"], 5), "lm_head_seconds": round(sec["lm_head"], 5),
               "thr_over_forward": round(sec[p] / sec["forward"], 4), "thr_over_lm_head": round(sec[p] / sec["lm_head"], 4),
               "rel_l2_vs_recompute": float((results[p] - ref).norm() / ref.norm().clamp(min=1e-30))}
        if p in sizes:
            rec.update(top_k=args.top_k, vocab_sizes=sizes[p])
        emit(rec, args.out)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="default: bfloat16 on cuda, float32 on cpu")
    ap.add_argument("--models", default=",".join(ARCHS), help="comma-separated, of: " + ", ".join(ARCHS))
    ap.add_argument("--T", type=lambda s: [int(x) for x in s.split(",")], default=None,
                    help="response lengths for every model (default: Qwen 1024,4096; Llama 1024)")
    ap.add_argument("--G", type=int, default=8)
    ap.add_argument("--groups", type=int, default=1)
    ap.add_argument("--micro", type=int, default=8, help="rows per micro-batch (rounded to whole groups)")
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--chunk", type=int, default=1024)
    ap.add_argument("--top-k", type=int, default=0, help="approx: top-k added to the restricted vocabulary")
    ap.add_argument("--paths", default=",".join(PATHS), help="of: " + ", ".join(PATHS) + ", thr_reuse_fp32")
    ap.add_argument("--cases", default=None, help="regex on case names, e.g. 'qwen.*T1024$'")
    for flag in ("--layers", "--hidden", "--vocab", "--heads", "--kv-heads", "--intermediate"):
        ap.add_argument(flag, type=int, default=None, help="override the published config (CPU smoke tests)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=None, help="default: 1 on cuda, 0 on cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tf32", action="store_true", help="allow TF32 for the float32 matmuls inside THR (CUDA)")
    ap.add_argument("--out", default=None, help="also append the JSON lines to this file")
    args = ap.parse_args(argv)
    cuda = args.device.startswith("cuda")
    args.dtype = args.dtype or ("bfloat16" if cuda else "float32")
    args.warmup = (1 if cuda else 0) if args.warmup is None else args.warmup
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    unknown = set(models) - set(ARCHS)
    if unknown:
        raise SystemExit(f"unknown --models {sorted(unknown)}; choose from {list(ARCHS)}")
    cases = [(m, args.G, T) for m in models for T in args.T] if args.T else [c for c in CASES if c[0] in models]
    cases = [c for c in cases if not args.cases or re.search(args.cases, f"{c[0]}-G{c[1]}-T{c[2]}")]
    if args.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
    info = machine_info(args.device)
    emit({"machine": info, "script": "trainer_thr_overhead", "dtype": args.dtype, "tf32": args.tf32}, args.out)
    for name in dict.fromkeys(c[0] for c in cases):
        model, arch = build_model(name, args, max(c[2] for c in cases if c[0] == name))
        W = lm_head_weight(model)
        for _, G, T in (c for c in cases if c[0] == name):
            run_case(model, W, name, G, T, arch, args, info)
        del model, W
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
