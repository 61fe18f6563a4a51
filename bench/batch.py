"""Batch scoring of a large export: rows/s and peak memory, local engine and Ray, vs offline.

Builds a CSV of ``--rows`` rows (default 1,000,000) from real tweets (every TweetEval text,
shuffled with a fixed seed, then cycled; id, author, a like count and the text per row), then in
this one command:
  (o) the offline scorer: ``scorer.score`` (arrays, no dict per comment) on the first
      ``--offline-rows`` texts of the file, already in memory, in chunks of the batch tool's size
      (no reading, no validation, no writing);
  (l) ``commentdesk score big.csv -o out.csv`` (local engine) in a subprocess;
  (r) ``--engine ray --ray-workers 2`` (a local Ray started by the command) on the first
      ``--ray-rows`` rows (default: all), compared label by label with the local output.
Peak resident memory is sampled every 0.2 s over the whole process tree (for Ray: the driver,
its raylet, GCS and workers).

Usage: python bench/batch.py [--rows 1000000] [--ray-rows N] [--engines local,ray]
                             [--model-dir artifacts/minilm]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from commentdesk.settings import DEFAULT_MODEL_DIR, default_data_dir
from model.scorer import load_scorer

CHUNK_ROWS = 2048


def real_tweets() -> list[str]:
    data_dir = default_data_dir()
    if data_dir is None:
        sys.exit("no data directory (../shared/data)")
    texts = []
    for path in sorted((data_dir / "tweeteval").glob("*/*_text.txt")):
        texts.extend(line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    texts = [t for t in texts if t]
    random.Random(0).shuffle(texts)  # any prefix of the file is then like the whole
    return texts


def build_csv(path: Path, rows: int, tweets: list[str]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "author", "likes", "text"])
        for i in range(rows):
            writer.writerow([f"c{i}", f"user{i % 5003}", i % 97, tweets[i % len(tweets)]])


def tree_rss(process: psutil.Process) -> int:
    total = 0
    for member in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += member.memory_info().rss
    return total


def run_measured(command: list[str]) -> tuple[float, int]:
    """Wall seconds and peak resident bytes of the command's whole process tree."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    watched = psutil.Process(process.pid)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            with contextlib.suppress(psutil.Error):
                peak = max(peak, tree_rss(watched))
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = process.communicate()
    elapsed = time.perf_counter() - start
    done.set()
    sampler.join()
    if process.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{output.decode(errors='replace')[-3000:]}")
    print(output.decode(errors="replace").strip().splitlines()[0])
    return elapsed, peak


def offline_rate(model_dir: Path, texts: list[str]) -> float:
    scorer = load_scorer(model_dir)
    scorer.score(texts[:256])  # warm-up
    start = time.perf_counter()
    for i in range(0, len(texts), CHUNK_ROWS):
        scorer.score(texts[i : i + CHUNK_ROWS])
    return len(texts) / (time.perf_counter() - start)


def compare(a: Path, b: Path) -> tuple[int, int, float]:
    """Rows, rows whose labels all agree, largest score difference."""
    rows = agree = 0
    worst = 0.0
    with a.open(encoding="utf-8", newline="") as fa, b.open(encoding="utf-8", newline="") as fb:
        # b may hold a prefix of a's rows (Ray on the first --ray-rows).
        for left, right in zip(csv.DictReader(fa), csv.DictReader(fb), strict=False):
            rows += 1
            labels = [k for k in left if k.startswith("label.")]
            agree += all(left[k] == right[k] for k in labels)
            for key in left:
                if key.startswith("score."):
                    worst = max(worst, abs(float(left[key]) - float(right[key])))
    return rows, agree, worst


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--offline-rows", type=int, default=20_000)
    parser.add_argument("--ray-rows", type=int, default=None)
    parser.add_argument("--engines", default="local,ray")
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    args = parser.parse_args()
    engines = [e for e in args.engines.split(",") if e]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    tweets = real_tweets()
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "big.csv"
        build_csv(source, args.rows, tweets)
        size = source.stat().st_size
        print(
            f"input: {args.rows:,} rows from {len(tweets):,} distinct tweets, {size / 1e6:.0f} MB"
        )
        sample = tweets[: args.offline_rows]
        offline = offline_rate(args.model_dir, sample)
        print(f"(o) offline scorer, {args.offline_rows:,} texts in memory: {offline:,.0f} rows/s")
        ray_rows = min(args.ray_rows or args.rows, args.rows)
        ray_source = source
        if "ray" in engines and ray_rows < args.rows:
            ray_source = Path(tmp) / "prefix.csv"
            build_csv(ray_source, ray_rows, tweets)
        outputs = {}
        timings: dict[str, tuple[int, float]] = {}
        for engine in engines:
            output = Path(tmp) / f"out-{engine}.csv"
            rows, path = (ray_rows, ray_source) if engine == "ray" else (args.rows, source)
            command = [sys.executable, "-m", "commentdesk.cli", "score", str(path), "--no-progress"]
            command += ["--model-dir", str(args.model_dir), "-o", str(output)]
            if engine == "ray":
                command += ["--engine", "ray", "--ray-workers", "2"]
            seconds, peak = run_measured(command)
            rate = rows / seconds
            print(
                f"({engine[0]}) {engine} engine, {rows:,} rows: {seconds:,.0f} s, {rate:,.0f} rows/s "
                f"= {rate / offline:.0%} of offline, peak RSS {peak / 2**20:,.0f} MiB"
            )
            outputs[engine] = output
            timings[engine] = (rows, seconds)
        # This machine's speed drifts by 10-20 % over minutes: measure offline again afterwards
        # and take the ratios against the mean of both measurements.
        after = offline_rate(args.model_dir, sample)
        mean = (offline + after) / 2
        print(f"(o) offline scorer again: {after:,.0f} rows/s; mean {mean:,.0f} rows/s")
        for engine, (rows, seconds) in timings.items():
            print(f"    {engine} engine vs mean offline: {rows / seconds / mean:.0%}")
        if len(outputs) == 2:
            rows, agree, worst = compare(outputs["local"], outputs["ray"])
            print(
                f"ray vs local: {agree:,} of {rows:,} rows with every label equal; "
                f"largest score difference {worst:.2g}"
            )


if __name__ == "__main__":
    main()
