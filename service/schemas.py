"""Request and response schemas of the scoring API; their descriptions make the OpenAPI page."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from fastapi import Path
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    model_validator,
)

from model.tasks import Task
from service.analytics import Report
from service.auth import Role
from service.queue import DecisionAction, View
from service.templates import Intent

EXAMPLE_SCORES: dict[str, Any] = {
    "sentiment": {"negative": 0.82, "neutral": 0.15, "positive": 0.03},
    "offensive": {"not-offensive": 0.93, "offensive": 0.07},
    "question": {"not-question": 0.12, "question": 0.88},
}


# Row ids are 32-bit integers in PostgreSQL (and 64-bit in SQLite): a larger id is refused with a
# 422 instead of reaching the database, which cannot take it.
MAX_ID = 2**31 - 1
RowId = Annotated[int, Field(ge=1, le=MAX_ID)]
PathId = Annotated[int, Path(ge=1, le=MAX_ID, description="The id (1 to 2^31 - 1).")]

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def unstorable(value: str) -> str | None:
    """Why the text cannot be stored, or None when it can."""
    if (found := _UNSTORABLE.search(value)) is None:
        return None
    what = "a NUL character" if found.group() == "\x00" else "an unpaired surrogate"
    return f"contains {what} at position {found.start()}"


def _storable(value: str) -> str:
    if (problem := unstorable(value)) is not None:
        raise ValueError(problem)
    return value


# Text that is stored: PostgreSQL cannot hold a NUL character, and no database (nor JSON in UTF-8)
# half of a surrogate pair; either is refused with a 422 that names the field.
StoredStr = Annotated[StrictStr, AfterValidator(_storable)]


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")

    code: str = Field(
        description="Machine-readable: unauthenticated, forbidden, not_found, invalid_comment, "
        "too_many_comments, body_too_large, scoring_timeout, database_unavailable, ..."
    )
    message: str = Field(description="What went wrong, for people.")


class ErrorResponse(BaseModel):
    """commentdesk's error body; some errors add fields to ``error`` (e.g. ``index``)."""

    error: ErrorDetail


class ValidationErrorItem(BaseModel):
    model_config = ConfigDict(extra="allow")

    loc: list[str | int] = Field(description="Where: 'body', 'query' or 'path', then the field.")
    msg: str
    type: str


class RequestValidationErrorOut(BaseModel):
    """A request that does not match the schema (FastAPI's shape)."""

    detail: list[ValidationErrorItem]


class MalformedRequestOut(BaseModel):
    """A body that cannot be parsed at all (e.g. not UTF-8)."""

    detail: str


ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "The body cannot be parsed (e.g. it is not UTF-8).",
    401: "No, malformed, unknown or revoked API key.",
    403: "The key's role may not do this.",
    404: "Not found.",
    409: "Conflicts with the item's state.",
    413: "The request body is over the size limit.",
    422: "The request does not match the schema, or a value is invalid.",
    429: "Over the key's rate limit; Retry-After says when to retry.",
    503: "The model is not loaded, scoring timed out or the database is unavailable; "
    "Retry-After says when to retry.",
}
ERROR_MODELS: dict[int, Any] = {
    400: MalformedRequestOut,
    422: RequestValidationErrorOut | ErrorResponse,
}


def error_responses(*statuses: int | tuple[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` of error statuses with their bodies; a ``(status, description)``
    pair replaces the generic description."""
    responses: dict[int | str, dict[str, Any]] = {}
    for entry in statuses:
        status, description = entry if isinstance(entry, tuple) else (entry, None)
        responses[status] = {
            "model": ERROR_MODELS.get(status, ErrorResponse),
            "description": description or ERROR_DESCRIPTIONS[status],
        }
    return responses


# Every route that needs an API key: no or a bad key, a role without the permission, a key over
# its rate, and a database that is away (keys are checked in it).
AUTH_ERRORS = error_responses(401, 403, 429, 503)
# Every route with a request body.
BODY_ERRORS = error_responses(400, 413, 422)


class CommentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: StrictStr | None = Field(
        default=None, max_length=256, description="Your id for the comment; echoed back."
    )
    text: StrictStr = Field(description="The comment as written (emoji, any script).")


class ScoreRequest(BaseModel):
    """Either one ``text`` or a list of ``comments``, not both."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"text": "@AmazonHelp my parcel never arrived, can you check?"},
                {
                    "comments": [
                        {"id": "c1", "text": "Love the new app!"},
                        {"id": "c2", "text": "where is my refund??"},
                    ]
                },
            ]
        },
    )

    text: StrictStr | None = Field(default=None, description="A single comment to score.")
    comments: list[CommentIn] | None = Field(
        default=None, description="Several comments (at most the configured limit, 256 by default)."
    )
    suggest_replies: int = Field(
        default=0, ge=0, le=20, description="Add the top k reply suggestions to each result."
    )
    explain: StrictBool = Field(
        default=False,
        description="Add word-level explanations (occlusion): per task, how much each word holds "
        "up the chosen label. Costs one model row per word.",
    )

    @model_validator(mode="after")
    def _one_of(self) -> ScoreRequest:
        if (self.text is None) == (self.comments is None):
            raise ValueError("give either 'text' or 'comments', not both and not neither")
        if self.comments is not None and not self.comments:
            raise ValueError("'comments' is empty")
        return self

    def items(self) -> list[CommentIn]:
        return self.comments if self.comments is not None else [CommentIn(text=self.text or "")]


class WordWeightOut(BaseModel):
    text: str = Field(description="The word as written; ``text[begin:end]`` of the comment.")
    begin: int = Field(description="Start offset in the comment (Unicode code points).")
    end: int = Field(description="End offset (exclusive).")
    weight: float = Field(
        description="Drop of the label's probability when the word is removed; negative when "
        "the word argues against the label."
    )


class TaskExplanation(BaseModel):
    label: str = Field(description="The label explained: the one chosen for the comment.")
    words: list[WordWeightOut] = Field(
        description="Every word in text order (in a very long comment, runs of words)."
    )


class CommentScore(BaseModel):
    id: str | None = Field(description="The comment's id as sent (null for a single 'text').")
    labels: dict[Task, str] = Field(
        description="Chosen label per task, after the model's calibrated thresholds."
    )
    scores: dict[Task, dict[str, float]] = Field(
        description="Per task, the probability of each label; they sum to 1 within a task.",
        json_schema_extra={"example": EXAMPLE_SCORES},
    )
    suggestions: list[SuggestionOut] | None = Field(
        default=None, description="Reply suggestions, when asked for."
    )
    explanations: dict[Task, TaskExplanation] | None = Field(
        default=None, description="Word-level explanations, when asked for."
    )


class ModelInfo(BaseModel):
    name: str = Field(description="Name of the served model.")
    version: str = Field(description="Version of the served model.")


class ScoreResponse(BaseModel):
    model: ModelInfo
    results: list[CommentScore] = Field(description="One entry per comment, in request order.")


class Health(BaseModel):
    status: str = Field(description="'ok' when the check passes.")
    detail: dict[str, Any] = Field(default_factory=dict)


class IncomingCommentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: StoredStr = Field(
        min_length=1,
        max_length=100,
        description="Network or channel, e.g. 'twitter', 'instagram:brandpage'.",
    )
    external_id: StoredStr = Field(
        min_length=1,
        max_length=256,
        description="The comment's id on its network; (source, external_id) is unique.",
    )
    text: StrictStr = Field(description="The comment as written.")
    author: StoredStr | None = Field(
        default=None, max_length=256, description="Author handle or name."
    )
    created_at: AwareDatetime | None = Field(
        default=None, description="When it was written (with time zone)."
    )
    url: StoredStr | None = Field(default=None, max_length=2048, description="Link to the comment.")
    parent_id: StoredStr | None = Field(
        default=None, max_length=256, description="External id of the post or comment it answers."
    )


class IngestRequest(BaseModel):
    """One comment, or up to 1,000 under ``comments``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "comments": [
                        {
                            "source": "twitter",
                            "external_id": "1790001",
                            "text": "@brand where is my refund?",
                            "author": "@ann",
                        }
                    ]
                }
            ]
        },
    )

    comments: list[IncomingCommentIn] = Field(min_length=1, description="The comments to store.")


class IngestResultOut(BaseModel):
    index: int = Field(description="Position in the request.")
    id: int = Field(description="commentdesk's id of the stored comment.")
    status: str = Field(
        description="'created', or 'duplicate' when (source, external_id) was already stored."
    )
    action: str = Field(description="The policy's action: hide, review, reply or none.")
    view: str = Field(
        description="Queue view: hidden, flagged, needs_reply, or none (no action needed)."
    )


class IngestResponse(BaseModel):
    results: list[IngestResultOut]
    created: int
    duplicates: int


class QueueItemOut(BaseModel):
    id: int = Field(description="The comment's id.")
    source: str
    external_id: str
    author: str | None
    text: str
    received_at: datetime
    view: str
    action: str = Field(description="The policy's action at ingest.")
    reasons: list[str] = Field(description="Why the policy chose the action.")
    priority: int = Field(description="Higher first; ties oldest first.")
    status: str = Field(description="open, claimed, resolved or auto.")
    escalated: bool
    visibility: str = Field(description="visible, hidden or rejected.")
    claimed_by: int | None = Field(description="Key id of the moderator holding the lease.")
    lease_expires_at: datetime | None
    labels: dict[str, str]
    scores: dict[str, dict[str, float]]
    model: ModelInfo
    suggestions: list[SuggestionOut] | None = Field(
        default=None, description="Ranked reply templates, rendered."
    )


class QueuePage(BaseModel):
    items: list[QueueItemOut]
    next_cursor: str | None = Field(
        description="Pass as 'cursor' for the next page; null on the last page."
    )


class ClaimRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    count: int = Field(
        default=10, ge=1, description="How many items to claim (at most the configured limit)."
    )
    view: View = Field(default=View.ALL, description="Claim only from this view.")


class DecisionIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"action": "reply", "reply_text": "Sorry! We've sent you a DM."},
                {"action": "relabel", "labels": {"sentiment": "negative"}},
            ]
        },
    )

    action: DecisionAction = Field(description="approve, hide, reject, reply, escalate or relabel.")
    note: StoredStr | None = Field(
        default=None, max_length=2000, description="Free text for the audit log."
    )
    reply_text: StoredStr | None = Field(
        default=None, max_length=5000, description="The reply (reply action only)."
    )
    template_id: RowId | None = Field(
        default=None, description="The template the reply came from (reply action only)."
    )
    labels: dict[str, str] | None = Field(
        default=None, description="Corrected labels, task -> label (relabel only)."
    )


class BulkDecisionIn(DecisionIn):
    id: RowId = Field(description="The comment's id.")


class BulkDecisionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decisions: list[BulkDecisionIn] = Field(
        min_length=1, description="Applied all together or not at all."
    )


class DecisionOut(BaseModel):
    id: int
    comment_id: int
    actor: str = Field(description="Name of the key that decided.")
    key_id: int
    action: str
    note: str | None
    reply_text: str | None
    labels: dict[str, str] | None
    created_at: datetime
    model: ModelInfo = Field(description="The model whose scores the moderator saw.")
    scores: dict[str, dict[str, float]] = Field(description="The model's scores at that moment.")


class CommentDetail(BaseModel):
    item: QueueItemOut
    url: str | None
    parent_id: str | None
    created_at: datetime | None
    history: list[DecisionOut] = Field(description="Every decision, oldest first.")


class StatsOut(BaseModel):
    views: dict[str, dict[str, int]] = Field(
        description="Per view ('all' included), counts per status."
    )
    decisions: dict[str, int] = Field(description="Decisions per action.")
    median_seconds_to_first_decision: float | None = Field(
        description="From receipt to the first decision."
    )
    daily: list[dict[str, Any]] = Field(
        description="Per day: comments and the share labelled negative, offensive, question."
    )
    report: Report = Field(
        description="The numbers of `commentdesk report database` (same code), for the comments "
        "within the since/until/source filters; the fields above ignore the filters."
    )


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: StoredStr = Field(min_length=1, max_length=100)
    role: Role = Field(description="admin, moderator, scorer or viewer.")


class KeyOut(BaseModel):
    id: int
    name: str
    role: str
    created_at: datetime
    revoked_at: datetime | None


class KeyCreated(KeyOut):
    key: str = Field(description="The secret; shown once, never stored.")


class SuggestionOut(BaseModel):
    template_id: int
    name: str
    text: str = Field(
        description="The rendered reply, plain text (escape it wherever HTML shows it)."
    )
    score: float = Field(
        description="Ranking score: intent match + example similarity + moderator usage."
    )
    reasons: list[str] = Field(description="Why this template was chosen.")
    missing_variables: list[str] = Field(
        description="Variables with no value and no fallback, left visible as {name}."
    )


class TemplateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: StoredStr = Field(min_length=1, max_length=200)
    intents: list[Intent] = Field(
        min_length=1, description="question, complaint, praise, abuse or generic."
    )
    body: StoredStr = Field(
        min_length=1, max_length=5000, description="Text with {variables} and {variable|fallback}."
    )
    examples: list[StoredStr] = Field(
        default_factory=list, max_length=50, description="Comments it fits."
    )
    enabled: bool = True
    language: StoredStr = Field(default="en", max_length=10)


class TemplateOut(BaseModel):
    """A stored template as it is (rows from before a check on input still read back)."""

    id: int
    name: str
    intents: list[Intent]
    body: str
    examples: list[str]
    enabled: bool
    language: str
    usage_count: int
    created_at: datetime
    updated_at: datetime


class SuggestRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "text": "@brand where is my refund?",
                    "k": 3,
                    "variables": {"author": "@ann", "brand": "Acme"},
                }
            ]
        },
    )

    text: StrictStr | None = Field(
        default=None, description="A comment to answer (or give comment_id)."
    )
    comment_id: RowId | None = Field(default=None, description="A stored comment to answer.")
    k: int = Field(default=3, ge=1, le=20, description="How many suggestions.")
    variables: dict[str, StoredStr] = Field(
        default_factory=dict, description="Values for {variables}, e.g. author, brand, agent."
    )

    @model_validator(mode="after")
    def _one_of(self) -> SuggestRequest:
        if (self.text is None) == (self.comment_id is None):
            raise ValueError("give either 'text' or 'comment_id'")
        return self


CommentScore.model_rebuild()
QueueItemOut.model_rebuild()


class BatchJobOut(BaseModel):
    id: int
    status: str = Field(description="queued, running, done or failed.")
    input_name: str
    text_column: str | None = Field(description="Found by name unless given at upload.")
    rows_total: int | None = Field(description="Rows in the file (known once the job starts).")
    rows_done: int
    rows_failed: int = Field(description="Rows set aside in the errors file.")
    rows_per_second: float | None
    eta_seconds: float | None = Field(description="Estimated time left while running.")
    error: str | None = Field(description="Why the job failed.")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    result_url: str | None = Field(description="Download link once done.")
    errors_url: str | None
