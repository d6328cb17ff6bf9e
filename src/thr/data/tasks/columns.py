"""Column arithmetic with a teacher's habits: the embedded default's task.

A problem is a chain of two-digit additions and subtractions; the worked solution does each one
digit by digit, the way it is taught at school, writing every carry and borrow::

    problem:  "Compute 47+38-29."
    solution: " 47+38: 7+8=15 carry 1, 4+3+1=8, so 85. 85-29: 15-9=6 borrow 1, 8-1-2=5, so 56. \\boxed{56}"
    answer:   "56"

Every intermediate value stays in 10..99 (two digits), on the correct path and on every path of
the teacher below. One byte is one token for the tiny tokenizer: with three operations solutions are
95-131 tokens.

**The teacher.** The warm start imitates a teacher that mixes the correct procedure with two
systematic, well-known habits of learners, each at its own rate (:func:`teacher_solution`):

- *dropped carry* (``carry_slip``): ``47+38: 7+8=15, 4+3=7, so 75.``
- *smaller from larger* (``borrow_slip``): ``85-29: 9-5=4, 8-2=6, so 64.``

Each carry or borrow the teacher meets is one decision, taken independently; after a slip the
teacher goes on, correctly or not, from the wrong value. A model that imitates the teacher to a
plateau samples right solutions with probability ``(1-carry_slip)^c (1-borrow_slip)^b`` for a
problem with ``c`` carries and ``b`` borrows, and when a slip rate is above one half its greedy
decoding slips at every such step. So the base model's quality is set by the teacher's rates and
the mix of problems, not by where a training run happens to stop, and RL has a clear job: select
the right habit, which the policy already samples some of the time.

**The mix of problems.** ``event_weights[k]`` is the share of problems with ``k`` carries and
borrows on the correct path (the rest of the weight is renormalised over what ``max_ops`` admits);
problems without any are the ones a slipping greedy policy still solves.

**Correct means correct.** :func:`check_solution` accepts a response only when it is the problem's
worked solution: each step starts from the previous result (the first from the problem's first
number), uses the problem's next operator and number, writes every digit fact, carry and borrow
right, and the box holds the final result. The trainer's reward and every held-out accuracy
(``thr train``, ``thr eval``) use this same check for problems of this task.

Splits are fixed by the seed and the difficulty (``random.Random`` with string seeds, identical on
every machine); the test split comes from its own stream and the train split skips its problems.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from typing import Literal

from thr.data.tasks import splits

# Bump when the generator or the solution format changes: cached warm starts key on it.
TASK_VERSION = "columns-1"

_MAX_TRIES = 400
_LO, _HI = 10, 99
_PROBLEM = re.compile(r"^Compute (\d+(?:[+-]\d+)+)\.$")


@dataclass(frozen=True)
class ColumnsConfig(splits.SplitSizes):
    """Split sizes and difficulty of the column-arithmetic task.

    Attributes (after ``seed``, ``n_train`` and ``n_test`` of :class:`thr.data.tasks.splits.SplitSizes`):
        min_ops: fewest operations (additions or subtractions) in a problem.
        max_ops: most operations in a problem (at most 4).
        event_weights: relative share of problems with 0, 1, 2, ... carries and borrows on the
            correct path (comma-separated numbers; entries beyond ``max_ops`` are ignored).
    """

    min_ops: int = 3
    max_ops: int = 3
    event_weights: str = "0.35,0.15,0.2,0.3"

    def weights(self) -> list[float]:
        """``event_weights`` as floats, cut to ``max_ops + 1`` entries."""
        return [float(w) for w in self.event_weights.split(",")][: self.max_ops + 1]

    def validate(self) -> ColumnsConfig:
        """Raise ``ValueError`` on an inconsistent setting; return ``self``."""
        if self.n_train < 0 or self.n_test < 0:
            raise ValueError("n_train and n_test must be >= 0")
        if not 1 <= self.min_ops <= self.max_ops <= 4:
            raise ValueError(f"need 1 <= min_ops <= max_ops <= 4, got {self.min_ops}, {self.max_ops}")
        try:
            weights = self.weights()
        except ValueError:
            raise ValueError(f"event_weights must be comma-separated numbers, got {self.event_weights!r}") from None
        if any(w < 0 or not math.isfinite(w) for w in weights) or sum(weights) <= 0:
            raise ValueError(f"event_weights must be >= 0 with a positive sum, got {self.event_weights!r}")
        return self


# ----------------------------------------------------------------------------- one step


def step_text(a: int, op: str, b: int, *, slip: bool = False) -> tuple[str, int]:
    """``(text, result)`` of the column computation ``a op b``, with the teacher's habit when
    ``slip`` (ignored when the step has no carry or borrow)."""
    a1, a10, b1, b10 = a % 10, a // 10, b % 10, b // 10
    if op == "+":
        units = a1 + b1
        if units < 10:
            return f"{a}+{b}: {a1}+{b1}={units}, {a10}+{b10}={a10 + b10}, so {a + b}.", a + b
        if slip:  # dropped carry
            wrong = 10 * (a10 + b10) + units - 10
            return f"{a}+{b}: {a1}+{b1}={units}, {a10}+{b10}={a10 + b10}, so {wrong}.", wrong
        return f"{a}+{b}: {a1}+{b1}={units} carry 1, {a10}+{b10}+1={a10 + b10 + 1}, so {a + b}.", a + b
    if a1 >= b1:
        return f"{a}-{b}: {a1}-{b1}={a1 - b1}, {a10}-{b10}={a10 - b10}, so {a - b}.", a - b
    if slip:  # smaller digit from the larger one, no borrow
        wrong = 10 * (a10 - b10) + b1 - a1
        return f"{a}-{b}: {b1}-{a1}={b1 - a1}, {a10}-{b10}={a10 - b10}, so {wrong}.", wrong
    return f"{a}-{b}: {a1 + 10}-{b1}={a1 + 10 - b1} borrow 1, {a10}-1-{b10}={a10 - 1 - b10}, so {a - b}.", a - b


def is_event(a: int, op: str, b: int) -> bool:
    """True when ``a op b`` needs a carry (``+``) or a borrow (``-``) in the units column."""
    return (a % 10 + b % 10 >= 10) if op == "+" else (a % 10 < b % 10)


def _paths_in_range(value: int, steps: list[tuple[str, int]]) -> bool:
    """True when every value on every path of the teacher (slip or not at each event) is in 10..99."""
    if not steps:
        return True
    (op, b), rest = steps[0], steps[1:]
    outcomes = [False, True] if is_event(value, op, b) else [False]
    for slip in outcomes:
        _, result = step_text(value, op, b, slip=slip)
        if not _LO <= result <= _HI or not _paths_in_range(result, rest):
            return False
    return True


# ----------------------------------------------------------------------------- problems


def _draw_step(rng: random.Random, a: int, op: str, event: bool) -> int | None:
    """A second operand ``b`` (10..99) for ``a op b`` with the wanted event flag, or None."""
    candidates = [
        b for b in range(_LO, _HI + 1)
        if is_event(a, op, b) == event and _LO <= (a + b if op == "+" else a - b) <= _HI
    ]
    return rng.choice(candidates) if candidates else None


def solve(first: int, steps: list[tuple[str, int]]) -> tuple[str, int]:
    """``(solution, answer)``: the worked solution of ``first (op b)...`` and its result."""
    value, texts = first, []
    for op, b in steps:
        text, value = step_text(value, op, b)
        texts.append(text)
    return " " + " ".join(texts) + f" \\boxed{{{value}}}", value


def make_problem(rng: random.Random, cfg: ColumnsConfig) -> dict[str, object]:
    """One random problem: ``{"problem", "answer", "solution", "events"}``.

    The number of operations and of events is drawn first, then operands are drawn until every
    path of the teacher stays in range, so ``event_weights`` is the events' actual distribution.
    """
    weights = cfg.weights()
    while True:
        n_ops = rng.randint(cfg.min_ops, cfg.max_ops)
        allowed = weights[: n_ops + 1]
        if sum(allowed) > 0:
            break
    n_events = rng.choices(range(len(allowed)), weights=allowed)[0]
    for _ in range(_MAX_TRIES):
        flags = [True] * n_events + [False] * (n_ops - n_events)
        rng.shuffle(flags)
        first = rng.randint(_LO, _HI)
        value, steps = first, []
        for event in flags:
            op = rng.choice("+-")
            b = _draw_step(rng, value, op, event)
            if b is None:
                break
            steps.append((op, b))
            value = value + b if op == "+" else value - b
        else:
            if _paths_in_range(first, steps):
                solution, answer = solve(first, steps)
                expr = str(first) + "".join(f"{op}{b}" for op, b in steps)
                return {"problem": f"Compute {expr}.", "answer": str(answer), "solution": solution, "events": n_events}
    raise ValueError(f"could not generate a problem with {n_events} events in {n_ops} operations; change event_weights")


def parse_problem(problem: str) -> tuple[int, list[tuple[str, int]]]:
    """``(first, [(op, b), ...])`` of a problem text ``"Compute 47+38-29."``."""
    match = _PROBLEM.match(problem.strip())
    if not match:
        raise ValueError(f"not a column-arithmetic problem: {problem!r}")
    tokens = re.findall(r"[+-]|\d+", match.group(1))
    return int(tokens[0]), [(tokens[i], int(tokens[i + 1])) for i in range(1, len(tokens), 2)]


def check_solution(text: str, problem: str) -> bool:
    """True when ``text`` is the worked solution of ``problem`` with every step right (see the
    module doc); whitespace differences are ignored, anything else is not."""
    try:
        first, steps = parse_problem(problem)
    except ValueError:
        return False
    return " ".join(text.split()) == " ".join(solve(first, steps)[0].split())


# ----------------------------------------------------------------------------- the teacher


def teacher_solution(problem: str, rng: random.Random, *, carry_slip: float, borrow_slip: float) -> dict[str, object]:
    """One solution of ``problem`` written by the teacher (see the module doc).

    Returns ``{"solution", "correct", "decisions"}``: ``decisions`` lists the slip probability of
    each carry or borrow met on the way (their binary entropies are the loss no imitation can beat).
    """
    value, steps = parse_problem(problem)
    texts, decisions = [], []
    for op, b in steps:
        slip = False
        if is_event(value, op, b):
            rate = carry_slip if op == "+" else borrow_slip
            decisions.append(rate)
            slip = rng.random() < rate
        text, value = step_text(value, op, b, slip=slip)
        texts.append(text)
    solution = " " + " ".join(texts) + f" \\boxed{{{value}}}"
    return {"solution": solution, "correct": check_solution(solution, problem), "decisions": decisions}


def binary_entropy(p: float) -> float:
    """Entropy in nats of a coin with probability ``p``."""
    return 0.0 if p <= 0.0 or p >= 1.0 else -(p * math.log(p) + (1 - p) * math.log(1 - p))


def teacher_success(problem: str, *, carry_slip: float, borrow_slip: float) -> float:
    """Probability that the teacher (and a perfect imitation of it) writes a right solution."""
    value, steps = parse_problem(problem)
    prob = 1.0
    for op, b in steps:
        if is_event(value, op, b):
            prob *= 1.0 - (carry_slip if op == "+" else borrow_slip)
        value = value + b if op == "+" else value - b
    return prob


# ----------------------------------------------------------------------------- splits


def load_split(split: Literal["train", "test"], seed: int = 0, **cfg_overrides: object) -> list[dict[str, object]]:
    """The ``train`` or ``test`` split as a list of ``{"problem", "answer", "solution", "events"}``.

    ``cfg_overrides`` are :class:`ColumnsConfig` fields. Deterministic on every machine; a longer
    train split extends a shorter one (``thr.data.tasks.splits``).
    """
    return splits.load_split(ColumnsConfig, make_problem, TASK_VERSION, split, seed, cfg_overrides)
