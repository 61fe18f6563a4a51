"""Fit one source's temperature and threshold per task from its moderators' labels.

The fit is small (a scalar temperature on the served probabilities, then the threshold that
maximises the task's metric), so it needs few labels; the report says how much it helps both on
the labels it was fitted on and, more honestly, cross-validated (each fold scored by a fit that
did not see it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import precision_recall_fscore_support
from sklearn.model_selection import StratifiedKFold

from model.scorer import decide_rows, recalibrate
from model.tasks import LABELS, Task, is_binary
from training.calibration import fit_temperature
from training.metrics import best_threshold, official_metric


@dataclass(frozen=True)
class SourceFit:
    temperature: float
    threshold: float | None
    labels_used: int
    report: dict[str, Any]


def _fit(task: Task, probabilities: np.ndarray, gold: np.ndarray) -> tuple[float, float | None]:
    temperature = fit_temperature(np.log(np.clip(probabilities, 1e-12, 1.0)), gold)
    if not is_binary(task):
        return temperature, None
    calibrated = recalibrate(probabilities, temperature)
    return temperature, best_threshold(gold == 1, calibrated[:, 1], task)


def _quality(task: Task, gold: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    names = np.array(LABELS[task], dtype=object)
    gold_names = list(names[gold])
    result = {"metric": round(official_metric(task, gold_names, list(predicted)), 4)}
    if is_binary(task):
        precision, recall, f1, _ = precision_recall_fscore_support(
            gold_names, list(predicted), pos_label=names[1], average="binary", zero_division=0
        )
        result |= {
            "precision": round(float(precision), 4),
            "recall": round(float(recall), 4),
            "f1": round(float(f1), 4),
        }
    return result


def fit_source(
    task: Task,
    probabilities: np.ndarray,
    gold_labels: Sequence[str],
    model_threshold: float | None,
    min_labels: int = 30,
    min_per_class: int = 5,
    folds: int = 5,
    seed: int = 0,
) -> SourceFit | str:
    """The fit for one task, or why there is none: too few labels or classes, or a fit that,
    cross-validated, does worse than the model's own settings (few labels overfit)."""
    names = list(LABELS[task])
    gold = np.array([names.index(label) for label in gold_labels], dtype=np.int64)
    counts = np.bincount(gold, minlength=len(names))
    present = counts[counts > 0]
    if len(gold) < min_labels:
        return f"{len(gold)} labels; at least {min_labels} are needed"
    if len(present) < 2 or present.min() < min_per_class:
        return f"label counts {dict(zip(names, counts.tolist(), strict=True))}; every present class needs {min_per_class} and two must be present"
    temperature, threshold = _fit(task, probabilities, gold)
    before = decide_rows(task, probabilities, model_threshold)
    after = decide_rows(task, recalibrate(probabilities, temperature), threshold)
    crossed = np.empty(len(gold), dtype=object)
    splits = min(folds, int(present.min()))
    for fit_rows, held_rows in StratifiedKFold(splits, shuffle=True, random_state=seed).split(
        gold, gold
    ):
        fold_t, fold_threshold = _fit(task, probabilities[fit_rows], gold[fit_rows])
        crossed[held_rows] = decide_rows(
            task, recalibrate(probabilities[held_rows], fold_t), fold_threshold
        )
    crossed_quality = _quality(task, gold, crossed)
    before_quality = _quality(task, gold, before)
    if crossed_quality["metric"] < before_quality["metric"]:
        return (
            f"cross-validated, the fit scores {crossed_quality['metric']} against the model's "
            f"{before_quality['metric']} on these {len(gold)} labels: the model's settings stay"
        )
    report = {
        "labels": len(gold),
        "label_counts": dict(zip(names, counts.tolist(), strict=True)),
        "model_threshold": model_threshold,
        "before": before_quality,
        "after_in_sample": _quality(task, gold, after),
        f"after_cross_validated_{splits}_fold": crossed_quality,
    }
    return SourceFit(temperature, threshold, len(gold), report)
