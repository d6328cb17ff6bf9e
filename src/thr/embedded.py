"""The embedded default: a tiny model warm-started on the generated arithmetic task.

``thr train`` with no arguments needs a policy that already solves *some* problems, so that GRPO
groups get mixed rewards and RL has something to sharpen. :func:`warm_start` builds the byte-level
tokenizer and a tiny random Qwen2/Llama model (``thr.tiny``), runs a short supervised phase with
teacher forcing on ``prompt + solution + eos`` (loss on the solution tokens only), deliberately
stopped early, and saves the result with ``save_pretrained`` into a cache directory keyed by the
config and the task version. A second call returns the cached directory at once.

The cache is written atomically: everything goes to a hidden temporary directory next to the
final one, which is renamed into place only when complete, so an interrupted run never leaves a
half-written model at the cache path. Default cache: ``$THR_CACHE_DIR`` or ``~/.cache/thr/embedded``.
See ``docs/embedded.md`` for the task, the tuned defaults and measured numbers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from thr.tasks.arith import TASK_VERSION, ArithConfig, load_split

# Bump when the training recipe or the saved layout changes (old cache entries are then ignored).
EMBEDDED_VERSION = "embedded-1"
INFO_FILE = "warm_start_info.json"
PROMPT_TEMPLATE = "plain"
_STALE_TMP_S = 6 * 3600


@dataclass
class EmbeddedConfig:
    """Everything that determines the warm-started model (all of it enters the cache key).

    Attributes:
        arch: ``"qwen2"`` or ``"llama"`` (``thr.tiny.build_model``).
        hidden_size: model width.
        num_layers: transformer blocks.
        num_heads: attention heads (must divide ``hidden_size``).
        intermediate_size: MLP width; 0 means ``4 * hidden_size``.
        seed: model init, data order and task splits.
        sft_steps: most optimizer steps of the supervised phase (also the horizon of the cosine
            schedule). Training stops early on purpose, either here or at the accuracy target
            below, so that the policy is only partly trained and RL has room to improve it.
        target_val_accuracy: stop as soon as greedy accuracy on the validation problems reaches
            this (0 disables the check: exactly ``sft_steps`` steps). Arithmetic is learned in a
            sharp, seed-dependent transition, so a fixed step count lands anywhere between ~10%
            and ~70%; the target makes the warm start land in the intended band.
        val_problems: validation problems for the target: the ones that follow the training
            split in its generator stream, so they are disjoint from the SFT/RL training problems
            and from the test split (only generated when a check can happen).
        check_after: first step at which the target is checked.
        check_every: steps between checks.
        batch_size: sequences per step.
        lr: peak AdamW learning rate (linear warmup, then cosine decay to ``lr * min_lr_ratio``).
        warmup_steps: linear warmup length.
        min_lr_ratio: final learning rate as a fraction of ``lr``.
        weight_decay: AdamW decoupled weight decay.
        grad_clip: max global gradient norm (0 disables clipping).
        n_sft_examples: size of the training split (SFT samples from it with replacement; RL
            later trains on the same split).
        n_test: size of the held-out split (RL evaluation uses the same split).
        min_operands, max_operands, min_value, max_value, ops, max_multiplier, max_result:
            task difficulty, see :class:`thr.tasks.arith.ArithConfig`.
        eval_problems: held-out problems scored greedily after training (0 skips).
        eval_pass_problems: held-out problems scored with ``eval_pass_k`` samples at T=1 (0 skips).
        eval_pass_k: samples per problem for the pass@k measurement.
        max_new_tokens: generation budget of the evaluation.
    """

    arch: Literal["qwen2", "llama"] = "qwen2"
    hidden_size: int = 64
    num_layers: int = 3
    num_heads: int = 4
    intermediate_size: int = 0
    seed: int = 0
    sft_steps: int = 1600
    target_val_accuracy: float = 0.30
    val_problems: int = 128
    check_after: int = 500
    check_every: int = 50
    batch_size: int = 32
    lr: float = 5e-3
    warmup_steps: int = 30
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    n_sft_examples: int = 20000
    n_test: int = 500
    min_operands: int = 2
    max_operands: int = 3
    min_value: int = 1
    max_value: int = 50
    ops: str = "+-*"
    max_multiplier: int = 9
    max_result: int = 99
    eval_problems: int = 200
    eval_pass_problems: int = 64
    eval_pass_k: int = 8
    max_new_tokens: int = 48

    def task_config(self) -> ArithConfig:
        """The :class:`ArithConfig` of this run's task."""
        return ArithConfig(
            seed=self.seed,
            n_train=self.n_sft_examples,
            n_test=self.n_test,
            min_operands=self.min_operands,
            max_operands=self.max_operands,
            min_value=self.min_value,
            max_value=self.max_value,
            ops=self.ops,
            max_multiplier=self.max_multiplier,
            max_result=self.max_result,
        )

    def task_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``thr.tasks.arith.load_split`` (seed included)."""
        return dataclasses.asdict(self.task_config())

    def validate(self) -> EmbeddedConfig:
        """Raise ``ValueError`` naming the first bad field; return ``self``."""
        if self.arch not in ("qwen2", "llama"):
            raise ValueError(f"arch must be 'qwen2' or 'llama', got {self.arch!r}")
        for name in ("hidden_size", "num_layers", "num_heads", "sft_steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} must be divisible by num_heads={self.num_heads}")
        if self.intermediate_size < 0:
            raise ValueError("intermediate_size must be >= 0 (0 means 4 * hidden_size)")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if self.warmup_steps < 0 or not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError("need warmup_steps >= 0 and 0 <= min_lr_ratio <= 1")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("weight_decay and grad_clip must be >= 0")
        if not 0.0 <= self.target_val_accuracy <= 1.0:
            raise ValueError("target_val_accuracy must be in [0, 1]")
        if self.val_problems < 0 or self.check_after < 0 or self.check_every < 1:
            raise ValueError("need val_problems >= 0, check_after >= 0 and check_every >= 1")
        if self.target_val_accuracy > 0 and self.val_problems == 0:
            raise ValueError("target_val_accuracy needs val_problems > 0")
        if self.n_sft_examples < 1:
            raise ValueError("n_sft_examples must be >= 1")
        for name in ("eval_problems", "eval_pass_problems", "eval_pass_k"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if max(self.eval_problems, self.eval_pass_problems) > self.n_test:
            raise ValueError("eval_problems and eval_pass_problems must be <= n_test")
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        self.task_config().validate()
        return self


def default_cache_dir() -> Path:
    """``$THR_CACHE_DIR`` if set, else ``~/.cache/thr/embedded``."""
    env = os.environ.get("THR_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "thr" / "embedded"


def cache_key(cfg: EmbeddedConfig) -> str:
    """Directory name of ``cfg``'s warm start: readable prefix + hash of config and versions."""
    payload = json.dumps(
        {"config": dataclasses.asdict(cfg), "task": TASK_VERSION, "embedded": EMBEDDED_VERSION},
        sort_keys=True,
    )
    digest = hashlib.sha256(payload.encode()).hexdigest()[:16]
    return f"{cfg.arch}-h{cfg.hidden_size}-l{cfg.num_layers}-s{cfg.sft_steps}-{digest}"


def lr_at(step: int, cfg: EmbeddedConfig) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warmup, then cosine decay."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.sft_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _encode_texts(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Token ids of ``texts`` without special tokens.

    ``thr.tiny``'s byte-level tokenizer maps byte ``b`` to id ``b``; when a probe confirms that,
    the UTF-8 bytes are used directly (the Rust tokenizer is ~10x slower on 10^4 short texts).
    """
    probe = texts[:16]
    if probe and tokenizer(probe, add_special_tokens=False)["input_ids"] == [list(t.encode()) for t in probe]:
        return [list(t.encode()) for t in texts]
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def encode_sft(tokenizer: Any, examples: list[dict[str, str]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``(input_ids, labels)`` for ``prompt + solution + eos``.

    ``labels`` is -100 on prompt tokens and padding, so the loss covers the solution and the eos.
    """
    from thr.prompts import format_prompt

    prompts = _encode_texts(tokenizer, [format_prompt(tokenizer, ex["problem"], PROMPT_TEMPLATE) for ex in examples])
    targets = _encode_texts(tokenizer, [ex["solution"] for ex in examples])
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    length = max(len(p) + len(t) + 1 for p, t in zip(prompts, targets))
    ids_rows, label_rows = [], []
    for prompt, target in zip(prompts, targets):
        target = target + [eos]
        fill = length - len(prompt) - len(target)
        ids_rows.append(prompt + target + [pad] * fill)
        label_rows.append([-100] * len(prompt) + target + [-100] * fill)
    return torch.tensor(ids_rows, dtype=torch.long), torch.tensor(label_rows, dtype=torch.long)


def _optimizer(model: Any, cfg: EmbeddedConfig) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices only (not on norms, biases)."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "norm" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "norm" not in n)]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98))


def _val_accuracy(model: Any, tokenizer: Any, problems: list[dict[str, str]], cfg: EmbeddedConfig) -> float:
    """Greedy accuracy on ``problems`` (the model is left in train mode)."""
    model.eval()
    acc = evaluate_policy(model, tokenizer, problems, max_new_tokens=cfg.max_new_tokens)["accuracy"]
    model.train()
    return acc


def sft_train(
    model: Any,
    tokenizer: Any,
    cfg: EmbeddedConfig,
    *,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Supervised warm start of ``model`` in place (see :class:`EmbeddedConfig` for the stop rule).

    Returns ``{"losses": [...], "val": [[step, accuracy], ...], "steps": n}``.
    ``on_step(step, loss)`` is called after each optimizer step (e.g. for logging).
    """
    from tqdm.auto import tqdm

    checks = cfg.target_val_accuracy > 0 and cfg.check_after <= cfg.sft_steps
    task = {**cfg.task_kwargs(), "n_train": cfg.n_sft_examples + (cfg.val_problems if checks else 0)}
    train = load_split("train", **task)  # the first n_sft_examples are the task's training split
    input_ids, labels = encode_sft(tokenizer, train[: cfg.n_sft_examples])
    val = train[cfg.n_sft_examples :]
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = _optimizer(model, cfg)
    model.train()
    losses: list[float] = []
    val_curve: list[list[float]] = []
    bar = tqdm(range(cfg.sft_steps), desc="warm start (SFT)", disable=not progress, leave=False)
    for step in bar:
        idx = torch.randint(0, input_ids.shape[0], (cfg.batch_size,), generator=gen)
        ids, lab = input_ids[idx], labels[idx]
        keep = int((lab != -100).any(0).nonzero().max()) + 1  # trim trailing all-pad columns
        ids, lab = ids[:, :keep], lab[:, :keep]
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        loss = model(input_ids=ids, attention_mask=(ids != tokenizer.pad_token_id).long(), labels=lab).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        losses.append(float(loss.detach()))
        if step % 10 == 0:
            bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
        if on_step is not None:
            on_step(step, losses[-1])
        done = step + 1
        if checks and done >= cfg.check_after and (done - cfg.check_after) % cfg.check_every == 0:
            val_curve.append([done, _val_accuracy(model, tokenizer, val, cfg)])
            bar.set_postfix(loss=f"{losses[-1]:.3f}", val=f"{val_curve[-1][1]:.2f}")
            if val_curve[-1][1] >= cfg.target_val_accuracy:
                break
    bar.close()
    model.eval()
    return {"losses": losses, "val": val_curve, "steps": len(losses)}


def evaluate_policy(
    model: Any,
    tokenizer: Any,
    problems: list[dict[str, str]],
    *,
    k: int = 1,
    temperature: float = 0.0,
    max_new_tokens: int = 48,
    seed: int = 0,
) -> dict[str, float]:
    """Accuracy statistics of ``k`` completions per problem (greedy when ``temperature`` is 0).

    Returns ``accuracy`` (mean over all completions), ``pass_at_k`` (a problem counts when any
    completion is right), ``mixed`` (fraction of problems with some right and some wrong
    completions: the groups GRPO learns from), ``boxed`` (completions with a ``\\boxed{}`` that
    end with eos) and ``n_problems``. Scored with ``thr.verifier.verify``.
    """
    from thr.generation import generate
    from thr.prompts import format_prompt
    from thr.verifier import verify

    if not problems:
        return {"accuracy": 0.0, "pass_at_k": 0.0, "mixed": 0.0, "boxed": 0.0, "n_problems": 0}
    prompts = [format_prompt(tokenizer, p["problem"], PROMPT_TEMPLATE) for p in problems]
    samples = generate(
        model,
        tokenizer,
        prompts,
        n=k,
        temperature=temperature,
        top_p=1.0,
        max_new_tokens=max_new_tokens,
        batch_size=256,
        seed=seed,
    )
    right = [[verify(s.text, p["answer"]) for s in group] for group, p in zip(samples, problems)]
    formed = [("\\boxed{" in s.text and s.finish_reason == "stop") for group in samples for s in group]
    n = len(problems)
    return {
        "accuracy": sum(map(sum, right)) / (n * k),
        "pass_at_k": sum(any(r) for r in right) / n,
        "mixed": sum(any(r) and not all(r) for r in right) / n,
        "boxed": sum(formed) / len(formed),
        "n_problems": n,
    }


def _evaluate(model: Any, tokenizer: Any, cfg: EmbeddedConfig) -> dict[str, Any]:
    """The end-of-warm-start evaluation recorded in ``warm_start_info.json``."""
    test = load_split("test", **cfg.task_kwargs())
    result: dict[str, Any] = {}
    if cfg.eval_problems:
        result["greedy"] = evaluate_policy(
            model, tokenizer, test[: cfg.eval_problems], max_new_tokens=cfg.max_new_tokens
        )
    if cfg.eval_pass_problems and cfg.eval_pass_k:
        result[f"sample_t1_k{cfg.eval_pass_k}"] = evaluate_policy(
            model,
            tokenizer,
            test[: cfg.eval_pass_problems],
            k=cfg.eval_pass_k,
            temperature=1.0,
            max_new_tokens=cfg.max_new_tokens,
            seed=cfg.seed,
        )
    return result


def _loss_summary(losses: list[float], points: int = 20) -> dict[str, Any]:
    """First/last/min loss and a downsampled curve (means of equal chunks)."""
    tail = losses[-10:]
    chunk = max(1, math.ceil(len(losses) / points))
    curve = [sum(losses[i : i + chunk]) / len(losses[i : i + chunk]) for i in range(0, len(losses), chunk)]
    return {
        "first": losses[0],
        "last": losses[-1],
        "last10_mean": sum(tail) / len(tail),
        "min": min(losses),
        "curve_chunk_steps": chunk,
        "curve": [round(x, 4) for x in curve],
    }


def _remove_stale_tmp(root: Path) -> None:
    """Delete temporary directories of warm starts killed long ago (never a live one)."""
    now = time.time()
    for tmp in root.glob(".*.tmp-*"):
        try:
            if tmp.is_dir() and now - tmp.stat().st_mtime > _STALE_TMP_S:
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError:
            pass


def _is_complete(path: Path) -> bool:
    return (path / INFO_FILE).is_file() and (path / "config.json").is_file()


def _publish(tmp: Path, final: Path, force: bool) -> Path:
    """Rename the finished ``tmp`` to ``final`` atomically (replacing it when ``force``)."""
    if final.exists():
        if not force and _is_complete(final):  # another process finished first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
            return final
        trash = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
        os.replace(final, trash / "old")
        os.replace(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        try:
            os.replace(tmp, final)
        except OSError:  # another process published the same key meanwhile
            if not _is_complete(final):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def warm_start(
    cfg: EmbeddedConfig | None = None,
    *,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    force: bool = False,
    on_step: Callable[[int, float], None] | None = None,
) -> Path:
    """Path of the warm-started model + tokenizer for ``cfg`` (trained now unless cached).

    The directory loads with ``AutoModelForCausalLM.from_pretrained`` and
    ``AutoTokenizer.from_pretrained`` and holds ``warm_start_info.json`` (config, loss summary,
    wall seconds, held-out greedy accuracy and pass@k). ``force`` retrains and replaces the cache
    entry. ``on_step(step, loss)`` is called after every SFT step; an exception raised anywhere
    during training leaves no directory at the cache path.
    """
    from thr.tiny import build_model, build_tokenizer

    cfg = (cfg or EmbeddedConfig()).validate()
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    final = root / cache_key(cfg)
    if not force and _is_complete(final):
        return final
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(root)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=root))
    try:
        start, cpu_start = time.perf_counter(), time.process_time()
        tokenizer = build_tokenizer()
        model = build_model(
            tokenizer,
            arch=cfg.arch,
            hidden_size=cfg.hidden_size,
            num_layers=cfg.num_layers,
            num_heads=cfg.num_heads,
            intermediate_size=cfg.intermediate_size or None,
            seed=cfg.seed,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            sft = sft_train(model, tokenizer, cfg, progress=progress, on_step=on_step)
        train_s, train_cpu = time.perf_counter() - start, time.process_time() - cpu_start
        evaluation = _evaluate(model, tokenizer, cfg)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        info = {
            "config": dataclasses.asdict(cfg),
            "task_version": TASK_VERSION,
            "embedded_version": EMBEDDED_VERSION,
            "n_params": sum(p.numel() for p in model.parameters()),
            "sft_steps_run": sft["steps"],
            "val_accuracy": sft["val"],
            "loss": _loss_summary(sft["losses"]),
            "train_seconds": round(train_s, 2),
            "train_cpu_seconds": round(train_cpu, 2),
            "wall_seconds": round(time.perf_counter() - start, 2),
            "cpu_seconds": round(time.process_time() - cpu_start, 2),
            "torch_threads": torch.get_num_threads(),
            "eval": evaluation,
        }
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
        return _publish(tmp, final, force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_info(path: str | Path) -> dict[str, Any]:
    """The ``warm_start_info.json`` of a warm-start directory."""
    return json.loads((Path(path) / INFO_FILE).read_text())
