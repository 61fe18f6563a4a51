"""Domain errors of the service and the one place that maps them (and the model's) to HTTP."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from model.errors import ArtifactError, InvalidTextError


class ModelNotReady(Exception):
    """The model is not loaded (yet, or it failed to load)."""


class TooManyComments(ValueError):
    """A request holds more comments than the configured limit."""


class InvalidComment(ValueError):
    """One comment of a request cannot be scored; ``index`` says which."""

    def __init__(self, index: int, message: str):
        super().__init__(message)
        self.index = index


def _error(status: int, code: str, message: str, **extra: object) -> JSONResponse:
    return JSONResponse(
        status_code=status, content={"error": {"code": code, "message": message, **extra}}
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ModelNotReady)
    async def _not_ready(_: Request, exc: ModelNotReady) -> JSONResponse:
        return _error(503, "model_not_ready", str(exc) or "the model is not loaded")

    @app.exception_handler(ArtifactError)
    async def _artifact(_: Request, exc: ArtifactError) -> JSONResponse:
        return _error(503, "model_not_ready", str(exc))

    @app.exception_handler(TooManyComments)
    async def _too_many(_: Request, exc: TooManyComments) -> JSONResponse:
        return _error(413, "too_many_comments", str(exc))

    @app.exception_handler(InvalidComment)
    async def _invalid_comment(_: Request, exc: InvalidComment) -> JSONResponse:
        return _error(422, "invalid_comment", str(exc), index=exc.index)

    @app.exception_handler(InvalidTextError)
    async def _invalid_text(_: Request, exc: InvalidTextError) -> JSONResponse:
        return _error(422, "invalid_text", str(exc))
