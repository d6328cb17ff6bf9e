"""Math answer verifier: ``verify(response, gold) -> bool``.

Pipeline for one call (see ``docs/verifier.md`` for the full rules):

1. :func:`extract_answer` pulls the final answer out of the completion (and out of the gold
   when the gold is itself a solution with ``\\boxed{}`` or ``####``).
   Units written after a number on both sides must agree (``12 cm`` is not ``12 m``).
2. A cheap in-process fast path decides most cases: :func:`normalize_answer` string equality,
   exact rational comparison of plain numbers, element-wise comparison of tuples, intervals,
   sets and comma lists.
3. Anything left goes to ``math_verify`` (LaTeX -> sympy) in a persistent worker *subprocess*
   with a hard wall-clock timeout: a pathological expression kills the worker (it is restarted
   on the next call), never the caller. This works from any thread.

``verify`` never raises: no answer, a truncated answer, a timeout or any error gives False.
"""

from __future__ import annotations

import re
import time
from typing import Any

from thr.verifier.extract import (
    all_boxes,
    answer_region,
    extract_from_text,
    repair_escapes,
)
from thr.verifier.normalize import (
    as_rational,
    base_number,
    bracketed,
    is_word_answer,
    normalize_answer,
    normalize_core,
    rationals_match,
    split_assignment,
    split_top,
    unit_of,
    word_key,
)
from thr.verifier.worker import _POOL, shutdown_worker, warmup

__all__ = ["extract_answer", "normalize_answer", "shutdown_worker", "verify", "verify_batch", "warmup"]

# ----------------------------------------------------------------------------- extraction


def extract_answer(response: str) -> str | None:
    """Final answer of a completion, as text (a substring of it, several boxes joined with
    ``", "`` or, as alternatives, ``" or "``, or the value side of an equation); None when
    there is none.

    Precedence (the first that applies; ``docs/verifier.md`` has the details): the last
    ``\\boxed{...}``/``\\fbox{...}``, merged with the boxes just before it when only separators
    join them (``x=\\boxed{2}`` or ``x=\\boxed{3}`` -> ``2 or 3``); else the answer after the last
    "final answer is"/"the answer is"/"answer:" phrase or "Final Answer" heading; else GSM8K
    ``#### N``; else the last display math (``\\[..\\]``, ``$$..$$``) at the end; else the final
    line when it is only an answer, holds its last inline math, or states a number
    (``So the total is 36.``); a one-line response that is just a formula is its own answer.
    A truncated last box gives None, and so does a text that ends on ``or``/``and`` (cut off
    before the rest of its answer). With a think trace, only the text after the last
    ``</think>`` is searched; an unclosed ``<think>`` (also one after the last ``</think>``)
    gives None.
    """
    if not isinstance(response, str) or not response.strip():
        return None
    region = answer_region(response)
    if region is None:
        return None
    return extract_from_text(region)


def _gold_answer(gold: Any) -> str | None:
    """The gold answer string: a bare answer, or extracted when the gold is a full solution."""
    if isinstance(gold, (list, tuple)):
        parts = [str(g).strip() for g in gold if str(g).strip()]
        return ", ".join(parts) if parts else None
    if gold is None:
        return None
    gold = repair_escapes(str(gold)).strip()
    if not gold:
        return None
    boxed = re.search(r"\\(?:boxed|fbox)\b|####", gold) is not None
    if not boxed and len(gold) > 60 and re.search(r"final\s+answer", gold, re.IGNORECASE):
        return extract_answer(gold)  # a worked solution ending "The final answer is $X$."
    if boxed:
        answer = extract_answer(gold)
        region = answer_region(gold)
        short = region is not None and len(region) <= 200 and "\n" not in region.strip()
        boxes = all_boxes(region, max_words_between=3) if answer is not None and short else []
        if len(set(boxes)) > 1 and not _merges_all(answer, boxes):
            # a short reference whose boxes are joined by a few words ("\\boxed{1} papers and
            # \\boxed{2} bins", not "\\boxed{1}. No: \\boxed{2}") has a several-part answer: all
            # of them, never just the last (a full solution that repeats its answer in several
            # boxes keeps the last-box rule); boxes merged by extraction keep their "or" and
            # their variables ("$x=\\boxed{2}$ or $x=\\boxed{3}$", "$a=\\boxed{1}$, $b=\\boxed{2}$")
            return ", ".join(dict.fromkeys(boxes))
        return answer
    return gold


def _merges_all(answer: str, boxes: list[str]) -> bool:
    """Whether the extracted ``answer`` is all ``boxes`` merged (in order, each once), not the
    last box alone."""
    if answer == boxes[-1]:
        return False
    pos = 0
    for b in boxes:
        pos = answer.find(b, pos)
        if pos < 0:
            return False
        pos += len(b)
    return True


# ----------------------------------------------------------------------------- fast path


def _fast(gold: str, pred: str) -> bool | None:
    """Decide without sympy when possible: True/False, or None when undecided."""
    if gold == pred:
        return True
    bg, bp = base_number(gold), base_number(pred)
    if bg is not None or bp is not None:
        # math_verify drops base subscripts (2516_8 -> 2516): compare digits and base exactly
        return bg == bp
    rg, rp = as_rational(gold), as_rational(pred)
    if rg is not None and rp is not None:
        return rationals_match(rg, rp)
    if rg is None and rp is None and is_word_answer(gold) and is_word_answer(pred):
        return word_key(gold) == word_key(pred)
    return None


def _decimal_comma_pair(a: str, b: str, a_raw: str) -> bool:
    """``a`` is ``b`` with its decimal point written as a comma (``1,22`` / ``1.22``). Only one
    comma, not a thousands pattern (``1,000`` is 1000, not 1.0; see ``_THOUSANDS_RE``), only
    for whole answers (inside a tuple or list the comma separates items), and only for a comma
    written between the digits in ``a_raw``, the answer as extracted: not one made by
    normalisation (``2 or 1``, ``2;1``, ``2,\\quad 1``, ``2,\\;1``, ``1{,}5`` are no decimals)."""
    return (
        re.fullmatch(r"-?\d+,\d+", a) is not None
        and re.fullmatch(r"-?\d+\.\d+", b) is not None
        and a.replace(",", ".") == b
        and re.search(r"(?<![\d,.])" + re.escape(a) + r"(?![\d,.])", a_raw) is not None
    )


# ----------------------------------------------------------------------------- comparison


def _equivalent(gold: str, pred: str, deadline: float, depth: int = 0, unordered: bool = False) -> bool:
    """Normalised answers equal? Fast path, then containers element-wise, then sympy. Two bare
    lists are compared item by item in order, or as multisets when ``unordered`` (the gold
    declares its items alternatives, see :func:`_declares_unordered`)."""
    if depth > 0:
        gold, pred = normalize_core(gold), normalize_core(pred)
    lhs_g, rhs_g = split_assignment(gold)
    lhs_p, rhs_p = split_assignment(pred)
    if lhs_g is not None and lhs_p is not None and lhs_g != lhs_p:
        return False
    if (lhs_g is None and "=" in gold) or (lhs_p is None and "=" in pred):
        pass  # one side is a general equation: compare whole equations (e.g. y=... vs 2x+4y=3)
    else:
        gold, pred = rhs_g, rhs_p
    if not gold or not pred:
        return False
    fast = _fast(gold, pred)
    if fast is not None:
        return fast
    if depth < 3:
        cg, cp = bracketed(gold), bracketed(pred)
        if cg is not None and cp is not None:
            return _containers_equal(cg, cp, deadline, depth)
        lg, lp = split_top(gold), split_top(pred)
        if cg is not None or cp is not None:
            # a set written with braces equals the same bare comma list (a gold set in any
            # order; a response's set only as the gold list is compared: it cannot unlock the
            # order); tuples/intervals never equal a bare list
            if cg is not None and cg[0] == "\\{" and len(lp) > 1:
                return _unordered_equal(cg[2], lp, deadline, depth)
            if cp is not None and cp[0] == "\\{" and len(lg) > 1:
                return _lists_equal(lg, cp[2], deadline, depth, unordered)
            if len(lg) > 1 or len(lp) > 1:
                return False
            # one bracketed, one single item: leave it to sympy (e.g. "(1,2)" vs "1<x<2")
        elif len(lg) > 1 or len(lp) > 1:
            return _lists_equal(lg, lp, deadline, depth, unordered)
    left = deadline - time.monotonic()
    if left <= 0.05:
        return False
    return _POOL.compare(gold, pred, left)


def _lists_equal(lg: list[str], lp: list[str], deadline: float, depth: int, unordered: bool) -> bool:
    """Two bare lists (gold ``lg``): item by item in order, as multisets when ``unordered`` or
    when both are lists of assignments (matched by variable); written names are kept
    (:func:`_names_kept`)."""
    if not _names_kept(lg, lp, unordered):
        return False
    if not (unordered or (_all_assigned(lg) and _all_assigned(lp))):
        # bare lists are ordered (the MATH grader compares them as written): "4, 10, -2"
        # is not "10, 4, -2" unless the gold says the order does not matter
        return len(lg) == len(lp) and all(_equivalent(a, b, deadline, depth + 1) for a, b in zip(lg, lp))
    if len(set(lg)) == len(lg) and all(bracketed(q) is not None for q in lp):
        lp = list(dict.fromkeys(lp))  # a solution tuple listed twice is still one solution
    return _unordered_equal(lg, lp, deadline, depth)


_OR_RE = re.compile(r"\bor\b|\\(?:lor|vee)(?![a-zA-Z])")
_ALTERNATIVES_RE = re.compile(r"\bor\b|\\(?:lor|vee|pm|mp)(?![a-zA-Z])|±|∓")


def _all_assigned(items: list[str]) -> bool:
    """Every item is an assignment (``x=1``, ``y=2``): matched by variable, order is moot."""
    return all(split_assignment(q)[0] is not None for q in items)


def _names(items: list[str]) -> set[str | None]:
    """The variables the items assign (None for an item that is no assignment)."""
    return {split_assignment(q)[0] for q in items}


def _names_kept(lg: list[str], lp: list[str], unordered: bool) -> bool:
    """Two lists (gold ``lg``) may be compared item by item. A response that names no variable
    is read by position, like any bare list (``2, 3`` vs ``x=2, y=3``). Names the response writes
    may be dropped only while a single variable is in play (``x=1, x=2`` vs ``1, 2``) or when the
    gold is a set of unnamed alternatives (``\\pm 3`` vs ``x_1 = 3, x_2 = -3``); otherwise
    (``b=1, a=2`` vs ``1, 2``, ``x = 2, 3`` vs ``x=2, y=3``) every item on both sides must name its
    variable, and the names are matched."""
    gold_names, pred_names = _names(lg), _names(lp)
    if pred_names == {None} or (unordered and gold_names == {None}):
        return True
    names = gold_names | pred_names
    return len(names - {None}) <= 1 or None not in names


def _disjunction(raw: str, norm: str) -> bool:
    """Assignments to different variables joined by ``or`` (``x=3 \\text{ or } y=1``): one of
    them holds, which is not the answer ``x=3, y=1`` (both hold)."""
    return _OR_RE.search(raw) is not None and len(_names(split_top(norm)) - {None}) > 1


_OR_SPLIT_RE = re.compile(r"\\text\{\s*or\s*\}|\\(?:lor|vee)(?![a-zA-Z])|\bor\b")


def _or_groups(raw: str) -> list[str]:
    """The alternatives of a disjunction, each kept whole (``x=1, y=2 or x=2, y=1`` -> two
    pairs, not four values)."""
    return [q.strip() for q in _OR_SPLIT_RE.split(raw) if q.strip()]


def _declares_unordered(raw: str, norm: str) -> bool:
    """Whether a gold answer (as extracted, before normalisation; ``norm`` is ``raw``
    normalised) says its items are alternatives, whose order does not matter: joined by
    ``or``/``\\lor`` (several boxes or spans joined so are extracted with ``or``), written with
    ``\\pm``, all assigned to one variable (``x=1, x=-2``), or one variable given several values
    (``n = 1, -2``). A set ``\\{...\\}`` says so too (handled with the brackets). Only the gold
    is asked: a response cannot make an ordered gold unordered by writing ``or``. A bare list of
    two or more tuples (``(1,2), (3,4)``) is read as a solution set ("all pairs such that"), the
    way MATH-style golds write one; the cost, accepted and documented, is that points asked for in
    turn (``A, B``) are also accepted in the other order."""
    if _ALTERNATIVES_RE.search(raw):
        return True
    items = split_top(norm)
    if len(items) > 1 and all((b := bracketed(q)) is not None and b[:2] == ("(", ")") for q in items):
        return True  # a list of tuples: a solution set
    lhs, rhs = split_assignment(norm)
    if lhs is not None and not lhs.startswith("(") and len(split_top(rhs)) > 1:
        return True  # "n = 1, -2": one variable, several values
    names = _names(split_top(norm))
    return len(split_top(norm)) > 1 and len(names) == 1 and None not in names  # "x=1, x=-2"


def _containers_equal(
    cg: tuple[str, str, list[str]], cp: tuple[str, str, list[str]], deadline: float, depth: int
) -> bool:
    """Tuples/intervals: same brackets, element-wise in order; sets ``\\{\\}``: any order."""
    (go, gc, gi), (po, pc, pi) = cg, cp
    if (go, gc) != (po, pc) or len(gi) != len(pi):
        return False
    if go == "\\{":
        return _unordered_equal(gi, pi, deadline, depth)
    return all(_equivalent(a, b, deadline, depth + 1) for a, b in zip(gi, pi))


def _unordered_equal(ga: list[str], pa: list[str], deadline: float, depth: int) -> bool:
    """Multiset equality of two item lists under :func:`_equivalent` (greedy matching)."""
    if len(ga) != len(pa):
        return False
    left = list(pa)
    for a in ga:
        for j, b in enumerate(left):
            if _equivalent(a, b, deadline, depth + 1):
                del left[j]
                break
        else:
            return False
    return True


def verify(response: str, gold: str, *, timeout_s: float = 2.0) -> bool:
    """Whether the final answer of ``response`` is mathematically equal to ``gold``.

    ``gold`` may be a bare answer (``"\\frac{1}{2}"``, ``"033"``, ``5``, ``"x=3"``) or a full
    solution holding ``\\boxed{}``/``####``. Returns False, never raises, when either side has no
    answer, on timeout (``timeout_s`` wall-clock seconds for the sympy stage) or on any error.
    """
    try:
        deadline = time.monotonic() + timeout_s
        pred_raw = extract_answer(response)
        gold_raw = _gold_answer(gold)
        if not pred_raw or not gold_raw:
            return False
        ug, up = unit_of(gold_raw), unit_of(pred_raw)
        if ug is not None and up is not None and ug != up:
            return False  # same number, different unit: 5 cm is not 5 m
        g, p = normalize_core(gold_raw), normalize_core(pred_raw)
        if not g or not p:
            return False
        if _decimal_comma_pair(p, g, pred_raw):  # never the other way: a gold "-2,1" is a list
            return True  # "1000,99" is 1000.99 ("1{,}5" is a grouping, "3, 75" a list)
        disjunction = _disjunction(gold_raw, g)
        if disjunction != _disjunction(pred_raw, p):
            return False  # "x=3 or y=1" is not "x=3, y=1"
        if disjunction:  # alternatives of several variables each: compared whole, in any order
            return _unordered_equal(_or_groups(gold_raw), _or_groups(pred_raw), deadline, 0)
        unordered = "," in g and _declares_unordered(gold_raw, g)
        return _equivalent(g, p, deadline, unordered=unordered)
    except Exception:  # noqa: BLE001 - a reward function must not crash training
        return False


def verify_batch(
    responses: list[str], golds: list[str], *, timeout_s: float = 2.0, threads: int | None = None
) -> list[bool]:
    """:func:`verify` over aligned lists (``len(responses) == len(golds)``).

    With ``threads > 1`` (default: the worker cap, ``THR_VERIFY_WORKERS`` or ``min(4, CPUs)``)
    the calls run on a thread pool, so comparisons that need sympy spread over several worker
    processes; results keep the input order.
    """
    if len(responses) != len(golds):
        raise ValueError(f"{len(responses)} responses but {len(golds)} golds")
    n_threads = _POOL.max_workers if threads is None else max(1, threads)
    if n_threads == 1 or len(responses) < 2:
        return [verify(r, g, timeout_s=timeout_s) for r, g in zip(responses, golds)]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=n_threads) as ex:
        return list(ex.map(lambda rg: verify(rg[0], rg[1], timeout_s=timeout_s), zip(responses, golds)))
