"""Reply suggestions: templates from the database, ranked for one comment.

The embedder (the pinned MiniLM) loads on first use, and each template's example embeddings are
cached until the template changes, so a suggestion costs one short encoder pass.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from model.scorer import Embedder
from service.db.tables import Comment, Decision, ReplyTemplate
from service.templates import (
    Suggestion,
    TemplateData,
    intents_of,
    load_library,
    rank,
)


@dataclass(frozen=True)
class _Catalogue:
    """The enabled templates with their example embeddings stacked in one matrix.

    Every template has at least one row (its name is embedded beside its examples), so
    ``starts`` holds one valid offset per template.
    """

    stamp: tuple[Any, ...]
    templates: list[TemplateData]
    examples: np.ndarray
    starts: np.ndarray

    def similarity(self, comment: np.ndarray) -> np.ndarray:
        """Per template: the highest cosine between the comment and any of its examples."""
        return np.maximum.reduceat(self.examples @ comment, self.starts)


@dataclass
class _Usage:
    """Reply decisions per (first intent, template), counted incrementally by decision id."""

    last_decision_id: int = 0
    counts: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))


COMMENT_CACHE_SIZE = 4096  # 384 float32 each: about 6 MB


class ReplySuggester:
    """Ranks templates for a comment; templates, embeddings and usage stay in memory.

    Each call checks a cheap stamp of the templates table (count, newest id and edit time) and
    only the decisions added since the last call, so other workers' edits are seen at once while
    the hot path costs one short encoder pass and one matrix product.
    """

    def __init__(self, make_embedder: Callable[[], Embedder]):
        self._make_embedder = make_embedder
        self._embedder: Embedder | None = None
        self._lock = threading.Lock()
        self._embeddings: dict[int, tuple[datetime, np.ndarray]] = {}
        self._catalogue: _Catalogue | None = None
        self._usage = _Usage()
        # Comment embeddings by text: a queue page shows mostly the comments it showed before.
        self._comments: OrderedDict[str, np.ndarray] = OrderedDict()

    @property
    def embedder(self) -> Embedder:
        with self._lock:
            if self._embedder is None:
                self._embedder = self._make_embedder()
            return self._embedder

    def _embed_comments(self, texts: list[str]) -> list[np.ndarray]:
        with self._lock:
            known = {t: self._comments[t] for t in texts if t in self._comments}
            for text in known:
                self._comments.move_to_end(text)
        missing = list(dict.fromkeys(t for t in texts if t not in known))
        if missing:
            fresh = dict(zip(missing, self.embedder.embed(missing), strict=True))
            known.update(fresh)
            with self._lock:
                self._comments.update(fresh)
                while len(self._comments) > COMMENT_CACHE_SIZE:
                    self._comments.popitem(last=False)
        return [known[t] for t in texts]

    def _examples(self, template: ReplyTemplate) -> np.ndarray:
        cached = self._embeddings.get(template.id)
        if cached is None or cached[0] != template.updated_at:
            cached = (template.updated_at, self.embedder.embed([template.name, *template.examples]))
            self._embeddings[template.id] = cached
        return cached[1]

    def _load_catalogue(self, session: Session) -> _Catalogue:
        stamp = tuple(
            session.execute(
                select(
                    func.count(ReplyTemplate.id),
                    func.max(ReplyTemplate.id),
                    func.max(ReplyTemplate.updated_at),
                    func.sum(case((ReplyTemplate.enabled, 1), else_=0)),
                )
            ).one()
        )
        with self._lock:
            if self._catalogue is not None and self._catalogue.stamp == stamp:
                return self._catalogue
        rows = list(
            session.scalars(
                select(ReplyTemplate).where(ReplyTemplate.enabled).order_by(ReplyTemplate.id)
            )
        )
        blocks = [self._examples(t) for t in rows]
        sizes = [len(b) for b in blocks]
        catalogue = _Catalogue(
            stamp=stamp,
            templates=[
                TemplateData(t.id, t.name, list(t.intents), t.body, list(t.examples)) for t in rows
            ],
            examples=np.concatenate(blocks) if blocks else np.zeros((0, 0), dtype=np.float32),
            starts=np.cumsum([0, *sizes[:-1]]).astype(np.int64),
        )
        live = {t.id for t in rows}
        with self._lock:
            self._embeddings = {i: e for i, e in self._embeddings.items() if i in live}
            self._catalogue = catalogue
        return catalogue

    def _usage_for_intent(self, session: Session, intent: str) -> Counter[int]:
        """How often each template was sent as a reply to comments whose first intent was ``intent``."""
        with self._lock:
            since = self._usage.last_decision_id
        rows = session.execute(
            select(Decision.id, Decision.template_id, Comment.scores)
            .join(Comment, Comment.id == Decision.comment_id)
            .where(
                Decision.id > since,
                Decision.template_id.is_not(None),
                Decision.action == "reply",
            )
            .order_by(Decision.id)
        ).all()
        with self._lock:
            for decision_id, template_id, scores in rows:
                if decision_id <= self._usage.last_decision_id:
                    continue
                first = intents_of(scores)[0][0].value
                self._usage.counts[first][template_id] += 1
                self._usage.last_decision_id = decision_id
            return Counter(self._usage.counts[intent])

    def suggest(
        self,
        session: Session,
        text: str,
        scores: Mapping[str, Mapping[str, float]],
        variables: Mapping[str, object],
        k: int,
    ) -> list[Suggestion]:
        return self.suggest_many(session, [(text, scores, variables)], k)[0]

    def suggest_many(
        self,
        session: Session,
        comments: Sequence[tuple[str, Mapping[str, Mapping[str, float]], Mapping[str, object]]],
        k: int,
    ) -> list[list[Suggestion]]:
        """Top ``k`` suggestions for each ``(text, scores, variables)``, with one model call.

        Ends the session's current transaction (reads only) before the model call: on SQLite
        every transaction holds the write lock, which must never wait on the model."""
        catalogue = self._load_catalogue(session)
        if not catalogue.templates or not comments:
            return [[] for _ in comments]
        session.commit()
        vectors = self._embed_comments([text for text, _, _ in comments])
        out = []
        for (_, scores, variables), vector in zip(comments, vectors, strict=True):
            intents = intents_of(scores)
            usage = self._usage_for_intent(session, intents[0][0].value)
            templates = [replace(t, usage=usage.get(t.id, 0)) for t in catalogue.templates]
            out.append(rank(templates, intents, catalogue.similarity(vector), variables, k))
        return out


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
