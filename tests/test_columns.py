"""Tests of the column-arithmetic task and its teacher (thr.data.tasks.columns) and of the full
solution checks of both built-in tasks."""

from __future__ import annotations

import random
import re
from collections import Counter

import pytest

from thr.rl.rewards import score_response
from thr.data.tasks import arith, columns, solution_checker


def test_every_step_against_integer_arithmetic():
    """Brute force over all two-digit operands: the written digit facts are true, the carry or
    borrow is written exactly when needed, and the result is right (or the habit's result)."""
    fact = re.compile(r"(\d+)([+-])(\d+)(?:([+-])(\d+))?=(\d+)")
    for a in range(10, 100):
        for b in range(10, 100):
            for op in "+-":
                text, result = columns.step_text(a, op, b)
                assert result == (a + b if op == "+" else a - b)
                for x, o1, y, o2, z, r in fact.findall(text.split(": ", 1)[1]):
                    value = int(x) + int(y) if o1 == "+" else int(x) - int(y)
                    if o2:
                        value = value + int(z) if o2 == "+" else value - int(z)
                    assert value == int(r), text
                event = columns.is_event(a, op, b)
                assert event == (("carry 1" in text) or ("borrow 1" in text))
                slipped, wrong = columns.step_text(a, op, b, slip=True)
                if event:
                    units = (a % 10 + b % 10) % 10 if op == "+" else abs(a % 10 - b % 10)
                    tens = a // 10 + b // 10 if op == "+" else a // 10 - b // 10
                    assert wrong == 10 * tens + units != result
                else:
                    assert (slipped, wrong) == (text, result)


def test_splits_are_deterministic_disjoint_and_follow_the_event_weights():
    test = columns.load_split("test", seed=3, n_train=0, n_test=600)
    again = columns.load_split("test", seed=3, n_train=0, n_test=600)
    train = columns.load_split("train", seed=3, n_train=3000, n_test=600)
    assert test == again
    assert not {p["problem"] for p in test} & {p["problem"] for p in train}
    assert columns.load_split("train", seed=3, n_train=1000, n_test=600) == train[:1000]
    counts = Counter(p["events"] for p in train)
    weights = [0.35, 0.15, 0.2, 0.3]
    for k, w in enumerate(weights):
        assert abs(counts[k] / len(train) - w) < 0.04, counts
    for p in train[:500]:
        first, steps = columns.parse_problem(p["problem"])
        assert len(steps) == 3
        assert columns.solve(first, steps) == (p["solution"], int(p["answer"]))
        assert 95 <= len(p["solution"]) <= 131
        assert columns._paths_in_range(first, steps)


def test_teacher_rates_and_success_probability():
    problems = columns.load_split("train", seed=0, n_train=400, n_test=50)
    rng = random.Random(0)
    carries = carried = borrows = borrowed = 0
    right, expected = 0, 0.0
    for p in problems * 10:
        sample = columns.teacher_solution(p["problem"], rng, carry_slip=0.7, borrow_slip=0.85)
        carries += len(re.findall(r"\d\+\d=1\d", sample["solution"]))
        carried += sample["solution"].count("carry 1")
        borrows += sum(1 for r in sample["decisions"] if r == 0.85)
        borrowed += sample["solution"].count("borrow 1")
        right += sample["correct"]
        expected += columns.teacher_success(p["problem"], carry_slip=0.7, borrow_slip=0.85)
    assert abs(carried / carries - 0.3) < 0.03
    assert abs(borrowed / borrows - 0.15) < 0.03
    assert abs(right - expected) / len(problems * 10) < 0.02


def test_check_solution_accepts_only_the_worked_solution():
    p = columns.load_split("test", seed=0, n_train=0, n_test=50)[1]
    assert p["events"] >= 1
    good, problem = p["solution"], p["problem"]
    assert columns.check_solution(good, problem)
    assert columns.check_solution("  " + good.replace(" ", "  ") + "\n", problem)  # whitespace only
    rng = random.Random(1)
    slipped = columns.teacher_solution(problem, rng, carry_slip=1.0, borrow_slip=1.0)["solution"]
    assert slipped != good and not columns.check_solution(slipped, problem)
    near_misses = [
        good.replace("carry 1", "carry 2"),
        good.replace(f"\\boxed{{{p['answer']}}}", "\\boxed{0}"),
        good.split(" \\boxed")[0],  # no box
        " " + good.split(". ", 1)[1],  # a step left out
        good + " \\boxed{" + p["answer"] + "}",  # a second box
    ]
    for text in near_misses:
        assert not columns.check_solution(text, problem), text
    other = columns.load_split("test", seed=0, n_train=0, n_test=50)[2]
    assert not columns.check_solution(other["solution"], problem)  # another problem's solution
    assert not columns.check_solution(good, "Compute 1+1.")  # not a task problem


def test_reward_and_held_out_scoring_use_the_same_full_check():
    from thr.data.problems import load_task
    from thr.eval.evaluate import score_response as eval_score

    # the example: a true but unrelated step and a right box
    check = solution_checker("arith")
    assert score_response(" 1+1=2. \\boxed{187}", "187").correct  # answer-only, without a checker
    unrelated = score_response(" 1+1=2. \\boxed{187}", "187",
                               checker=lambda t: check(t, "Compute (23+45)*3-17."))
    assert not unrelated.correct
    good = " 23+45=68. 68*3=204. 204-17=187. \\boxed{187}"
    assert arith.check_solution(good, "Compute (23+45)*3-17.")
    assert not arith.check_solution(good.replace("204-17", "204-16"), "Compute (23+45)*3-17.")
    assert not arith.check_solution(" 23+45=68. 68*3=204. \\boxed{187}", "Compute (23+45)*3-17.")
    p = columns.load_split("test", seed=0, n_train=0, n_test=5)[0]
    problem = load_task("columns", "test", n_train=0, n_test=5)[0]
    assert problem.problem == p["problem"]
    assert eval_score(p["solution"], "stop", p["answer"], problem=problem)[0]
    lucky = " 10+10: 0+0=0, 1+1=2, so 20. \\boxed{" + p["answer"] + "}"
    assert eval_score(lucky, "stop", p["answer"])[0]  # answer-only without the problem
    assert not eval_score(lucky, "stop", p["answer"], problem=problem)[0]


def test_a_user_file_named_like_a_task_is_not_held_to_its_check(tmp_path):
    from thr.data.problems import load_problems, load_task
    from thr.eval.evaluate import score_response as eval_score
    from thr.data.tasks import checker_for

    path = tmp_path / "columns.jsonl"
    path.write_text('{"problem": "What is 2+3?", "answer": "5"}\n')
    (mine,) = load_problems(str(path))
    assert checker_for(mine) is None
    assert eval_score("so \\boxed{5}", "stop", "5", problem=mine)[0]
    builtin = load_task("columns", "test", n_train=0, n_test=3)[0]
    assert builtin.meta["builtin_task"] == "columns" and checker_for(builtin) is not None


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="event_weights"):
        columns.ColumnsConfig(event_weights="a,b").validate()
    with pytest.raises(ValueError, match="max_ops"):
        columns.ColumnsConfig(max_ops=5).validate()
    with pytest.raises(ValueError, match="unknown ColumnsConfig"):
        columns.load_split("test", n_tests=3)


def test_same_split_in_another_process_with_another_hash_seed():
    import json
    import os
    import subprocess
    import sys

    code = (
        "import importlib.util, json, sys; spec = importlib.util.spec_from_file_location('columns', sys.argv[1]); "
        "m = importlib.util.module_from_spec(spec); sys.modules['columns'] = m; spec.loader.exec_module(m); "
        "print(json.dumps(m.load_split('test', seed=2, n_test=40, n_train=0)))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "4321"}
    out = subprocess.run([sys.executable, "-c", code, columns.__file__], capture_output=True, text=True, env=env,
                         check=True)
    assert json.loads(out.stdout) == columns.load_split("test", seed=2, n_test=40, n_train=0)


def test_rescore_holds_saved_generations_to_the_task_check(tmp_path):
    """``thr eval --rescore`` without the task's sources still applies the full check, from the
    problem text saved with each generation."""
    import json

    from thr.data.problems import load_task
    from thr.eval.run import rescore_file

    p = load_task("columns", "test", n_train=0, n_test=2)[0]
    lucky = " 10+10: 0+0=0, 1+1=2, so 20. \\boxed{" + p.answer + "}"
    rows = [{"source": "columns", "problem_id": p.id, "mode": "greedy", "sample": 0, "tag": "t", "gold": p.answer,
             "response": text, "finish_reason": "stop", "correct": True, "problem": p.problem,
             "builtin_task": "columns"} for text in (lucky,)]
    rows.append({**rows[0], "mode": "sample", "response": p.meta["solution"], "correct": False})
    path = tmp_path / "generations.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    records = rescore_file(path, [], score_truncated=False)
    assert [r["correct"] for r in records.values()] == [False, True]
