"""Agreement of ``thr.verify`` and of raw ``math_verify`` on an *independent* case table:
test cases collected from other projects' answer-checker test suites (issue #16, "Done when").

The cases are not part of this repository (other projects' test data: licensing, and the
table must stay independent of the rules it measures). Collect them into a local JSONL file
outside the repository and pass its path.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/verifier_independent.py /tmp/independent_cases.jsonl \\
        [--out benchmarks/results/verifier_independent.json] [--baseline first_run.json]

Input format: one JSON object per line with

- ``response`` (str): the model output or answer string the suite checks;
- ``gold`` (str or number): the suite's reference answer;
- ``expected`` (bool): the suite's own verdict (True: the suite says they match);
- ``source`` (str): where the case comes from, ``owner/repo:path[::test]``.

Scores are given in total, per repository (``per_repo``), without Math-Verify's own test
suite (``without_math_verify_suite``: math_verify is tuned to pass its own tests) and per
source.

Prints (and writes with ``--out``) one JSON object with, for ``thr.verify`` and raw
``math_verify`` side by side: accuracy against the suites' verdicts, false accepts (suite
says False, verifier True), false rejects, per source and in total; the agreement of the two
verifiers; and the failing cases as ``index`` (0-based line of the input file), ``id`` (first
10 hex digits of the SHA-1 of ``response + "\\x00" + gold``, stable across reorderings),
``source`` and the verdicts -- never the case texts. Cases listed in ``DISPUTED`` (by id)
are flagged: the headline figures still count them as the suite says.

``--baseline`` takes an earlier output of this script and copies its totals into
``first_run`` (to keep the figure measured before any verifier change next to the final one).

"Raw math_verify" is its documented usage with default settings:
``verify(parse(gold), parse(response))``, the gold wrapped as ``$GOLD$`` when it has no ``$``
and no ``\\boxed``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

# Cases whose suite verdict we consider wrong for a reward signal (counted as the suite says
# in every figure; listed so the report can name them). id -> reason.
DISPUTED: dict[str, str] = {
    "c5c905e7e1": "Math-Verify test_yujianll: 1 + 1/e is labelled equal to 1 - 1/e",
    "f753c7c875": "MindSpeed-RL test_grader: 1 is labelled equal to 1.0001 (a 1e-4 relative tolerance)",
}


def case_id(response: str, gold: Any) -> str:
    return hashlib.sha1(f"{response}\x00{gold}".encode()).hexdigest()[:10]


def raw_math_verify(response: str, gold: Any) -> bool:
    """Plain math_verify on the full texts (its own extraction, signal timeouts)."""
    from math_verify import parse
    from math_verify import verify as mv_verify

    gold = str(gold)
    gold_text = gold if ("$" in gold or "\\boxed" in gold) else f"${gold}$"
    try:
        return bool(mv_verify(parse(gold_text), parse(response)))
    except Exception:  # noqa: BLE001 - a comparison or lookup that fails counts as no
        return False


def _score(rows: list[tuple[bool, bool, bool]]) -> dict[str, Any]:
    """Counts over ``(expected, thr, math_verify)`` rows."""
    n = len(rows)
    out: dict[str, Any] = {"n": n, "expected_true": sum(e for e, _, _ in rows)}
    for k, idx in (("thr", 1), ("math_verify", 2)):
        correct = sum(r[idx] == r[0] for r in rows)
        out[k] = {
            "correct": correct,
            "accuracy": round(correct / n, 4) if n else None,
            "false_accepts": sum(r[idx] and not r[0] for r in rows),
            "false_rejects": sum(r[0] and not r[idx] for r in rows),
        }
    out["agreement_thr_vs_math_verify"] = round(sum(r[1] == r[2] for r in rows) / n, 4) if n else None
    return out


def load_cases(path: Path) -> list[dict[str, Any]]:
    cases = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                case = json.loads(line)
                for key in ("response", "gold", "expected", "source"):
                    if key not in case:
                        raise ValueError(f"case {len(cases)} has no {key!r}")
                cases.append(case)
    return cases


def run(cases: list[dict[str, Any]]) -> dict[str, Any]:
    from thr.verifier import verify

    by_source: dict[str, list[tuple[bool, bool, bool]]] = defaultdict(list)
    by_repo: dict[str, list[tuple[bool, bool, bool]]] = defaultdict(list)
    rows: list[tuple[bool, bool, bool]] = []
    failures = []
    start = time.perf_counter()
    for i, case in enumerate(cases):
        response, gold, expected = str(case["response"]), case["gold"], bool(case["expected"])
        ours = bool(verify(response, gold))
        raw = raw_math_verify(response, gold)
        row = (expected, ours, raw)
        rows.append(row)
        by_source[case["source"]].append(row)
        by_repo[case["source"].split(":", 1)[0]].append(row)
        if ours != expected or raw != expected:
            cid = case_id(response, gold)
            failures.append({
                "index": i, "id": cid, "source": case["source"], "expected": expected,
                "thr": ours, "math_verify": raw,
                **({"disputed": DISPUTED[cid]} if cid in DISPUTED else {}),
            })
    elapsed = time.perf_counter() - start
    disputed_ids = {f["id"] for f in failures if "disputed" in f}
    undisputed = [r for c, r in zip(cases, rows) if case_id(str(c["response"]), c["gold"]) not in disputed_ids]
    return {
        "total": _score(rows),
        "total_without_disputed": _score(undisputed) if disputed_ids else None,
        "per_repo": {repo: _score(r) for repo, r in sorted(by_repo.items())},
        "without_math_verify_suite": _score([r for repo, rs in by_repo.items() if repo != "huggingface/Math-Verify" for r in rs]),
        "per_source": {src: _score(r) for src, r in sorted(by_source.items())},
        "thr_failures": [f for f in failures if f["thr"] != f["expected"]],
        "math_verify_failures": [f for f in failures if f["math_verify"] != f["expected"]],
        "seconds": round(elapsed, 1),
    }


def _machine() -> dict[str, Any]:
    import platform

    try:
        from importlib.metadata import version

        mv_version = version("math-verify")
    except Exception:  # noqa: BLE001 - a comparison or lookup that fails counts as no
        mv_version = None
    return {"python": platform.python_version(), "math_verify": mv_version, "cpus": os.cpu_count(),
            "loadavg": [round(x, 2) for x in os.getloadavg()]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("cases", type=Path, help="JSONL of independent cases (kept outside the repo)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--baseline", type=Path, default=None,
                        help="an earlier output of this script: its totals become `first_run`")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # math_verify logs every parse failure
    sys.path.insert(0, str(REPO / "src"))
    cases = load_cases(args.cases)
    result: dict[str, Any] = {"machine": _machine(), "input_cases": len(cases)}
    if args.baseline is not None:
        base = json.loads(args.baseline.read_text())
        result["first_run"] = {
            "total": base["total"],
            "thr_failures": [{k: f[k] for k in ("index", "id", "source", "expected", "thr")}
                             for f in base["thr_failures"]],
        }
    result.update(run(cases))
    text = json.dumps(result, indent=1)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
