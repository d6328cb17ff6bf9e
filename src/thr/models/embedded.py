"""The embedded default: a tiny model warm-started on a built-in task.

``thr train`` with no arguments needs a policy that already solves *some* problems, so that GRPO
groups get mixed rewards and RL has something to sharpen. :func:`warm_start` builds the byte-level
tokenizer and a tiny random Qwen2/Llama model (``thr.models.tiny``), runs a supervised phase with teacher
forcing on ``prompt + solution + eos`` (loss on the solution tokens only) and saves the result with
``save_pretrained`` into a cache directory keyed by the config and the task version. On the
default task, ``columns``, the solutions come from a teacher that mixes the right procedure with two
learners' habits, and the warm start trains to a plateau: the base model's quality is then set by
the teacher's rates, on any CPU (``thr.models.imitation`` checks the plateau).

The default recipe's warm start ships in the package (``thr.models.shipped``): ``warm_start`` returns it
at once. Other recipes and seeds are trained on first use, and a second call returns the cached
directory. The cache is written atomically: everything goes to a hidden temporary directory next
to the final one, renamed into place only when complete, so an interrupted run never leaves a
half-written model at the cache path. Default cache: ``$THR_CACHE_DIR`` or
``~/.cache/thr/embedded``. See ``docs/embedded.md`` for the task, the recipe and measured numbers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from thr.data.tasks import arith, columns
from thr.data.tasks.arith import ArithConfig
from thr.data.tasks.columns import ColumnsConfig

# Bump when the training recipe or the saved layout changes (old cache entries are then ignored).
EMBEDDED_VERSION = "embedded-2"
INFO_FILE = "warm_start_info.json"
PROMPT_TEMPLATE = "plain"
_STALE_TMP_S = 6 * 3600


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
    hidden_size: int = 64
    num_layers: int = 3
    num_heads: int = 4
    intermediate_size: int = 0
    seed: int = 0
    use_shipped: bool = True
    sft_steps: int = 3000
    target_val_accuracy: float = 0.0
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
    n_test: int = 1000
    ops_per_problem: int = 3
    event_weights: str = "0.35,0.15,0.2,0.3"
    carry_slip: float = 0.7
    borrow_slip: float = 0.85
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
    max_new_tokens: int = 160

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
        """Raise ``ValueError`` naming the first bad field; return ``self``."""
        if self.task not in ("columns", "arith"):
            raise ValueError(f"task must be 'columns' or 'arith', got {self.task!r}")
        if not (0.0 <= self.carry_slip <= 1.0 and 0.0 <= self.borrow_slip <= 1.0):
            raise ValueError("carry_slip and borrow_slip are probabilities: keep them in [0, 1]")
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
        try:
            self.task_config().validate()
        except ValueError as err:  # name this config's fields, not the task config's
            names = "ops_per_problem, event_weights" if self.task == "columns" else "the arith task fields"
            raise ValueError(f"{names}: {err}") from None
        return self


def default_cache_dir() -> Path:
    """``$THR_CACHE_DIR`` if set, else ``~/.cache/thr/embedded``."""
    env = os.environ.get("THR_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "thr" / "embedded"


# Fields that do not change the trained weights (only the final evaluation, or the other task).
_EVAL_ONLY = {"use_shipped", "eval_problems", "eval_pass_problems", "eval_pass_k", "max_new_tokens"}
_TASK_ONLY = {
    "columns": {"ops_per_problem", "event_weights", "carry_slip", "borrow_slip"},
    "arith": {"min_operands", "max_operands", "min_value", "max_value", "ops", "max_multiplier", "max_result"},
}


def recipe_fields(cfg: EmbeddedConfig) -> dict[str, Any]:
    """The fields of ``cfg`` that determine the trained weights, with floats as floats: what the
    cache key hashes (evaluation-only fields, the other task's fields and, without an accuracy
    target, the validation-check fields are left out)."""
    drop = set(_EVAL_ONLY)
    for task, names in _TASK_ONLY.items():
        if task != cfg.task:
            drop |= names
    if cfg.target_val_accuracy == 0:
        drop |= {"val_problems", "check_after", "check_every"}
    floats = {f.name for f in dataclasses.fields(cfg) if f.type in ("float", float)}
    return {k: float(v) if k in floats else v for k, v in dataclasses.asdict(cfg).items() if k not in drop}


def cache_key(cfg: EmbeddedConfig) -> str:
    """Directory name of ``cfg``'s warm start: readable prefix + hash of the recipe and versions."""
    recipe = recipe_fields(cfg)
    payload = json.dumps(
        {"config": recipe, "task": cfg.task_module().TASK_VERSION, "embedded": EMBEDDED_VERSION},
        sort_keys=True,
    )
    digest = hashlib.sha256(payload.encode()).hexdigest()[:16]
    return f"{cfg.task}-{cfg.arch}-h{cfg.hidden_size}-l{cfg.num_layers}-s{cfg.sft_steps}-{digest}"


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
    wall seconds, held-out greedy accuracy and pass@k). A warm start shipped in the package for
    this exact recipe (``thr.models.shipped``) is returned first, unless ``force`` or
    ``cfg.use_shipped=False``; then the cache; else it is trained. ``force`` retrains and replaces
    the cache entry. ``on_step(step, loss)`` is called after every SFT step; an exception raised
    anywhere during training leaves no directory at the cache path.
    """
    from thr.models.imitation import evaluate_warm_start
    from thr.models.sft import sft_train
    from thr.models.tiny import build_model, build_tokenizer

    cfg = (cfg or EmbeddedConfig()).validate()
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    final = root / cache_key(cfg)
    if not force and cfg.use_shipped:  # the shipped copy wins over a local one of the same recipe
        from thr.models.shipped import shipped_path

        shipped = shipped_path(final.name, warn=True)
        if shipped is not None:
            return shipped
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
        evaluation = evaluate_warm_start(model, tokenizer, cfg)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        info = {
            "config": dataclasses.asdict(cfg),
            "task_version": cfg.task_module().TASK_VERSION,
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
        _write_info(tmp, info, cfg, final.name)
        return _publish(tmp, final, force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_info(directory: Path, info: dict[str, Any], cfg: EmbeddedConfig, name: str) -> None:
    """``warm_start_info.json`` (with its quality warnings, also printed) and ``thr_prompt.json``."""
    from thr.data.prompts import save_prompt_info

    info["warnings"] = quality_warnings(info)
    for line in info["warnings"]:
        print(f"warning: warm start {name}: {line}", file=sys.stderr)
    (directory / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    save_prompt_info(directory, PROMPT_TEMPLATE, cfg.task, cfg.task_kwargs())


# The intended band of the columns warm start's greedy accuracy (docs/embedded.md).
GREEDY_BAND = (0.25, 0.50)


def quality_warnings(info: dict[str, Any]) -> list[str]:
    """What is wrong with a finished warm start, in words (empty when nothing is)."""
    from thr.models.imitation import plateau_warnings

    cfg, out = info["config"], []
    val = info.get("val_accuracy") or []
    target = cfg.get("target_val_accuracy", 0)
    if target > 0 and (not val or val[-1][1] < target):
        reached = f"{val[-1][1]:.2f}" if val else "no check"
        out.append(f"it missed its accuracy target {target} (last check: {reached} after {info['sft_steps_run']} "
                   "steps): RL will start from a weaker policy than intended; raise embedded.sft_steps")
    evaluation = info.get("eval", {})
    if "imitation" in evaluation:
        out += plateau_warnings(evaluation["imitation"])
    greedy = evaluation.get("greedy", {}).get("accuracy")
    if cfg.get("task") == "columns" and greedy is not None and not GREEDY_BAND[0] <= greedy <= GREEDY_BAND[1]:
        out.append(f"its held-out greedy accuracy {greedy:.1%} is outside the intended band "
                   f"{GREEDY_BAND[0]:.0%}-{GREEDY_BAND[1]:.0%}")
    return out


def load_info(path: str | Path) -> dict[str, Any]:
    """The ``warm_start_info.json`` of a warm-start directory."""
    return json.loads((Path(path) / INFO_FILE).read_text())


_CLI_USAGE = """usage: thr warm-start [--force] [--export] [key=value ...]

Train (or find in the cache) the embedded model's warm start for the EmbeddedConfig given by the
key=value overrides (the same fields as `thr train embedded.KEY=VALUE`), print its path and
held-out figures. --force retrains even when cached; --export copies the result into the
package (thr/models/embedded_weights/<cache key>/, with a MANIFEST.json of SHA-256 hashes, this command
and the machine), which is how the shipped default was made:

    thr warm-start --force --export            # the default recipe, seed 0

Options (EmbeddedConfig):
"""


def cli_main(argv: list[str] | None = None) -> int:
    """``thr warm-start``: see the usage text above."""
    from thr.config import load_config, options_help

    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(_CLI_USAGE + "\n".join(options_help(EmbeddedConfig())))
        return 0
    force, export = "--force" in argv, "--export" in argv
    rest = [a for a in argv if a not in ("--force", "--export")]
    cfg = load_config(EmbeddedConfig, rest)
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)  # the recipe's thread count (as in `thr train`)
    path = warm_start(cfg, force=force)
    info = load_info(path)
    print(json.dumps({"path": str(path), "eval": info.get("eval"), "warnings": info.get("warnings", [])}, indent=2))
    if export:
        from thr.models.shipped import export as export_dir

        command = "thr warm-start --force --export" + "".join(f" {a}" for a in rest)
        print(f"exported to {export_dir(path, command)}")
    return 0
