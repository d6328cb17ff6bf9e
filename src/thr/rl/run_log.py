"""Run logging: JSONL always, TensorBoard and Weights & Biases when asked.

Metrics are flat dicts with namespaced keys (``loss/``, ``reward/``, ``thr/``, ``eval/``,
``time/``). Every record carries ``step``. The JSONL file is appended and flushed per record, so
a killed run keeps everything logged before it; on resume, records after the checkpoint's step
are dropped first so the log matches an uninterrupted run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut by a kill: everything after it is incomplete
    return rows


def truncate_jsonl(path: Path, max_step: int) -> None:
    """Keep only records with ``step <= max_step`` (used when resuming)."""
    if path.exists():
        kept = [r for r in read_jsonl(path) if r.get("step", -1) <= max_step]
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        tmp.replace(path)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class RunLogger:
    """Writes metrics to ``metrics.jsonl`` (+ TensorBoard / W&B) and extra records to other files."""

    def __init__(self, output_dir: Path, *, tensorboard: bool = False, wandb: bool = False,
                 wandb_project: str = "thr", wandb_run_name: str = "", config: dict[str, Any] | None = None):
        self.dir = Path(output_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.dir / "metrics.jsonl"
        self._files: dict[str, Any] = {}
        self._tb = None
        self._wandb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ImportError("log.tensorboard=true needs tensorboard: pip install tensorboard") from None
            self._tb = SummaryWriter(str(self.dir / "tb"))
        if wandb:
            try:
                import wandb as wandb_lib
            except ImportError:
                raise ImportError("log.wandb=true needs wandb: pip install wandb") from None
            self._wandb = wandb_lib.init(project=wandb_project, name=wandb_run_name or None, config=config,
                                         dir=str(self.dir), resume="allow")

    def _file(self, name: str):
        if name not in self._files:
            self._files[name] = (self.dir / name).open("a")
        return self._files[name]

    def log(self, step: int, metrics: dict[str, Any], file: str = "metrics.jsonl") -> None:
        record = {"step": step, **{k: _clean(v) for k, v in metrics.items()}}
        f = self._file(file)
        f.write(json.dumps(record) + "\n")
        f.flush()
        if file != "metrics.jsonl":
            return
        numeric = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self._tb is not None:
            for k, v in numeric.items():
                self._tb.add_scalar(k, v, step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(numeric, step=step)

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def group_records(step: Any, tokenizer: Any, n_groups: int) -> list[dict[str, Any]]:
    """Per-token records of the first ``n_groups`` groups of a step, for ``groups.jsonl`` (heat maps).

    ``step``: the :class:`thr.rl.trainer.StepData` of the step (its rollout, batch, old pass,
    advantages ``[B]`` and token advantages ``[B, T]``).
    """
    rollout, batch, old = step.rollout, step.batch, step.old
    G, inf = step.group_size, old.influence
    thr_vals = step.advantages[:, None].float() * inf
    records = []
    for g in range(min(n_groups, len(rollout.problems))):
        responses = []
        for j in range(g * G, (g + 1) * G):
            n = int(batch.response_mask[j].sum())
            ids = batch.response_ids[j, :n].tolist()
            score = rollout.scores[j]
            responses.append({
                "text": rollout.samples[j].text,
                "reward": score.reward,
                "correct": score.correct,
                "advantage": float(step.advantages[j]),
                "tokens": [tokenizer.decode([i]) for i in ids],
                "thr": _round(thr_vals[j, :n]),
                "influence": _round(inf[j, :n]),
                "entropy": _round(old.entropy[j, :n]),
                "prob": _round(old.log_probs[j, :n].exp()),
                "token_advantage": _round(step.token_advantages[j, :n]),
            })
        problem = rollout.problems[g]
        records.append({"group": g, "problem": problem.problem, "answer": problem.answer, "responses": responses})
    return records


def _round(t: torch.Tensor) -> list[float]:
    return [float(f"{v:.6g}") for v in t.float().tolist()]
