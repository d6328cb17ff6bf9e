"""Pure-torch THR math: advantages, token influence/THR, thresholds and weights, losses.

Tensors and keyword arguments in, ``(tensor, metrics)`` or a tensor out; no config objects and
no I/O. Shapes: ``B`` responses (``G`` in one group), ``T`` response tokens, ``d`` hidden size,
``V`` vocabulary.
"""

from .advantages import group_advantages, resolve_group_ids
from .approx import token_hidden_reward_approx, token_influence_approx, token_influence_approx_batched
from .influence import (
    choose_method,
    token_hidden_reward,
    token_hidden_reward_batched,
    token_influence,
    token_influence_batched,
    token_self_influence,
)
from .losses import aggregate, policy_loss
from .masked import entropy_from_logits, masked_mean, masked_sum, masked_var, selective_log_softmax
from .network import network_token_influence
from .weights import (
    entropy_token_advantages,
    influence_threshold,
    steered_advantages,
    thr_metrics,
    thr_token_advantages,
)

__all__ = [
    "aggregate",
    "choose_method",
    "entropy_from_logits",
    "entropy_token_advantages",
    "group_advantages",
    "influence_threshold",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "network_token_influence",
    "policy_loss",
    "resolve_group_ids",
    "selective_log_softmax",
    "steered_advantages",
    "thr_metrics",
    "thr_token_advantages",
    "token_hidden_reward",
    "token_hidden_reward_approx",
    "token_hidden_reward_batched",
    "token_influence",
    "token_influence_approx",
    "token_influence_approx_batched",
    "token_influence_batched",
    "token_self_influence",
]
