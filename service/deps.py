"""Dependency providers and their ``Annotated`` aliases; tests swap them with dependency_overrides."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from commentdesk.settings import Settings
from model.scorer import Scorer
from service.errors import ModelNotReady


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_scorer(request: Request) -> Scorer:
    scorer: Scorer | None = getattr(request.app.state, "scorer", None)
    if scorer is None:
        raise ModelNotReady(getattr(request.app.state, "load_error", None) or "model not loaded")
    return scorer


SettingsDep = Annotated[Settings, Depends(get_settings)]
ScorerDep = Annotated[Scorer, Depends(get_scorer)]
