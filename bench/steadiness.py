"""How steady the int8 model runs on every core: one session per worker against one shared.

The served model's session runs a fixed batch (8 comments of 32 tokens) on one thread per core,
in alternating windows of ``--window`` seconds: (a) every thread on a session of its own, as the
scorer runs since 2026-12-07; (b) every thread on one shared session, as it ran before. The
script prints runs per second of each window and, per arrangement, the slowest window against
the fastest. On this 2-core VM the shared session lost up to a quarter of its throughput for
tens of seconds at a time while the own sessions held steady (docs/benchmarks.md): two runs on
one session share its allocator and buffers.

Usage: python bench/steadiness.py [--model-dir artifacts/minilm] [--seconds 60] [--window 3]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from commentdesk.settings import PROJECT_ROOT
from model.onnx_runtime import OnnxScorer
from model.scorer import load_scorer


def runs_per_second(sessions: list[Any], feed: dict[str, np.ndarray], seconds: float) -> float:
    """Runs completed per second with one thread on each of ``sessions`` (repeats allowed)."""
    counts = [0] * len(sessions)
    end = time.perf_counter() + seconds

    def repeat(index: int) -> None:
        while time.perf_counter() < end:
            sessions[index].run(None, feed)
            counts[index] += 1

    threads = [threading.Thread(target=repeat, args=(i,)) for i in range(len(sessions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-dir", type=Path, default=PROJECT_ROOT / "artifacts" / "minilm")
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--window", type=float, default=3.0)
    args = parser.parse_args()
    scorer = load_scorer(args.model_dir, runtime="onnx")
    assert isinstance(scorer, OnnxScorer)
    ids = np.full((8, 32), 1000, dtype=np.int64)
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    for session in scorer.sessions:
        session.run(None, feed)
    arrangements = {
        "own session per thread": scorer.sessions,
        "one shared session": [scorer.sessions[0]] * len(scorer.sessions),
    }
    rates: dict[str, list[float]] = {name: [] for name in arrangements}
    for _ in range(max(1, round(args.seconds / args.window / len(arrangements)))):
        for name, sessions in arrangements.items():
            rates[name].append(runs_per_second(sessions, feed, args.window))
    print(
        f"runs of 8 x 32 tokens per second, {len(scorer.sessions)} threads, one per core, "
        f"alternating {args.window:g} s windows:"
    )
    for name, values in rates.items():
        print(
            f"  {name:24s} {' '.join(f'{v:.0f}' for v in values)}\n"
            f"  {'':24s} median {np.median(values):.0f}, slowest / fastest window "
            f"{min(values) / max(values):.0%}"
        )
    own, shared = (np.array(values) for values in rates.values())
    print(f"own / shared, median of the paired windows: {np.median(own / shared):.2f}x")


if __name__ == "__main__":
    main()
