"""Prompt templates shared by the trainer, the evaluator and the analysis tools.

A template turns a problem statement into the text the model continues. Base models get a plain
string; instruct models get their tokenizer's chat template. The same name must be used for
training and evaluation of one model.

- ``plain``: ``"Problem: {problem}\\nSolution:"`` (the embedded task's format)
- ``boxed``: the problem, then the usual "reason step by step ... \\boxed{}" instruction
- ``qwen_math``: the Qwen2.5-Math chat layout as a literal string (works for base Qwen models;
  the setting used in the NTHR/THR papers' Qwen2.5-Math runs)
- ``chat``: ``tokenizer.apply_chat_template`` with the boxed instruction as system prompt
- ``auto``: ``chat`` when the tokenizer has a chat template, else ``boxed``
"""

from __future__ import annotations

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


def format_prompt(tokenizer: Any, problem: str, template: str = "auto") -> str:
    """Render ``problem`` with the named template (see module docstring)."""
    if template == "auto":
        template = "chat" if has_chat_template(tokenizer) else "boxed"
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
