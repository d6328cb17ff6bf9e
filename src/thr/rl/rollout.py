"""The rollout: sample ``G`` responses for each prompt of a step and score them.

:func:`sample_rollout` returns a :class:`Rollout`: the step's problems, its ``B = n_prompts * G``
responses in group order (group ``g`` is rows ``g G .. g G + G - 1``), their scores, and
:meth:`Rollout.batch` pads them into the tensors the old-policy pass and the update read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from thr.data.problems import Problem
from thr.data.prompts import format_prompt
from thr.models.generation import Sample
from thr.rl.batch import RolloutBatch, build_batch
from thr.rl.rewards import Score, score_response


@dataclass
class Rollout:
    """One step's sampled groups.

    problems: the step's ``n_prompts`` problems; response ``j`` answers ``problems[j // G]``.
    samples: ``[B]`` responses (prompt and response token ids, text, finish reason).
    scores: ``[B]`` their reward and verdict (:class:`thr.rl.rewards.Score`).
    """

    problems: list[Problem]
    samples: list[Sample]
    scores: list[Score]

    def rewards(self, device: torch.device) -> torch.Tensor:
        """``[B]`` float32 rewards."""
        return torch.tensor([s.reward for s in self.scores], dtype=torch.float32, device=device)

    def correct(self, device: torch.device) -> torch.Tensor:
        """``[B]`` bool, the verified-correct responses."""
        return torch.tensor([s.correct for s in self.scores], dtype=torch.bool, device=device)

    def share(self, flag: str) -> float:
        """Share of the responses whose score has ``flag`` (``has_answer``, ``truncated``)."""
        return sum(getattr(s, flag) for s in self.scores) / len(self.scores)

    def batch(self, pad_id: int, device: torch.device) -> RolloutBatch:
        """The padded ``[B, P + T]`` tensors of the responses (:func:`thr.rl.batch.build_batch`)."""
        return build_batch([s.prompt_ids for s in self.samples], [s.response_ids for s in self.samples], pad_id, device)


def sample_rollout(
    generator: Any,
    tokenizer: Any,
    problems: list[Problem],
    *,
    template: str,
    rollout: Any,
    reward: Any,
    seed: int,
    checker: Callable[[Problem], Callable[[str], bool] | None],
) -> Rollout:
    """Sample ``rollout.group_size`` responses per problem and score them.

    ``rollout`` / ``reward``: the ``rollout.*`` and ``reward.*`` sections of
    :class:`thr.rl.config.TrainConfig`; ``checker(problem)``: the full solution check of a
    built-in task's problem, or None (answer-only reward).
    """
    r, rw = rollout, reward
    prompts = [format_prompt(tokenizer, p.problem, template) for p in problems]
    groups = generator.generate(
        prompts, n=r.group_size, temperature=r.temperature, top_p=r.top_p,
        max_new_tokens=r.max_new_tokens, batch_size=r.batch_size, seed=seed,
    )
    samples = [s for group in groups for s in group]
    scores = [
        score_response(s.text, problems[s.prompt_index].answer, finish_reason=s.finish_reason, correct=rw.correct,
                       incorrect=rw.incorrect, format_bonus=rw.format_bonus, truncated=rw.truncated,
                       checker=checker(problems[s.prompt_index]))
        for s in samples
    ]
    return Rollout(problems, samples, scores)
