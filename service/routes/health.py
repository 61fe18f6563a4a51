"""Liveness and readiness probes, and the Prometheus metrics."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from service.auth import Unauthenticated
from service.deps import SettingsDep
from service.metrics import Metrics
from service.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="The process is alive")
def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Health,
    summary="The model is loaded and can score",
    responses={503: {"description": "The model is not loaded.", "model": Health}},
)
def readyz(request: Request) -> Health | JSONResponse:
    scorer = getattr(request.app.state, "scorer", None)
    if scorer is None:
        error = getattr(request.app.state, "load_error", None) or "model not loaded"
        body = Health(status="not ready", detail={"error": error})
        return JSONResponse(status_code=503, content=body.model_dump())
    return Health(status="ok", detail={"model": scorer.name, "version": scorer.version})


metrics_router = APIRouter(tags=["health"])


@metrics_router.get(
    "/metrics",
    summary="Prometheus metrics (text exposition format)",
    response_class=PlainTextResponse,
    responses={401: {"description": "A metrics token is configured and was not sent."}},
)
def metrics(request: Request, settings: SettingsDep) -> Response:
    token = settings.server.metrics_token
    if token is not None:
        presented = request.headers.get("authorization", "")
        if not hmac.compare_digest(presented.encode(), f"Bearer {token}".encode()):
            raise Unauthenticated("/metrics needs 'Authorization: Bearer <metrics token>'")
    observed: Metrics = request.app.state.metrics
    return Response(observed.exposition(), media_type=CONTENT_TYPE_LATEST)
