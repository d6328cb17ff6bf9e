"""Atomic checkpoints that resume training exactly.

A checkpoint is a directory ``checkpoints/step-000020`` holding the policy and tokenizer
(``save_pretrained``, loadable like any model; for LoRA runs the adapter), ``thr_prompt.json``
(the prompt template it was trained with) and ``trainer_state.pt`` (optimizer, LR schedule, step, RNG states, base metrics). It is written to a
hidden temporary directory beside it and renamed into place only when complete, so a kill never
leaves a half-written checkpoint where a resume would look.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

STATE_FILE = "trainer_state.pt"


def is_peft(model: Any) -> bool:
    return hasattr(model, "peft_config")


def save_model_atomic(model: Any, tokenizer: Any, final: Path, state: dict[str, Any] | None = None,
                      prompt: dict[str, Any] | None = None) -> Path:
    """Write model + tokenizer (+ trainer state) to ``final`` atomically; returns ``final``.

    ``prompt`` (``template``, optional ``task``) is written as ``thr_prompt.json``
    (:func:`thr.data.prompts.save_prompt_info`), so that ``prompt_template=auto`` finds how the saved
    model was trained to be prompted.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if state is not None:
        torch.save(state, tmp / STATE_FILE)
    if prompt is not None:
        from thr.data.prompts import save_prompt_info

        save_prompt_info(tmp, **prompt)
    if final.exists():
        old = final.parent / f".old-{final.name}-{os.getpid()}"
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old)
    else:
        tmp.rename(final)
    return final


def checkpoint_dir(output_dir: Path, step: int) -> Path:
    return Path(output_dir) / "checkpoints" / f"step-{step:06d}"


def list_checkpoints(output_dir: Path) -> list[Path]:
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.name.startswith("step-") and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def latest_checkpoint(output_dir: Path) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def prune_checkpoints(output_dir: Path, keep: int) -> None:
    for old in list_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_policy_weights(model: Any, ckpt: Path) -> None:
    """Load the weights saved in ``ckpt`` into the live ``model`` (full model or LoRA adapter)."""
    if is_peft(model):
        from peft import set_peft_model_state_dict
        from peft.utils import load_peft_weights

        set_peft_model_state_dict(model, load_peft_weights(str(ckpt)))
        return
    from transformers import AutoModelForCausalLM

    saved = AutoModelForCausalLM.from_pretrained(ckpt, dtype=next(model.parameters()).dtype)
    missing, unexpected = model.load_state_dict(saved.state_dict(), strict=False)
    real_missing = [k for k in missing if "lm_head" not in k or not model.config.tie_word_embeddings]
    if real_missing or unexpected:
        raise ValueError(f"checkpoint {ckpt} does not match the model: missing {real_missing[:5]}, unexpected {unexpected[:5]}")
