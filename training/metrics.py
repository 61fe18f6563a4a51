"""The official metric of each task (as in TweetEval's evaluation script) and calibration error."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import numpy as np
from sklearn.metrics import f1_score, recall_score

from model.tasks import LABELS, Task

METRIC_NAMES: dict[Task, str] = {
    Task.SENTIMENT: "macro-recall",
    Task.OFFENSIVE: "macro-F1",
    Task.HATE: "macro-F1",
    Task.EMOTION: "macro-F1",
    Task.IRONY: "F1 (irony)",
    Task.QUESTION: "F1 (question)",
}


def official_metric(task: Task, gold: Sequence[str], predicted: Sequence[str]) -> float:
    """Sentiment: macro recall; offensive, hate, emotion: macro F1; irony, question: positive F1."""
    labels = list(LABELS[task])
    if task is Task.SENTIMENT:
        present = [label for label in labels if label in set(gold)]
        return float(
            recall_score(gold, predicted, labels=present, average="macro", zero_division=0)
        )
    if task in (Task.IRONY, Task.QUESTION):
        return float(
            f1_score(gold, predicted, pos_label=labels[1], average="binary", zero_division=0)
        )
    return float(f1_score(gold, predicted, labels=labels, average="macro", zero_division=0))


def best_threshold(gold_positive: np.ndarray, probability: np.ndarray, task: Task) -> float:
    """The threshold on the positive-class probability that maximises the task's metric."""
    labels = LABELS[task]
    gold = np.where(gold_positive, labels[1], labels[0])
    candidates = np.unique(np.round(probability, 3))
    if len(candidates) > 200:
        candidates = np.quantile(probability, np.linspace(0.01, 0.99, 199))
    best, best_score = 0.5, -1.0
    for threshold in candidates:
        predicted = np.where(probability >= threshold, labels[1], labels[0])
        score = official_metric(task, list(gold), list(predicted))
        if score > best_score:
            best, best_score = float(threshold), score
    return best


def calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error from top-label confidences and whether each top label was right."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    error = 0.0
    for low, high in pairwise(edges):
        in_bin = (confidence > low) & (confidence <= high)
        if in_bin.any():
            error += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(error)


def expected_calibration_error(
    probabilities: np.ndarray, gold_index: np.ndarray, bins: int = 15
) -> float:
    """Top-label ECE with equal-width confidence bins."""
    return calibration_error(
        probabilities.max(axis=1), probabilities.argmax(axis=1) == gold_index, bins
    )
