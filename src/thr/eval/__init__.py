"""Evaluation (``thr eval``): greedy accuracy and unbiased Pass@K.

- :mod:`thr.eval.evaluate`: generate + verify + metrics, resumable records, the command.
- :mod:`thr.eval.tables`: terminal / Markdown / JSON results tables and the Pass@K plot.
"""
