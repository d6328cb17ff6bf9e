"""Training-side data helpers: the train/held-out problem lists and the logged token groups."""

from __future__ import annotations

from typing import Any

import torch

from thr.data import Problem, load_arith, load_problems


def load_train_eval(cfg: Any) -> tuple[list[Problem], list[Problem]]:
    """``(train, held_out)`` problems of a :class:`thr.train_config.TrainConfig`.

    ``arith`` uses the embedded model's task settings (``cfg.embedded``) so that the RL task is
    the one the warm start was trained on, with the same disjoint splits.
    """
    d = cfg.data
    fields = dict(problem_field=d.problem_field or None, answer_field=d.answer_field or None)
    task = cfg.embedded.task_kwargs()

    def load(source: str, split: str) -> list[Problem]:
        if source == "arith":
            return load_arith(split, **task)
        return load_problems(source, split=split or None, **fields)

    train = load(d.train, d.train_split)
    if d.train_limit:
        train = train[: d.train_limit]
    if not train:
        raise ValueError(f"data.train={d.train!r} gave no problems; point it at a dataset with rows")
    held_out = load(d.eval, d.eval_split) if d.eval else []
    return train, held_out


def group_records(trainer: Any, problems, samples, scores, batch, old, advantages, token_adv) -> list[dict[str, Any]]:
    """Per-token THR records of the first ``log.groups_per_log`` groups (for heat maps)."""
    G = trainer.cfg.rollout.group_size
    tok = trainer.tokenizer
    inf = old["influence"]
    thr_vals = advantages[:, None].float() * inf
    records = []
    for g in range(min(trainer.cfg.log.groups_per_log, len(problems))):
        responses = []
        for j in range(g * G, (g + 1) * G):
            n = int(batch.response_mask[j].sum())
            ids = batch.response_ids[j, :n].tolist()
            responses.append({
                "text": samples[j].text,
                "reward": scores[j].reward,
                "correct": scores[j].correct,
                "advantage": float(advantages[j]),
                "tokens": [tok.decode([i]) for i in ids],
                "thr": _round(thr_vals[j, :n]),
                "influence": _round(inf[j, :n]),
                "entropy": _round(old["entropy"][j, :n]),
                "prob": _round(old["old_log_probs"][j, :n].exp()),
                "token_advantage": _round(token_adv[j, :n]),
            })
        records.append({"group": g, "problem": problems[g].problem, "answer": problems[g].answer, "responses": responses})
    return records


def _round(t: torch.Tensor) -> list[float]:
    return [float(f"{v:.6g}") for v in t.float().tolist()]
