"""Fit an ensemble's weight and threshold per task on the validation splits."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from model.ensemble import EnsembleScorer
from model.scorer import Scorer
from model.tasks import LABELS, Task, is_binary
from training.catalog import Catalog
from training.metrics import best_threshold, official_metric

logger = logging.getLogger(__name__)
WEIGHTS = np.round(np.linspace(0.0, 1.0, 11), 2)


def _probabilities(scorer: Scorer, task: Task, texts: list[str]) -> np.ndarray:
    return np.array(
        [[p.scores[task][label] for label in LABELS[task]] for p in scorer.predict(texts)]
    )


def fit_ensemble(
    first: Scorer,
    second: Scorer,
    catalog: Catalog,
    val_sources: Mapping[Task, str],
    untuned_weight: float = 0.5,
) -> tuple[EnsembleScorer, dict[str, dict[str, float]]]:
    """Per task, the weight of ``first`` (0-1 in steps of 0.1) with the best official metric on
    the task's validation split, and for binary tasks the threshold chosen with it. A task with
    no validation source keeps ``untuned_weight`` and the 0.5 threshold."""
    weights: dict[Task, float] = {}
    thresholds: dict[Task, float | None] = {}
    report: dict[str, dict[str, float]] = {}
    for task in (t for t in first.tasks if t in second.tasks):
        source = val_sources.get(task, "")
        if not source:
            weights[task] = untuned_weight
            thresholds[task] = 0.5 if is_binary(task) else None
            continue
        rows = catalog.select(task, "val", [source])
        texts, gold = list(rows["text"]), list(rows["label"])
        a, b = _probabilities(first, task, texts), _probabilities(second, task, texts)
        best: tuple[float, float, float | None] = (-1.0, 1.0, None)
        by_weight: dict[float, float] = {}
        for weight in WEIGHTS:
            mixed = weight * a + (1 - weight) * b
            threshold = None
            if is_binary(task):
                threshold = best_threshold(np.array(gold) == LABELS[task][1], mixed[:, 1], task)
                predicted = np.where(mixed[:, 1] >= threshold, LABELS[task][1], LABELS[task][0])
            else:
                predicted = np.array(LABELS[task])[mixed.argmax(axis=1)]
            score = official_metric(task, gold, list(predicted))
            by_weight[float(weight)] = score
            if score > best[0]:
                best = (score, float(weight), threshold)
        weights[task], thresholds[task] = best[1], best[2]
        report[task.value] = {
            "weight": best[1],
            "val_metric": best[0],
            "val_first_only": by_weight[1.0],
            "val_second_only": by_weight[0.0],
        }
        logger.info("%s: weight %.1f for %s, val %.4f", task, best[1], first.name, best[0])
    return EnsembleScorer(first, second, weights, thresholds), report
