"""``thr analyze``: sample groups from a model and look at the Token Hidden Reward of every token.

For ``num_prompts`` problems it samples ``group_size`` responses each, verifies them, computes
group advantages and, per token, THR, influence ``s``, the self-term ``||g||^2 ||h||^2``, entropy
and probability (all under ``softmax(W h / temperature)``). It writes to ``output_dir``:

- ``thr_density.png``: THR density of tokens of correct vs incorrect responses, with the share of
  dominant tokens (the THR paper's Fig. 2);
- ``overlap.png``: per-response overlap of the top-q% tokens by ``|THR|`` and by entropy (Fig. 3);
- ``self_vs_thr.png``: self-term vs THR per token, with their correlations (the cross-token part);
- ``heatmap.html``: every response of the first groups, tokens coloured by THR (hover: values);
- ``groups.jsonl``: the per-token numbers; ``summary.json``: the numbers of every figure.

Example: ``thr analyze --model embedded --data columns --group-size 8 --num-prompts 32``.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import torch

from thr.analysis.page import clean_json
from thr.config import Count, Fraction, PositiveFloat, PositiveInt, Range, check_choices, load_config, to_dict, usage
from thr.data.prompts import TEMPLATE_NAMES
from thr.models.embedded_config import EmbeddedConfig
from thr.rl.steering import InfluenceMethod


@dataclass
class AnalyzeConfig:
    """Options of ``thr analyze`` (``--key value`` or ``key=value``; dashes or underscores).

    model: ``embedded`` (the built-in warm-started model, settings in ``embedded.*``), a local
        ``save_pretrained`` directory or a hub name.
    data: a built-in task (``columns``, ``arith``), a packaged benchmark (``math500`` ...), a
        ``.jsonl``/``.parquet`` path or a HF dataset name (see ``thr.data.problems.load_problems``).
    split: the split of ``data`` (empty: its default).
    problem_field, answer_field: field names of file/HF rows (empty: auto-detect).
    num_prompts: problems analysed (the first N).
    group_size: responses per problem, G.
    temperature: sampling temperature (THR uses the same temperature).
    top_p: nucleus sampling.
    max_new_tokens: response budget.
    prompt_template: ``auto`` (the template a saved model was trained with, from its
        ``thr_prompt.json``; ``plain`` for the embedded model), ``plain``, ``boxed``, ``qwen_math``
        or ``chat``.
    beta: NTHR threshold factor for dominant tokens.
    overlap_q: top fraction of tokens compared in the THR / entropy overlap.
    min_tokens: shorter responses are left out of the overlap statistic.
    heatmap_groups: groups rendered in ``heatmap.html`` (mixed groups first).
    batch_size: sequences per generate call.
    micro_batch_size: sequences per scoring forward.
    chunk_size, method: THR computation (``thr.core.token_influence``; method ``auto``, ``mform`` or ``pair``).
    output_dir: where the figures, heat map and summary.json go.
    seed: sampling seed.
    device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    dtype: ``auto``, ``float32``, ``bfloat16`` or ``float16``.
    trust_remote_code: passed to ``from_pretrained``.
    progress: show progress bars.
    """

    model: str = "embedded"
    data: str = "columns"
    split: str = ""
    problem_field: str = ""
    answer_field: str = ""
    num_prompts: PositiveInt = 32
    group_size: Annotated[int, Range(ge=2)] = 8
    temperature: PositiveFloat = 1.0
    top_p: Fraction = 1.0
    max_new_tokens: PositiveInt = 160
    prompt_template: Literal[TEMPLATE_NAMES] = "auto"  # type: ignore[valid-type]
    beta: float = 1.0
    overlap_q: Fraction = 0.2
    min_tokens: PositiveInt = 5
    heatmap_groups: Count = 4
    batch_size: PositiveInt = 128
    micro_batch_size: PositiveInt = 64
    chunk_size: PositiveInt = 1024
    method: InfluenceMethod = "auto"
    output_dir: str = "runs/analyze"
    seed: int = 0
    device: str = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "float32"
    trust_remote_code: bool = False
    progress: bool = True
    embedded: EmbeddedConfig = field(default_factory=EmbeddedConfig)

    def validate(self) -> AnalyzeConfig:
        check_choices(self)  # Literal choices and Range bounds, from the types
        if self.model == "embedded":
            self.embedded.validate()
        return self


def load_model(cfg: AnalyzeConfig) -> tuple[Any, Any, str, dict[str, Any] | None]:
    """``(model, tokenizer, prompt template, task settings or None)``.

    A saved model's ``thr_prompt.json`` (``thr.data.prompts.load_prompt_info``) gives, with
    ``prompt_template=auto``, its template, and when ``data`` is the built-in task it was trained
    on, that task's settings.
    """
    from thr.models.embedded import warm_start
    from thr.models.loading import load_policy
    from thr.data.prompts import resolve_template, task_of

    path = cfg.model
    if cfg.model == "embedded":
        path = str(warm_start(cfg.embedded, progress=cfg.progress))
    template, info = resolve_template(cfg.prompt_template, path)
    task = task_of(info, cfg.data)
    model, tokenizer = load_policy(path, dtype=cfg.dtype, device=cfg.device, trust_remote_code=cfg.trust_remote_code)
    return model.eval(), tokenizer, template, task


def load_data(cfg: AnalyzeConfig, task: dict[str, Any] | None) -> list[Any]:
    """The first ``num_prompts`` problems of ``cfg.data`` (a built-in task with ``task`` settings)."""
    from thr.data.problems import load_problems, load_task

    if task is not None:
        problems = load_task(cfg.data, cfg.split or "test", **task)
    else:
        try:
            problems = load_problems(cfg.data, split=cfg.split or None, problem_field=cfg.problem_field or None,
                                     answer_field=cfg.answer_field or None)
        except FileNotFoundError as err:
            raise ValueError(f"data: {err}") from None
    if not problems:
        raise ValueError(f"data={cfg.data!r} gave no problems")
    return problems[: cfg.num_prompts]


def sample_groups(cfg: AnalyzeConfig, model: Any, tokenizer: Any, template: str, problems: list[Any]) -> tuple[list, list]:
    """Sampled responses (flat, grouped contiguously) and their verified scores."""
    from thr.models.generation import generate
    from thr.data.prompts import format_prompt
    from thr.rl.rewards import score_response
    from thr.data.tasks import checker_for

    prompts = [format_prompt(tokenizer, p.problem, template) for p in problems]
    groups = generate(model, tokenizer, prompts, n=cfg.group_size, temperature=cfg.temperature, top_p=cfg.top_p,
                      max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size, seed=cfg.seed, progress=cfg.progress)
    samples = [s for g in groups for s in g]
    scores = [  # a built-in task's problems are held to its full check, as in training
        score_response(s.text, problems[s.prompt_index].answer, finish_reason=s.finish_reason,
                       checker=checker_for(problems[s.prompt_index]))
        for s in samples
    ]
    return samples, scores


def score_groups(cfg: AnalyzeConfig, model: Any, tokenizer: Any, problems: list[Any], samples: list, scores: list) -> list[dict]:
    """Per-token THR records (the ``groups.jsonl`` layout) of the sampled groups."""
    from thr.analysis.tokens import forward_statistics, group_records
    from thr.core import group_advantages
    from thr.rl.batch import build_batch

    device = next(model.parameters()).device
    rewards = torch.tensor([s.reward for s in scores], dtype=torch.float32)
    correct = torch.tensor([s.correct for s in scores], dtype=torch.bool)
    advantages, _ = group_advantages(rewards, group_size=cfg.group_size)
    batch = build_batch([s.prompt_ids for s in samples], [s.response_ids for s in samples], tokenizer.pad_token_id, device)
    stats = forward_statistics(model, batch, correct.to(device), advantages.to(device), group_size=cfg.group_size,
                               temperature=cfg.temperature, beta=cfg.beta, chunk_size=cfg.chunk_size, method=cfg.method,
                               micro_batch_size=cfg.micro_batch_size)
    return group_records(problems, samples, scores, stats, advantages, batch.response_mask.cpu(), tokenizer, cfg.group_size)


def summarize(records: list[dict[str, Any]], q: float = 0.2, min_tokens: int = 5) -> dict[str, Any]:
    """The numbers of every figure (see :mod:`thr.analysis.stats`)."""
    from thr.analysis import stats

    responses = [r for g in records for r in g["responses"]]
    return {
        "groups": stats.group_kinds(records),
        "responses": len(responses),
        "accuracy": sum(bool(r["correct"]) for r in responses) / max(len(responses), 1),
        "tokens": sum(len(r["thr"]) for r in responses),
        "density": stats.thr_density(records),
        "overlap": stats.overlap_distribution(records, q=q, min_tokens=min_tokens),
        "self_term": stats.self_term_correlations(records),
    }


def write_outputs(out: Path, records: list[dict[str, Any]], summary: dict[str, Any], heatmap_groups: int) -> dict[str, str]:
    """groups.jsonl, heatmap.html and the figures (when matplotlib is installed); returns the paths."""
    from thr.analysis import figures
    from thr.analysis.heatmap import heatmap_page, pick_groups

    out.mkdir(parents=True, exist_ok=True)
    with (out / "groups.jsonl").open("w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(clean_json(rec), ensure_ascii=False) + "\n")
    files = {"groups": str(out / "groups.jsonl"), "heatmap": str(out / "heatmap.html")}
    (out / "heatmap.html").write_text(heatmap_page(pick_groups(records, heatmap_groups), "THR heat map"), encoding="utf-8")
    try:
        files["thr_density"] = str(figures.plot_density(summary["density"], out / "thr_density.png"))
        files["overlap"] = str(figures.plot_overlap(summary["overlap"], out / "overlap.png"))
        if summary["self_term"].get("available"):
            files["self_vs_thr"] = str(figures.plot_self_term(summary["self_term"], out / "self_vs_thr.png"))
    except ImportError as err:
        print(f"thr analyze: figures skipped ({err})", file=sys.stderr)
    return files


def run_analyze(cfg: AnalyzeConfig) -> dict[str, Any]:
    """Run the whole analysis; returns the summary written to ``output_dir/summary.json``."""
    from thr.models.loading import check_model_path

    cfg.validate()
    out = Path(cfg.output_dir)
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    if cfg.model != "embedded":
        check_model_path(cfg.model, key="model")
    problems = load_data(cfg, None)  # a bad source fails before the model loads
    model, tokenizer, template, task = load_model(cfg)
    if task is not None:  # the built-in task the model was trained on, with its settings
        problems = load_data(cfg, task)
    times["load"] = time.perf_counter() - t0
    samples, scores = sample_groups(cfg, model, tokenizer, template, problems)
    times["sample"] = time.perf_counter() - t0 - times["load"]
    t1 = time.perf_counter()
    records = score_groups(cfg, model, tokenizer, problems, samples, scores)
    times["thr"] = time.perf_counter() - t1
    summary = summarize(records, q=cfg.overlap_q, min_tokens=cfg.min_tokens)
    summary["config"] = to_dict(cfg)
    summary["seconds"] = {k: round(v, 3) for k, v in times.items()}
    summary["files"] = write_outputs(out, records, summary, cfg.heatmap_groups)
    (out / "summary.json").write_text(json.dumps(clean_json(summary), indent=1, allow_nan=False) + "\n")
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """A few lines for the terminal."""
    d, o, s = summary["density"], summary["overlap"], summary["self_term"]
    g = summary["groups"]
    lines = [
        (f"groups: {g['mixed']} mixed, {g['all_correct']} all correct, {g['all_incorrect']} all incorrect; "
        f"accuracy {summary['accuracy']:.1%}, {summary['tokens']} tokens"),
        (f"THR > 0: correct {d['correct']['frac_positive']:.1%}, incorrect {d['incorrect']['frac_positive']:.1%}; "
        f"dominant tokens {d['frac_dominant']:.1%}"),
        (f"top-{o['q']:.0%} |THR| vs entropy overlap: mean {o['all']['mean']:.2f} (chance {o['all']['chance_mean']:.2f}) "
        f"over {o['all']['responses']} responses"),
    ]
    if not g["mixed"]:
        lines.append("note: no group has both correct and incorrect responses, so every THR is 0; "
                     "use more prompts (--num-prompts), a larger --group-size or easier data")
    if s.get("available"):
        rho = s["self_vs_abs_thr"]["spearman"]
        lines.append(f"spearman(self-term, |THR|) = {rho if rho is None else round(rho, 3)}; "
                     f"cross-token share (correct) {s['cross_share_correct']:.1%}")
    lines.append("files: " + ", ".join(summary["files"].values()))
    return "\n".join(lines)


def cli_main(argv: list[str] | None = None) -> int:
    """Entry point of ``thr analyze``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help", "help") for a in argv):
        print(usage(AnalyzeConfig(), "analyze", "THR of sampled groups: paper-style figures, token heat maps, "
                    "summary.json.", "src/thr/analysis/analyze.py, docs/diagnostics.md"))
        return 0
    torch.manual_seed(0)
    cfg = load_config(AnalyzeConfig, argv)
    summary = run_analyze(cfg)
    print(format_summary(summary))
    return 0
