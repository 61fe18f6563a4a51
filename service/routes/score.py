"""POST /v1/score: every task's labels and probabilities for one or many comments."""

from __future__ import annotations

from fastapi import APIRouter

from service.deps import ScorerDep, ScoringClient, SettingsDep
from service.schemas import CommentScore, ModelInfo, ScoreRequest, ScoreResponse
from service.scoring import prediction_fields, score_texts

router = APIRouter(prefix="/v1", tags=["scoring"])


@router.post(
    "/score",
    response_model=ScoreResponse,
    summary="Score comments for sentiment, offensiveness, hate, questions, emotion and irony",
    responses={
        413: {"description": "More comments than the configured limit."},
        401: {"description": "No or unknown API key."},
        403: {"description": "The key's role may not score."},
        422: {"description": "Invalid JSON, wrong types, or an empty or too long comment."},
        503: {"description": "The model is not loaded."},
    },
)
def score(
    request: ScoreRequest, _: ScoringClient, scorer: ScorerDep, settings: SettingsDep
) -> ScoreResponse:
    """One model pass scores all tasks; thresholds come from the model, never from the request."""
    items = request.items()
    predictions = score_texts(
        scorer, [item.text for item in items], settings.api.max_chars, settings.api.max_comments
    )
    return ScoreResponse(
        model=ModelInfo(name=scorer.name, version=scorer.version),
        results=[
            CommentScore(id=item.id, **prediction_fields(prediction))
            for item, prediction in zip(items, predictions, strict=True)
        ],
    )
