"""Tables of the service. Times are stored as UTC and read back timezone-aware on both databases."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class UTCDateTime(TypeDecorator[datetime]):
    """Naive UTC in the database, aware UTC in Python: SQLite keeps no time zones."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use timezone-aware UTC times")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: UTCDateTime}  # noqa: RUF012


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(20))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    salt: Mapped[str] = mapped_column(String(64))
    key_hash: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class UiSession(Base):
    """A signed-in moderator of the web page; the cookie holds a token, this row only its hash."""

    __tablename__ = "ui_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]


class ScoreSuggestion(Base):
    """A score a client says a comment should have (Perspective's ``comments:suggestscore``)."""

    __tablename__ = "score_suggestions"

    id: Mapped[int] = mapped_column(primary_key=True)
    key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"), index=True)
    actor: Mapped[str] = mapped_column(String(100))
    text: Mapped[str] = mapped_column(Text)
    attribute: Mapped[str] = mapped_column(String(64))
    task: Mapped[str] = mapped_column(String(32))
    # None when the value names no single label (a low score on a three-class task).
    label: Mapped[str | None] = mapped_column(String(32), default=None)
    value: Mapped[float] = mapped_column(Float)
    community_id: Mapped[str | None] = mapped_column(String(256), default=None)
    client_token: Mapped[str | None] = mapped_column(String(256), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class Comment(Base):
    __tablename__ = "comments"
    __table_args__ = (
        UniqueConstraint("source", "external_id", name="uq_comments_source_external_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(100))
    external_id: Mapped[str] = mapped_column(String(256))
    author: Mapped[str | None] = mapped_column(String(256), default=None)
    text: Mapped[str] = mapped_column(Text)
    url: Mapped[str | None] = mapped_column(String(2048), default=None)
    parent_id: Mapped[str | None] = mapped_column(String(256), default=None)
    created_at: Mapped[datetime | None] = mapped_column(default=None)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    model_name: Mapped[str] = mapped_column(String(100))
    model_version: Mapped[str] = mapped_column(String(50))
    scores: Mapped[dict[str, Any]]
    labels: Mapped[dict[str, Any]]

    queue_item: Mapped[QueueItem] = relationship(back_populates="comment", uselist=False)
    decisions: Mapped[list[Decision]] = relationship(
        back_populates="comment", order_by="Decision.id"
    )


class QueueItem(Base):
    """Where a comment stands in the moderation queue; one per comment."""

    __tablename__ = "queue_items"
    __table_args__ = (Index("ix_queue_items_order", "status", "view", "priority", "received_at"),)

    comment_id: Mapped[int] = mapped_column(
        ForeignKey("comments.id", ondelete="CASCADE"), primary_key=True
    )
    view: Mapped[str] = mapped_column(String(20))  # needs_reply, flagged, hidden, none
    action: Mapped[str] = mapped_column(String(20))  # the policy's action at ingest
    reasons: Mapped[list[Any]]
    priority: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20))  # open, resolved, auto
    escalated: Mapped[bool] = mapped_column(Boolean, default=False)
    received_at: Mapped[datetime]
    claimed_by: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    resolved_at: Mapped[datetime | None] = mapped_column(default=None)
    visibility: Mapped[str] = mapped_column(String(20))  # visible, hidden, rejected

    comment: Mapped[Comment] = relationship(back_populates="queue_item")


class Decision(Base):
    """The audit log: who did what, when, and what the model said at that moment."""

    __tablename__ = "decisions"

    id: Mapped[int] = mapped_column(primary_key=True)
    comment_id: Mapped[int] = mapped_column(
        ForeignKey("comments.id", ondelete="CASCADE"), index=True
    )
    key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id"))
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(20))
    note: Mapped[str | None] = mapped_column(Text, default=None)
    reply_text: Mapped[str | None] = mapped_column(Text, default=None)
    labels: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    template_id: Mapped[int | None] = mapped_column(
        ForeignKey("reply_templates.id", ondelete="SET NULL"), default=None
    )
    model_name: Mapped[str] = mapped_column(String(100))
    model_version: Mapped[str] = mapped_column(String(50))
    scores: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)

    comment: Mapped[Comment] = relationship(back_populates="decisions")


class ReplyTemplate(Base):
    """Saved replies with variables (filled in by the reply-template feature)."""

    __tablename__ = "reply_templates"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    intents: Mapped[list[Any]]
    body: Mapped[str] = mapped_column(Text)
    language: Mapped[str] = mapped_column(String(10), default="en")
    examples: Mapped[list[Any]] = mapped_column(JSON, default=list)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    usage_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class SourceCalibration(Base):
    """A source's own temperature and threshold for one task, fitted on its moderators'
    decisions (``commentdesk calibrate``); applied at ingest to that source's comments while
    the model it was fitted for is served."""

    __tablename__ = "source_calibrations"
    __table_args__ = (UniqueConstraint("source", "task", name="uq_source_calibrations_task"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(100))
    task: Mapped[str] = mapped_column(String(32))
    temperature: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float | None] = mapped_column(Float, default=None)
    model_name: Mapped[str] = mapped_column(String(100))
    model_version: Mapped[str] = mapped_column(String(50))
    labels_used: Mapped[int] = mapped_column(Integer)
    report: Mapped[dict[str, Any]]
    fitted_at: Mapped[datetime] = mapped_column(default=utcnow)


class BatchJob(Base):
    """An uploaded file scored in the background (``POST /v1/batches``); survives restarts."""

    __tablename__ = "batch_jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    status: Mapped[str] = mapped_column(String(20))  # queued, running, done, failed
    input_path: Mapped[str] = mapped_column(String(2048))
    output_path: Mapped[str] = mapped_column(String(2048))
    input_name: Mapped[str] = mapped_column(String(300), default="")
    text_column: Mapped[str | None] = mapped_column(String(200), default=None)
    key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"), default=None)
    rows_total: Mapped[int | None] = mapped_column(default=None)
    rows_done: Mapped[int] = mapped_column(default=0)
    rows_failed: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
