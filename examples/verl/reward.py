"""verl custom reward function: 1.0 when thr.verifier accepts the final answer, else 0.0.

    reward.custom_reward_function.path=examples/verl/reward.py reward.custom_reward_function.name=compute_score

The THR plugin's positive set is then reward >= THR_POSITIVE_REWARD=1 (or A > 0 when unset).
"""

from __future__ import annotations

from thr.verifier import verify


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **_):
    return 1.0 if verify(solution_str, str(ground_truth)) else 0.0
