"""The classical model: shared TF-IDF word and character features, one linear head per task.

Stored as JSON (vectoriser settings and vocabularies) plus ``.npz`` arrays, so loading never
unpickles anything. All heads read the same sparse features: one featurisation pass per batch.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer

from model.errors import ArtifactError
from model.tasks import LABELS, Task
from model.text import normalize

VECTORIZERS_FILE = "vectorizers.json"
WEIGHTS_FILE = "weights.npz"
# Only these vectoriser settings travel in the artifact; everything else keeps sklearn's default.
_VECTORIZER_PARAMS = ("analyzer", "ngram_range", "lowercase", "sublinear_tf", "token_pattern")


@dataclass(frozen=True)
class LinearHead:
    """Weights of one task: ``coef`` is (n_labels, n_features), or (1, n_features) for a binary task."""

    coef: np.ndarray
    intercept: np.ndarray

    def probabilities(self, features: sp.csr_matrix) -> np.ndarray:
        logits = np.asarray(features @ self.coef.T, dtype=np.float64) + self.intercept
        if self.coef.shape[0] == 1:
            positive = 1.0 / (1.0 + np.exp(-logits[:, 0]))
            return np.column_stack([1.0 - positive, positive])
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return np.asarray(exp / exp.sum(axis=1, keepdims=True))


class TfidfLinearModel:
    def __init__(self, vectorizers: Sequence[TfidfVectorizer], heads: dict[Task, LinearHead]):
        self.vectorizers = list(vectorizers)
        self.heads = heads
        n_features = sum(len(v.vocabulary_) for v in self.vectorizers)
        for task, head in heads.items():
            expected_rows = 1 if len(LABELS[task]) == 2 else len(LABELS[task])
            if head.coef.shape != (expected_rows, n_features):
                raise ArtifactError(
                    f"head {task}: weights of shape {head.coef.shape}, expected "
                    f"({expected_rows}, {n_features})"
                )

    @property
    def tasks(self) -> tuple[Task, ...]:
        return tuple(self.heads)

    def featurize(self, texts: Sequence[str]) -> sp.csr_matrix:
        normalized = [normalize(text) for text in texts]
        return sp.csr_matrix(sp.hstack([v.transform(normalized) for v in self.vectorizers]))

    def predict_proba(self, texts: Sequence[str]) -> dict[Task, np.ndarray]:
        features = self.featurize(texts)
        return {task: head.probabilities(features) for task, head in self.heads.items()}

    def save(self, directory: Path) -> list[str]:
        """Write the weight files into ``directory`` and return their names."""
        directory.mkdir(parents=True, exist_ok=True)
        specs = []
        arrays: dict[str, np.ndarray] = {}
        for index, vectorizer in enumerate(self.vectorizers):
            params = {key: vectorizer.get_params()[key] for key in _VECTORIZER_PARAMS}
            vocabulary = sorted(vectorizer.vocabulary_, key=vectorizer.vocabulary_.__getitem__)
            specs.append({"params": params, "vocabulary": vocabulary})
            arrays[f"idf_{index}"] = vectorizer.idf_.astype(np.float32)
        for task, head in self.heads.items():
            # float16 halves the artifact; the rounding moves probabilities by < 1e-3.
            arrays[f"coef_{task.value}"] = head.coef.astype(np.float16)
            arrays[f"intercept_{task.value}"] = head.intercept.astype(np.float32)
        (directory / VECTORIZERS_FILE).write_text(
            json.dumps({"vectorizers": specs}, ensure_ascii=False), encoding="utf-8"
        )
        np.savez_compressed(directory / WEIGHTS_FILE, **arrays)  # type: ignore[arg-type]
        return [VECTORIZERS_FILE, WEIGHTS_FILE]

    @classmethod
    def load(cls, directory: Path, tasks: Sequence[Task]) -> TfidfLinearModel:
        try:
            specs: list[dict[str, Any]] = json.loads(
                (directory / VECTORIZERS_FILE).read_text(encoding="utf-8")
            )["vectorizers"]
            with np.load(directory / WEIGHTS_FILE, allow_pickle=False) as arrays:
                vectorizers = []
                for index, spec in enumerate(specs):
                    params = dict(spec["params"])
                    params["ngram_range"] = tuple(params["ngram_range"])
                    vocabulary = {term: i for i, term in enumerate(spec["vocabulary"])}
                    vectorizer = TfidfVectorizer(vocabulary=vocabulary, **params)
                    vectorizer.idf_ = arrays[f"idf_{index}"].astype(np.float64)
                    vectorizers.append(vectorizer)
                heads = {
                    task: LinearHead(
                        coef=arrays[f"coef_{task.value}"].astype(np.float32),
                        intercept=arrays[f"intercept_{task.value}"].astype(np.float64),
                    )
                    for task in tasks
                }
        except (KeyError, ValueError, OSError, TypeError) as exc:
            raise ArtifactError(f"{directory}: weights cannot be read: {exc!r}") from exc
        return cls(vectorizers, heads)
