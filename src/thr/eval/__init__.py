"""Evaluation (``thr eval``): greedy accuracy and unbiased Pass@K.

- :mod:`thr.eval.evaluate`: generate + verify + metrics, resumable records.
- :mod:`thr.eval.run`: the `thr eval` command: `EvalConfig`, the model and benchmark loop, rescoring.
- :mod:`thr.eval.tables`: terminal / Markdown / JSON results tables and the Pass@K plot.
"""
