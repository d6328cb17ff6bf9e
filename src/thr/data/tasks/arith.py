"""Generated multi-step integer arithmetic with exact answers and short worked solutions.

A problem is a chain of operations applied left to right, written with the usual precedence
(parentheses are added where a product follows a sum, so Python's ``eval`` of the expression
gives the answer)::

    problem:  "Compute (23+45)*3-17."
    solution: " 23+45=68. 68*3=204. 204-17=187. \\boxed{187}"
    answer:   "187"

The solution is the text the model writes after the ``plain`` prompt ``"Problem: ...\\nSolution:"``
(hence its leading space); one character is one token for the byte-level tiny tokenizer, so the
default responses stay under ~40 tokens. Difficulty knobs (:class:`ArithConfig`): the number of
operands, the operand range, the operator set, the largest multiplier and the largest
intermediate result. Results never go negative (a subtrahend is at most the running value).

Splits are fixed by the seed and the difficulty: the test split comes from its own random stream
(so changing ``n_train`` does not change it) and the train split skips every test problem, so the
two are disjoint. Everything uses ``random.Random`` with string seeds (SHA-512 based), so splits are
identical across runs, processes and machines.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Literal

from thr.data.tasks import splits

# Bump when the generator or the solution format changes: cached warm starts key on it.
TASK_VERSION = "arith-1"

_OPS = "+-*"
_MAX_TRIES = 64


@dataclass(frozen=True)
class ArithConfig(splits.SplitSizes):
    """Split sizes and difficulty of the arithmetic task.

    Attributes (after ``seed``, ``n_train`` and ``n_test`` of :class:`thr.data.tasks.splits.SplitSizes`):
        min_operands: fewest numbers in a problem (>= 2; each extra number adds one step).
        max_operands: most numbers in a problem.
        min_value: smallest operand of ``+`` and ``-`` (and of the starting number).
        max_value: largest operand of ``+`` and ``-`` (and of the starting number).
        ops: operator set, a non-empty subset of ``"+-*"``.
        max_multiplier: multipliers are drawn from ``2..max_multiplier`` (small on purpose).
        max_result: no intermediate result or answer exceeds this.
    """

    n_test: int = 500
    min_operands: int = 2
    max_operands: int = 3
    min_value: int = 1
    max_value: int = 50
    ops: str = "+-*"
    max_multiplier: int = 9
    max_result: int = 99

    def validate(self) -> ArithConfig:
        """Raise ``ValueError`` on an inconsistent setting; return ``self``."""
        if self.n_train < 0 or self.n_test < 0:
            raise ValueError("n_train and n_test must be >= 0")
        if not 2 <= self.min_operands <= self.max_operands:
            raise ValueError("need 2 <= min_operands <= max_operands")
        if not 0 <= self.min_value <= self.max_value:
            raise ValueError("need 0 <= min_value <= max_value")
        if not self.ops or any(op not in _OPS for op in self.ops):
            raise ValueError(f"ops must be a non-empty subset of {_OPS!r}, got {self.ops!r}")
        if "*" in self.ops and self.max_multiplier < 2:
            raise ValueError("max_multiplier must be >= 2 when '*' is in ops")
        if self.max_result < self.max_value:
            raise ValueError("max_result must be >= max_value")
        return self


def _next_step(rng: random.Random, cfg: ArithConfig, value: int) -> tuple[str, int, int] | None:
    """Draw one operation ``(op, operand, result)`` applicable to ``value``, or None."""
    for _ in range(_MAX_TRIES):
        op = rng.choice(cfg.ops)
        if op == "+":
            b = rng.randint(cfg.min_value, cfg.max_value)
            if value + b <= cfg.max_result:
                return op, b, value + b
        elif op == "-":
            hi = min(cfg.max_value, value)
            if hi >= cfg.min_value:
                b = rng.randint(cfg.min_value, hi)
                return op, b, value - b
        else:
            m = rng.randint(2, cfg.max_multiplier)
            if value * m <= cfg.max_result:
                return op, m, value * m
    return None


def make_problem(rng: random.Random, cfg: ArithConfig) -> dict[str, str]:
    """One random problem: ``{"problem", "answer", "solution"}`` (see the module docstring)."""
    for _ in range(_MAX_TRIES):
        n_operands = rng.randint(cfg.min_operands, cfg.max_operands)
        value = rng.randint(cfg.min_value, cfg.max_value)
        expr, additive, steps = str(value), False, []
        for _ in range(n_operands - 1):
            step = _next_step(rng, cfg, value)
            if step is None:
                break
            op, operand, result = step
            if op == "*" and additive:
                expr = f"({expr})"
            expr = f"{expr}{op}{operand}"
            additive = op in "+-"
            steps.append(f"{value}{op}{operand}={result}.")
            value = result
        else:
            solution = " " + " ".join(steps) + f" \\boxed{{{value}}}"
            return {"problem": f"Compute {expr}.", "answer": str(value), "solution": solution}
    raise ValueError(f"could not generate a problem under {cfg}; loosen max_result or the ranges")


def load_split(split: Literal["train", "test"], seed: int = 0, **cfg_overrides: object) -> list[dict[str, str]]:
    """The ``train`` or ``test`` split as a list of ``{"problem", "answer", "solution"}`` dicts.

    ``cfg_overrides`` are :class:`ArithConfig` fields (``n_train=1000``, ``max_operands=4``...).
    Deterministic: the same arguments give the same list in any process (``thr.data.tasks.splits``).
    """
    return splits.load_split(ArithConfig, make_problem, TASK_VERSION, split, seed, cfg_overrides)


_STEP = re.compile(r"(\d+)\s*([+\-*])\s*(\d+)\s*=\s*(\d+)")
_BOX = re.compile(r"\\boxed\{\s*(-?\d+)\s*\}")


def parse_problem(problem: str) -> tuple[int, list[tuple[str, int]]]:
    """``(first, [(op, operand), ...])`` of ``"Compute (23+45)*3-17."`` (parentheses only restate
    the left-to-right order, so they are skipped)."""
    match = re.fullmatch(r"Compute ([\d+\-*()]+)\.", problem.strip())
    if not match:
        raise ValueError(f"not an arith problem: {problem!r}")
    tokens = re.findall(r"\d+|[+\-*]", match.group(1))
    return int(tokens[0]), [(tokens[i], int(tokens[i + 1])) for i in range(1, len(tokens), 2)]


def check_solution(text: str, problem: str) -> bool:
    """True when ``text`` writes exactly one true step ``a op b = c`` per operation of ``problem``,
    in order, each starting from the previous result (the first from the problem's first number)
    and using the problem's operator and operand, and boxes the last result (once, at the end)."""
    try:
        value, ops = parse_problem(problem)
    except ValueError:
        return False
    steps = _STEP.findall(text)
    boxes = _BOX.findall(text)
    if len(steps) != len(ops) or len(boxes) != 1:
        return False
    for (a, op, b, c), (want_op, operand) in zip(steps, ops):
        result = value + operand if want_op == "+" else value - operand if want_op == "-" else value * operand
        if (int(a), op, int(b), int(c)) != (value, want_op, operand, result):
            return False
        value = result
    return int(boxes[0]) == value and text.rstrip().endswith("}")
