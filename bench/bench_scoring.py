"""Scoring speed of the default model on real in-domain comments, against side-by-side baselines.

Compares, in one process on the same texts:
- one shared featurisation pass feeding all six heads, in batches (how commentdesk scores);
- the same model called once per comment (what a naive per-request loop costs);
- one featurisation pass per task (what running one model per task costs);
- batch scoring of a 20,000-row CSV export end to end (read, score, write).

Usage: python bench/bench_scoring.py [--data-dir DIR] [--rows N]
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

from commentdesk.settings import BASELINE_MODEL_DIR, default_data_dir
from model.scorer import LinearScorer, load_scorer
from service.batch import score_file


def timed(label: str, rows: int, run: object) -> float:
    start = time.perf_counter()
    run()  # type: ignore[operator]
    seconds = time.perf_counter() - start
    print(f"{label:<48} {rows / seconds:>10.0f} comments/s  ({seconds:.2f} s)")
    return rows / seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--rows", type=int, default=5000)
    args = parser.parse_args()
    path = args.data_dir / "brand_comments" / "unlabelled.jsonl"
    texts = [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines()]
    texts = texts[: args.rows]
    scorer = load_scorer(BASELINE_MODEL_DIR)
    assert isinstance(scorer, LinearScorer)
    model = scorer.model
    print(f"{len(texts)} brand comments, model {scorer.name} {scorer.version}")

    scorer.predict(texts[:256])  # warm-up

    def batched() -> None:
        for start in range(0, len(texts), 256):
            scorer.predict(texts[start : start + 256])

    def per_comment() -> None:
        for text in texts[:1000]:
            scorer.predict([text])

    def per_task() -> None:
        for start in range(0, len(texts), 256):
            chunk = texts[start : start + 256]
            for head in model.heads.values():
                head.probabilities(model.featurize(chunk))

    shared = timed("one pass, all heads, batches of 256", len(texts), batched)
    single = timed("one pass per comment (batch of 1)", 1000, per_comment)
    separate = timed("one featurisation per task, batches of 256", len(texts), per_task)
    print(f"shared pass vs per comment: {shared / single:.1f}x")
    print(f"shared pass vs one pass per task: {shared / separate:.1f}x")

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "export.csv"
        with source.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "text"])
            for i in range(20_000):
                writer.writerow([i, texts[i % len(texts)]])
        timed(
            "score 20,000-row CSV export end to end",
            20_000,
            lambda: score_file(scorer, source, Path(tmp) / "out.csv"),
        )


if __name__ == "__main__":
    main()
