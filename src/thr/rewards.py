"""Verifiable rewards for math responses.

``correctness`` is decided by :func:`thr.verifier.verify` against the gold answer. The reward is
``correct`` or ``incorrect`` plus an optional ``format_bonus`` when the response ends with a
``\\boxed{}`` answer. Truncation rule (``truncated="zero"``, the default): a response that hit
``max_new_tokens`` never finished, so it gets ``incorrect`` and no bonus even when a boxed
answer happens to appear in it; ``truncated="verify"`` scores it like any other response.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_STEP = re.compile(r"(\d+)\s*([+\-*])\s*(\d+)\s*=\s*(\d+)")


@dataclass
class Score:
    """Outcome of one response: its reward and whether it counts as correct (the set P)."""

    reward: float
    correct: bool
    has_answer: bool
    truncated: bool


def arith_steps_valid(text: str) -> bool:
    """True when ``text`` writes at least one step ``a op b = c`` and every step is true and
    starts from the previous step's result (the worked-solution format of ``thr.tasks.arith``)."""
    steps = _STEP.findall(text)
    if not steps:
        return False
    previous = None
    for a, op, b, c in steps:
        x, y, z = int(a), int(b), int(c)
        value = x + y if op == "+" else x - y if op == "-" else x * y
        if value != z or (previous is not None and x != previous):
            return False
        previous = z
    return True


def score_response(
    text: str,
    gold: str,
    *,
    finish_reason: str = "stop",
    correct: float = 1.0,
    incorrect: float = 0.0,
    format_bonus: float = 0.0,
    truncated: str = "zero",
    check_steps: bool = False,
) -> Score:
    """Reward of one response ``text`` against ``gold``; see the module doc for the rules.

    ``check_steps`` (built-in arithmetic task only) also requires :func:`arith_steps_valid`: a
    right final answer reached through a wrong step does not count as correct.
    """
    from thr.verifier import extract_answer, verify

    if truncated not in ("zero", "verify"):
        raise ValueError(f"truncated must be 'zero' or 'verify', got {truncated!r}")
    was_cut = finish_reason == "length"
    if was_cut and truncated == "zero":
        return Score(incorrect, False, False, True)
    has_answer = extract_answer(text) is not None
    ok = bool(has_answer and verify(text, gold)) and (not check_steps or arith_steps_valid(text))
    reward = (correct if ok else incorrect) + (format_bonus if has_answer else 0.0)
    return Score(reward, ok, has_answer, was_cut)
