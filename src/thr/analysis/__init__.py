"""THR diagnostics: ``thr analyze`` (THR of sampled groups, paper-style figures, token heat maps)
and ``thr report`` (a self-contained HTML page for a training run).

Modules: :mod:`~thr.analysis.stats` (the numbers behind every figure), :mod:`~thr.analysis.tokens`
(per-token THR, influence, self-term, entropy, probability), :mod:`~thr.analysis.analyze`,
:mod:`~thr.analysis.figures` (matplotlib, imported lazily), :mod:`~thr.analysis.heatmap`,
:mod:`~thr.analysis.page` (HTML/JS) and :mod:`~thr.analysis.report`.
"""
