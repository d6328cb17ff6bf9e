"""Generated tasks with exact, verifiable answers (no download needed).

- ``columns``: two-digit additions and subtractions worked digit by digit (95-131 tokens), taught
  by a teacher that mixes the right procedure with two learners' habits; the task of the embedded
  default (``thr train`` with no arguments). See :mod:`thr.data.tasks.columns`.
- ``arith``: multi-step integer arithmetic with a short worked solution (the earlier default).

Each task module has ``load_split(split, seed, **config)`` and ``check_solution(text, problem)``:
the full check of a worked solution that the reward and every held-out accuracy use.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from thr.data.tasks import arith, columns

TASKS = {"columns": columns, "arith": arith}


def solution_checker(source: str) -> Callable[[str, str], bool] | None:
    """``check_solution(text, problem)`` of the built-in task named ``source``, else None."""
    module = TASKS.get(source)
    return module.check_solution if module is not None else None


def checker_for(problem: Any) -> Callable[[str], bool] | None:
    """``check(text)`` for a ``thr.data.problems.Problem`` of a built-in task (loaded by
    ``thr.data.problems.load_task``, which tags it), else None. A user file is never held to a task's check,
    whatever its name."""
    check = solution_checker(getattr(problem, "meta", {}).get("builtin_task", ""))
    return None if check is None else functools.partial(check, problem=problem.problem)


__all__ = ["TASKS", "arith", "checker_for", "columns", "solution_checker"]
