"""One THR step through real verl 0.9.1 on CPU: Ray, TransferQueue, the patched trainer and FSDP engine.

What is real: a local Ray, TransferQueue (its controller and storage units as Ray actors), verl's
``PPOTrainerSync`` methods ``_balance_batch``, ``_compute_old_log_prob`` and
``_compute_advantage`` as the plugin patches them (including verl's padding-row upsampling and
GRPO estimator), verl's ``tqbridge`` between TransferQueue and the workers, and the plugin-patched
``FSDPEngineWithLMHead.infer_batch``/``forward_step`` with verl's own micro-batching (dynamic
batch size, so groups span micro-batches), packed no-padding inputs and log-prob post-processing.
What is simulated: the two data-parallel ranks run one after the other in this process (a
one-process gloo group) on a tiny random Qwen2 that is not FSDP-wrapped; the worker group only
splits the batch into two contiguous halves as verl's dispatch does; verl's device helpers are
pointed at the CPU (they assume an accelerator). Checked: influence within 1e-5 of ``thr.core``
on per-sequence forwards, advantages exactly verl's GRPO times the THR weights, padding rows in
no metric; and, as a negative control, states shifted by one position fail the influence check.

Needs verl, Ray and TransferQueue (``pip install -e '.[verl-cpu]'`` and verl without its GPU
dependencies; see docs/integrations.md); skipped without them.
"""

from __future__ import annotations

import copy
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("verl", reason="needs verl (pip install -e '.[verl-cpu]'; see docs/integrations.md)")
ray = pytest.importorskip("ray")
tq = pytest.importorskip("transfer_queue")

import thr.integrations.verl as plugin
from thr.core import steered_advantages, token_influence
from thr.models.loading import capture_head_inputs

G, GROUPS, P = 4, 3, 0.2
REWARDS = [[1, 0, 0, 1], [0, 1, 1, 1], [1, 1, 1, 1]]  # the last group has A = 0 everywhere
THR_ENV = {"THR_MODE": "reweight", "THR_P": str(P), "THR_THRESHOLD": "nthr"}


def _verl_config():
    import verl
    from hydra import compose, initialize_config_dir

    overrides = [
        "algorithm.adv_estimator=grpo_thr", "algorithm.use_kl_in_reward=false", "trainer.use_v1=true",
        f"actor_rollout_ref.rollout.n={G}", "actor_rollout_ref.rollout.temperature=1.0",
        "actor_rollout_ref.actor.ppo_mini_batch_size=2", "actor_rollout_ref.actor.strategy=fsdp2",
        "trainer.critic_warmup=0",
    ]
    with initialize_config_dir(config_dir=str(Path(verl.__file__).parent / "trainer" / "config"), version_base=None):
        return compose(config_name="ppo_trainer", overrides=overrides)


def _model():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=False)
    return Qwen2ForCausalLM(cfg).eval()


def _rows(eos: int):
    """The batch as verl's agent loop puts it into TransferQueue: keys ``{uid}_{session}_{index}``."""
    gen = torch.Generator().manual_seed(1)
    keys, fields, tags = [], [], []
    for g in range(GROUPS):
        prompt = torch.randint(0, eos, (int(torch.randint(10, 20, (1,), generator=gen)),), generator=gen)
        for k in range(G):
            R = int(torch.randint(4, 14, (1,), generator=gen))
            resp = torch.randint(0, eos, (R,), generator=gen)
            ids = torch.cat([prompt, resp])
            mask = torch.ones(R, dtype=torch.int64)
            if k == 1:
                mask[-1] = 0  # a response whose last token is not trained on
            scores = torch.zeros(R)
            scores[-1] = float(REWARDS[g][k])
            keys.append(f"p{g}_{k}_0")
            fields.append({"prompts": prompt, "responses": resp, "input_ids": ids, "attention_mask": torch.ones_like(ids),
                           "position_ids": torch.arange(len(ids)), "response_mask": mask, "loss_mask": mask,
                           "rm_scores": scores, "rollout_log_probs": torch.zeros(R), "uid": f"p{g}", "num_turns": 1})
            tags.append({"status": "success", "prompt_len": len(prompt), "response_len": R, "seq_len": len(ids)})
    return keys, fields, tags


class _Rank:
    """One data-parallel rank: what verl's ``TrainingWorker.infer_batch`` does around the engine."""

    def __init__(self, engine):
        self.engine = engine

    def compute_log_prob(self, data):
        from verl.utils import tensordict_utils as tu

        defaults = {"use_remove_padding": True, "use_dynamic_bsz": True, "max_token_len_per_gpu": 128,
                    "micro_batch_size_per_gpu": 2, "use_fused_kernels": False}
        for key, val in defaults.items():
            if key not in data.keys():  # noqa: SIM118 - a TensorDict, as in verl
                tu.assign_non_tensor(data, **{key: val})
        out = self.engine.infer_batch(data, loss_function=None)
        return tu.get_tensordict(tensor_dict=out["model_output"], non_tensor_dict={"metrics": {}}).cpu()


class _WorkerGroup:
    """Two simulated ranks; ``compute_log_prob`` splits the batch into contiguous halves like verl's dispatch."""

    def __init__(self, engine):
        from verl.utils.transferqueue_utils import tqbridge

        self._dispatch_info = {}
        self.rank = _Rank(engine)
        self.bridged = tqbridge()(self.rank.compute_log_prob)  # verl's TransferQueue <-> TensorDict bridge
        self.rank_keys = []

    def _query_dispatch_info(self, role):
        return [0, 1]

    def compute_log_prob(self, batch):
        from transfer_queue import KVBatchMeta

        half = len(batch) // 2
        for lo, hi in ((0, half), (half, len(batch))):
            self.rank_keys.append(batch.keys[lo:hi])
            part = KVBatchMeta(keys=batch.keys[lo:hi], tags=batch.tags[lo:hi], partition_id=batch.partition_id,
                               fields=None, extra_info=copy.deepcopy(batch.extra_info))
            self.bridged(part)
        return batch


def _engine(impl, model, micro_batch_uids):
    from verl.utils import torch_functional as verl_F

    eng = impl.FSDPEngineWithLMHead.__new__(impl.FSDPEngineWithLMHead)

    def forward_step(micro_batch, loss_function, forward_only):  # the patched class method, micro-batches recorded
        micro_batch_uids.append(list(micro_batch["uid"]))
        return type(eng).forward_step(eng, micro_batch, loss_function, forward_only)

    eng.forward_step = forward_step
    eng.module, eng.mode = model, "eval"
    eng.use_ulysses_sp, eng.ulysses_sequence_parallel_size = False, 1
    eng.pad_to_length, eng.pad_to_length_bucket = False, 1
    eng.engine_config = SimpleNamespace(entropy_checkpointing=False, entropy_from_logits_with_chunking=False)
    eng.compute_entropy_from_logits = verl_F.entropy_from_logits
    eng._autocast_dtype = torch.float32
    eng.get_data_parallel_group = lambda: torch.distributed.group.WORLD
    eng.get_data_parallel_size = lambda: 1
    return eng


@pytest.fixture(scope="module")
def verl_env():
    """Ray + TransferQueue + a one-process gloo group, the plugin installed, verl's device helpers on CPU."""
    mp = pytest.MonkeyPatch()
    for k, v in THR_ENV.items():
        mp.setenv(k, v)
    plugin.install()
    from verl.trainer.ppo.v1 import trainer_base as tb
    from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync
    from verl.utils import seqlen_balancing
    from verl.workers.engine.fsdp import transformer_impl as impl

    for mod in (impl, seqlen_balancing):
        mp.setattr(mod, "get_device_name", lambda: "cpu", raising=False)
    mp.setattr(impl, "get_device_id", lambda: "cpu")
    if not torch.distributed.is_initialized():
        with socket.socket() as s:  # a free port: other test runs may share the machine
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    from omegaconf import OmegaConf

    # logical CPUs: TransferQueue's controller and storage actors each ask for one (2 real cores suffice)
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    tq.init(OmegaConf.create({"backend": {"SimpleStorage": {"num_data_storage_units": 1}}}))
    try:
        yield SimpleNamespace(tb=tb, impl=impl, trainer_cls=PPOTrainerSync)
    finally:
        tq.close()
        ray.shutdown()
        torch.distributed.destroy_process_group()
        mp.undo()


def _run_step(env, partition: str):
    """Put the batch into TransferQueue and run balance -> old log-prob -> advantage as verl's trainer does."""
    model = _model()
    eos = 49
    keys, fields, tags = _rows(eos)
    from verl.utils.tensordict_utils import list_of_dict_to_tensordict

    batch = tq.kv_batch_put(keys=keys, partition_id=partition, fields=list_of_dict_to_tensordict(fields), tags=tags)
    trainer = env.trainer_cls.__new__(env.trainer_cls)
    trainer.config, trainer.global_steps, trainer.use_critic = _verl_config(), 1, False
    trainer.tokenizer = SimpleNamespace(eos_token_id=eos)
    micro_batch_uids = []
    trainer.actor_rollout_wg = _WorkerGroup(_engine(env.impl, model, micro_batch_uids))
    metrics = {}
    batch = trainer._balance_batch(batch, metrics)
    batch = trainer._compute_old_log_prob(batch, metrics)
    batch = trainer._compute_advantage(batch, metrics)
    got = tq.kv_batch_get(keys=batch.keys, partition_id=partition,
                          select_fields=["advantages", plugin.INFLUENCE_FIELD, "response_mask", "input_ids", "uid"])
    return SimpleNamespace(model=model, batch=batch, metrics=metrics, got=got, keys=keys, fields=fields,
                           ranks=trainer.actor_rollout_wg.rank_keys, micro_batch_uids=micro_batch_uids)


def _reference(model, fields):
    """thr.core on per-sequence forwards of the real rows (contiguous groups), and verl's GRPO advantages."""
    from verl.trainer.ppo import core_algos

    R = [len(f["responses"]) for f in fields]
    T = max(R)
    H, Y, M = torch.zeros(len(fields), T, 32), torch.zeros(len(fields), T, dtype=torch.long), torch.zeros(len(fields), T)
    with torch.no_grad():
        for i, f in enumerate(fields):
            with capture_head_inputs(model) as cap:
                model(input_ids=f["input_ids"][None])
            L = len(f["input_ids"])
            H[i, : R[i]], Y[i, : R[i]], M[i, : R[i]] = cap[-1][0, L - R[i] - 1 : L - 1], f["responses"], f["response_mask"]
    scores = torch.zeros(len(fields), T)
    for i, f in enumerate(fields):
        scores[i, : R[i]] = f["rm_scores"]
    index = [f["uid"] for f in fields]
    adv, _ = core_algos.compute_grpo_outcome_advantage(token_level_rewards=scores, response_mask=M, index=index)
    seq_adv = adv.sum(1) / M.sum(1)  # A_j (every valid token carries it)
    infl = token_influence(H, model.lm_head.weight.detach(), Y, M.bool(), seq_adv > 0, group_size=G)
    return infl.float(), adv, seq_adv, M.bool()


def _by_key(step):
    """The step's outputs for the real rows, in the order of ``fields`` (padding rows dropped)."""
    pos = {k: i for i, k in enumerate(step.batch.keys)}
    rows = [pos[k] for k in step.keys]
    mask = torch.nested.to_padded_tensor(step.got["response_mask"].float(), 0.0)[rows].bool()
    adv = torch.nested.to_padded_tensor(step.got["advantages"].float(), 0.0)[rows]
    flat = step.got[plugin.INFLUENCE_FIELD]
    lens = [len(f["responses"]) for f in step.fields]
    from verl.workers.utils.padding import response_from_nested

    infl = torch.nested.to_padded_tensor(response_from_nested(flat, step.got["response_mask"]), 0.0)[rows]
    T = max(lens)
    pad = lambda x: torch.nn.functional.pad(x, (0, T - x.shape[1]))
    return pad(infl), pad(adv), pad(mask.float()).bool()


def test_simulated_step_matches_thr_core(verl_env):
    step = _run_step(verl_env, "thr-sim")
    assert len(step.batch) == 16 and sum(bool(t.get("is_padding")) for t in step.batch.tags) == 4
    for keys in step.ranks:  # each simulated rank held whole groups (padding rows fill the rest)
        real = [k.rsplit("_", 2)[0] for k in keys if not k.startswith("pad")]
        assert all(real.count(u) == G for u in set(real)), keys
    spans = [u for u in {u for mb in step.micro_batch_uids for u in mb}
             if not u.startswith("pad") and sum(u in mb for mb in step.micro_batch_uids) > 1]
    assert spans, step.micro_batch_uids  # some group's rows were split over micro-batches (states kept across them)
    want_infl, grpo_adv, seq_adv, mask = _reference(step.model, step.fields)
    infl, adv, got_mask = _by_key(step)
    assert torch.equal(got_mask, mask)
    torch.testing.assert_close(infl, want_infl, rtol=0, atol=1e-5)
    assert float(want_infl.abs().max()) > 1e-3
    # advantages: exactly verl's GRPO times the THR weights of the influence the step produced
    want_adv, want_metrics = steered_advantages(seq_adv, infl, mask, seq_adv > 0, group_size=G, mode="reweight", p=P)
    assert torch.equal(adv, want_adv.to(adv.dtype))
    nz = mask & (grpo_adv != 0)
    ratios = set((adv[nz] / grpo_adv[nz]).double().round(decimals=4).tolist())
    assert ratios <= {1.0, round(1 + P, 4), round(1 - P, 4)} and len(ratios) > 1, ratios
    # metrics: padding rows count nowhere
    n_pos = int((seq_adv > 0).sum())  # 2 + 3 rewarded rows of the two mixed groups
    assert n_pos == 5 and step.metrics["thr/frac_positive_responses"] == pytest.approx(5 / 12)  # not 5 / 16
    assert 0 < step.metrics["thr/frac_dominant"] < 1
    assert step.metrics["thr/frac_dominant"] == pytest.approx(want_metrics["thr/frac_dominant"])


def test_negative_control_shifted_states_fail(verl_env, monkeypatch):
    real = plugin.response_states

    def shifted(hidden, seq_lens, response_lens, *, packed):  # states one position later than verl's rule
        flat = hidden.reshape(-1, hidden.shape[-1])
        return real(torch.cat([flat[1:], flat[-1:]])[None], seq_lens, response_lens, packed=packed)

    monkeypatch.setattr(plugin, "response_states", shifted)
    step = _run_step(verl_env, "thr-sim-shifted")
    want_infl, *_ = _reference(step.model, step.fields)
    infl, _, _ = _by_key(step)
    assert float((infl - want_infl).abs().max()) > 1e-3
    with pytest.raises(AssertionError):
        torch.testing.assert_close(infl, want_infl, rtol=0, atol=1e-5)
