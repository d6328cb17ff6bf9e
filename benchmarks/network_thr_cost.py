"""Cost of network THR (``thr.network_token_influence``) against the trainer's old-policy forward.

For each case (a random-init Qwen2-style causal LM built locally, no download) and a batch of
``--groups`` groups of ``G`` responses (left-padded prompts of varying length, responses of
varying length, the first half of every group positive), per micro-batch of one group, timed with
device sync, median over ``--repeats`` rounds:

- ``forward``: the old-policy forward as ``thr.rl.trainer.Trainer.old_policy_pass`` runs it
  (``capture_head_inputs`` + ``policy_forward`` + ``selective_log_softmax`` + ``entropy_from_logits``);
- ``head``: today's exact THR from the captured states (``token_influence``, recomputed);
- ``network_all``: ``network_token_influence`` over every parameter (one backward over the
  positive rows, one jvp over all rows);
- ``network_last1``: the same over the last block, the final norm and the head (``thr.network_params=last:1``);
- ``network_all_double_backward``: the double-backward fallback (``--double-backward``).

One JSON line per (case, path): ``seconds``, ``over_forward`` (median over rounds of seconds / forward seconds of the same round; every round
runs every path once, so load drift hits them alike), ``over_forward_range``,
``peak_extra_mb`` (peak RSS growth on CPU, allocator peak above the baseline on CUDA). The first
line describes the machine.

    python benchmarks/network_thr_cost.py --cases embedded,small --out results/cpu/network_thr_cost.jsonl
    python benchmarks/network_thr_cost.py --device cuda --cases qwen2.5-1.5b --rows-per-pass 4   # GPU (not run here)
"""

from __future__ import annotations

import argparse
import os
from statistics import median

import torch
from _common import PeakMemory, emit, machine_info, timed

from thr.core import entropy_from_logits, network_token_influence, selective_log_softmax, token_influence
from thr.models.loading import capture_head_inputs, lm_head_weight
from thr.rl.batch import build_batch, policy_forward
from thr.rl.old_pass import select_network_parameters

CASES = {  # name: (model config, G, prompt length, response length)
    "embedded": (dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4,
                      intermediate_size=256, vocab_size=258), 8, 40, 110),
    "small": (dict(hidden_size=128, num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=2,
                   intermediate_size=512, vocab_size=4096), 8, 32, 160),
    "qwen2.5-1.5b": (dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                          intermediate_size=8960, vocab_size=151936, tie_word_embeddings=True, rope_theta=10000.0,
                          rms_norm_eps=1e-6), 8, 256, 1024),
}


def build(case: str, device: str, dtype: torch.dtype, seed: int):
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg, G, P, T = CASES[case]
    config = AutoConfig.for_model("qwen2", max_position_embeddings=P + T + 8, **cfg)
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype).eval()
    return model, G, P, T


def make_batch(V: int, G: int, groups: int, P: int, T: int, device: str, seed: int):
    gen = torch.Generator().manual_seed(seed)
    B = G * groups
    prompts = [torch.randint(0, V, (P - (j % 4) * (P // 8),), generator=gen).tolist() for j in range(B)]
    responses = [torch.randint(0, V, (T - (j % 3) * (T // 6),), generator=gen).tolist() for j in range(B)]
    batch = build_batch(prompts, responses, 0, torch.device(device))
    positive = (torch.arange(B) % G < G // 2).to(device)
    return batch, positive


def old_forward(model, sub, tau):
    with torch.no_grad(), capture_head_inputs(model) as captured:
        logits = policy_forward(model, sub)
        selective_log_softmax(logits, sub.response_ids, temperature=tau)
        entropy_from_logits(logits, temperature=tau)
    return captured[-1][:, :-1]


def network(model, sub, positive, G, tau, params, rows, method="auto"):
    P = sub.prompt_width
    resp = torch.zeros(sub.attention_mask.shape, dtype=torch.bool, device=sub.attention_mask.device)
    resp[:, P:] = sub.response_mask
    return network_token_influence(model, sub.input_ids, sub.attention_mask, resp, positive, group_size=G,
                                   temperature=tau, parameters=params, rows_per_pass=rows, method=method)[:, P:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="embedded,small")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--groups", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5, help="rounds")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rows-per-pass", type=int, default=0, help="rows per backward/jvp (0: a whole group)")
    ap.add_argument("--double-backward", action="store_true", help="also time the double-backward fallback")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    emit({"machine": machine_info(args.device), "args": vars(args)}, args.out)
    tau, rows = 1.0, args.rows_per_pass or None
    for case in args.cases.split(","):
        model, G, P, T = build(case, args.device, dtype, args.seed)
        batch, positive = make_batch(model.config.vocab_size, G, args.groups, P, T, args.device, args.seed)
        subs = [(batch.rows(torch.arange(g, g + G, device=batch.input_ids.device)), positive[g : g + G])
                for g in range(0, batch.input_ids.shape[0], G)]
        W = lm_head_weight(model)
        all_params = select_network_parameters(model, "all")
        last1 = select_network_parameters(model, "last:1")
        paths = {
            "forward": lambda: [old_forward(model, s, tau) for s, _ in subs],
            "head": lambda: [token_influence(old_forward(model, s, tau), W, s.response_ids, s.response_mask, p,
                                                     group_size=G, temperature=tau) for s, p in subs],
            "network_all": lambda: [network(model, s, p, G, tau, all_params, rows) for s, p in subs],
            "network_last1": lambda: [network(model, s, p, G, tau, last1, rows) for s, p in subs],
        }
        if args.double_backward:
            paths["network_all_double_backward"] = lambda: [network(model, s, p, G, tau, all_params, rows, "double_backward")
                                                             for s, p in subs]
        n_tokens = int(batch.response_mask.sum())
        mem = {}
        for name, fn in paths.items():
            with PeakMemory(args.device) as m:  # also the warm-up
                fn()
            mem[name] = m.mb
        times = {name: [] for name in paths}
        for _ in range(args.repeats):  # every round runs every path once: load drift hits them alike
            for name, fn in paths.items():
                times[name].append(timed(fn, args.device, 1)[0])
        for name in paths:
            ratios = [t / f for t, f in zip(times[name], times["forward"])]
            n_params = sum(p.numel() for p in (all_params if "all" in name else last1 if "last1" in name else []))
            rec = {"case": case, "path": name, "G": G, "groups": args.groups, "prompt": P, "response": T,
                   "tokens": n_tokens, "params_in_set": n_params, "seconds": round(median(times[name]), 4),
                   "over_forward": round(median(ratios), 2), "over_forward_range": [round(min(ratios), 2), round(max(ratios), 2)],
                   "peak_extra_mb": round(mem[name], 1), "dtype": args.dtype, "rows_per_pass": rows,
                   "load_1m": round(os.getloadavg()[0], 2)}
            if name == "head":  # the head path includes its own forward (the states); THR alone:
                rec["thr_alone_over_forward"] = round(median(r - 1 for r in ratios), 2)
            emit(rec, args.out)


if __name__ == "__main__":
    main()
