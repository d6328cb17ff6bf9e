"""thr: Token Hidden Reward for RLVR on language models.

The library core (``thr.core``) needs only torch. ``import thr`` stays light: the verifier and
other modules with heavier dependencies load on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

from .core import (  # noqa: E402  (torch only)
    group_advantages,
    influence_threshold,
    network_token_influence,
    policy_loss,
    steered_advantages,
    token_hidden_reward,
    token_influence,
    token_self_influence,
)

__all__ = [
    "extract_answer",
    "group_advantages",
    "influence_threshold",
    "network_token_influence",
    "policy_loss",
    "steered_advantages",
    "token_hidden_reward",
    "token_influence",
    "token_self_influence",
    "verify",
    "verify_batch",
]

_LAZY = {
    "verify": ("thr.verifier", "verify"),
    "verify_batch": ("thr.verifier", "verify_batch"),
    "extract_answer": ("thr.verifier", "extract_answer"),
}


def __getattr__(name: str) -> Any:  # PEP 562 lazy exports
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'thr' has no attribute {name!r}")
