"""``THRSettings``: how THR steers token advantages, one dataclass for every trainer.

``thr train`` uses it as the base of its ``thr.*`` section (:class:`thr.rl.config.THRSection`
adds the old-policy-pass options), the TRL adapter as its ``thr_*`` fields
(:class:`thr.integrations.trl.THRConfig`) and the verl plugin reads it from ``THR_*``
environment variables. :func:`steer` is the one call that turns influence into token advantages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from thr.config import Fraction, PositiveInt, Strength
from thr.core import steered_advantages
from thr.core.weights import SteerMode

Threshold = Literal["nthr", "quantile", "absolute"]
InfluenceMethod = Literal["auto", "mform", "pair"]


@dataclass
class THRSettings:
    """Token Hidden Reward steering (spec sections 3-4).

    mode: ``off`` (plain GRPO; THR statistics are still logged), ``reweight``, ``dominant``, or
        ``entropy`` (a control without THR: train only on the top ``quantile`` fraction of the
        batch's tokens by entropy; ``thr train`` only). The choices are the entries of
        ``thr.core.TOKEN_ADVANTAGE_MODES``.
    p: steering strength in (-1, 1): > 0 exploitation, < 0 exploration. With ``p_schedule``
        other than ``constant``, the value at the first step.
    threshold: ``nthr`` (tau = beta * min mean influence of a correct response), ``quantile``
        or ``absolute``.
    beta: NTHR threshold factor.
    quantile: fraction of tokens per group kept as dominant in ``quantile`` mode.
    value: the threshold in ``absolute`` mode.
    chunk_size: tokens per streamed chunk of the THR computation.
    method: exact influence algorithm: ``auto`` (the cheaper), ``mform`` or ``pair``.
    positive_reward: the set P: responses whose total reward is at least this. Unset (none): the
        trainer's own rule (``thr train``: the verified-correct responses; TRL and verl: the
        responses with a positive advantage, ``A_j > 0``).
    """

    mode: SteerMode = "reweight"
    p: Strength = 0.2
    threshold: Threshold = "nthr"
    beta: float = 1.0
    quantile: Fraction = 0.2
    value: float = 0.0
    chunk_size: PositiveInt = 1024
    method: InfluenceMethod = "auto"
    positive_reward: float | None = None

    def validate(self, prefix: str = "thr.") -> "THRSettings":
        """Raise ``ValueError`` naming the first invalid field (``prefix`` + name) and the fix."""
        from thr.config import check_choices

        check_choices(self, prefix)  # Literal choices and Range bounds (p, quantile, chunk_size), from the types
        return self


def steer(
    settings: THRSettings, advantages: torch.Tensor, influence: torch.Tensor, response_mask: torch.Tensor,
    positive: torch.Tensor, *, group_size: int | None = None, group_ids: torch.Tensor | None = None,
    p: float | None = None, entropy: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Token advantages ``[B, T]`` and ``thr/*`` metrics from ``advantages [B]`` and ``influence [B, T]``.

    ``settings.mode`` picks the entry of ``thr.core.TOKEN_ADVANTAGE_MODES``; ``p`` overrides
    ``settings.p`` (a scheduled value); ``entropy [B, T]`` is needed by ``mode=entropy`` only.
    """
    s = settings
    return steered_advantages(
        advantages, influence, response_mask, positive, group_size=group_size, group_ids=group_ids, mode=s.mode,
        p=s.p if p is None else p, threshold=s.threshold, beta=s.beta, quantile=s.quantile, value=s.value,
        entropy=entropy,
    )
