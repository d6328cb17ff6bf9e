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
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from thr.models.embedded_config import GREEDY_BAND, INFO_FILE, PROMPT_TEMPLATE, EmbeddedConfig, load_info

# Bump when the training recipe or the saved layout changes (old cache entries are then ignored).
EMBEDDED_VERSION = "embedded-2"
_STALE_TMP_S = 6 * 3600




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
    floats = {name for name, tp in typing.get_type_hints(type(cfg)).items() if tp is float}
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
