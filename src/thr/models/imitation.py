"""How closely a warm-started model imitates the ``columns`` teacher (``thr.data.tasks.columns``).

The teacher's choices (carry or not, borrow or not) are coin flips with known rates, so two exact
yardsticks exist for a model trained on its solutions:

- the **entropy floor**: no model can have a lower expected loss on the teacher's solutions than
  the entropy of those coin flips, spread over the solution's tokens. A warm start at its plateau
  has a loss within a few thousandths of a nat per token of it;
- the **teacher's success probability** ``(1-carry_slip)^c (1-borrow_slip)^b``: a faithful
  imitation gives the right solution the same probability (its sampled accuracy at T = 1).

:func:`imitation_report` measures both on validation problems (the ones that follow the training
split in its generator stream, disjoint from the training and test problems).
"""

from __future__ import annotations

import math
import random
from typing import Any

import torch

from thr.data.tasks import columns


@torch.no_grad()
def solution_log_probs(model: Any, tokenizer: Any, rows: list[dict[str, str]], batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log_prob [N], num_tokens [N])`` of each row's ``solution`` + eos after its prompt."""
    from thr.models.sft import encode_sft

    log_probs, counts = [], []
    model.eval()
    for start in range(0, len(rows), batch_size):
        ids, labels = encode_sft(tokenizer, rows[start : start + batch_size])
        logits = model(input_ids=ids, attention_mask=(ids != tokenizer.pad_token_id).long()).logits[:, :-1].float()
        target = labels[:, 1:]
        mask = target != -100
        lp = torch.log_softmax(logits, -1).gather(-1, target.clamp(min=0)[..., None]).squeeze(-1)
        log_probs.append((lp * mask).sum(1))
        counts.append(mask.sum(1))
    return torch.cat(log_probs), torch.cat(counts)


def imitation_report(model: Any, tokenizer: Any, cfg: Any, n_problems: int = 256) -> dict[str, float]:
    """Plateau and fidelity figures of ``model`` against the teacher of ``cfg`` (an
    ``EmbeddedConfig`` with ``task="columns"``), on ``n_problems`` validation problems.

    Returns ``loss_per_token`` (the model's loss on fresh teacher solutions), ``floor_per_token``
    (the teacher's entropy over the same tokens), ``excess_per_token`` (their difference: ~0 at a
    plateau), ``teacher_success`` and ``model_success`` (mean probability of the right solution
    under the teacher and under the model) and ``n_problems``.
    """
    task = {**cfg.task_kwargs(), "n_train": cfg.n_sft_examples + n_problems}
    problems = columns.load_split("train", **task)[cfg.n_sft_examples :]
    rng = random.Random(f"imitation/{cfg.seed}")
    samples = [columns.teacher_solution(p["problem"], rng, carry_slip=cfg.carry_slip, borrow_slip=cfg.borrow_slip)
               for p in problems]
    rows = [{"problem": p["problem"], "solution": s["solution"]} for p, s in zip(problems, samples)]
    lp, count = solution_log_probs(model, tokenizer, rows)
    floor = sum(columns.binary_entropy(rate) for s in samples for rate in s["decisions"])
    tokens = float(count.sum())
    right_rows = [{"problem": p["problem"], "solution": p["solution"]} for p in problems]
    right_lp, _ = solution_log_probs(model, tokenizer, right_rows)
    teacher = [columns.teacher_success(p["problem"], carry_slip=cfg.carry_slip, borrow_slip=cfg.borrow_slip)
               for p in problems]
    loss = float(-lp.sum()) / tokens
    return {
        "loss_per_token": round(loss, 5),
        "floor_per_token": round(floor / tokens, 5),
        "excess_per_token": round(loss - floor / tokens, 5),
        "teacher_success": round(sum(teacher) / len(teacher), 4),
        "model_success": round(float(right_lp.exp().mean()), 4),
        "n_problems": len(problems),
    }


def plateau_warnings(report: dict[str, float], *, max_excess: float = 0.01, max_success_gap: float = 0.05) -> list[str]:
    """Human-readable warnings when ``report`` shows a warm start short of its plateau."""
    out = []
    if report["excess_per_token"] > max_excess:
        out.append(f"its loss is {report['excess_per_token']:.4f} nats/token above the teacher's entropy floor "
                   f"(> {max_excess}): it has not reached its plateau; raise embedded.sft_steps")
    gap = report["model_success"] - report["teacher_success"]
    if not math.isfinite(gap) or abs(gap) > max_success_gap:
        out.append(f"it gives the right solution probability {report['model_success']:.3f} where the teacher "
                   f"gives {report['teacher_success']:.3f}: it does not imitate the teacher's rates")
    return out


def evaluate_policy(
    model: Any,
    tokenizer: Any,
    problems: list[dict[str, str]],
    *,
    k: int = 1,
    temperature: float = 0.0,
    max_new_tokens: int = 160,
    seed: int = 0,
    task: str | None = None,
) -> dict[str, float]:
    """Accuracy statistics of ``k`` completions per problem (greedy when ``temperature`` is 0).

    Returns ``accuracy`` (mean over all completions), ``any_correct`` (a problem counts when any
    of its ``k`` completions is right: the unbiased Pass@K of ``thr.eval.evaluate`` with n = k), ``mixed`` (fraction of problems with some right and some wrong
    completions: the groups GRPO learns from), ``boxed`` (completions with a ``\\boxed{}`` that
    end with eos) and ``n_problems``. Scored with ``thr.verifier.verify`` and, for a built-in
    ``task``, its full check of the worked solution (the trainer's reward rule).
    """
    from thr.models.embedded_config import PROMPT_TEMPLATE
    from thr.models.generation import generate
    from thr.data.prompts import format_prompt
    from thr.data.tasks import solution_checker
    from thr.verifier import verify

    check = solution_checker(task) if task else None

    if not problems:
        return {"accuracy": 0.0, "any_correct": 0.0, "mixed": 0.0, "boxed": 0.0, "n_problems": 0}
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
    right = [
        [s.finish_reason == "stop" and verify(s.text, p["answer"]) and (check is None or check(s.text, p["problem"]))
         for s in group]
        for group, p in zip(samples, problems)
    ]
    formed = [("\\boxed{" in s.text and s.finish_reason == "stop") for group in samples for s in group]
    n = len(problems)
    return {
        "accuracy": sum(map(sum, right)) / (n * k),
        "any_correct": sum(any(r) for r in right) / n,
        "mixed": sum(any(r) and not all(r) for r in right) / n,
        "boxed": sum(formed) / len(formed),
        "n_problems": n,
    }


def evaluate_warm_start(model: Any, tokenizer: Any, cfg: Any) -> dict[str, Any]:
    """The end-of-warm-start evaluation recorded in ``warm_start_info.json``."""
    test = cfg.task_module().load_split("test", **cfg.task_kwargs())
    result: dict[str, Any] = {}
    if cfg.eval_problems:
        result["greedy"] = evaluate_policy(
            model, tokenizer, test[: cfg.eval_problems], max_new_tokens=cfg.max_new_tokens, task=cfg.task
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
            task=cfg.task,
        )
    if cfg.task == "columns":
        result["imitation"] = imitation_report(model, tokenizer, cfg, n_problems=max(1, cfg.val_problems))
    return result
