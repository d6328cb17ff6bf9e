"""The supervised warm start of the embedded model: batches, schedule and the training loop.

Plain torch, no Trainer: teacher forcing on ``prompt + solution + eos`` with the loss on the
solution and eos only, AdamW (weight decay on matrices), linear warmup then cosine decay, gradient
clipping. ``thr.models.embedded.warm_start`` calls :func:`sft_train` and caches the result.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

import torch

from thr.models.embedded_config import PROMPT_TEMPLATE, EmbeddedConfig
from thr.data.tasks import columns


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

    ``thr.models.tiny``'s byte-level tokenizer maps byte ``b`` to id ``b``; when a probe confirms that,
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
    from thr.data.prompts import format_prompt

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
    from thr.models.imitation import evaluate_policy

    acc = evaluate_policy(model, tokenizer, problems, max_new_tokens=cfg.max_new_tokens, task=cfg.task)["accuracy"]
    model.train()
    return acc


def _batches(tokenizer: Any, train: list[dict[str, Any]], cfg: EmbeddedConfig) -> Callable[[int], tuple[torch.Tensor, torch.Tensor]]:
    """``batch(step) -> (input_ids, labels)``: ``batch_size`` training problems drawn with replacement.

    ``columns``: each draw gets a fresh solution from the teacher (its own seeded stream per step),
    so the model learns the teacher's rates, not one fixed choice per problem. ``arith``: the
    problem's one worked solution (encoded once).
    """
    gen = torch.Generator().manual_seed(cfg.seed)
    if cfg.task == "columns":
        def teacher(problem: str, rng: random.Random) -> str:
            return columns.teacher_solution(problem, rng, carry_slip=cfg.carry_slip,
                                            borrow_slip=cfg.borrow_slip)["solution"]

        def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
            idx = torch.randint(0, len(train), (cfg.batch_size,), generator=gen).tolist()
            rng = random.Random(f"teacher/{cfg.seed}/{step}")
            rows = [{"problem": train[i]["problem"], "solution": teacher(train[i]["problem"], rng)} for i in idx]
            return encode_sft(tokenizer, rows)

        return batch
    input_ids, labels = encode_sft(tokenizer, train)

    def fixed(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(0, input_ids.shape[0], (cfg.batch_size,), generator=gen)
        ids, lab = input_ids[idx], labels[idx]
        keep = int((lab != -100).any(0).nonzero().max()) + 1  # trim trailing all-pad columns
        return ids[:, :keep], lab[:, :keep]

    return fixed


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
    train = cfg.task_module().load_split("train", **task)  # the first n_sft_examples: the training split
    val = train[cfg.n_sft_examples :]
    next_batch = _batches(tokenizer, train[: cfg.n_sft_examples], cfg)
    opt = _optimizer(model, cfg)
    model.train()
    losses: list[float] = []
    val_curve: list[list[float]] = []
    bar = tqdm(range(cfg.sft_steps), desc="warm start (SFT)", disable=not progress, leave=False)
    for step in bar:
        ids, lab = next_batch(step)
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
