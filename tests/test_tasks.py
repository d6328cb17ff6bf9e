"""Tests of the generated arithmetic task (thr.data.tasks.arith)."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys

import pytest

from thr.data.tasks.arith import ArithConfig, load_split, make_problem

STEP = re.compile(r"^(\d+)([+\-*])(\d+)=(\d+)\.$")


def _expression(problem: str) -> str:
    m = re.fullmatch(r"Compute (.+)\.", problem)
    assert m, problem
    return m.group(1)


def _steps(solution: str) -> tuple[list[tuple[int, str, int, int]], str]:
    """Parse ' a+b=c. c*d=e. \\boxed{e}' into steps and the boxed answer."""
    assert solution.startswith(" ")
    *parts, boxed = solution[1:].split(" ")
    m = re.fullmatch(r"\\boxed\{(-?\d+)\}", boxed)
    assert m, solution
    steps = []
    for part in parts:
        s = STEP.match(part)
        assert s, part
        steps.append((int(s.group(1)), s.group(2), int(s.group(3)), int(s.group(4))))
    return steps, m.group(1)


def test_splits_deterministic_and_disjoint() -> None:
    train, test = load_split("train", n_train=3000), load_split("test", n_train=3000)
    assert len(train) == 3000 and len(test) == 500
    assert load_split("train", n_train=3000) == train
    train_p, test_p = {d["problem"] for d in train}, {d["problem"] for d in test}
    assert len(train_p) == len(train) and len(test_p) == len(test)
    assert not train_p & test_p
    # the test split does not depend on n_train; another seed gives other problems
    assert load_split("test", n_train=10) == test
    # a longer train split extends a shorter one (the warm start's validation problems follow it)
    assert load_split("train", n_train=3100)[:3000] == train
    assert load_split("test", seed=1, n_train=10) != test


def test_same_split_in_another_process() -> None:
    from thr.data.tasks import arith

    # load the module file alone (stdlib only) so the child skips importing torch via ``thr``
    code = (
        "import importlib.util, json, sys; spec = importlib.util.spec_from_file_location('arith', sys.argv[1]); "
        "m = importlib.util.module_from_spec(spec); sys.modules['arith'] = m; spec.loader.exec_module(m); "
        "print(json.dumps(m.load_split('test', seed=3, n_test=50, n_train=0)))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code, arith.__file__], capture_output=True, text=True, env=env, check=True
    )
    assert json.loads(out.stdout) == load_split("test", seed=3, n_test=50, n_train=0)


def test_answers_are_correct_and_solutions_consistent() -> None:
    cfg = ArithConfig()
    for d in load_split("test") + load_split("train", n_train=2000):
        expr = _expression(d["problem"])
        assert re.fullmatch(r"[0-9+\-*()]+", expr)
        assert eval(expr) == int(d["answer"])
        steps, boxed = _steps(d["solution"])
        assert boxed == d["answer"]
        assert cfg.min_operands - 1 <= len(steps) <= cfg.max_operands - 1
        prev = None
        for a, op, b, c in steps:
            assert {"+": a + b, "-": a - b, "*": a * b}[op] == c
            assert 0 <= c <= cfg.max_result
            assert prev is None or a == prev  # chained: each step starts from the last result
            prev = c
        assert str(prev) == d["answer"]


def test_solutions_verify_and_are_short() -> None:
    from thr.verifier import verify

    data = load_split("test")
    for d in data[:100]:
        assert d["solution"].endswith("\\boxed{" + d["answer"] + "}")
        assert verify(d["solution"], d["answer"])
        assert not verify(d["solution"], str(int(d["answer"]) + 1))
    assert max(len(d["solution"].encode()) for d in data) < 48


def test_difficulty_knobs() -> None:
    rng = random.Random(0)
    cfg = ArithConfig(min_operands=4, max_operands=4, min_value=2, max_value=9, ops="+", max_result=10**6)
    for _ in range(50):
        d = make_problem(rng, cfg)
        expr = _expression(d["problem"])
        assert expr.count("+") == 3 and "-" not in expr and "*" not in expr
        assert all(2 <= int(x) <= 9 for x in expr.split("+"))
    mult = load_split("test", n_test=40, n_train=0, ops="*", max_multiplier=3, max_value=9, max_result=10**4)
    assert all(set(_expression(d["problem"])) <= set("0123456789*") for d in mult)
    assert all(int(f) <= 3 for d in mult for f in _expression(d["problem"]).split("*")[1:])


def test_parentheses_follow_precedence() -> None:
    data = load_split("train", n_train=3000)
    wrapped = [d for d in data if "(" in d["problem"]]
    assert wrapped, "a product after a sum must be parenthesised somewhere"
    for d in wrapped:
        assert eval(_expression(d["problem"])) == int(d["answer"])


def test_bad_settings_raise() -> None:
    with pytest.raises(ValueError, match="ops"):
        load_split("test", ops="+/")
    with pytest.raises(ValueError, match="unknown ArithConfig field"):
        load_split("test", n_operands=3)
    with pytest.raises(ValueError, match="split"):
        load_split("valid")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="min_operands"):
        ArithConfig(min_operands=1).validate()
    with pytest.raises(ValueError, match="distinct problems"):  # only "Compute 1+1." exists
        load_split("train", min_value=1, max_value=1, ops="+", max_operands=2, n_test=1, n_train=5)
