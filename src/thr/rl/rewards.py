"""Verifiable rewards for math responses.

``correctness`` is decided by :func:`thr.verifier.verify` against the gold answer. The reward is
``correct`` or ``incorrect`` plus an optional ``format_bonus`` when the response ends with a
``\\boxed{}`` answer. Truncation rule (``truncated="zero"``, the default): a response that hit
``max_new_tokens`` never finished, so it gets ``incorrect`` and no bonus even when a boxed
answer happens to appear in it; ``truncated="verify"`` scores it like any other response.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Score:
    """Outcome of one response: its reward and whether it counts as correct (the set P)."""

    reward: float
    correct: bool
    has_answer: bool
    truncated: bool


def score_response(
    text: str,
    gold: str,
    *,
    finish_reason: str = "stop",
    correct: float = 1.0,
    incorrect: float = 0.0,
    format_bonus: float = 0.0,
    truncated: str = "zero",
    checker: Callable[[str], bool] | None = None,
) -> Score:
    """Reward of one response ``text`` against ``gold``; see the module doc for the rules.

    ``checker(text)``, when given, must accept the response too: for the built-in tasks it is the
    task's full check of the worked solution bound to the problem (``thr.data.tasks.checker_for``),
    so a right boxed number reached through a wrong or unrelated step does not count as correct.
    """
    from thr.verifier import extract_answer, verify

    if truncated not in ("zero", "verify"):
        raise ValueError(f"truncated must be 'zero' or 'verify', got {truncated!r}")
    was_cut = finish_reason == "length"
    if was_cut and truncated == "zero":
        return Score(incorrect, False, False, True)
    has_answer = extract_answer(text) is not None
    ok = bool(has_answer and verify(text, gold)) and (checker is None or checker(text))
    reward = (correct if ok else incorrect) + (format_bonus if has_answer else 0.0)
    return Score(reward, ok, has_answer, was_cut)
