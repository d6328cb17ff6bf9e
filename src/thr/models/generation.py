"""Batched sampling from a causal LM, shared by the evaluator and the RL trainer.

:func:`generate` runs Hugging Face ``model.generate`` on left-padded batches and returns, per
prompt, ``n`` :class:`Sample` objects holding the prompt and response token ids (no padding;
the EOS token included when the model produced it), the decoded text and why it stopped.

Sampling is *pure*: only ``temperature`` and ``top_p`` shape the distribution. Hub checkpoints
often ship a ``generation_config.json`` with ``top_k``, ``repetition_penalty`` or ``min_p``
defaults; those are neutralised so that Pass@K and RL rollouts sample from the actual policy.

Randomness: with ``seed`` set, sampling runs inside ``torch.random.fork_rng`` seeded from
``seed`` and the batch index, so the caller's global RNG state is left untouched and the same
(prompts, n, batch_size, seed) gives the same samples on the same device. With ``seed=None``
the global RNG is used (and advanced), as a training loop usually wants.

:class:`VLLMGenerator` offers the same ``generate`` method on a vLLM engine (CUDA only, imported
lazily) plus :meth:`VLLMGenerator.sync_weights` to push trained weights into it.
:func:`make_generator` picks a backend by name.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

# Special end-of-turn tokens of common chat formats. When one appears in a prompt (so the model
# is being asked to answer one turn), it also ends the response; see :func:`stop_token_ids_for`.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|end_of_turn|>")


@dataclass
class Sample:
    """One completion of one prompt.

    ``finish_reason`` is ``"stop"`` when an EOS / stop token or a stop string ended it and
    ``"length"`` when ``max_new_tokens`` was reached. ``response_ids`` excludes padding and
    includes the EOS token when one was produced; ``text`` is the decoded response without
    special tokens.
    """

    prompt_index: int
    prompt_ids: list[int]
    response_ids: list[int]
    text: str
    finish_reason: str


def stop_token_ids_for(tokenizer: Any, prompt: str) -> list[int]:
    """Ids of end-of-turn tokens (``<|im_end|>``, ``<|eot_id|>`` ...) that occur in ``prompt``.

    A base tokenizer's EOS is often ``<|endoftext|>`` while a chat-formatted prompt makes the
    model close its turn with ``<|im_end|>``; passing these ids as extra stop tokens ends the
    response there instead of running to ``max_new_tokens``.
    """
    ids = []
    for token in END_OF_TURN_TOKENS:
        if token in prompt:
            tid = tokenizer.convert_tokens_to_ids(token)
            if isinstance(tid, int) and tid != getattr(tokenizer, "unk_token_id", None) and tid >= 0:
                ids.append(tid)
    return ids


def _end_of_turn_ids(tokenizer: Any, prompts: Sequence[str]) -> list[int]:
    """End-of-turn token ids used by any of ``prompts`` (see :func:`stop_token_ids_for`)."""
    ids: list[int] = []
    for token in END_OF_TURN_TOKENS:
        prompt = next((p for p in prompts if token in p), None)
        if prompt is not None:
            ids.extend(t for t in stop_token_ids_for(tokenizer, token) if t not in ids)
    return ids


def eos_token_ids(model: Any, tokenizer: Any, extra: Sequence[int] = ()) -> list[int]:
    """Union of the tokenizer's EOS, the model's ``generation_config.eos_token_id`` and ``extra``."""
    ids: list[int] = []
    candidates: list[Any] = [getattr(tokenizer, "eos_token_id", None)]
    gen_cfg = getattr(model, "generation_config", None)
    candidates.append(getattr(gen_cfg, "eos_token_id", None))
    candidates.extend(extra)
    for c in candidates:
        for tid in c if isinstance(c, (list, tuple)) else [c]:
            if tid is not None and int(tid) not in ids:
                ids.append(int(tid))
    if not ids:
        raise ValueError("the tokenizer has no eos_token and the model's generation_config no eos_token_id")
    return ids


def _pad_id(tokenizer: Any, eos_ids: list[int]) -> int:
    pad = getattr(tokenizer, "pad_token_id", None)
    return int(pad) if pad is not None else eos_ids[0]


def _encode(tokenizer: Any, prompt: str) -> list[int]:
    """Token ids of a prompt; BOS is added by the tokenizer unless the text already starts with it."""
    bos = getattr(tokenizer, "bos_token", None)
    add_special = not (bos and prompt.startswith(bos))
    return list(tokenizer(prompt, add_special_tokens=add_special)["input_ids"])


def _sampling_kwargs(model: Any, temperature: float, top_p: float) -> dict[str, Any]:
    """``generate`` kwargs for pure sampling (or greedy), overriding checkpoint defaults."""
    kwargs: dict[str, Any] = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0}
    if temperature > 0:
        kwargs.update(do_sample=True, temperature=float(temperature), top_p=float(top_p), top_k=0, typical_p=1.0)
        if getattr(getattr(model, "generation_config", None), "min_p", None) is not None:
            kwargs["min_p"] = 0.0
    else:
        kwargs.update(do_sample=False, temperature=1.0, top_p=1.0)
    return kwargs


def _model_device(model: Any) -> torch.device:
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    return next(model.parameters()).device


@contextlib.contextmanager
def _seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Run the block under ``torch.manual_seed(seed)`` without disturbing the caller's RNG."""
    if seed is None:
        yield
        return
    devices = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _find_stop(tokenizer: Any, ids: list[int], stop_strings: Sequence[str]) -> int | None:
    """Smallest k such that the decoded ``ids[:k]`` contains a stop string, else None."""
    def hit(k: int) -> bool:
        text = tokenizer.decode(ids[:k], skip_special_tokens=True)
        return any(s in text for s in stop_strings)

    if not stop_strings or not hit(len(ids)):
        return None
    lo, hi = 1, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if hit(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def _trim_response(
    tokenizer: Any, generated: list[int], eos_ids: set[int], stop_strings: Sequence[str] | None
) -> tuple[list[int], str]:
    """Cut one generated row after its first EOS or stop string; return (ids, finish_reason)."""
    for j, tid in enumerate(generated):
        if tid in eos_ids:
            generated, eos_at = generated[: j + 1], j
            break
    else:
        eos_at = None
    cut = _find_stop(tokenizer, generated if eos_at is None else generated[:eos_at], stop_strings or ())
    if cut is not None:
        return generated[:cut], "stop"
    if eos_at is not None:
        return generated, "stop"
    return generated, "length"


def _batches(order: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(order), size):
        yield order[start : start + size]


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int, width: int | None = None,
             side: str = "left") -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, attention_mask)``, both ``[len(rows), width]`` int64 (``width``: the longest row by
    default): each row after (``side="left"``, prompts) or before (``"right"``, responses) its padding."""
    width = max(len(r) for r in rows) if width is None else width
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            cols = slice(width - len(r), width) if side == "left" else slice(0, len(r))
            ids[i, cols] = torch.tensor(r, dtype=torch.long)
            attention[i, cols] = 1
    return ids, attention


def _generate_batch(
    model: Any, tokenizer: Any, encoded: list[list[int]], *, pad_id: int, eos_ids: list[int], max_new_tokens: int,
    gen_kwargs: dict[str, Any], stop_strings: Sequence[str] | None,
) -> list[tuple[list[int], str]]:
    """Left-pad ``encoded``, call ``model.generate`` and return trimmed (response ids, reason)."""
    device = _model_device(model)
    input_ids, attention = pad_rows(encoded, pad_id)
    width = input_ids.shape[1]
    extra: dict[str, Any] = {}
    if stop_strings:
        extra.update(stop_strings=list(stop_strings), tokenizer=tokenizer)
    out = model.generate(
        input_ids=input_ids.to(device),
        attention_mask=attention.to(device),
        max_new_tokens=max_new_tokens,
        eos_token_id=eos_ids,
        pad_token_id=pad_id,
        use_cache=True,
        **gen_kwargs,
        **extra,
    )
    rows = out[:, width:].tolist()
    eos_set = set(eos_ids)
    return [_trim_response(tokenizer, row, eos_set, stop_strings) for row in rows]


def generate(
    model: Any, tokenizer: Any, prompts: list[str], *, n: int = 1, temperature: float = 1.0, top_p: float = 1.0,
    max_new_tokens: int = 256, batch_size: int = 32, seed: int | None = None, stop_strings: list[str] | None = None,
    stop_token_ids: list[int] | None = None, progress: bool = False,
) -> list[list[Sample]]:
    """Sample ``n`` completions per prompt; returns one list of ``n`` Samples per prompt.

    ``temperature=0`` is greedy decoding (computed once per prompt, copied ``n`` times).
    ``batch_size`` counts sequences per ``model.generate`` call. Prompts are sorted by length
    so each batch pads little. Responses end at the tokenizer's / model's EOS, at any
    ``stop_token_ids`` and at the end-of-turn token of a chat format used in the prompts
    (``<|im_end|>`` ..., see :func:`stop_token_ids_for`); ``stop_strings`` end a response after
    the first match (the string stays in the text, as with vLLM's ``include_stop_str_in_output``).
    """
    if n < 1 or batch_size < 1 or max_new_tokens < 1:
        raise ValueError(f"n, batch_size and max_new_tokens must be >= 1 (got {n}, {batch_size}, {max_new_tokens})")
    if temperature < 0 or not 0 < top_p <= 1:
        raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1 (got {temperature}, {top_p})")
    if not prompts:
        return []
    eos_ids = eos_token_ids(model, tokenizer, [*(stop_token_ids or ()), *_end_of_turn_ids(tokenizer, prompts)])
    pad_id = _pad_id(tokenizer, eos_ids)
    encoded = [_encode(tokenizer, p) for p in prompts]
    copies = 1 if temperature == 0 else n
    jobs = [(i, c) for i in sorted(range(len(prompts)), key=lambda i: -len(encoded[i])) for c in range(copies)]
    gen_kwargs = _sampling_kwargs(model, temperature, top_p)
    results: dict[tuple[int, int], tuple[list[int], str]] = {}
    was_training = model.training
    model.eval()
    batches = list(_batches(list(range(len(jobs))), batch_size))
    bar = _progress(len(jobs), progress)
    try:
        with torch.no_grad():
            for b, batch in enumerate(batches):
                with _seeded(None if seed is None else seed * 1_000_003 + b, _model_device(model)):
                    outs = _generate_batch(
                        model,
                        tokenizer,
                        [encoded[jobs[j][0]] for j in batch],
                        pad_id=pad_id,
                        eos_ids=eos_ids,
                        max_new_tokens=max_new_tokens,
                        gen_kwargs=gen_kwargs,
                        stop_strings=stop_strings,
                    )
                for j, out in zip(batch, outs):
                    results[jobs[j]] = out
                if bar is not None:
                    bar.update(len(batch))
    finally:
        model.train(was_training)
        if bar is not None:
            bar.close()
    samples = []
    for i in range(len(prompts)):
        row = []
        for c in range(n):
            ids, reason = results[(i, c if copies > 1 else 0)]
            text = tokenizer.decode(ids, skip_special_tokens=True)
            row.append(Sample(i, list(encoded[i]), list(ids), text, reason))
        samples.append(row)
    return samples


def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="generate", unit="seq", dynamic_ncols=True)


class Generator:
    """Common interface of the generation backends: ``generate(prompts, **options)``.

    ``chunk_sequences``: how many sequences a caller that writes results as it goes (the
    evaluator) should hand over per call; None means one ``batch_size``.
    """

    tokenizer: Any
    chunk_sequences: int | None = None

    def generate(self, prompts: list[str], **options: Any) -> list[list[Sample]]:
        """Same options and result as :func:`generate`."""
        raise TypeError(f"{type(self).__name__} must implement generate()")


class HFGenerator(Generator):
    """Hugging Face backend: wraps a model and tokenizer around :func:`generate`."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer

    def generate(self, prompts: list[str], **options: Any) -> list[list[Sample]]:
        """See :func:`generate`."""
        return generate(self.model, self.tokenizer, prompts, **options)

    def sync_weights(self, model: Any) -> None:
        """Use ``model`` for the next calls (the HF backend shares the trainer's module)."""
        self.model = model


class VLLMGenerator(Generator):
    """vLLM backend (``pip install 'thr-rl[vllm]'``, CUDA). Same ``generate`` as :class:`HFGenerator`.

    The engine runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0`` is set unless the
    caller set it) so that :meth:`sync_weights` can load a trained model's tensors straight
    into the engine's model. Weight sync supports ``tensor_parallel_size=1`` only.
    """

    chunk_sequences = 4096  # vLLM schedules its own batches: hand it large chunks

    def __init__(
        self,
        model: str,
        *,
        tokenizer: str | None = None,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.5,
        max_model_len: int | None = None,
        tensor_parallel_size: int = 1,
        seed: int = 0,
        **llm_kwargs: Any,
    ) -> None:
        try:
            import vllm
        except ImportError as err:
            raise ImportError(
                "backend 'vllm' needs the vllm package (CUDA only): pip install 'thr-rl[vllm]'. "
                "Use backend='hf' (Hugging Face generate) otherwise."
            ) from err
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        self._vllm = vllm
        self.llm = vllm.LLM(
            model=model,
            tokenizer=tokenizer or model,
            dtype=dtype,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            tensor_parallel_size=tensor_parallel_size,
            seed=seed,
            **llm_kwargs,
        )
        self.tokenizer = self.llm.get_tokenizer()
        self.tensor_parallel_size = tensor_parallel_size

    def generate(
        self,
        prompts: list[str],
        *,
        n: int = 1,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_new_tokens: int = 256,
        batch_size: int = 32,
        seed: int | None = None,
        stop_strings: list[str] | None = None,
        stop_token_ids: list[int] | None = None,
        progress: bool = False,
    ) -> list[list[Sample]]:
        """See :func:`generate`; ``batch_size`` is ignored (vLLM schedules its own batches)."""
        if not prompts:
            return []
        encoded = [_encode(self.tokenizer, p) for p in prompts]
        stop_ids = [*(stop_token_ids or ()), *_end_of_turn_ids(self.tokenizer, prompts)]
        greedy = temperature == 0
        params = [
            self._vllm.SamplingParams(
                n=1 if greedy else n,
                temperature=0.0 if greedy else float(temperature),
                top_p=1.0 if greedy else float(top_p),
                top_k=-1,
                max_tokens=max_new_tokens,
                seed=None if seed is None else seed * 1_000_003 + i,
                stop=list(stop_strings or []) or None,
                stop_token_ids=stop_ids or None,
                include_stop_str_in_output=True,
                skip_special_tokens=True,
            )
            for i in range(len(prompts))
        ]
        inputs = [{"prompt_token_ids": ids} for ids in encoded]
        outputs = self.llm.generate(inputs, params, use_tqdm=progress)
        samples = []
        for i, out in enumerate(outputs):
            row = []
            for c in range(n):
                comp = out.outputs[0 if greedy else c]
                reason = "length" if comp.finish_reason == "length" else "stop"
                row.append(Sample(i, list(encoded[i]), list(comp.token_ids), comp.text, reason))
            samples.append(row)
        return samples

    def sync_weights(self, model: Any) -> None:
        """Copy the parameters of a (non-PEFT or merged) HF ``model`` into the vLLM engine."""
        if self.tensor_parallel_size != 1:
            raise RuntimeError("VLLMGenerator.sync_weights supports tensor_parallel_size=1 only")
        try:
            target = self.llm.llm_engine.model_executor.driver_worker.model_runner.model
        except AttributeError as err:
            raise RuntimeError(
                "cannot reach the vLLM model in this process; create the VLLMGenerator with "
                "VLLM_ENABLE_V1_MULTIPROCESSING=0 in the environment (the default here)"
            ) from err
        with torch.no_grad():
            for name, param in model.state_dict().items():
                target.load_weights([(name, param)])
        self.llm.reset_prefix_cache()


def make_generator(backend: str, model: Any, tokenizer: Any = None, **kwargs: Any) -> Generator:
    """A generation backend by name.

    ``"hf"``: ``HFGenerator(model, tokenizer)`` for a loaded model. ``"vllm"``: a
    ``VLLMGenerator`` for a model path / hub name, or for a loaded HF model: the engine is built
    from ``model.name_or_path`` and then receives the model's current weights (``sync_weights``).
    ``kwargs`` go to :class:`VLLMGenerator`.
    """
    if backend == "hf":
        if tokenizer is None or isinstance(model, str):
            raise ValueError("backend 'hf' needs a loaded model and tokenizer (see thr.eval.evaluate.load_model)")
        return HFGenerator(model, tokenizer)
    if backend == "vllm":
        if isinstance(model, str):
            return VLLMGenerator(model, **kwargs)
        path = getattr(model, "name_or_path", "") or getattr(getattr(model, "config", None), "_name_or_path", "")
        if not path:
            raise ValueError(
                "backend 'vllm' builds its engine from a saved checkpoint, but this model has no name_or_path; "
                "save it with save_pretrained first or use backend 'hf'"
            )
        gen = VLLMGenerator(str(path), **kwargs)
        gen.sync_weights(model)
        return gen
    raise ValueError(f"unknown generation backend {backend!r}; choose 'hf' or 'vllm'")
