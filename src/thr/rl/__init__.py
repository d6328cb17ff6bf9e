"""RL training (``thr train``): one step is rollout -> old-policy pass (with THR) -> update.

- :mod:`thr.rl.config`: ``TrainConfig`` and its sections (every option of ``thr train``).
- :mod:`thr.rl.steering`: ``THRSettings``, shared by the trainer and the TRL/verl adapters.
- :mod:`thr.rl.rollout`: sample groups of responses and score them (``Rollout``).
- :mod:`thr.rl.rewards`: the verifiable reward of one response.
- :mod:`thr.rl.batch`: padding into ``[B, P + T]`` tensors and the policy forward.
- :mod:`thr.rl.old_pass`: the no-grad old-policy pass: log-probs, entropy, THR influence (``OldPass``).
- :mod:`thr.rl.update`: the clipped policy-gradient update of one rollout batch.
- :mod:`thr.rl.trainer`: ``Trainer``: setup, the step, evaluation, the run.
- :mod:`thr.rl.checkpoint`, :mod:`thr.rl.run_log`, :mod:`thr.rl.problems`: checkpoints, logs, data.
"""
