"""Reply suggestions: templates from the database, ranked for one comment.

The embedder (the pinned MiniLM) loads on first use, and each template's example embeddings are
cached until the template changes, so a suggestion costs one short encoder pass.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from model.embeddings import SentenceEmbedder
from service.db.tables import Comment, Decision, ReplyTemplate
from service.templates import (
    Suggestion,
    TemplateData,
    intents_of,
    load_library,
    max_similarity,
    rank,
)


class ReplySuggester:
    def __init__(self, make_embedder: Callable[[], SentenceEmbedder]):
        self._make_embedder = make_embedder
        self._embedder: SentenceEmbedder | None = None
        self._lock = threading.Lock()
        self._cache: dict[int, tuple[datetime, np.ndarray]] = {}

    @property
    def embedder(self) -> SentenceEmbedder:
        with self._lock:
            if self._embedder is None:
                self._embedder = self._make_embedder()
            return self._embedder

    def _examples(self, template: ReplyTemplate) -> np.ndarray:
        cached = self._cache.get(template.id)
        if cached is None or cached[0] != template.updated_at:
            texts = [template.name, *template.examples]
            cached = (template.updated_at, self.embedder.embed(texts))
            self._cache[template.id] = cached
        return cached[1]

    def suggest(
        self,
        session: Session,
        text: str,
        labels: Mapping[str, str],
        scores: Mapping[str, Mapping[str, float]],
        variables: Mapping[str, object],
        k: int,
    ) -> list[Suggestion]:
        templates = list(
            session.scalars(
                select(ReplyTemplate).where(ReplyTemplate.enabled).order_by(ReplyTemplate.id)
            )
        )
        if not templates:
            return []
        intents = intents_of(labels, scores)
        usage = _usage_for_intent(session, intents[0][0].value)
        data = [
            TemplateData(
                t.id, t.name, list(t.intents), t.body, list(t.examples), usage.get(t.id, 0)
            )
            for t in templates
        ]
        comment = self.embedder.embed([text])[0]
        similarity = max_similarity(comment, [self._examples(t) for t in templates])
        return rank(data, intents, similarity, variables, k)


def _usage_for_intent(session: Session, intent: str) -> Counter[int]:
    """How often each template was sent as a reply to comments whose first intent was ``intent``."""
    counts: Counter[int] = Counter()
    rows = session.execute(
        select(Decision.template_id, Comment.labels, Comment.scores)
        .join(Comment, Comment.id == Decision.comment_id)
        .where(Decision.template_id.is_not(None), Decision.action == "reply")
    )
    for template_id, labels, scores in rows:
        if intents_of(labels, scores)[0][0].value == intent:
            counts[template_id] += 1
    return counts


def load_defaults(session: Session) -> int:
    """Insert the default library's templates that are not there yet (matched by name)."""
    existing = set(session.scalars(select(ReplyTemplate.name)))
    added = 0
    for entry in load_library():
        if entry["name"] in existing:
            continue
        session.add(
            ReplyTemplate(
                name=entry["name"],
                intents=entry["intents"],
                body=entry["body"],
                examples=entry.get("examples", []),
            )
        )
        added += 1
    session.commit()
    return added


def suggestion_fields(suggestion: Suggestion) -> dict[str, Any]:
    return {
        "template_id": suggestion.template.id,
        "name": suggestion.template.name,
        "text": suggestion.text,
        "score": suggestion.score,
        "reasons": suggestion.reasons,
        "missing_variables": suggestion.missing,
    }
