"""GRPO (or GSPO-token) with Token Hidden Reward through TRL's GRPOTrainer (trl==1.16.*).

Multi-GPU, MATH levels 3-5 with the verifier as reward (the NTHR paper's recipe, scaled by flags):

    accelerate launch --num_processes 4 examples/trl_thr.py --model Qwen/Qwen2.5-Math-1.5B \\
        --levels 3,4,5 --thr-p 0.2 --use-vllm

Offline smoke run on CPU (tiny random model, built-in arithmetic task, no downloads):

    python examples/trl_thr.py --tiny --max-steps 2

Compared with a plain TRL script only two things differ: the import of THRConfig/THRGRPOTrainer
and the thr_* arguments (defaults: reweight, p = 0.2, NTHR threshold).
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from datasets import Dataset

from thr.data.problems import load_problems
from thr.integrations.trl import THRConfig, THRGRPOTrainer
from thr.data.prompts import format_prompt
from thr.verifier import verify


def correctness_reward(completions, answer, **_):
    """1 for a response whose final answer the verifier accepts, else 0 (the set P is reward >= 1)."""
    return [1.0 if verify(text, gold) else 0.0 for text, gold in zip(completions, answer)]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="Qwen/Qwen2.5-Math-1.5B")
    ap.add_argument("--train", default="data/train/math_train_l3to5.jsonl",
                    help="thr.data.problems.load_problems source: .jsonl/.parquet path (default: the shipped MATH levels 3-5), "
                    "HF dataset, benchmark name or 'arith'")
    ap.add_argument("--train-split", default="train")
    ap.add_argument("--levels", default="", help="keep only these MATH levels, e.g. 3,4,5 (rows with a 'level' field: 3 or 'Level 3')")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--template", default="qwen_math", help="prompt template (thr.data.prompts): qwen_math, boxed, chat, plain")
    ap.add_argument("--output-dir", default="runs/trl-thr")
    ap.add_argument("--max-steps", type=int, default=40)
    ap.add_argument("--per-device-batch", type=int, default=8)
    ap.add_argument("--grad-accum", type=int, default=1)
    ap.add_argument("--num-generations", type=int, default=8)
    ap.add_argument("--max-completion-length", type=int, default=3072)
    ap.add_argument("--lr", type=float, default=1e-6)
    ap.add_argument("--kl-beta", type=float, default=1e-4)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--gspo", action="store_true", help="sequence-level ratio; THR switches TRL to GSPO-token")
    ap.add_argument("--use-vllm", action="store_true")
    ap.add_argument("--thr-mode", default="reweight", choices=["off", "reweight", "dominant"])
    ap.add_argument("--thr-p", type=float, default=0.2, help="> 0 exploitation, < 0 exploration")
    ap.add_argument("--thr-threshold", default="nthr", choices=["nthr", "quantile", "absolute"])
    ap.add_argument("--thr-beta", type=float, default=1.0)
    ap.add_argument("--thr-quantile", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tiny", action="store_true", help="offline smoke run: tiny local model, arith task, CPU")
    return ap.parse_args(argv)


def build_dataset(args, tokenizer) -> Dataset:
    problems = load_problems(args.train, split=args.train_split, limit=None)
    if args.levels:
        keep = {lv.strip() for lv in args.levels.split(",")}
        problems = [p for p in problems if str(p.meta.get("level", "")).replace("Level ", "") in keep]
    problems = problems[: args.limit] if args.limit else problems
    if not problems:
        raise SystemExit(f"no training problems from {args.train!r} (levels={args.levels!r})")
    return Dataset.from_dict({
        "prompt": [format_prompt(tokenizer, p.problem, args.template) for p in problems],
        "answer": [p.answer for p in problems],
    })


def tiny_setup(args):
    """A tiny random Qwen2 and the byte tokenizer saved to a temp dir; arith problems, CPU sizes."""
    from thr.models.tiny import build_model, build_tokenizer

    path = tempfile.mkdtemp(prefix="thr-tiny-")
    tok = build_tokenizer()
    build_model(tok, hidden_size=64, num_layers=2, num_heads=2).save_pretrained(path)
    tok.save_pretrained(path)
    args.model, args.train, args.train_split, args.template = path, "arith", "train", "plain"
    args.per_device_batch, args.num_generations, args.max_completion_length = 8, 4, 16
    args.lr, args.kl_beta, args.limit = 1e-3, 0.0, 64
    return tok


def main(argv=None) -> None:
    args = parse_args(argv)
    tokenizer = tiny_setup(args) if args.tiny else None
    if tokenizer is None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.model)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
    config = THRConfig(
        output_dir=args.output_dir, max_steps=args.max_steps, seed=args.seed, learning_rate=args.lr,
        per_device_train_batch_size=args.per_device_batch, gradient_accumulation_steps=args.grad_accum,
        num_generations=args.num_generations, max_completion_length=args.max_completion_length,
        temperature=args.temperature, beta=args.kl_beta, epsilon=0.2, logging_steps=1, save_strategy="no",
        report_to="none", bf16=not args.tiny and torch.cuda.is_available(), use_cpu=args.tiny,
        importance_sampling_level="sequence" if args.gspo else "token", loss_type="grpo" if args.gspo else "dapo",
        use_vllm=args.use_vllm, vllm_mode="colocate",
        thr_mode=args.thr_mode, thr_p=args.thr_p, thr_threshold=args.thr_threshold, thr_beta=args.thr_beta,
        thr_quantile=args.thr_quantile, thr_positive_reward=1.0,
    )
    trainer = THRGRPOTrainer(args.model, correctness_reward, args=config, train_dataset=build_dataset(args, tokenizer),
                             processing_class=tokenizer)
    trainer.train()
    if trainer.accelerator.is_main_process:
        last = [h for h in trainer.state.log_history if "reward" in h][-1]
        print({k: v for k, v in last.items() if k.startswith(("reward", "thr/"))})
    trainer.save_model(args.output_dir)


if __name__ == "__main__":
    main()
