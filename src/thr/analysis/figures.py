"""PNG figures of the THR diagnostics and of a training run (matplotlib, imported lazily).

Each function takes the numbers computed in :mod:`thr.analysis.stats` (the same dicts that go
to ``summary.json``), so a figure never computes anything the summary does not hold.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CORRECT, INCORRECT = "#1a9850", "#d73027"


def _plt() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError("figures need matplotlib: pip install 'thr-rl[plot]'") from err
    return plt


def _save(fig: Any, path: str | Path, dpi: int = 110) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    _plt().close(fig)
    return path


def plot_density(density: dict[str, Any], path: str | Path) -> Path:
    """THR distribution of correct vs incorrect responses' tokens (paper Fig. 2), symlog x axis."""
    plt = _plt()
    edges = density["bin_edges"]
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for key, color, label in (("correct", CORRECT, "correct responses"), ("incorrect", INCORRECT, "incorrect responses")):
        share = density[f"{key}_share"]
        st = density[key]
        ax.stairs(share, edges, color=color, fill=True, alpha=0.25)
        ax.stairs(share, edges, color=color, linewidth=1.6,
                  label=f"{label}: {st['tokens']} tokens, {st['frac_positive']:.0%} with THR > 0, {st['frac_dominant']:.0%} dominant")
    ax.axvline(0, color="#555", linewidth=0.8)
    ax.set_xscale("symlog", linthresh=density["linthresh"])
    _decade_ticks(ax, density["linthresh"], max(abs(edges[0]), abs(edges[-1])))
    ax.set_xlabel(f"THR of a token = A_j \u00d7 s  (symlog axis, linear within \u00b1{density['linthresh']:.2g})")
    ax.set_ylabel("share of tokens per bin")
    ax.set_ylim(bottom=0)
    g = density["groups"]
    ax.set_title(f"THR by correctness ({g['mixed']} mixed-reward groups); dominant tokens (|s| > tau): "
                 f"{density['frac_dominant']:.1%}", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", frameon=False)
    return _save(fig, path)


def _decade_ticks(ax: Any, linthresh: float, top: float, most: int = 4) -> None:
    """At most ``most`` decades per side on a symlog axis, labelled as powers of ten."""
    import math

    lo, hi = math.ceil(math.log10(linthresh)), math.floor(math.log10(max(top, linthresh)))
    step = max(1, math.ceil((hi - lo + 1) / most))
    decades = list(range(hi, lo - 1, -step))[::-1]
    ticks = [-(10.0**e) for e in reversed(decades)] + [0.0] + [10.0**e for e in decades]
    labels = [f"\u2212$10^{{{e}}}$" for e in reversed(decades)] + ["0"] + [f"$10^{{{e}}}$" for e in decades]
    ax.set_xticks(ticks, labels)
    ax.xaxis.set_minor_locator(__import__("matplotlib").ticker.NullLocator())


def plot_overlap(overlap: dict[str, Any], path: str | Path) -> Path:
    """Distribution over responses of the top-q% |THR| / top-q% entropy overlap (paper Fig. 3)."""
    plt = _plt()
    edges = overlap["bin_edges"]
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    ax.hist([overlap["correct"]["overlap"], overlap["incorrect"]["overlap"]], bins=edges, color=[CORRECT, INCORRECT],
            label=[f"correct ({overlap['correct']['responses']} responses, mean {overlap['correct']['mean']:.2f})",
                   f"incorrect ({overlap['incorrect']['responses']} responses, mean {overlap['incorrect']['mean']:.2f})"],
            alpha=0.85)
    chance = overlap["all"]["chance_mean"]
    ax.axvline(chance, color="#333", linestyle="--", linewidth=1, label=f"chance level (mean k/n = {chance:.2f})")
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"overlap = |top-{overlap['q']:.0%} by |THR| \u2229 top-{overlap['q']:.0%} by entropy| / k")
    ax.set_ylabel("responses")
    ax.set_title("High-|THR| tokens vs high-entropy tokens, per response", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    return _save(fig, path)


def plot_self_term(corr: dict[str, Any], path: str | Path) -> Path:
    """Self-term ``||g||^2 ||h||^2`` vs THR per token, with the correlations."""
    plt = _plt()
    sc = corr["scatter"]
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    for flag, color, label in ((True, CORRECT, "correct"), (False, INCORRECT, "incorrect")):
        xs = [x for x, c in zip(sc["self"], sc["correct"]) if c == flag]
        ys = [y for y, c in zip(sc["thr"], sc["correct"]) if c == flag]
        ax.scatter(xs, ys, s=6, alpha=0.45, color=color, label=label, linewidths=0)
    ax.axhline(0, color="#555", linewidth=0.8)
    pos = [abs(v) for v in sc["self"] if v > 0] or [1.0]
    ax.set_xscale("log")
    ax.set_xlim(min(pos) / 1.5, max(pos) * 1.5)
    ynz = sorted(abs(v) for v in sc["thr"] if v != 0) or [1.0]
    ax.set_yscale("symlog", linthresh=ynz[len(ynz) // 10])
    ax.set_xlabel("self-term ||g||\u00b2 ||h||\u00b2 (entropy-like)")
    ax.set_ylabel("THR")
    rho = corr["self_vs_abs_thr"]["spearman"]
    ce = corr["self_vs_influence_correct"]["spearman"]
    ax.set_title(f"Spearman(self, |THR|) = {_f(rho)}, on correct: Spearman(self, s) = {_f(ce)}; "
                 f"cross-token share {corr['cross_share_correct']:.0%}", fontsize=9)
    ax.legend(fontsize=8, frameon=False)
    return _save(fig, path)


def _f(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def plot_panels(panels: list[dict[str, Any]], path: str | Path, cols: int = 3) -> Path:
    """A grid of the report's charts (the same specs the HTML page draws)."""
    plt = _plt()
    rows = max(1, -(-len(panels) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.0 * rows), squeeze=False)
    for ax, spec in zip(axes.flat, panels):
        if spec["kind"] == "line":
            for s in spec["series"]:
                pts = [(x, y) for x, y in zip(s["x"], s["y"]) if y is not None]
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o" if len(pts) <= 40 else None,
                        markersize=3, label=s["name"], color=s.get("color"))
        else:
            _bars(ax, spec)
        ax.set_title(spec["title"], fontsize=9)
        ax.set_xlabel(spec.get("xlabel", ""), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, frameon=False)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    return _save(fig, path, dpi=90)


def _bars(ax: Any, spec: dict[str, Any]) -> None:
    cats = spec["categories"]
    n = len(spec["series"])
    base = [0.0] * len(cats)
    for i, s in enumerate(spec["series"]):
        vals = [v or 0.0 for v in s["values"]]
        if spec.get("stacked"):
            ax.bar(range(len(cats)), vals, bottom=base, label=s["name"], color=s.get("color"), width=0.8)
            base = [b + v for b, v in zip(base, vals)]
        else:
            w = 0.8 / n
            ax.bar([c - 0.4 + w * (i + 0.5) for c in range(len(cats))], vals, width=w, label=s["name"], color=s.get("color"))
    step = max(1, -(-len(cats) // 12))
    ax.set_xticks(range(0, len(cats), step), [cats[i] for i in range(0, len(cats), step)])
