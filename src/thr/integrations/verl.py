"""THR for verl 0.9 (v1 trainer, FSDP engine workers) as a plugin.

Load it on the driver and every Ray worker through verl's external-module hook, and switch it on
with the advantage estimator it registers::

    +ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES=thr.integrations.verl
    algorithm.adv_estimator=grpo_thr      # GRPO advantages, then THR token weights
    # THR settings: env vars THR_MODE, THR_P, THR_THRESHOLD, THR_BETA, THR_QUANTILE, THR_VALUE,
    # THR_POSITIVE_REWARD, THR_CHUNK_SIZE, THR_METHOD (passed the same way as the module list)

What it does in one step of verl's v1 trainer (``verl/trainer/ppo/v1/trainer_base.py``):

1. ``_balance_batch``: the token-balanced split over data-parallel ranks keeps every group (rows
   sharing a ``uid``) on one rank (:func:`thr.integrations._groups.balance_groups`); verl's own
   split balances single rows and scatters groups.
2. ``_compute_old_log_prob``: the trainer flags the batch; on each worker the FSDP engine's
   forward hook records the backbone's last hidden states (after the final norm) that predict the
   response tokens (packed layout: positions ``[end_i - R_i - 1, end_i - 1)``, verl's own rule in
   ``response_from_nested``) and moves them to host memory; after the last micro-batch
   :func:`influence_field` scores every token against the positive responses of its group (groups
   by ``uid``, rewards from ``rm_scores``) on the LM head's device, one group at a time. Only the
   influence (one float per token) leaves the worker, as the field ``thr_influence`` next to
   ``log_probs``. The worker side is pure torch in :mod:`thr.integrations._verl_worker`.
3. ``_compute_advantage``: after the GRPO advantages, :func:`apply_thr` turns influence into THR,
   thresholds and token weights and multiplies them into ``advantages`` (verl's synthetic padding
   rows, tagged ``is_padding``, are left alone and count in no metric). verl's ``vanilla``
   (PPO-clip) and ``gspo`` (already GSPO-token: ``sg[s_i] * pi / sg[pi]``) losses use token
   advantages as they are, so no policy loss is replaced.

The pure functions (first half) need only torch; the verl layer (second half) patches verl's
classes when their modules are imported, so importing this module never imports verl itself.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import json
import os
import sys
from typing import Any, Callable, Sequence

import torch

from thr.config import from_env
from thr.core import masked_mean
from thr.integrations._groups import balance_groups, dense_group_ids, positive_responses
from thr.rl.steering import THRSettings, steer
from thr.integrations._verl_worker import (  # noqa: F401 - re-exported: the plugin's worker side
    influence_field,
    rank_influence,
    response_states,
    response_values,
    sequence_layout,
    states_to_host,
)

ESTIMATOR = "grpo_thr"
INFLUENCE_FIELD = "thr_influence"
_STATES_KEY = "thr_states"
_SETTINGS_KEY = "thr_settings"


# ============================================================================= settings


def settings_from_env(env: dict[str, str] | None = None) -> THRSettings:
    """The run's :class:`thr.rl.steering.THRSettings` from ``THR_<FIELD>`` environment variables
    (``THR_MODE``, ``THR_P``, ...; unset or empty: the default), checked like a config file."""
    settings = from_env(THRSettings, os.environ if env is None else env, "THR_").validate("THR_* setting ")
    if settings.mode == "entropy":
        raise ValueError("THR_MODE=entropy needs token entropies, which only thr train computes; use off, reweight "
                         "or dominant")
    return settings


# ============================================================================= driver side (pure)


def apply_thr(
    advantages: torch.Tensor,
    influence: torch.Tensor,
    response_mask: torch.Tensor,
    rewards: torch.Tensor,
    uids: Sequence[Any],
    settings: THRSettings,
    is_padding: Sequence[bool] | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """THR-steered token advantages ``[B, T]`` from verl's GRPO advantages ``[B, T]``.

    verl's GRPO advantage is ``A_j`` on every valid token of response ``j``; ``A_j`` is read back
    as the masked row mean. Groups come from ``uids`` (any row order), P from ``rewards``/``A``
    (see :class:`THRSettings`). ``is_padding`` marks verl's synthetic padding rows (its
    ``is_padding`` tag): they keep their advantages and count in no metric. ``mode="off"``
    returns ``advantages`` unchanged (metrics only).
    """
    real = torch.ones(advantages.shape[0], dtype=torch.bool) if is_padding is None else ~torch.tensor(
        [bool(x) for x in is_padding], dtype=torch.bool).reshape(-1)
    if real.shape[0] != advantages.shape[0]:
        raise ValueError(f"is_padding has {real.shape[0]} rows, advantages {advantages.shape[0]}")
    rows = real.nonzero().squeeze(1).tolist()
    mask = response_mask.bool()[rows]
    seq_adv = masked_mean(advantages[rows], mask, dim=1)
    positive = positive_responses(rewards[rows].to(seq_adv.device), seq_adv, settings.positive_reward)
    gid = dense_group_ids([uids[r] for r in rows]).to(advantages.device)
    token_adv, metrics = steer(settings, seq_adv, influence[rows].to(advantages.device), mask, positive, group_ids=gid)
    metrics["thr/frac_positive_responses"] = float(positive.float().mean()) if positive.numel() else 0.0
    if settings.mode == "off":
        return advantages, metrics
    out = advantages.clone()
    out[rows] = token_adv.to(advantages.dtype)
    return out, metrics


# ============================================================================= verl layer


class _PostImportPatcher(importlib.abc.MetaPathFinder):
    """Run a patch right after a named module executes (or now, if it is already imported)."""

    def __init__(self) -> None:
        self.patches: dict[str, list[Callable[[Any], None]]] = {}
        self.busy: set[str] = set()

    def add(self, module_name: str, patch: Callable[[Any], None]) -> None:
        if module_name in sys.modules:
            patch(sys.modules[module_name])
            return
        self.patches.setdefault(module_name, []).append(patch)
        if self not in sys.meta_path:
            sys.meta_path.insert(0, self)

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in self.patches or fullname in self.busy:
            return None
        self.busy.add(fullname)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self.busy.discard(fullname)
        if spec is None or spec.loader is None:
            return spec
        loader, patches = spec.loader, self.patches.pop(fullname)

        class _Loader(importlib.abc.Loader):
            def create_module(self, spec):
                return loader.create_module(spec)

            def exec_module(self, module):
                loader.exec_module(module)
                for patch in patches:
                    patch(module)

            def __getattr__(self, name):  # get_source, get_filename, is_package, ...: the real loader's
                return getattr(loader, name)

        spec.loader = _Loader()
        return spec


_PATCHER = _PostImportPatcher()
_ADVANTAGE_CONTEXT = {"active": False}


def _non_tensor(data: Any, key: str, default: Any = None) -> Any:
    from verl.utils import tensordict_utils as tu

    return tu.get_non_tensor_data(data=data, key=key, default=default)


def _jagged_lengths(t: torch.Tensor, name: str) -> list[int]:
    if not getattr(t, "is_nested", False):
        raise ValueError(f"THR expects verl's no-padding layout: {name} must be a jagged nested tensor")
    return t.offsets().diff().tolist()


def _field(data: Any, name: str) -> Any:
    try:
        return data[name]
    except KeyError:
        raise RuntimeError(f"THR needs the field {name!r} in the old-policy batch on the workers; this verl setup "
                           "does not provide it there (THR supports the v1 trainer with rewards computed before "
                           "the old-policy pass)") from None


def _as_list(x: Any) -> list[Any]:
    return x.tolist() if hasattr(x, "tolist") else list(x)


def _patch_core_algos(core_algos: Any) -> None:
    if ESTIMATOR in core_algos.ADV_ESTIMATOR_REGISTRY:
        return

    @core_algos.register_adv_est(ESTIMATOR)
    def compute_grpo_thr_advantage(token_level_rewards, response_mask, index, epsilon=1e-6, config=None, **_):
        """GRPO advantages; the THR plugin's ``_compute_advantage`` then applies the token weights."""
        if not _ADVANTAGE_CONTEXT["active"]:
            raise RuntimeError(f"adv_estimator={ESTIMATOR!r} needs verl's v1 trainer (trainer.use_v1=true) with the "
                               "THR plugin loaded (VERL_USE_EXTERNAL_MODULES=thr.integrations.verl)")
        norm = config.get("norm_adv_by_std_in_grpo", True) if config is not None else True
        return core_algos.compute_grpo_outcome_advantage(
            token_level_rewards=token_level_rewards, response_mask=response_mask, index=index,
            epsilon=epsilon, norm_adv_by_std_in_grpo=norm)


def _head_weight(module: Any) -> torch.Tensor:
    inner = getattr(module, "module", module)
    if type(module).__name__ == "FullyShardedDataParallel":
        raise ValueError("THR on verl needs actor strategy=fsdp2 (FSDP1 keeps the LM head sharded outside forward)")
    head = inner.get_output_embeddings()
    weight = head.weight if hasattr(head, "weight") else head.base_layer.weight
    return weight.full_tensor() if hasattr(weight, "full_tensor") else weight


def _patch_fsdp_engine(impl: Any) -> None:
    from thr.integrations._groups import capture_backbone_states

    cls = impl.FSDPEngineWithLMHead
    orig_forward_step, orig_infer_batch = cls.forward_step, cls.infer_batch

    def forward_step(self, micro_batch, loss_function, forward_only):
        if _non_tensor(micro_batch, _SETTINGS_KEY) is None:
            return orig_forward_step(self, micro_batch, loss_function, forward_only)
        if getattr(self, "use_ulysses_sp", False):
            raise ValueError("THR on verl does not support Ulysses sequence parallelism (ulysses_sequence_parallel_size=1)")
        with capture_backbone_states(self.module) as captured:
            loss, output = orig_forward_step(self, micro_batch, loss_function, forward_only)
        if len(captured) != 1:
            raise RuntimeError(f"THR expected one backbone forward per micro-batch, saw {len(captured)}")
        seq_lens = _jagged_lengths(micro_batch["input_ids"], "input_ids")
        resp_lens = _jagged_lengths(micro_batch["response_mask"], "response_mask")
        packed = bool(_non_tensor(micro_batch, "use_remove_padding", True))
        states = response_states(captured[-1], seq_lens, resp_lens, packed=packed)
        output["model_output"][_STATES_KEY] = states_to_host(states)  # off the GPU until the influence step
        return loss, output

    def infer_batch(self, data, loss_function=None):
        raw = _non_tensor(data, _SETTINGS_KEY)
        out = orig_infer_batch(self, data, loss_function)
        if raw is None:
            return out
        cfg = json.loads(raw)
        weight = _head_weight(self.module)  # every rank: FSDP2's full_tensor() is a collective
        model_output = out.get("model_output", {}) if isinstance(out, dict) else {}
        if _STATES_KEY not in model_output:
            return out
        states = model_output.pop(_STATES_KEY).unbind()
        ids = _field(data, "input_ids")
        _jagged_lengths(ids, "input_ids")
        rewards = torch.stack([r.float().sum() for r in _field(data, "rm_scores").unbind()])
        model_output[INFLUENCE_FIELD] = influence_field(
            states, ids, _field(data, "response_mask").unbind(), _as_list(_field(data, "uid")), rewards, weight, cfg)
        return out

    cls.forward_step, cls.infer_batch = forward_step, infer_batch


def _put_thr_advantages(tb: Any, batch: Any, padding: list[bool], metrics: dict) -> Any:
    """Driver: read GRPO advantages and influence from TransferQueue, write the THR advantages back."""
    fields = ["advantages", INFLUENCE_FIELD, "response_mask", "rm_scores", "uid"]
    try:
        data = tb.tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=fields)
    except Exception as err:  # noqa: BLE001 - re-raised with the likely cause
        raise RuntimeError(f"THR: could not read {fields} ({err}); did the workers load the plugin? Pass "
                           "VERL_USE_EXTERNAL_MODULES=thr.integrations.verl through ray_init.runtime_env.env_vars") from err
    resp_mask = data["response_mask"]
    influence = tb.response_from_nested(data[INFLUENCE_FIELD], resp_mask)
    dense = [torch.nested.to_padded_tensor(v.float(), 0.0) for v in (data["advantages"], influence, resp_mask)]
    rewards = torch.stack([r.float().sum() for r in data["rm_scores"].unbind()])
    adv, thr_metrics = apply_thr(*dense, rewards, _as_list(data["uid"]), settings_from_env(), padding)
    metrics.update(thr_metrics)
    out = tb.TensorDict({"advantages": tb.response_to_nested(adv, resp_mask)}, batch_size=len(batch))
    return tb.tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id, fields=out)


def _patch_trainer(tb: Any) -> None:
    cls = tb.PPOTrainer
    orig_balance, orig_old, orig_adv = cls._balance_batch, cls._compute_old_log_prob, cls._compute_advantage

    def active(self) -> bool:
        if str(self.config.algorithm.adv_estimator) != ESTIMATOR:
            return False
        if type(self)._compute_old_log_prob is not _compute_old_log_prob:
            raise ValueError(f"THR supports trainer.v1.trainer_mode sync and colocate_async; {type(self).__name__} "
                             "replaces the old-policy pass the plugin hooks into")
        return True

    def _balance_batch(self, batch, metrics, logging_prefix="global_seqlen", keep_minibatch=False):
        if not active(self):
            return orig_balance(self, batch, metrics, logging_prefix, keep_minibatch)
        wg = self.actor_rollout_wg
        if "actor" not in wg._dispatch_info:
            wg._dispatch_info["actor"] = wg._query_dispatch_info("actor")
        dp_size = max(wg._dispatch_info["actor"]) + 1
        batch = tb.upsample_batch_to_divisible_size(batch, self._get_required_batch_multiple(dp_size),
                                                     self.tokenizer.eos_token_id)
        seqlens = torch.tensor([tag["seq_len"] for tag in batch.tags], dtype=torch.int64)
        workload = tb.calculate_workload(seqlens).tolist()
        uids = [key.rsplit("_", 2)[0] for key in batch.keys]
        padding = [bool(tag.get("is_padding", False)) for tag in batch.tags]
        parts = balance_groups(workload, uids, dp_size, padding)
        batch.reorder([i for part in parts for i in part])
        metrics.update(tb.log_seqlen_unbalance(seqlen_list=seqlens.tolist(), partitions=parts, prefix=logging_prefix))
        return batch

    def _compute_old_log_prob(self, batch, metrics):
        if not active(self):
            return orig_old(self, batch, metrics)
        corr = self.config.algorithm.get("rollout_correction", None)
        if corr and corr.get("bypass_mode", False):
            raise ValueError("THR needs the old-policy pass; rollout_correction.bypass_mode=true skips it")
        s = settings_from_env()
        batch.extra_info[_SETTINGS_KEY] = json.dumps({
            "group_size": int(self.config.actor_rollout_ref.rollout.n),
            "temperature": float(self.config.actor_rollout_ref.rollout.temperature),
            "positive_reward": s.positive_reward, "chunk_size": s.chunk_size, "method": s.method})
        try:
            result = orig_old(self, batch, metrics)
        finally:
            batch.extra_info.pop(_SETTINGS_KEY, None)
        getattr(result, "extra_info", {}).pop(_SETTINGS_KEY, None)
        return result

    def _compute_advantage(self, batch, metrics):
        if not active(self):
            return orig_adv(self, batch, metrics)
        padding = [bool(tag.get("is_padding", False)) for tag in batch.tags]  # verl's synthetic rows
        _ADVANTAGE_CONTEXT["active"] = True
        try:
            batch = orig_adv(self, batch, metrics)
        finally:
            _ADVANTAGE_CONTEXT["active"] = False
        return _put_thr_advantages(tb, batch, padding, metrics)

    cls._balance_batch, cls._compute_old_log_prob, cls._compute_advantage = (
        _balance_batch, _compute_old_log_prob, _compute_advantage)


_INSTALLED = {"done": False}


def install() -> None:
    """Register ``grpo_thr`` and patch verl's trainer and FSDP engine as their modules load (once)."""
    if _INSTALLED["done"]:
        return
    _INSTALLED["done"] = True
    settings_from_env()  # fail early on a bad THR_* variable
    _PATCHER.add("verl.trainer.ppo.core_algos", _patch_core_algos)
    _PATCHER.add("verl.workers.engine.fsdp.transformer_impl", _patch_fsdp_engine)
    _PATCHER.add("verl.trainer.ppo.v1.trainer_base", _patch_trainer)


if "verl" in sys.modules:  # imported by verl's VERL_USE_EXTERNAL_MODULES hook
    install()
