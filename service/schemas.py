"""Request and response schemas of the scoring API; their descriptions make the OpenAPI page."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr, model_validator

from model.tasks import Task

EXAMPLE_SCORES: dict[str, Any] = {
    "sentiment": {"negative": 0.82, "neutral": 0.15, "positive": 0.03},
    "offensive": {"not-offensive": 0.93, "offensive": 0.07},
    "question": {"not-question": 0.12, "question": 0.88},
}


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

    @model_validator(mode="after")
    def _one_of(self) -> ScoreRequest:
        if (self.text is None) == (self.comments is None):
            raise ValueError("give either 'text' or 'comments', not both and not neither")
        if self.comments is not None and not self.comments:
            raise ValueError("'comments' is empty")
        return self

    def items(self) -> list[CommentIn]:
        return self.comments if self.comments is not None else [CommentIn(text=self.text or "")]


class CommentScore(BaseModel):
    id: str | None = Field(description="The comment's id as sent (null for a single 'text').")
    labels: dict[Task, str] = Field(
        description="Chosen label per task, after the model's calibrated thresholds."
    )
    scores: dict[Task, dict[str, float]] = Field(
        description="Per task, the probability of each label; they sum to 1 within a task.",
        json_schema_extra={"example": EXAMPLE_SCORES},
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
