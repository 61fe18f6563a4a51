"""Two models as one: a weighted average of their probabilities per task, with its own thresholds.

The classical TF-IDF model errs differently from the transformer (it sees character n-grams and
exact words), so averaging can help where either alone is weak. Weights and thresholds are
fitted on validation splits (training/ensemble.py), never on a test split.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from model.scorer import ArrayScorer, Scorer, Scores
from model.tasks import Task


class EnsembleScorer(ArrayScorer):
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

    def score(self, texts: Sequence[str]) -> Scores:
        if not texts:
            return Scores.empty(self.tasks)
        a, b = self.first.score(texts).probabilities, self.second.score(texts).probabilities
        probabilities = {}
        for task in self.tasks:
            w = self.weights.get(task, 1.0)
            probabilities[task] = w * a[task] + (1 - w) * b[task]
        return Scores.decided(probabilities, self.thresholds)
