"""Train the classical baseline: shared TF-IDF features and one logistic regression per task."""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from tqdm import tqdm

from model.artifact import (
    FORMAT_VERSION,
    Manifest,
    TaskSpec,
    library_versions,
    sha256_file,
    write_manifest,
)
from model.linear import LinearHead, TfidfLinearModel
from model.tasks import LABELS, Task, is_binary, parse_task
from model.text import normalize
from training.catalog import load_catalog, source_hashes
from training.config import ConfigError
from training.feedback import FEEDBACK_SOURCE
from training.metrics import best_threshold, official_metric

logger = logging.getLogger(__name__)
# A word token is a word, or a run of ?/! (they carry questions and tone).
WORD_TOKENS = r"(?u)\b\w+\b|[?!]+"


@dataclass(frozen=True)
class TaskPlan:
    task: Task
    train_sources: list[str]
    val_source: str
    c: float
    class_weight: str | None
    threshold: str | float
    nb_scaling: bool


def _plans(config: dict[str, Any]) -> list[TaskPlan]:
    plans = []
    for name, section in config["tasks"].items():
        try:
            plans.append(
                TaskPlan(
                    task=parse_task(name),
                    train_sources=list(section["train_sources"]),
                    val_source=str(section["val_source"]),
                    c=float(section["C"]),
                    class_weight=section.get("class_weight") or None,
                    threshold=section["threshold"],
                    nb_scaling=bool(section.get("nb_scaling", False)),
                )
            )
        except KeyError as exc:
            raise ConfigError(f"[tasks.{name}] lacks {exc}") from exc
    return plans


def build_vectorizers(features: dict[str, Any]) -> list[TfidfVectorizer]:
    common = {"sublinear_tf": True, "min_df": int(features["min_df"]), "dtype": np.float32}
    return [
        TfidfVectorizer(
            analyzer="word",
            ngram_range=(1, int(features["word_ngram_max"])),
            max_features=int(features["word_max_features"]),
            token_pattern=WORD_TOKENS,
            **common,
        ),
        TfidfVectorizer(
            analyzer="char_wb",
            ngram_range=(int(features["char_ngram_min"]), int(features["char_ngram_max"])),
            max_features=int(features["char_max_features"]),
            **common,
        ),
    ]


def nb_ratios(features: sp.csr_matrix, positive: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """Naive-Bayes log-count ratios (Wang & Manning 2012, NBSVM) of a binary task's features."""
    p = np.asarray(features[positive].sum(axis=0)).ravel() + alpha
    q = np.asarray(features[~positive].sum(axis=0)).ravel() + alpha
    ratios: np.ndarray = np.log((p / p.sum()) / (q / q.sum())).astype(np.float32)
    return ratios


def _fit_head(plan: TaskPlan, features: sp.csr_matrix, labels: pd.Series, seed: int) -> LinearHead:
    names = list(LABELS[plan.task])
    target = labels.map(names.index).to_numpy()
    if len(set(target)) != len(names):
        # A training set missing a label would silently shift every column after it.
        raise ConfigError(f"{plan.task}: training data lacks some of the labels {names}")
    scale = np.ones(features.shape[1], dtype=np.float32)
    if plan.nb_scaling:
        if not is_binary(plan.task):
            raise ConfigError(f"{plan.task}: nb_scaling only applies to binary tasks")
        scale = nb_ratios(features, target == 1)
    classifier = LogisticRegression(
        C=plan.c, class_weight=plan.class_weight, max_iter=3000, random_state=seed
    )
    classifier.fit(sp.csr_matrix(features.multiply(scale)), target)
    # Scaling features then weighting them equals weighting the raw features by the product, so
    # the stored head stays an ordinary linear head over the shared features.
    coef = (classifier.coef_ * scale).astype(np.float32)
    return LinearHead(coef=coef, intercept=classifier.intercept_)


def train_baseline(
    config: dict[str, Any], data_dir: Path, output_dir: Path, extra: pd.DataFrame | None = None
) -> Manifest:
    """Fit, choose thresholds on validation data, and write a model directory.

    ``extra`` rows (e.g. moderator feedback, source "feedback") join every task's training data.
    """
    started = time.perf_counter()
    plans = _plans(config)
    if extra is not None:
        plans = [replace(p, train_sources=[*p.train_sources, FEEDBACK_SOURCE]) for p in plans]
    catalog = load_catalog(data_dir, [] if extra is None else [extra])
    seed = int(config.get("seed", 0))
    train_rows = {p.task: catalog.select(p.task, "train", p.train_sources) for p in plans}
    val_rows = {p.task: catalog.select(p.task, "val", [p.val_source]) for p in plans}
    for plan in plans:
        if catalog.select(
            plan.task, "train", [s for s in plan.train_sources if s != FEEDBACK_SOURCE]
        ).empty:
            raise ConfigError(f"{plan.task}: no training rows in sources {plan.train_sources}")

    all_texts = pd.concat([rows["text"] for rows in train_rows.values()]).unique()
    logger.info("fitting vectorizers on %d distinct training texts", len(all_texts))
    vectorizers = build_vectorizers(config["features"])
    normalized = [normalize(text) for text in all_texts]
    for vectorizer in vectorizers:
        vectorizer.fit(normalized)
    model = TfidfLinearModel(vectorizers, {})
    matrix = model.featurize(list(all_texts))
    row_of = {text: index for index, text in enumerate(all_texts)}

    heads: dict[Task, LinearHead] = {}
    specs: dict[Task, TaskSpec] = {}
    val_metrics: dict[str, float] = {}
    for plan in tqdm(plans, desc="heads", unit="task"):
        rows = train_rows[plan.task]
        head = _fit_head(plan, matrix[[row_of[t] for t in rows["text"]]], rows["label"], seed)
        heads[plan.task] = head
        threshold: float | None = None
        val = val_rows[plan.task]
        val_probs = head.probabilities(model.featurize(list(val["text"]))) if len(val) else None
        if isinstance(plan.threshold, int | float):
            threshold = float(plan.threshold)
        elif plan.threshold == "val" and val_probs is not None:
            positive = (val["label"] == LABELS[plan.task][1]).to_numpy()
            threshold = best_threshold(positive, val_probs[:, 1], plan.task)
        elif plan.threshold not in ("argmax", "val"):
            raise ConfigError(f"{plan.task}: threshold must be a number, 'val' or 'argmax'")
        specs[plan.task] = TaskSpec(labels=list(LABELS[plan.task]), threshold=threshold)
        if val_probs is not None:
            predicted = _decide_all(plan.task, val_probs, threshold)
            val_metrics[plan.task.value] = official_metric(plan.task, list(val["label"]), predicted)
            logger.info("%s: val %.4f (threshold %s)", plan.task, val_metrics[plan.task], threshold)

    model = TfidfLinearModel(vectorizers, heads)
    output_dir.mkdir(parents=True, exist_ok=True)
    files = model.save(output_dir)
    sources = sorted({s for p in plans for s in (*p.train_sources, p.val_source) if s})
    hashes = source_hashes(data_dir, sources)
    if extra is not None:
        hashes[FEEDBACK_SOURCE] = hashlib.sha256(extra.to_json().encode()).hexdigest()
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        name=str(config["name"]),
        version=str(config["version"]),
        kind="tfidf-linear",
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        tasks=specs,
        files={name: sha256_file(output_dir / name) for name in files},
        metrics={
            "val": val_metrics,
            "training": {"seconds": round(time.perf_counter() - started, 1)},
        },
        training_data=hashes,
        library_versions=library_versions("scikit-learn", "numpy", "scipy", "spacy"),
        config=config,
    )
    write_manifest(output_dir, manifest)
    return manifest


def _decide_all(task: Task, probabilities: np.ndarray, threshold: float | None) -> list[str]:
    labels = np.array(LABELS[task])
    if threshold is not None:
        return list(labels[(probabilities[:, 1] >= threshold).astype(int)])
    return list(labels[probabilities.argmax(axis=1)])
