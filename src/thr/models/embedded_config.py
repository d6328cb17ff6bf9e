"""``EmbeddedConfig``: everything that determines the embedded default's warm-started model.

Kept apart from :mod:`thr.models.embedded` (which trains and caches the warm start) so that
configs (``thr train``'s ``embedded.*`` section) need neither torch nor the training code.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from thr.config import Range
from thr.data.tasks import arith, columns
from thr.data.tasks.arith import ArithConfig
from thr.data.tasks.columns import ColumnsConfig

INFO_FILE = "warm_start_info.json"
PROMPT_TEMPLATE = "plain"
# The intended band of the columns warm start's greedy accuracy (docs/embedded.md).
GREEDY_BAND = (0.25, 0.50)


@dataclass
class EmbeddedConfig:
    """Everything that determines the warm-started model (all of it enters the cache key).

    Attributes:
        task: the built-in task, ``"columns"`` (the default: column arithmetic taught by a teacher
            with two habits, trained to a plateau; ``thr.data.tasks.columns``) or ``"arith"`` (the
            earlier default: short chains, stopped early at an accuracy target).
        arch: ``"qwen2"`` or ``"llama"`` (``thr.models.tiny.build_model``).
        hidden_size: model width.
        num_layers: transformer blocks.
        num_heads: attention heads (must divide ``hidden_size``).
        intermediate_size: MLP width; 0 means ``4 * hidden_size``.
        seed: model init, data order and task splits.
        use_shipped: use the warm start shipped in the package when one has this exact recipe
            (``thr.models.shipped``; not part of the cache key). ``false`` trains it locally.
        sft_steps: optimizer steps of the supervised phase (also the horizon of the cosine
            schedule). ``columns`` trains all of them, to a plateau: RL's room comes from the
            teacher's habits, not from stopping early. ``arith`` may stop earlier at the accuracy
            target below.
        target_val_accuracy: stop as soon as greedy accuracy on the validation problems reaches
            this (0, the default, disables the check: exactly ``sft_steps`` steps; ``arith`` used 0.30). Arithmetic is learned in a
            sharp, seed-dependent transition, so a fixed step count lands anywhere between ~10%
            and ~70%; the target makes the warm start land in the intended band.
        val_problems: validation problems (the ones that follow the training split in its
            generator stream, disjoint from the SFT/RL training problems and the test split): for
            the accuracy target, and for ``columns`` the plateau check (``thr.models.imitation``).
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
        ops_per_problem: ``columns``: operations per problem (3: solutions of 95-131 tokens).
        event_weights: ``columns``: relative share of problems with 0, 1, 2, 3 carries and borrows.
        carry_slip: ``columns``: the teacher's rate of dropping a carry.
        borrow_slip: ``columns``: the teacher's rate of subtracting the smaller digit from the
            larger instead of borrowing.
        min_operands, max_operands, min_value, max_value, ops, max_multiplier, max_result:
            ``arith``: task difficulty, see :class:`thr.data.tasks.arith.ArithConfig`.
        eval_problems: held-out problems scored greedily after training (0 skips).
        eval_pass_problems: held-out problems scored with ``eval_pass_k`` samples at T=1 (0 skips).
        eval_pass_k: samples per problem for the pass@k measurement.
        max_new_tokens: generation budget of the evaluation.
    """

    task: Literal["columns", "arith"] = "columns"
    arch: Literal["qwen2", "llama"] = "qwen2"
    hidden_size: Annotated[int, Range(ge=1)] = 64
    num_layers: Annotated[int, Range(ge=1)] = 3
    num_heads: Annotated[int, Range(ge=1)] = 4
    intermediate_size: Annotated[int, Range(ge=0)] = 0
    seed: int = 0
    use_shipped: bool = True
    sft_steps: Annotated[int, Range(ge=1)] = 3000
    target_val_accuracy: Annotated[float, Range(ge=0, le=1)] = 0.0
    val_problems: Annotated[int, Range(ge=0)] = 128
    check_after: Annotated[int, Range(ge=0)] = 500
    check_every: Annotated[int, Range(ge=1)] = 50
    batch_size: Annotated[int, Range(ge=1)] = 32
    lr: Annotated[float, Range(gt=0)] = 5e-3
    warmup_steps: Annotated[int, Range(ge=0)] = 30
    min_lr_ratio: Annotated[float, Range(ge=0, le=1)] = 0.1
    weight_decay: Annotated[float, Range(ge=0)] = 0.01
    grad_clip: Annotated[float, Range(ge=0)] = 1.0
    n_sft_examples: Annotated[int, Range(ge=1)] = ColumnsConfig.n_train
    n_test: int = ColumnsConfig.n_test
    ops_per_problem: int = ColumnsConfig.min_ops
    event_weights: str = ColumnsConfig.event_weights
    carry_slip: Annotated[float, Range(ge=0, le=1)] = 0.7
    borrow_slip: Annotated[float, Range(ge=0, le=1)] = 0.85
    min_operands: int = ArithConfig.min_operands
    max_operands: int = ArithConfig.max_operands
    min_value: int = ArithConfig.min_value
    max_value: int = ArithConfig.max_value
    ops: str = ArithConfig.ops
    max_multiplier: int = ArithConfig.max_multiplier
    max_result: int = ArithConfig.max_result
    eval_problems: Annotated[int, Range(ge=0)] = 200
    eval_pass_problems: Annotated[int, Range(ge=0)] = 64
    eval_pass_k: Annotated[int, Range(ge=0)] = 8
    max_new_tokens: Annotated[int, Range(ge=1)] = 160

    def task_config(self) -> ArithConfig | ColumnsConfig:
        """The task configuration (:class:`ColumnsConfig` or :class:`ArithConfig`) of this run."""
        if self.task == "columns":
            return ColumnsConfig(
                seed=self.seed,
                n_train=self.n_sft_examples,
                n_test=self.n_test,
                min_ops=self.ops_per_problem,
                max_ops=self.ops_per_problem,
                event_weights=self.event_weights,
            )
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
        """Keyword arguments for the task's ``load_split`` (seed included)."""
        return dataclasses.asdict(self.task_config())

    def task_module(self) -> Any:
        """The task's module (``thr.data.tasks.columns`` or ``thr.data.tasks.arith``)."""
        return columns if self.task == "columns" else arith

    def validate(self) -> EmbeddedConfig:
        """Raise ``ValueError`` naming the first bad field; return ``self`` (choices and bounds come
        from the field types, the rules between fields are written out here)."""
        from thr.config import check_choices

        check_choices(self)
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} must be divisible by num_heads={self.num_heads}")
        if self.target_val_accuracy > 0 and self.val_problems == 0:
            raise ValueError("target_val_accuracy needs val_problems > 0")
        if max(self.eval_problems, self.eval_pass_problems) > self.n_test:
            raise ValueError("eval_problems and eval_pass_problems must be <= n_test")
        try:
            self.task_config().validate()
        except ValueError as err:  # name this config's fields, not the task config's
            names = "ops_per_problem, event_weights" if self.task == "columns" else "the arith task fields"
            raise ValueError(f"{names}: {err}") from None
        return self


def load_info(path: str | Path) -> dict[str, Any]:
    """The ``warm_start_info.json`` of a warm-start directory."""
    return json.loads((Path(path) / INFO_FILE).read_text())
