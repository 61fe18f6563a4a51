"""POST /v1/score: every task's labels and probabilities for one or many comments."""

from __future__ import annotations

from fastapi import APIRouter

from service.deps import ScorerDep, ScoringClient, SessionDep, SettingsDep, SuggesterDep
from service.replies import suggestion_fields
from service.schemas import CommentScore, ModelInfo, ScoreRequest, ScoreResponse, SuggestionOut
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
    request: ScoreRequest,
    _: ScoringClient,
    scorer: ScorerDep,
    settings: SettingsDep,
    session: SessionDep,
    suggester: SuggesterDep,
) -> ScoreResponse:
    """One model pass scores all tasks; thresholds come from the model, never from the request."""
    items = request.items()
    predictions = score_texts(
        scorer, [item.text for item in items], settings.api.max_chars, settings.api.max_comments
    )
    results = []
    for item, prediction in zip(items, predictions, strict=True):
        fields = prediction_fields(prediction)
        suggestions = None
        if request.suggest_replies:
            found = suggester.suggest(
                session, item.text, fields["scores"], {}, request.suggest_replies
            )
            suggestions = [SuggestionOut(**suggestion_fields(s)) for s in found]
        results.append(CommentScore(id=item.id, suggestions=suggestions, **fields))
    return ScoreResponse(model=ModelInfo(name=scorer.name, version=scorer.version), results=results)
