"""Train and test splits of a generated task: disjoint, deterministic on every machine.

Shared by the built-in tasks (``thr.data.tasks.columns``, ``thr.data.tasks.arith``): the test split comes
from its own random stream (so changing ``n_train`` does not change it) and the train split
skips every test problem; both streams are ``random.Random`` with string seeds (SHA-512 based)
that name the task version and its difficulty, so the same arguments give the same lists in any
process. Standard library only.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from functools import lru_cache
from typing import Any

Row = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class SplitSizes:
    """The split fields every built-in task's config starts with.

    Attributes:
        seed: fixes both splits.
        n_train: number of (unique) training problems.
        n_test: number of (unique) held-out problems, disjoint from the training ones.
    """

    seed: int = 0
    n_train: int = 20000
    n_test: int = 1000


def unique_problems(rng: random.Random, make: Callable[[random.Random, Any], Row], cfg: Any, n: int,
                    exclude: set[str]) -> list[Row]:
    """``n`` problems from ``make(rng, cfg)`` with distinct texts, none in ``exclude``."""
    out: list[Row] = []
    seen = set(exclude)
    budget = 50 * n + 1000
    while len(out) < n:
        if budget == 0:
            raise ValueError(f"only {len(out)} of {n} distinct problems found for {cfg}; "
                             "widen the difficulty or ask for fewer problems")
        budget -= 1
        item = make(rng, cfg)
        if item["problem"] not in seen:
            seen.add(str(item["problem"]))
            out.append(item)
    return out


@lru_cache(maxsize=16)
def build_splits(cfg: Any, make: Callable[[random.Random, Any], Row], version: str) -> dict[str, tuple[Row, ...]]:
    """Both splits of the (frozen dataclass) config ``cfg`` (cached; callers get copies)."""
    difficulty = dataclasses.replace(cfg, n_train=0, n_test=0)
    tag = f"{version}/{difficulty}"
    test = unique_problems(random.Random(f"{tag}/test/{cfg.seed}"), make, cfg, cfg.n_test, set())
    train_rng = random.Random(f"{tag}/train/{cfg.seed}")
    train = unique_problems(train_rng, make, cfg, cfg.n_train, {str(d["problem"]) for d in test})
    return {"train": tuple(train), "test": tuple(test)}


def load_split(cfg_cls: type, make: Callable[[random.Random, Any], Row], version: str, split: str, seed: int,
               overrides: dict[str, object]) -> list[Row]:
    """The ``split`` of the task whose config class is ``cfg_cls`` with ``overrides`` and ``seed``."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    names = {f.name for f in dataclasses.fields(cfg_cls)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"unknown {cfg_cls.__name__} field(s) {unknown}; valid: {sorted(names)}")
    cfg = cfg_cls(**{**overrides, "seed": seed}).validate()
    return [dict(d) for d in build_splits(cfg, make, version)[split]]
