"""THR for TRL's ``GRPOTrainer`` (``trl==1.16.*``): change the import and the two class names.

    from thr.integrations.trl import THRConfig as GRPOConfig, THRGRPOTrainer as GRPOTrainer

or explicitly ``THRConfig(..., thr_p=0.2)`` and ``THRGRPOTrainer(model, reward_funcs, args=...)``.
Everything else (datasets, reward functions, PEFT, accelerate/DeepSpeed launch, vLLM) stays TRL's.

Where THR enters (checked against the TRL 1.16.0 source):

- ``_generate_and_score_completions`` returns the local generation batch with ``advantages [B]``
  before it is shuffled and split into micro-batches. THR needs whole groups, so it is computed
  there and ``advantages`` becomes ``[B, T]`` token advantages (``_compute_loss`` keeps a 2-D
  advantage tensor as is).
- TRL computes log-probs with a fused LM head (``model(..., fused_lm_head=True)``) that reads
  ``lm_head.weight`` without calling the head module, so the states are captured by a forward
  hook on the decoder backbone; the states predicting the ``T`` completion tokens are
  ``last_hidden_state[:, -T-1:-1]``.
- When TRL runs its own no-grad old-policy pass (``old_per_token_logps``: generation and
  optimisation misaligned, or vLLM importance sampling) the states are captured in that same
  pass. Otherwise one extra no-grad forward (eval mode) is run for them.
- With ``importance_sampling_level="sequence"`` TRL's ratio is one number per response, which
  collapses token advantages to their mean. While THR is active the loss uses the GSPO-token
  ratio instead (spec section 5): ``r_{j,k} = sg[s_j] * pi_{j,k} / sg[pi_{j,k}]``, obtained by
  handing TRL's token-level path the old log-probs ``sg[log pi] - sg[log s_j]``.
"""

from __future__ import annotations

import dataclasses
import time
import typing
from typing import Any

import torch
from trl import GRPOConfig, GRPOTrainer
from trl.models.utils import disable_gradient_checkpointing

from thr.config import field_docs
from thr.core import masked_mean, token_influence
from thr.integrations._groups import capture_backbone_states, check_group_prompts, check_whole_groups, positive_responses
from thr.models.loading import output_embeddings
from thr.rl.steering import THRSettings, steer

__all__ = ["THRConfig", "THRGRPOTrainer"]


def _thr_fields() -> list[tuple[str, Any, Any]]:
    """``thr_<name>`` for every field of :class:`thr.rl.steering.THRSettings`: its type, default and
    doc (as the ``help`` that ``HfArgumentParser`` shows), plus the TRL-only ``thr_log_metrics``."""
    docs, types_ = field_docs(THRSettings), typing.get_type_hints(THRSettings)  # bounds: checked in __post_init__
    out = [(f"thr_{f.name}", types_[f.name], dataclasses.field(default=f.default, metadata={"help": docs[f.name]}))
           for f in dataclasses.fields(THRSettings)]
    log_help = ("With thr_mode='off': still compute THR for its metrics (one extra no-grad forward). "
                "False makes 'off' exactly plain GRPOTrainer at its cost.")
    return out + [("thr_log_metrics", bool, dataclasses.field(default=True, metadata={"help": log_help}))]


def _post_init(self: Any) -> None:
    GRPOConfig.__post_init__(self)
    settings = self.thr_settings.validate("thr_")
    if settings.mode == "entropy":
        raise ValueError("thr_mode='entropy' needs token entropies, which only thr train computes; "
                         "use 'off', 'reweight' or 'dominant'")


THRConfig = dataclasses.make_dataclass(
    "THRConfig", _thr_fields(), bases=(GRPOConfig,),
    namespace={
        "__doc__": "``GRPOConfig`` plus ``thr_<name>`` for every field of :class:`thr.rl.steering.THRSettings` "
                   "(spec sections 3-4) and ``thr_log_metrics``.",
        "__post_init__": _post_init,
        "__module__": __name__,
        "thr_settings": property(lambda self: THRSettings(**{f.name: getattr(self, f"thr_{f.name}")
                                                             for f in dataclasses.fields(THRSettings)})),
    },
)


class THRGRPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` whose advantages are THR-steered token advantages (see the module doc)."""

    def __init__(self, model: Any, reward_funcs: Any = None, args: THRConfig | None = None, **kwargs: Any):
        if args is None:
            name = model if isinstance(model, str) else getattr(model.config, "_name_or_path", "model")
            args = THRConfig(f"{str(name).split('/')[-1]}-THR-GRPO")
        if not isinstance(args, THRConfig):
            raise TypeError(f"THRGRPOTrainer needs args=THRConfig(...) (a GRPOConfig with thr_* fields), got {type(args).__name__}")
        super().__init__(model, reward_funcs, args=args, **kwargs)
        self._thr_armed = False
        self._thr_states: torch.Tensor | None = None
        self._thr_rewards: torch.Tensor | None = None
        self._gspo_inputs: dict[str, Any] | None = None
        if self._thr_enabled:
            check_whole_groups(args.per_device_train_batch_size * args.steps_per_generation, self.num_generations,
                               what="per_device_train_batch_size * steps_per_generation")
            self._check_head()

    # ----------------------------------------------------------------------------- settings
    @property
    def _thr_enabled(self) -> bool:
        return self.args.thr_mode != "off" or self.args.thr_log_metrics

    @property
    def _thr_token_advantages(self) -> bool:
        return self.args.thr_mode != "off"

    def _check_head(self) -> None:
        head = output_embeddings(self.accelerator.unwrap_model(self.model))
        if getattr(head, "bias", None) is not None:
            raise ValueError("THR assumes an LM head without bias (logits = W h); this model's head has a bias")
        cfg = self.accelerator.unwrap_model(self.model).config
        text = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        for attr in ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling"):
            if getattr(text, attr, None) not in (None, 1, 1.0):
                raise ValueError(f"THR assumes logits = W h / temperature; this model sets {attr}={getattr(text, attr)!r}")

    def _tokens_in_old_pass(self) -> bool:
        """Whether TRL's ``_generate_and_score_completions`` computes ``old_per_token_logps`` (TRL 1.16 rule)."""
        generate_every = self.args.steps_per_generation * self.num_iterations
        return self.args.gradient_accumulation_steps % generate_every != 0 or (
            self.use_vllm and self.vllm_importance_sampling_correction
        )

    # ----------------------------------------------------------------------------- TRL hooks
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._thr_rewards = rewards_per_func  # gathered over processes: [B_global, num_funcs]
        return rewards_per_func

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
        if self._thr_armed and model is self.model:
            # TRL's own old-policy pass: capture the completion states in it (no extra forward)
            self._thr_armed = False
            with capture_backbone_states(self.model, lambda h: h[:, -logits_to_keep - 1 : -1]) as states:
                out = super()._get_per_token_logps_and_entropies(model, input_ids, attention_mask, logits_to_keep, *args, **kwargs)
            self._thr_states = torch.cat(states)
            return out
        out = super()._get_per_token_logps_and_entropies(model, input_ids, attention_mask, logits_to_keep, *args, **kwargs)
        if self._gspo_inputs is not None:
            self._set_gspo_token_old_logps(out[0])
        return out

    def _generate_and_score_completions(self, inputs):
        training = self.model.training
        use_thr = training and self._thr_enabled
        self._thr_armed = use_thr and self._tokens_in_old_pass()
        self._thr_states = None
        try:
            out = super()._generate_and_score_completions(inputs)
        finally:
            armed, self._thr_armed = self._thr_armed, False
        if not use_thr:
            return out
        if armed or (self._thr_states is not None) != ("old_per_token_logps" in out):
            raise RuntimeError("THR expected to capture hidden states in TRL's old-policy pass but did not; "
                               "this TRL version computes old log-probs under other conditions than trl 1.16")
        t0 = time.perf_counter()
        self._apply_thr(out)
        self._metrics["train"]["thr/seconds"].append(time.perf_counter() - t0)
        return out

    def _compute_loss(self, model, inputs):
        if not (self._thr_token_advantages and self.importance_sampling_level == "sequence"):
            return super()._compute_loss(model, inputs)
        inputs = dict(inputs)  # the GSPO-token old log-probs are set on this copy only
        self._gspo_inputs = inputs
        self.importance_sampling_level = "token"
        try:
            return super()._compute_loss(model, inputs)
        finally:
            self.importance_sampling_level = "sequence"
            self._gspo_inputs = None

    # ----------------------------------------------------------------------------- THR
    def _set_gspo_token_old_logps(self, log_probs: torch.Tensor) -> None:
        """Old log-probs that turn TRL's token ratio into the GSPO-token ratio (spec section 5).

        With ``old' = sg[log pi] - sg[mean_k(log pi - log pi_old)]`` the token-level ratio
        ``exp(log pi - old')`` equals ``sg[s_j] * pi / sg[pi]``: value ``s_j`` (the sequence
        ratio) on every token, gradient ``s_j * grad log pi_{j,k}``. Clipping per token at the
        common value ``s_j`` is GSPO's sequence-level clipping.
        """
        inputs, self._gspo_inputs = self._gspo_inputs, None
        mask = inputs["completion_mask"] if "tool_mask" not in inputs else inputs["completion_mask"] * inputs["tool_mask"]
        mask = mask.to(log_probs.dtype)
        lp = log_probs.detach()
        old = inputs.get("old_per_token_logps")
        old = lp if old is None else old
        seq_log_ratio = masked_mean(lp - old, mask, dim=-1)[:, None]
        inputs["old_per_token_logps"] = lp - seq_log_ratio

    @torch.no_grad()
    def _completion_states(self, out: dict[str, Any]) -> torch.Tensor:
        """LM-head input states predicting each completion token, ``[B, T, d]`` (one no-grad pass)."""
        ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
        attn = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
        T = out["completion_ids"].size(1)
        was_training = self.model.training
        self.model.eval()
        try:
            with disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs), \
                    capture_backbone_states(self.model, lambda h: h[:, -T - 1 : -1]) as states:
                super()._get_per_token_logps_and_entropies(
                    self.model, ids, attn, T, batch_size=self.args.per_device_train_batch_size)
        finally:
            self.model.train(was_training)
        return torch.cat(states)

    def _head_weight(self) -> tuple[torch.Tensor, Any]:
        from trl.trainer.utils import maybe_gather_lm_head_ctx

        head = output_embeddings(self.accelerator.unwrap_model(self.model))
        weight = getattr(head, "weight", None)
        if weight is None and hasattr(head, "base_layer"):
            weight = head.base_layer.weight
        return weight, maybe_gather_lm_head_ctx(weight)

    def _local_positive(self, advantages: torch.Tensor) -> torch.Tensor:
        rewards = None
        if self.args.thr_positive_reward is not None:
            rpf = self._thr_rewards
            weights = self.reward_weights.to(rpf.device).unsqueeze(0)
            total = (rpf * weights).nansum(dim=1)
            total[torch.isnan(rpf).all(dim=1)] = torch.nan
            B = advantages.shape[0]
            start = self.accelerator.process_index * B
            rewards = total[start : start + B].to(advantages.device)
        return positive_responses(rewards, advantages, self.args.thr_positive_reward)

    def _apply_thr(self, out: dict[str, Any]) -> None:
        a, G = self.args, self.num_generations
        if any(k in out for k in ("pixel_values", "image_grid_thw", "num_images")):
            raise ValueError("THRGRPOTrainer supports text-only models (no images in the batch)")
        check_group_prompts(out["prompt_ids"], out["prompt_mask"], G)
        states = self._thr_states if self._thr_states is not None else self._completion_states(out)
        self._thr_states = None
        mask = out["completion_mask"] if "tool_mask" not in out else out["completion_mask"] * out["tool_mask"]
        advantages = out["advantages"]
        positive = self._local_positive(advantages)
        weight, gather_ctx = self._head_weight()
        with gather_ctx:
            W = weight.full_tensor() if hasattr(weight, "full_tensor") else weight
            if bool(mask.any()):
                influence = token_influence(
                    states, W.detach(), out["completion_ids"], mask, positive, group_size=G,
                    temperature=self.temperature, chunk_size=a.thr_chunk_size, method=a.thr_method)
            else:
                influence = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
        token_adv, metrics = steer(a.thr_settings, advantages, influence, mask, positive, group_size=G)
        if self._thr_token_advantages:
            out["advantages"] = token_adv.to(advantages.dtype)
        metrics["thr/frac_positive_responses"] = float(positive.float().mean())
        names = sorted(metrics)
        local = torch.tensor([metrics[k] for k in names], dtype=torch.float32, device=advantages.device)
        mean = self.accelerator.gather(local[None]).mean(0)
        for k, v in zip(names, mean.tolist()):
            self._metrics["train"][k].append(v)
