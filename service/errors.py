"""Domain errors of the service and the one place that maps them (and the model's) to HTTP."""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from model.errors import ArtifactError, InvalidTextError
from service.auth import Forbidden, Unauthenticated
from service.batching import ScoringTimeout
from service.ratelimit import RateLimited

logger = logging.getLogger(__name__)

DATABASE_RETRY_AFTER_S = 5


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
    from service.batch import BatchInputError
    from service.batch_jobs import JobNotDone, JobNotFound, UploadNotStored
    from service.perspective import PerspectiveError
    from service.queue import (
        AlreadyDecided,
        BulkDecisionError,
        ClaimedByOther,
        CommentNotFound,
        InvalidCursor,
        InvalidDecision,
    )
    from service.routes.templates import DuplicateName
    from service.ui.routes import CsrfRejected, NotSignedIn

    # Exception type -> HTTP status and machine-readable code; the message is the exception's.
    simple: dict[type[Exception], tuple[int, str]] = {
        Forbidden: (403, "forbidden"),
        CommentNotFound: (404, "not_found"),
        JobNotFound: (404, "not_found"),
        JobNotDone: (409, "not_done"),
        BatchInputError: (422, "invalid_batch"),
        ClaimedByOther: (409, "claimed_by_other"),
        AlreadyDecided: (409, "already_decided"),
        DuplicateName: (409, "duplicate_name"),
        TooManyComments: (413, "too_many_comments"),
        InvalidDecision: (422, "invalid_decision"),
        InvalidCursor: (422, "invalid_cursor"),
        InvalidTextError: (422, "invalid_text"),
        ModelNotReady: (503, "model_not_ready"),
        UploadNotStored: (507, "insufficient_storage"),
        ArtifactError: (503, "model_not_ready"),
    }

    async def _simple(_: Request, exc: Exception) -> JSONResponse:
        status, code = next(simple[kind] for kind in type(exc).__mro__ if kind in simple)
        return _error(status, code, str(exc) or code.replace("_", " "))

    for exception in simple:
        app.add_exception_handler(exception, _simple)

    @app.exception_handler(Unauthenticated)
    async def _unauthenticated(_: Request, exc: Unauthenticated) -> JSONResponse:
        response = _error(401, "unauthenticated", str(exc))
        response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(ScoringTimeout)
    async def _timeout(_: Request, exc: ScoringTimeout) -> JSONResponse:
        response = _error(503, "scoring_timeout", str(exc))
        response.headers["Retry-After"] = "1"
        return response

    async def _database_unavailable(_: Request, exc: Exception) -> JSONResponse:
        # Nothing was written (the transaction failed); the pool reconnects by itself once the
        # database is back (pre-ping), so the client only has to retry.
        logger.error("database unavailable: %s", str(exc).splitlines()[0][:300])
        response = _error(503, "database_unavailable", "the database is unavailable; retry later")
        response.headers["Retry-After"] = str(DATABASE_RETRY_AFTER_S)
        return response

    for exception in (OperationalError, InterfaceError, PoolTimeout):
        app.add_exception_handler(exception, _database_unavailable)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_: Request, exc: RequestValidationError) -> Response:
        # FastAPI's own body, ASCII-escaped: an echoed input may hold half a surrogate pair,
        # which UTF-8 cannot encode (the default handler then fails with a 500).
        content = json.dumps({"detail": jsonable_encoder(exc.errors())}, ensure_ascii=True)
        return Response(content, status_code=422, media_type="application/json")

    @app.exception_handler(RateLimited)
    async def _rate_limited(_: Request, exc: RateLimited) -> JSONResponse:
        response = _error(429, "rate_limited", str(exc))
        response.headers["Retry-After"] = exc.retry_after_header
        return response

    @app.exception_handler(InvalidComment)
    async def _invalid_comment(_: Request, exc: InvalidComment) -> JSONResponse:
        return _error(422, "invalid_comment", str(exc), index=exc.index)

    @app.exception_handler(PerspectiveError)
    async def _perspective(_: Request, exc: PerspectiveError) -> JSONResponse:
        return JSONResponse(status_code=exc.code, content=exc.body())

    @app.exception_handler(NotSignedIn)
    async def _not_signed_in(request: Request, exc: NotSignedIn) -> Response:
        if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
            return RedirectResponse("/ui/login", status_code=303)
        return _error(401, "not_signed_in", str(exc))

    @app.exception_handler(CsrfRejected)
    async def _csrf(_: Request, exc: CsrfRejected) -> JSONResponse:
        return _error(403, "csrf_rejected", str(exc))

    @app.exception_handler(BulkDecisionError)
    async def _bulk(_: Request, exc: BulkDecisionError) -> JSONResponse:
        status = simple.get(type(exc.error), (422, ""))[0]
        return _error(
            status, "bulk_decision_failed", f"{exc}; nothing was written", index=exc.index
        )
