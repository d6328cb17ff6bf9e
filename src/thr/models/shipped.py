"""Warm starts shipped inside the package, so ``thr train`` starts RL at once on any machine.

A warm start trained by this project (``thr warm-start``) can be exported into
``thr/models/embedded_weights/<cache key>/``: the ``save_pretrained`` model and tokenizer, its
``warm_start_info.json`` and a ``MANIFEST.json`` with the SHA-256 of every file, the command that
produced it and the machine it ran on. :func:`thr.models.embedded.warm_start` returns a shipped directory
whose cache key equals the requested configuration's (the key hashes every recipe field and the
task and recipe versions) and whose files match their hashes; anything else is trained locally.

Shipping the weights makes the base model identical on every CPU: the floating-point rounding of
a local warm start differs between instruction sets and thread counts, and with it the exact
weights (the ``columns`` warm start trains to a plateau, so its quality does not depend on that;
docs/embedded.md has the measurements).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

SHIPPED_ROOT = Path(__file__).resolve().parent / "embedded_weights"
MANIFEST = "MANIFEST.json"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(directory: Path) -> bool:
    """True when ``directory`` has a manifest for its own cache key that lists exactly its other
    files, ``config.json`` and ``model.safetensors`` among them, each with the recorded hash."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
        listed = manifest["sha256"]
        present = {p.name for p in directory.iterdir() if p.is_file() and p.name != MANIFEST}
        if manifest["cache_key"] != directory.name or set(listed) != present:
            return False
        if not {"config.json", "model.safetensors"} <= present:
            return False
        return all(sha256(directory / name) == digest for name, digest in listed.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def shipped_path(key: str, root: str | Path | None = None, *, warn: bool = False) -> Path | None:
    """The shipped directory of cache key ``key`` (under ``root``, default :data:`SHIPPED_ROOT`)
    when present and intact, else None. ``warn``: say so on stderr when it is present but fails
    its manifest (it is then not used, and the warm start is trained locally)."""
    directory = Path(root if root is not None else SHIPPED_ROOT) / key
    if not directory.is_dir():
        return None
    if verify(directory):
        return directory
    if warn:
        print(f"warning: the shipped warm start {directory} does not match its {MANIFEST} (altered or incomplete "
              "files); it is not used and the warm start is trained locally instead", file=sys.stderr)
    return None


def export(source: str | Path, command: str, root: str | Path | None = None) -> Path:
    """Copy the warm-start directory ``source`` to ``root/<its name>`` (default root:
    :data:`SHIPPED_ROOT`) with a manifest (atomic)."""
    import torch

    source, root = Path(source).resolve(), Path(root if root is not None else SHIPPED_ROOT).resolve()
    if source.parent == root or SHIPPED_ROOT.resolve() in source.parents:
        raise ValueError(f"export: {source} is already a shipped warm start; export a trained cache entry "
                         "(thr warm-start --force --export)")
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{source.name}.tmp-", dir=root))
    try:
        files = sorted(p.name for p in source.iterdir() if p.is_file() and p.name != MANIFEST)
        for name in files:
            shutil.copy2(source / name, tmp / name)
        manifest: dict[str, Any] = {
            "cache_key": source.name,
            "command": command,
            "machine": {"processor": platform.processor() or platform.machine(), "cpu": _cpu_name(),
                        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
                        "threads": torch.get_num_threads()},
            "sha256": {name: sha256(tmp / name) for name in files},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        for path in tmp.iterdir():
            path.chmod(0o644)  # readable by everyone, like any file of an installed package
        tmp.chmod(0o755)
        final = root / source.name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        return final
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
