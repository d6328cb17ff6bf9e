"""Greedy accuracy and unbiased Pass@K on math benchmarks (``thr eval``).

- :func:`pass_at_k`: the unbiased estimator ``1 - C(n-c, k) / C(n, k)`` (product form).
- :func:`evaluate_problems`: generate + verify + metrics for a list of problems; used by
  ``thr eval`` and by the RL trainer's held-out evaluation. With ``records_path`` every
  generation and its verdict is appended to a JSONL file as soon as its chunk is done, and
  chunks already in the file (same settings) are skipped, so a killed run resumes.
- :func:`run_eval` / :func:`cli_main`: load a model, evaluate benchmarks, write
  ``generations.jsonl``, ``results.json``, ``results.md`` and a Pass@K plot.

See ``docs/evaluation.md``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from thr.config import check_choices, load_config, to_dict, usage
from thr.data.problems import BENCHMARKS, Problem, load_problems
from thr.models.generation import Generator, HFGenerator, Sample
from thr.models.loading import check_model_path
from thr.data.prompts import PROMPT_INFO_FILE, TEMPLATE_NAMES, format_prompt, resolve_template

RecordKey = tuple[str, str, str, int]  # (source, problem id, mode, sample index)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of ``k`` of the ``n`` samples (``c`` correct) is correct.

    Unbiased estimator ``1 - C(n-c, k) / C(n, k)`` computed as ``1 - prod_{i=n-c+1}^{n} (1 - k/i)``
    (Chen et al., 2021), which never forms large binomials.
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n (got n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def k_values(n: int) -> list[int]:
    """K values reported for ``n`` samples: 1, 2, 4, ... up to n, and n itself."""
    ks, k = [], 1
    while k <= n:
        ks.append(k)
        k *= 2
    if n >= 1 and ks[-1] != n:
        ks.append(n)
    return ks


# ----------------------------------------------------------------------------- records


def _record_key(rec: dict[str, Any]) -> RecordKey:
    return (str(rec["source"]), str(rec["problem_id"]), str(rec["mode"]), int(rec["sample"]))


def read_records(path: str | Path) -> dict[RecordKey, dict[str, Any]]:
    """Records of a ``generations.jsonl`` by key; later lines win; a torn last line is ignored."""
    records: dict[RecordKey, dict[str, Any]] = {}
    path = Path(path)
    if not path.is_file():
        return records
    with path.open(encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
                records[_record_key(rec)] = rec
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue  # a line cut by a kill; its chunk is regenerated
    return records


def _slim(rec: dict[str, Any]) -> dict[str, Any]:
    """The fields metrics need (keeps memory small on long runs)."""
    return {k: rec.get(k) for k in ("tag", "correct", "finish_reason", "num_tokens")}


def score_response(
    text: str, finish_reason: str, gold: str, *, score_truncated: bool = False, problem: Problem | None = None
) -> tuple[bool, str | None]:
    """(verdict, extracted answer), with the trainer's reward rules (``thr.rl.rewards``): responses
    cut at ``max_new_tokens`` are wrong unless ``score_truncated``; no answer is wrong. A
    ``problem`` of a built-in task (``columns``, ``arith``) is also held to the task's full check
    of the worked solution, exactly as the trainer's reward does."""
    from thr.rl.rewards import score_response as reward_of
    from thr.data.tasks import checker_for
    from thr.verifier import extract_answer

    checker = checker_for(problem) if problem is not None else None
    verdict = reward_of(text, gold, finish_reason=finish_reason, truncated="verify" if score_truncated else "zero",
                        checker=checker)
    return verdict.correct, extract_answer(text)


def _make_record(
    problem: Problem, sample: Sample, mode: str, index: int, tag: str, score_truncated: bool
) -> dict[str, Any]:
    correct, pred = score_response(sample.text, sample.finish_reason, problem.answer, score_truncated=score_truncated,
                                   problem=problem)
    return {
        "source": problem.source,
        "problem_id": problem.id,
        "mode": mode,
        "sample": index,
        "tag": tag,
        "gold": problem.answer,
        "pred": pred,
        "correct": correct,
        "finish_reason": sample.finish_reason,
        "num_tokens": len(sample.response_ids),
        "response": sample.text,
        # a built-in task's problem text, so that --rescore can apply the task's check on its own
        "problem": problem.problem if problem.meta.get("builtin_task") else None,
        "builtin_task": problem.meta.get("builtin_task"),
    }


def _settings_tag(**settings: Any) -> str:
    """Short hash of the generation settings; records with another tag are not reused."""
    blob = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


# ----------------------------------------------------------------------------- metrics


def compute_metrics(
    problems: list[Problem], records: dict[RecordKey, dict[str, Any]], *, n: int, greedy: bool
) -> dict[str, Any]:
    """Metrics from verdict records; raises ValueError naming the first missing record."""

    def get(p: Problem, mode: str, s: int) -> dict[str, Any]:
        key = (p.source, p.id, mode, s)
        if key not in records:
            raise ValueError(f"no {mode} generation #{s} for {p.source} problem {p.id!r}; run without --rescore first")
        return records[key]

    metrics: dict[str, Any] = {"num_problems": len(problems)}
    if not problems:
        return metrics
    if greedy:
        recs = [get(p, "greedy", 0) for p in problems]
        metrics["greedy_accuracy"] = sum(bool(r["correct"]) for r in recs) / len(recs)
        metrics["greedy_truncated"] = sum(r["finish_reason"] == "length" for r in recs) / len(recs)
    if n > 0:
        sampled = [[get(p, "sample", s) for s in range(n)] for p in problems]
        counts = [sum(bool(r["correct"]) for r in rows) for rows in sampled]
        for k in k_values(n):
            metrics[f"pass@{k}"] = sum(pass_at_k(n, c, k) for c in counts) / len(counts)
        metrics[f"mean@{n}"] = sum(c / n for c in counts) / len(counts)
        flat = [r for rows in sampled for r in rows]
        metrics["truncated"] = sum(r["finish_reason"] == "length" for r in flat) / len(flat)
        metrics["mean_response_tokens"] = sum(int(r["num_tokens"] or 0) for r in flat) / len(flat)
    return metrics


# ----------------------------------------------------------------------------- evaluation


def evaluate_problems(
    model: Any,
    tokenizer: Any,
    problems: list[Problem],
    *,
    n: int = 4,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_new_tokens: int = 256,
    batch_size: int = 32,
    prompt_template: str = "auto",
    seed: int = 0,
    greedy: bool = True,
    records_path: str | Path | None = None,
    score_truncated: bool = False,
    progress: bool = False,
    run_tag: str = "",
) -> dict[str, Any]:
    """Greedy accuracy (``greedy=True``) and Pass@K over ``n`` samples at ``temperature``.

    ``model`` is a HF causal LM or a :class:`thr.models.generation.Generator` (e.g. a
    ``VLLMGenerator``; then ``tokenizer`` may be None). Returns ``num_problems``,
    ``greedy_accuracy``, ``pass@K`` for K in 1, 2, 4, ..., n, ``mean@n`` (equal to pass@1),
    ``truncated`` and ``mean_response_tokens``. Problems are generated in chunks of about
    ``batch_size`` sequences; each chunk is seeded from ``seed`` and its index, so a resumed run
    reproduces an uninterrupted one. ``run_tag`` (e.g. the model name) joins the settings hash
    that decides which records in ``records_path`` may be reused.
    """
    if n < 0 or (n == 0 and not greedy):
        raise ValueError(f"need n >= 1 samples or greedy=True (got n={n}, greedy={greedy})")
    if n > 0 and temperature <= 0:
        raise ValueError("sampling for Pass@K needs temperature > 0; greedy decoding is computed by greedy=True")
    gen = model if isinstance(model, Generator) else HFGenerator(model, tokenizer)
    tokenizer = tokenizer if tokenizer is not None else gen.tokenizer
    prompts = [format_prompt(tokenizer, p.problem, prompt_template) for p in problems]
    existing = read_records(records_path) if records_path else {}
    records: dict[RecordKey, dict[str, Any]] = {}
    modes = ([("greedy", 1, 0.0)] if greedy else []) + ([("sample", n, temperature)] if n > 0 else [])
    writer = open(records_path, "a", encoding="utf-8") if records_path else None  # noqa: SIM115
    try:
        for mode_index, (mode, count, temp) in enumerate(modes):
            settings = dict(mode=mode, n=count, temperature=temp, top_p=top_p, max_new_tokens=max_new_tokens)
            settings.update(batch_size=batch_size, template=prompt_template, seed=seed, run=run_tag)
            tag = _settings_tag(**settings, score_truncated=score_truncated)
            _run_mode(
                gen, problems, prompts, mode=mode, count=count, temperature=temp, top_p=top_p,
                max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed * 7919 + mode_index,
                tag=tag, existing=existing, records=records, writer=writer,
                score_truncated=score_truncated, progress=progress,
            )  # fmt: skip
    finally:
        if writer is not None:
            writer.close()
    return compute_metrics(problems, records, n=n, greedy=greedy)


def _run_mode(
    gen: Generator,
    problems: list[Problem],
    prompts: list[str],
    *,
    mode: str,
    count: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    batch_size: int,
    seed: int,
    tag: str,
    existing: dict[RecordKey, dict[str, Any]],
    records: dict[RecordKey, dict[str, Any]],
    writer: Any,
    score_truncated: bool,
    progress: bool,
) -> None:
    """Generate/verify one mode (greedy or sample) chunk by chunk, reusing finished chunks."""
    per_chunk = max(1, (gen.chunk_sequences or batch_size) // count)
    bar = None
    if progress and problems:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(problems), desc=f"{problems[0].source} {mode}", unit="problem", dynamic_ncols=True)
    for chunk_index, start in enumerate(range(0, len(problems), per_chunk)):
        idx = list(range(start, min(start + per_chunk, len(problems))))
        keys = [(problems[i].source, problems[i].id, mode, s) for i in idx for s in range(count)]
        if all(k in existing and existing[k].get("tag") == tag for k in keys):
            records.update({k: _slim(existing[k]) for k in keys})
        else:
            samples = gen.generate(
                [prompts[i] for i in idx], n=count, temperature=temperature, top_p=top_p,
                max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed * 100_003 + chunk_index,
            )  # fmt: skip
            new = [
                _make_record(problems[i], sample, mode, s, tag, score_truncated)
                for i, row in zip(idx, samples)
                for s, sample in enumerate(row)
            ]
            for rec in new:
                records[_record_key(rec)] = _slim(rec)
            if writer is not None:
                writer.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in new))
                writer.flush()
                os.fsync(writer.fileno())
        if bar is not None:
            bar.update(len(idx))
    if bar is not None:
        bar.close()


# ----------------------------------------------------------------------------- config + run


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
    n: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    greedy: bool = True
    max_new_tokens: int = 2048
    batch_size: int = 32
    prompt_template: Literal[TEMPLATE_NAMES] = "auto"  # type: ignore[valid-type]
    limit: int | None = None
    output_dir: str = "runs/eval"
    seed: int = 0
    device: str = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    backend: Literal["hf", "vllm"] = "hf"
    gpu_memory_utilization: float = 0.85
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
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise ValueError("max_new_tokens and batch_size must be >= 1")
        if self.limit is not None and self.limit < 1:
            raise ValueError("limit must be >= 1 (or unset for all problems)")
        check_choices(self)
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")


def load_model(
    name: str, *, device: str = "auto", dtype: str = "auto", trust_remote_code: bool = False
) -> tuple[Any, Any]:
    """(model, tokenizer) from a local ``save_pretrained`` directory or a hub name, in eval mode."""
    from thr.models.loading import load_policy

    model, tokenizer = load_policy(name, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    return model.eval(), tokenizer


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
                    "generations.jsonl, results.json, results.md, pass_at_k.png.", "src/thr/eval/evaluate.py, "
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
