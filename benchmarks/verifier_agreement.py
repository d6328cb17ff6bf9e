"""Agreement between ``thr.verify`` and raw ``math_verify``, and the cost of a verify call.

Usage::

    python benchmarks/verifier_agreement.py [--max-per-file 300] [--out result.json]

Prints one JSON object:

- ``cases``: on the labelled case table of ``tests/test_verifier.py``, the accuracy of each
  verifier against the labels, their agreement, and every case where they differ (with the
  label, i.e. which one is right).
- ``benchmarks``: per benchmark file, four kinds of pairs, each prediction rendered as
  ``... \\boxed{PRED}``: ``self`` (the gold itself, should verify), ``cross`` (a neighbouring
  different gold, should not), ``reformatted`` (a value-preserving rewrite of the gold:
  ``\\dfrac``, ``\\left(``, separators, ``.0``, reordered bare lists; should verify) and
  ``perturbed`` (first digit changed; should not). Correct counts for both verifiers, agreement,
  and the disagreements.
- ``timing``: mean / median / p99 wall time of one ``thr.verify`` call on the case table and on
  the benchmark pairs (warm worker), and the share of calls that reached the sympy worker.

"Raw math_verify" is its documented usage: ``verify(parse(gold), parse(response))`` where a
bare gold is given as ``$GOLD$`` and a solution-style gold (``\\boxed``/``####``) as is.
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
    except Exception:
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
    """Mean / median / p99 / max of a list of call times, in ms."""
    ordered = sorted(times)
    return {
        "calls": len(times),
        "mean_ms": round(1000 * statistics.fmean(times), 3),
        "median_ms": round(1000 * statistics.median(times), 3),
        "p99_ms": round(1000 * ordered[int(0.99 * (len(ordered) - 1))], 3),
        "max_ms": round(1000 * ordered[-1], 3),
    }


def run_cases(tests: ModuleType, times: list[float], raw_times: list[float]) -> dict[str, Any]:
    """Both verifiers on the labelled case table."""
    rows = []
    for response, gold, expected, label in tests.CASES:
        ours = _timed_verify(response, gold, times)
        raw = _timed_raw(response, gold, raw_times)
        rows.append((label, expected, ours, raw, response, gold))
    differ = [
        {
            "label": lab, "expected": exp, "thr": o, "math_verify": r,
            "right": "thr" if o == exp else "math_verify", "response": resp[-120:], "gold": str(g)[-120:],
        }
        for lab, exp, o, r, resp, g in rows
        if o != r
    ]
    n = len(rows)
    return {
        "n": n,
        "thr_accuracy": round(sum(o == e for _, e, o, *_ in rows) / n, 4),
        "math_verify_accuracy": round(sum(r == e for _, e, _, r, *_ in rows) / n, 4),
        "agreement": round(sum(o == r for _, _, o, r, *_ in rows) / n, 4),
        "false_accepts": {"thr": sum(o and not e for _, e, o, *_ in rows),
                          "math_verify": sum(r and not e for _, e, _, r, *_ in rows)},
        "false_rejects": {"thr": sum(e and not o for _, e, o, *_ in rows),
                          "math_verify": sum(e and not r for _, e, _, r, *_ in rows)},
        "disagreements": differ,
    }


def run_benchmarks(
    tests: ModuleType, max_per_file: int, times: list[float], raw_times: list[float]
) -> dict[str, Any]:
    """Self pairs (should verify) and cross pairs (should not) from every benchmark file."""
    out: dict[str, Any] = {}
    for name, golds in tests.load_benchmark_golds(max_per_file=max_per_file).items():
        kinds = {
            "self": [(g, g, True) for g in golds],
            "cross": [(a, b, False) for a, b in tests.cross_pairs(golds)],
            "reformatted": [(v, g, True) for g in golds if (v := tests.reformat_gold(g)) is not None],
            "perturbed": [(v, g, False) for g in golds if (v := tests.perturb_gold(g)) is not None],
        }
        pairs = [(a, b, e, kind) for kind, rows in kinds.items() for a, b, e in rows]
        stats: dict[str, Any] = {"pairs": {kind: len(rows) for kind, rows in kinds.items()}}
        ok = {"thr": 0, "math_verify": 0}
        differ = []
        for a, b, expected, kind in pairs:
            response = "Thus we get ... \\boxed{" + a + "}"
            ours = _timed_verify(response, b, times)
            raw = _timed_raw(response, b, raw_times)
            ok["thr"] += ours == expected
            ok["math_verify"] += raw == expected
            if ours != raw:
                differ.append({
                    "kind": kind, "pred": a, "gold": b, "expected": expected, "thr": ours,
                    "math_verify": raw, "right": "thr" if ours == expected else "math_verify",
                })
        stats["correct"] = {k: f"{v}/{len(pairs)}" for k, v in ok.items()}
        stats["agreement"] = round(1 - len(differ) / len(pairs), 4) if pairs else 1.0
        stats["disagreements"] = differ
        out[name] = stats
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run everything and print the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-per-file", type=int, default=300, help="golds sampled per benchmark file")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    from thr import verifier

    tests = _load_tests()
    verifier.verify("\\boxed{x+1}", "1+x")  # start the worker outside the timings
    case_times: list[float] = []
    raw_case_times: list[float] = []
    calls0 = verifier._POOL.calls
    cases = run_cases(tests, case_times, raw_case_times)
    case_worker = verifier._POOL.calls - calls0
    bench_times: list[float] = []
    raw_bench_times: list[float] = []
    calls0 = verifier._POOL.calls
    benches = run_benchmarks(tests, args.max_per_file, bench_times, raw_bench_times)
    bench_worker = verifier._POOL.calls - calls0
    report = {
        "cases": cases,
        "benchmarks": benches,
        "timing": {
            "cases": {**_timing(case_times), "worker_share": round(case_worker / len(case_times), 3)},
            "benchmark_pairs": {**_timing(bench_times), "worker_share": round(bench_worker / len(bench_times), 3)},
            "raw_math_verify_cases": _timing(raw_case_times),
            "raw_math_verify_benchmark_pairs": _timing(raw_bench_times),
            "worker_starts": verifier._POOL.starts,
        },
    }
    text = json.dumps(report, indent=1, ensure_ascii=False)
    print(text)
    if args.out is not None:
        args.out.write_text(text)
    return report


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
