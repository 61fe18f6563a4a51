"""Perspective-compatible methods and their discovery document (see docs/perspective.md).

Requests and errors follow Google's dialect, not commentdesk's: bodies are parsed here so that
bad input answers 400 with Google's error shape. The comment is never stored or logged by
``analyze`` (``doNotStore`` or not); ``suggestscore`` keeps the suggestion as moderator feedback.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, APIKeyQuery
from starlette.concurrency import run_in_threadpool

from model.tasks import LABELS
from service.auth import Permission, Principal, Unauthenticated
from service.db.tables import ScoreSuggestion
from service.deps import BatcherDep, LanguagesDep, SessionsDep, bearer, principal_of
from service.perspective import (
    AnalyzeRequest,
    AnalyzeResponse,
    GoogleError,
    PerspectiveError,
    SuggestRequest,
    SuggestResponse,
    attribute,
    comment_text,
    discovery_document,
    inline_schema,
    languages_for,
    parse,
    sentences,
)
from service.schemas import error_responses

router = APIRouter(tags=["perspective"])
VERSION = "v1alpha1"
# How Perspective clients send their key; documented here, read from the request below.
key_query = APIKeyQuery(name="key", auto_error=False, description="A scoring API key.")
key_header = APIKeyHeader(name="X-Goog-Api-Key", auto_error=False, description="A scoring API key.")


def _body(model: type[AnalyzeRequest | SuggestRequest]) -> dict[str, Any]:
    """The request body as documented: the route parses it itself, the Google way."""
    content = {"application/json": {"schema": inline_schema(model)}}
    return {"requestBody": {"required": True, "content": content}}


# Google's error shape for the dialect's own errors; commentdesk's for a body over the size limit,
# a key over its rate, a model that is not loaded and a scoring time-out.
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "model": GoogleError,
        "description": "Malformed request, empty or too long comment, unknown attribute, "
        "unsupported language, or an unknown or revoked key (INVALID_ARGUMENT).",
    },
    403: {
        "model": GoogleError,
        "description": "No key, or a key whose role may not score (PERMISSION_DENIED).",
    },
    **error_responses(413, 429, 503),
}


async def perspective_client(
    request: Request,
    query_key: Annotated[str | None, Security(key_query)],
    header_key: Annotated[str | None, Security(key_header)],
    _: Annotated[Any, Security(bearer)],
) -> Principal:
    """A scoring key sent Perspective's way (``?key=``, ``X-Goog-Api-Key``) or as a bearer token."""
    key = query_key or header_key
    authorization = f"Bearer {key}" if key else request.headers.get("authorization")
    if not authorization:
        raise PerspectiveError("The request is missing a valid API key.", 403, "PERMISSION_DENIED")
    try:
        principal = await principal_of(request, authorization)
    except Unauthenticated:
        raise PerspectiveError("API key not valid. Please pass a valid API key.") from None
    if not principal.can(Permission.SCORE):
        raise PerspectiveError(
            f"The caller does not have permission: role {principal.role.value!r} may not score.",
            403,
            "PERMISSION_DENIED",
        )
    return principal


PerspectiveClient = Annotated[Principal, Depends(perspective_client)]


@router.post(
    f"/{VERSION}/comments:analyze",
    summary="Perspective AnalyzeComment",
    response_model=AnalyzeResponse,
    responses=ERRORS,
    openapi_extra=_body(AnalyzeRequest),
)
async def analyze(
    request: Request, _: PerspectiveClient, batcher: BatcherDep, detector: LanguagesDep
) -> JSONResponse:
    """Scores of the requested attributes for one comment, as Perspective answers them."""
    body = parse(AnalyzeRequest, await request.body())
    text = comment_text(body.comment)
    if not body.requestedAttributes:
        raise PerspectiveError("Must request at least one attribute.")
    names = list(body.requestedAttributes)
    mapped = {name: attribute(name, batcher.scorer.tasks) for name in names}
    languages, detected = await run_in_threadpool(
        languages_for, body.languages, text, names, detector
    )  # the detector's model loads on first use: off the event loop
    spans = sentences(text) if body.spanAnnotations else []
    predictions = await batcher.predict([text, *(text[begin:end] for begin, end in spans)])
    scores: dict[str, Any] = {}
    for name, parameters in body.requestedAttributes.items():
        task, label = mapped[name].task, mapped[name].label
        threshold = parameters.scoreThreshold or 0.0
        value = predictions[0].scores[task][label]
        if value < threshold:
            continue  # Perspective leaves out scores below the requested threshold
        result: dict[str, Any] = {"summaryScore": {"value": value, "type": "PROBABILITY"}}
        if spans:
            result["spanScores"] = [
                {"begin": begin, "end": end, "score": {"value": span_value, "type": "PROBABILITY"}}
                for (begin, end), prediction in zip(spans, predictions[1:], strict=True)
                if (span_value := prediction.scores[task][label]) >= threshold
            ]
        scores[name] = result
    answer: dict[str, Any] = {
        "attributeScores": scores,
        "languages": languages,
        "detectedLanguages": detected,
    }
    if body.clientToken is not None:
        answer["clientToken"] = body.clientToken
    return JSONResponse(answer)


@router.post(
    f"/{VERSION}/comments:suggestscore",
    summary="Perspective SuggestCommentScore",
    response_model=SuggestResponse,
    responses=ERRORS,
    openapi_extra=_body(SuggestRequest),
)
async def suggest_score(
    request: Request,
    client: PerspectiveClient,
    batcher: BatcherDep,
    detector: LanguagesDep,
    sessions: SessionsDep,
) -> JSONResponse:
    """Keep the client's score as moderator feedback (``commentdesk feedback export``)."""
    body = parse(SuggestRequest, await request.body())
    text = comment_text(body.comment, stored=True)
    if not body.attributeScores:
        raise PerspectiveError("Must suggest a score for at least one attribute.")
    names = list(body.attributeScores)
    languages, detected = await run_in_threadpool(
        languages_for, body.languages, text, names, detector
    )  # the detector's model loads on first use: off the event loop
    rows = []
    for name, suggested in body.attributeScores.items():
        mapped = attribute(name, batcher.scorer.tasks)
        if suggested.summaryScore is None:
            raise PerspectiveError(f"Attribute {name}: a summaryScore is required.")
        value = suggested.summaryScore.value
        others = [label for label in LABELS[mapped.task] if label != mapped.label]
        # A high score names the attribute's label; a low one names a label only when the task
        # has just one other (not-offensive, not-hate, ...), never on three-class sentiment.
        label = mapped.label if value >= 0.5 else (others[0] if len(others) == 1 else None)
        rows.append(
            ScoreSuggestion(
                key_id=client.key_id,
                actor=client.name,
                text=text,
                attribute=name,
                task=mapped.task.value,
                label=label,
                value=value,
                community_id=body.communityId,
                client_token=body.clientToken,
            )
        )

    def store() -> None:
        with sessions() as session:
            session.add_all(rows)
            session.commit()

    await run_in_threadpool(store)
    answer: dict[str, Any] = {"detectedLanguages": detected, "requestedLanguages": languages}
    if body.clientToken is not None:
        answer["clientToken"] = body.clientToken
    return JSONResponse(answer)


@router.get(
    "/$discovery/rest",
    summary="Google API discovery document of the Perspective-compatible methods",
    response_model=dict[str, Any],
    responses={404: {"model": GoogleError, "description": "Unknown version (NOT_FOUND)."}},
)
async def discovery(
    request: Request,
    version: Annotated[str, Query(description="The API version: v1alpha1.")] = VERSION,
) -> JSONResponse:
    """The discovery document, with ``rootUrl`` pointing at this server as the client sees it."""
    if version != VERSION:
        raise PerspectiveError(
            f"Discovery document not found for version {version}.", 404, "NOT_FOUND"
        )
    return JSONResponse(discovery_document(str(request.base_url)))
