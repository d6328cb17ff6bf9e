"""Generated tasks with exact, verifiable answers (no download needed).

``arith``: multi-step integer arithmetic with a short worked solution ending in ``\\boxed{}``;
the task of the embedded default (``thr train`` with no arguments).
"""

from __future__ import annotations

from thr.tasks.arith import TASK_VERSION, ArithConfig, load_split, make_problem

__all__ = ["TASK_VERSION", "ArithConfig", "load_split", "make_problem"]
