"""``thr train``: single-machine RLVR (GRPO / GSPO-token) with THR steering.

One step (:meth:`Trainer.train_step`), each stage in its own module, typed hand-offs between them:

1. rollout (:mod:`thr.rl.rollout`): ``group_size`` responses for ``prompts_per_step`` prompts,
   scored by the verifier -> :class:`~thr.rl.rollout.Rollout`;
2. group advantages (``thr.core.group_advantages``) and the padded batch
   (:class:`~thr.rl.batch.RolloutBatch`);
3. old-policy pass (:mod:`thr.rl.old_pass`): old log-probs, entropy and THR influence in the same
   forward -> :class:`~thr.rl.old_pass.OldPass`;
4. token advantages: one call, :func:`thr.rl.steering.steer`, dispatching on ``thr.mode``;
5. update (:mod:`thr.rl.update`): ``ppo_epochs`` x ``mini_batches`` optimizer steps of the
   clipped policy loss.

Reproducible on CPU: each step seeds its own sampling and update from ``(seed, step)``, so a run
resumed from a checkpoint logs the same metrics as an uninterrupted one.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from thr.config import dump_yaml, load_config, to_dict, usage
from thr.core import group_advantages, masked_mean, selective_log_softmax
from thr.data.prompts import concrete_template, format_prompt, resolve_template
from thr.models.loading import check_model_path, load_policy, output_embeddings
from thr.rl import checkpoint as ckpt
from thr.rl.batch import RolloutBatch, policy_forward
from thr.rl.config import TrainConfig
from thr.rl.old_pass import OldPass, OldPassTHR, old_policy_pass
from thr.rl.problems import checks_solutions, load_train_eval, task_info, warn_base_outside_band
from thr.rl.rollout import Rollout, sample_rollout
from thr.rl.run_log import RunLogger, group_records, truncate_jsonl
from thr.rl.steering import steer
from thr.rl.update import update_policy


@dataclass
class StepData:
    """What one step computed, for its logs (``B`` responses in groups of ``group_size``).

    rollout: the sampled, scored responses.
    batch: their padded tensors.
    old: the old-policy pass (log-probs, entropy, influence).
    advantages: ``[B]`` group advantages.
    token_advantages: ``[B, T]`` the token advantages the update trained on.
    group_size: G.
    """

    rollout: Rollout
    batch: RolloutBatch
    old: OldPass
    advantages: torch.Tensor
    token_advantages: torch.Tensor
    group_size: int


class Trainer:
    """Owns the policy, optimizer, data and logs of one run (see module doc)."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg.validate()
        self.created = time.perf_counter()  # wall time counts from here: warm start included
        self.out = Path(cfg.output_dir)
        # inputs first: a bad data source or model path fails before any model loads or file is written
        if cfg.model.name_or_path != "embedded":
            check_model_path(cfg.model.name_or_path)
        self.train_problems, self.eval_problems = load_train_eval(cfg)
        created_out = not self.out.exists()
        self.out.mkdir(parents=True, exist_ok=True)
        try:
            self._setup(cfg)
        except BaseException:
            if created_out:  # leave nothing behind: the directory only holds what this call wrote
                shutil.rmtree(self.out, ignore_errors=True)
            raise

    def _setup(self, cfg: TrainConfig) -> None:
        torch.manual_seed(cfg.seed)
        path = cfg.model.name_or_path
        self.setup_seconds = 0.0
        if path == "embedded":
            from thr.models.embedded import warm_start

            if "OMP_NUM_THREADS" not in os.environ:
                torch.set_num_threads(1)  # tiny model: one thread beats two (measured; see docs/embedded.md)
            path = str(warm_start(cfg.embedded, progress=cfg.log.progress))
        self.setup_seconds = time.perf_counter() - self.created
        m = cfg.model
        self.model, self.tokenizer = load_policy(
            path, dtype=m.dtype, device=m.device, trust_remote_code=m.trust_remote_code, lora_r=m.lora_r,
            lora_alpha=m.lora_alpha, lora_dropout=m.lora_dropout, lora_target_modules=m.lora_target_modules,
        )
        if m.gradient_checkpointing:
            self.model.gradient_checkpointing_enable()
        self.device = next(self.model.parameters()).device
        self.template, _ = resolve_template(cfg.data.prompt_template, path)  # auto: the saved model's template
        if path != cfg.model.name_or_path and self.template == "auto":
            self.template = "plain"  # the embedded model is trained on the plain template
        self.check_solutions = checks_solutions(cfg)
        format_prompt(self.tokenizer, self.train_problems[0].problem, self.template)  # fail now, not mid-run
        self.prompt_info = {"template": concrete_template(self.tokenizer, self.template), **task_info(cfg)}
        self.ref_model = self._make_reference() if cfg.optim.kl_coef > 0 else None
        self.thr_pass = OldPassTHR(cfg.thr, cfg.rollout.group_size, cfg.rollout.temperature,
                                   head_adapter=hasattr(output_embeddings(self.model), "base_layer"))
        params = [p for p in self.model.parameters() if p.requires_grad]
        o = cfg.optim
        if o.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(params, lr=o.lr, momentum=o.sgd_momentum, weight_decay=o.weight_decay)
        else:
            self.optimizer = torch.optim.AdamW(params, lr=o.lr, betas=(o.adam_beta1, o.adam_beta2), eps=o.adam_eps,
                                               weight_decay=o.weight_decay)
        total_updates = cfg.steps * o.ppo_epochs * o.mini_batches
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda u: lr_factor(u, o.warmup_steps, total_updates, o.lr_schedule))
        from thr.models.generation import make_generator

        self.generator = make_generator(cfg.rollout.backend, self.model, self.tokenizer)
        self.step = 0
        self.base_metrics: dict[str, float] = {}
        self.wall_offset = 0.0
        if cfg.resume:
            self._resume()
        else:
            self._start_fresh()
        dump_yaml(cfg, self.out / "config.yaml")
        self.logger = RunLogger(self.out, tensorboard=cfg.log.tensorboard, wandb=cfg.log.wandb,
                                wandb_project=cfg.log.wandb_project, wandb_run_name=cfg.log.wandb_run_name, config=to_dict(cfg))

    # ----------------------------------------------------------------------------- setup
    def _make_reference(self) -> Any:
        if ckpt.is_peft(self.model):
            return None  # the reference is the base model: adapters disabled in _ref_log_probs
        ref = copy.deepcopy(self.model).eval()
        for p in ref.parameters():
            p.requires_grad_(False)
        return ref

    def _resume(self) -> None:
        last = ckpt.latest_checkpoint(self.out)
        if last is None:
            self._truncate_logs(0)  # starting over: the logs of the lost steps go too
            print(f"resume: no checkpoint under {self.out / 'checkpoints'}; starting from step 0", file=sys.stderr)
            return
        state = torch.load(last / ckpt.STATE_FILE, weights_only=False)
        ckpt.load_policy_weights(self.model, last)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        ckpt.set_rng_state(state["rng"])
        self.step = state["step"]
        self.base_metrics = state.get("base_metrics", {})
        self.wall_offset = state.get("wall_seconds", 0.0)
        self._truncate_logs(self.step)
        print(f"resumed from {last} (step {self.step})", file=sys.stderr)

    def _start_fresh(self) -> None:
        """A new run in a directory that holds an earlier one: its logs and checkpoints go, so that
        the logs describe this run only and ``--resume`` never picks up the other run's state."""
        old = [p for p in (self.out / "metrics.jsonl", self.out / "groups.jsonl", self.out / "checkpoints") if p.exists()]
        if old:
            print(f"{self.out} holds an earlier run: starting a new one, removing its "
                  f"{', '.join(p.name for p in old)} (resume=true continues a run instead)", file=sys.stderr)
            self._truncate_logs(0)
            shutil.rmtree(self.out / "checkpoints", ignore_errors=True)

    def _truncate_logs(self, done: int) -> None:
        """Drop the log records of every step after the first ``done`` ones (resume continues there).

        ``metrics.jsonl`` numbers a step's record after it (step ``k`` is the ``k``-th step; 0 is
        the evaluation before training, redone when ``done`` is 0); ``groups.jsonl`` by the step's
        index (``k - 1``).
        """
        truncate_jsonl(self.out / "metrics.jsonl", done if done else -1)
        truncate_jsonl(self.out / "groups.jsonl", done - 1)

    def save_checkpoint(self, wall_seconds: float) -> Path:
        state = {
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "rng": ckpt.rng_state(), "step": self.step, "base_metrics": self.base_metrics,
            "wall_seconds": wall_seconds, "config": to_dict(self.cfg),
        }
        path = ckpt.save_model_atomic(self.model, self.tokenizer, ckpt.checkpoint_dir(self.out, self.step), state,
                                      prompt=self.prompt_info)
        ckpt.prune_checkpoints(self.out, self.cfg.keep_checkpoints)
        return path

    # ----------------------------------------------------------------------------- rollout
    def _prompt_indices(self, step: int) -> list[int]:
        """Prompts of ``step``: an epoch-wise permutation seeded by (seed, epoch)."""
        n, k = len(self.train_problems), self.cfg.rollout.prompts_per_step
        out = []
        for j in range(step * k, (step + 1) * k):
            epoch, pos = divmod(j, n)
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.cfg.seed * 7919 + epoch))
            out.append(int(perm[pos]))
        return out

    def rollout(self, step: int) -> Rollout:
        """The step's groups, sampled with a seed of ``(seed, step)`` and scored."""
        problems = [self.train_problems[i] for i in self._prompt_indices(step)]
        return sample_rollout(self.generator, self.tokenizer, problems, template=self.template, rollout=self.cfg.rollout,
                              reward=self.cfg.reward, seed=self.cfg.seed * 1_000_003 + step, checker=self._checker)

    def _checker(self, problem: Any) -> Any:
        """The full solution check of ``problem`` (built-in tasks with ``reward.check_steps``)."""
        from thr.data.tasks import checker_for

        return checker_for(problem) if self.check_solutions else None

    def old_policy_pass(self, batch: RolloutBatch, positive: torch.Tensor) -> OldPass:
        """:func:`thr.rl.old_pass.old_policy_pass` with this run's micro-batch size (whole groups)."""
        G = self.cfg.rollout.group_size
        return old_policy_pass(self.model, batch, positive, self.thr_pass,
                               rows_per_micro=max(1, self.cfg.optim.micro_batch_size // G) * G,
                               reference=self._ref_log_probs if self.cfg.optim.kl_coef > 0 else None)

    def _ref_log_probs(self, sub: RolloutBatch) -> torch.Tensor:
        tau = self.cfg.rollout.temperature
        if self.ref_model is not None:
            logits = policy_forward(self.ref_model, sub)
        else:
            with self.model.disable_adapter():
                logits = policy_forward(self.model, sub)
        return selective_log_softmax(logits, sub.response_ids, temperature=tau)

    # ----------------------------------------------------------------------------- one step
    def train_step(self, step: int) -> dict[str, Any]:
        """Rollout -> advantages -> old-policy pass (THR) -> token advantages -> update; returns the metrics."""
        cfg, o, c = self.cfg, self.cfg.optim, self.cfg.thr
        G = cfg.rollout.group_size
        torch.manual_seed(cfg.seed * 104729 + step)
        t0 = time.perf_counter()
        rollout = self.rollout(step)
        t1 = time.perf_counter()
        rewards, correct = rollout.rewards(self.device), rollout.correct(self.device)
        advantages, reward_metrics = group_advantages(rewards, group_size=G, mode=o.advantage, unbiased_std=o.unbiased_std, eps=o.adv_eps)
        positive = correct if c.positive_reward is None else rewards >= c.positive_reward  # the set P
        batch = rollout.batch(self.tokenizer.pad_token_id, self.device)
        old = self.old_policy_pass(batch, positive)
        t2 = time.perf_counter()
        p = p_at_step(step, cfg.steps, c.p, c.p_end, c.p_schedule)
        token_adv, thr_metrics = steer(c, advantages, old.influence, batch.response_mask, positive, group_size=G, p=p,
                                       entropy=old.entropy)
        if c.p_schedule != "constant":
            thr_metrics["thr/p"] = p
        t3 = time.perf_counter()
        update_metrics = update_policy(self.model, self.optimizer, self.scheduler, batch, token_adv, old, optim=o,
                                       group_size=G, temperature=cfg.rollout.temperature,
                                       norm_length=cfg.rollout.max_new_tokens, seed=cfg.seed * 15485863 + step)
        if hasattr(self.generator, "sync_weights"):
            self.generator.sync_weights(self.model)
        t4 = time.perf_counter()
        if cfg.log.likelihood_dynamics:
            update_metrics.update(self._likelihood_change(batch, old.log_probs, correct))
        thr_time = old.thr_seconds + (t3 - t2)
        lengths = batch.response_mask.sum(1).float()
        metrics: dict[str, Any] = {
            **reward_metrics,
            "reward/accuracy": float(correct.float().mean()),
            "reward/has_answer": rollout.share("has_answer"),
            "reward/truncated": rollout.share("truncated"),
            "response/length_mean": float(lengths.mean()),
            "response/length_max": float(lengths.max()),
            "policy/entropy": float(masked_mean(old.entropy, batch.response_mask)),
            **thr_metrics,
            **update_metrics,
            "time/rollout": t1 - t0,
            "time/old_pass": t2 - t1 - old.thr_seconds,
            "time/thr": thr_time,
            "time/update": t4 - t3,
            "time/step": t4 - t0,
        }
        metrics["time/thr_share"] = thr_time / max(metrics["time/step"], 1e-9)
        if cfg.log.groups_every and step % cfg.log.groups_every == 0:
            step_data = StepData(rollout, batch, old, advantages, token_adv, G)
            for rec in group_records(step_data, self.tokenizer, cfg.log.groups_per_log):
                self.logger.log(step, rec, file="groups.jsonl")
        return metrics

    @torch.no_grad()
    def _likelihood_change(self, batch: RolloutBatch, before: torch.Tensor, correct: torch.Tensor) -> dict[str, float]:
        """Change of the mean token log-likelihood of the batch's correct / incorrect responses."""
        self.model.eval()
        out = {}
        for name, rows in (("correct", correct), ("incorrect", ~correct)):
            idx = rows.nonzero().squeeze(1)
            if idx.numel() == 0:
                continue
            deltas = []
            for micro in idx.split(self.cfg.optim.micro_batch_size):
                sub = batch.rows(micro)
                after = selective_log_softmax(policy_forward(self.model, sub), sub.response_ids, temperature=self.cfg.rollout.temperature)
                deltas.append(masked_mean(after - before[micro, : sub.response_width], sub.response_mask, dim=1))
            out[f"likelihood/{name}_delta"] = float(torch.cat(deltas).mean())
        self.model.train()
        return out

    # ----------------------------------------------------------------------------- eval + run
    def evaluate(self, step: int) -> dict[str, float]:
        if not self.eval_problems:
            return {}
        from thr.eval.evaluate import evaluate_problems

        e, r = self.cfg.eval, self.cfg.rollout
        problems = self.eval_problems[: e.limit] if e.limit else self.eval_problems
        res = evaluate_problems(
            self.model, self.tokenizer, problems, n=e.n, temperature=e.temperature, top_p=1.0,
            max_new_tokens=e.max_new_tokens or r.max_new_tokens, batch_size=e.batch_size,
            prompt_template=self.template, seed=self.cfg.seed + 17, greedy=True,
        )
        return {f"eval/{k}": float(v) for k, v in res.items() if isinstance(v, (int, float))}

    def train(self) -> dict[str, Any]:
        """Run to ``cfg.steps`` (from a checkpoint when resuming); returns the summary."""
        cfg = self.cfg
        start_wall = (self.created if self.step == 0 else time.perf_counter()) - self.wall_offset
        if self.step == 0 and cfg.eval.before:
            self.base_metrics = self.evaluate(0)
            self.logger.log(0, {**self.base_metrics, "time/wall": time.perf_counter() - start_wall})
            warn_base_outside_band(cfg, self.base_metrics)
        bar = _progress(cfg.steps, self.step, cfg.log.progress)
        try:
            while self.step < cfg.steps:
                try:
                    metrics = self.train_step(self.step)
                except torch.OutOfMemoryError as err:
                    raise RuntimeError(_OOM_HELP.format(step=self.step + 1, ckpt=ckpt.latest_checkpoint(self.out))) from err
                self.step += 1
                if cfg.eval.every and self.step % cfg.eval.every == 0 and self.step < cfg.steps:
                    metrics.update(self.evaluate(self.step))
                metrics["time/wall"] = time.perf_counter() - start_wall
                self.logger.log(self.step, metrics)
                if bar is not None:
                    bar.set_postfix(progress_postfix(metrics), refresh=False)
                    bar.update(1)
                if cfg.save_every and self.step % cfg.save_every == 0 and self.step < cfg.steps:
                    self.save_checkpoint(time.perf_counter() - start_wall)
        finally:
            if bar is not None:
                bar.close()
        # zero steps with the start already scored: the same model, no second evaluation
        final_eval = self.base_metrics if self.step == 0 and self.base_metrics else self.evaluate(self.step)
        wall = time.perf_counter() - start_wall
        self.logger.log(self.step, {**final_eval, "time/wall": wall})
        ckpt.save_model_atomic(self.model, self.tokenizer, self.out / "final", prompt=self.prompt_info)
        summary = build_summary(self.base_metrics, final_eval, wall, self.step, self.out)
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        self.logger.close()
        return summary


_OOM_HELP = (
    "out of memory in step {step}. Lower optim.micro_batch_size (update and old-policy pass), "
    "rollout.batch_size (generation) or rollout.max_new_tokens, or set model.gradient_checkpointing=true; "
    "then continue with resume=true (last checkpoint: {ckpt})."
)


def p_at_step(step: int, steps: int, p: float, p_end: float, schedule: str) -> float:
    """The steering strength of step ``step`` (0-based) of ``steps``: ``p``, or linear ``p`` -> ``p_end``."""
    if schedule == "constant" or steps <= 1:
        return p
    return p + (p_end - p) * min(step, steps - 1) / (steps - 1)


def lr_factor(update: int, warmup: int, total: int, schedule: str) -> float:
    """Multiplier of the base learning rate after ``update`` optimizer steps."""
    if warmup and update < warmup:
        return (update + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return 1.0
    frac = min(1.0, (update - warmup) / max(1, total - warmup))
    return 1.0 - frac if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * frac))


def build_summary(base: dict[str, float], final: dict[str, float], wall: float, steps: int, out: Path) -> dict[str, Any]:
    pick = lambda d, k: d.get(f"eval/{k}")  # noqa: E731
    return {
        "steps": steps,
        "base_greedy_accuracy": pick(base, "greedy_accuracy"),
        "final_greedy_accuracy": pick(final, "greedy_accuracy"),
        "base_pass_at_8": pick(base, "pass@8"),
        "final_pass_at_8": pick(final, "pass@8"),
        "base_eval": base,
        "final_eval": final,
        "wall_seconds": wall,
        "final_model": str(out / "final"),
        "metrics_log": str(out / "metrics.jsonl"),
    }


def progress_postfix(metrics: dict[str, Any]) -> dict[str, str]:
    """What the progress bar shows after a step: that step's own figures, labelled.

    ``rollout_reward`` / ``rollout_acc``: mean reward and verified-correct share of the step's
    sampled responses; ``heldout_acc``: greedy held-out accuracy, only on a step that evaluated
    (``eval.every``); ``thr_time``: THR's share of the step's time.
    """
    out = {"rollout_reward": f"{metrics['reward/mean']:.2f}", "rollout_acc": f"{metrics['reward/accuracy']:.2f}"}
    if "eval/greedy_accuracy" in metrics:
        out["heldout_acc"] = f"{metrics['eval/greedy_accuracy']:.2f}"
    out["thr_time"] = f"{metrics['time/thr_share']:.0%}"
    return out


def _progress(total: int, initial: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="thr train", unit="step", dynamic_ncols=True)


def train_usage() -> str:
    """``thr train --help``: every option of :class:`TrainConfig` with its type, default and doc."""
    return usage(TrainConfig(), "train", "RL training (GRPO / GSPO-token) with THR steering; no arguments: the embedded "
                 "default.", "src/thr/rl/config.py, docs/training.md")


def cli_main(argv: list[str] | None = None) -> int:
    """``thr train [--config FILE] [key=value ...]``; prints before/after accuracy."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(train_usage())
        return 0
    cfg = load_config(TrainConfig, argv)
    summary = Trainer(cfg).train()
    fmt = lambda v: "n/a" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    print(f"greedy accuracy: {fmt(summary['base_greedy_accuracy'])} -> {fmt(summary['final_greedy_accuracy'])}   "
          f"pass@8: {fmt(summary['base_pass_at_8'])} -> {fmt(summary['final_pass_at_8'])}   "
          f"wall {summary['wall_seconds']:.0f}s   summary: {Path(cfg.output_dir) / 'summary.json'}")
    return 0
