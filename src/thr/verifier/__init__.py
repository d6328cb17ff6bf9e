"""The math answer verifier: ``verify(response, gold) -> bool`` (``thr.verify``).

- :mod:`thr.verifier.grader`: ``verify``, ``verify_batch``, ``extract_answer``: the pipeline and
  its fast path.
- :mod:`thr.verifier.worker`: the ``math_verify`` worker subprocesses (timeouts, restarts).
- :mod:`thr.verifier.extract`: finding the final answer in a response (``####``, prose, math).
- :mod:`thr.verifier.boxes`: ``\\boxed{}`` answers (``last_boxed``, public: ``thr.data`` uses it).
- :mod:`thr.verifier.normalize`: LaTeX answer normalisation and exact number comparison.

Only the standard library is imported here; ``math_verify`` loads in the worker process.
"""

from .boxes import last_boxed
from .grader import extract_answer, normalize_answer, shutdown_worker, verify, verify_batch, warmup

__all__ = ["extract_answer", "last_boxed", "normalize_answer", "shutdown_worker", "verify", "verify_batch", "warmup"]
