"""Prompt templates shared by the trainer, the evaluator and the analysis tools.

A template turns a problem statement into the text the model continues. Base models get a plain
string; instruct models get their tokenizer's chat template. The same name must be used for
training and evaluation of one model.

- ``plain``: ``"Problem: {problem}\\nSolution:"`` (the embedded task's format)
- ``boxed``: the problem, then the usual "reason step by step ... \\boxed{}" instruction
- ``qwen_math``: the Qwen2.5-Math chat layout as a literal string (works for base Qwen models;
  the setting used in the NTHR/THR papers' Qwen2.5-Math runs)
- ``chat``: ``tokenizer.apply_chat_template`` with the boxed instruction as system prompt
- ``auto``: the template a saved model was trained with (its ``thr_prompt.json``, see below),
  else ``chat`` when the tokenizer has a chat template, else ``boxed``

A model directory saved by ``thr train`` (``final/``, checkpoints) or by the embedded warm start
carries ``thr_prompt.json`` (:data:`PROMPT_INFO_FILE`): the template it was trained with and, for
a built-in task, the task's name and settings. ``thr eval``, ``thr analyze`` and ``thr train``
read it through :func:`resolve_template` when ``prompt_template=auto``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."

PROMPT_TEMPLATES: dict[str, str] = {
    "plain": "Problem: {problem}\nSolution:",
    "boxed": "{problem}\n" + BOXED_INSTRUCTION + "\n",
    "qwen_math": (
        "<|im_start|>system\n" + BOXED_INSTRUCTION + "<|im_end|>\n"
        "<|im_start|>user\n{problem}<|im_end|>\n<|im_start|>assistant\n"
    ),
}
TEMPLATE_NAMES = (*PROMPT_TEMPLATES, "chat", "auto")


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def concrete_template(tokenizer: Any, template: str) -> str:
    """The template ``format_prompt`` uses for ``template`` (``auto`` -> ``chat`` or ``boxed``)."""
    if template == "auto":
        return "chat" if has_chat_template(tokenizer) else "boxed"
    return template


def format_prompt(tokenizer: Any, problem: str, template: str = "auto") -> str:
    """Render ``problem`` with the named template (see module docstring)."""
    template = concrete_template(tokenizer, template)
    if template == "chat":
        if not has_chat_template(tokenizer):
            name = getattr(tokenizer, "name_or_path", "this tokenizer")
            raise ValueError(
                f"prompt_template='chat' but {name!r} has no chat template; "
                "use prompt_template=boxed (base models) or qwen_math"
            )
        messages = [
            {"role": "system", "content": BOXED_INSTRUCTION},
            {"role": "user", "content": problem},
        ]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if template not in PROMPT_TEMPLATES:
        raise ValueError(f"unknown prompt_template {template!r}; choose one of {list(TEMPLATE_NAMES)}")
    return PROMPT_TEMPLATES[template].replace("{problem}", problem)


PROMPT_INFO_FILE = "thr_prompt.json"


def save_prompt_info(
    directory: str | Path, template: str, task: str | None = None, task_settings: dict[str, Any] | None = None
) -> Path:
    """Write ``thr_prompt.json`` into ``directory``: how the model saved there is to be prompted.

    ``template`` is a concrete template name (not ``auto``). ``task`` / ``task_settings``: the
    built-in task the model was trained on (``columns``, ``arith``) and the keyword arguments of
    ``thr.data.problems.load_task`` that reproduce its splits (seed included), so that evaluating or
    analysing the model on that task uses the same task.
    """
    if template not in PROMPT_TEMPLATES and template != "chat":
        raise ValueError(f"save_prompt_info: template must be one of {[*PROMPT_TEMPLATES, 'chat']}, got {template!r}")
    info: dict[str, Any] = {"prompt_template": template}
    if task is not None:
        info["task"] = {"name": task, "settings": dict(task_settings or {})}
    path = Path(directory) / PROMPT_INFO_FILE
    path.write_text(json.dumps(info, indent=2) + "\n")
    return path


def load_prompt_info(directory: str | Path) -> dict[str, Any] | None:
    """The ``thr_prompt.json`` of a model directory (see :func:`save_prompt_info`), or None.

    A warm-start directory of the embedded model written before that file existed is recognised
    by its ``warm_start_info.json`` (plain template, its task). A malformed file raises
    ``ValueError`` naming it.
    """
    directory = Path(directory).expanduser()
    path = directory / PROMPT_INFO_FILE
    if not path.is_file():
        return _legacy_warm_start_info(directory)
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: invalid JSON ({err.msg}); delete it or rewrite it with save_prompt_info") from None
    template = info.get("prompt_template") if isinstance(info, dict) else None
    if template not in PROMPT_TEMPLATES and template != "chat":
        raise ValueError(f"{path}: 'prompt_template' must be one of {[*PROMPT_TEMPLATES, 'chat']}, got {template!r}")
    task = info.get("task")
    if task is not None and not (isinstance(task, dict) and isinstance(task.get("name"), str)
                                 and isinstance(task.get("settings", {}), dict)):
        raise ValueError(f"{path}: 'task' must be {{\"name\": NAME, \"settings\": {{...}}}}, got {task!r}")
    return info


def _legacy_warm_start_info(directory: Path) -> dict[str, Any] | None:
    from thr.models.embedded_config import INFO_FILE, PROMPT_TEMPLATE, EmbeddedConfig, load_info

    if not (directory / INFO_FILE).is_file():
        return None
    info: dict[str, Any] = {"prompt_template": PROMPT_TEMPLATE}
    try:
        cfg = EmbeddedConfig(**{"task": "arith", **load_info(directory)["config"]})  # no task field: arith
        info["task"] = {"name": cfg.task, "settings": cfg.task_kwargs()}
    except (TypeError, KeyError, ValueError):
        pass  # written by another version of the embedded config: the template is still known
    return info


def task_of(info: dict[str, Any] | None, source: str) -> dict[str, Any] | None:
    """The saved task settings when ``source`` names the task the model was trained on, else None."""
    task = (info or {}).get("task")
    return dict(task.get("settings", {})) if task and task["name"] == source else None


def resolve_template(template: str, model_path: str | Path) -> tuple[str, dict[str, Any] | None]:
    """``(template, prompt info)`` for a model: ``auto`` becomes the saved model's template.

    The prompt info (:func:`load_prompt_info`) is returned whatever ``template`` is, so that
    callers can use its task (:func:`task_of`); it is None for hub names and directories without one.
    """
    local = Path(str(model_path)).expanduser()
    info = load_prompt_info(local) if local.is_dir() else None
    if template == "auto" and info is not None:
        template = info["prompt_template"]
    return template, info
