"""``TrainConfig``: the one config of ``thr train``, in sections.

Every field is documented once, here, as ``name: text`` lines in its section's docstring (the
``thr.*`` section inherits the shared THR fields from :class:`thr.rl.steering.THRSettings`);
fields with a fixed set of choices are ``Literal`` types, checked by the loader
(:mod:`thr.config`); ``thr train --help`` is generated from both (``thr.config.usage``). Override from YAML (``--config configs/x.yaml``) or the
command line (``thr.p=0.2``, ``--rollout.group_size 8``). ``validate()`` raises ``ValueError``
naming the field and how to fix it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Annotated, Literal

from thr.config import Count, Fraction, NonNegative, PositiveFloat, PositiveInt, Range, Strength, check_choices
from thr.core import AGGREGATIONS, POLICY_LOSSES
from thr.data.prompts import TEMPLATE_NAMES
from thr.models.embedded_config import EmbeddedConfig
from thr.rl.steering import THRSettings

OnOff = Literal["auto", "on", "off"]


@dataclass
class ModelSection:
    """Policy model.

    name_or_path: ``"embedded"`` (the built-in tiny model, warm-started and cached), a local
        directory written by ``save_pretrained``, or a hub name (``Qwen/Qwen2.5-Math-1.5B``).
    dtype: ``auto`` (bf16 on GPU, fp32 on CPU), ``float32``, ``bfloat16`` or ``float16``.
    device: ``auto`` (CUDA if available, else CPU), ``cpu``, ``cuda``, ``cuda:1`` ...
    lora_r: LoRA rank through peft; 0 trains all weights.
    lora_alpha, lora_dropout: LoRA scaling and dropout.
    lora_target_modules: comma-separated module names (``all-linear`` for every linear layer).
    gradient_checkpointing: trade compute for activation memory in the update pass.
    trust_remote_code: passed to ``from_pretrained``.
    """

    name_or_path: str = "embedded"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: str = "auto"
    lora_r: Count = 0
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_target_modules: str = "all-linear"
    gradient_checkpointing: bool = False
    trust_remote_code: bool = False


@dataclass
class DataSection:
    """Training and held-out problems.

    train: ``columns`` or ``arith`` (the built-in tasks, ``thr.data.tasks``; the embedded model's task
        uses its ``embedded.*`` settings), a benchmark name, a ``.jsonl``/``.parquet`` path or an
        HF dataset name (online only); see ``thr.data.problems.load_problems``.
    train_split: split of ``train`` (``train`` for the built-in tasks and HF datasets).
    eval: held-out source in the same forms (empty string: no evaluation).
    eval_split: split of ``eval`` (``test`` for the built-in tasks).
    problem_field, answer_field: field names in JSONL/Parquet/HF rows (empty: auto-detect).
    prompt_template: ``auto``, ``plain``, ``boxed``, ``qwen_math`` or ``chat`` (``thr.data.prompts``).
    train_limit: use only the first N training problems (0: all).
    """

    train: str = "columns"
    train_split: str = "train"
    eval: str = "columns"
    eval_split: str = "test"
    problem_field: str = ""
    answer_field: str = ""
    prompt_template: Literal[TEMPLATE_NAMES] = "auto"  # type: ignore[valid-type]
    train_limit: int = 0


@dataclass
class RolloutSection:
    """Sampling of the response groups.

    backend: ``hf`` (batched ``generate``) or ``vllm`` (GPU, optional extra; weights synced
        after every step).
    prompts_per_step: prompts per RL step (the paper: 256).
    group_size: responses per prompt, G (the paper: 8).
    temperature: sampling temperature; the policy loss and THR use the same temperature.
    top_p: nucleus sampling.
    max_new_tokens: response budget (the paper: 3072).
    batch_size: sequences per ``generate`` call.
    """

    backend: Literal["hf", "vllm"] = "hf"
    prompts_per_step: PositiveInt = 16
    group_size: Annotated[int, Range(ge=2)] = 8
    temperature: PositiveFloat = 1.0
    top_p: Fraction = 1.0
    max_new_tokens: PositiveInt = 160
    batch_size: PositiveInt = 128


@dataclass
class RewardSection:
    """Verifiable reward.

    correct, incorrect: reward of a verified / failed answer. The positive set P of THR is the
        responses whose correctness reward is ``correct``.
    format_bonus: added when the response has a final ``\\boxed{}`` answer (0: off).
    truncated: ``zero`` gives a response cut at ``max_new_tokens`` the ``incorrect`` reward and
        no format bonus, even if it holds a boxed answer (it never finished); ``verify`` scores it
        like any other response.
    check_steps: ``auto`` (on for the built-in tasks ``columns`` and ``arith``, off otherwise),
        ``true`` or ``false``. When on, a response is correct only if its final answer verifies
        AND the task's full check accepts the worked solution (``thr.data.tasks``: every step starts
        from the previous result and uses the problem's numbers, every step is right, the box
        holds the last result). Held-out accuracy on those tasks uses the same check, in the
        trainer and in ``thr eval``. Without it, a weak tiny model is rewarded for right answers
        reached through wrong steps, and GRPO reinforces the wrong arithmetic (docs/embedded.md).
        With ``false`` the reward is answer-only while held-out accuracy on a built-in task
        still applies the full check.
    """

    correct: float = 1.0
    incorrect: float = 0.0
    format_bonus: float = 0.0
    truncated: Literal["zero", "verify"] = "zero"
    check_steps: Literal["auto", "true", "false"] = "auto"


@dataclass
class THRSection(THRSettings):
    """Token Hidden Reward steering (spec sections 3-4): the shared fields of
    :class:`thr.rl.steering.THRSettings`, and how the old-policy pass computes influence.

    p_schedule: ``constant`` (``p`` at every step) or ``linear`` (from ``p`` at step 1 to
        ``p_end`` at the last step, e.g. ``p=-0.5 p_end=0.5``: explore first, exploit later).
    p_end: the value of ``p`` at the last step under ``p_schedule=linear``.
    influence: ``full`` (THR: gradients with respect to the LM head), ``self`` (only each token's
        own ``<g,g><h,h>`` term: a control) or ``network`` (the same inner product over the
        parameters of ``network_params``, exact, by one backward and one forward-mode pass per
        group: ``thr.core.network_token_influence``, docs/network-thr.md). ``network`` ignores
        ``method``, ``chunk_size``, ``algorithm``, ``reuse_logits``, ``max_kept_gb`` and ``tf32``.
    network_params: the parameter set of ``influence=network``: ``all`` (every trainable
        parameter: the whole network, or the LoRA adapters with ``model.lora_r > 0``),
        ``last:N`` (the trainable parameters of the last N transformer blocks and those after
        them: final norm, LM head) or ``re:REGEX`` (trainable parameters whose name matches).
    network_rows: ``influence=network`` only: sequences per backward / forward-mode pass (0: a
        whole group); lower it to bound memory.
    algorithm: ``exact`` (``thr.core.token_influence``) or ``approx`` (the
        restricted-vocabulary ``thr.core.token_influence(..., algorithm="approx")``: vocabulary = the
        group's tokens plus ``approx_top_k``, normalized exactly with the old log-probs).
        Ignored by ``influence=self``.
    approx_top_k: ``approx`` only: also keep the ``k`` most probable tokens of every
        distribution (0: only the group's tokens; read from the logits when they are reused,
        else one extra LM-head pass).
    reuse_logits: ``auto``, ``on`` or ``off``: pass the old-policy forward's logits to THR so
        it does not recompute the softmax (``V d`` multiply-adds per token less). Needs a plain
        linear head (``logits == hidden @ W.T``; checked once on the first micro-batch): ``on``
        stops with an error otherwise, ``auto`` falls back to recomputing. ``auto`` reuses only
        float32/float64 logits; a bf16 model's logits are bf16, and reusing them (``on``) rounds
        the probabilities (about 2 % relative error in THR). The logits then stay in memory
        during THR (they are freed before it otherwise).
    max_kept_gb: GiB of positive-token probabilities the M-form (exact, or inside ``approx``)
        keeps between its two passes instead of recomputing (float32; ``max_kept_elements`` of ``thr.core``; 0: the
        core default, 2 GiB).
    tf32: ``auto``, ``on`` or ``off``: let THR's float32 matrix products use TF32 tensor cores
        on CUDA (10-bit mantissa inputs, float32 accumulation). ``auto``: on when the model's
        parameters are bf16/fp16 (their 8-bit-mantissa states and weights are already coarser
        than TF32), off for float32 models. Measured on an H100 in the old-policy pass of a
        Qwen2.5-Math-1.5B-shaped model (G8 T4096): THR 0.85 s -> 0.21 s, i.e. 1.63x -> 0.41x the
        forward. The global ``torch.backends.cuda.matmul`` setting is restored after each call.
    """

    p_schedule: Literal["constant", "linear"] = "constant"
    p_end: Strength = 0.0
    influence: Literal["full", "self", "network"] = "full"
    network_params: str = "all"
    network_rows: Count = 0
    algorithm: Literal["exact", "approx"] = "exact"
    approx_top_k: Count = 0
    reuse_logits: OnOff = "auto"
    max_kept_gb: float = 0.0
    tf32: OnOff = "auto"


@dataclass
class OptimSection:
    """Advantages, loss and optimizer.

    advantage: ``grpo`` (std-normalised) or ``drgrpo`` (mean-centred only).
    unbiased_std: Bessel-corrected group std (TRL and verl do this).
    adv_eps: added to the group std.
    loss_type: ``grpo`` (PPO-clip per token) or ``gspo_token``.
    clip_eps_low, clip_eps_high: clip range; ``clip_eps_high`` > low is DAPO's clip-higher.
    aggregation: ``token-mean``, ``seq-mean-token-mean`` or ``seq-mean-token-sum-norm``.
    kl_coef: k3 KL penalty to the initial policy (0: off, no reference model is kept).
    entropy_coef: entropy bonus coefficient.
    optimizer: ``adamw`` or ``sgd`` (plain SGD with ``sgd_momentum``; on tiny models Adam's
        per-parameter normalisation turns noisy policy gradients into a random walk of size lr).
    lr: learning rate (the default suits the embedded tiny model; real-model presets use 1e-6).
    weight_decay, adam_beta1, adam_beta2, adam_eps: AdamW settings.
    sgd_momentum: momentum of ``sgd``.
    lr_schedule: ``constant``, ``linear`` or ``cosine`` decay after ``warmup_steps``.
    warmup_steps: optimizer steps of linear warmup.
    max_grad_norm: gradient clipping (0: off).
    ppo_epochs: passes over each rollout batch.
    mini_batches: optimizer steps per pass (the batch is split into this many mini-batches of
        whole groups; with more than one, the later steps are off-policy and the clip can bind).
    micro_batch_size: sequences per forward/backward (gradient accumulation within a
        mini-batch); also the old-policy pass size, rounded to whole groups.
    skip_zero_advantage: skip the update's forward/backward for responses whose token
        advantages are all zero (groups with uniform rewards). Their gradient is exactly zero, so
        the update is unchanged (for models without dropout: with dropout the kept responses
        draw different masks); the ratio and clip metrics then cover the updated responses
        only. Ignored when ``kl_coef`` or ``entropy_coef`` is non-zero (those terms act on every
        token).
    """

    advantage: Literal["grpo", "drgrpo"] = "grpo"
    unbiased_std: bool = True
    adv_eps: float = 1e-6
    loss_type: Literal[tuple(POLICY_LOSSES)] = "grpo"  # type: ignore[valid-type]
    clip_eps_low: Annotated[float, Range(ge=0, lt=1)] = 0.2
    clip_eps_high: NonNegative = 0.2
    aggregation: Literal[tuple(AGGREGATIONS)] = "token-mean"  # type: ignore[valid-type]
    kl_coef: NonNegative = 0.0
    entropy_coef: float = 0.0
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: PositiveFloat = 3e-4
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    sgd_momentum: float = 0.0
    lr_schedule: Literal["constant", "linear", "cosine"] = "constant"
    warmup_steps: Count = 0
    max_grad_norm: NonNegative = 1.0
    ppo_epochs: PositiveInt = 1
    mini_batches: PositiveInt = 2
    micro_batch_size: PositiveInt = 64
    skip_zero_advantage: bool = True


@dataclass
class EvalSection:
    """Held-out evaluation during training (greedy accuracy and pass@k).

    every: evaluate every N steps (0: only before and after training).
    before: evaluate the starting model before step 1 (``false`` skips it, e.g. when many runs
        share one base model that is scored once).
    limit: held-out problems used, the first N of the split (0: all; the default 500 keeps the
        embedded default's two evaluations to about a minute and a half each on one core).
    n: samples per problem for pass@k (k = 1, 2, 4, ..., n); 0 skips sampling.
    temperature: sampling temperature of the pass@k samples.
    max_new_tokens: response budget (0: the rollout's).
    batch_size: sequences per ``generate`` call.
    """

    every: Count = 0
    before: bool = True
    limit: Count = 500
    n: Count = 8
    temperature: PositiveFloat = 1.0
    max_new_tokens: Count = 0
    batch_size: PositiveInt = 256


@dataclass
class LogSection:
    """Logging.

    tensorboard: also write TensorBoard events under ``output_dir/tb``.
    wandb: also log to Weights & Biases (``wandb_project``, ``wandb_run_name``).
    wandb_project, wandb_run_name: W&B project and run name (empty name: W&B picks one).
    groups_every: write the tokens, THR and influence of ``groups_per_log`` groups to
        ``groups.jsonl`` every N steps (for heat maps; 0: never).
    groups_per_log: groups written to ``groups.jsonl`` per logged step.
    progress: show a progress bar.
    likelihood_dynamics: after each update, re-score the batch's correct (and incorrect)
        responses and log the change of their mean token log-likelihood (``likelihood/...``),
        the quantity THR predicts; costs one extra forward per step.
    """

    tensorboard: bool = False
    wandb: bool = False
    wandb_project: str = "thr"
    wandb_run_name: str = ""
    groups_every: Count = 10
    groups_per_log: Count = 2
    progress: bool = True
    likelihood_dynamics: bool = False


@dataclass
class TrainConfig:
    """Top-level config of ``thr train``.

    output_dir: run directory (metrics.jsonl, checkpoints/, final/, summary.json).
    steps: RL steps (one rollout batch each; 0 only evaluates the starting model).
    seed: seeds sampling, data order and the update; CPU runs are reproducible.
    save_every: checkpoint every N steps (0: only the final model).
    keep_checkpoints: most recent checkpoints kept.
    resume: continue from the latest checkpoint in ``output_dir``.
    """

    output_dir: str = "runs/thr-default"
    steps: Count = 40
    seed: int = 0
    save_every: Count = 50
    keep_checkpoints: PositiveInt = 2
    resume: bool = False
    model: ModelSection = field(default_factory=ModelSection)
    embedded: EmbeddedConfig = field(default_factory=EmbeddedConfig)
    data: DataSection = field(default_factory=DataSection)
    rollout: RolloutSection = field(default_factory=RolloutSection)
    reward: RewardSection = field(default_factory=RewardSection)
    thr: THRSection = field(default_factory=THRSection)
    optim: OptimSection = field(default_factory=OptimSection)
    eval: EvalSection = field(default_factory=EvalSection)
    log: LogSection = field(default_factory=LogSection)

    def validate(self) -> "TrainConfig":
        """Raise ``ValueError`` naming the first invalid field and the fix (choices and bounds come
        from the field types; the rules between fields are written out here)."""
        check_choices(self)
        if self.rollout.prompts_per_step % self.optim.mini_batches:
            raise ValueError(
                f"rollout.prompts_per_step={self.rollout.prompts_per_step} must be a multiple of "
                f"optim.mini_batches={self.optim.mini_batches} (mini-batches hold whole groups)"
            )
        self._validate_thr()
        if self.model.name_or_path == "embedded":
            self._validate_embedded()
        return self

    def _validate_thr(self) -> None:
        """The rules between the ``thr.*`` fields."""
        t = self.thr
        if t.p_schedule != "constant" and t.mode not in ("reweight", "dominant"):
            raise ValueError(f"thr.p_schedule={t.p_schedule} needs thr.mode=reweight or dominant "
                             f"(got {t.mode}, which does not use p)")
        if t.approx_top_k and t.algorithm != "approx":
            raise ValueError(f"thr.approx_top_k={t.approx_top_k} only applies to thr.algorithm=approx; "
                             "set thr.algorithm=approx or thr.approx_top_k=0")
        spec = t.network_params
        if not (spec == "all" or spec.startswith("re:") or (spec.startswith("last:") and spec[5:].isdigit()
                                                          and int(spec[5:]) >= 1)):
            raise ValueError(f"thr.network_params={spec!r} is not valid; use all, last:N (N >= 1) or re:REGEX")
        if spec.startswith("re:"):
            try:
                re.compile(spec[3:])
            except re.error as err:
                raise ValueError(f"thr.network_params={spec!r}: bad regular expression ({err})") from None
        if not 0 <= t.max_kept_gb < float("inf"):
            raise ValueError(f"thr.max_kept_gb must be a finite number >= 0 (0: the core default, 2 GiB), "
                             f"got {t.max_kept_gb}")

    def _validate_embedded(self) -> None:
        """The embedded model's settings, and that its built-in task is the one trained on."""
        try:
            self.embedded.validate()
        except ValueError as err:
            raise ValueError(f"embedded.*: {err}") from None
        for key in ("train", "eval"):
            source = getattr(self.data, key)
            if source in ("columns", "arith") and source != self.embedded.task:
                raise ValueError(f"data.{key}={source} but embedded.task={self.embedded.task}: the embedded model "
                                 f"is warm-started on embedded.task; set data.{key}={self.embedded.task} too")
