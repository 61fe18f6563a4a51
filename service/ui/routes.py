"""Routes of the moderator web page: sign-in, queue, decisions, history.

Pages are rendered on the server with autoescaping, so comment text, author names and template
output are always text, never markup. The one script is a static file; the Content-Security-Policy
set by ``SecurityHeaders`` forbids inline scripts, so injected markup could not run one anyway.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Form, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from model.explain import Explanation
from model.tasks import LABELS, Task
from service.auth import Permission, Unauthenticated, authenticate
from service.db.tables import Comment, QueueItem, utcnow
from service.deps import (
    BatcherDep,
    PolicyDep,
    SessionDep,
    SettingsDep,
    SuggesterDep,
)
from service.queue import Status, View, decide_many, get_comment, list_queue
from service.replies import ReplySuggester
from service.routes.queue import decision_requests
from service.schemas import BulkDecisionRequest
from service.scoring import explain_texts
from service.ui.sessions import SignedIn, end_session, find_session, start_session

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
SESSION_COOKIE = "cd_session"
LOGIN_CSRF_COOKIE = "cd_login_csrf"
VIEW_TITLES = {
    View.NEEDS_REPLY: "Needs reply",
    View.FLAGGED: "Flagged",
    View.HIDDEN: "Hidden",
    View.ALL: "All",
}

router = APIRouter(prefix="/ui", include_in_schema=False)


class NotSignedIn(Exception):
    """No live web session: pages redirect to the sign-in form, other requests get 401."""


class CsrfRejected(Exception):
    """A state-changing request without the session's CSRF token."""


def _signed_in(request: Request, session: SessionDep) -> SignedIn:
    found = find_session(session, request.cookies.get(SESSION_COOKIE), utcnow())
    if found is None:
        raise NotSignedIn("sign in first")
    return found


def _csrf_checked(request: Request, user: Annotated[SignedIn, Depends(_signed_in)]) -> SignedIn:
    if not user.csrf_ok(request.headers.get("x-csrf-token")):
        raise CsrfRejected("missing or wrong CSRF token; reload the page")
    return user


UiUser = Annotated[SignedIn, Depends(_signed_in)]
UiWriter = Annotated[SignedIn, Depends(_csrf_checked)]


@dataclass(frozen=True)
class Bar:
    task: str
    label: str
    value: float
    alert: bool


def _bars(comment: Comment) -> list[Bar]:
    """One bar per task: the probability of the flagged class (binary) or of the top label."""
    bars = []
    for task in Task:
        scores = comment.scores.get(task.value)
        if not scores:
            continue
        labels = LABELS[task]
        label = labels[1] if len(labels) == 2 else max(scores, key=scores.__getitem__)
        value = float(scores[label])
        alert = task in (Task.OFFENSIVE, Task.HATE) and comment.labels.get(task.value) == label
        alert = alert or (task is Task.SENTIMENT and label == "negative")
        bars.append(Bar(task.value, label, value, alert))
    return bars


def _cards(
    session: Session,
    items: list[QueueItem],
    suggester: ReplySuggester,
    user: SignedIn,
    k: int,
) -> list[dict[str, Any]]:
    """What a card shows; ``k`` reply suggestions each (``replies.queue_suggestions``)."""
    ids = [item.comment_id for item in items]
    comments = {c.id: c for c in session.scalars(select(Comment).where(Comment.id.in_(ids)))}
    now = utcnow()
    requests = [
        (c.text, c.scores, {"author": c.author or "", "agent": user.principal.name})
        for c in (comments[item.comment_id] for item in items)
    ]
    every = suggester.suggest_many(session, requests, k) if k else [[] for _ in items]
    cards = []
    for item, suggestions in zip(items, every, strict=True):
        comment = comments[item.comment_id]
        claimed_by_other = (
            item.claimed_by is not None
            and item.claimed_by != user.principal.key_id
            and item.lease_expires_at is not None
            and item.lease_expires_at > now
        )
        cards.append(
            {
                "item": item,
                "comment": comment,
                "bars": _bars(comment),
                "suggestions": suggestions,
                "claimed_by_other": claimed_by_other,
                "url": comment.url if _safe_url(comment.url) else None,
            }
        )
    return cards


def _safe_url(url: str | None) -> bool:
    """Only web links become links: ``javascript:`` and other schemes stay plain text."""
    return url is not None and url.lower().startswith(("https://", "http://"))


def _counts(session: Session) -> dict[str, int]:
    """Open items per view (claimed ones included: they are still waiting for a decision)."""
    rows = session.execute(
        select(QueueItem.view, func.count())
        .where(QueueItem.status == Status.OPEN.value)
        .group_by(QueueItem.view)
    )
    counts = {view.value: 0 for view in View}
    for view, count in rows:
        if view in counts:
            counts[view] = count
        counts[View.ALL.value] += count
    return counts


def _open_page(session: Session, view: View, limit: int, now: datetime) -> list[QueueItem]:
    return list_queue(session, view, Status.OPEN, limit, None, now).items


def _page(
    request: Request, name: str, context: dict[str, Any], status_code: int = 200
) -> HTMLResponse:
    return templates.TemplateResponse(request, name, context, status_code=status_code)


@router.get("", response_class=RedirectResponse)
def home() -> RedirectResponse:
    return RedirectResponse("/ui/queue", status_code=303)


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, error: str | None = None, status_code: int = 200) -> HTMLResponse:
    """The sign-in form; a double-submit cookie guards it against cross-site sign-in."""
    token = secrets.token_urlsafe(32)
    response = _page(request, "login.html", {"csrf_token": token, "error": error}, status_code)
    _set_cookie(response, request, LOGIN_CSRF_COOKIE, token, max_age=3600)
    return response


def _set_cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    """Scripts cannot read it, other sites cannot send it, and over HTTPS it stays there."""
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/ui",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


@router.post("/login", response_model=None)
def login(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    api_key: Annotated[str, Form(max_length=200)],
    csrf_token: Annotated[str, Form(max_length=200)],
) -> Response:
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE)
    if not cookie or not secrets.compare_digest(cookie, csrf_token):
        return login_form(request, "The form expired; please try again.", 403)
    try:
        principal = authenticate(session, f"Bearer {api_key.strip()}")
    except Unauthenticated as exc:
        return login_form(request, f"Sign-in failed: {exc}.", 401)
    if not principal.can(Permission.READ):
        return login_form(request, f"The role {principal.role.value!r} cannot read the queue.", 403)
    lifetime = timedelta(hours=settings.ui.session_hours)
    token = start_session(session, principal, lifetime, utcnow())
    response = RedirectResponse("/ui/queue", status_code=303)
    _set_cookie(response, request, SESSION_COOKIE, token, int(lifetime.total_seconds()))
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/ui")
    return response


@router.post("/logout", response_class=RedirectResponse)
def logout(
    request: Request,
    session: SessionDep,
    user: UiUser,
    csrf_token: Annotated[str, Form(max_length=200)],
) -> RedirectResponse:
    if not user.csrf_ok(csrf_token):
        raise CsrfRejected("missing or wrong CSRF token; reload the page")
    end_session(session, request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/ui")
    return response


@router.get("/queue", response_class=HTMLResponse)
def queue_page(
    request: Request,
    user: UiUser,
    session: SessionDep,
    settings: SettingsDep,
    suggester: SuggesterDep,
    view: Annotated[View, Query()] = View.NEEDS_REPLY,
) -> HTMLResponse:
    items = _open_page(session, view, settings.ui.page_size, utcnow())
    context = {
        "user": user,
        "view": view,
        "views": VIEW_TITLES,
        "counts": _counts(session),
        "cards": _cards(session, items, suggester, user, settings.replies.queue_suggestions),
        "poll_seconds": settings.ui.poll_seconds,
        **_card_context(user),
    }
    return _page(request, "queue.html", context)


def _card_context(user: SignedIn) -> dict[str, Any]:
    """What ``_card.html`` needs beside the card: the relabel choices and the action buttons."""
    return {
        "tasks": {task.value: LABELS[task] for task in Task},
        "can_moderate": user.principal.can(Permission.MODERATE),
    }


@router.get("/queue/cards", response_class=JSONResponse)
def queue_cards(
    user: UiUser,
    session: SessionDep,
    settings: SettingsDep,
    suggester: SuggesterDep,
    view: Annotated[View, Query()] = View.NEEDS_REPLY,
    shown: Annotated[str, Query(max_length=20_000)] = "",
) -> JSONResponse:
    """The view's counts and the cards of its first page that the page does not show yet."""
    present = {int(part) for part in shown.split(",") if part.strip().isdigit()}
    items = [
        item
        for item in _open_page(session, view, settings.ui.page_size + len(present), utcnow())
        if item.comment_id not in present
    ][: settings.ui.page_size]
    card = templates.env.get_template("_card.html")
    context = _card_context(user)
    cards = [
        {"id": c["comment"].id, "html": card.render(card=c, **context)}
        for c in _cards(session, items, suggester, user, settings.replies.queue_suggestions)
    ]
    return JSONResponse({"counts": _counts(session), "cards": cards})


@router.post("/decisions", response_class=JSONResponse)
def decisions(
    body: BulkDecisionRequest,
    user: UiWriter,
    session: SessionDep,
    policy: PolicyDep,
) -> JSONResponse:
    """Decide one or many items, all or nothing, as the signed-in moderator."""
    user.principal.require(Permission.MODERATE)
    decided = decide_many(session, user.principal, decision_requests(body), policy)
    return JSONResponse({"decided": [d.comment_id for d in decided], "counts": _counts(session)})


# The labels worth showing the words of: what makes a comment abusive, negative or a question.
HIGHLIGHTED = {
    Task.OFFENSIVE: "offensive",
    Task.HATE: "hate",
    Task.SENTIMENT: "negative",
    Task.QUESTION: "question",
}
HIGHLIGHT_MIN_WEIGHT = 0.02


@dataclass(frozen=True)
class Segment:
    text: str
    reasons: tuple[str, ...] = ()  # "offensive +0.31", one per label the words hold up


def highlight(text: str, explanations: dict[Task, Explanation], top: int = 3) -> list[Segment]:
    """The text cut into plain and highlighted segments: per highlighted label the comment got,
    its ``top`` words that hold the label up by at least ``HIGHLIGHT_MIN_WEIGHT``."""
    marks: dict[tuple[int, int], list[str]] = {}
    for task, label in HIGHLIGHTED.items():
        explanation = explanations.get(task)
        if explanation is None or explanation.label != label:
            continue
        for word in explanation.top(top):
            if word.weight >= HIGHLIGHT_MIN_WEIGHT:
                marks.setdefault((word.begin, word.end), []).append(f"{label} +{word.weight:.2f}")
    segments, position = [], 0
    for (begin, end), reasons in sorted(marks.items()):
        segments += [Segment(text[position:begin]), Segment(text[begin:end], tuple(reasons))]
        position = end
    return [*segments, Segment(text[position:])]


@router.get("/comments/{comment_id}/explain", response_class=JSONResponse)
async def explain_comment(
    comment_id: int,
    user: UiUser,
    session: SessionDep,
    batcher: BatcherDep,
    settings: SettingsDep,
) -> JSONResponse:
    """The comment's text with the words behind its labels highlighted, as an HTML fragment."""

    def load() -> str:
        text = get_comment(session, comment_id).text
        session.rollback()  # read only: end the transaction (SQLite's write lock) before scoring
        return text

    text = await run_in_threadpool(load)
    _, (explanations,) = await explain_texts(batcher, [text], 1, settings.api.explain_max_rows)
    segments = highlight(text, explanations)
    html = templates.env.get_template("_explained.html").render(segments=segments)
    return JSONResponse({"html": html, "highlighted": sum(1 for s in segments if s.reasons)})


@router.get("/comments/{comment_id}", response_class=HTMLResponse)
def history_page(
    request: Request, comment_id: int, user: UiUser, session: SessionDep
) -> HTMLResponse:
    comment = get_comment(session, comment_id)
    context = {
        "user": user,
        "comment": comment,
        "item": comment.queue_item,
        "bars": _bars(comment),
        "decisions": comment.decisions,
        "url": comment.url if _safe_url(comment.url) else None,
    }
    return _page(request, "history.html", context)


def install_ui(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=HERE / "static"), name="ui-static")
