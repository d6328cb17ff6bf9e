"""Greedy accuracy and unbiased Pass@K on math benchmarks (``thr eval``).

- :func:`pass_at_k`: the unbiased estimator ``1 - C(n-c, k) / C(n, k)`` (product form).
- :func:`evaluate_problems`: generate + verify + metrics for a list of problems; used by
  ``thr eval`` and by the RL trainer's held-out evaluation. With ``records_path`` every
  generation and its verdict is appended to a JSONL file as soon as its chunk is done, and
  chunks already in the file (same settings) are skipped, so a killed run resumes.
- :func:`load_model`: a model and tokenizer in eval mode.

The ``thr eval`` command (config, model loop, reports) is :mod:`thr.eval.run`.

See ``docs/evaluation.md``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from thr.data.problems import Problem
from thr.models.generation import Generator, HFGenerator, Sample
from thr.data.prompts import format_prompt

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
    model: Any, tokenizer: Any, problems: list[Problem], *, n: int = 4, temperature: float = 1.0,
    top_p: float = 1.0, max_new_tokens: int = 256, batch_size: int = 32, prompt_template: str = "auto",
    seed: int = 0, greedy: bool = True, records_path: str | Path | None = None, score_truncated: bool = False,
    progress: bool = False, run_tag: str = "",
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
    gen: Generator, problems: list[Problem], prompts: list[str], *, mode: str, count: int, temperature: float,
    top_p: float, max_new_tokens: int, batch_size: int, seed: int, tag: str,
    existing: dict[RecordKey, dict[str, Any]], records: dict[RecordKey, dict[str, Any]], writer: Any,
    score_truncated: bool, progress: bool,
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


def load_model(
    name: str, *, device: str = "auto", dtype: str = "auto", trust_remote_code: bool = False
) -> tuple[Any, Any]:
    """(model, tokenizer) from a local ``save_pretrained`` directory or a hub name, in eval mode."""
    from thr.models.loading import load_policy

    model, tokenizer = load_policy(name, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    return model.eval(), tokenizer
