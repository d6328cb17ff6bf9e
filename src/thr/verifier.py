"""Math answer verifier: ``verify(response, gold) -> bool``.

Pipeline for one call (see ``docs/verifier.md`` for the full rules):

1. :func:`extract_answer` pulls the final answer out of the completion (and out of the gold
   when the gold is itself a solution with ``\\boxed{}`` or ``####``).
2. A cheap in-process fast path decides most cases: :func:`normalize_answer` string equality,
   exact rational comparison of plain numbers, element-wise comparison of tuples, intervals,
   sets and comma lists.
3. Anything left goes to ``math_verify`` (LaTeX -> sympy) in a persistent worker *subprocess*
   with a hard wall-clock timeout: a pathological expression kills the worker (it is restarted
   on the next call), never the caller. This works from any thread.

``verify`` never raises: no answer, a truncated answer, a timeout or any error gives False.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import select
import subprocess
import sys
import threading
import time
from typing import Any

from thr._latex_norm import (
    answer_region,
    as_rational,
    extract_from_text,
    normalize_answer,
    normalize_core,
    rationals_match,
    split_assignment,
)

__all__ = ["extract_answer", "normalize_answer", "verify", "verify_batch", "shutdown_worker"]

_WORKER_START_TIMEOUT_S = 120.0


# ----------------------------------------------------------------------------- extraction


def extract_answer(response: str) -> str | None:
    """Final answer of a completion, as the raw substring; None when there is none.

    Order: the last ``\\boxed{...}``/``\\fbox{...}`` (nested braces; ``\\boxed 5``); else the text
    after the last "answer is"/"final answer:"; else GSM8K ``#### N``; else a final line that is
    only a number. A truncated last box (unbalanced braces) gives None. With a think trace, only
    the text after the last ``</think>`` is searched; an unclosed ``<think>`` gives None.
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
    gold = str(gold).strip()
    if not gold:
        return None
    if re.search(r"\\(?:boxed|fbox)\b|####", gold):
        return extract_answer(gold)
    return gold


# ----------------------------------------------------------------------------- fast path

_OPEN_CLOSE = {"(": ")", "[": "]", "\\{": "\\}"}


def _split_top(s: str) -> list[str]:
    """Split on commas at bracket depth 0."""
    parts, depth, cur = [], 0, []
    for c in s:
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        if c == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
    parts.append("".join(cur))
    return parts


def _container(s: str) -> tuple[str, str, list[str]] | None:
    """``(open, close, items)`` when ``s`` is a bracketed comma list; None otherwise."""
    for open_ in ("\\{", "(", "["):
        if s.startswith(open_):
            for close in ("\\}", ")", "]"):
                if s.endswith(close) and len(s) > len(open_) + len(close):
                    inner = s[len(open_) : len(s) - len(close)]
                    depth = 0
                    for c in inner:  # brackets must balance inside, e.g. not "(1)(2)"
                        depth += (c in "([{") - (c in ")]}")
                        if depth < 0:
                            return None
                    if depth != 0:
                        return None
                    return open_, close, _split_top(inner)
    return None


def _fast(gold: str, pred: str) -> bool | None:
    """Decide without sympy when possible: True/False, or None when undecided."""
    if gold == pred:
        return True
    rg, rp = as_rational(gold), as_rational(pred)
    if rg is not None and rp is not None:
        return rationals_match(rg, rp)
    if rg is None and rp is None and _is_plain_text(gold) and _is_plain_text(pred):
        return _text_key(gold) == _text_key(pred)
    return None


def _is_plain_text(s: str) -> bool:
    """A word answer (letters/spaces only, at least 2 letters, no LaTeX)."""
    return bool(re.fullmatch(r"\(?[A-Za-z][A-Za-z ()'-]*", s)) and len(re.sub(r"[^A-Za-z]", "", s)) >= 2


def _text_key(s: str) -> str:
    return re.sub(r"[^a-z]", "", s.lower())


# ----------------------------------------------------------------------------- sympy worker


class _Worker:
    """A persistent ``math_verify`` subprocess speaking JSON lines over pipes."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._buf = b""
        self._lock = threading.Lock()

    def _start(self) -> None:
        src_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ)
        env["PYTHONPATH"] = src_root + os.pathsep + env.get("PYTHONPATH", "")
        env.setdefault("OMP_NUM_THREADS", "1")
        self._proc = subprocess.Popen(
            [sys.executable, "-c", "from thr.verifier import _worker_main; _worker_main()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        self._buf = b""
        if self._readline(_WORKER_START_TIMEOUT_S) != {"ready": True}:
            self.close()
            raise RuntimeError("verifier worker failed to start")

    def _readline(self, timeout_s: float) -> Any:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def compare(self, gold: str, pred: str, timeout_s: float) -> bool:
        """math_verify equivalence in the worker; False on timeout (the worker is then killed)."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._start()
            assert self._proc is not None and self._proc.stdin is not None
            msg = json.dumps({"g": gold, "p": pred, "t": timeout_s}) + "\n"
            try:
                self._proc.stdin.write(msg.encode())
                self._proc.stdin.flush()
            except OSError:
                self.close()
                return False
            reply = self._readline(timeout_s + 0.5)
            if not isinstance(reply, dict) or "r" not in reply:
                self.close()
                return False
            return bool(reply["r"])

    def close(self) -> None:
        """Kill the worker process (if any)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                proc.kill()
                proc.wait(timeout=5)
            except Exception:  # noqa: BLE001 - best effort cleanup
                pass


    def forget(self) -> None:
        """After ``fork()`` in the child: drop the parent's worker handle without killing it."""
        self._proc = None
        self._buf = b""
        self._lock = threading.Lock()


_WORKER = _Worker()
atexit.register(_WORKER.close)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_WORKER.forget)


def shutdown_worker() -> None:
    """Stop the sympy worker subprocess (it restarts on demand)."""
    _WORKER.close()


def _mv_compare(gold: str, pred: str) -> bool:
    """Run inside the worker: parse both with math_verify and compare."""
    from math_verify import LatexExtractionConfig, parse
    from math_verify import verify as mv_verify

    cfg = [LatexExtractionConfig(boxed_match_priority=0)]
    g = parse("\\boxed{" + gold + "}", extraction_config=cfg, parsing_timeout=None)
    p = parse("\\boxed{" + pred + "}", extraction_config=cfg, parsing_timeout=None)
    if not g or not p:
        return False
    return bool(mv_verify(g, p, timeout_seconds=None))


class _Alarm(Exception):
    """Raised inside the worker when a comparison runs past its budget."""


def _worker_main() -> None:
    """Entry point of the worker subprocess: answer JSON-line requests until stdin closes."""
    import logging
    import signal

    logging.disable(logging.CRITICAL)
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # stray prints must not corrupt the protocol

    def _on_alarm(signum: int, frame: Any) -> None:
        raise _Alarm()

    signal.signal(signal.SIGALRM, _on_alarm)
    _mv_compare("1", "1")  # import and warm up before announcing readiness
    out.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        req = json.loads(line)
        result = False
        try:
            signal.setitimer(signal.ITIMER_REAL, max(0.05, 0.9 * float(req["t"])))
            result = _mv_compare(req["g"], req["p"])
        except BaseException:  # noqa: BLE001 - timeout or sympy failure: not equal
            result = False
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        out.write(json.dumps({"r": bool(result)}) + "\n")


# ----------------------------------------------------------------------------- comparison


def _equivalent(gold: str, pred: str, deadline: float, depth: int = 0) -> bool:
    """Normalised answers equal? Fast path, then containers element-wise, then sympy."""
    if depth > 0:
        gold, pred = normalize_core(gold), normalize_core(pred)
    lhs_g, gold = split_assignment(gold)
    lhs_p, pred = split_assignment(pred)
    if lhs_g is not None and lhs_p is not None and lhs_g != lhs_p:
        return False
    if not gold or not pred:
        return False
    fast = _fast(gold, pred)
    if fast is not None:
        return fast
    if depth < 3:
        cg, cp = _container(gold), _container(pred)
        if cg is not None and cp is not None:
            return _containers_equal(cg, cp, deadline, depth)
        if cg is not None or cp is not None:
            return False
        lg, lp = _split_top(gold), _split_top(pred)
        if len(lg) > 1 or len(lp) > 1:
            return _unordered_equal(lg, lp, deadline, depth)
    left = deadline - time.monotonic()
    if left <= 0.05:
        return False
    return _WORKER.compare(gold, pred, left)


def _containers_equal(cg: tuple[str, str, list[str]], cp: tuple[str, str, list[str]], deadline: float, depth: int) -> bool:
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
        g, p = normalize_core(gold_raw), normalize_core(pred_raw)
        if not g or not p:
            return False
        return _equivalent(g, p, deadline)
    except Exception:  # noqa: BLE001 - a reward function must not crash training
        return False


def verify_batch(responses: list[str], golds: list[str], *, timeout_s: float = 2.0) -> list[bool]:
    """:func:`verify` over aligned lists (``len(responses) == len(golds)``)."""
    if len(responses) != len(golds):
        raise ValueError(f"{len(responses)} responses but {len(golds)} golds")
    return [verify(r, g, timeout_s=timeout_s) for r, g in zip(responses, golds)]
