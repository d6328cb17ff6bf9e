"""``thr report RUN_DIR``: one self-contained HTML page for a ``thr train`` run.

Reads ``metrics.jsonl``, ``groups.jsonl``, ``config.yaml`` and ``summary.json`` from the run
directory and writes ``report.html`` (inline CSS/JS, charts drawn as inline SVG from the embedded
numbers, no network) plus PNG versions of the charts beside it (``training.png``,
``thr_density.png``, ``overlap.png``) into ``RUN_DIR/report/`` or ``--output DIR``.

Sections: summary; reward and training accuracy; held-out greedy accuracy and Pass@K over steps;
Pass@K vs K before/after; policy entropy; response length; KL; THR statistics; step-time split
(rollout / old-policy pass / THR / update); THR by correctness and the |THR|-entropy overlap of the
logged groups; token heat maps of a few logged groups; the config.

Usage: ``thr report RUN_DIR [--output DIR] [--groups N] [--png false]``.
"""

from __future__ import annotations

import itertools
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thr.analysis.page import esc, page
from thr.config import load_config, usage

TIME_KEYS = (("time/rollout", "rollout"), ("time/old_pass", "old-policy pass"), ("time/thr", "THR"), ("time/update", "update"))


def load_run(run_dir: str | Path) -> dict[str, Any]:
    """The files of a run directory (missing ones are empty)."""
    from thr.rl.run_log import read_jsonl

    run = Path(run_dir)
    if not (run / "metrics.jsonl").is_file():
        raise ValueError(f"{run} has no metrics.jsonl: give the output_dir of a `thr train` run")
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}
    config = (run / "config.yaml").read_text() if (run / "config.yaml").is_file() else ""
    return {"dir": run, "metrics": read_jsonl(run / "metrics.jsonl"), "groups": read_jsonl(run / "groups.jsonl"),
            "summary": summary, "config_text": config}


def series(rows: list[dict[str, Any]], key: str, name: str | None = None) -> dict[str, Any] | None:
    """``{"name", "x": steps, "y": values}`` of the rows that hold ``key`` (None if none does)."""
    pts = [(r["step"], float(r[key])) for r in rows if r.get(key) is not None and "step" in r]
    if not pts:
        return None
    return {"name": name or key, "x": [p[0] for p in pts], "y": [p[1] for p in pts]}


def _line(cid: str, title: str, rows: list[dict[str, Any]], keys: list[tuple[str, str]], **extra: Any) -> dict[str, Any] | None:
    found = [s for s in (series(rows, k, n) for k, n in keys) if s is not None]
    if not found:
        return None
    return {"id": cid, "kind": "line", "title": title, "xlabel": "step", "xint": True, "series": found, **extra}


def pass_keys(rows: list[dict[str, Any]]) -> list[str]:
    keys = {k for r in rows for k in r if re.fullmatch(r"eval/pass@\d+", k)}
    return sorted(keys, key=lambda k: int(k.split("@")[1]))


def pass_at_k_chart(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Pass@K vs K at the first and the last evaluation."""
    keys = pass_keys(rows)
    evals = [r for r in rows if any(k in r for k in keys)]
    if not keys or not evals:
        return None
    picks = [(f"first eval (step {evals[0]['step']})", evals[0])]
    if len(evals) > 1:
        picks.append((f"last eval (step {evals[-1]['step']})", evals[-1]))
    return {"id": "c-passk", "kind": "bar", "title": "Pass@K vs K", "xlabel": "K",
            "categories": [k.split("@")[1] for k in keys],
            "series": [{"name": name, "values": [r.get(k) for k in keys]} for name, r in picks]}


def time_chart(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    steps = [r for r in rows if r.get("time/step") is not None]
    if not steps:
        return None
    totals = {label: sum(float(r.get(k) or 0) for r in steps) for k, label in TIME_KEYS}
    whole = sum(float(r["time/step"]) for r in steps) or 1.0
    note = "share of step time: " + ", ".join(f"{lab} {v / whole:.1%}" for lab, v in totals.items())
    return {"id": "c-time", "kind": "bar", "stacked": True, "title": "Step time split (seconds)", "xlabel": "step",
            "categories": [str(r["step"]) for r in steps], "note": note,
            "series": [{"name": label, "values": [r.get(k) or 0.0 for r in steps]} for k, label in TIME_KEYS]}


def training_charts(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chart specs of the metrics log; charts without data are left out."""
    train = [r for r in rows if "reward/mean" in r]
    kl_keys = [("loss/kl_ref", "KL to reference (k3)"), ("loss/approx_kl_old", "KL to old policy (approx.)")]
    specs = [
        _line("c-reward", "Reward and training accuracy", train, [("reward/mean", "reward mean"), ("reward/accuracy", "accuracy")]),
        _line("c-eval", "Held-out greedy accuracy and Pass@K", rows,
              [("eval/greedy_accuracy", "greedy accuracy")] + [(k, k[5:]) for k in pass_keys(rows)], ymin=0),
        pass_at_k_chart(rows),
        _line("c-entropy", "Policy entropy (nats / token)", train, [("policy/entropy", "entropy")]),
        _line("c-length", "Response length (tokens)", train, [("response/length_mean", "mean"), ("response/length_max", "max")]),
        _line("c-kl", "KL", train, kl_keys),
        _line("c-thrfrac", "THR token shares", train,
              [("thr/frac_dominant", "dominant"), ("thr/frac_positive", "THR > 0"), ("thr/frac_negative", "THR < 0"),
               ("thr/dominant_positive_share", "dominant with THR > 0")], ymin=0),
        _line("c-thrmag", "THR magnitude", train, [("thr/abs_mean", "mean |THR|"), ("thr/tau_mean", "mean tau (threshold)")]),
        time_chart(train),
    ]
    return [s for s in specs if s is not None]


def group_charts(groups: list[dict[str, Any]], q: float = 0.2) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Density and overlap chart specs of the logged groups, and their numbers."""
    from thr.analysis import stats

    dens, ov = stats.thr_density(groups), stats.overlap_distribution(groups, q=q)
    numbers = {"density": dens, "overlap": ov}
    if not dens["groups"]["mixed"]:
        return [], numbers
    centers = dens["bin_centers"]
    charts = [{"id": "c-density", "kind": "line", "title": "THR density by correctness (logged mixed groups)",
               "xlabel": "THR", "ymin": 0, "xsymlog": dens["linthresh"], "ylabel": "share of tokens", "note": f"dominant tokens {dens['frac_dominant']:.1%}; "
               f"THR > 0: correct {dens['correct']['frac_positive']:.0%}, incorrect {dens['incorrect']['frac_positive']:.0%}",
               "series": [{"name": "correct", "x": centers, "y": dens["correct_share"], "color": "#1a9850"},
                          {"name": "incorrect", "x": centers, "y": dens["incorrect_share"], "color": "#d73027"}]}]
    if ov["all"]["responses"]:
        oe = ov["bin_edges"]
        charts.append({"id": "c-overlap", "kind": "bar", "title": f"Top-{q:.0%} |THR| vs entropy overlap per response",
                       "xlabel": "overlap (bin centre)", "note": f"{ov['definition']}; mean {ov['all']['mean']:.2f}, chance {ov['all']['chance_mean']:.2f}",
                       "categories": [f"{(a + b) / 2:.2f}" for a, b in itertools.pairwise(oe)],
                       "series": [{"name": "correct", "values": ov["correct"]["hist_counts"], "color": "#1a9850"},
                                  {"name": "incorrect", "values": ov["incorrect"]["hist_counts"], "color": "#d73027"}]})
    return charts, numbers


def choose_groups(groups: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """Up to ``n`` logged groups: mixed ones first, alternating the last and the first logged step."""
    from thr.analysis.heatmap import pick_groups

    steps = sorted({g.get("step", 0) for g in groups})
    order = []
    for s in ([steps[-1], steps[0]] if len(steps) > 1 else steps):
        order.extend(pick_groups([g for g in groups if g.get("step", 0) == s], len(groups)))
    order.extend(g for g in groups if not any(g is o for o in order))
    mixed = [g for g in order if _mixed(g)]
    return (mixed + [g for g in order if not _mixed(g)])[:n]


def _mixed(g: dict[str, Any]) -> bool:
    from thr.analysis.stats import is_mixed

    return is_mixed(g)


def summary_table(run: dict[str, Any]) -> str:
    s, rows = run["summary"], run["metrics"]
    pct = lambda v: "n/a" if v is None else f"{100 * v:.1f}%"
    steps = [r for r in rows if r.get("time/step") is not None]
    thr_share = sum(float(r.get("time/thr", 0)) for r in steps) / max(sum(float(r["time/step"]) for r in steps), 1e-9)
    items = [
        ("run directory", esc(run["dir"])),
        ("steps", esc(s.get("steps", len(steps)))),
        ("greedy accuracy", f"{pct(s.get('base_greedy_accuracy'))} \u2192 {pct(s.get('final_greedy_accuracy'))}"),
        ("pass@8", f"{pct(s.get('base_pass_at_8'))} \u2192 {pct(s.get('final_pass_at_8'))}"),
        ("wall time", f"{float(s['wall_seconds']):.0f} s" if s.get("wall_seconds") is not None else "n/a"),
        ("THR share of step time", f"{thr_share:.1%}" if steps else "n/a"),
    ]
    settings = _settings(run["config_text"])
    if settings:
        items.append(("settings", esc(settings)))
    return '<table class="kv">' + "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in items) + "</table>"


def _settings(config_text: str) -> str:
    """A one-line digest of the config (model, loss, THR mode and p, group size, lr)."""
    if not config_text:
        return ""
    import yaml

    c = yaml.safe_load(config_text) or {}
    get = lambda sec, key: (c.get(sec) or {}).get(key)
    parts = [f"model {get('model', 'name_or_path')}", f"loss {get('optim', 'loss_type')}",
             f"thr.mode {get('thr', 'mode')} p={get('thr', 'p')}", f"G={get('rollout', 'group_size')}",
             f"prompts/step {get('rollout', 'prompts_per_step')}", f"lr {get('optim', 'lr')}"]
    return ", ".join(parts)


def build_report(run: dict[str, Any], n_groups: int = 4) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    """``(html, chart specs, group numbers)`` of a loaded run."""
    from thr.analysis.heatmap import groups_html

    charts = training_charts(run["metrics"])
    gcharts, numbers = group_charts(run["groups"]) if run["groups"] else ([], {})
    grid = lambda specs: '<div class="grid">' + "".join(f'<div class="chart" id="{c["id"]}"></div>' for c in specs) + "</div>"
    shown = choose_groups(run["groups"], n_groups) if run["groups"] else []
    parts = [
        f"<h1>THR training report</h1><p class=\"muted\">{esc(run['dir'])}</p>",
        "<h2>Summary</h2>", summary_table(run),
        "<h2>Training</h2>", grid(charts),
    ]
    if gcharts:
        parts += ["<h2>THR in the logged groups</h2>", grid(gcharts)]
    if shown:
        parts += [f"<h2>Token heat maps ({len(shown)} logged groups)</h2>", groups_html(shown)]
    if run["config_text"]:
        parts += ["<h2>Config</h2>", f"<details><summary>config.yaml</summary><pre>{esc(run['config_text'])}</pre></details>"]
    all_charts = charts + gcharts
    return page("THR report", "\n".join(parts), data={"charts": all_charts}), all_charts, numbers


def write_pngs(out: Path, charts: list[dict[str, Any]], numbers: dict[str, Any]) -> list[Path]:
    from thr.analysis import figures

    train = [c for c in charts if c["id"] not in ("c-density", "c-overlap")]
    paths = [figures.plot_panels(train, out / "training.png")] if train else []
    if numbers.get("density", {}).get("groups", {}).get("mixed"):
        paths.append(figures.plot_density(numbers["density"], out / "thr_density.png"))
        if numbers["overlap"]["all"]["responses"]:
            paths.append(figures.plot_overlap(numbers["overlap"], out / "overlap.png"))
    return paths


def write_report(run_dir: str | Path, output: str | Path | None = None, n_groups: int = 4, png: bool = True) -> Path:
    """Write ``report.html`` (and PNGs); returns the HTML path."""
    run = load_run(run_dir)
    out = Path(output) if output else Path(run_dir) / "report"
    out.mkdir(parents=True, exist_ok=True)
    html_text, charts, numbers = build_report(run, n_groups)
    path = out / "report.html"
    path.write_text(html_text, encoding="utf-8")
    if png:
        try:
            write_pngs(out, charts, numbers)
        except ImportError as err:
            print(f"thr report: PNGs skipped ({err})", file=sys.stderr)
    return path


@dataclass
class ReportConfig:
    """Options of ``thr report RUN_DIR`` (the run directory may also be given as ``run_dir=DIR``).

    run_dir: the ``thr train`` output directory to report on.
    output: where ``report.html`` and the PNGs go (empty: ``RUN_DIR/report``).
    groups: logged groups shown as token heat maps.
    png: also write PNG versions of the charts (needs matplotlib).
    """

    run_dir: str = ""
    output: str = ""
    groups: int = 4
    png: bool = True

    def validate(self) -> "ReportConfig":
        if not self.run_dir:
            raise ValueError("give the run directory: thr report RUN_DIR (or run_dir=DIR)")
        if self.groups < 0:
            raise ValueError(f"groups must be >= 0, got {self.groups}")
        return self


def cli_main(argv: list[str] | None = None) -> int:
    """Entry point of ``thr report RUN_DIR [--output DIR] [--groups N] [--png false]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or any(a in ("-h", "--help", "help") for a in argv):
        print(usage(ReportConfig(), "report RUN_DIR", "Self-contained HTML report of a thr train run.",
                    "src/thr/analysis/report.py, docs/diagnostics.md"))
        return 0 if argv else 2
    if not argv[0].startswith("--") and "=" not in argv[0]:
        argv = [f"run_dir={argv[0]}", *argv[1:]]
    cfg = load_config(ReportConfig, argv)
    path = write_report(cfg.run_dir, cfg.output or None, cfg.groups, cfg.png)
    print(f"report: {path}")
    return 0
