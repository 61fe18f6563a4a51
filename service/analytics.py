"""The numbers of the analytics report, from a scored export or the service database.

``commentdesk report`` and ``GET /v1/stats`` both call :func:`build_report`, so the HTML page and
the API always agree. This module imports only pydantic at import time (the API schemas use its
models); pandas and spaCy are imported when a report is built, so ``serve`` starts as before.
"""

from __future__ import annotations

import html
import itertools
import logging
import math
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from model.tasks import LABELS, Task

if TYPE_CHECKING:
    import pandas as pd
    from sqlalchemy.orm import Session

logger = logging.getLogger(__name__)

# Where the common exports keep each field (compared lower-cased); the first one present wins.
TIME_COLUMNS = (
    "created_at", "created_time", "timestamp", "date", "time", "published_at", "posted_at",
    "datetime", "created", "date_time",
)  # fmt: skip
SOURCE_COLUMNS = (
    "source", "brand", "page", "channel", "account", "page_name", "brand_name", "profile",
    "network", "platform",
)  # fmt: skip
LIKES_COLUMNS = (
    "likes", "like_count", "likes_count", "favorite_count", "favourite_count", "reactions",
    "reaction_count", "reactions_count", "favorites", "score",
)  # fmt: skip
REPLIED_COLUMNS = ("replied_at", "first_reply_at", "first_response_at", "answered_at")
REPORT_TASKS = (Task.SENTIMENT, Task.OFFENSIVE, Task.HATE, Task.QUESTION)
# Terms are counted on at most this many comments per group (the most recent), to bound the time.
TERM_TEXTS = 20_000
TOP_TERMS = 15
TOP_SOURCES = 15
EXAMPLES = 10
EXAMPLE_CHARS = 500
REPLY_BUCKETS = (
    ("< 15 min", 15 * 60),
    ("15-60 min", 3600),
    ("1-4 h", 4 * 3600),
    ("4-24 h", 24 * 3600),
    ("1-3 days", 3 * 86400),
    ("> 3 days", math.inf),
)
_EPOCH = re.compile(r"^\d{9,13}(\.\d+)?$")
MAX_TIME_CHARS = 64  # longer values are no time stamp (and would make dateutil slow)


class ReportInputError(ValueError):
    """The input as a whole cannot make a report: missing, empty, unreadable or not scored."""


class FilterError(ReportInputError):
    """A filter (``since``, ``until``) is not a date or the window is empty; ``name`` says which."""

    def __init__(self, name: str, message: str):
        super().__init__(message)
        self.name = name


# ---------------------------------------------------------------------------------------------
# The numbers (pydantic models: the API documents them as they are)


class Shares(BaseModel):
    comments: int = Field(description="Comments counted.")
    negative_share: float | None = Field(
        description="Share labelled negative (sentiment), of those with a sentiment label."
    )
    neutral_share: float | None = Field(description="Share labelled neutral.")
    positive_share: float | None = Field(description="Share labelled positive.")
    offensive_share: float | None = Field(description="Share labelled offensive.")
    hate_share: float | None = Field(description="Share labelled hate.")
    questions: int = Field(description="Comments labelled question.")
    questions_answered: int = Field(description="Of those, how many got a reply (at any time).")


class DayStats(Shares):
    day: date = Field(description="The day (UTC) the comments were written.")


class ReplyBucket(BaseModel):
    label: str
    count: int


class ReplyTimes(BaseModel):
    replies: int = Field(description="Comments with a first reply and a valid time to it.")
    median_seconds: float | None = Field(description="Median time from comment to first reply.")
    p90_seconds: float | None = Field(description="90th percentile (linear interpolation).")
    buckets: list[ReplyBucket] = Field(description="How many first replies took how long.")


class SourceStats(BaseModel):
    source: str = Field(description="The source, brand or page.")
    comments: int
    negative_share: float | None = Field(description="Share labelled negative.")
    questions: int = Field(description="Comments labelled question.")


class TermCount(BaseModel):
    term: str
    comments: int = Field(description="Comments that contain it (once per comment).")


class TermGroup(BaseModel):
    comments: int = Field(description="Comments in the group.")
    counted: int = Field(description="Comments whose terms were counted (the most recent ones).")
    words: list[TermCount] = Field(description="Most frequent words, stop words removed.")
    phrases: list[TermCount] = Field(description="Most frequent two-word phrases.")


class Example(BaseModel):
    time: datetime
    source: str | None
    text: str = Field(description=f"The comment, cut at {EXAMPLE_CHARS} characters; plain text.")
    negative: float | None = Field(description="P(negative).")
    positive: float | None = Field(description="P(positive).")
    likes: float | None


class Report(BaseModel):
    """What ``commentdesk report`` draws; ``GET /v1/stats`` returns it for the database."""

    input: str = Field(description="'database', or the export's file name.")
    comments: int = Field(description="Comments in the report (after the filters).")
    since: datetime | None = Field(description="Filter: comments written at or after this time.")
    until: datetime | None = Field(description="Filter: comments written before this time.")
    source: str | None = Field(description="Filter: only this source.")
    first_day: date | None
    last_day: date | None
    columns: dict[str, str | None] = Field(
        description="The input's columns used for time, source, text, likes and replied_at."
    )
    skipped: dict[str, int] = Field(
        description="Rows left out (or values ignored) and why: unreadable rows, times, likes..."
    )
    notes: list[str] = Field(description="What the reader should know, e.g. a cap on terms.")
    total: Shares = Field(description="The whole period.")
    daily: list[DayStats] = Field(description="Per day with comments, oldest first.")
    reply_time: ReplyTimes = Field(description="Time from a comment to its first reply.")
    sources: list[SourceStats] = Field(description=f"The {TOP_SOURCES} sources with most comments.")
    terms: dict[str, TermGroup] = Field(
        description="Top terms of the negative comments ('negative') and the questions "
        "('question'); spaCy's English tokenizer; URLs, @handles, numbers, punctuation removed."
    )
    most_negative: list[Example] = Field(description="Highest P(negative) first.")
    most_liked: list[Example] = Field(
        description="Most likes first; the most positive when there are no likes."
    )
    most_liked_by: Literal["likes", "positive"]


# ---------------------------------------------------------------------------------------------
# Filters


@dataclass(frozen=True)
class Filters:
    since: datetime | None = None
    until: datetime | None = None
    source: str | None = None


def parse_when(value: str, end: bool = False, name: str = "since") -> datetime:
    """An ISO date or date-time as aware UTC. A date alone means the start of that day, or with
    ``end`` the start of the next one, so that ``until=2026-11-27`` includes the 27th. A time
    without a zone is UTC."""
    text = value.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            if end:
                if day == date.max:
                    return datetime.max.replace(tzinfo=UTC)
                day += timedelta(days=1)
            return datetime.combine(day, time(), UTC)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise FilterError(
            name,
            f"{name}: {value!r} is no date (2026-11-27) or date-time (2026-11-27T14:00:00+01:00)",
        ) from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # an offset pushes it past year 1 or 9999
        return (datetime.min if moment.year == 1 else datetime.max).replace(tzinfo=UTC)


def make_filters(
    since: str | None = None, until: str | None = None, source: str | None = None
) -> Filters:
    """The filters of the command line and the API, checked the same way."""
    start = parse_when(since) if since else None
    end = parse_when(until, end=True, name="until") if until else None
    if start is not None and end is not None and start >= end:
        raise FilterError("until", f"since ({since}) must be before until ({until})")
    return Filters(start, end, source)


# ---------------------------------------------------------------------------------------------
# Loading: every input becomes one table with the same columns


@dataclass
class Comments:
    """The input as one table: ``time`` (UTC), ``source``, ``text``, ``likes``, ``replied_at``,
    one label column per report task and ``p_negative``/``p_positive``."""

    frame: pd.DataFrame
    input: str
    columns: dict[str, str | None]
    skipped: Counter[str] = field(default_factory=Counter)
    has_likes: bool = False


@dataclass
class _Columns:
    """Values gathered row by row, before they become typed columns."""

    time: list[Any] = field(default_factory=list)
    source: list[Any] = field(default_factory=list)
    text: list[Any] = field(default_factory=list)
    likes: list[Any] = field(default_factory=list)
    replied: list[Any] = field(default_factory=list)
    labels: dict[Task, list[Any]] = field(default_factory=lambda: {t: [] for t in REPORT_TASKS})
    negative: list[Any] = field(default_factory=list)
    positive: list[Any] = field(default_factory=list)


def load_export(
    path: Path,
    time_column: str | None = None,
    source_column: str | None = None,
    text_column: str | None = None,
) -> Comments:
    """A file written by ``commentdesk score`` (any of its formats). Unreadable rows and values
    are counted in ``skipped``; a file that cannot make a report raises :class:`ReportInputError`."""
    from service.batch import BatchInputError, file_type, open_source

    try:
        kind = file_type(path)
        with open_source(path, kind) as source:
            rows = source.rows
            skipped: Counter[str] = Counter()
            first = list(_first_record(rows, skipped))
            if source.columns is not None:
                names = source.columns
            elif first:
                names = list(first[-1])
            else:
                names = []
            flat = kind.format != "jsonl"
            used = _find_columns(path, names, flat, time_column, source_column, text_column)
            values = _Columns()
            records = itertools.chain(first, _records(rows, skipped))
            for count, record in enumerate(records, start=1):
                _gather(values, record, used, flat)
                if count % 200_000 == 0:
                    logger.info("read %d rows of %s", count, path.name)
    except BatchInputError as exc:
        raise ReportInputError(str(exc)) from exc
    except (OSError, EOFError, UnicodeError) as exc:  # e.g. a .gz that is not gzip, truncated
        raise ReportInputError(f"{path}: cannot read it: {exc}") from exc
    if not values.time:
        raise ReportInputError(f"{path} has no comments (no readable rows)")
    frame = _frame(values, skipped)
    if frame.empty:
        example = next((str(v)[:40] for v in values.time if v not in (None, "")), "")
        raise ReportInputError(
            f"{path}: no row has a readable time in column {used['time']!r} (e.g. {example!r}); "
            "use ISO 8601 (2026-11-27T14:00:00Z) or Unix seconds, or choose another column "
            "with --time-column"
        )
    return Comments(frame, path.name, used, skipped, has_likes=used["likes"] is not None)


def _first_record(rows: Iterator[Any], skipped: Counter[str]) -> Iterator[dict[str, Any]]:
    """The rows up to the first readable one (JSONL: its keys name the columns)."""
    for row in rows:
        if row.record is not None:
            yield row.record
            return
        skipped["unreadable row"] += 1


def _records(rows: Iterator[Any], skipped: Counter[str]) -> Iterator[dict[str, Any]]:
    for row in rows:
        if row.record is None:
            skipped["unreadable row"] += 1
        else:
            yield row.record


def _find_columns(
    path: Path,
    names: Sequence[str],
    flat: bool,
    time_column: str | None,
    source_column: str | None,
    text_column: str | None,
) -> dict[str, str | None]:
    from service.batch import TEXT_COLUMNS, find_column

    if not names:
        raise ReportInputError(f"{path} has no comments (no readable rows)")
    scored = any(n.startswith("label.") for n in names) if flat else "labels" in names
    if not scored:
        expected = "label.<task> columns" if flat else "'labels' field"
        raise ReportInputError(
            f"{path} has no {expected}: is it a scored export? Score it first with "
            f"`commentdesk score {path.name}`"
        )
    used = {
        "time": find_column(names, time_column, TIME_COLUMNS, "time"),
        "source": find_column(names, source_column, SOURCE_COLUMNS, "source"),
        "text": find_column(names, text_column, TEXT_COLUMNS, "text"),
        "likes": find_column(names, None, LIKES_COLUMNS, "likes"),
        "replied_at": find_column(names, None, REPLIED_COLUMNS, "replied_at"),
    }
    if used["time"] is None:
        raise ReportInputError(
            f"{path}: no time column found (looked for {', '.join(TIME_COLUMNS)}; columns: "
            f"{', '.join(names)}); choose one with --time-column"
        )
    return used


def _gather(
    values: _Columns, record: dict[str, Any], used: dict[str, str | None], flat: bool
) -> None:
    def get(role: str) -> Any:
        name = used[role]
        return None if name is None else record.get(name)

    values.time.append(get("time"))
    values.source.append(get("source"))
    values.text.append(get("text"))
    values.likes.append(get("likes"))
    values.replied.append(get("replied_at"))
    if flat:
        for task in REPORT_TASKS:
            values.labels[task].append(record.get(f"label.{task.value}"))
        values.negative.append(record.get("score.sentiment.negative"))
        values.positive.append(record.get("score.sentiment.positive"))
    else:
        _gather_nested(values, record.get("labels"), record.get("scores"))


def _gather_nested(values: _Columns, labels: Any, scores: Any) -> None:
    """The API's shape (JSONL exports and the database): ``labels`` and ``scores`` objects."""
    labels = labels if isinstance(labels, dict) else {}
    sentiment = scores.get("sentiment") if isinstance(scores, dict) else None
    sentiment = sentiment if isinstance(sentiment, dict) else {}
    for task in REPORT_TASKS:
        values.labels[task].append(labels.get(task.value))
    values.negative.append(sentiment.get("negative"))
    values.positive.append(sentiment.get("positive"))


def load_database(session: Session, filters: Filters) -> Comments:
    """The service's comments; the time of a comment is when it was written (``created_at``),
    else when it was received; replied when a moderator's first ``reply`` decision was made."""
    from sqlalchemy import func, select

    from service.db.tables import Comment, Decision

    first_reply = (
        select(Decision.comment_id, func.min(Decision.created_at).label("replied_at"))
        .where(Decision.action == "reply")
        .group_by(Decision.comment_id)
        .subquery()
    )
    written = func.coalesce(Comment.created_at, Comment.received_at)
    query = select(
        written,
        Comment.source,
        Comment.text,
        Comment.labels,
        Comment.scores,
        first_reply.c.replied_at,
    ).outerjoin(first_reply, first_reply.c.comment_id == Comment.id)
    # The same filters are applied again to the table; here they only keep the query small.
    if filters.since is not None:
        query = query.where(written >= filters.since)
    if filters.until is not None:
        query = query.where(written < filters.until)
    if filters.source is not None:
        query = query.where(Comment.source == filters.source)
    values = _Columns()
    for when, source, text, labels, scores, replied in session.execute(query):
        values.time.append(when)
        values.source.append(source)
        values.text.append(text)
        values.likes.append(None)
        values.replied.append(replied)
        _gather_nested(values, labels, scores)
    used: dict[str, str | None] = {
        "time": "created_at (else received_at)",
        "source": "source",
        "text": "text",
        "likes": None,
        "replied_at": "first reply decision",
    }
    skipped: Counter[str] = Counter()
    return Comments(_frame(values, skipped), "database", used, skipped)


def _frame(values: _Columns, skipped: Counter[str]) -> pd.DataFrame:
    """Typed columns; rows without a readable time are dropped (and counted), unreadable
    values of other columns become missing (and are counted)."""
    import pandas as pd

    frame = pd.DataFrame(
        {
            "time": parse_times(values.time),
            "source": [_text_or_none(v) for v in values.source],
            "text": [_text_or_none(v) or "" for v in values.text],
            "likes": _numbers(values.likes, 0, math.inf, "unreadable likes", skipped),
            "replied_at": parse_times(values.replied),
            "p_negative": _numbers(values.negative, 0, 1, "unreadable score", skipped),
            "p_positive": _numbers(values.positive, 0, 1, "unreadable score", skipped),
        }
    )
    for task, labels in values.labels.items():
        known = set(LABELS[task])
        column = [v if isinstance(v, str) and v in known else None for v in labels]
        unknown = sum(
            1 for v, c in zip(labels, column, strict=True) if c is None and v not in (None, "")
        )
        if unknown:
            skipped[f"unknown {task.value} label"] += unknown
        frame[task.value] = pd.Series(column, dtype=object)
    unparsed_replies = sum(
        1
        for v, t in zip(values.replied, frame["replied_at"], strict=True)
        if v not in (None, "") and pd.isna(t)
    )
    if unparsed_replies:
        skipped["unreadable replied_at"] += unparsed_replies
    no_time = int(frame["time"].isna().sum())
    if no_time:
        skipped["unreadable time"] += no_time
    return frame[frame["time"].notna()].reset_index(drop=True)


def _text_or_none(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = value if isinstance(value, str) else str(value)
    return text.strip() or None


def _numbers(values: list[Any], low: float, high: float, reason: str, skipped: Counter[str]) -> Any:
    """Floats within [low, high]; anything else (text, inf, negative) becomes NaN, counted."""
    import numpy as np
    import pandas as pd

    raw = pd.Series(values, dtype=object)
    numbers = pd.to_numeric(raw, errors="coerce").astype(float)
    numbers = numbers.where(np.isfinite(numbers) & (numbers >= low) & (numbers <= high))
    given = raw.map(
        lambda v: v is not None and v != "" and not (isinstance(v, float) and math.isnan(v))
    )
    bad = int((given & numbers.isna()).sum())
    if bad:
        skipped[reason] += bad
    return numbers


def parse_times(values: Sequence[Any]) -> pd.Series:
    """Aware UTC times from ISO 8601 strings (a time without a zone is UTC), Unix seconds or
    milliseconds, datetimes, or the other formats dateutil reads; NaT where none fits."""
    import pandas as pd

    result = pd.Series(pd.NaT, index=range(len(values)), dtype="datetime64[us, UTC]")
    texts: dict[int, str] = {}
    epochs: dict[int, float] = {}
    for i, value in enumerate(values):
        if isinstance(value, datetime):
            texts[i] = value.isoformat()
        elif isinstance(value, int | float) and not isinstance(value, bool):
            if math.isfinite(value) and value > 0:
                epochs[i] = float(value)
        elif isinstance(value, str) and 0 < len(value.strip()) <= MAX_TIME_CHARS:
            text = value.strip()
            if _EPOCH.match(text):
                epochs[i] = float(text)
            else:
                texts[i] = text
    if epochs:
        seconds = pd.Series(epochs)
        seconds = seconds.where(seconds < 1e11, seconds / 1000)  # milliseconds
        result.loc[seconds.index] = pd.to_datetime(seconds, unit="s", utc=True, errors="coerce")
    if texts:
        strings = pd.Series(texts)
        parsed = pd.to_datetime(strings, utc=True, errors="coerce", format="ISO8601")
        missing = parsed.isna()
        if missing.any():
            parsed[missing] = pd.to_datetime(
                strings[missing], utc=True, errors="coerce", format="mixed"
            )
        result.loc[parsed.index] = parsed
    return result


# ---------------------------------------------------------------------------------------------
# The report


def build_report(comments: Comments, filters: Filters = Filters()) -> Report:
    """Every number of the report, from the table of :func:`load_export` or
    :func:`load_database`, for the comments within ``filters``."""
    frame = _filtered(comments.frame, filters)
    notes = []
    most_liked_by: Literal["likes", "positive"] = "likes" if comments.has_likes else "positive"
    if not comments.has_likes:
        notes.append("No likes in the input: the most positive comments are shown instead.")
    if comments.columns.get("source") is None:
        notes.append("No source column: the comments are not broken down by source.")
    if comments.columns.get("replied_at") is None:
        notes.append("No replied_at column: questions answered and reply times are unknown.")
    terms = {
        "negative": _term_group(frame[frame[Task.SENTIMENT.value] == "negative"]),
        "question": _term_group(frame[frame[Task.QUESTION.value] == "question"]),
    }
    if any(group.counted < group.comments for group in terms.values()):
        notes.append(f"Terms are counted on the {TERM_TEXTS:,} most recent comments of each group.")
    skipped = Counter(comments.skipped)
    reply_time, early = _reply_times(frame)
    if early:  # e.g. a created_at in the future: the comment counts as answered, its time not
        skipped["reply before the comment"] += early
    days = frame["time"].dt.date
    return Report(
        input=comments.input,
        comments=len(frame),
        since=filters.since,
        until=filters.until,
        source=filters.source,
        first_day=days.min() if len(frame) else None,
        last_day=days.max() if len(frame) else None,
        columns=comments.columns,
        skipped=dict(sorted(skipped.items())),
        notes=notes,
        total=Shares(**_shares(frame)),
        daily=[DayStats(day=day, **_shares(group)) for day, group in frame.groupby(days)],
        reply_time=reply_time,
        sources=_sources(frame),
        terms=terms,
        most_negative=_examples(frame, "p_negative"),
        most_liked=_examples(frame, "likes" if comments.has_likes else "p_positive"),
        most_liked_by=most_liked_by,
    )


def _filtered(frame: pd.DataFrame, filters: Filters) -> pd.DataFrame:
    import pandas as pd

    keep = pd.Series(True, index=frame.index)
    if filters.since is not None:
        keep &= frame["time"] >= pd.Timestamp(filters.since)
    if filters.until is not None:
        keep &= frame["time"] < pd.Timestamp(filters.until)
    if filters.source is not None:
        keep &= frame["source"] == filters.source
    return frame[keep]


def _share(labels: pd.Series, label: str) -> float | None:
    known = int(labels.notna().sum())
    return round(int((labels == label).sum()) / known, 4) if known else None


def _shares(frame: pd.DataFrame) -> dict[str, Any]:
    sentiment = frame[Task.SENTIMENT.value]
    questions = frame[Task.QUESTION.value] == "question"
    return {
        "comments": len(frame),
        "negative_share": _share(sentiment, "negative"),
        "neutral_share": _share(sentiment, "neutral"),
        "positive_share": _share(sentiment, "positive"),
        "offensive_share": _share(frame[Task.OFFENSIVE.value], "offensive"),
        "hate_share": _share(frame[Task.HATE.value], "hate"),
        "questions": int(questions.sum()),
        "questions_answered": int((questions & frame["replied_at"].notna()).sum()),
    }


def _reply_times(frame: pd.DataFrame) -> tuple[ReplyTimes, int]:
    """The times to first reply, and how many replies came before their comment (ignored)."""
    import numpy as np

    waits = (frame["replied_at"] - frame["time"]).dt.total_seconds().dropna()
    early = int((waits < 0).sum())
    seconds = waits[waits >= 0].to_numpy()
    edges = [0.0, *(limit for _, limit in REPLY_BUCKETS)]
    counts = np.histogram(seconds, bins=edges)[0] if len(seconds) else [0] * len(REPLY_BUCKETS)
    times = ReplyTimes(
        replies=len(seconds),
        median_seconds=float(np.median(seconds)) if len(seconds) else None,
        p90_seconds=float(np.percentile(seconds, 90)) if len(seconds) else None,
        buckets=[
            ReplyBucket(label=label, count=int(count))
            for (label, _), count in zip(REPLY_BUCKETS, counts, strict=True)
        ],
    )
    return times, early


def _sources(frame: pd.DataFrame) -> list[SourceStats]:
    named = frame[frame["source"].notna()]
    top = named["source"].value_counts(sort=True).head(TOP_SOURCES)
    result = []
    for source, count in top.items():
        group = named[named["source"] == source]
        result.append(
            SourceStats(
                source=str(source),
                comments=int(count),
                negative_share=_share(group[Task.SENTIMENT.value], "negative"),
                questions=int((group[Task.QUESTION.value] == "question").sum()),
            )
        )
    return result


def _term_group(group: pd.DataFrame) -> TermGroup:
    recent = group.sort_values("time", ascending=False, kind="stable").head(TERM_TEXTS)
    words, phrases = count_terms(list(recent["text"]))
    return TermGroup(
        comments=len(group),
        counted=len(recent),
        words=[TermCount(term=t, comments=c) for t, c in words.most_common(TOP_TERMS)],
        phrases=[TermCount(term=t, comments=c) for t, c in phrases.most_common(TOP_TERMS)],
    )


def _term(token: Any, stop_words: set[str]) -> str | None:
    """The token's normal form (``gon`` -> ``going``, ``ca`` -> ``can``) as a counted term, or
    None for stop words, punctuation, URLs, e-mail addresses, @handles, numbers and anything
    without a letter."""
    norm: str = token.norm_
    if (
        len(norm) < 2
        or token.is_stop
        or norm in stop_words
        or token.is_punct
        or token.like_url
        or token.like_email
        or token.like_num
        or token.text.startswith("@")
        or not any(c.isalpha() for c in norm)
    ):
        return None
    return norm


def count_terms(texts: Sequence[str]) -> tuple[Counter[str], Counter[str]]:
    """In how many of ``texts`` each word and each two-word phrase (adjacent kept words)
    occurs; counting each once per comment keeps one repetitive comment from dominating."""
    import spacy
    from spacy.lang.en.stop_words import STOP_WORDS

    # A new tokenizer per call (65 ms): its vocabulary grows with every new word, which a
    # long-running server must not keep, and one instance is not meant for several threads.
    tokenizer: Any = spacy.blank("en").tokenizer
    words: Counter[str] = Counter()
    phrases: Counter[str] = Counter()
    # Exports keep HTML entities (&amp;), which would otherwise become the word "amp".
    unescaped = [html.unescape(text) for text in texts]
    for doc in tokenizer.pipe(unescaped, batch_size=1000):
        seen: set[str] = set()
        pairs: set[str] = set()
        previous = None
        for token in doc:
            term = _term(token, STOP_WORDS)
            if term is not None:
                seen.add(term)
                if previous is not None:
                    pairs.add(f"{previous} {term}")
            previous = term
        words.update(seen)
        phrases.update(pairs)
    return words, phrases


def _examples(frame: pd.DataFrame, by: str) -> list[Example]:
    ranked = frame[frame[by].notna()].sort_values([by, "time"], ascending=False, kind="stable")
    # A text posted many times (spam, copy-paste campaigns) is shown once, at its best rank.
    ranked = ranked.drop_duplicates("text")
    examples = []
    for row in ranked.head(EXAMPLES).to_dict("records"):
        text = str(row["text"])
        examples.append(
            Example(
                time=row["time"].to_pydatetime(),
                source=row["source"],
                text=text if len(text) <= EXAMPLE_CHARS else text[:EXAMPLE_CHARS] + "…",
                negative=_number_or_none(row["p_negative"]),
                positive=_number_or_none(row["p_positive"]),
                likes=_number_or_none(row["likes"]),
            )
        )
    return examples


def _number_or_none(value: Any) -> float | None:
    return None if math.isnan(value) else float(value)
