"""Dependency providers and their ``Annotated`` aliases; tests swap them with dependency_overrides.

The ones that only read ``app.state`` are ``async``: FastAPI would run a plain ``def`` in the
thread pool, a thread hop per dependency per request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from commentdesk.settings import Settings
from model.scorer import Scorer
from service.auth import KeyCache, Permission, Principal, authenticate
from service.batching import MicroBatcher
from service.errors import ModelNotReady
from service.policy import Policy
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


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings)]
ScorerDep = Annotated[Scorer, Depends(get_scorer)]
BatcherDep = Annotated[MicroBatcher, Depends(get_batcher)]
PolicyDep = Annotated[Policy, Depends(get_policy)]
SessionDep = Annotated[Session, Depends(get_session)]
SessionsDep = Annotated[sessionmaker[Session], Depends(get_sessions)]
SuggesterDep = Annotated[ReplySuggester, Depends(get_suggester)]


def requires(permission: Permission) -> Callable[..., Awaitable[Principal]]:
    """A key with ``permission``: from the key cache, or checked in the database off the loop."""

    async def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    ) -> Principal:
        header = f"{credentials.scheme} {credentials.credentials}" if credentials else None
        cache: KeyCache = request.app.state.key_cache
        principal = cache.get(header) if header else None
        if principal is None:

            def lookup() -> Principal:
                with request.app.state.sessions() as session:
                    return authenticate(session, header)

            principal = await run_in_threadpool(lookup)  # raises for a missing or bad key
            if header is not None:
                cache.put(header, principal)
        principal.require(permission)
        return principal

    return dependency


ScoringClient = Annotated[Principal, Depends(requires(Permission.SCORE))]
Reader = Annotated[Principal, Depends(requires(Permission.READ))]
Moderator = Annotated[Principal, Depends(requires(Permission.MODERATE))]
Admin = Annotated[Principal, Depends(requires(Permission.ADMIN))]
