"""Tables and figures of the steering sweep: per-method means with 95% intervals over seeds, and
paired differences against each family's plain-GRPO run (same seed, same base model).

Reads ``OUT/runs/*/seed*/summary.json`` and ``metrics.jsonl``; writes ``OUT/results.json``,
``OUT/results.md``, ``OUT/pass_at_k.png`` and ``OUT/likelihood.png``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from methods import arch_of, baseline_of, run_dir

# two-sided 95% Student t quantiles by degrees of freedom (df > 30: normal)
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}
# ``pass@maxK``: Pass@K at the largest K the run sampled (16 in the columns sweep, 64 in the arith one)
# ``mid_...``: the same at the run's mid-run evaluation (``eval.every``; the columns sweep scores step
# 12 of 16 there, where Pass@K still has room, and greedy accuracy at the end, where it has settled)
SCALARS = ["greedy", "pass@1", "pass@8", "pass@16", "pass@maxK", "mid_greedy", "mid_pass@maxK", "lik_correct",
           "lik_incorrect", "reward_last", "clip_frac"]
DIFF_KEYS = ["greedy", "pass@1", "pass@8", "pass@16", "pass@maxK", "mid_greedy", "mid_pass@maxK"]


def t95(df: int) -> float:
    if df <= 0:
        return float("nan")
    keys = [k for k in sorted(_T95) if k <= df]
    return _T95[keys[-1]] if df <= 30 else 1.96


def mean_ci(values: list[float]) -> dict[str, float]:
    """Mean, sample sd and the half-width of the mean's 95% t-interval (nan with fewer than two values)."""
    vals = [v for v in values if v is not None and not math.isnan(v)]
    n = len(vals)
    if n == 0:
        return {"mean": float("nan"), "ci95": float("nan"), "sd": float("nan"), "n": 0}
    m = sum(vals) / n
    if n < 2:
        return {"mean": m, "ci95": float("nan"), "sd": float("nan"), "n": 1}
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (n - 1))
    return {"mean": m, "ci95": t95(n - 1) * sd / math.sqrt(n), "sd": sd, "n": n}


def paired_diffs(runs_a: dict[int, dict], runs_b: dict[int, dict], get) -> list[float]:
    """``get(a) - get(b)`` per seed both runs have, where both values exist (``get`` reads one record)."""
    pairs = ((get(runs_a[k]), get(runs_b[k])) for k in runs_a if k in runs_b)
    return [x - y for x, y in pairs if x is not None and y is not None]


def load_run(rd: Path) -> dict | None:
    """The figures of one finished run, or None."""
    summ = rd / "summary.json"
    if not summ.is_file():
        return None
    summary = json.loads(summ.read_text())
    final = summary["final_eval"]
    rec = {"greedy": final.get("eval/greedy_accuracy"), "pass_at_k": {}}
    for key, v in final.items():
        if key.startswith("eval/pass@"):
            rec["pass_at_k"][int(key.split("@")[1])] = v
    for k in (1, 8, 16):
        rec[f"pass@{k}"] = rec["pass_at_k"].get(k)
    rec["pass@maxK"] = rec["pass_at_k"][max(rec["pass_at_k"])] if rec["pass_at_k"] else None
    lik_c, lik_i, rewards, clip = [], [], [], []
    rec["mid_greedy"] = rec["mid_pass@maxK"] = rec["mid_step"] = None
    log = rd / "metrics.jsonl"
    for line in log.read_text().splitlines() if log.is_file() else []:
        row = json.loads(line)
        if "eval/greedy_accuracy" in row and 0 < row.get("step", 0) < summary.get("steps", 0):
            mid = {int(k.split("@")[1]): v for k, v in row.items() if k.startswith("eval/pass@")}
            rec["mid_step"], rec["mid_greedy"] = row["step"], row["eval/greedy_accuracy"]
            rec["mid_pass@maxK"] = mid[max(mid)] if mid else None
        if "likelihood/correct_delta" in row:
            lik_c.append(row["likelihood/correct_delta"])
        if "likelihood/incorrect_delta" in row:
            lik_i.append(row["likelihood/incorrect_delta"])
        if "reward/mean" in row:
            rewards.append(row["reward/mean"])
        if "loss/clip_frac" in row:
            clip.append(row["loss/clip_frac"])
    if summary.get("steps") == 0:  # a base model: its mid-run figures are its only ones
        rec["mid_step"], rec["mid_greedy"], rec["mid_pass@maxK"] = 0, rec["greedy"], rec["pass@maxK"]
    rec["lik_correct"] = sum(lik_c) / len(lik_c) if lik_c else None
    rec["lik_incorrect"] = sum(lik_i) / len(lik_i) if lik_i else None
    tail = rewards[-10:]
    rec["reward_last"] = sum(tail) / len(tail) if tail else None
    # share of response tokens whose ratio the clip bound, averaged over the run's optimizer steps
    rec["clip_frac"] = sum(clip) / len(clip) if clip else None
    rec["wall_seconds"] = summary.get("wall_seconds")
    return rec


def collect(out: Path, methods: list[str], seeds: list[int]) -> dict[str, dict[int, dict]]:
    """``{method: {seed: record}}`` of the finished runs. The base model is shared by every seed
    (scored once, under seed 0), so its record stands for each seed."""
    runs: dict[str, dict[int, dict]] = {}
    for base in sorted({f"base-{arch_of(m)}" for m in methods}):
        rec = load_run(run_dir(out, base, 0))
        if rec is not None:
            runs[base] = {k: rec for k in seeds}
    for m in methods:
        for k in seeds:
            rec = load_run(run_dir(out, m, k))
            if rec is not None:
                runs.setdefault(m, {})[k] = rec
    return runs


def summarize(runs: dict[str, dict[int, dict]]) -> dict[str, dict]:
    """Per method: mean/CI of every scalar, of the Pass@K curve, and paired deltas vs baselines."""
    table = {}
    for m, by_seed in runs.items():
        row = {"seeds": sorted(by_seed), "abs": {}, "vs_grpo": {}, "vs_base": {}, "curve": {}, "curve_vs_grpo": {}}
        records = list({id(r): r for r in by_seed.values()}.values())  # a shared base model counts once
        for key in SCALARS:
            row["abs"][key] = mean_ci([r[key] for r in records])
        ks = sorted({k for r in records for k in r["pass_at_k"]})
        row["curve"] = {k: mean_ci([r["pass_at_k"].get(k) for r in records]) for k in ks}
        if not m.startswith("base-"):
            for ref_name, field in ((baseline_of(m), "vs_grpo"), (f"base-{arch_of(m)}", "vs_base")):
                ref = runs.get(ref_name, {})
                if ref_name == m:
                    continue
                for key in DIFF_KEYS:
                    row[field][key] = mean_ci(paired_diffs(by_seed, ref, lambda r, key=key: r[key]))
                if field == "vs_grpo":  # the paired Pass@K curve: same seed, same problems
                    row["curve_vs_grpo"] = {k: mean_ci(paired_diffs(by_seed, ref, lambda r, k=k: r["pass_at_k"].get(k)))
                                            for k in ks}
        table[m] = row
    return table


# (claim, method, reference, metric, expected sign; 0 means "about equal")
CLAIMS = [
    ("p > 0 raises greedy accuracy (GRPO loss)", "thr+0.5", "grpo", "greedy", +1),
    ("p > 0 raises greedy accuracy (GRPO loss)", "thr+0.2", "grpo", "greedy", +1),
    ("p < 0 raises Pass@K at the largest K (GRPO loss), mid-run", "thr-0.5", "grpo", "mid_pass@maxK", +1),
    ("p < 0 raises Pass@K at the largest K (GRPO loss), end", "thr-0.5", "grpo", "pass@maxK", +1),
    ("p < 0 raises Pass@K at the largest K (GRPO loss), mid-run", "thr-0.2", "grpo", "mid_pass@maxK", +1),
    ("p > 0 raises greedy accuracy (GSPO-token)", "gspo/thr+0.5", "gspo/grpo", "greedy", +1),
    ("p < 0 raises Pass@K at the largest K (GSPO-token), mid-run", "gspo/thr-0.5", "gspo/grpo", "mid_pass@maxK", +1),
    ("p < 0 raises Pass@K at the largest K (GSPO-token), end", "gspo/thr-0.5", "gspo/grpo", "pass@maxK", +1),
    ("p > 0 raises greedy accuracy (Llama)", "llama/thr+0.5", "llama/grpo", "greedy", +1),
    ("p < 0 raises Pass@K at the largest K (Llama)", "llama/thr-0.5", "llama/grpo", "pass@maxK", +1),
    ("network THR: p > 0 raises greedy accuracy", "net+0.5", "grpo", "greedy", +1),
    ("network THR: p < 0 raises Pass@K at the largest K, mid-run", "net-0.5", "grpo", "mid_pass@maxK", +1),
    ("dominant tokens alone roughly match GRPO", "dominant", "grpo", "greedy", 0),
    ("dominant tokens alone roughly match GRPO", "dominant", "grpo", "mid_pass@maxK", 0),
    ("cross-token terms matter: THR beats its self-term (p > 0, greedy)", "thr+0.5", "self+0.5", "greedy", +1),
    ("cross-token terms matter: THR beats its self-term (p < 0, Pass@K mid-run)", "thr-0.5", "self-0.5",
     "mid_pass@maxK", +1),
    ("entropy top-20% tokens alone roughly match GRPO", "entropy-top20", "grpo", "greedy", 0),
    ("entropy top-20% tokens alone roughly match GRPO", "entropy-top20", "grpo", "mid_pass@maxK", 0),
    ("clip-higher raises Pass@K at the largest K, mid-run", "clip-higher", "grpo", "mid_pass@maxK", +1),
    ("clip-higher raises Pass@K at the largest K, mid-run (16 optimizer steps per rollout)", "ppo4x4/clip-higher",
     "ppo4x4/grpo", "mid_pass@maxK", +1),
    ("clip-higher raises Pass@K at the largest K, end (16 optimizer steps per rollout)", "ppo4x4/clip-higher",
     "ppo4x4/grpo", "pass@maxK", +1),
    ("schedule -0.5 -> +0.5: greedy as good as p = +0.5", "sched-0.5:+0.5", "thr+0.5", "greedy", 0),
    ("schedule -0.5 -> +0.5: Pass@K as good as p = -0.5 (end)", "sched-0.5:+0.5", "thr-0.5", "pass@maxK", 0),
    ("schedule -0.5 -> +0.5 beats GRPO on greedy", "sched-0.5:+0.5", "grpo", "greedy", +1),
    ("schedule -0.5 -> +0.5 beats GRPO on Pass@K (end)", "sched-0.5:+0.5", "grpo", "pass@maxK", +1),
    ("p > 0 raises the correct responses' likelihood per update", "thr+0.5", "grpo", "lik_correct", +1),
    ("p < 0 lowers it relative to GRPO", "thr-0.5", "grpo", "lik_correct", -1),
]
NEAR = 0.02  # "about equal": the whole 95% interval within +-2 points


def paired(runs: dict, a: str, b: str, key: str) -> dict:
    """Mean and 95% interval of ``a - b`` over the seeds both have."""
    return mean_ci(paired_diffs(runs.get(a, {}), runs.get(b, {}), lambda r: r[key]))


def verdict(stat: dict, sign: int) -> str:
    if stat["n"] < 2:
        return "not enough seeds"
    lo, hi = stat["mean"] - stat["ci95"], stat["mean"] + stat["ci95"]
    if sign == 0:
        return "consistent (within ±2 points)" if -NEAR <= lo and hi <= NEAR else (
            "differs" if lo > 0 or hi < 0 else "inconclusive (interval wider than ±2 points)")
    if (lo > 0 and sign > 0) or (hi < 0 and sign < 0):
        return "reproduced"
    if (hi < 0 and sign > 0) or (lo > 0 and sign < 0):
        return "contradicted"
    return "not shown (interval includes 0; point estimate " + ("agrees)" if stat["mean"] * sign > 0 else "disagrees)")


def claims_markdown(runs: dict) -> tuple[str, list[dict]]:
    rows, lines = [], ["", "## The paper's claims, tested", "",
                       "| claim | comparison | metric | difference | verdict |", "| --- | --- | --- | --- | --- |"]
    for claim, a, b, key, sign in CLAIMS:
        if a not in runs or b not in runs:
            continue
        stat = paired(runs, a, b, key)
        scale, digits, unit = (1e3, 2, " ×1e-3 nats") if key.startswith("lik") else (100.0, 1, " points")
        v = verdict(stat, sign) if not key.startswith("lik") or stat["n"] >= 2 else "not enough seeds"
        rows.append({"claim": claim, "method": a, "reference": b, "metric": key, "diff": stat, "verdict": v})
        lines.append(f"| {claim} | {a} − {b} | {key} | {_fmt(stat, scale, digits)}{unit} (n={stat['n']}) | {v} |")
    return "\n".join(lines) + "\n", rows


# The primary comparisons, fixed before the sweep ran: their 95% intervals should reach about
# +-1.5 points (method, reference, metric)
PRIMARY = [("thr+0.5", "grpo", "greedy"), ("thr-0.5", "grpo", "mid_pass@maxK"), ("thr-0.5", "grpo", "pass@maxK"),
           ("sched-0.5:+0.5", "grpo", "greedy"), ("sched-0.5:+0.5", "grpo", "mid_pass@maxK")]
TARGET = 0.015


def power_markdown(runs: dict) -> str:
    """Per primary comparison: the paired spread so far and the seeds a +-1.5-point interval needs
    at that spread (``n`` with ``t95(n - 1) * sd / sqrt(n) <= 0.015``)."""
    lines = ["", "## Power of the primary comparisons", "",
             "| comparison | metric | n | difference | sd of paired difference | seeds for ±1.5 points |",
             "| --- | --- | --- | --- | --- | --- |"]
    for a, b, key in PRIMARY:
        stat = paired(runs, a, b, key)
        if stat["n"] < 2:
            continue
        sd = stat["sd"]
        need = next((n for n in range(2, 10_000) if t95(n - 1) * sd / math.sqrt(n) <= TARGET), None)
        lines.append(f"| {a} − {b} | {key} | {stat['n']} | {_fmt(stat)} | {sd * 100:.1f} | "
                     f"{need if need is not None else '> 10,000'} |")
    return "\n".join(lines) + "\n"


def _n(abs_row: dict) -> str:
    """Seeds behind a row: one number, or ``greedy / Pass@K`` where the greedy extension added seeds."""
    g, p = abs_row["greedy"]["n"], abs_row["pass@maxK"]["n"]
    return str(g) if g == p else f"{g} / {p}"


def _fmt(stat: dict | None, scale: float = 100.0, digits: int = 1) -> str:
    if not stat or stat["n"] == 0:
        return "-"
    if math.isnan(stat["ci95"]):
        return f"{stat['mean'] * scale:.{digits}f}"
    return f"{stat['mean'] * scale:.{digits}f} ± {stat['ci95'] * scale:.{digits}f}"


def markdown(table: dict[str, dict], settings: dict) -> str:
    lines = [
        "# Steering sweep results",
        "",
        f"Settings: {json.dumps({k: settings[k] for k in settings if k != 'methods'})}",
        "",
        "Accuracies in percent on the held-out split, mean ± 95% t-interval half-width over seeds",
        "(n = number of seeds). The gain over base and the `Δ` columns are paired differences (same",
        "seed, same base model and test problems); `Δ` is against the family's plain-GRPO run",
        "(`grpo`, `gspo/grpo`, `ppo4x4/grpo`, `llama/grpo`). `pass@maxK`: Pass@K at the largest K sampled; `mid`: at the",
        "mid-run evaluation (`eval.every`), the others at the end. `clip frac`: percent of response",
        "tokens whose importance ratio the clip bound, mean over the run's optimizer steps. The base",
        "model is shared by every seed and scored once (n = 1). `n`: seeds; `a / b` where the greedy",
        "extension (``run.py --greedy-extension``) gave greedy accuracy `a` seeds and Pass@K `b`.",
        "Likelihood: mean over steps of the change of the mean token log-likelihood of the batch's",
        "correct (incorrect) responses across the update, in units of 1e-3 nats.",
        "",
        "| method | n | greedy | pass@1 | pass@maxK | mid greedy | mid pass@maxK | greedy gain over base | Δgreedy | Δpass@maxK | Δmid greedy | Δmid pass@maxK | clip frac | lik correct ×1e3 | lik incorrect ×1e3 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for m, row in table.items():
        a, d = row["abs"], row["vs_grpo"]
        lines.append(
            f"| {m} | {_n(a)} | {_fmt(a['greedy'])} | {_fmt(a['pass@1'])} | {_fmt(a['pass@maxK'])} | "
            f"{_fmt(a['mid_greedy'])} | {_fmt(a['mid_pass@maxK'])} | {_fmt(row['vs_base'].get('greedy'))} | "
            f"{_fmt(d.get('greedy'))} | {_fmt(d.get('pass@maxK'))} | {_fmt(d.get('mid_greedy'))} | "
            f"{_fmt(d.get('mid_pass@maxK'))} | {_fmt(a['clip_frac'], 100, 3)} | "
            f"{_fmt(a['lik_correct'], 1e3, 2)} | {_fmt(a['lik_incorrect'], 1e3, 2)} |"
        )
    return "\n".join(lines) + "\n"


def plot(table: dict[str, dict], out: Path) -> list[str]:
    """Pass@K curves (absolute, and the paired difference from the family's GRPO run) per family;
    likelihood bars."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plots are optional; the tables are not
        return []
    steering = {"grpo", "thr+0.5", "thr-0.5", "thr+0.2", "thr-0.2", "sched-0.5:+0.5", "base-qwen2"}
    families = {"head THR steering and the p schedule": lambda m: m in steering,
                "controls, network THR": lambda m: "/" not in m and (m not in steering or m == "grpo")
                and not m.startswith("base-llama"),
                "GSPO-token; 16 optimizer steps per rollout; Llama": lambda m: m.startswith(("gspo/", "ppo4x4/", "llama/", "base-"))}
    # top row: Pass@K at the end; bottom row: its paired difference from the family's plain run.
    # Bands: 95% intervals over seeds, drawn only with 3 or more seeds (2 seeds give +-12.7 se).
    fig, axes = plt.subplots(2, 3, figsize=(16, 9), sharex=True)
    for col, (title, keep) in enumerate(families.items()):
        color = {m: f"C{i % 10}" for i, m in enumerate(m for m in table if keep(m))}  # one colour per method
        for row_i, field in enumerate(("curve", "curve_vs_grpo")):
            ax = axes[row_i][col]
            for m, row in table.items():
                curve = row.get(field) or {}
                if not keep(m) or not curve:
                    continue
                ks = sorted(curve)
                mean = [curve[k]["mean"] * 100 for k in ks]
                n_min = min(curve[k]["n"] for k in ks)
                style = "--" if m.startswith("base-") else "-"
                ax.plot(ks, mean, style, marker="o", ms=3, color=color[m], label=f"{m} (n={n_min})")
                if n_min >= 3:
                    ci = [curve[k]["ci95"] * 100 for k in ks]
                    ax.fill_between(ks, [a - b for a, b in zip(mean, ci)], [a + b for a, b in zip(mean, ci)],
                                    color=color[m], alpha=0.12)
            ax.set_xscale("log", base=2)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
            if row_i == 0:
                ax.set_title(title)
                ax.set_ylabel("Pass@K at the end (%)")
                ax.set_ylim(top=100)
            else:
                ax.axhline(0, color="k", lw=0.6)
                ax.set_xlabel("K")
                ax.set_ylabel("Δ Pass@K vs the family's GRPO (points)")
    fig.tight_layout()
    fig.savefig(out / "pass_at_k.png", dpi=110)
    plt.close(fig)
    methods = [m for m in table if not m.startswith("base-")]
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(methods)), 4))
    vals = [table[m]["abs"]["lik_correct"] for m in methods]
    ax.bar(range(len(methods)), [v["mean"] * 1e3 for v in vals],
           yerr=[0 if math.isnan(v["ci95"]) else v["ci95"] * 1e3 for v in vals], capsize=3)
    ax.set_xticks(range(len(methods)), methods, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("Δ mean log-lik of correct responses per update (×1e-3)")
    ax.axhline(0, color="k", lw=0.6)
    fig.tight_layout()
    fig.savefig(out / "likelihood.png", dpi=120)
    plt.close(fig)
    return ["pass_at_k.png", "likelihood.png"]


def aggregate(out: Path, methods: list[str], seeds: list[int]) -> str:
    """Build ``results.json``/``results.md`` (and figures) from whatever runs have finished."""
    runs = collect(out, methods, seeds)
    if not runs:  # e.g. a clone, where runs/ is not kept: never overwrite recorded results with empty ones
        raise FileNotFoundError(f"no finished runs under {out / 'runs'}: nothing to aggregate, "
                                f"{out / 'results.md'} is left as it is")
    table = summarize(runs)
    settings_file = out / "settings.json"
    settings = json.loads(settings_file.read_text()) if settings_file.is_file() else {}
    claims_md, claims = claims_markdown(runs)
    results = {"settings": settings, "table": table, "runs": runs, "claims": claims}
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    md = markdown(table, settings) + claims_md + power_markdown(runs)
    figures = plot(table, out)
    if figures:
        md += "\n" + "\n".join(f"![{f}]({f})" for f in figures) + "\n"
    (out / "results.md").write_text(md)
    return md
