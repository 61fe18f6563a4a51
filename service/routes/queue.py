"""The moderator's queue: list, claim with a lease, decide one or many."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import select

from service.db.tables import Comment, QueueItem, utcnow
from service.deps import Moderator, PolicyDep, Reader, SessionDep, SettingsDep, SuggesterDep
from service.errors import TooManyComments
from service.queue import DecisionRequest, Status, View, claim, decide, decide_many, list_queue
from service.replies import ReplySuggester, suggestion_fields
from service.routes.comments import decision_out, item_out
from service.schemas import (
    AUTH_ERRORS,
    BODY_ERRORS,
    BulkDecisionRequest,
    ClaimRequest,
    DecisionIn,
    DecisionOut,
    PathId,
    QueueItemOut,
    QueuePage,
    SuggestionOut,
    error_responses,
)

router = APIRouter(prefix="/v1/queue", tags=["queue"], responses=AUTH_ERRORS)


def _with_comments(
    session: SessionDep, items: list[QueueItem], suggester: ReplySuggester, k: int
) -> list[QueueItemOut]:
    """Queue items with their comments and, when configured, their top reply suggestions."""
    ids = [i.comment_id for i in items]
    comments = {c.id: c for c in session.scalars(select(Comment).where(Comment.id.in_(ids)))}
    if not k:
        return [item_out(item, comments[item.comment_id], None) for item in items]
    requests = [
        (c.text, c.scores, {"author": c.author or ""})
        for c in (comments[item.comment_id] for item in items)
    ]
    found = suggester.suggest_many(session, requests, k)
    return [
        item_out(
            item, comments[item.comment_id], [SuggestionOut(**suggestion_fields(s)) for s in f]
        )
        for item, f in zip(items, found, strict=True)
    ]


@router.get(
    "",
    response_model=QueuePage,
    summary="A page of the queue: priority first, then oldest first",
    responses=error_responses((422, "A wrong parameter, or a cursor this server did not give.")),
)
def read_queue(
    _: Reader,
    session: SessionDep,
    suggester: SuggesterDep,
    settings: SettingsDep,
    view: Annotated[View, Query(description="needs_reply, flagged, hidden or all.")] = View.ALL,
    status: Annotated[Status | None, Query(description="open, claimed, resolved or auto.")] = None,
    limit: Annotated[int, Query(ge=1, description="Items per page.")] = 50,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page.")] = None,
) -> QueuePage:
    page = list_queue(session, view, status, min(limit, settings.queue.max_page), cursor, utcnow())
    items = _with_comments(session, page.items, suggester, settings.replies.queue_suggestions)
    return QueuePage(items=items, next_cursor=page.next_cursor)


@router.post(
    "/claim",
    response_model=list[QueueItemOut],
    summary="Take the next items with a lease",
    responses={
        **BODY_ERRORS,
        **error_responses((413, "More items than the claim limit, or a body over the size limit.")),
    },
)
def claim_items(
    request: ClaimRequest,
    principal: Moderator,
    session: SessionDep,
    settings: SettingsDep,
    suggester: SuggesterDep,
) -> list[QueueItemOut]:
    """Two moderators never hold the same item; an expired lease puts the item back in the queue."""
    if request.count > settings.queue.max_claim:
        raise TooManyComments(
            f"claiming {request.count} items at once; the limit is {settings.queue.max_claim}"
        )
    items = claim(
        session,
        principal,
        request.count,
        request.view,
        timedelta(seconds=settings.queue.lease_seconds),
        utcnow(),
    )
    return _with_comments(session, items, suggester, settings.replies.queue_suggestions)


@router.post(
    "/{comment_id}/decision",
    response_model=DecisionOut,
    summary="Decide on one item",
    responses={
        **BODY_ERRORS,
        **error_responses(
            (404, "No such comment."),
            (409, "Claimed by another moderator, or already decided."),
            (422, "Wrong types, or a decision that does not fit the action (e.g. no reply_text)."),
        ),
    },
)
def decide_item(
    comment_id: PathId,
    request: DecisionIn,
    principal: Moderator,
    session: SessionDep,
    policy: PolicyDep,
) -> DecisionOut:
    decision = decide(
        session, principal, DecisionRequest(comment_id=comment_id, **request.model_dump()), policy
    )
    return decision_out(decision)


@router.post(
    "/decisions",
    response_model=list[DecisionOut],
    summary="Decide on many items at once, all or nothing",
    responses={
        **BODY_ERRORS,
        **error_responses(
            (404, "One comment does not exist; nothing was written."),
            (409, "One item is claimed by someone else or already decided; nothing was written."),
            (413, "More decisions than the limit, or a body over the size limit."),
            (422, "One decision is invalid; nothing was written."),
        ),
    },
)
def decide_items(
    request: BulkDecisionRequest,
    principal: Moderator,
    session: SessionDep,
    policy: PolicyDep,
    settings: SettingsDep,
) -> list[DecisionOut]:
    if len(request.decisions) > settings.queue.max_bulk_decisions:
        raise TooManyComments(
            f"{len(request.decisions)} decisions in one request; the limit is {settings.queue.max_bulk_decisions}"
        )
    decided = decide_many(session, principal, decision_requests(request), policy)
    return [decision_out(d) for d in decided]


def decision_requests(request: BulkDecisionRequest) -> list[DecisionRequest]:
    """The domain requests of a bulk body (shared with the web page's decisions)."""
    return [
        DecisionRequest(
            comment_id=d.id,
            action=d.action,
            note=d.note,
            reply_text=d.reply_text,
            labels=d.labels,
            template_id=d.template_id,
        )
        for d in request.decisions
    ]
