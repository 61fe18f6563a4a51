"""Domain errors of the service and the one place that maps them (and the model's) to HTTP."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from model.errors import ArtifactError, InvalidTextError
from service.auth import Forbidden, Unauthenticated


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
    from service.queue import (
        AlreadyDecided,
        BulkDecisionError,
        ClaimedByOther,
        CommentNotFound,
        InvalidCursor,
        InvalidDecision,
    )

    @app.exception_handler(Unauthenticated)
    async def _unauthenticated(_: Request, exc: Unauthenticated) -> JSONResponse:
        response = _error(401, "unauthenticated", str(exc))
        response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(Forbidden)
    async def _forbidden(_: Request, exc: Forbidden) -> JSONResponse:
        return _error(403, "forbidden", str(exc))

    @app.exception_handler(CommentNotFound)
    async def _not_found(_: Request, exc: CommentNotFound) -> JSONResponse:
        return _error(404, "not_found", str(exc))

    @app.exception_handler(ClaimedByOther)
    async def _claimed(_: Request, exc: ClaimedByOther) -> JSONResponse:
        return _error(409, "claimed_by_other", str(exc))

    @app.exception_handler(AlreadyDecided)
    async def _decided(_: Request, exc: AlreadyDecided) -> JSONResponse:
        return _error(409, "already_decided", str(exc))

    @app.exception_handler(InvalidDecision)
    async def _invalid_decision(_: Request, exc: InvalidDecision) -> JSONResponse:
        return _error(422, "invalid_decision", str(exc))

    @app.exception_handler(InvalidCursor)
    async def _invalid_cursor(_: Request, exc: InvalidCursor) -> JSONResponse:
        return _error(422, "invalid_cursor", str(exc))

    @app.exception_handler(BulkDecisionError)
    async def _bulk(_: Request, exc: BulkDecisionError) -> JSONResponse:
        status = {CommentNotFound: 404, ClaimedByOther: 409, AlreadyDecided: 409}.get(
            type(exc.error), 422
        )
        return _error(
            status, "bulk_decision_failed", f"{exc}; nothing was written", index=exc.index
        )

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
