"""Dependency providers and their ``Annotated`` aliases; tests swap them with dependency_overrides."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from commentdesk.settings import Settings
from model.scorer import Scorer
from service.auth import Permission, Principal, authenticate
from service.errors import ModelNotReady
from service.policy import Policy
from service.replies import ReplySuggester

bearer = HTTPBearer(
    auto_error=False, description="An API key: `commentdesk keys create --role ...`"
)


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_scorer(request: Request) -> Scorer:
    scorer: Scorer | None = getattr(request.app.state, "scorer", None)
    if scorer is None:
        raise ModelNotReady(getattr(request.app.state, "load_error", None) or "model not loaded")
    return scorer


def get_policy(request: Request) -> Policy:
    policy: Policy = request.app.state.policy
    return policy


def get_suggester(request: Request) -> ReplySuggester:
    suggester: ReplySuggester = request.app.state.suggester
    return suggester


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings)]
ScorerDep = Annotated[Scorer, Depends(get_scorer)]
PolicyDep = Annotated[Policy, Depends(get_policy)]
SessionDep = Annotated[Session, Depends(get_session)]
SuggesterDep = Annotated[ReplySuggester, Depends(get_suggester)]


def requires(permission: Permission) -> Callable[..., Principal]:
    def dependency(
        session: SessionDep,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    ) -> Principal:
        header = f"{credentials.scheme} {credentials.credentials}" if credentials else None
        principal = authenticate(session, header)
        principal.require(permission)
        return principal

    return dependency


ScoringClient = Annotated[Principal, Depends(requires(Permission.SCORE))]
Reader = Annotated[Principal, Depends(requires(Permission.READ))]
Moderator = Annotated[Principal, Depends(requires(Permission.MODERATE))]
Admin = Annotated[Principal, Depends(requires(Permission.ADMIN))]
