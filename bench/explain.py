"""Latency of one word-level explanation (occlusion: the comment scored whole and once without
each word, in one batched call) beside plain scoring of the same comment, in this process.

Comments are real tweets (TweetEval sentiment test), drawn with a seed; each is explained once
after a warm-up, with each row budget asked for (comments with more words than the budget are
explained coarse to fine). Prints p50/p95/p99/max of scoring and of each budget, and the words
per comment.

Usage: python bench/explain.py [--model-dir artifacts/minilm] [--comments 300] [--max-rows 16 12]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.latency import tweets
from commentdesk.settings import DEFAULT_MODEL_DIR
from model.explain import MAX_ROWS, explain, words_of
from model.scorer import load_scorer


def percentiles(values_ms: list[float]) -> str:
    p50, p95, p99 = np.percentile(values_ms, [50, 95, 99])
    return f"p50 {p50:6.1f} ms  p95 {p95:6.1f} ms  p99 {p99:6.1f} ms  max {max(values_ms):6.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--runtime", choices=["onnx", "torch"], default="onnx")
    parser.add_argument("--comments", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--max-rows", type=int, nargs="+", default=[MAX_ROWS], help="Row budgets to compare."
    )
    args = parser.parse_args()

    scorer = load_scorer(args.model_dir, runtime=args.runtime)
    comments = random.Random(args.seed).sample(tweets(), args.comments)
    for text in comments[:10]:  # warm-up
        explain(scorer.predict, text, scorer.tasks)
    plain_ms = []
    explain_ms: dict[int, list[float]] = {budget: [] for budget in args.max_rows}
    for text in comments:  # interleaved, so drift of the machine hits every variant alike
        started = time.perf_counter()
        scorer.predict([text])
        plain_ms.append(1000 * (time.perf_counter() - started))
        for budget in args.max_rows:
            started = time.perf_counter()
            explain(scorer.predict, text, scorer.tasks, max_rows=budget)
            explain_ms[budget].append(1000 * (time.perf_counter() - started))
    words = [len(words_of(text)) for text in comments]
    print(
        f"model: {scorer.name} {scorer.version} ({type(scorer).__name__}), {os.cpu_count()} cores"
    )
    print(f"comments: {len(comments)} tweets; words per comment: median {np.median(words):.0f}, "
          f"p95 {np.percentile(words, 95):.0f}, max {max(words)}")  # fmt: skip
    print(f"score only                {percentiles(plain_ms)}")
    for budget, values in explain_ms.items():
        ratio = np.percentile(values, 95) / np.percentile(plain_ms, 95)
        print(f"explain, max {budget:>3} rows  {percentiles(values)}  (p95 {ratio:.1f}x scoring)")


if __name__ == "__main__":
    main()
