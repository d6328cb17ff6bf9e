"""Models: loading, generation, the tiny model of the embedded default and its warm start.

- :mod:`thr.models.loading`: load a policy (hub name or local dir, LoRA), LM-head helpers.
- :mod:`thr.models.generation`: batched sampling (HF ``generate`` or vLLM) into ``Sample`` s.
- :mod:`thr.models.tiny`: the byte-level tokenizer and tiny Qwen2 of the embedded default.
- :mod:`thr.models.embedded`: ``EmbeddedConfig`` and the cached warm start (``thr warm-start``).
- :mod:`thr.models.sft`, :mod:`thr.models.imitation`, :mod:`thr.models.shipped`: the warm start's
  supervised training, its imitation checks and the copy shipped in ``embedded_weights/``.
"""
