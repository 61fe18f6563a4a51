"""How steady this machine's speed is: the same int8 model call, on every core, second by second.

One single-threaded ONNX Runtime session run per core (the served model, a fixed batch of 8
comments of 32 tokens) repeats for ``--seconds``; the script prints how many runs each second
completed and the slowest second against the fastest. On a dedicated machine the figures stay
within a few per cent; on a shared virtual machine they can drop by a third for tens of seconds
when a neighbour is busy. Run it before trusting a ratio of two figures measured a minute apart
(bench/latency.py pairs its offline figure with the load for that reason).

Usage: python bench/steadiness.py [--model-dir artifacts/minilm] [--seconds 60]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from commentdesk.settings import PROJECT_ROOT
from model.onnx_runtime import OnnxScorer
from model.scorer import load_scorer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-dir", type=Path, default=PROJECT_ROOT / "artifacts" / "minilm")
    parser.add_argument("--seconds", type=int, default=60)
    args = parser.parse_args()
    scorer = load_scorer(args.model_dir, runtime="onnx")
    assert isinstance(scorer, OnnxScorer)
    ids = np.full((8, 32), 1000, dtype=np.int64)
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    scorer.session.run(None, feed)
    counts = [0] * args.seconds
    lock = threading.Lock()
    start = time.perf_counter()

    def repeat() -> None:
        while (second := int(time.perf_counter() - start)) < args.seconds:
            scorer.session.run(None, feed)
            with lock:
                counts[second] += 1

    workers = [threading.Thread(target=repeat) for _ in range(os.cpu_count() or 1)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    print(f"runs of 8 x 32 tokens per second, {len(workers)} threads, one per core:")
    print(" ".join(str(count) for count in counts))
    print(
        f"median {np.median(counts):.0f}, slowest second {min(counts)}, fastest {max(counts)}: "
        f"slowest / fastest = {min(counts) / max(counts):.0%}"
    )


if __name__ == "__main__":
    main()
