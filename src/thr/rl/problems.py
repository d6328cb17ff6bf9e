"""Training-side data helpers: the train / held-out problem lists of a run and its built-in task."""

from __future__ import annotations

import sys
from typing import Any

from thr.data.problems import Problem, load_problems, load_task


def builtin_task_settings(cfg: Any, source: str) -> dict[str, Any] | None:
    """``load_task`` settings of a built-in task named ``source``, None for any other source: the
    embedded model's task uses ``cfg.embedded``'s settings, the other its defaults with its seed."""
    if source not in ("columns", "arith"):
        return None
    return cfg.embedded.task_kwargs() if source == cfg.embedded.task else {"seed": cfg.embedded.seed}


def load_train_eval(cfg: Any) -> tuple[list[Problem], list[Problem]]:
    """``(train, held_out)`` problems of a :class:`thr.rl.config.TrainConfig`.

    A built-in task (``columns``, ``arith``) that is the embedded model's task uses its settings
    (``cfg.embedded``), so that the RL task is the one the warm start was trained on, with the same
    disjoint splits; another built-in task uses its defaults with ``cfg.embedded.seed``.
    """
    d = cfg.data
    fields = dict(problem_field=d.problem_field or None, answer_field=d.answer_field or None)

    def load(key: str, source: str, split: str) -> list[Problem]:
        settings = builtin_task_settings(cfg, source)
        if settings is not None:
            return load_task(source, split, **settings)
        try:
            return load_problems(source, split=split or None, key_prefix="data.", **fields)
        except FileNotFoundError as err:
            raise ValueError(f"data.{key}: {err}") from None

    train = load("train", d.train, d.train_split)
    if d.train_limit:
        train = train[: d.train_limit]
    if not train:
        raise ValueError(f"data.train={d.train!r} gave no problems; point it at a dataset with rows")
    held_out = load("eval", d.eval, d.eval_split) if d.eval else []
    return train, held_out


def warn_base_outside_band(cfg: Any, base: dict[str, float]) -> None:
    """Say so when the embedded ``columns`` model starts outside its intended greedy band."""
    from thr.models.embedded_config import GREEDY_BAND

    greedy = base.get("eval/greedy_accuracy")
    if cfg.model.name_or_path != "embedded" or cfg.embedded.task != "columns" or cfg.data.eval != "columns":
        return
    if greedy is not None and not GREEDY_BAND[0] <= greedy <= GREEDY_BAND[1]:
        print(f"warning: the embedded base model's held-out greedy accuracy is {greedy:.1%}, outside the intended "
              f"{GREEDY_BAND[0]:.0%}-{GREEDY_BAND[1]:.0%} (see docs/embedded.md); RL figures will not compare "
              "with the documented ones", file=sys.stderr)

def checks_solutions(cfg: Any) -> bool:
    """Whether the reward holds responses to their built-in task's full solution check
    (``reward.check_steps``: ``auto`` for ``columns`` and ``arith``)."""
    builtin = cfg.data.train in ("columns", "arith")
    if cfg.reward.check_steps == "true" and not builtin:
        raise ValueError(f"reward.check_steps=true needs a built-in task as data.train (columns or arith), "
                         f"got {cfg.data.train!r}; use reward.check_steps=auto")
    return builtin and cfg.reward.check_steps != "false"

def task_info(cfg: Any) -> dict[str, Any]:
    """The built-in task of ``data.train`` and its settings (as ``thr.rl.problems`` loads it), for
    ``thr_prompt.json``; empty for other data."""
    settings = builtin_task_settings(cfg, cfg.data.train)
    return {} if settings is None else {"task": cfg.data.train, "task_settings": settings}
