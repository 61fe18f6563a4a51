"""POST /v1/score: every task's labels and probabilities for one or many comments."""

from __future__ import annotations

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from model.explain import Explanation
from model.tasks import Task
from service.deps import ScoringClient, ScoringDep
from service.replies import suggestion_fields
from service.schemas import (
    AUTH_ERRORS,
    BODY_ERRORS,
    CommentScore,
    ModelInfo,
    ScoreRequest,
    ScoreResponse,
    SuggestionOut,
    TaskExplanation,
    WordWeightOut,
    error_responses,
)
from service.scoring import check_texts, explain_texts, prediction_fields

router = APIRouter(prefix="/v1", tags=["scoring"], responses=AUTH_ERRORS)


@router.post(
    "/score",
    response_model=ScoreResponse,
    summary="Score comments for sentiment, offensiveness, hate, questions, emotion and irony",
    responses={
        **BODY_ERRORS,
        **error_responses(
            (413, "More comments than the configured limit, or a body over the size limit."),
            (422, "Invalid JSON, wrong types, or an empty or too long comment."),
            (403, "The key's role may not score."),
        ),
    },
)
async def score(
    request: ScoreRequest,
    _: ScoringClient,
    scoring: ScoringDep,
) -> Response:
    """One model pass scores all tasks; thresholds come from the model, never from the request.

    Concurrent requests are scored together (micro-batching); the event loop never waits on the
    model or the database.
    """
    batcher, settings = scoring.batcher, scoring.settings
    items = request.items()
    texts = check_texts(
        [item.text for item in items], settings.api.max_chars, settings.api.max_comments
    )
    explanations: list[dict[Task, Explanation]] | None = None
    if request.explain:
        predictions, explanations = await explain_texts(
            batcher, texts, settings.api.max_explained, settings.api.explain_max_rows
        )
    else:
        predictions = await batcher.predict(texts)

    def with_suggestions() -> list[CommentScore]:
        every = [prediction_fields(p) for p in predictions]
        with scoring.sessions() as session:
            found = scoring.suggester.suggest_many(
                session,
                [(item.text, f["scores"], {}) for item, f in zip(items, every, strict=True)],
                request.suggest_replies,
            )
        return [
            CommentScore(
                id=item.id, suggestions=[SuggestionOut(**suggestion_fields(s)) for s in f], **fields
            )
            for item, fields, f in zip(items, every, found, strict=True)
        ]

    if request.suggest_replies:
        scored = await run_in_threadpool(with_suggestions)
    else:
        # The model's own output: already the right types, so no validation pass per comment.
        scored = [
            CommentScore.model_construct(
                id=item.id, labels=prediction.labels, scores=prediction.scores, suggestions=None
            )
            for item, prediction in zip(items, predictions, strict=True)
        ]
    if explanations is not None:
        for result, explained in zip(scored, explanations, strict=True):
            result.explanations = {
                task: TaskExplanation(
                    label=e.label, words=[WordWeightOut(**vars(w)) for w in e.words]
                )
                for task, e in explained.items()
            }
    scorer = batcher.scorer
    body = ScoreResponse(model=ModelInfo(name=scorer.name, version=scorer.version), results=scored)
    # Built and typed here, so FastAPI need not validate and encode it a second time.
    return Response(body.model_dump_json(), media_type="application/json")
