"""Evaluate a model directory and the reference systems with the same code on the same splits."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from tqdm import tqdm

from model.artifact import Manifest
from model.scorer import Scorer
from model.tasks import LABELS, Task
from training.catalog import Catalog
from training.metrics import METRIC_NAMES, calibration_error, official_metric

logger = logging.getLogger(__name__)

# (task, source, split): the official test splits first, then in-domain and out-of-domain checks.
EVALUATIONS: list[tuple[Task, str, str]] = [
    (Task.SENTIMENT, "tweeteval-sentiment", "test"),
    (Task.OFFENSIVE, "tweeteval-offensive", "test"),
    (Task.HATE, "tweeteval-hate", "test"),
    (Task.EMOTION, "tweeteval-emotion", "test"),
    (Task.IRONY, "tweeteval-irony", "test"),
    (Task.QUESTION, "brand_comments", "dev"),
    (Task.SENTIMENT, "brand_comments", "dev"),
    (Task.OFFENSIVE, "brand_comments", "dev"),
    (Task.OFFENSIVE, "davidson", "test"),
    (Task.HATE, "davidson", "test"),
    (Task.SENTIMENT, "sst2", "test"),
]

# A manifest's metrics section with out-of-fold figures of the sets its heads were fitted on.
CROSS_VALIDATED = "cross_validated"

# Published test scores (TweetEval leaderboard, as listed in the data README), in percent.
PUBLISHED: dict[tuple[Task, str], str] = {
    (Task.SENTIMENT, "tweeteval-sentiment"): "73.7 (TimeLMs-2021); SVM 62.9",
    (Task.OFFENSIVE, "tweeteval-offensive"): "82.2 (TimeLMs); FastText 73.4",
    (Task.HATE, "tweeteval-hate"): "56.4 (BERTweet)",
    (Task.EMOTION, "tweeteval-emotion"): "80.2 (best)",
    (Task.IRONY, "tweeteval-irony"): "82.1 (BERTweet)",
    (Task.HATE, "davidson"): "hate-class F1 0.51 (Davidson et al.)",
}

# A reference system turns texts into label names of one task.
Reference = Callable[[Task, Sequence[str]], list[str] | None]


@dataclass(frozen=True)
class Result:
    system: str
    task: Task
    dataset: str
    metric: str
    value: float
    rows: int


def vader_reference(task: Task, texts: Sequence[str]) -> list[str] | None:
    """VADER's compound score with its authors' cut-offs (>= 0.05 positive, <= -0.05 negative)."""
    if task is not Task.SENTIMENT:
        return None
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    labels = []
    for text in texts:
        compound = analyzer.polarity_scores(text)["compound"]
        labels.append(
            "positive" if compound >= 0.05 else "negative" if compound <= -0.05 else "neutral"
        )
    return labels


def profanity_reference(task: Task, texts: Sequence[str]) -> list[str] | None:
    """alt-profanity-check's own decision (probability >= 0.5) as the offensive label."""
    if task is not Task.OFFENSIVE:
        return None
    from profanity_check import predict

    names = LABELS[Task.OFFENSIVE]
    return [names[int(flag)] for flag in predict(list(texts))]


def question_mark_reference(task: Task, texts: Sequence[str]) -> list[str] | None:
    """The plain rule an SMM tool would start with: a comment with "?" asks something."""
    if task is not Task.QUESTION:
        return None
    names = LABELS[Task.QUESTION]
    return [names[int("?" in text)] for text in texts]


REFERENCES: dict[str, Reference] = {
    "VADER": vader_reference,
    "alt-profanity-check": profanity_reference,
    'rule "contains ?"': question_mark_reference,
}


def polarity_only(probabilities: np.ndarray) -> list[str]:
    # SST-2 has no neutral class: compare the negative and positive probabilities only.
    return ["positive" if p[2] >= p[0] else "negative" for p in probabilities]


def evaluate_scorer(
    scorer: Scorer, catalog: Catalog, name: str, batch_size: int = 512
) -> tuple[list[Result], dict[tuple[Task, str], pd.DataFrame]]:
    """Score every evaluation split; also return per-row predictions and confidences."""
    results, predictions = [], {}
    for task, source, split in tqdm(EVALUATIONS, desc=f"evaluate {name}", unit="split"):
        if task not in scorer.tasks:
            continue
        rows = catalog.select(task, split, [source])
        texts = list(rows["text"])
        scored = []
        for start in range(0, len(texts), batch_size):
            scored.extend(scorer.predict(texts[start : start + batch_size]))
        probabilities = np.array(
            [[p.scores[task][label] for label in LABELS[task]] for p in scored]
        )
        if source == "sst2":
            predicted = polarity_only(probabilities)
        else:
            predicted = [p.labels[task] for p in scored]
        value = official_metric(task, list(rows["label"]), predicted)
        results.append(
            Result(name, task, f"{source}/{split}", METRIC_NAMES[task], value, len(rows))
        )
        gold_index = rows["label"].map(list(LABELS[task]).index).to_numpy()
        predictions[(task, source)] = pd.DataFrame(
            {
                "gold": rows["label"].to_numpy(),
                "predicted": predicted,
                "confidence": probabilities.max(axis=1),
                "correct": probabilities.argmax(axis=1) == gold_index,
            }
        )
    return results, predictions


def cross_validated_figures(
    manifest: Manifest,
    results: list[Result],
    predictions: dict[tuple[Task, str], pd.DataFrame],
) -> list[tuple[Task, str, float, float]]:
    """Replace in-sample figures by out-of-fold ones where the heads were fitted on the set.

    A model whose heads were fitted on an evaluation set (``commentdesk train --feedback FILE
    --folds K`` with that set as decisions) would score in-sample on it; its manifest holds the
    cross-validated figure and confusion counts, which take the place of the measured ones (in
    ``results`` and ``predictions``, changed in place). Returns (task, set, in-sample, out-of-fold).
    """
    figures = manifest.metrics.get(CROSS_VALIDATED, {})
    replaced = []
    for index, result in enumerate(results):
        key = f"{result.task.value}/{result.dataset}"
        if f"{key}/after" not in figures:
            continue
        cross_validated = figures[f"{key}/after"] / 100
        replaced.append((result.task, result.dataset, result.value, cross_validated))
        results[index] = replace(result, value=cross_validated)
        labels = LABELS[result.task]
        pairs = [
            (gold, predicted)
            for gold in labels
            for predicted in labels
            for _ in range(int(figures.get(f"{key}/confusion/{gold}/{predicted}", 0)))
        ]
        gold_labels, predicted_labels = zip(*pairs, strict=True) if pairs else ((), ())
        predictions[(result.task, result.dataset.split("/")[0])] = pd.DataFrame(
            {
                "gold": gold_labels,
                "predicted": predicted_labels,
                "confidence": np.nan,  # out-of-fold confidences are not kept
                "correct": np.equal(gold_labels, predicted_labels),
            }
        )
    return replaced


def calibration_table(predictions: dict[tuple[Task, str], pd.DataFrame]) -> pd.DataFrame:
    """Top-label expected calibration error (15 bins) on each official test split, in percent."""
    rows = []
    for task, source, split in EVALUATIONS:
        frame = predictions.get((task, source))
        if frame is None or split != "test" or source in ("sst2", "davidson"):
            continue
        ece = calibration_error(frame["confidence"].to_numpy(), frame["correct"].to_numpy())
        rows.append(
            {"task": task.value, "dataset": f"{source}/{split}", "ECE %": round(100 * ece, 2)}
        )
    return pd.DataFrame(rows)


def evaluate_references(catalog: Catalog) -> list[Result]:
    results = []
    for name, reference in REFERENCES.items():
        for task, source, split in EVALUATIONS:
            rows = catalog.select(task, split, [source])
            predicted = reference(task, list(rows["text"]))
            if predicted is None:
                continue
            if source == "sst2":
                predicted = ["negative" if p == "negative" else "positive" for p in predicted]
            value = official_metric(task, list(rows["label"]), predicted)
            results.append(
                Result(name, task, f"{source}/{split}", METRIC_NAMES[task], value, len(rows))
            )
    return results


def results_table(results: Sequence[Result]) -> pd.DataFrame:
    """One row per (task, dataset), one column per system, values in percent."""
    frame = pd.DataFrame([r.__dict__ for r in results])
    frame["task"] = frame["task"].map(str)
    table = frame.pivot_table(
        index=["task", "dataset", "metric", "rows"], columns="system", values="value", sort=False
    )
    table = (table * 100).round(1).reset_index()
    order = {(t.value, f"{s}/{sp}"): i for i, (t, s, sp) in enumerate(EVALUATIONS)}
    table["order"] = [order[(t, d)] for t, d in zip(table["task"], table["dataset"], strict=True)]
    table["published"] = [
        PUBLISHED.get((Task(t), d.split("/")[0]), "")
        for t, d in zip(table["task"], table["dataset"], strict=True)
    ]
    return table.sort_values("order").drop(columns="order").reset_index(drop=True)


def markdown_table(table: pd.DataFrame) -> str:
    header = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "|" + "---|" * len(table.columns)
    lines = [header, rule]
    for row in table.itertuples(index=False):
        cells = ["" if isinstance(v, float) and np.isnan(v) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def confusion_markdown(predictions: dict[tuple[Task, str], pd.DataFrame]) -> str:
    parts = []
    for (task, source), frame in predictions.items():
        labels = [
            label for label in LABELS[task] if label in set(frame["gold"]) | set(frame["predicted"])
        ]
        matrix = pd.crosstab(frame["gold"], frame["predicted"]).reindex(
            index=labels, columns=labels, fill_value=0
        )
        matrix.index.name = "gold \\ predicted"
        parts.append(f"**{task} on {source}**\n\n{markdown_table(matrix.reset_index())}")
    return "\n\n".join(parts)


def parity_table(
    served: tuple[list[Result], dict[tuple[Task, str], pd.DataFrame]],
    reference: tuple[list[Result], dict[tuple[Task, str], pd.DataFrame]],
) -> pd.DataFrame:
    """Label agreement and metric difference between two runtimes of one model, per split."""
    reference_results = {(r.task, r.dataset): r for r in reference[0]}
    rows = []
    for result in served[0]:
        other = reference_results[(result.task, result.dataset)]
        source = result.dataset.split("/")[0]
        a, b = served[1][(result.task, source)], reference[1][(result.task, source)]
        rows.append(
            {
                "task": result.task.value,
                "dataset": result.dataset,
                "metric": result.metric,
                "label agreement %": round(
                    100 * float((a["predicted"] == b["predicted"]).mean()), 2
                ),
                "served": round(100 * result.value, 2),
                "reference": round(100 * other.value, 2),
                "difference (points)": round(100 * (result.value - other.value), 2),
            }
        )
    return pd.DataFrame(rows)
