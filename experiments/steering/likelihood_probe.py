"""Do positive-THR tokens raise the likelihood of the correct responses? A direct probe.

THR's definition (docs/thr-spec.md, section 2) is a first-order prediction: one gradient step
on the GRPO surrogate restricted to a token set ``S`` of one group changes the summed
log-likelihood of the group's correct responses by

    predicted = lr / N * sum_{(j,k) in S} THR_{j,k}        (the W-part, hidden states held fixed)

where ``N`` is the group's token count (token-mean loss). This script samples groups from the
warm-started embedded model and, for each group with mixed rewards, takes one plain SGD step
from the same weights on each token set (all tokens; THR > 0; THR < 0; the dominant ones of
each sign; a random set as large as the THR > 0 set), then measures the actual change of the
correct responses' summed log-likelihood. Two scopes: the LM head only (what THR models
exactly, so agreement there checks the implementation and the step's linearity) and the whole
network (what training does: does the head-level theory carry over?).

With ``--network`` the ``full`` scope is also predicted by whole-network THR
(``thr.network_token_influence`` over every trainable parameter; rows ``full-network/...``):
the first-order prediction of exactly the step that is taken (docs/network-thr.md).

    python experiments/steering/likelihood_probe.py --out experiments/steering/results/probe
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from aggregate import mean_ci  # noqa: E402
from methods import SWEEP_RECIPE  # noqa: E402

from thr.analysis.stats import pearson, spearman  # noqa: E402

SUBSETS = ("all", "thr>0", "thr<0", "dominant thr>0", "dominant thr<0", "random")


def token_sets(thr: torch.Tensor, dominant: torch.Tensor, mask: torch.Tensor, gen: torch.Generator) -> dict:
    """Boolean ``[G, T]`` token sets of one group."""
    pos, neg = mask & (thr > 0), mask & (thr < 0)
    flat = mask.flatten().nonzero().squeeze(1)
    pick = flat[torch.randperm(flat.numel(), generator=gen)[: int(pos.sum())]]
    rand = torch.zeros(mask.numel(), dtype=torch.bool)
    rand[pick] = True
    return {"all": mask, "thr>0": pos, "thr<0": neg, "dominant thr>0": pos & dominant,
            "dominant thr<0": neg & dominant, "random": rand.view_as(mask)}


def positive_loglik(model, sub, positive: torch.Tensor, temperature: float) -> torch.Tensor:
    from thr.core import selective_log_softmax
    from thr.rl.batch import policy_forward

    logp = selective_log_softmax(policy_forward(model, sub), sub.response_ids, temperature=temperature)
    return (logp * sub.response_mask)[positive].sum()


def network_thr(model, sub, adv, positive, temperature: float) -> torch.Tensor:
    """``A_j * s_{j,k}`` with ``s`` over every trainable parameter (``thr.network_token_influence``), ``[G, t]``."""
    from thr.core import network_token_influence

    P = sub.prompt_width
    response = torch.zeros(sub.attention_mask.shape, dtype=torch.bool, device=sub.attention_mask.device)
    response[:, P:] = sub.response_mask
    s = network_token_influence(model, sub.input_ids, sub.attention_mask, response, positive,
                                group_size=positive.shape[0], temperature=temperature)[:, P:]
    return adv[:, None].to(s.dtype) * s


def probe_group(model, sub, adv, thr, positive, sets, lr, head, temperature: float = 1.0,
                thr_network: torch.Tensor | None = None) -> list[dict]:
    """One SGD step per (token set, scope) from the same weights; the actual vs predicted change.

    ``thr_network``: the whole-network THR of the group; its prediction for the ``full`` scope is
    logged beside the head's as ``predicted_network``."""
    from thr.core import selective_log_softmax
    from thr.rl.batch import policy_forward

    params = {"head": [head], "full": [p for p in model.parameters() if p.requires_grad]}
    saved = [p.detach().clone() for p in params["full"]]
    n_tok = float(sub.response_mask.sum())
    with torch.no_grad():
        before = float(positive_loglik(model, sub, positive, temperature))
    rows = []
    for name, sel in sets.items():
        if not sel.any():
            continue
        predicted = lr * float((thr * sel).sum()) / n_tok
        for scope, plist in params.items():
            logp = selective_log_softmax(policy_forward(model, sub), sub.response_ids, temperature=temperature)
            loss = -(adv[:, None] * logp * sel).sum() / n_tok
            grads = torch.autograd.grad(loss, plist, allow_unused=True)
            with torch.no_grad():
                for p, g in zip(plist, grads):
                    if g is not None:
                        p.sub_(lr * g)
                after = float(positive_loglik(model, sub, positive, temperature))
                for p, s in zip(params["full"], saved):
                    p.copy_(s)
            row = {"subset": name, "scope": scope, "tokens": int(sel.sum()), "predicted": predicted,
                   "actual": after - before}
            if thr_network is not None and scope == "full":
                row["predicted_network"] = lr * float((thr_network * sel).sum()) / n_tok
            rows.append(row)
    return rows


def run_seed(seed: int, batches: int, lr: float, extra: list[str], network: bool = False) -> list[dict]:
    from thr.config import load_config
    from thr.core import group_advantages, influence_threshold
    from thr.models.loading import output_embeddings
    from thr.rl.batch import build_batch
    from thr.rl.trainer import Trainer
    from thr.rl.config import TrainConfig

    tmp = tempfile.mkdtemp(prefix="thr-probe-")
    cfg = load_config(TrainConfig, [f"seed={seed}", f"embedded.seed={seed}", f"output_dir={tmp}", "log.progress=false",
                                    "eval.before=false", "thr.mode=off", "log.groups_every=0", *SWEEP_RECIPE, *extra])
    tr = Trainer(cfg)
    tr.model.eval()
    G, gen, out = cfg.rollout.group_size, torch.Generator().manual_seed(seed), []
    head = output_embeddings(tr.model).weight  # the trainable parameter (lm_head_weight detaches)
    for b in range(batches):
        torch.manual_seed(seed * 7919 + b)
        rollout = tr.rollout(b)
        samples, scores = rollout.samples, rollout.scores
        rewards = torch.tensor([s.reward for s in scores])
        correct = torch.tensor([s.correct for s in scores])
        adv, _ = group_advantages(rewards, group_size=G)
        batch = build_batch([s.prompt_ids for s in samples], [s.response_ids for s in samples],
                            tr.tokenizer.pad_token_id, tr.device)
        old = tr.old_policy_pass(batch, correct)
        tr.model.eval()
        influence = old.influence
        thr = adv[:, None] * influence
        tau = influence_threshold(influence, batch.response_mask, correct, group_size=G)
        dominant = influence.abs() > tau[:, None]
        for g in range(len(samples) // G):
            rows = torch.arange(g * G, (g + 1) * G)
            if not correct[rows].any() or correct[rows].all():
                continue  # no mixed rewards: zero advantages, nothing to probe
            sub = batch.rows(rows)
            t = sub.response_width
            sets = token_sets(thr[rows, :t], dominant[rows, :t], sub.response_mask, gen)
            thr_net = network_thr(tr.model, sub, adv[rows], correct[rows], cfg.rollout.temperature) if network else None
            for r in probe_group(tr.model, sub, adv[rows], thr[rows, :t], correct[rows], sets, lr, head,
                                 cfg.rollout.temperature, thr_net):
                out.append({"seed": seed, "batch": b, "group": g, **r})
    return out


def _nan_if_none(x: float | None) -> float:
    return float("nan") if x is None else x


def summarize(rows: list[dict]) -> dict:
    table = {}
    for scope in ("head", "full"):
        for name in SUBSETS:
            sel = [r for r in rows if r["scope"] == scope and r["subset"] == name]
            if not sel:
                continue
            act, pred = [r["actual"] for r in sel], [r["predicted"] for r in sel]
            agree = sum((a > 0) == (p > 0) for a, p in zip(act, pred)) / len(sel)
            table[f"{scope}/{name}"] = {
                "groups": len(sel), "actual": mean_ci(act), "predicted": mean_ci(pred),
                "frac_actual_positive": sum(a > 0 for a in act) / len(sel), "sign_agreement": agree,
                "pearson": _nan_if_none(pearson(pred, act)), "spearman": _nan_if_none(spearman(pred, act)),
            }
            if all("predicted_network" in r for r in sel):  # --network: whole-network THR's prediction
                net = [r["predicted_network"] for r in sel]
                table[f"{scope}-network/{name}"] = {
                    "groups": len(sel), "actual": mean_ci(act), "predicted": mean_ci(net),
                    "frac_actual_positive": sum(a > 0 for a in act) / len(sel),
                    "sign_agreement": sum((a > 0) == (p > 0) for a, p in zip(act, net)) / len(sel),
                    "pearson": _nan_if_none(pearson(net, act)), "spearman": _nan_if_none(spearman(net, act)),
                }
    return table


def paired_contrasts(rows: list[dict]) -> dict:
    """Per group, ``thr>0`` minus ``random`` (same token count) and minus ``all``: does selecting
    positive-THR tokens raise the correct responses' likelihood more than other choices?"""
    by: dict[tuple, dict] = {}
    for r in rows:
        by.setdefault((r["seed"], r["batch"], r["group"], r["scope"]), {})[r["subset"]] = r["actual"]
    out = {}
    for scope in ("head", "full"):
        for other in ("random", "all"):
            diffs = [v["thr>0"] - v[other] for k, v in by.items() if k[3] == scope and "thr>0" in v and other in v]
            if diffs:
                out[f"{scope}/thr>0 - {other}"] = {**mean_ci(diffs), "frac_positive": sum(d > 0 for d in diffs) / len(diffs)}
    return out


def markdown(table: dict, settings: dict) -> str:
    lines = [f"# Likelihood probe\n\nSettings: {json.dumps(settings)}\n",
             "Change of the summed log-likelihood of a group's correct responses after one SGD step on",
             "the token set (x1e3; mean ± 95% t-interval over groups); `predicted` = lr/N * sum of THR.\n",
             "| scope | token set | groups | actual ×1e3 | predicted ×1e3 | actual > 0 | sign agrees | Pearson r | Spearman |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for key, r in table.items():
        scope, name = key.split("/", 1)
        a, p = r["actual"], r["predicted"]
        lines.append(f"| {scope} | {name} | {r['groups']} | {a['mean'] * 1e3:.3f} ± {a['ci95'] * 1e3:.3f} | "
                     f"{p['mean'] * 1e3:.3f} ± {p['ci95'] * 1e3:.3f} | {r['frac_actual_positive']:.0%} | "
                     f"{r['sign_agreement']:.0%} | {r['pearson']:.3f} | {r['spearman']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(HERE / "results" / "probe"))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--batches", type=int, default=6, help="rollout batches per seed (16 groups of 8 each)")
    ap.add_argument("--lr", type=float, default=0.005, help="SGD step size of the probe step")
    ap.add_argument("--summarize-only", action="store_true", help="rebuild the tables from OUT/probe.jsonl")
    ap.add_argument("--network", action="store_true",
                    help="also predict the full-scope change with whole-network THR (rows 'full-network')")
    ap.add_argument("overrides", nargs="*", help="thr train overrides (e.g. embedded.arch=llama)")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.summarize_only:
        rows = [json.loads(line) for line in (out / "probe.jsonl").read_text().splitlines()]
    else:
        rows = []
        for seed in [int(s) for s in a.seeds.split(",")]:
            rows += run_seed(seed, a.batches, a.lr, a.overrides, a.network)
        with open(out / "probe.jsonl", "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    settings = {"seeds": a.seeds, "batches": a.batches, "lr": a.lr, "overrides": a.overrides,
                **({"network": True} if a.network else {})}
    if a.summarize_only and (out / "probe_summary.json").is_file():  # keep what the rows were made with
        settings = json.loads((out / "probe_summary.json").read_text())["settings"]
    table, contrasts = summarize(rows), paired_contrasts(rows)
    (out / "probe_summary.json").write_text(json.dumps({"settings": settings, "table": table, "contrasts": contrasts},
                                                       indent=1) + "\n")
    md = markdown(table, settings) + "\n| paired per group | mean ×1e3 | groups where > 0 |\n| --- | --- | --- |\n" + "".join(
        f"| {k} | {v['mean'] * 1e3:.2f} ± {v['ci95'] * 1e3:.2f} | {v['frac_positive']:.0%} |\n" for k, v in contrasts.items())
    (out / "probe.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
