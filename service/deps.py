"""Dependency providers and their ``Annotated`` aliases; tests swap them with dependency_overrides.

The ones that only read ``app.state`` are ``async``: FastAPI would run a plain ``def`` in the
thread pool, a thread hop per dependency per request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from commentdesk.settings import Settings
from model.scorer import Scorer
from service.auth import KeyCache, Permission, Principal, verify_key
from service.batching import MicroBatcher
from service.db.engine import read_only
from service.errors import ModelNotReady
from service.perspective import LanguageDetector
from service.policy import Policy
from service.ratelimit import RateLimiter
from service.replies import ReplySuggester

bearer = HTTPBearer(
    auto_error=False, description="An API key: `commentdesk keys create --role ...`"
)


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_scorer(request: Request) -> Scorer:
    scorer: Scorer | None = getattr(request.app.state, "scorer", None)
    if scorer is None:
        raise ModelNotReady(getattr(request.app.state, "load_error", None) or "model not loaded")
    return scorer


async def get_batcher(request: Request) -> MicroBatcher:
    await get_scorer(request)
    batcher: MicroBatcher = request.app.state.batcher
    return batcher


async def get_policy(request: Request) -> Policy:
    policy: Policy = request.app.state.policy
    return policy


async def get_suggester(request: Request) -> ReplySuggester:
    suggester: ReplySuggester = request.app.state.suggester
    return suggester


async def get_sessions(request: Request) -> sessionmaker[Session]:
    sessions: sessionmaker[Session] = request.app.state.sessions
    return sessions


async def get_language_detector(request: Request) -> LanguageDetector:
    detector: LanguageDetector = request.app.state.language_detector
    return detector


async def get_session(request: Request) -> AsyncIterator[Session]:
    """A session for the request.

    On SQLite a writing transaction holds the database's one write lock, and worker threads
    waiting for that lock can fill the thread pool, so a lock holder must never need a free
    thread to let go of it. Hence: GET requests only read (their transactions take no lock);
    once a request has committed, what follows only builds its answer (response validation runs
    in a worker thread), so later transactions take no lock either; and the session is closed
    by this ``async`` dependency on the event loop, not in a worker thread."""
    with request.app.state.sessions() as session:
        if request.method in ("GET", "HEAD"):
            read_only(session)
        else:
            event.listen(session, "after_commit", read_only)
        yield session


@dataclass(frozen=True)
class Scoring:
    """What ``POST /v1/score`` needs, as one dependency instead of four: FastAPI resolves each
    dependency of each request through several Python calls, and this route takes the most
    requests (bench/http_overhead.py)."""

    batcher: MicroBatcher
    settings: Settings
    sessions: sessionmaker[Session]
    suggester: ReplySuggester


async def get_scoring(request: Request) -> Scoring:
    state = request.app.state
    return Scoring(await get_batcher(request), state.settings, state.sessions, state.suggester)


SettingsDep = Annotated[Settings, Depends(get_settings)]
ScorerDep = Annotated[Scorer, Depends(get_scorer)]
BatcherDep = Annotated[MicroBatcher, Depends(get_batcher)]
PolicyDep = Annotated[Policy, Depends(get_policy)]
SessionDep = Annotated[Session, Depends(get_session)]
SessionsDep = Annotated[sessionmaker[Session], Depends(get_sessions)]
SuggesterDep = Annotated[ReplySuggester, Depends(get_suggester)]
ScoringDep = Annotated[Scoring, Depends(get_scoring)]
LanguagesDep = Annotated[LanguageDetector, Depends(get_language_detector)]


def requires(permission: Permission) -> Callable[..., Awaitable[Principal]]:
    """A key with ``permission``, sent as ``Authorization: Bearer <key>``."""

    async def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    ) -> Principal:
        header = f"{credentials.scheme} {credentials.credentials}" if credentials else None
        principal = await principal_of(request, header)
        principal.require(permission)
        return principal

    return dependency


async def principal_of(request: Request, authorization: str | None) -> Principal:
    """The key's principal, from the key cache or checked in the database off the event loop;
    raises :class:`Unauthenticated` for a missing, unknown or revoked key and
    :class:`RateLimited` for a key over its rate."""
    cache: KeyCache = request.app.state.key_cache
    cached = cache.get(authorization) if authorization else None
    if cached is not None:
        principal = cached
    else:
        trusted = cache.verified_hash(authorization) if authorization else None

        def lookup() -> tuple[Principal, str]:
            with request.app.state.sessions() as session:
                return verify_key(read_only(session), authorization, trusted)

        principal, key_hash = await run_in_threadpool(lookup)
        if authorization is not None:
            cache.put(authorization, principal, key_hash)
    limiter: RateLimiter = request.app.state.rate_limiter
    limiter.check(principal.key_id)
    return principal


ScoringClient = Annotated[Principal, Depends(requires(Permission.SCORE))]
Reader = Annotated[Principal, Depends(requires(Permission.READ))]
Moderator = Annotated[Principal, Depends(requires(Permission.MODERATE))]
Admin = Annotated[Principal, Depends(requires(Permission.ADMIN))]
