"""Agreement of ``thr.verify`` and of raw ``math_verify`` with the right verdict, and the
cost of a verify call.

Usage::

    python benchmarks/verifier_agreement.py [--max-per-file 300] [--out result.json]

Prints one JSON object:

- ``machine``: CPU model, core count, load average before/after, Python and math-verify versions.
- ``cases``: on the labelled case table ``tests/data/verifier_cases.jsonl`` (shared with
  ``tests/test_verifier.py``), per class and in total: accuracy of each verifier against the
  labels, false accepts / false rejects, the agreement between the two, and every case where
  either is wrong.
- ``benchmarks``: per file of ``src/thr/data/benchmark_data/``, five kinds of pairs: ``self`` (the
  gold as ``... \\boxed{GOLD}``, should verify), ``unboxed`` (the gold in Minerva's sentence
  ``The final answer is $GOLD$. I hope it is correct.``, should verify), ``cross`` (a
  neighbouring different gold, should not), ``reformatted`` (a value-preserving rewrite:
  ``\\dfrac``, ``\\left(``, separators, ``.0``, a bare list written as ``or``-joined
  alternatives in its order; should verify) and
  ``perturbed`` (first digit changed; should not). Correct counts for both verifiers,
  false accepts / rejects, agreement, and the disagreements.
- ``timing``: per set, mean / median / p99 wall time of one call and verifications per second,
  for ``thr.verify`` (warm worker, one thread) and raw ``math_verify``; the share of ``thr``
  calls that reached the sympy worker; ``verify_batch`` throughput on the benchmark pairs (a
  second pass: the workers' parse caches are warm, as for a gold shared by a GRPO group); and
  ``thr.verify`` on 2000 responses in the built-in arithmetic task's format.

"Raw math_verify" is its documented usage with default settings:
``verify(parse(gold), parse(response))`` where a bare gold is given as ``$GOLD$`` and a
solution-style gold (``\\boxed``/``####``) as is.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _load_tests() -> ModuleType:
    """Import ``tests/test_verifier.py`` by path (for its case table and gold loader)."""
    spec = importlib.util.spec_from_file_location("_thr_verifier_cases", REPO / "tests" / "test_verifier.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def raw_math_verify(response: str, gold: Any) -> bool:
    """Plain math_verify on the full texts (its own extraction, signal timeouts)."""
    from math_verify import parse
    from math_verify import verify as mv_verify

    gold = str(gold)
    gold_text = gold if ("\\boxed" in gold or "####" in gold) else f"${gold}$"
    try:
        return bool(mv_verify(parse(gold_text), parse(response)))
    except Exception:  # noqa: BLE001 - a failed parse or verify is a reject
        return False


def _timed_raw(response: str, gold: Any, times: list[float]) -> bool:
    """:func:`raw_math_verify`, appending its wall time to ``times``."""
    start = time.perf_counter()
    result = raw_math_verify(response, gold)
    times.append(time.perf_counter() - start)
    return result


def _timed_verify(response: str, gold: Any, times: list[float]) -> bool:
    """``thr.verify``, appending its wall time to ``times``."""
    from thr.verifier import verify

    start = time.perf_counter()
    result = verify(response, gold)
    times.append(time.perf_counter() - start)
    return result


def _timing(times: list[float]) -> dict[str, float]:
    """Mean / median / p99 / max of a list of call times, in ms, and calls per second."""
    ordered = sorted(times)
    return {
        "calls": len(times),
        "per_second": round(len(times) / sum(times), 1) if sum(times) > 0 else 0.0,
        "mean_ms": round(1000 * statistics.fmean(times), 3),
        "median_ms": round(1000 * statistics.median(times), 3),
        "p99_ms": round(1000 * ordered[int(0.99 * (len(ordered) - 1))], 3),
        "max_ms": round(1000 * ordered[-1], 3),
    }


def _score(rows: list[tuple[bool, bool, bool]]) -> dict[str, Any]:
    """Accuracy, false accepts/rejects of both verifiers and their agreement; rows are
    ``(expected, thr, math_verify)``."""
    n = len(rows)
    if n == 0:
        return {"n": 0}
    return {
        "n": n,
        "accuracy": {"thr": round(sum(o == e for e, o, _ in rows) / n, 4),
                     "math_verify": round(sum(r == e for e, _, r in rows) / n, 4)},
        "correct": {"thr": sum(o == e for e, o, _ in rows), "math_verify": sum(r == e for e, _, r in rows)},
        "false_accepts": {"thr": sum(o and not e for e, o, _ in rows),
                          "math_verify": sum(r and not e for e, _, r in rows)},
        "false_rejects": {"thr": sum(e and not o for e, o, _ in rows),
                          "math_verify": sum(e and not r for e, _, r in rows)},
        "agreement_thr_vs_math_verify": round(sum(o == r for _, o, r in rows) / n, 4),
    }


def run_cases(tests: ModuleType, times: list[float], raw_times: list[float]) -> dict[str, Any]:
    """Both verifiers on the labelled case table, per class and in total."""
    per_class: dict[str, list[tuple[bool, bool, bool]]] = {}
    wrong = []
    for row in tests.load_cases():
        response, gold, expected = row["response"], row["gold"], row["expected"]
        ours = _timed_verify(response, gold, times)
        raw = _timed_raw(response, gold, raw_times)
        per_class.setdefault(row["class"], []).append((expected, ours, raw))
        if ours != expected or raw != expected:
            wrong.append({
                "class": row["class"], "note": row["note"], "expected": expected, "thr": ours,
                "math_verify": raw, "response": response[-120:], "gold": str(gold)[-120:],
            })
    everything = [r for rows in per_class.values() for r in rows]
    new = [r for cls, rows in per_class.items() if cls != "core" for r in rows]
    return {
        "total": _score(everything),
        "new_classes": _score(new),
        "per_class": {cls: _score(rows) for cls, rows in sorted(per_class.items())},
        "wrong": wrong,
    }


def unboxed(gold: str) -> str:
    """The gold in Minerva's closing sentence (no box)."""
    return f"Adding these up gives the result.\nThe final answer is ${gold}$. I hope it is correct."


def run_benchmarks(
    tests: ModuleType, max_per_file: int, times: list[float], raw_times: list[float]
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Self/unboxed/reformatted pairs (should verify) and cross/perturbed pairs (should not)
    from every benchmark file. Also returns every (response, gold) pair for the batch timing."""
    out: dict[str, Any] = {}
    everything: list[tuple[str, str]] = []
    for name, golds in tests.load_benchmark_golds(max_per_file=max_per_file).items():
        box = "Thus we get ... \\boxed{%s}"
        kinds = {
            "self": [(box % g, g, True) for g in golds],
            "unboxed": [(unboxed(g), g, True) for g in golds],
            "cross": [(box % a, b, False) for a, b in tests.cross_pairs(golds)],
            "reformatted": [(box % v, g, True) for g in golds if (v := tests.reformat_gold(g)) is not None],
            "perturbed": [(box % v, g, False) for g in golds if (v := tests.perturb_gold(g)) is not None],
        }
        stats: dict[str, Any] = {"pairs": {kind: len(rows) for kind, rows in kinds.items()}}
        rows_all: list[tuple[bool, bool, bool]] = []
        per_kind: dict[str, Any] = {}
        differ = []
        for kind, rows in kinds.items():
            scored = []
            for response, gold, expected in rows:
                ours = _timed_verify(response, gold, times)
                raw = _timed_raw(response, gold, raw_times)
                scored.append((expected, ours, raw))
                everything.append((response, gold))
                if ours != expected or raw != expected:
                    differ.append({
                        "kind": kind, "response": response[-100:], "gold": gold, "expected": expected,
                        "thr": ours, "math_verify": raw,
                    })
            per_kind[kind] = {k: v for k, v in _score(scored).items() if k in ("correct", "n")}
            rows_all += scored
        stats.update(_score(rows_all))
        stats["per_kind"] = per_kind
        stats["wrong"] = differ
        out[name] = stats
    return out, everything


def arithmetic_responses(n: int = 2000, seed: int = 0) -> list[tuple[str, str, bool]]:
    """Responses in the built-in arithmetic task's format (`` 9*5=45. 45-8=37. \\boxed{37}``),
    half of them with a wrong final answer: the reward's common case."""
    import random

    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b, c = rng.randint(2, 50), rng.randint(2, 50), rng.randint(2, 50)
        ab = a * b if i % 3 == 0 else a + b
        op = "*" if i % 3 == 0 else "+"
        value = ab - c
        shown = value if i % 2 == 0 else value + rng.choice((-1, 1))
        out.append((f" {a}{op}{b}={ab}. {ab}-{c}={value}. \\boxed{{{shown}}}", str(value), i % 2 == 0))
    return out


def _machine() -> dict[str, Any]:
    """CPU model, cores, load, versions."""
    import os
    import platform

    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        from importlib.metadata import version

        mv_version = version("math-verify")
    except Exception:  # noqa: BLE001
        mv_version = "unknown"
    return {
        "cpu": model, "cores": os.cpu_count(), "python": platform.python_version(),
        "math_verify": mv_version, "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run everything and print the JSON report."""
    import os

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-per-file", type=int, default=300, help="golds sampled per benchmark file")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    from thr.verifier import grader as verifier

    machine = _machine()
    tests = _load_tests()
    verifier.verify("\\boxed{x+1}", "1+x")  # start the worker outside the timings
    raw_math_verify("$x+1$", "1+x")  # import math_verify outside the timings
    case_times: list[float] = []
    raw_case_times: list[float] = []
    calls0 = verifier._POOL.calls
    cases = run_cases(tests, case_times, raw_case_times)
    case_worker = verifier._POOL.calls - calls0
    bench_times: list[float] = []
    raw_bench_times: list[float] = []
    calls0 = verifier._POOL.calls
    benches, pairs = run_benchmarks(tests, args.max_per_file, bench_times, raw_bench_times)
    bench_worker = verifier._POOL.calls - calls0
    start = time.perf_counter()
    verifier.verify_batch([r for r, _ in pairs], [g for _, g in pairs])
    batch_s = time.perf_counter() - start
    arith_times: list[float] = []
    arith_ok = [_timed_verify(r, g, arith_times) == e for r, g, e in arithmetic_responses()]
    machine["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    report = {
        "machine": machine,
        "cases": cases,
        "benchmarks_total": {
            k: {v: sum(b[k][v] for b in benches.values()) for v in ("thr", "math_verify")}
            for k in ("correct", "false_accepts", "false_rejects")
        } | {"n": sum(b["n"] for b in benches.values())},
        "benchmarks": benches,
        "timing": {
            "thr_cases": {**_timing(case_times), "worker_share": round(case_worker / len(case_times), 3)},
            "thr_benchmark_pairs": {**_timing(bench_times), "worker_share": round(bench_worker / len(bench_times), 3)},
            "math_verify_cases": _timing(raw_case_times),
            "math_verify_benchmark_pairs": _timing(raw_bench_times),
            "thr_verify_batch_benchmark_pairs": {
                "calls": len(pairs), "threads": verifier._POOL.max_workers, "seconds": round(batch_s, 2),
                "per_second": round(len(pairs) / batch_s, 1),
            },
            "thr_arithmetic_task_format": {**_timing(arith_times), "correct": f"{sum(arith_ok)}/{len(arith_ok)}"},
            "worker_starts": verifier._POOL.starts,
        },
    }
    text = json.dumps(report, indent=1, ensure_ascii=False)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return report


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
