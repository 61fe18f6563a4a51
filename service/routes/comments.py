"""Ingest comments into the queue and read one comment with its full history."""

from __future__ import annotations

from fastapi import APIRouter

from service.batching import BlockingBatcher
from service.db.tables import Comment, Decision, QueueItem, utcnow
from service.deps import BatcherDep, PolicyDep, Reader, ScoringClient, SessionDep, SettingsDep
from service.errors import TooManyComments
from service.queue import IncomingComment, Status, get_comment, ingest
from service.schemas import (
    AUTH_ERRORS,
    BODY_ERRORS,
    CommentDetail,
    DecisionOut,
    IngestRequest,
    IngestResponse,
    IngestResultOut,
    ModelInfo,
    PathId,
    QueueItemOut,
    SuggestionOut,
    error_responses,
)

router = APIRouter(prefix="/v1/comments", tags=["comments"], responses=AUTH_ERRORS)


def item_out(
    item: QueueItem, comment: Comment, suggestions: list[SuggestionOut] | None = None
) -> QueueItemOut:
    live = (
        item.claimed_by is not None
        and item.lease_expires_at is not None
        and item.lease_expires_at > utcnow()
    )
    status = Status.CLAIMED.value if item.status == Status.OPEN.value and live else item.status
    return QueueItemOut(
        id=comment.id,
        source=comment.source,
        external_id=comment.external_id,
        author=comment.author,
        text=comment.text,
        received_at=comment.received_at,
        view=item.view,
        action=item.action,
        reasons=item.reasons,
        priority=item.priority,
        status=status,
        escalated=item.escalated,
        visibility=item.visibility,
        claimed_by=item.claimed_by if live else None,
        lease_expires_at=item.lease_expires_at if live else None,
        labels=comment.labels,
        scores=comment.scores,
        model=ModelInfo(name=comment.model_name, version=comment.model_version),
        suggestions=suggestions,
    )


def decision_out(decision: Decision) -> DecisionOut:
    return DecisionOut(
        id=decision.id,
        comment_id=decision.comment_id,
        actor=decision.actor,
        key_id=decision.key_id,
        action=decision.action,
        note=decision.note,
        reply_text=decision.reply_text,
        labels=decision.labels,
        created_at=decision.created_at,
        model=ModelInfo(name=decision.model_name, version=decision.model_version),
        scores=decision.scores,
    )


@router.post(
    "",
    response_model=IngestResponse,
    summary="Store, score and route comments (idempotent on source + external_id)",
    responses={
        **BODY_ERRORS,
        **error_responses(
            (413, "More comments than the limit, or a body over the size limit."),
            (422, "A comment is invalid; nothing was stored."),
        ),
    },
)
def ingest_comments(
    request: IngestRequest,
    _: ScoringClient,
    session: SessionDep,
    batcher: BatcherDep,
    policy: PolicyDep,
    settings: SettingsDep,
) -> IngestResponse:
    if len(request.comments) > settings.queue.max_ingest:
        raise TooManyComments(
            f"{len(request.comments)} comments in one request; the limit is {settings.queue.max_ingest}"
        )
    incoming = [IncomingComment(**c.model_dump()) for c in request.comments]
    results = ingest(session, BlockingBatcher(batcher), policy, incoming, settings.api.max_chars)
    created = sum(r.status == "created" for r in results)
    return IngestResponse(
        results=[
            IngestResultOut(
                index=r.index, id=r.comment_id, status=r.status, action=r.action, view=r.view
            )
            for r in results
        ],
        created=created,
        duplicates=len(results) - created,
    )


@router.get(
    "/{comment_id}",
    response_model=CommentDetail,
    summary="A comment, its queue state and every decision on it",
    responses=error_responses((404, "No such comment."), 422),
)
def read_comment(comment_id: PathId, _: Reader, session: SessionDep) -> CommentDetail:
    comment = get_comment(session, comment_id)
    return CommentDetail(
        item=item_out(comment.queue_item, comment),
        url=comment.url,
        parent_id=comment.parent_id,
        created_at=comment.created_at,
        history=[decision_out(d) for d in comment.decisions],
    )
