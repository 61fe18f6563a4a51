"""Turn moderator decisions into labelled examples the training pipeline accepts as extra data.

approve -> not offensive, not hate; hide or reject -> offensive; reply -> a question or request
the brand answered; relabel -> the corrected labels as given. Scores suggested through the
Perspective-compatible ``comments:suggestscore`` follow, where they name a label.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.tables import Comment, Decision, ScoreSuggestion

IMPLIED_LABELS: dict[str, dict[str, str]] = {
    "approve": {"offensive": "not-offensive", "hate": "not-hate"},
    "hide": {"offensive": "offensive"},
    "reject": {"offensive": "offensive"},
    "reply": {"question": "question"},
}


def feedback_rows(session: Session) -> Iterator[dict[str, Any]]:
    statement = (
        select(Decision, Comment.text)
        .join(Comment, Comment.id == Decision.comment_id)
        .order_by(Decision.id)
    )
    for decision, text in session.execute(statement):
        labels = (
            decision.labels
            if decision.action == "relabel"
            else IMPLIED_LABELS.get(decision.action, {})
        )
        for task, label in (labels or {}).items():
            yield {
                "text": text,
                "task": task,
                "label": label,
                "source": f"moderator:{decision.actor}",
                "decided_at": decision.created_at.isoformat(),
                "action": decision.action,
                "comment_id": decision.comment_id,
            }
    suggestions = select(ScoreSuggestion).where(ScoreSuggestion.label.is_not(None))
    for suggestion in session.scalars(suggestions.order_by(ScoreSuggestion.id)):
        yield {
            "text": suggestion.text,
            "task": suggestion.task,
            "label": suggestion.label,
            "source": f"suggestscore:{suggestion.actor}",
            "decided_at": suggestion.created_at.isoformat(),
            "action": "suggestscore",
            "comment_id": None,
        }


def export_feedback(session: Session, output: Path) -> int:
    count = 0
    with output.open("w", encoding="utf-8") as handle:
        for row in feedback_rows(session):
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count
