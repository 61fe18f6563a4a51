"""Two models as one: a weighted average of their probabilities per task, with its own thresholds.

The classical TF-IDF model errs differently from the transformer (it sees character n-grams and
exact words), so averaging can help where either alone is weak. Weights and thresholds are
fitted on validation splits (training/ensemble.py), never on a test split.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from model.scorer import Prediction, Scorer, decide
from model.tasks import LABELS, Task


class EnsembleScorer:
    def __init__(
        self,
        first: Scorer,
        second: Scorer,
        weights: Mapping[Task, float],
        thresholds: Mapping[Task, float | None],
    ):
        self.first, self.second = first, second
        self.weights, self.thresholds = dict(weights), dict(thresholds)
        self.name = f"ensemble({first.name}, {second.name})"
        self.version = f"{first.version}+{second.version}"
        self.tasks = tuple(t for t in first.tasks if t in second.tasks)

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        if not texts:
            return []
        out = []
        for a, b in zip(self.first.predict(texts), self.second.predict(texts), strict=True):
            labels: dict[Task, str] = {}
            scores: dict[Task, dict[str, float]] = {}
            for task in self.tasks:
                w = self.weights.get(task, 1.0)
                probabilities = np.array(
                    [
                        w * a.scores[task][label] + (1 - w) * b.scores[task][label]
                        for label in LABELS[task]
                    ]
                )
                labels[task] = decide(task, probabilities, self.thresholds.get(task))
                scores[task] = dict(zip(LABELS[task], map(float, probabilities), strict=True))
            out.append(Prediction(labels=labels, scores=scores))
        return out
