"""Pure-torch THR math: advantages, token influence/THR, thresholds and weights, losses.

Tensors and keyword arguments in, ``(tensor, metrics)`` or a tensor out; no config objects and
no I/O. Shapes: ``B`` responses (``G`` in one group), ``T`` response tokens, ``d`` hidden size,
``V`` vocabulary.

Two registries name the choices the trainers offer: :data:`TOKEN_ADVANTAGE_MODES` (``off``,
``reweight``, ``dominant``, ``entropy``; dispatched by :func:`steered_advantages`) and
:data:`POLICY_LOSSES` (``grpo``, ``gspo_token``; dispatched by :func:`policy_loss`, with the
:data:`AGGREGATIONS`).
"""

from .advantages import group_advantages
from .influence import choose_method, token_hidden_reward, token_influence, token_self_influence
from .losses import AGGREGATIONS, POLICY_LOSSES, aggregate, policy_loss
from .masked import entropy_from_logits, masked_mean, selective_log_softmax
from .network import network_token_influence
from .weights import TOKEN_ADVANTAGE_MODES, influence_threshold, steered_advantages

__all__ = [
    "AGGREGATIONS",
    "POLICY_LOSSES",
    "TOKEN_ADVANTAGE_MODES",
    "aggregate",
    "choose_method",
    "entropy_from_logits",
    "group_advantages",
    "influence_threshold",
    "masked_mean",
    "network_token_influence",
    "policy_loss",
    "selective_log_softmax",
    "steered_advantages",
    "token_hidden_reward",
    "token_influence",
    "token_self_influence",
]
