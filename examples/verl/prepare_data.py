"""Write verl's RL parquet files (train and validation) from any thr.data.problems.load_problems source.

    python examples/verl/prepare_data.py --levels 3,4,5 \\
        --val math500 --out ~/data/thr_math

Rows follow verl's layout: ``data_source``, ``prompt`` (chat messages), ``ability``,
``reward_model`` (``style``, ``ground_truth``) and ``extra_info``. The prompt is a system message
with the boxed-answer instruction and the problem as the user message; verl applies the model's
chat template (Qwen2.5-Math's tokenizer has one).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from thr.data.problems import load_problems
from thr.data.prompts import BOXED_INSTRUCTION


def rows(problems, source: str, split: str) -> list[dict]:
    return [{
        "data_source": source,
        "prompt": [{"role": "system", "content": BOXED_INSTRUCTION}, {"role": "user", "content": p.problem}],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": p.answer},
        "extra_info": {"split": split, "index": i, "id": p.id},
    } for i, p in enumerate(problems)]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", default="data/train/math_train_l3to5.jsonl",
                    help="thr.data.problems.load_problems source (default: the shipped MATH levels 3-5 file)")
    ap.add_argument("--train-split", default="train")
    ap.add_argument("--levels", default="", help="keep only these MATH levels, e.g. 3,4,5")
    ap.add_argument("--val", default="math500", help="validation source (packaged benchmarks need no network)")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--out", default="data/thr_math")
    args = ap.parse_args(argv)
    from datasets import Dataset

    train = load_problems(args.train, split=args.train_split)
    if args.levels:
        keep = {lv.strip() for lv in args.levels.split(",")}
        train = [p for p in train if str(p.meta.get("level", "")).replace("Level ", "") in keep]
    train = train[: args.limit] if args.limit else train
    val = load_problems(args.val)
    out = Path(args.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    Dataset.from_list(rows(train, args.train, "train")).to_parquet(str(out / "train.parquet"))
    Dataset.from_list(rows(val, args.val, "test")).to_parquet(str(out / "test.parquet"))
    print(f"wrote {len(train)} train and {len(val)} validation rows to {out}")


if __name__ == "__main__":
    main()
