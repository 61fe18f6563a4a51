"""Reply templates (admin) and ranked, rendered reply suggestions."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from model.scorer import check_text
from service.db.tables import ReplyTemplate, utcnow
from service.deps import Admin, Moderator, ScorerDep, SessionDep, SettingsDep, SuggesterDep
from service.queue import CommentNotFound, get_comment
from service.replies import suggestion_fields
from service.schemas import (
    AUTH_ERRORS,
    BODY_ERRORS,
    PathId,
    SuggestionOut,
    SuggestRequest,
    TemplateIn,
    TemplateOut,
    error_responses,
)
from service.scoring import prediction_fields

router = APIRouter(prefix="/v1", tags=["replies"], responses=AUTH_ERRORS)
NO_TEMPLATE = (404, "No such template.")
NAME_TAKEN = (409, "Another template has this name.")


def _get(session: SessionDep, template_id: int) -> ReplyTemplate:
    template = session.get(ReplyTemplate, template_id)
    if template is None:
        raise CommentNotFound(f"template {template_id} does not exist")
    return template


def _out(template: ReplyTemplate) -> TemplateOut:
    return TemplateOut.model_validate(template, from_attributes=True)


class DuplicateName(Exception):
    """Another template has this name (names are unique)."""


def _saved(session: SessionDep, template: ReplyTemplate) -> TemplateOut:
    name = template.name
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise DuplicateName(f"a template named {name!r} already exists") from exc
    return _out(template)


@router.get("/templates", response_model=list[TemplateOut], summary="All reply templates")
def list_templates(_: Admin, session: SessionDep) -> list[TemplateOut]:
    return [_out(t) for t in session.scalars(select(ReplyTemplate).order_by(ReplyTemplate.id))]


@router.post(
    "/templates",
    response_model=TemplateOut,
    status_code=201,
    summary="Create a reply template",
    responses={**BODY_ERRORS, **error_responses(NAME_TAKEN)},
)
def create_template(request: TemplateIn, _: Admin, session: SessionDep) -> TemplateOut:
    template = ReplyTemplate(**request.model_dump(mode="json"))
    session.add(template)
    return _saved(session, template)


@router.get(
    "/templates/{template_id}",
    response_model=TemplateOut,
    summary="One reply template",
    responses=error_responses(NO_TEMPLATE, 422),
)
def read_template(template_id: PathId, _: Admin, session: SessionDep) -> TemplateOut:
    return _out(_get(session, template_id))


@router.put(
    "/templates/{template_id}",
    response_model=TemplateOut,
    summary="Replace a reply template",
    responses={**BODY_ERRORS, **error_responses(NO_TEMPLATE, NAME_TAKEN)},
)
def update_template(
    template_id: PathId, request: TemplateIn, _: Admin, session: SessionDep
) -> TemplateOut:
    template = _get(session, template_id)
    for key, value in request.model_dump(mode="json").items():
        setattr(template, key, value)
    template.updated_at = utcnow()
    return _saved(session, template)


@router.delete(
    "/templates/{template_id}",
    status_code=204,
    summary="Delete a reply template",
    responses=error_responses(NO_TEMPLATE, 422),
)
def delete_template(template_id: PathId, _: Admin, session: SessionDep) -> None:
    session.delete(_get(session, template_id))
    session.commit()


@router.post(
    "/replies/suggest",
    response_model=list[SuggestionOut],
    summary="The best reply templates for a comment, filled in",
    responses={
        **BODY_ERRORS,
        **error_responses(
            (404, "No such comment."),
            (422, "Wrong types, or an empty or too long text."),
        ),
    },
)
def suggest(
    request: SuggestRequest,
    _: Moderator,
    session: SessionDep,
    scorer: ScorerDep,
    suggester: SuggesterDep,
    settings: SettingsDep,
) -> list[SuggestionOut]:
    """Ranked by the comment's predicted intents, similarity to each template's examples and how
    often moderators sent the template for such comments."""
    if request.comment_id is not None:
        comment = get_comment(session, request.comment_id)
        text, scores = comment.text, comment.scores
        variables = {"author": comment.author or "", **request.variables}
    else:
        text = check_text(request.text, settings.api.max_chars)
        fields = prediction_fields(scorer.predict([text])[0])
        scores, variables = fields["scores"], dict(request.variables)
    suggestions = suggester.suggest(session, text, scores, variables, request.k)
    return [SuggestionOut(**suggestion_fields(s)) for s in suggestions]
