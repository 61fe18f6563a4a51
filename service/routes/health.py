"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

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
