"""The methods of the steering experiment: each is a list of ``thr train`` overrides.

Every method starts from the same warm-started tiny model of its seed and differs from plain GRPO
(``grpo``) only in the overrides listed here. Names group into families by their prefix:
``gspo/`` (GSPO-token loss) and ``llama/`` (Llama-style tiny model); everything else is the
Qwen2-style default model with the GRPO loss.
"""

from __future__ import annotations

from pathlib import Path

# The recipe the recorded sweep (results/) ran with: the embedded default of that time (the
# ``arith`` task, a warm start stopped at a 0.25 accuracy target, one Adam step per rollout at lr
# 5e-5), pinned so that run.py and likelihood_probe.py run that setup under later defaults (the
# default is now the ``columns`` task). Not bit-reproducible: the arith reward and held-out
# accuracy now check the whole chain (``thr.data.tasks.arith.check_solution``), see docs/steering.md.
SWEEP_RECIPE = ["embedded.task=arith", "embedded.n_test=500", "embedded.max_new_tokens=48",
                "embedded.sft_steps=1200", "embedded.target_val_accuracy=0.25", "data.train=arith",
                "data.eval=arith", "rollout.max_new_tokens=48", "optim.lr=5e-5", "optim.mini_batches=1"]
OFF = ["thr.mode=off"]
GSPO = ["optim.loss_type=gspo_token", "optim.aggregation=seq-mean-token-mean",
        "optim.clip_eps_low=0.0003", "optim.clip_eps_high=0.0004"]  # as configs/gspo-token.yaml
LLAMA = ["embedded.arch=llama"]


def reweight(p: float, influence: str = "full") -> list[str]:
    return ["thr.mode=reweight", f"thr.p={p}", f"thr.influence={influence}"]


METHODS: dict[str, list[str]] = {
    # the core comparison (Qwen2-style tiny model, GRPO loss)
    "grpo": OFF,
    "thr+0.2": reweight(0.2),
    "thr+0.5": reweight(0.5),
    "thr-0.2": reweight(-0.2),
    "thr-0.5": reweight(-0.5),
    "dominant": ["thr.mode=dominant", "thr.p=0"],  # weight 1 on dominant tokens, 0 elsewhere
    # controls
    "entropy-top20": ["thr.mode=entropy", "thr.quantile=0.2"],
    "clip-higher": OFF + ["optim.clip_eps_high=0.28"],
    "self+0.5": reweight(0.5, "self"),
    "self-0.5": reweight(-0.5, "self"),
    # GSPO-token
    "gspo/grpo": GSPO + OFF,
    "gspo/thr+0.5": GSPO + reweight(0.5),
    "gspo/thr-0.5": GSPO + reweight(-0.5),
    "gspo/dominant": GSPO + ["thr.mode=dominant", "thr.p=0"],
    # a second architecture
    "llama/grpo": LLAMA + OFF,
    "llama/thr+0.5": LLAMA + reweight(0.5),
    "llama/thr-0.5": LLAMA + reweight(-0.5),
}

QUICK = ["grpo", "thr+0.5", "thr-0.5", "self+0.5", "llama/grpo"]


def arch_of(method: str) -> str:
    """The base model a method starts from (its family's warm start)."""
    return "llama" if method.startswith("llama/") else "qwen2"


def baseline_of(method: str) -> str:
    """The plain-GRPO run a method is compared with (same family, same seed)."""
    if method.startswith("gspo/"):
        return "gspo/grpo"
    if method.startswith("llama/"):
        return "llama/grpo"
    return "grpo"


def run_dir(out: Path, method: str, seed: int) -> Path:
    """Where the run of ``method`` with ``seed`` lives under the experiment folder ``out``."""
    return Path(out) / "runs" / method.replace("/", "__") / f"seed{seed}"
