"""Problems and prompts.

- :mod:`thr.data.problems`: ``Problem`` and its sources (packaged benchmarks in
  ``benchmark_data/``, JSONL/Parquet files, HF datasets, the built-in tasks).
- :mod:`thr.data.prompts`: prompt templates (``plain``, ``boxed``, ``qwen_math``, ``chat``).
- :mod:`thr.data.tasks`: the built-in tasks (``columns``, ``arith``) and their solution checks.
"""
