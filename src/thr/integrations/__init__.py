"""THR inside other RL trainers.

- :mod:`thr.integrations.trl`: ``THRGRPOTrainer`` / ``THRConfig`` for TRL's GRPOTrainer
  (``pip install 'thr-rl[trl]'``, trl 1.16).
- :mod:`thr.integrations.verl`: a verl 0.9 plugin loaded with
  ``VERL_USE_EXTERNAL_MODULES=thr.integrations.verl`` and enabled by
  ``algorithm.adv_estimator=grpo_thr`` (``pip install 'thr-rl[verl]'``).

Nothing is imported here, so ``import thr.integrations`` needs neither TRL nor verl.
See ``docs/integrations.md``.
"""
