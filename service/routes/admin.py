"""Statistics for the team, and admin routes: API keys and the active policy."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy import select

from service.auth import create_key, revoke_key
from service.db.tables import ApiKey, utcnow
from service.deps import Admin, PolicyDep, Reader, SessionDep
from service.queue import CommentNotFound, stats
from service.schemas import (
    AUTH_ERRORS,
    BODY_ERRORS,
    KeyCreate,
    KeyCreated,
    KeyOut,
    PathId,
    StatsOut,
    StoredStr,
    error_responses,
)

router = APIRouter(prefix="/v1", tags=["admin"], responses=AUTH_ERRORS)


@router.get(
    "/stats",
    response_model=StatsOut,
    summary="Queue counts, decisions, response time, daily mood; the analytics report's numbers",
    responses=error_responses(
        (
            422,
            "`since` or `until` is no ISO date or date-time, `since` is not before `until`, "
            "or `source` is too long or holds a NUL character.",
        )
    ),
)
def read_stats(
    _: Reader,
    session: SessionDep,
    since: Annotated[
        str | None,
        Query(
            max_length=40,
            description="Report only comments written from then: a date (2026-11-01) or an ISO "
            "date-time; UTC unless it gives a zone.",
        ),
    ] = None,
    until: Annotated[
        str | None,
        Query(
            max_length=40,
            description="Report only comments written before then; a date includes that day.",
        ),
    ] = None,
    source: Annotated[
        StoredStr | None,
        Query(max_length=100, description="Report only the comments of this source."),
    ] = None,
) -> StatsOut:
    # pandas and spaCy are imported by the first request that builds a report, not at start-up.
    from service.analytics import FilterError, build_report, load_database, make_filters

    try:
        filters = make_filters(since, until, source)
    except FilterError as exc:
        value = since if exc.name == "since" else until
        error = {"type": "value_error", "loc": ("query", exc.name), "msg": str(exc), "input": value}
        raise RequestValidationError([error]) from exc
    report = build_report(load_database(session, filters), filters)
    return StatsOut(**asdict(stats(session, utcnow())), report=report)


@router.get("/keys", response_model=list[KeyOut], summary="API keys (never their secrets)")
def list_keys(_: Admin, session: SessionDep) -> list[KeyOut]:
    return [
        KeyOut.model_validate(k, from_attributes=True)
        for k in session.scalars(select(ApiKey).order_by(ApiKey.id))
    ]


@router.post(
    "/keys",
    response_model=KeyCreated,
    status_code=201,
    summary="Create an API key; its secret is shown once",
    responses=BODY_ERRORS,
)
def add_key(request: KeyCreate, _: Admin, session: SessionDep) -> KeyCreated:
    key, secret = create_key(session, request.name, request.role)
    return KeyCreated(**KeyOut.model_validate(key, from_attributes=True).model_dump(), key=secret)


@router.delete(
    "/keys/{key_id}",
    status_code=204,
    summary="Revoke an API key",
    responses=error_responses((404, "No such active key."), 422),
)
def delete_key(key_id: PathId, _: Admin, session: SessionDep, request: Request) -> None:
    if not revoke_key(session, key_id):
        raise CommentNotFound(f"no active key {key_id}")
    request.app.state.key_cache.forget(key_id)


@router.get("/policy", summary="The moderation policy in force")
def read_policy(_: Admin, policy: PolicyDep) -> dict[str, Any]:
    return {
        "rules": [
            {**asdict(r), "task": r.task.value, "action": r.action.value} for r in policy.rules
        ],
        "banned": [" ".join(p) for p in policy.banned],
        "suspect": [" ".join(p) for p in policy.suspect],
        "priority": asdict(policy.weights),
    }
