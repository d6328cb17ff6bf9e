"""Loading a policy (embedded, local directory or hub name) and reading what THR needs from it.

THR needs the states that enter the LM head and the LM head's weight. Both are read without
assumptions about the architecture: a forward pre-hook on ``model.get_output_embeddings()``
captures its input (the final-norm output, for every position), and the weight is that module's.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator

import torch


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"model.device={device!r} but CUDA is not available; use model.device=cpu or auto")
    return dev


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise ValueError(f"model.dtype={dtype!r} is not valid; choose auto, float32, bfloat16 or float16")
    return table[dtype]


def looks_like_local_path(name: str) -> bool:
    """True for names that can only mean a local path: ``/x``, ``./x``, ``../x``, ``~/x``, a
    Windows separator, or more than one ``/`` (a hub id is ``name`` or ``org/name``)."""
    name = str(name)
    return name.startswith(("/", ".", "~")) or (os.sep != "/" and os.sep in name) or name.count("/") > 1


def check_model_path(name: str, key: str = "model.name_or_path") -> None:
    """Raise ``ValueError`` naming ``key`` when ``name`` is meant as a local path that does not exist."""
    if looks_like_local_path(name) and not Path(name).expanduser().exists():
        raise ValueError(f"{key}={name!r}: the path does not exist (give a save_pretrained directory or a hub name)")


def load_policy(
    name_or_path: str,
    *,
    dtype: str = "auto",
    device: str = "auto",
    trust_remote_code: bool = False,
    lora_r: int = 0,
    lora_alpha: int = 32,
    lora_dropout: float = 0.0,
    lora_target_modules: str = "all-linear",
) -> tuple[Any, Any]:
    """``(model, tokenizer)`` from a local ``save_pretrained`` directory or a hub name.

    The tokenizer gets a pad token (EOS when it has none) and left padding for generation.
    With ``lora_r > 0`` the model is wrapped by peft with LoRA adapters on
    ``lora_target_modules``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    check_model_path(name_or_path)
    local = Path(name_or_path).expanduser()
    if local.exists() and not (local / "config.json").is_file():
        raise ValueError(f"model.name_or_path={name_or_path!r} is a path without config.json: not a save_pretrained directory")
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=torch_dtype, trust_remote_code=trust_remote_code)
    except OSError as err:
        raise ValueError(
            f"could not load model {name_or_path!r}: {err}. Give a local save_pretrained directory, "
            "or a hub name on a machine with network access"
        ) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model.to(dev)
    if lora_r > 0:
        model = wrap_lora(model, r=lora_r, alpha=lora_alpha, dropout=lora_dropout, target_modules=lora_target_modules)
    return model, tokenizer


def wrap_lora(model: Any, *, r: int, alpha: int, dropout: float, target_modules: str) -> Any:
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ImportError("model.lora_r > 0 needs peft: pip install 'thr-rl[peft]'") from None
    targets: Any = target_modules if target_modules == "all-linear" else [t.strip() for t in target_modules.split(",")]
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def output_embeddings(model: Any) -> torch.nn.Module:
    """The LM head module (works through peft wrappers)."""
    head = model.get_output_embeddings()
    if head is None:
        raise ValueError(f"{type(model).__name__} has no output embeddings (LM head); THR needs a causal LM head")
    return head


def lm_head_weight(model: Any) -> torch.Tensor:
    """``[V, d]`` unembedding used by THR (the base weight; LoRA on the head is not included)."""
    head = output_embeddings(model)
    weight = getattr(head, "weight", None)
    if weight is None and hasattr(head, "base_layer"):
        weight = head.base_layer.weight
    if weight is None:
        raise ValueError(f"cannot read the LM head weight of {type(model).__name__}")
    return weight.detach()


@contextlib.contextmanager
def capture_head_inputs(model: Any) -> Iterator[list[torch.Tensor]]:
    """Collect the input of the LM head on every forward inside the block (``[B, L, d]`` each)."""
    captured: list[torch.Tensor] = []

    def hook(_module: Any, args: tuple[Any, ...]) -> None:
        captured.append(args[0].detach())

    handle = output_embeddings(model).register_forward_pre_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()

