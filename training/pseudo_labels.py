"""Pseudo-labels: a trained model (the teacher) labels the unlabelled in-domain comments, and its
most confident answers join the training data of the tasks that ask for them (self-training).

A task opts in by naming `PSEUDO_SOURCE` among its ``train_sources``; the config's
``[pseudo_labels]`` section names the teacher directory and the share of its answers to keep.
Selection is class-balanced (Zou et al. 2018): of the texts the teacher gives each label, the
most confident ``share`` are kept, so the pseudo-labels follow the teacher's label distribution
on the pool. One global confidence cut would keep mostly the easy class (on the brand pool,
"positive" thank-you notes: 1,558 of 1,981 sentiment labels at 0.9, one of them neutral). The
teacher must not have seen the evaluation labels (brand_comments dev), or the evaluation on them
stops being out of sample: use a model trained on the public sets only.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from model.artifact import sha256_file
from model.scorer import Scorer, load_scorer
from model.tasks import LABELS, Task
from training.catalog import COLUMNS, PSEUDO_SOURCE, load_brand_unlabelled
from training.config import ConfigError, section_dataclass

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PseudoLabelConfig:
    teacher: str = ""  # a model directory; empty: no pseudo-labels
    share: float = 0.5  # of each label's texts, the most confident share is kept


def pseudo_label_config(config: dict[str, Any]) -> PseudoLabelConfig:
    settings: PseudoLabelConfig = section_dataclass(PseudoLabelConfig, config, "pseudo_labels")
    if not 0.0 < settings.share <= 1.0:
        raise ConfigError("pseudo_labels.share must be in (0, 1]")
    return settings


def pseudo_label_examples(
    texts: Sequence[str], scorer: Scorer, tasks: Iterable[Task], share: float
) -> pd.DataFrame:
    """Training rows (source `PSEUDO_SOURCE`): for each task and label, the most confident
    ``share`` (rounded up) of the texts whose most probable label it is; the rest are left out."""
    scores = scorer.score(list(texts))
    frames = []
    for task in tasks:
        if task not in scores.probabilities:
            raise ConfigError(f"the pseudo-label teacher has no {task.value} head")
        probabilities = scores.probabilities[task]
        answers, confidence = probabilities.argmax(axis=1), probabilities.max(axis=1)
        keep = np.zeros(len(texts), dtype=bool)
        for label in np.unique(answers):
            rows = np.flatnonzero(answers == label)
            most_confident = rows[np.argsort(-confidence[rows], kind="stable")]
            keep[most_confident[: int(np.ceil(share * len(rows)))]] = True
        labels = np.array(LABELS[task], dtype=object)[answers]
        kept = pd.DataFrame({"text": np.asarray(texts, dtype=object)[keep], "label": labels[keep]})
        logger.info(
            "pseudo-labels for %s: %d of %d texts (the top %.0f %% of each label), %s",
            task.value,
            len(kept),
            len(texts),
            100 * share,
            kept["label"].value_counts().to_dict(),
        )
        frames.append(kept.assign(task=task.value, split="train", source=PSEUDO_SOURCE))
    return (
        pd.concat(frames, ignore_index=True)[COLUMNS] if frames else pd.DataFrame(columns=COLUMNS)
    )


def pseudo_labelled(
    config: dict[str, Any], tasks: Sequence[Task], data_dir: Path, encoder_dir: Path | None
) -> list[pd.DataFrame]:
    """The extra catalog rows a config asks for: none unless a task names `PSEUDO_SOURCE`."""
    if not tasks:
        return []
    settings = pseudo_label_config(config)
    if not settings.teacher:
        raise ConfigError(
            f"{[t.value for t in tasks]} train on {PSEUDO_SOURCE}: set pseudo_labels.teacher"
        )
    scorer = load_scorer(Path(settings.teacher), encoder_dir)
    texts = load_brand_unlabelled(data_dir)
    return [pseudo_label_examples(texts, scorer, tasks, settings.share)]


def with_teacher(source_hash: str, config: dict[str, Any]) -> str:
    """The pseudo-label source's data hash, covering the teacher too: its manifest holds the hash
    of each of its files, so another teacher (or a retrained one at the same path) differs."""
    teacher = Path(pseudo_label_config(config).teacher) / "manifest.json"
    return hashlib.sha256(f"{source_hash}:{sha256_file(teacher)}".encode()).hexdigest()
