"""The moderation queue: ingest, list, claim with leases, decide, history and stats.

Functions take a SQLAlchemy session and plain values and raise domain errors; the routes turn
those into HTTP. Every write is one transaction: a request is applied whole or not at all.
"""

from __future__ import annotations

import base64
import binascii
import json
import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, and_, func, insert, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from model.errors import InvalidTextError
from model.scorer import Predictor, check_text
from model.tasks import LABELS, Task
from service.auth import Principal
from service.calibration import apply_overlay, load_overlays, policy_for
from service.db.tables import Comment, Decision, QueueItem, ReplyTemplate, utcnow
from service.errors import InvalidComment
from service.policy import Action, Policy, route
from service.scoring import prediction_fields


class View(StrEnum):
    NEEDS_REPLY = "needs_reply"
    FLAGGED = "flagged"
    HIDDEN = "hidden"
    ALL = "all"


class Status(StrEnum):
    OPEN = "open"  # waiting for a moderator
    CLAIMED = "claimed"  # open, with a live lease
    RESOLVED = "resolved"  # a moderator decided
    AUTO = "auto"  # the policy asked for no action


class DecisionAction(StrEnum):
    APPROVE = "approve"
    HIDE = "hide"
    REJECT = "reject"
    REPLY = "reply"
    ESCALATE = "escalate"
    RELABEL = "relabel"


VIEW_OF_ACTION = {
    Action.HIDE: "hidden",
    Action.REVIEW: "flagged",
    Action.REPLY: "needs_reply",
    Action.NONE: "none",
}
RESOLVING = {
    DecisionAction.APPROVE: "visible",
    DecisionAction.HIDE: "hidden",
    DecisionAction.REJECT: "rejected",
    DecisionAction.REPLY: "visible",
}


class CommentNotFound(LookupError):
    pass


class ClaimedByOther(Exception):
    """Another moderator holds a live lease on the item."""


class AlreadyDecided(Exception):
    """The item was resolved by an earlier decision."""


class InvalidDecision(ValueError):
    """The decision is malformed (missing reply text, unknown labels...)."""


class InvalidCursor(ValueError):
    pass


class BulkDecisionError(Exception):
    """One decision of a bulk request failed; nothing of the request was written."""

    def __init__(self, index: int, error: Exception):
        super().__init__(f"decision {index}: {error}")
        self.index = index
        self.error = error


@dataclass(frozen=True)
class IncomingComment:
    source: str
    external_id: str
    text: str
    author: str | None = None
    created_at: datetime | None = None
    url: str | None = None
    parent_id: str | None = None


@dataclass(frozen=True)
class IngestResult:
    index: int
    comment_id: int
    status: str  # created or duplicate
    action: str
    view: str


@dataclass(frozen=True)
class DecisionRequest:
    comment_id: int
    action: DecisionAction
    note: str | None = None
    reply_text: str | None = None
    labels: dict[str, str] | None = None
    template_id: int | None = None


@dataclass
class Page:
    items: list[QueueItem]
    next_cursor: str | None


def _insert_for(session: Session) -> Any:
    dialect = session.get_bind().dialect.name
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


def ingest(
    session: Session,
    scorer: Predictor,
    policy: Policy,
    comments: Sequence[IncomingComment],
    max_chars: int,
) -> list[IngestResult]:
    """Score, route and store new comments; a (source, external_id) seen before is not stored again."""
    for index, comment in enumerate(comments):
        try:
            check_text(comment.text, max_chars)
        except InvalidTextError as exc:
            raise InvalidComment(index, f"comment {index}: {exc}") from exc
        if (nul := comment.text.find("\x00")) >= 0:  # PostgreSQL cannot store it
            raise InvalidComment(
                index, f"comment {index}: text has a NUL character (U+0000) at character {nul}"
            )
    first_index: dict[tuple[str, str], int] = {}
    for index, comment in enumerate(comments):
        first_index.setdefault((comment.source, comment.external_id), index)
    existing = _existing_ids(session, list(first_index))
    new = [comments[i] for key, i in first_index.items() if key not in existing]
    overlays = load_overlays(session, {c.source for c in new}, scorer.name, scorer.version)
    session.commit()  # end the read: the model must not run under SQLite's write lock
    predictions = scorer.predict([c.text for c in new]) if new else []
    policies = {source: policy_for(policy, overlay) for source, overlay in overlays.items()}
    now = utcnow()
    rows, routings = [], {}
    for comment, prediction in zip(new, predictions, strict=True):
        if comment.source in overlays:
            prediction = apply_overlay(prediction, overlays[comment.source])
        fields = prediction_fields(prediction)
        routings[(comment.source, comment.external_id)] = route(
            policies.get(comment.source, policy), comment.text, prediction.scores
        )
        rows.append(
            {
                "source": comment.source,
                "external_id": comment.external_id,
                "author": comment.author,
                "text": comment.text,
                "url": comment.url,
                "parent_id": comment.parent_id,
                "created_at": comment.created_at,
                "received_at": now,
                "model_name": scorer.name,
                "model_version": scorer.version,
                "scores": fields["scores"],
                "labels": fields["labels"],
            }
        )
    created: dict[tuple[str, str], int] = {}
    if rows:
        statement = (
            _insert_for(session)(Comment)
            .on_conflict_do_nothing(index_elements=["source", "external_id"])
            .returning(Comment.id, Comment.source, Comment.external_id)
        )
        for comment_id, source, external_id in session.execute(statement, rows):
            created[(source, external_id)] = comment_id
        items = []
        for key, comment_id in created.items():
            routing = routings[key]
            items.append(
                {
                    "comment_id": comment_id,
                    "view": VIEW_OF_ACTION[routing.action],
                    "action": routing.action.value,
                    "reasons": routing.reasons,
                    "priority": routing.priority,
                    "status": Status.AUTO.value
                    if routing.action is Action.NONE
                    else Status.OPEN.value,
                    "escalated": False,
                    "received_at": now,
                    "visibility": "hidden" if routing.action is Action.HIDE else "visible",
                }
            )
        session.execute(insert(QueueItem), items)
    session.commit()
    # Rows another request stored first (a race) are duplicates too.
    existing.update(
        _existing_ids(session, [k for k in first_index if k not in existing and k not in created])
    )
    states = {
        item.comment_id: item
        for item in session.scalars(
            select(QueueItem).where(
                QueueItem.comment_id.in_([*existing.values(), *created.values()])
            )
        )
    }
    results = []
    for index, comment in enumerate(comments):
        key = (comment.source, comment.external_id)
        is_new = key in created and first_index[key] == index
        comment_id = created[key] if key in created else existing[key]
        state = states[comment_id]
        results.append(
            IngestResult(
                index, comment_id, "created" if is_new else "duplicate", state.action, state.view
            )
        )
    return results


def _existing_ids(session: Session, keys: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
    found: dict[tuple[str, str], int] = {}
    wanted = set(keys)
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        rows = session.execute(
            select(Comment.id, Comment.source, Comment.external_id).where(
                Comment.source.in_({s for s, _ in chunk}),
                Comment.external_id.in_({e for _, e in chunk}),
            )
        )
        for comment_id, source, external_id in rows:
            if (source, external_id) in wanted:
                found[(source, external_id)] = comment_id
    return found


def _view_filter(view: View) -> ColumnElement[bool] | None:
    return None if view is View.ALL else QueueItem.view == view.value


def _status_filter(status: Status, now: datetime) -> ColumnElement[bool]:
    live_lease = and_(QueueItem.claimed_by.is_not(None), QueueItem.lease_expires_at > now)
    if status is Status.CLAIMED:
        return and_(QueueItem.status == Status.OPEN.value, live_lease)
    return QueueItem.status == status.value


def _encode_cursor(item: QueueItem) -> str:
    raw = json.dumps([item.priority, item.received_at.isoformat(), item.comment_id])
    return base64.urlsafe_b64encode(raw.encode()).decode()


INT32 = 2**31  # priorities and ids are 32-bit integers in PostgreSQL
INVALID_CURSOR = "invalid cursor: pass back the next_cursor of the previous page"


def _decode_cursor(cursor: str) -> tuple[int, datetime, int]:
    """The position a cursor holds; anything this server did not write is an InvalidCursor,
    never a value the database cannot take (a naive time, an integer out of range)."""
    try:
        priority, received, comment_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        when = datetime.fromisoformat(received)
        position = int(priority), when.astimezone(UTC), int(comment_id)
    except (ValueError, TypeError, OverflowError, binascii.Error) as exc:
        raise InvalidCursor(INVALID_CURSOR) from exc
    if when.tzinfo is None or not all(-INT32 <= v < INT32 for v in (position[0], position[2])):
        raise InvalidCursor(INVALID_CURSOR)
    return position


ORDER = (QueueItem.priority.desc(), QueueItem.received_at.asc(), QueueItem.comment_id.asc())


def list_queue(
    session: Session,
    view: View,
    status: Status | None,
    limit: int,
    cursor: str | None,
    now: datetime,
) -> Page:
    """A page of the queue, highest priority first, then oldest first."""
    statement = select(QueueItem)
    view_filter = _view_filter(view)
    if view_filter is not None:
        statement = statement.where(view_filter)
    if status is not None:
        statement = statement.where(_status_filter(status, now))
    if cursor:
        priority, received, comment_id = _decode_cursor(cursor)
        statement = statement.where(
            or_(
                QueueItem.priority < priority,
                and_(QueueItem.priority == priority, QueueItem.received_at > received),
                and_(
                    QueueItem.priority == priority,
                    QueueItem.received_at == received,
                    QueueItem.comment_id > comment_id,
                ),
            )
        )
    items = list(session.scalars(statement.order_by(*ORDER).limit(limit + 1)))
    next_cursor = _encode_cursor(items[limit - 1]) if len(items) > limit else None
    return Page(items[:limit], next_cursor)


def claim(
    session: Session, principal: Principal, count: int, view: View, lease: timedelta, now: datetime
) -> list[QueueItem]:
    """Hand the caller the next ``count`` open items with a lease; expired leases count as free."""
    statement = select(QueueItem).where(
        QueueItem.status == Status.OPEN.value,
        or_(QueueItem.claimed_by.is_(None), QueueItem.lease_expires_at <= now),
    )
    view_filter = _view_filter(view)
    if view_filter is not None:
        statement = statement.where(view_filter)
    # SKIP LOCKED on PostgreSQL; on SQLite the transaction already holds the write lock.
    statement = statement.order_by(*ORDER).limit(count).with_for_update(skip_locked=True)
    items = list(session.scalars(statement))
    for item in items:
        item.claimed_by = principal.key_id
        item.lease_expires_at = now + lease
    session.commit()
    return items


def _validated_labels(labels: dict[str, str] | None) -> dict[str, str]:
    if not labels:
        raise InvalidDecision("relabel needs 'labels': a map of task to corrected label")
    for task_name, label in labels.items():
        try:
            task = Task(task_name)
        except ValueError:
            raise InvalidDecision(f"unknown task {task_name!r}") from None
        if label not in LABELS[task]:
            raise InvalidDecision(
                f"unknown label {label!r} for {task}; labels: {', '.join(LABELS[task])}"
            )
    return dict(labels)


def _apply(
    session: Session, principal: Principal, request: DecisionRequest, policy: Policy, now: datetime
) -> Decision:
    if request.action is DecisionAction.REPLY and not (
        request.reply_text and request.reply_text.strip()
    ):
        raise InvalidDecision("a reply decision needs a non-empty 'reply_text'")
    if request.action is not DecisionAction.REPLY and request.reply_text is not None:
        raise InvalidDecision("'reply_text' only goes with the reply action")
    labels = _validated_labels(request.labels) if request.action is DecisionAction.RELABEL else None
    if request.action is not DecisionAction.RELABEL and request.labels is not None:
        raise InvalidDecision("'labels' only go with the relabel action")
    template = None
    if request.template_id is not None:
        if request.action is not DecisionAction.REPLY:
            raise InvalidDecision("'template_id' only goes with the reply action")
        template = session.get(ReplyTemplate, request.template_id)
        if template is None:
            raise InvalidDecision(f"template {request.template_id} does not exist")
    item = session.scalars(
        select(QueueItem).where(QueueItem.comment_id == request.comment_id).with_for_update()
    ).one_or_none()
    if item is None:
        raise CommentNotFound(f"comment {request.comment_id} does not exist")
    if item.status == Status.RESOLVED.value:
        raise AlreadyDecided(f"comment {request.comment_id} was already decided")
    held = (
        item.claimed_by is not None
        and item.lease_expires_at is not None
        and item.lease_expires_at > now
    )
    if held and item.claimed_by != principal.key_id:
        raise ClaimedByOther(f"comment {request.comment_id} is claimed by another moderator")
    if request.action in RESOLVING:
        item.status = Status.RESOLVED.value
        item.visibility = RESOLVING[request.action]
        item.resolved_at = now
        item.claimed_by, item.lease_expires_at = None, None
    elif request.action is DecisionAction.ESCALATE:
        if not item.escalated:
            item.priority += int(policy.weights.escalated)
        item.escalated = True
        item.status = Status.OPEN.value
        item.claimed_by, item.lease_expires_at = None, None
    comment = session.get_one(Comment, request.comment_id)
    decision = Decision(
        comment_id=comment.id,
        key_id=principal.key_id,
        actor=principal.name,
        action=request.action.value,
        note=request.note,
        reply_text=request.reply_text,
        labels=labels,
        template_id=request.template_id,
        model_name=comment.model_name,
        model_version=comment.model_version,
        scores=comment.scores,
        created_at=now,
    )
    session.add(decision)
    if template is not None:
        template.usage_count += 1
    return decision


def decide(
    session: Session, principal: Principal, request: DecisionRequest, policy: Policy
) -> Decision:
    try:
        decision = _apply(session, principal, request, policy, utcnow())
        session.commit()
    except Exception:
        session.rollback()
        raise
    return decision


def decide_many(
    session: Session, principal: Principal, requests: Sequence[DecisionRequest], policy: Policy
) -> list[Decision]:
    """All decisions or none: the first failure rolls the whole request back."""
    now = utcnow()
    decisions = []
    seen: set[int] = set()
    try:
        for index, request in enumerate(requests):
            try:
                if request.comment_id in seen:
                    raise InvalidDecision(
                        f"comment {request.comment_id} appears twice in this request"
                    )
                seen.add(request.comment_id)
                decisions.append(_apply(session, principal, request, policy, now))
                session.flush()
            except (CommentNotFound, ClaimedByOther, AlreadyDecided, InvalidDecision) as exc:
                raise BulkDecisionError(index, exc) from exc
        session.commit()
    except Exception:
        session.rollback()
        raise
    return decisions


def get_comment(session: Session, comment_id: int) -> Comment:
    comment = session.get(Comment, comment_id)
    if comment is None:
        raise CommentNotFound(f"comment {comment_id} does not exist")
    return comment


@dataclass
class Stats:
    views: dict[str, dict[str, int]] = field(default_factory=dict)
    decisions: dict[str, int] = field(default_factory=dict)
    median_seconds_to_first_decision: float | None = None
    daily: list[dict[str, Any]] = field(default_factory=list)


def stats(session: Session, now: datetime) -> Stats:
    result = Stats()
    live_lease = and_(QueueItem.claimed_by.is_not(None), QueueItem.lease_expires_at > now)
    rows = session.execute(
        select(
            QueueItem.view, QueueItem.status, live_lease.label("claimed"), func.count()
        ).group_by(QueueItem.view, QueueItem.status, live_lease)
    )
    views: dict[str, Counter[str]] = defaultdict(Counter)
    for view, status, claimed, count in rows:
        state = Status.CLAIMED.value if status == Status.OPEN.value and claimed else status
        views[view][state] += count
        views["all"][state] += count
    result.views = {view: dict(counts) for view, counts in sorted(views.items())}
    result.decisions = dict(
        session.execute(select(Decision.action, func.count()).group_by(Decision.action)).all()
    )
    first = (
        select(Decision.comment_id, func.min(Decision.created_at).label("first"))
        .group_by(Decision.comment_id)
        .subquery()
    )
    waits = [
        (decided - received).total_seconds()
        for received, decided in session.execute(
            select(Comment.received_at, first.c.first).join(first, first.c.comment_id == Comment.id)
        )
    ]
    result.median_seconds_to_first_decision = statistics.median(waits) if waits else None
    per_day: dict[str, Counter[str]] = defaultdict(Counter)
    for received, labels in session.execute(select(Comment.received_at, Comment.labels)):
        day = per_day[received.date().isoformat()]
        day["comments"] += 1
        day["negative"] += labels.get("sentiment") == "negative"
        day["offensive"] += labels.get("offensive") == "offensive"
        day["question"] += labels.get("question") == "question"
    result.daily = [
        {
            "day": day,
            "comments": counts["comments"],
            **{
                f"{k}_share": round(counts[k] / counts["comments"], 4)
                for k in ("negative", "offensive", "question")
            },
        }
        for day, counts in sorted(per_day.items())
    ]
    return result
