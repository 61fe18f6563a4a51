"""The analytics report on a 100,000-row scored export, rendered in Chromium.

Builds a scored CSV of ``--rows`` rows (default 100,000) from real text: every TweetEval test
tweet (../shared/data/tweeteval/*/test_text.txt), drawn with a fixed seed; per row a time over
90 days (more on weekdays and in the afternoon), one of 20 brands (a few big ones), an author, a
like count (heavy-tailed) and, for 70 % of the questions, a first reply after a heavy-tailed
delay. The label and score columns are those ``commentdesk score`` writes, filled by the
committed TF-IDF baseline (artifacts/baseline) scoring each distinct tweet once.

Then, timed separately and in total:
  (1) ``commentdesk report big.csv -o report.html`` in a subprocess (start-up included);
  (2) Chromium (Debian's, through Playwright): launch, load the page, every image decoded.
The bar: <= 60 s in total. ``--screenshot PATH`` saves the rendered page (the README's
``docs/screenshots/report.png`` comes from this bench).

Usage: python bench/report.py [--rows 100000] [--screenshot docs/screenshots/report.png]
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from commentdesk.settings import PROJECT_ROOT, default_data_dir
from model.scorer import load_scorer
from service.batch import score_columns

BASELINE = PROJECT_ROOT / "artifacts" / "baseline"
COMMENTDESK = str(Path(sys.executable).with_name("commentdesk"))
CHROMIUM = Path(os.environ.get("COMMENTDESK_CHROMIUM", "/usr/bin/chromium"))
END = datetime(2026, 11, 28, tzinfo=UTC)
DAYS = 90
BRANDS = 20
REPLIED_SHARE = 0.7


def test_tweets() -> list[str]:
    data_dir = default_data_dir()
    if data_dir is None:
        sys.exit("no data directory (../shared/data)")
    texts: list[str] = []
    for path in sorted((data_dir / "tweeteval").glob("*/test_text.txt")):
        texts.extend(line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return sorted({t for t in texts if t})


def build_csv(path: Path, rows: int, tweets: list[str]) -> float:
    """Write the scored export; returns the seconds the baseline spent scoring."""
    scorer = load_scorer(BASELINE)
    started = time.perf_counter()
    scores = scorer.score(tweets)
    scoring = time.perf_counter() - started
    tasks = list(scorer.tasks)
    rng = np.random.default_rng(0)
    draw = random.Random(0)
    picks = rng.integers(0, len(tweets), rows)
    # Afternoon-heavy hours, fewer comments at weekends.
    hours = np.clip(rng.normal(15, 4, rows), 0, 23.99)
    days = rng.integers(0, DAYS, rows)
    weights = 1 / np.arange(1, BRANDS + 1) ** 0.9
    brands = rng.choice(BRANDS, rows, p=weights / weights.sum())
    likes = np.floor(rng.pareto(1.3, rows) * 3).astype(int)
    delays = rng.lognormal(np.log(2 * 3600), 1.2, rows)  # median 2 h
    question_labels = scores.labels[next(t for t in tasks if t.value == "question")]
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        header = ["id", "created_at", "brand", "author", "likes", "replied_at", "text"]
        writer.writerow(header + score_columns(tasks))
        for i in range(rows):
            day = END - timedelta(days=int(DAYS - days[i]))
            if day.weekday() >= 5 and draw.random() < 0.4:
                day -= timedelta(days=2)
            created = day + timedelta(hours=float(hours[i]))
            k = int(picks[i])
            replied = ""
            if question_labels[k] == "question" and draw.random() < REPLIED_SHARE:
                replied = (created + timedelta(seconds=float(delays[i]))).isoformat()
            row = [
                f"c{i}",
                created.isoformat(),
                f"brand-{brands[i] + 1:02d}",
                f"user{draw.randrange(20_000)}",
                int(likes[i]),
                replied,
                tweets[k],
            ]
            for task in tasks:
                row.append(scores.labels[task][k])
                row.extend(f"{p:.6f}" for p in scores.probabilities[task][k])
            writer.writerow(row)
    return scoring


def render(page_path: Path, screenshot: Path | None) -> tuple[float, float, int]:
    """Seconds to launch Chromium, seconds to load the page with every image decoded, images."""
    from playwright.sync_api import FloatRect, sync_playwright

    with sync_playwright() as playwright:
        started = time.perf_counter()
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        launched = time.perf_counter()
        page.goto(page_path.as_uri(), wait_until="load")
        sizes = page.evaluate(
            "() => Promise.all(Array.from(document.images).map(i => i.decode()))"
            ".then(() => Array.from(document.images).map(i => i.naturalWidth))"
        )
        loaded = time.perf_counter()
        if not sizes or min(sizes) <= 0:
            sys.exit(f"an image did not render: widths {sizes}")
        if screenshot is not None:
            # The top of the page (summary and the first plots): the example tables below hold
            # real tweets, slurs included, which the README need not show.
            top = FloatRect(x=0, y=0, width=1280, height=1700)
            page.screenshot(path=str(screenshot), full_page=True, clip=top)
        browser.close()
    return launched - started, loaded - launched, len(sizes)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--screenshot", type=Path, default=None)
    parser.add_argument("--keep", type=Path, default=None, help="Keep the files in this folder.")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        source = folder / "big.csv"
        tweets = test_tweets()
        scoring = build_csv(source, args.rows, tweets)
        size = source.stat().st_size / 1e6
        print(
            f"{args.rows:,} rows ({size:.0f} MB) from {len(tweets):,} distinct TweetEval test "
            f"tweets; baseline scored them in {scoring:.1f} s"
        )
        output = folder / "report.html"
        command = [COMMENTDESK, "report", str(source), "-o", str(output)]
        started = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        report_s = time.perf_counter() - started
        if result.returncode != 0:
            sys.exit(f"report failed:\n{result.stdout}\n{result.stderr}")
        print(result.stdout.strip())
        html_mb = output.stat().st_size / 1e6
        launch_s, load_s, images = render(output, args.screenshot)
        total = report_s + launch_s + load_s
        print(f"commentdesk report (end to end): {report_s:.1f} s; HTML {html_mb:.1f} MB")
        print(f"Chromium: launch {launch_s:.1f} s, load + {images} images decoded {load_s:.2f} s")
        print(f"total {total:.1f} s (bar: <= 60 s): {'met' if total <= 60 else 'NOT met'}")


if __name__ == "__main__":
    main()
