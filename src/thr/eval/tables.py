"""Reports for ``thr eval``: terminal and Markdown tables, model comparisons, Pass@K curves.

All functions take the ``results`` dicts that :func:`thr.eval.run.run_eval` writes to
``results.json``::

    {"model": str, "config": {...}, "elapsed_s": float,
     "benchmarks": {name: metrics}, "overall": metrics}

where ``metrics`` holds ``num_problems``, ``greedy_accuracy``, ``pass@K`` for several K,
``mean@N`` and ``truncated`` (fraction of responses that hit ``max_new_tokens``).
matplotlib is imported only by :func:`plot_pass_at_k`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any


def pass_keys(metrics: dict[str, Any]) -> list[str]:
    """The ``pass@K`` keys of a metrics dict, sorted by K."""
    keys = [k for k in metrics if re.fullmatch(r"pass@\d+", k)]
    return sorted(keys, key=lambda k: int(k.split("@")[1]))


def _columns(rows: dict[str, dict[str, Any]]) -> list[str]:
    """Metric columns present in any row, in display order."""
    cols = ["num_problems"]
    seen = set().union(*(r.keys() for r in rows.values())) if rows else set()
    if "greedy_accuracy" in seen:
        cols.append("greedy_accuracy")
    passes = sorted({k for r in rows.values() for k in pass_keys(r)}, key=lambda k: int(k.split("@")[1]))
    cols += passes
    cols += sorted(k for k in seen if k.startswith("mean@"))
    if "truncated" in seen:
        cols.append("truncated")
    return cols


_HEADERS = {"num_problems": "problems", "greedy_accuracy": "greedy", "truncated": "trunc"}


def _cell(col: str, value: Any) -> str:
    if value is None:
        return "-"
    if col == "num_problems":
        return str(int(value))
    return f"{100 * float(value):.1f}"


def table_rows(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and body cells (percentages) of the per-benchmark table with an overall row."""
    rows = dict(results.get("benchmarks", {}))
    if len(rows) > 1 and results.get("overall"):
        rows["overall"] = results["overall"]
    cols = _columns(rows)
    header = ["benchmark"] + [_HEADERS.get(c, c) for c in cols]
    body = [[name] + [_cell(c, metrics.get(c)) for c in cols] for name, metrics in rows.items()]
    return header, body


def format_table(results: dict[str, Any]) -> str:
    """Fixed-width text table for the terminal (accuracies in %), with a legend of its units."""
    header, body = table_rows(results)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    lines = [f"model: {results.get('model', '?')}", fmt(header), fmt(["-" * w for w in widths])]
    lines += [fmt(r) for r in body]
    lines.append("all columns but 'problems' in % (greedy: temperature-0 accuracy; pass@K: unbiased estimator; "
                 "trunc: sampled responses cut at max_new_tokens)")
    if any(r[0] == "overall" for r in body):
        lines.append(f"overall: unweighted mean over the {len(body) - 1} benchmarks (each counts the same, "
                     "whatever its size); its 'problems' is their sum")
    return "\n".join(lines)


def _md_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)


def markdown_report(results: dict[str, Any]) -> str:
    """``results.md``: settings and one table row per benchmark plus the overall average."""
    cfg = dict(results.get("config", {}))
    if results.get("prompt_template"):
        cfg["prompt_template"] = results["prompt_template"]  # the one used (``auto`` resolved)
    header, body = table_rows(results)
    settings = ", ".join(
        f"{k}={cfg[k]}"
        for k in ("n", "temperature", "top_p", "max_new_tokens", "prompt_template", "seed", "limit", "score_truncated")
        if k in cfg
    )
    parts = [
        f"# Evaluation: `{results.get('model', '?')}`",
        "",
        f"Settings: {settings}. Accuracies in %. Pass@K is the unbiased estimator over the sampled responses; "
        "`greedy` is temperature-0 decoding; `trunc` is the share of sampled responses cut at max_new_tokens. "
        "`overall` is the unweighted mean over benchmarks.",
        "",
        _md_table(header, body),
        "",
        f"Elapsed: {results.get('elapsed_s', 0.0):.1f} s",
        "",
    ]
    return "\n".join(parts)


def write_reports(results: dict[str, Any], out_dir: str | Path) -> None:
    """Write ``results.json`` and ``results.md`` to ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (out_dir / "results.md").write_text(markdown_report(results))


def load_results(path: str | Path) -> dict[str, Any]:
    """Read a ``results.json`` (or the ``results.json`` inside a directory)."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"no results file at {str(path)!r}; run thr eval first")
    return json.loads(path.read_text())


def comparison_markdown(all_results: list[dict[str, Any]], labels: list[str] | None = None) -> str:
    """One table per benchmark (and overall) with a row per model."""
    labels = labels or [str(r.get("model", i)) for i, r in enumerate(all_results)]
    names = [n for n in all_results[0].get("benchmarks", {}) if all(n in r.get("benchmarks", {}) for r in all_results)]
    sections = ["# Model comparison", ""]
    for name in names + ["overall"]:
        rows = {lab: r["overall"] if name == "overall" else r["benchmarks"][name] for lab, r in zip(labels, all_results)}
        cols = _columns(rows)
        header = ["model"] + [_HEADERS.get(c, c) for c in cols]
        body = [[lab] + [_cell(c, m.get(c)) for c in cols] for lab, m in rows.items()]
        sections += [f"## {name}", "", _md_table(header, body), ""]
    return "\n".join(sections)


def plot_pass_at_k(
    results_files: list[str | Path], out_png: str | Path, labels: list[str] | None = None
) -> Path:
    """Pass@K curves (K on a log2 axis), one panel per benchmark plus overall, one line per run.

    ``results_files`` are ``results.json`` paths (or directories holding one). Needs matplotlib
    (``pip install 'thr-rl[plot]'``).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError as err:
        raise ImportError("plotting needs matplotlib: pip install 'thr-rl[plot]'") from err
    runs = [load_results(p) for p in results_files]
    labels = labels or [_short_label(r.get("model", str(p))) for r, p in zip(runs, results_files)]
    names = [n for n in runs[0].get("benchmarks", {}) if all(n in r.get("benchmarks", {}) for r in runs)]
    panels = names + (["overall"] if len(names) > 1 else [])
    cols = min(4, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    for ax, name in zip(axes.flat, panels):
        for label, r in zip(labels, runs):
            metrics = r["overall"] if name == "overall" else r["benchmarks"][name]
            keys = pass_keys(metrics)
            ks = [int(k.split("@")[1]) for k in keys]
            ax.plot(ks, [100 * metrics[k] for k in keys], marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _pos: f"{x:g}"))
        top = max((line.get_ydata().max() for line in ax.get_lines()), default=0.0)
        ax.set_ylim(0, min(100, max(5.0, top * 1.1)))
        ax.set_title(name)
        ax.set_xlabel("K")
        ax.set_ylabel("pass@K (%)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
    return out_png


def _short_label(model: str) -> str:
    parts = [p for p in re.split(r"[\\/]", str(model)) if p]
    return "/".join(parts[-2:]) if parts else str(model)


def overall_metrics(per_source: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Unweighted mean over sources of every metric they share; problems summed."""
    if not per_source:
        return {}
    shared = set.intersection(*(set(m) for m in per_source.values()))
    out: dict[str, Any] = {"num_problems": sum(m["num_problems"] for m in per_source.values())}
    for key in sorted(shared - {"num_problems", "seconds"}):
        out[key] = sum(m[key] for m in per_source.values()) / len(per_source)
    return out


def model_slug(name: str) -> str:
    """Folder name for a model path or hub name (last two path parts, '/' -> '__')."""
    parts = [p for p in name.replace("\\", "/").split("/") if p and p != "."]
    return "__".join(parts[-2:]) or "model"


def try_plot(dirs: list[Path], png: Path, labels: list[str] | None = None) -> None:
    """:func:`plot_pass_at_k`, or a note on stderr when matplotlib is missing."""
    import sys

    try:
        plot_pass_at_k(list(dirs), png, labels)
        print(f"pass@k plot: {png}", flush=True)
    except ImportError as err:
        print(f"skipping the pass@k plot: {err}", file=sys.stderr)


def write_comparison(out: Path, runs: list[dict[str, Any]], dirs: list[Path], png: Path) -> dict[str, Any]:
    """``comparison.md`` and the Pass@K plot of several runs; returns ``{"models": {name: results}}``."""
    out.mkdir(parents=True, exist_ok=True)
    labels = [_short_label(r.get("model", str(d))) for r, d in zip(runs, dirs)]
    (out / "comparison.md").write_text(comparison_markdown(runs, labels))
    try_plot(dirs, png, labels)
    print(f"comparison: {out / 'comparison.md'}", flush=True)
    return {"models": {str(r.get("model", d)): r for r, d in zip(runs, dirs)}}
