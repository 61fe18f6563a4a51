"""Does learning from moderators help? brand_comments dev played as a brand's decisions.

Each brand's comments are split in time (by tweet id): the earlier half plays the moderators'
decisions (relabels with the gold labels, stored through the real queue in a SQLite database),
the later half is the evaluation. Measured on the later half, for the default model:

1. before: the model as shipped;
2. per-brand calibration: ``commentdesk calibrate --source BRAND`` for every brand, then the
   later half ingested through the real ingest path (the overlay applies there);
3. retraining: ``commentdesk feedback export`` then ``commentdesk train --feedback``, then the
   later half scored by the new int8 model.

Usage: python bench/brand_adaptation.py [--data-dir ../shared/data] [--model-dir artifacts/minilm]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import typer
from sqlalchemy import select

from commentdesk import cli
from commentdesk.settings import PUBLIC_MODEL_DIR
from model.artifact import sha256_file
from model.scorer import load_scorer
from model.tasks import Task
from service.auth import Principal, Role, create_key
from service.db.engine import make_engine, make_sessionmaker, upgrade
from service.db.tables import Comment, SourceCalibration
from service.feedback import export_feedback
from service.policy import load_policy
from service.queue import DecisionAction, DecisionRequest, IncomingComment, decide, ingest
from training.feedback import FeedbackOptions, FeedbackRegression, load_feedback, retrain_heads
from training.metrics import official_metric

TASKS = {"question": Task.QUESTION, "sentiment": Task.SENTIMENT, "offensive": Task.OFFENSIVE}
ROOT = Path(__file__).resolve().parent.parent
BEFORE = "before (model as shipped)"


def gold_labels(row: dict[str, Any]) -> dict[str, str]:
    return {
        "question": "question" if row["question"] else "not-question",
        "sentiment": row["sentiment"],
        "offensive": "offensive" if row["offensive"] else "not-offensive",
    }


def split_in_time(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    by_brand: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_brand[row["brand"]].append(row)
    adapt, evaluate = [], []
    for brand_rows in by_brand.values():
        brand_rows.sort(key=lambda r: int(r["id"].split("-")[1]))
        half = len(brand_rows) // 2
        adapt += brand_rows[:half]
        evaluate += brand_rows[half:]
    return adapt, evaluate


def metrics(rows: list[dict[str, Any]], predicted: list[dict[str, str]]) -> dict[str, float]:
    return {
        name: round(
            100
            * official_metric(
                task, [gold_labels(r)[name] for r in rows], [p[name] for p in predicted]
            ),
            1,
        )
        for name, task in TASKS.items()
    }


def paired_bootstrap(
    rows: list[dict[str, Any]],
    before: list[dict[str, str]],
    after: list[dict[str, str]],
    name: str,
    resamples: int = 2000,
) -> tuple[float, float]:
    """95 % interval of the metric's change when the comments are resampled: is it noise?"""
    rng = np.random.default_rng(0)
    gold = np.array([gold_labels(r)[name] for r in rows], dtype=object)
    old = np.array([p[name] for p in before], dtype=object)
    new = np.array([p[name] for p in after], dtype=object)
    task, changes = TASKS[name], []
    for _ in range(resamples):
        i = rng.integers(0, len(rows), len(rows))
        changes.append(
            official_metric(task, list(gold[i]), list(new[i]))
            - official_metric(task, list(gold[i]), list(old[i]))
        )
    low, high = np.percentile(changes, [2.5, 97.5])
    return 100 * float(low), 100 * float(high)


def ingested_labels(
    sessions: Any, scorer: Any, policy: Any, rows: list[dict[str, Any]], tag: str
) -> list[dict[str, str]]:
    """Store comments through the real ingest path (overlays apply there); their labels."""
    with sessions() as session:
        stored = ingest(
            session,
            scorer,
            policy,
            [IncomingComment(r["brand"], r["id"] + tag, r["text"]) for r in rows],
            max_chars=10_000,
        )
        labels = dict(session.execute(select(Comment.id, Comment.labels)).all())
    return [labels[result.comment_id] for result in stored]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--model-dir", type=Path, default=PUBLIC_MODEL_DIR)
    parser.add_argument("--min-labels", type=int, default=30)
    parser.add_argument("--json", type=Path, help="Also write the figures here.")
    args = parser.parse_args()
    lines = (args.data_dir / "brand_comments" / "dev.jsonl").read_text(encoding="utf-8")
    rows = [json.loads(line) for line in lines.splitlines() if line.strip()]
    adapt, evaluate = split_in_time(rows)
    print(
        f"adapt (earlier half of each brand): {len(adapt)}; evaluate (later half): {len(evaluate)}"
    )

    work = Path(tempfile.mkdtemp(prefix="brand-adaptation-"))
    url = f"sqlite:///{work / 'decisions.db'}"
    os.environ["COMMENTDESK_DATABASE__URL"] = url
    upgrade(url)
    sessions = make_sessionmaker(make_engine(url))
    scorer = load_scorer(args.model_dir)
    policy = load_policy(ROOT / "configs" / "policy.toml")
    results: dict[str, dict[str, float]] = {}

    texts = [r["text"] for r in evaluate]
    full: dict[str, list[dict[str, str]]] = {BEFORE: predicted_labels(scorer, texts)}
    results[BEFORE] = metrics(evaluate, full[BEFORE])

    with sessions() as session:
        key, _ = create_key(session, "bench-moderator", Role.MODERATOR)
        moderator = Principal(key.id, key.name, Role.MODERATOR)
        stored = ingest(
            session,
            scorer,
            policy,
            [IncomingComment(r["brand"], r["id"], r["text"]) for r in adapt],
            max_chars=10_000,
        )
        for result, row in zip(stored, adapt, strict=True):
            request = DecisionRequest(
                result.comment_id, DecisionAction.RELABEL, labels=gold_labels(row)
            )
            decide(session, moderator, request, policy)

    started = time.perf_counter()
    for brand in sorted({r["brand"] for r in adapt}):
        # typer.Exit: no task has enough labels, or no fit beats the model; its settings stay.
        with contextlib.suppress(typer.Exit):
            cli.calibrate(
                source=brand, min_labels=args.min_labels, dry_run=False, model_dir=args.model_dir
            )
    with sessions() as session:
        fitted = sorted(session.execute(select(SourceCalibration.source, SourceCalibration.task)))
    print(f"calibrated in {time.perf_counter() - started:.0f} s: {fitted}")
    after = ingested_labels(sessions, scorer, policy, evaluate, "")
    full["per-brand calibration"] = after
    results["per-brand calibration"] = metrics(evaluate, after)
    own = {source for source, task in fitted if task == "question"}
    mine = [i for i, r in enumerate(evaluate) if r["brand"] in own]
    subset = [evaluate[i] for i in mine]
    results[f"  brands with their own question fit ({len(subset)} comments), before"] = metrics(
        subset, predicted_labels(scorer, [r["text"] for r in subset])
    )
    results["  the same comments, after"] = metrics(subset, [after[i] for i in mine])
    cli.calibrate(
        all_sources=True, min_labels=args.min_labels, dry_run=False, model_dir=args.model_dir
    )
    full["per-brand + all-sources calibration"] = ingested_labels(
        sessions, scorer, policy, evaluate, "#pooled"
    )
    results["per-brand + all-sources calibration"] = metrics(
        evaluate, full["per-brand + all-sources calibration"]
    )

    feedback = work / "feedback.jsonl"
    with sessions() as session:
        exported = export_feedback(session, feedback)
    print(f"exported {exported} feedback rows")
    started = time.perf_counter()
    retrained_dir = work / "retrained"
    try:
        manifest = retrain_heads(
            args.model_dir,
            load_feedback(feedback),
            args.data_dir,
            retrained_dir,
            FeedbackOptions(),
            sha256_file(feedback),
        )
        report = json.loads((retrained_dir / "feedback-report.json").read_text(encoding="utf-8"))
        print(f"retrained {manifest.version} in {time.perf_counter() - started:.0f} s")
    except FeedbackRegression as exc:
        report = exc.report
        print(f"retraining refused: {exc}")
    for task in TASKS:
        entry = report.get(task, {})
        print(f"{task}: { {k: v for k, v in entry.items() if k != 'comparison'} }")
        for row in entry.get("comparison", []):
            print(f"  {row['set']:<32} {row['rows']:>6} {row['before']:>7.2f} {row['after']:>7.2f}")
    if retrained_dir.is_dir():
        full["retrained heads (feedback)"] = predicted_labels(load_scorer(retrained_dir), texts)
        results["retrained heads (feedback)"] = metrics(
            evaluate, full["retrained heads (feedback)"]
        )

    print(
        f"\n| evaluate half ({len(evaluate)} comments) | question F1 | sentiment macro-recall | offensive macro-F1 |"
    )
    print("|---|---|---|---|")
    for name, values in results.items():
        print(f"| {name} | {values['question']} | {values['sentiment']} | {values['offensive']} |")
    print("\nchange against the model as shipped, 95 % paired bootstrap interval (2,000 resamples)")
    for name, predicted in full.items():
        if name != BEFORE:
            for task in ("question", "sentiment"):
                low, high = paired_bootstrap(evaluate, full[BEFORE], predicted, task)
                print(f"  {name}: {task} {low:+.1f} to {high:+.1f} points")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"results": results, "calibrated": [list(r) for r in fitted], "retraining": report},
                indent=2,
            )
        )


def predicted_labels(scorer: Any, texts: list[str]) -> list[dict[str, str]]:
    return [{t.value: label for t, label in p.labels.items()} for p in scorer.predict(texts)]


if __name__ == "__main__":
    main()
