"""The one interface every runtime implements: score a batch of comments for all tasks at once."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from model.artifact import Manifest, read_manifest
from model.errors import InvalidTextError
from model.linear import TfidfLinearModel
from model.tasks import LABELS, Task

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    labels: dict[Task, str]
    scores: dict[Task, dict[str, float]]


class Scorer(Protocol):
    name: str
    version: str
    tasks: tuple[Task, ...]

    def predict(self, texts: Sequence[str]) -> list[Prediction]: ...


def check_text(text: object, max_chars: int) -> str:
    """Reject what cannot be scored, with a message that names the problem."""
    if not isinstance(text, str):
        raise InvalidTextError(f"text must be a string, got {type(text).__name__}")
    if not text.strip():
        raise InvalidTextError("text is empty or only whitespace")
    if len(text) > max_chars:
        raise InvalidTextError(f"text has {len(text)} characters; the limit is {max_chars}")
    return text


def decide(task: Task, probabilities: np.ndarray, threshold: float | None) -> str:
    labels = LABELS[task]
    if threshold is not None:
        return labels[1] if probabilities[1] >= threshold else labels[0]
    return labels[int(np.argmax(probabilities))]


class LinearScorer:
    """Scores with a TF-IDF + linear model directory."""

    def __init__(self, model: TfidfLinearModel, manifest: Manifest):
        self.model = model
        self.manifest = manifest
        self.name = manifest.name
        self.version = manifest.version
        self.tasks = tuple(manifest.tasks)

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        if not texts:
            return []
        probabilities = self.model.predict_proba(texts)
        predictions = []
        for row in range(len(texts)):
            labels: dict[Task, str] = {}
            scores: dict[Task, dict[str, float]] = {}
            for task in self.tasks:
                row_probs = probabilities[task][row]
                labels[task] = decide(task, row_probs, self.manifest.tasks[task].threshold)
                scores[task] = {
                    label: float(p) for label, p in zip(LABELS[task], row_probs, strict=True)
                }
            predictions.append(Prediction(labels=labels, scores=scores))
        return predictions


def load_scorer(directory: Path) -> Scorer:
    """Load any supported model directory after validating its manifest."""
    manifest = read_manifest(directory)
    model = TfidfLinearModel.load(directory, list(manifest.tasks))
    logger.info("loaded model %s %s from %s", manifest.name, manifest.version, directory)
    return LinearScorer(model, manifest)
