"""How the int8 ONNX scorer cuts a batch into session calls: equal runs vs the cheapest cut.

1. Measures what one session call costs beyond its rows (single thread, real token ids):
   time = a + b x padded tokens + c x rows x width^2 (attention), fitted over calls of 1-8 rows of
   8-64 tokens; the overhead in tokens is a / b.
2. Sweeps the scorer's overhead_tokens (CALL_OVERHEAD_TOKENS) on server-sized batches.
3. Scores the TweetEval sentiment test tweets in batches of n comments (n = 1 ... 2000, the sizes
   the server's micro-batcher and the batch scorer send), with the length-sorted rows cut into
   equal runs (the previous scorer) and with the cheapest cut (model.onnx_runtime.buckets), in
   alternating rounds in this one process; prints comments/s, the ratio and the padded share.

Usage: python bench/buckets.py [--model-dir artifacts/minilm-brand] [--comments 1200]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.throughput import tweets
from commentdesk.settings import PUBLIC_MODEL_DIR
from model import onnx_runtime
from model.onnx_runtime import OnnxScorer
from model.scorer import load_scorer
from model.text import normalize

Cut = Callable[[Sequence[int], int, int, float], list[np.ndarray]]


def equal_runs(
    lengths: Sequence[int], max_rows: int, max_tokens: int, overhead_tokens: float = 0.0
) -> list[np.ndarray]:
    """The previous cut: consecutive runs of ``max_rows`` length-sorted rows."""
    order = np.argsort(lengths, kind="stable")
    groups: list[np.ndarray] = []
    group: list[int] = []
    for index in order:
        if group and (len(group) >= max_rows or (len(group) + 1) * lengths[index] > max_tokens):
            groups.append(np.array(group))
            group = []
        group.append(int(index))
    return [*groups, np.array(group)] if group else groups


def call_overhead(scorer: OnnxScorer, ids: list[list[int]], repeats: int = 30) -> float:
    """Fitted time of an empty call, in padded tokens' worth of work (one thread)."""
    points, session = [], scorer.sessions[0]
    for width in (8, 16, 32, 64):
        for rows in (1, 2, 4, 8):
            # Real token ids, repeated to the width where a tweet is shorter.
            tiled = [(row * (width // len(row) + 1))[:width] for row in ids[:rows]]
            batch = np.array(tiled, dtype=np.int64)
            feed = {"input_ids": batch, "attention_mask": np.ones_like(batch)}
            session.run(None, feed)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                session.run(None, feed)
                times.append(time.perf_counter() - start)
            points.append((1.0, rows * width, rows * width**2, float(np.median(times))))
    design = np.array(points)
    (intercept, slope, attention), *_ = np.linalg.lstsq(design[:, :3], design[:, 3], rcond=None)
    print(
        f"one call: {1e3 * intercept:.3f} ms + {1e6 * slope:.2f} us per padded token + "
        f"{1e9 * attention:.1f} ns x rows x width^2 (fit over {len(points)} shapes) "
        f"-> overhead = {intercept / slope:.1f} tokens"
    )
    return float(intercept / slope)


def comments_per_second(scorer: OnnxScorer, texts: list[str], n: int) -> float:
    start = time.perf_counter()
    for first in range(0, len(texts), n):
        scorer.score(texts[first : first + n])
    return len(texts) / (time.perf_counter() - start)


def padded_share(cut: Cut, lengths: list[int], n: int, workers: int, overhead: float) -> float:
    padded = real = 0
    for start in range(0, len(lengths), n):
        chunk = lengths[start : start + n]
        rows = max(1, min(8, -(-len(chunk) // workers)))
        for group in cut(chunk, rows, 4096, overhead):
            padded += len(group) * max(chunk[i] for i in group)
            real += sum(chunk[i] for i in group)
    return 1 - real / padded


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-dir", type=Path, default=PUBLIC_MODEL_DIR)
    parser.add_argument("--comments", type=int, default=1200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    scorer = load_scorer(args.model_dir, runtime="onnx")
    assert isinstance(scorer, OnnxScorer)
    texts = tweets(args.comments)
    ids = [e.ids for e in scorer.tokenizer.encode_batch([normalize(t) for t in texts])]
    lengths = [len(row) for row in ids]
    print(
        f"{scorer.name} {scorer.version}: {len(texts)} tweets, mean {np.mean(lengths):.1f} tokens"
    )
    call_overhead(scorer, ids)
    sweep = (0.0, 4.0, 8.0, 16.0, 32.0, 64.0)
    print(f"\ncheapest cut, comments/s by overhead_tokens (best of {args.rounds} rounds)")
    print(f"{'batch':>6} " + " ".join(f"{o:>7.0f}" for o in sweep))
    for n in (8, 16, 32):
        best = dict.fromkeys(sweep, 0.0)
        for _ in range(args.rounds):
            for value in sweep:
                scorer.overhead_tokens = value
                best[value] = max(best[value], comments_per_second(scorer, texts, n))
        print(f"{n:>6} " + " ".join(f"{best[o]:>7.1f}" for o in sweep))
    overhead = scorer.overhead_tokens = onnx_runtime.CALL_OVERHEAD_TOKENS
    print(f"\nequal runs vs cheapest cut (overhead_tokens {overhead:.0f}, best of {args.rounds})")
    cuts: dict[str, Cut] = {"equal runs": equal_runs, "cheapest cut": onnx_runtime.buckets}
    print(
        f"\n{'batch':>6} {'equal runs /s':>14} {'cheapest cut /s':>16} {'ratio':>6}   padded share"
    )
    for n in (1, 4, 8, 16, 32, 64, len(texts)):
        best = dict.fromkeys(cuts, 0.0)
        for _ in range(args.rounds):
            for name, cut in cuts.items():
                onnx_runtime.buckets = cut  # type: ignore[assignment]
                best[name] = max(best[name], comments_per_second(scorer, texts, n))
        onnx_runtime.buckets = cuts["cheapest cut"]  # type: ignore[assignment]
        shares = [padded_share(c, lengths, n, scorer.workers, overhead) for c in cuts.values()]
        print(
            f"{n:>6} {best['equal runs']:>14.1f} {best['cheapest cut']:>16.1f} "
            f"{best['cheapest cut'] / best['equal runs']:>6.2f}   "
            f"{shares[0]:.1%} -> {shares[1]:.1%}"
        )


if __name__ == "__main__":
    main()
