"""The RL trainer: a real step changes the weights, THR off is plain GRPO, resume is exact."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from thr.config import load_config
from thr.rl.trainer import Trainer, cli_main
from thr.rl.config import TrainConfig

from conftest import TINY_TASK, tiny_embedded_config


def make_cfg(policy_dir, out, *overrides: str) -> TrainConfig:
    base = [
        f"output_dir={out}", f"model.name_or_path={policy_dir}", "steps=1", "seed=3",
        "rollout.prompts_per_step=4", "rollout.group_size=8", "rollout.max_new_tokens=32", "rollout.batch_size=64",
        "optim.lr=1e-3", "optim.mini_batches=1", "optim.micro_batch_size=12", "data.train=arith", "data.eval=", "data.prompt_template=plain",
        "log.progress=false", "log.groups_every=1", "save_every=0",
    ]
    cfg = load_config(TrainConfig, base + list(overrides))
    cfg.embedded = tiny_embedded_config()  # the arith task settings the policy was trained on
    return cfg


def params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def test_one_step_changes_weights_and_logs(tiny_policy_dir, tmp_path):
    trainer = Trainer(make_cfg(tiny_policy_dir, tmp_path))
    before = params(trainer.model)
    metrics = trainer.train_step(0)
    assert metrics["reward/std"] > 0, "precondition: the tiny policy must give groups with mixed rewards"
    changed = [k for k, v in params(trainer.model).items() if not torch.equal(v, before[k])]
    assert len(changed) == len(before)
    for key in ("reward/mean", "loss/policy", "thr/frac_dominant", "time/rollout", "time/thr", "time/update", "policy/entropy"):
        assert key in metrics
    assert 0 < metrics["thr/frac_dominant"] <= 1
    groups = [json.loads(line) for line in (tmp_path / "groups.jsonl").read_text().splitlines()]
    assert groups and len(groups[0]["responses"][0]["thr"]) == len(groups[0]["responses"][0]["tokens"])


def plain_grpo_gradient(trainer: Trainer, step: int) -> dict[str, torch.Tensor]:
    """An independent, unbatched GRPO gradient on the trainer's own rollout (token-mean, on-policy).

    Sequences are run one at a time without padding, so this also checks the trainer's batch
    layout (left-padded prompts, position ids, response gather).
    """
    cfg = trainer.cfg
    model = copy.deepcopy(trainer.model)
    torch.manual_seed(cfg.seed * 104729 + step)
    rollout = trainer.rollout(step)
    samples, scores = rollout.samples, rollout.scores
    r = torch.tensor([s.reward for s in scores])
    G = cfg.rollout.group_size
    grouped = r.view(-1, G)
    adv = ((grouped - grouped.mean(1, keepdim=True)) / (grouped.std(1, keepdim=True) + 1e-6)).view(-1)
    total_tokens = sum(len(s.response_ids) for s in samples)
    model.zero_grad()
    for s, a in zip(samples, adv):
        if not s.response_ids:
            continue
        ids = torch.tensor([s.prompt_ids + s.response_ids])
        logits = model(input_ids=ids).logits[0, len(s.prompt_ids) - 1 : -1] / cfg.rollout.temperature
        logp = torch.log_softmax(logits.float(), -1).gather(1, torch.tensor(s.response_ids)[:, None]).squeeze(1)
        # on-policy PPO-clip: ratio = 1, gradient of -A * ratio = -A * grad log p
        (-(a * torch.exp(logp - logp.detach())).sum() / total_tokens).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.max_grad_norm)
    return {k: v.grad.clone() for k, v in model.named_parameters()}


def test_thr_off_equals_plain_grpo_and_p0_equals_off(tiny_policy_dir, tmp_path):
    off = Trainer(make_cfg(tiny_policy_dir, tmp_path / "off", "thr.mode=off"))
    expected = plain_grpo_gradient(off, 0)
    off.train_step(0)  # one mini-batch: .grad keeps the clipped gradient of the update
    for k, v in off.model.named_parameters():
        assert torch.allclose(v.grad, expected[k], rtol=1e-4, atol=1e-7), k
    got = params(off.model)
    p0 = Trainer(make_cfg(tiny_policy_dir, tmp_path / "p0", "thr.mode=reweight", "thr.p=0.0"))
    p0.train_step(0)
    assert all(torch.equal(v, got[k]) for k, v in params(p0.model).items())
    steered = Trainer(make_cfg(tiny_policy_dir, tmp_path / "p5", "thr.mode=reweight", "thr.p=0.5"))
    m = steered.train_step(0)
    assert m["thr/frac_dominant"] > 0
    assert any(not torch.equal(v, got[k]) for k, v in params(steered.model).items())


def test_skipping_zero_advantage_rows_leaves_the_update_unchanged(tiny_policy_dir, tmp_path):
    # one group per mini-batch: a uniform group is a mini-batch with nothing to update, where the
    # optimizer must still step (Adam's moments move) exactly as without skipping
    over = ("steps=2", "rollout.prompts_per_step=8", "optim.ppo_epochs=2", "optim.mini_batches=8")
    runs = {}
    for skip in ("true", "false"):
        trainer = Trainer(make_cfg(tiny_policy_dir, tmp_path / skip, *over, f"optim.skip_zero_advantage={skip}"))
        runs[skip] = (trainer, [trainer.train_step(step) for step in range(2)])
    (fast, fast_m), (full, full_m) = runs["true"], runs["false"]
    assert any(m["optim/updated_rows_frac"] < 1 for m in fast_m), "precondition: some groups must be uniform"
    assert all(m["optim/updated_rows_frac"] == 1 for m in full_m)
    for a, b in zip(fast_m, full_m):
        assert a["loss/policy"] == pytest.approx(b["loss/policy"], rel=1e-4, abs=1e-7)
    reference = params(full.model)
    for k, v in params(fast.model).items():
        assert torch.allclose(v, reference[k], rtol=1e-4, atol=1e-6), k


def test_resume_continues_exactly(tiny_policy_dir, tmp_path):
    over = ("steps=4", "save_every=2", "log.groups_every=0", "optim.ppo_epochs=2", "optim.mini_batches=2")
    full = Trainer(make_cfg(tiny_policy_dir, tmp_path / "full", *over))
    full.train()
    part_dir = tmp_path / "part"
    killed = Trainer(make_cfg(tiny_policy_dir, part_dir, *over))
    real_step = killed.train_step

    def dies_in_third_step(step):
        out = real_step(step)
        if step == 2:  # the update of step 3 happened, its log line and checkpoint did not
            raise KeyboardInterrupt
        return out

    killed.train_step = dies_in_third_step
    with pytest.raises(KeyboardInterrupt):
        killed.train()
    killed.logger.close()
    resumed = Trainer(make_cfg(tiny_policy_dir, part_dir, *over, "resume=true"))
    assert resumed.step == 2
    resumed.train()
    rows = lambda d: {r["step"]: r for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines()) if "loss/policy" in r}  # noqa: E731
    a, b = rows(tmp_path / "full"), rows(part_dir)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    for step in (1, 2, 3, 4):
        for key in ("reward/mean", "loss/policy", "thr/mean", "loss/grad_norm", "optim/lr"):
            assert a[step][key] == pytest.approx(b[step][key], rel=1e-5, abs=1e-7), (step, key)
    for k, v in params(full.model).items():
        assert torch.allclose(v, params(resumed.model)[k], atol=1e-6), k


def test_cli_writes_summary_and_final_model(tiny_policy_dir, tmp_path):
    out = tmp_path / "run"
    task = [f"embedded.{k}={v}" for k, v in TINY_TASK.items()]
    rc = cli_main([
        f"output_dir={out}", f"model.name_or_path={tiny_policy_dir}", "steps=2", "rollout.prompts_per_step=4",
        "rollout.max_new_tokens=32", "optim.lr=1e-3", "eval.limit=12", "eval.n=8", "data.prompt_template=plain",
        "data.train=arith", "data.eval=arith",
        "log.progress=false", *task,
    ])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    for key in ("base_greedy_accuracy", "final_greedy_accuracy", "base_pass_at_8", "final_pass_at_8", "wall_seconds"):
        assert summary[key] is not None, key
    assert 0 <= summary["base_pass_at_8"] <= 1 and summary["wall_seconds"] > 0
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(out / "final") is not None


def test_gspo_token_and_kl_step_runs(tiny_policy_dir, tmp_path):
    trainer = Trainer(make_cfg(tiny_policy_dir, tmp_path, "optim.loss_type=gspo_token", "optim.kl_coef=0.01",
                               "optim.aggregation=seq-mean-token-mean", "thr.mode=dominant", "thr.p=0.2"))
    m = trainer.train_step(0)
    assert "loss/kl_ref" in m and m["loss/kl_ref"] >= 0


@pytest.mark.parametrize(
    "override, match",
    [("thr.pp=0.2", "Did you mean 'p'"), ("optim.loss_typ=grpo", "loss_type"), ("thr.p=1.5", "thr.p must be in"),
     ("thr.mode=sometimes", "thr.mode='sometimes' is not valid"), ("rollout.group_size=1", "group_size must be >= 2"),
     ("steps=ten", "cannot read 'ten' as int"), ("thr.p_end=-1", "thr.p_end must be in"),
     ("thr.p_schedule=step", "thr.p_schedule='step' is not valid"),
     ("thr.mode=off thr.p_schedule=linear", "p_schedule=linear needs thr.mode=reweight")],
)
def test_config_errors_say_what_to_fix(override, match):
    with pytest.raises(ValueError, match=match):
        load_config(TrainConfig, override.split())


def test_p_schedule_moves_p_linearly_from_p_to_p_end(tiny_policy_dir, tmp_path, monkeypatch):
    """``thr.p_schedule=linear``: step s (0-based) of N steers with p + (p_end - p) s / (N - 1),
    and the update trains on the token advantages that p gives."""
    import thr.rl.trainer as train_mod
    from thr.rl.trainer import p_at_step

    assert [p_at_step(s, 5, -0.5, 0.5, "linear") for s in range(5)] == [-0.5, -0.25, 0.0, 0.25, 0.5]
    assert p_at_step(3, 5, -0.5, 0.5, "constant") == -0.5
    cfg = make_cfg(tiny_policy_dir, tmp_path, "steps=3", "thr.mode=reweight", "thr.p=-0.5", "thr.p_schedule=linear",
                   "thr.p_end=0.5", "log.groups_every=0")
    trainer = Trainer(cfg)
    calls, updates = [], []
    import thr.rl.steering as steering_mod

    real = steering_mod.steered_advantages

    def steered_spy(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append((kwargs["p"], out[0]))
        return out

    orig_update = train_mod.update_policy

    def update_spy(model, optimizer, scheduler, batch, token_adv, old, **kwargs):
        updates.append(token_adv.clone())
        return orig_update(model, optimizer, scheduler, batch, token_adv, old, **kwargs)

    monkeypatch.setattr(steering_mod, "steered_advantages", steered_spy)
    monkeypatch.setattr(train_mod, "update_policy", update_spy)
    logged = [trainer.train_step(s)["thr/p"] for s in range(3)]
    assert logged == [-0.5, 0.0, 0.5] == [p for p, _ in calls]
    for (_, token_adv), trained in zip(calls, updates):
        assert torch.equal(token_adv, trained)


def test_entropy_control_and_likelihood_dynamics(tiny_policy_dir, tmp_path):
    """The entropy control trains on ~20% of the tokens, and the likelihood-dynamics metrics are
    the mean change of the correct / incorrect responses' token log-likelihood over the step.

    Their sign is not asserted: one GRPO step need not raise the correct responses' likelihood
    (the gradients of incorrect responses that share their tokens pull it down: what THR
    measures), and on this tiny policy it was -0.06 under ATEN_CPU_CAPABILITY=default and
    positive natively. The direction of learning is tested with a margin on the real default
    (tests/test_default_testbed.py)."""
    from thr.core import selective_log_softmax
    from thr.rl.batch import policy_forward

    trainer = Trainer(make_cfg(tiny_policy_dir, tmp_path, "thr.mode=entropy", "thr.quantile=0.2",
                               "log.likelihood_dynamics=true", "optim.lr=1e-3"))
    seen = {}
    original = trainer._likelihood_change

    def spy(batch, before, correct):
        seen.update(batch=batch, before=before.clone(), correct=correct.clone())
        return original(batch, before, correct)

    trainer._likelihood_change = spy
    m = trainer.train_step(0)
    assert 0.1 < m["thr/frac_selected"] <= 0.3
    batch, before, correct = seen["batch"], seen["before"], seen["correct"]
    assert correct.any() and (~correct).any(), "precondition: a batch with correct and incorrect responses"
    with torch.no_grad():  # independent recomputation, one response at a time
        for name, rows in (("correct", correct), ("incorrect", ~correct)):
            deltas = []
            for j in rows.nonzero().squeeze(1).tolist():
                sub = batch.rows(torch.tensor([j]))
                after = selective_log_softmax(policy_forward(trainer.model, sub), sub.response_ids,
                                              temperature=trainer.cfg.rollout.temperature)
                mask = sub.response_mask[0].bool()
                deltas.append(float((after[0] - before[j, : sub.response_width])[mask].mean()))
            assert m[f"likelihood/{name}_delta"] == pytest.approx(sum(deltas) / len(deltas), abs=1e-5)


# ----------------------------------------------------------------------------- issue 15: saved prompt, resume, inputs, help
def test_saved_models_carry_their_prompt_template(tiny_policy_dir, tmp_path):
    trainer = Trainer(make_cfg(tiny_policy_dir, tmp_path / "run", "steps=2", "save_every=1", "log.groups_every=0"))
    trainer.train()
    final, ckpt_dir = tmp_path / "run" / "final", tmp_path / "run" / "checkpoints" / "step-000001"
    assert (final / "thr_prompt.json").is_file() and (ckpt_dir / "thr_prompt.json").is_file()
    from thr.analysis.analyze import AnalyzeConfig, load_model
    from thr.data.problems import load_task
    from thr.data.prompts import PROMPT_INFO_FILE, load_prompt_info

    for saved in (final, ckpt_dir):
        info = load_prompt_info(saved)
        assert info["prompt_template"] == "plain" and info["task"]["name"] == trainer.cfg.data.train, saved
        # the saved task settings give back the problems the model was trained on
        again = load_task(info["task"]["name"], "train", **info["task"]["settings"])
        assert [p.problem for p in again] == [p.problem for p in trainer.train_problems]
    # prompt_template=auto on the saved model: its own template, in thr train and thr analyze
    again = Trainer(make_cfg(final, tmp_path / "again", "data.prompt_template=auto"))
    assert again.template == "plain"
    _, _, template, task = load_model(AnalyzeConfig(model=str(final), data=trainer.cfg.data.train, dtype="float32",
                                                 progress=False))
    assert template == "plain" and task == info["task"]["settings"]
    (final / PROMPT_INFO_FILE).unlink()  # a directory without the file: the tokenizer decides (no chat template)
    assert Trainer(make_cfg(final, tmp_path / "bare", "data.prompt_template=auto")).prompt_info["template"] == "boxed"


def _killed_run(policy_dir, out, die_at: int, *over: str) -> None:
    trainer = Trainer(make_cfg(policy_dir, out, *over))
    real_step = trainer.train_step

    def dies(step):
        result = real_step(step)  # logged its groups; killed before its metrics line / checkpoint
        if step == die_at:
            raise KeyboardInterrupt
        return result

    trainer.train_step = dies
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    trainer.logger.close()


@pytest.mark.parametrize("die_at, resumed_at", [(1, 0), (2, 2)])  # before the first checkpoint / after it
def test_resume_logs_one_history(tiny_policy_dir, tmp_path, die_at, resumed_at):
    over = ("steps=3", "save_every=2", "log.groups_every=1", "eval.limit=4", "eval.n=0", "data.eval=arith")
    _killed_run(tiny_policy_dir, tmp_path, die_at, *over)
    resumed = Trainer(make_cfg(tiny_policy_dir, tmp_path, *over, "resume=true"))
    assert resumed.step == resumed_at
    resumed.train()
    metrics = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in metrics if "loss/policy" in r]
    assert steps == [1, 2, 3]
    assert [r["step"] for r in metrics if "loss/policy" not in r] == [0, 3]  # base and final evaluations, once
    groups = [json.loads(x)["step"] for x in (tmp_path / "groups.jsonl").read_text().splitlines()]
    assert sorted(groups) == groups and sorted(set(groups)) == [0, 1, 2] and len(groups) == 3 * 2


def test_a_new_run_in_an_old_runs_directory_logs_only_itself(tiny_policy_dir, tmp_path, capsys):
    over = ("steps=2", "save_every=1", "log.groups_every=1", "eval.limit=4", "eval.n=0", "data.eval=arith")
    Trainer(make_cfg(tiny_policy_dir, tmp_path, *over)).train()
    assert (tmp_path / "checkpoints").is_dir()
    Trainer(make_cfg(tiny_policy_dir, tmp_path, "steps=1", "save_every=0", "log.groups_every=1", "eval.limit=4",
                     "eval.n=0", "data.eval=arith")).train()
    assert "holds an earlier run" in capsys.readouterr().err
    metrics = [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert metrics == [0, 1, 1]  # base eval, the step, the final eval: nothing of the first run
    assert not (tmp_path / "checkpoints").exists()  # resume=true can no longer pick up the other run


def test_bad_inputs_fail_in_one_line_before_any_model_loads(tiny_policy_dir, tmp_path, monkeypatch, capsys):
    import thr.models.embedded
    import thr.rl.trainer
    from thr.cli import main

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded before the inputs were checked")

    monkeypatch.setattr(thr.models.embedded, "warm_start", no_model)
    monkeypatch.setattr(thr.rl.trainer, "load_policy", no_model)
    out = tmp_path / "run"
    cases = [["train", "data.train=/nope.jsonl", f"output_dir={out}"],
             ["train", f"model.name_or_path={tmp_path / 'nope'}", f"output_dir={out}"],
             ["analyze", "--data", "/nope.jsonl", f"--output-dir={out}", "--progress=false"]]
    for argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert "nope" in err and "does not exist" in err, err
        assert not out.exists(), argv
    monkeypatch.undo()
    # a failure after the model loaded (no chat template) removes the directory it had created
    task = [f"embedded.{k}={v}" for k, v in TINY_TASK.items()]
    assert main(["train", f"model.name_or_path={tiny_policy_dir}", "data.prompt_template=chat", f"output_dir={out}", "data.train=arith",
                 "log.progress=false", *task]) == 2
    assert "no chat template" in capsys.readouterr().err and not out.exists()


def test_train_help_lists_every_option_with_type_default_and_doc(capsys):
    import dataclasses

    assert cli_main(["--help"]) == 0
    lines = capsys.readouterr().out.splitlines()

    def check(cfg, prefix=""):
        for f in dataclasses.fields(cfg):
            value = getattr(cfg, f.name)
            if dataclasses.is_dataclass(value):
                check(value, f"{prefix}{f.name}.")
                continue
            line = next((x for x in lines if x.split()[:1] == [f"--{prefix}{f.name}"]), None)
            assert line is not None, f"--{prefix}{f.name} missing from thr train --help"
            _, type_name, word, default, *doc = line.split()
            assert word == "default" and type_name and default and doc, line
            assert "(undocumented)" not in line, f"{type(cfg).__name__}.{f.name} needs a 'name: text' doc line"

    check(TrainConfig())
    line = next(x for x in lines if x.split()[:1] == ["--thr.p"])
    assert line.split()[1:4] == ["float", "default", "0.2"] and "steering strength" in line
    assert "AdamW settings." in next(x for x in lines if x.split()[:1] == ["--optim.adam_eps"])


def test_data_field_hint_names_the_train_key(tmp_path):
    from thr.rl.problems import load_train_eval

    path = tmp_path / "rows.jsonl"
    path.write_text('{"problem": "1+1", "solution_text": "2"}\n')
    cfg = load_config(TrainConfig, [f"data.train={path}", "data.eval="])
    with pytest.raises(ValueError, match=r"set data\.answer_field=NAME"):
        load_train_eval(cfg)


def test_progress_bar_shows_the_steps_rollout_figures(tiny_policy_dir, tmp_path, capsys):
    trainer = Trainer(make_cfg(tiny_policy_dir, tmp_path, "log.progress=true", "log.groups_every=0"))
    trainer.train()
    bar = capsys.readouterr().err
    row = next(r for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines()) if "loss/policy" in r)
    assert f"rollout_reward={row['reward/mean']:.2f}" in bar and f"rollout_acc={row['reward/accuracy']:.2f}" in bar
    assert "acc=nan" not in bar


def test_evaluation_sampling_leaves_training_unchanged(tiny_policy_dir, tmp_path):
    """A mid-run evaluation samples in a forked RNG: the same run with and without Pass@K sampling
    (``eval.n``) trains to the same weights and scores the same greedy accuracy (the steering
    sweep's greedy extension relies on it)."""
    finals, states = [], []
    for n in (4, 0):
        out = tmp_path / f"n{n}"
        trainer = Trainer(make_cfg(tiny_policy_dir, out, "steps=3", "eval.every=1", "eval.before=false",
                                   "eval.limit=4", f"eval.n={n}", "data.eval=arith", "seed=3"))
        finals.append(trainer.train()["final_eval"])
        states.append({k: v.clone() for k, v in trainer.model.state_dict().items()})
    assert "eval/pass@4" in finals[0] and "eval/pass@4" not in finals[1]
    assert finals[0]["eval/greedy_accuracy"] == finals[1]["eval/greedy_accuracy"]
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
