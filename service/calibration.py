"""Per-source calibration overlays: a brand's own temperature and threshold per task.

One model serves every brand, but brands differ: what counts as a question that needs an answer,
or as offensive, moves with the audience. ``commentdesk calibrate --source NAME`` fits, from
that source's moderator decisions, a temperature (on the served probabilities) and a threshold
per task; ingest applies them to that source's comments. ``--all-sources`` fits one on every
decision, for the tasks and sources that have too few labels of their own. An overlay belongs to the model it was
fitted for and is ignored, with a warning, once another model is served.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from model.scorer import Prediction, decide_rows, recalibrate
from model.tasks import LABELS, Task, is_binary
from service.db.tables import Comment, Decision, SourceCalibration
from service.feedback import IMPLIED_LABELS
from service.policy import Policy, Rule

logger = logging.getLogger(__name__)
# The calibration fitted on every source's decisions: it applies to each source's tasks that
# have no calibration of their own.
ALL_SOURCES = "*"


@dataclass(frozen=True)
class TaskOverlay:
    temperature: float = 1.0
    threshold: float | None = None  # binary tasks: P(positive label) at or above which it holds


Overlay = Mapping[Task, TaskOverlay]


def apply_overlay(prediction: Prediction, overlay: Overlay) -> Prediction:
    """A comment's prediction as the source's calibration sees it."""
    labels, scores = dict(prediction.labels), dict(prediction.scores)
    for task, spec in overlay.items():
        if task not in scores:
            continue
        names = LABELS[task]
        row = recalibrate(np.array([[scores[task][name] for name in names]]), spec.temperature)
        scores[task] = {name: float(value) for name, value in zip(names, row[0], strict=True)}
        if spec.threshold is not None or not is_binary(task):
            labels[task] = str(decide_rows(task, row, spec.threshold)[0])
    return Prediction(labels, scores)


def policy_for(policy: Policy, overlay: Overlay) -> Policy:
    """The policy with the source's thresholds: for each calibrated binary task, its entry rule
    (the lowest ``min_probability`` on the positive label) takes the source's threshold, and
    stricter rules of that label never fall below it."""
    rules = list(policy.rules)
    for task, spec in overlay.items():
        if spec.threshold is None:
            continue
        positive = LABELS[task][1]
        indexes = [i for i, r in enumerate(rules) if r.task is task and r.label == positive]
        if not indexes:
            continue
        entry = min(indexes, key=lambda i: rules[i].min_probability)
        for i in indexes:
            minimum = (
                spec.threshold if i == entry else max(rules[i].min_probability, spec.threshold)
            )
            rules[i] = Rule(task, positive, minimum, rules[i].action)
    return dataclasses.replace(policy, rules=tuple(rules))


def load_overlays(
    session: Session, sources: Iterable[str], model_name: str, model_version: str
) -> dict[str, Overlay]:
    """Each source's overlay for the served model: its own tasks over those of the overlay of
    every source (``ALL_SOURCES``)."""
    wanted = set(sources)
    if not wanted:
        return {}
    found: dict[str, dict[Task, TaskOverlay]] = {}
    statement = select(SourceCalibration).where(
        SourceCalibration.source.in_([*wanted, ALL_SOURCES])
    )
    for row in session.scalars(statement):
        if (row.model_name, row.model_version) != (model_name, model_version):
            logger.warning(
                "calibration of source %r for %s was fitted for model %s %s, not the served "
                "%s %s: ignored; run commentdesk calibrate again",
                row.source,
                row.task,
                row.model_name,
                row.model_version,
                model_name,
                model_version,
            )
            continue
        found.setdefault(row.source, {})[Task(row.task)] = TaskOverlay(
            row.temperature, row.threshold
        )
    default = found.get(ALL_SOURCES, {})
    overlays = {source: {**default, **found.get(source, {})} for source in wanted}
    return {source: overlay for source, overlay in overlays.items() if overlay}


@dataclass(frozen=True)
class LabelledComment:
    comment_id: int
    text: str
    labels: dict[Task, str]


def decided_labels(session: Session, source: str) -> list[LabelledComment]:
    """What moderators said about a source's comments (``ALL_SOURCES``: every comment): per
    comment and task, the label of the latest decision that implies one (approve, hide,
    reject, reply, relabel)."""
    statement = (
        select(Decision.comment_id, Decision.action, Decision.labels, Comment.text)
        .join(Comment, Comment.id == Decision.comment_id)
        .order_by(Decision.id)
    )
    if source != ALL_SOURCES:
        statement = statement.where(Comment.source == source)
    found: dict[int, LabelledComment] = {}
    for comment_id, action, relabels, text in session.execute(statement):
        implied = relabels if action == "relabel" else IMPLIED_LABELS.get(action, {})
        entry = found.setdefault(comment_id, LabelledComment(comment_id, text, {}))
        for task, label in (implied or {}).items():
            entry.labels[Task(task)] = label
    return [entry for entry in found.values() if entry.labels]


def save_overlay(
    session: Session,
    source: str,
    fitted: Mapping[Task, tuple[TaskOverlay, int, dict[str, Any]]],
    model_name: str,
    model_version: str,
) -> None:
    """Replace the source's calibration with the fitted tasks (overlay, labels used, report)."""
    session.execute(delete(SourceCalibration).where(SourceCalibration.source == source))
    for task, (overlay, used, report) in fitted.items():
        session.add(
            SourceCalibration(
                source=source,
                task=task.value,
                temperature=overlay.temperature,
                threshold=overlay.threshold,
                model_name=model_name,
                model_version=model_version,
                labels_used=used,
                report=report,
            )
        )
    session.commit()
