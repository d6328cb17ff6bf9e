"""Restricted-vocabulary approximation: speed-up and error against exact THR; bf16 error.

Usage::

    python benchmarks/thr_approx_error.py --quick
    python benchmarks/thr_approx_error.py                       # CPU preset (minutes)
    python benchmarks/thr_approx_error.py --device cuda --preset full --out approx.jsonl

Groups come from :func:`_common.policy_group` (tokens sampled from the policy itself; half the
responses positive). One JSON line per (case, variant):

- ``variant``: ``group`` (tokens of the group, renormalized over them), ``group+logprobs``
  (exact normalization from the old log-probs ``ln pi(y)``), ``group+topK+logits`` (top-k of every
  distribution and exact probabilities from the old-pass logits; ``+logprobs``: the old log-probs
  also given, which saves the log-sum-exp pass), ``group+topK`` (top-k found by one streamed head
  product);
- ``vocab`` (``|S|``) and ``vocab_fraction``; ``seconds`` against ``exact_seconds`` of the exact
  path with the same inputs (standalone, or with ``logits`` for the ``+logits`` variants) and
  ``speedup``;
- errors against exact ``s``: ``rel_l2`` (``||s~ - s|| / ||s||``), ``rel_max``
  (``max|s~ - s| / max|s|``), ``sign_agree`` (tokens whose sign matches, among the
  ``significant`` ones with ``|s| > 1e-3 max|s|``: the sign of a near-zero ``s`` is rounding noise),
  ``sign_agree_top`` (the same among tokens with ``|s|`` above the median), ``dominant_jaccard``
  (dominant sets under the NTHR threshold, each from its own ``s``), ``weight_agree`` (tokens whose
  THR weight ``1 + p sign(THR) [dominant]`` is the same).

``--bf16`` adds ``kind: "bf16_error"`` lines: the relative error of exact influence from bf16 (and
float32) inputs, computed with float32 accumulation, against float64, both against the float64
value of the same rounded inputs (arithmetic error) and of the unrounded ones (total).
"""

from __future__ import annotations

import argparse
import re

import torch
from _common import PeakMemory, emit, machine_info, policy_group, timed

from thr.core import influence_threshold
from thr.core import token_influence


def token_influence_approx(*args, return_vocab_size=False, **kwargs):
    if return_vocab_size:
        out, sizes = token_influence(*args, algorithm="approx", return_vocab_sizes=True, **kwargs)
        return out, sizes[0]
    return token_influence(*args, algorithm="approx", **kwargs)
from thr.core.influence import token_influence
from thr.core.masked import selective_log_softmax

PRESETS = {  # (name, G, T, d, V)
    "quick": [("small", 8, 64, 256, 8000)],
    "cpu": [("small", 8, 64, 256, 8000), ("mid", 8, 128, 1024, 32000), ("qwen2.5-math-1.5b", 8, 48, 1536, 151936),
            ("qwen2.5-math-1.5b", 8, 256, 1536, 151936)],
    "full": [("mid", 8, 512, 1024, 32000), ("qwen2.5-math-1.5b", 8, 512, 1536, 151936),
             ("qwen2.5-math-1.5b", 8, 2048, 1536, 151936), ("llama-3.2-3b", 8, 512, 3072, 128256)],
}


def errors(approx: torch.Tensor, exact: torch.Tensor, mask: torch.Tensor, positive: torch.Tensor, G: int) -> dict:
    a, e = approx.double()[mask], exact.double()[mask]
    sig = e.abs() > 1e-3 * e.abs().max()  # signs of near-zero values (g ~ 0) are rounding noise
    top = e.abs() > e.abs().median()
    tau_e = influence_threshold(exact.double(), mask, positive, group_size=G)[:, None].expand_as(mask)[mask]
    tau_a = influence_threshold(approx.double(), mask, positive, group_size=G)[:, None].expand_as(mask)[mask]
    dom_e, dom_a = e.abs() > tau_e, a.abs() > tau_a
    union = (dom_e | dom_a).sum().item()
    same_w = (dom_e == dom_a) & (~dom_e | (a.sign() == e.sign()))
    return dict(rel_l2=float((a - e).norm() / e.norm()), rel_max=float((a - e).abs().max() / e.abs().max()),
                sign_agree=float((a.sign() == e.sign())[sig].double().mean()), significant=int(sig.sum()),
                sign_agree_top=float((a.sign() == e.sign())[top].double().mean()),
                dominant_exact=int(dom_e.sum()), dominant_approx=int(dom_a.sum()),
                dominant_jaccard=float((dom_e & dom_a).sum().item() / union) if union else 1.0,
                weight_agree=float(same_w.double().mean()))


def run_case(name, G, T, d, V, args):
    dev = args.device
    H, W, Y, mask, pos, logits = policy_group(G, T, d, V, torch.float32, dev, seed=args.seed)
    base = dict(kind="approx", case=f"{name}-G{G}-T{T}", G=G, T=T, d=d, V=V, N=int(mask.sum()),
                N_pos=int(mask[pos].sum()), device=dev)
    logp = selective_log_softmax(logits, Y, temperature=1.0)
    t_exact, s_exact = timed(lambda: token_influence(H, W, Y, mask, pos), dev, args.repeats)
    t_exact_lg, s_exact_lg = timed(lambda: token_influence(H, W, Y, mask, pos, logits=logits), dev, args.repeats)
    emit({**base, "variant": "exact", "seconds": round(t_exact, 4), "seconds_with_logits": round(t_exact_lg, 4),
          "logits_vs_standalone_rel_l2": float((s_exact_lg - s_exact).norm() / s_exact.norm()),
          "load_1m": machine_info(dev)["load_1m"]}, args.out)
    variants = [("group", {}, False), ("group+logprobs", dict(token_log_probs=logp), False)]
    variants += [(f"group+top{k}+logits", dict(top_k=k, logits=logits), True) for k in args.top_k]
    variants += [(f"group+top{k}+logits+logprobs", dict(top_k=k, logits=logits, token_log_probs=logp), True)
                 for k in args.top_k[:1]]
    variants += [(f"group+top{args.top_k[0]}", dict(top_k=args.top_k[0]), False)]
    for label, kw, with_logits in variants:
        fn = lambda kw=kw: token_influence_approx(H, W, Y, mask, pos, return_vocab_size=True, **kw)
        with PeakMemory(dev) as mem:
            fn()
        t, (s, size) = timed(fn, dev, max(args.repeats, 3))
        t_ref = t_exact_lg if with_logits else t_exact
        emit({**base, "variant": label, "vocab": size, "vocab_fraction": round(size / V, 4), "seconds": round(t, 4),
              "exact_seconds": round(t_ref, 4), "speedup": round(t_ref / t, 1), "peak_extra_mb": round(mem.mb, 1),
              **errors(s, s_exact_lg if with_logits else s_exact, mask, pos, G),
              "load_1m": machine_info(dev)["load_1m"]}, args.out)


def run_bf16(name, G, T, d, V, args):
    """Exact influence from bf16 / fp32 inputs (float32 accumulation) against float64."""
    dev = args.device
    H, W, Y, mask, pos, logits = policy_group(G, T, d, V, torch.float64, dev, seed=args.seed)
    s64 = token_influence(H, W, Y, mask, pos)
    base = dict(kind="bf16_error", case=f"{name}-G{G}-T{T}", G=G, T=T, d=d, V=V, device=dev)
    for dt in (torch.bfloat16, torch.float32):
        Hr, Wr = H.to(dt), W.to(dt)
        s_r64 = token_influence(Hr.double(), Wr.double(), Y, mask, pos)
        got = {"standalone": token_influence(Hr, Wr, Y, mask, pos),
               "logits": token_influence(Hr, Wr, Y, mask, pos, logits=logits.to(dt))}
        for path, s in got.items():
            def rel(ref, s=s):
                return float((s.double() - ref)[mask].norm() / ref[mask].norm())
            sig = mask & (s64.abs() > 1e-3 * s64.abs().max())
            emit({**base, "input_dtype": str(dt).replace("torch.", ""), "path": path, "result_dtype": str(s.dtype),
                  "rel_l2_vs_float64_same_inputs": rel(s_r64), "rel_l2_vs_float64_unrounded": rel(s64),
                  "sign_agree_vs_float64": float((s.double().sign() == s64.sign())[sig].double().mean())}, args.out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--cases", default=None, help="regex on case names")
    ap.add_argument("--top-k", default="8,64", help="comma-separated k for the +logits variants")
    ap.add_argument("--repeats", type=int, default=1, help="exact runs per timing (median)")
    ap.add_argument("--bf16", action="store_true", help="also the bf16/fp32-vs-float64 error lines")
    ap.add_argument("--bf16-case", default="mid,8,128,1024,32000", help="name,G,T,d,V of the bf16 error case")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    args.top_k = [int(k) for k in args.top_k.split(",")]
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.preset = "quick"
        args.bf16_case = "small,8,64,256,8000"
    emit({"machine": machine_info(args.device), "preset": args.preset}, args.out)
    with torch.no_grad():
        for name, G, T, d, V in PRESETS[args.preset]:
            if args.cases is None or re.search(args.cases, f"{name}-G{G}-T{T}"):
                run_case(name, G, T, d, V, args)
        if args.bf16:
            n, *dims = args.bf16_case.split(",")
            run_bf16(n, *map(int, dims), args)


if __name__ == "__main__":
    main()
