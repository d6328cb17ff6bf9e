"""``thr eval``: its config, and the run over models and benchmarks (``docs/evaluation.md``).

:func:`run_eval` / :func:`cli_main`: load a model (or several), evaluate every benchmark with
:func:`thr.eval.evaluate.evaluate_problems`, write ``generations.jsonl``, ``results.json``,
``results.md`` and a Pass@K plot (:mod:`thr.eval.tables`); ``--rescore`` re-verifies saved
generations without a model.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from thr.config import Count, Fraction, PositiveInt, check_choices, load_config, to_dict, usage
from thr.data.problems import BENCHMARKS, Problem, load_problems
from thr.data.prompts import PROMPT_INFO_FILE, TEMPLATE_NAMES, resolve_template
from thr.eval.evaluate import RecordKey, compute_metrics, evaluate_problems, load_model, read_records, score_response
from thr.models.loading import check_model_path

@dataclass
class EvalConfig:
    """Options of ``thr eval`` (see ``docs/evaluation.md``).

    model: local path or hub name; several comma-separated to compare them.
    benchmarks: packaged benchmark names or a built-in task (``columns``, ``arith``); ``[]`` for none.
    data_file: extra source: a ``.jsonl``/``.json``/``.parquet`` path or an HF dataset name.
    split: for ``data_file`` (HF datasets) and the built-in tasks (``columns``, ``arith``).
    problem_field, answer_field: field names of ``data_file`` rows (unset: auto-detect).
    n: samples per problem for Pass@K (0: greedy only).
    temperature: sampling temperature for Pass@K.
    top_p: nucleus sampling for Pass@K.
    greedy: also report greedy (temperature 0) accuracy.
    max_new_tokens: response budget.
    batch_size: sequences per generate call.
    prompt_template: ``auto`` (a saved model's ``thr_prompt.json``, else ``chat`` if the tokenizer
        has a chat template, else ``boxed``), ``plain``, ``boxed``, ``qwen_math`` or ``chat``.
    limit: the first N problems of each benchmark (unset: all).
    output_dir: where the reports go; one sub-folder per model when several are given.
    seed: sampling seed (datasets do not depend on it).
    device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    dtype: ``auto`` (bf16 on CUDA, fp32 on CPU), ``float32``, ``bfloat16`` or ``float16``.
    backend: ``hf`` or ``vllm``.
    gpu_memory_utilization: vLLM only: the share of GPU memory vLLM may take.
    score_truncated: verify responses cut at ``max_new_tokens`` instead of marking them wrong.
    resume: reuse finished generations in ``output_dir/generations.jsonl``.
    rescore: re-verify the saved generations; no model is loaded.
    compare: ``results.json`` files or directories to tabulate and plot; no evaluation.
    plot: the Pass@K PNG path (unset: ``output_dir/pass_at_k.png``).
    trust_remote_code: passed to ``from_pretrained``.
    """

    model: str = ""
    benchmarks: list[str] = field(default_factory=lambda: ["math500"])
    data_file: str | None = None
    split: str | None = None
    problem_field: str | None = None
    answer_field: str | None = None
    n: Count = 16
    temperature: float = 1.0
    top_p: Fraction = 1.0
    greedy: bool = True
    max_new_tokens: PositiveInt = 2048
    batch_size: PositiveInt = 32
    prompt_template: Literal[TEMPLATE_NAMES] = "auto"  # type: ignore[valid-type]
    limit: int | None = None
    output_dir: str = "runs/eval"
    seed: int = 0
    device: str = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    backend: Literal["hf", "vllm"] = "hf"
    gpu_memory_utilization: Fraction = 0.85
    score_truncated: bool = False
    resume: bool = True
    rescore: bool = False
    compare: list[str] = field(default_factory=list)
    plot: str | None = None
    trust_remote_code: bool = False

    def validate(self) -> None:
        """Raise ValueError with a fix for inconsistent options."""
        if self.compare:
            return
        if not self.model.strip() and not self.rescore:
            raise ValueError("set the model to evaluate: --model PATH_OR_HUB_NAME (comma-separate several)")
        unknown = [b for b in self.benchmarks if b not in BENCHMARKS and b not in ("columns", "arith")]
        if unknown:
            raise ValueError(
                f"unknown benchmark(s) {unknown}; known: {', '.join(BENCHMARKS)}, columns, arith "
                "(use --data_file for a local file or HF dataset)"
            )
        if not self.benchmarks and not self.data_file:
            raise ValueError("nothing to evaluate: give --benchmarks NAME[,NAME] and/or --data_file PATH")
        if self.n < 0 or (self.n == 0 and not self.greedy):
            raise ValueError("n must be >= 1, or n=0 with greedy=true")
        if self.n > 0 and self.temperature <= 0:
            raise ValueError("temperature must be > 0 for sampling; greedy accuracy is reported by greedy=true")
        if self.limit is not None and self.limit < 1:
            raise ValueError("limit must be >= 1 (or unset for all problems)")
        check_choices(self)
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")


def _sources(cfg: EvalConfig, prompt_info: dict[str, Any] | None = None) -> list[list[Problem]]:
    """The problem lists to evaluate; the built-in task a saved model was trained on (its
    ``thr_prompt.json``) is loaded with that model's task settings."""
    from thr.data.problems import load_task
    from thr.data.prompts import task_of

    def load(b: str) -> list[Problem]:
        settings = task_of(prompt_info, b)
        if settings is not None:
            return load_task(b, cfg.split or "test", **settings)[: cfg.limit]
        return load_problems(b, split=cfg.split if b in ("columns", "arith") else None, limit=cfg.limit)

    sources = [load(b) for b in cfg.benchmarks]
    if cfg.data_file:
        sources.append(
            load_problems(
                cfg.data_file, split=cfg.split, problem_field=cfg.problem_field,
                answer_field=cfg.answer_field, limit=cfg.limit,
            )  # fmt: skip
        )
    return sources


def rescore_file(
    records_path: Path, problems_by_source: list[list[Problem]], score_truncated: bool
) -> dict[RecordKey, dict[str, Any]]:
    """Re-verify every saved generation against the current gold answers; rewrite the file."""
    records = read_records(records_path)
    if not records:
        raise ValueError(f"--rescore: no generations in {records_path}; run the evaluation first")
    by_key = {(p.source, p.id): p for ps in problems_by_source for p in ps}
    tmp = records_path.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for key, rec in records.items():
            problem = by_key.get(key[:2])
            if problem is None and rec.get("builtin_task") and rec.get("problem"):  # scored on its saved text
                problem = Problem(str(key[1]), rec["problem"], str(rec.get("gold", "")), str(key[0]),
                                  {"builtin_task": rec["builtin_task"]})
            rec["gold"] = problem.answer if problem is not None else rec.get("gold", "")
            text, reason = rec.get("response", ""), rec.get("finish_reason", "length")
            rec["correct"], rec["pred"] = score_response(text, reason, rec["gold"], score_truncated=score_truncated,
                                                         problem=problem)
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    tmp.replace(records_path)
    return records


def _eval_model(cfg: EvalConfig, model_name: str, out_dir: Path) -> dict[str, Any]:
    """Evaluate one model on every source; write its reports to ``out_dir``."""
    from thr.eval import tables as eval_report

    start = time.time()
    out_dir.mkdir(parents=True, exist_ok=True)
    records_path = out_dir / "generations.jsonl"
    if not cfg.resume and not cfg.rescore and records_path.exists():
        records_path.unlink()
    template, info = resolve_template(cfg.prompt_template, model_name)  # auto: the saved model's own template
    if template != cfg.prompt_template:
        print(f"prompt template: {template} (from {Path(model_name) / PROMPT_INFO_FILE})", flush=True)
    sources = _sources(cfg, info)
    per_source: dict[str, dict[str, Any]] = {}
    if cfg.rescore:
        records = rescore_file(records_path, sources, cfg.score_truncated)
        for problems in sources:
            per_source[problems[0].source] = compute_metrics(problems, records, n=cfg.n, greedy=cfg.greedy)
    else:
        model, tokenizer = _load_backend(cfg, model_name)
        for problems in sources:
            t0 = time.time()
            metrics = evaluate_problems(
                model, tokenizer, problems, n=cfg.n, temperature=cfg.temperature, top_p=cfg.top_p,
                max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size, prompt_template=template,
                seed=cfg.seed, greedy=cfg.greedy, records_path=records_path, score_truncated=cfg.score_truncated,
                progress=True, run_tag=model_name,
            )  # fmt: skip
            metrics["seconds"] = round(time.time() - t0, 2)
            per_source[problems[0].source] = metrics
    results = {
        "model": model_name,
        "prompt_template": template,
        "config": to_dict(cfg),
        "benchmarks": per_source,
        "overall": eval_report.overall_metrics(per_source),
        "elapsed_s": round(time.time() - start, 2),
    }
    eval_report.write_reports(results, out_dir)
    print(eval_report.format_table(results), flush=True)
    return results


def _load_backend(cfg: EvalConfig, model_name: str) -> tuple[Any, Any]:
    if cfg.backend == "vllm":
        from thr.models.generation import VLLMGenerator

        gen = VLLMGenerator(
            model_name, dtype="auto" if cfg.dtype == "auto" else cfg.dtype, seed=cfg.seed,
            gpu_memory_utilization=cfg.gpu_memory_utilization, trust_remote_code=cfg.trust_remote_code,
        )  # fmt: skip
        return gen, gen.tokenizer
    return load_model(model_name, device=cfg.device, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code)


def run_eval(cfg: EvalConfig) -> dict[str, Any]:
    """Run ``thr eval``. One model: its results dict. Several (comma-separated) or ``compare``:
    ``{"models": {name: results}}`` plus ``comparison.md`` and a Pass@K plot in ``output_dir``."""
    from thr.eval import tables as eval_report

    cfg.validate()
    out = Path(cfg.output_dir)
    png = Path(cfg.plot) if cfg.plot else out / "pass_at_k.png"
    if cfg.compare:
        runs = [eval_report.load_results(p) for p in cfg.compare]
        return eval_report.write_comparison(out, runs, [Path(p) for p in cfg.compare], png)
    names = [m.strip() for m in cfg.model.split(",") if m.strip()]
    if not names:  # --rescore without --model: keep the label of the earlier run
        previous = out / "results.json"
        names = [eval_report.load_results(previous).get("model", "model") if previous.is_file() else "model"]
    if not cfg.rescore:
        for name in names:
            check_model_path(name, key="--model")
    if len(names) == 1:
        results = _eval_model(cfg, names[0], out)
        if cfg.n > 1:
            eval_report.try_plot([out], png)
        return results
    slugs = [eval_report.model_slug(m) for m in names]
    slugs = [s if slugs.count(s) == 1 else f"{i}_{s}" for i, s in enumerate(slugs)]
    runs = [_eval_model(cfg, name, out / slug) for name, slug in zip(names, slugs)]
    return eval_report.write_comparison(out, runs, [out / s for s in slugs], png)


def cli_main(argv: list[str] | None = None) -> int:
    """Entry point of ``thr eval``; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help", "help") for a in argv):
        print(usage(EvalConfig(), "eval", "Greedy accuracy and Pass@K on math benchmarks; writes OUTPUT_DIR/"
                    "generations.jsonl, results.json, results.md, pass_at_k.png.", "src/thr/eval/run.py, "
                    "docs/evaluation.md"))
        return 0
    try:
        cfg = load_config(EvalConfig, argv)
        run_eval(cfg)
    except (ValueError, FileNotFoundError, ImportError) as err:
        print(f"thr eval: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(cli_main())
