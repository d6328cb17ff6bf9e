"""The sympy side of :mod:`thr.verifier`: a pool of persistent ``math_verify`` worker
subprocesses (JSON lines over pipes, hard wall-clock timeouts) and the worker's own code.

Split out of ``thr.verifier`` so that the worker process imports only this module (it registers ``thr`` as a bare package, so ``thr/__init__.py``, which
imports torch, is not run).
"""

from __future__ import annotations

import atexit
import cmath
import contextlib
import json
import os
import re
import select
import subprocess
import sys
import threading
import time
from typing import Any

_WORKER_START_TIMEOUT_S = 120.0
# The worker needs only this module: register ``thr`` as a bare package
# pointing at its directory so that thr/__init__.py (which may import torch) is not executed.
_WORKER_BOOT = (
    "import sys, types; pkg = types.ModuleType('thr'); pkg.__path__ = [sys.argv[1]]; "
    "sys.modules['thr'] = pkg; from thr.verifier.worker import _worker_main; _worker_main()"
)


# ----------------------------------------------------------------------------- sympy worker


class _Worker:
    """A persistent ``math_verify`` subprocess speaking JSON lines over pipes.

    After a timeout the process is killed and a replacement is spawned at once (without
    waiting for it), so its import time mostly overlaps with the caller's other work.
    """

    def __init__(self) -> None:
        """No process yet: it is spawned on first use."""
        self._proc: subprocess.Popen[bytes] | None = None
        self._ready = False
        self._buf = b""
        self._lock = threading.Lock()
        self.busy = False  # checked out by a caller (see _Pool)
        self.calls = 0  # comparisons sent to the worker
        self.starts = 0  # processes spawned, e.g. after a timeout kill

    def _spawn(self) -> None:
        """Start the subprocess (does not wait for it to be ready)."""
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", "1")
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER_BOOT, os.path.dirname(os.path.dirname(os.path.abspath(__file__)))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        self._ready = False
        self._buf = b""
        self.starts += 1

    def _ensure_ready(self) -> None:
        """Spawn if needed and wait for the worker's ``ready`` line."""
        if self._proc is None or self._proc.poll() is not None:
            self._spawn()
        if not self._ready:
            if self._readline(_WORKER_START_TIMEOUT_S) != {"ready": True}:
                self.close()
                raise RuntimeError("verifier worker failed to start")
            self._ready = True

    def _readline(self, timeout_s: float) -> Any:
        """Next JSON line from the worker, or None on timeout/EOF."""
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
        """math_verify equivalence in the worker; False on timeout (the worker is then replaced)."""
        with self._lock:
            self._ensure_ready()
            assert self._proc is not None and self._proc.stdin is not None
            self.calls += 1
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
                self._spawn()  # warm up the replacement in the background
                return False
            return bool(reply["r"])

    def close(self) -> None:
        """Kill the worker process (if any)."""
        proc, self._proc = self._proc, None
        self._ready = False
        if proc is not None:
            with contextlib.suppress(Exception):  # best effort cleanup
                proc.kill()
                proc.wait(timeout=5)

    def forget(self) -> None:
        """After ``fork()`` in the child: drop the parent's process handle without killing it."""
        self._proc = None
        self._ready = False
        self._buf = b""
        self._lock = threading.Lock()
        self.busy = False


class _Pool:
    """Workers handed out per comparison: an idle one, else a new one up to ``max_workers``,
    else a shared one (its lock serialises). Single-threaded use needs only one process."""

    def __init__(self, max_workers: int) -> None:
        """An empty pool; workers are created on demand."""
        self.max_workers = max(1, max_workers)
        self.workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._turn = 0

    def checkout(self) -> _Worker:
        """An idle worker, a new one (below the cap) or a shared one; release it after use."""
        with self._lock:
            for w in self.workers:
                if not w.busy:
                    w.busy = True
                    return w
            if len(self.workers) < self.max_workers:
                w = _Worker()
                self.workers.append(w)
                w.busy = True
                return w
            self._turn = (self._turn + 1) % len(self.workers)
            return self.workers[self._turn]

    def release(self, w: _Worker) -> None:
        """Mark a checked-out worker idle again."""
        with self._lock:
            w.busy = False

    def compare(self, gold: str, pred: str, timeout_s: float) -> bool:
        """:meth:`_Worker.compare` on a checked-out worker."""
        w = self.checkout()
        try:
            return w.compare(gold, pred, timeout_s)
        finally:
            self.release(w)

    def close(self) -> None:
        """Kill every worker process."""
        for w in list(self.workers):
            w.close()

    def forget(self) -> None:
        """After ``fork()`` in the child: drop the parent's processes (see :meth:`_Worker.forget`)."""
        self._lock = threading.Lock()
        for w in self.workers:
            w.forget()

    @property
    def calls(self) -> int:
        """Comparisons sent to workers so far."""
        return sum(w.calls for w in self.workers)

    @property
    def starts(self) -> int:
        """Worker processes spawned so far."""
        return sum(w.starts for w in self.workers)


_POOL = _Pool(int(os.environ.get("THR_VERIFY_WORKERS", str(min(4, os.cpu_count() or 1)))))
atexit.register(_POOL.close)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_POOL.forget)


def warmup() -> None:
    """Start the first sympy worker in the background (non-blocking), so that the first
    ``verify`` that needs sympy does not wait for its imports. Optional."""
    w = _POOL.checkout()
    try:
        with w._lock:
            if w._proc is None or w._proc.poll() is not None:
                w._spawn()
    finally:
        _POOL.release(w)


def shutdown_worker() -> None:
    """Stop the sympy worker subprocesses (they restart on demand)."""
    _POOL.close()


# ----------------------------------------------------------------------------- sympy-side guards
# (moved from thr.verifier.normalize: they only ever run in the worker)


_ENV_RE = re.compile(r"\\(?:begin|end|mathbb|mathcal|mathbf|mathrm|operatorname|text)\s*\{[^{}]*\}")
_VAR_TOKEN_RE = re.compile(r"(?<![A-Za-z\\])([A-Za-z])(_\{[^{}]*\}|_[A-Za-z0-9])?")


def parse_is_complete(latex: str, expr: Any) -> bool:
    """Guard against partial parses (math_verify turns ``\\frac{1}{3}E_{1}`` into ``1/3``):
    every variable letter written in ``latex`` must survive as a symbol (free, or bound by a
    sum, product or integral) or function name.
    ``e``/``E``/``i``/``I`` alone may be constants and are not required."""
    from sympy import Basic, Symbol
    from sympy.core.function import AppliedUndef

    if not isinstance(expr, Basic):
        return True
    raw_names = [str(sym) for sym in expr.atoms(Symbol)]  # bound ones too: the k of \sum_{k=0}
    raw_names += [str(f.func) for f in expr.atoms(AppliedUndef)]
    names = set()
    for name in raw_names:  # first letter after any LaTeX command, e.g. "\\dot{x}_{0}" -> "x"
        m = re.search(r"[A-Za-z]", re.sub(r"\\[A-Za-z]+", "", name))
        if m:
            names.add(m.group().lower())
    stripped = re.sub(r"\\[A-Za-z]+", " ", _ENV_RE.sub(" ", latex))
    for letter, sub in _VAR_TOKEN_RE.findall(stripped):
        if not sub and letter in "eEiI":
            continue
        if letter.lower() not in names:
            return False
    return True


_PROBE_POINTS = (0.5371, 1.2839, 0.7713)


def _probe_values(expr: Any, symbols: list[Any]) -> list[complex] | None:
    """``expr`` evaluated at a few fixed points of its free symbols; None if not numeric."""
    values = []
    for k in range(len(_PROBE_POINTS)):
        point = {sym: _PROBE_POINTS[(k + i) % len(_PROBE_POINTS)] + 0.1 * i for i, sym in enumerate(symbols)}
        val = complex(expr.evalf(15, subs=point))
        if cmath.isnan(val) or cmath.isinf(val):
            return None
        values.append(val)
    return values


def _constants_differ(g: Any, p: Any) -> bool:
    """Two symbol-free numbers differ at 50 digits (relative 1e-30 when both are exact,
    2e-6 when a float is involved): catches ``1/2^98`` vs ``1/2^99`` and ``1/2006!`` vs
    ``1/2004!``, which math_verify's 6-decimal rounding accepts."""
    from sympy import Float

    vg, vp = g.evalf(50), p.evalf(50)
    if not (vg.is_number and vp.is_number) or vg.has(Float("nan")):
        return False
    scale = max(abs(vg), abs(vp))
    if scale == 0 or not scale.is_finite:
        return False
    tol = 2e-6 if (g.atoms(Float) or p.atoms(Float)) else 1e-30
    return bool(abs(vg - vp) / scale > tol)


def numerically_different(g: Any, p: Any) -> bool:
    """Cheap refutation before sympy ``simplify``: True only when the two expressions (or the
    two sides-differences of two equations) evaluate differently at fixed points of their free
    symbols. Undefined functions like ``f(t)`` are treated as extra symbols."""
    from sympy import Dummy, Eq, Expr, Integral, Product, Sum
    from sympy.core.function import AppliedUndef

    if g.has(Sum, Product, Integral) or p.has(Sum, Product, Integral):
        # evaluating a sum at a non-integer bound is slow (~1 s): no probe, but two symbol-free
        # values still get the exact check (a finite sum of 2^-k is not 1)
        if isinstance(g, Expr) and isinstance(p, Expr) and not (g.free_symbols or p.free_symbols):
            return _constants_differ(g, p)
        return False
    if isinstance(g, Eq) and isinstance(p, Eq):
        g, p, ratio = g.lhs - g.rhs, p.lhs - p.rhs, True
    elif isinstance(g, Expr) and isinstance(p, Expr):
        ratio = False
    else:
        return False
    undef = {str(f): f for f in (g.atoms(AppliedUndef) | p.atoms(AppliedUndef))}
    if undef:  # before the symbol-free test: f(1) has no free symbol, yet f(1)=2 is not f(1)=1
        repl = {f: Dummy(name) for name, f in undef.items()}
        g, p = g.xreplace(repl), p.xreplace(repl)
    if not (g.free_symbols or p.free_symbols):
        return False if ratio else _constants_differ(g, p)
    symbols = sorted(g.free_symbols | p.free_symbols, key=str)
    vg, vp = _probe_values(g, symbols), _probe_values(p, symbols)
    if vg is None or vp is None:
        return False
    if ratio:
        if any(abs(b) < 1e-12 for b in vp):
            return False
        vg = [a / b for a, b in zip(vg, vp)]
        vp = [vg[0]] * len(vg)
    return any(abs(a - b) > max(1e-6 * max(abs(a), abs(b)), 1e-12) for a, b in zip(vg, vp))


_PARSE_CACHE: dict[str, list[Any]] = {}


def _mv_parse(answer: str) -> list[Any]:
    """math_verify parse of one normalised answer (worker side, cached); [] when it fails or
    drops part of the input."""
    hit = _PARSE_CACHE.get(answer)
    if hit is not None:
        return hit
    from math_verify import LatexExtractionConfig, parse

    cfg = [LatexExtractionConfig(boxed_match_priority=0)]
    parsed = parse("\\boxed{" + answer + "}", extraction_config=cfg, parsing_timeout=None)
    if parsed and not parse_is_complete(answer, parsed[0]):
        parsed = []
    if len(_PARSE_CACHE) > 4096:
        _PARSE_CACHE.clear()
    _PARSE_CACHE[answer] = parsed
    return parsed


def _same_big_operator(g: Any, p: Any) -> bool:
    """The same sum/product/integral once parsed (sympy orders the factors of a product:
    ``\\sum_k k a_k`` is ``\\sum_k a_k k``): equal without math_verify's slow symbolic check.
    Only for these: other equal parses may be degenerate (``1:00`` and ``12:00`` both parse
    as ``zoo``)."""
    from sympy import Basic, Integral, Product, Sum, nan, zoo

    return (
        isinstance(g, Basic)
        and g.has(Sum, Product, Integral)
        and not g.has(zoo, nan)
        and g == p
    )


def _mv_compare(gold: str, pred: str) -> bool:
    """Run inside the worker: parse both with math_verify, refute numerically, else compare."""
    from math_verify import verify as mv_verify

    g, p = _mv_parse(gold), _mv_parse(pred)
    if not g or not p:
        return False
    if _same_big_operator(g[0], p[0]):
        return True
    with contextlib.suppress(Exception):  # the probe is only a shortcut
        if numerically_different(g[0], p[0]):
            return False
    return bool(mv_verify(g, p, timeout_seconds=None))


class _Alarm(BaseException):
    """Raised inside the worker when a comparison runs past its budget."""


def _worker_main() -> None:
    """Entry point of the worker subprocess: answer JSON-line requests until stdin closes."""
    import logging
    import signal

    logging.disable(logging.CRITICAL)
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # stray prints must not corrupt the protocol

    def _on_alarm(signum: int, frame: Any) -> None:
        """SIGALRM handler: abort the current comparison."""
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
