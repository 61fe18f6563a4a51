"""The moderator web page, driven in Debian's Chromium through Playwright against a live server.

The server is the real app under uvicorn on a free port (a thread of this process), on SQLite,
with the tiny baseline model, the tiny reply encoder and the default template library.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from playwright.sync_api import Browser, ConsoleMessage, Dialog, Page, sync_playwright
from sqlalchemy import select

from commentdesk.settings import DEFAULT_MODEL_DIR, PROJECT_ROOT, Settings
from service.app import create_app
from service.auth import Role, create_key
from service.db.tables import Decision, QueueItem
from service.replies import load_defaults
from tests.server import free_port

pytestmark = pytest.mark.browser

CHROMIUM = Path(os.environ.get("COMMENTDESK_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = PROJECT_ROOT / "docs" / "screenshots"
# UPDATE_SCREENSHOTS=1 pytest tests/test_ui.py -k screenshots: the committed default model and
# policy serve the page, and the main views are saved to docs/screenshots/.
SCREENSHOT_RUN = os.environ.get("UPDATE_SCREENSHOTS") == "1"
# Every comment gets flagged, so what the tests ingest is what the queue shows.
FLAG_ALL_POLICY = """
[[rules]]
task = "sentiment"
label = "negative"
min_probability = 0.0
action = "review"

[words]
banned = []
suspect = []
"""
COMMENTS = [
    ("maria_k", "Where is my order? It has been two weeks and nobody answers my emails."),
    ("dan.the.man", "Love the new update, the app is so much faster now!"),
    ("jo", "Your support is useless, I want a refund today."),
    ("sam_r", "How do I change the email address on my account?"),
    ("alex", "The checkout page keeps crashing on my phone."),
]
XSS = [
    "<script>window.__xss = 1; alert(1)</script>",
    '<img src=x onerror="window.__xss = 2; alert(2)">',
    '<a href="javascript:window.__xss = 3; alert(3)">free gift</a>',
    '"><svg onload="window.__xss = 4; alert(4)">',
    "{{ ''.__class__ }} {author.__class__} {0}",
]


@dataclass
class LiveUi:
    url: str
    app: FastAPI
    keys: dict[Role, str]
    ingested: int = field(default=0)

    def ingest(self, comments: list[dict[str, Any]]) -> list[int]:
        for comment in comments:
            comment.setdefault("source", "brand")
            comment.setdefault("external_id", f"e{self.ingested}")
            self.ingested += 1
        response = httpx.post(
            f"{self.url}/v1/comments",
            json={"comments": comments},
            headers={"Authorization": f"Bearer {self.keys[Role.SCORER]}"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        return [result["id"] for result in response.json()["results"]]

    def decisions(self) -> list[Decision]:
        with self.app.state.sessions() as session:
            return list(session.scalars(select(Decision).order_by(Decision.id)))

    def open_items(self) -> int:
        with self.app.state.sessions() as session:
            return len(list(session.scalars(select(QueueItem).where(QueueItem.status == "open"))))


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        message = f"Chromium not found at {CHROMIUM}: apt-get install chromium"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true: {message}")
        pytest.skip(message)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        yield launched
        launched.close()


@pytest.fixture()
def live(tiny_model_dir: Path, tiny_replies: dict[str, object], tmp_path: Path) -> Iterator[LiveUi]:
    policy = tmp_path / "policy.toml"
    policy.write_text(FLAG_ALL_POLICY)
    settings = Settings(
        model_dir=DEFAULT_MODEL_DIR if SCREENSHOT_RUN else tiny_model_dir,
        data_dir=None,
        state_dir=tmp_path,
        database={"url": f"sqlite:///{tmp_path / 'ui.db'}"},
        policy_file=PROJECT_ROOT / "configs" / "policy.toml" if SCREENSHOT_RUN else policy,
        replies={} if SCREENSHOT_RUN else tiny_replies,
        ui={"poll_seconds": 0.3},
    )
    app = create_app(settings)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=60)
    with app.state.sessions() as session:
        keys = {role: create_key(session, f"{role.value}-1", role)[1] for role in Role}
        load_defaults(session)
    yield LiveUi(f"http://127.0.0.1:{server.config.port}", app, keys)
    server.should_exit = True
    thread.join(timeout=20)


@dataclass
class Watched:
    """A page with every dialog, console error and page error it raised."""

    page: Page
    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@pytest.fixture()
def watched(browser: Browser) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    watch = Watched(page)

    def on_dialog(dialog: Dialog) -> None:
        watch.dialogs.append(dialog.message)
        dialog.dismiss()

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            watch.errors.append(message.text)

    page.on("dialog", on_dialog)
    page.on("console", on_console)
    page.on("pageerror", lambda error: watch.errors.append(str(error)))
    yield watch
    context.close()


def sign_in(page: Page, live: LiveUi, role: Role = Role.MODERATOR, view: str = "all") -> None:
    """Sign in with the keyboard only: type the key, press Enter."""
    page.goto(f"{live.url}/ui/queue")
    assert page.url.endswith("/ui/login"), "an anonymous visit must land on the sign-in form"
    page.locator("#api_key").type(live.keys[role])
    page.keyboard.press("Enter")
    page.wait_for_url("**/ui/queue")
    if view != "needs_reply":
        page.goto(f"{live.url}/ui/queue?view={view}")


def wait_for_count(page: Page, view: str, count: int) -> None:
    """The view's counter shows ``count`` (it is updated when the server answers)."""
    # Polled from here: page.wait_for_function evaluates its predicate with eval() in the page,
    # which the page's CSP (no 'unsafe-eval') refuses as soon as it has to poll.
    counter = page.locator(f'[data-count="{view}"]')
    wait_for(lambda: counter.text_content() == str(count))


def card_ids(page: Page) -> list[int]:
    return [int(i) for i in page.locator("#cards .card:not(.pending)").evaluate_all(
        "cards => cards.map(c => c.dataset.id)"
    )]  # fmt: skip


def test_sign_in_sets_a_strict_session_cookie_and_shows_the_queue(
    live: LiveUi, watched: Watched
) -> None:
    live.ingest([{"author": a, "text": t} for a, t in COMMENTS])
    page = watched.page
    page.goto(f"{live.url}/ui/login")
    page.locator("#api_key").fill("cdk_nothere_wrongsecret")
    page.keyboard.press("Enter")
    assert "Sign-in failed" in page.locator(".error").inner_text()
    watched.errors.clear()  # the browser logs the 401 of the refused sign-in

    sign_in(page, live)
    assert page.locator('[data-count="all"]').inner_text() == "5"
    assert page.locator('[data-count="flagged"]').inner_text() == "5"
    assert len(card_ids(page)) == 5
    texts = page.locator(".card .text").all_inner_texts()
    assert sorted(texts) == sorted(t for _, t in COMMENTS)
    # Each card: score bars per task and ranked reply suggestions from the default library.
    first = page.locator(".card").first
    assert first.locator("meter").count() == 6
    assert first.locator(".suggestions li").count() == 3
    cookies = {c["name"]: c for c in page.context.cookies()}
    session = cookies["cd_session"]
    assert session["httpOnly"] and session["sameSite"] == "Strict" and session["path"] == "/ui"
    assert not watched.errors and not watched.dialogs

    page.locator(".signout button").click()
    page.wait_for_url("**/ui/login")
    page.goto(f"{live.url}/ui/queue")
    assert page.url.endswith("/ui/login"), "signing out must end the server-side session"


def test_keyboard_decisions_and_history(live: LiveUi, watched: Watched) -> None:
    ids = live.ingest([{"author": a, "text": t} for a, t in COMMENTS])
    page = watched.page
    sign_in(page, live)
    order = card_ids(page)
    assert sorted(order) == sorted(ids)

    page.keyboard.press("?")
    assert page.locator("#help").is_visible()
    page.keyboard.press("?")
    assert page.locator("#help").is_hidden()

    page.keyboard.press("j")  # second card
    page.keyboard.press("a")
    wait_for(lambda: len(live.decisions()) == 1)
    assert (live.decisions()[0].comment_id, live.decisions()[0].action) == (order[1], "approve")
    assert card_ids(page) == [order[0], *order[2:]]

    page.keyboard.press("k")
    page.keyboard.press("e")  # escalate the first card: it stays, marked
    wait_for(lambda: len(live.decisions()) == 2)
    assert live.decisions()[1].action == "escalate"
    page.wait_for_selector(f"#c{order[0]}.escalated")  # marked once the server answered

    page.keyboard.press("k")
    page.keyboard.press("l")  # relabel the first card's sentiment
    select = page.locator(f"#c{order[0]} select[name=sentiment]")
    assert select.evaluate("e => e === document.activeElement")
    corrected = next(
        x for x in ("negative", "positive") if x != select.get_attribute("data-current")
    )
    select.select_option(corrected)
    page.keyboard.press("Control+Enter")
    wait_for(lambda: len(live.decisions()) == 3)
    relabel = live.decisions()[2]
    assert relabel.action == "relabel" and relabel.labels == {"sentiment": corrected}
    # The decision is stored before the browser has the answer; until then the focus stays in the
    # select (where "d" would pick an option), so wait for the page to close the form.
    page.wait_for_selector(f"#c{order[0]} form.relabel", state="hidden")

    page.keyboard.press("d")  # reject the current card (the one after the first)
    wait_for(lambda: len(live.decisions()) == 4)
    assert live.decisions()[3].action == "reject"

    page.goto(f"{live.url}/ui/comments/{order[0]}")
    rows = page.locator("tr.decision")
    assert [rows.nth(i).get_attribute("data-action") for i in range(rows.count())] == [
        "escalate",
        "relabel",
    ]
    assert "moderator-1" in rows.first.inner_text()
    assert not watched.errors and not watched.dialogs


def test_reply_with_an_edited_suggestion(live: LiveUi, watched: Watched) -> None:
    (comment_id,) = live.ingest([{"author": "maria_k", "text": COMMENTS[0][1]}])
    page = watched.page
    sign_in(page, live)
    page.keyboard.press("r")
    editor = page.locator(f"#c{comment_id} textarea")
    assert editor.is_visible() and editor.evaluate("e => e === document.activeElement")
    suggested = editor.input_value()
    assert suggested.strip() and "{author" not in suggested
    page.keyboard.type(" Thanks for your patience.")
    page.keyboard.press("Control+Enter")
    wait_for(lambda: len(live.decisions()) == 1)
    decision = live.decisions()[0]
    assert decision.action == "reply"
    assert decision.reply_text == f"{suggested} Thanks for your patience.".strip()
    assert decision.template_id is not None
    page.wait_for_selector(f"#c{comment_id}", state="detached")

    page.goto(f"{live.url}/ui/comments/{comment_id}")
    assert page.locator(".reply-sent").inner_text() == decision.reply_text


def test_bulk_hide_of_selected_items(live: LiveUi, watched: Watched) -> None:
    ids = live.ingest([{"author": a, "text": t} for a, t in COMMENTS])
    page = watched.page
    sign_in(page, live)
    order = card_ids(page)
    for _ in range(3):  # select the first three: x, j, x, j, x
        page.keyboard.press("x")
        page.keyboard.press("j")
    page.keyboard.press("h")
    wait_for(lambda: len(live.decisions()) == 3)
    assert sorted(d.comment_id for d in live.decisions()) == sorted(order[:3])
    assert {d.action for d in live.decisions()} == {"hide"}
    assert len({d.created_at for d in live.decisions()}) == 1, "one all-or-nothing request"
    assert card_ids(page) == order[3:]
    wait_for_count(page, "all", 2)
    assert sorted(ids) == sorted(order)


def test_a_moderator_clears_50_items_with_the_keyboard_only(live: LiveUi, watched: Watched) -> None:
    live.ingest([{"author": f"user{i}", "text": f"Comment number {i}: is my parcel lost?"}
                 for i in range(60)])  # fmt: skip
    page = watched.page
    sign_in(page, live)
    assert len(card_ids(page)) == 50  # one page; the rest arrives as the page empties
    started = time.monotonic()
    for _ in range(50):
        page.keyboard.press("a")
    wait_for(lambda: len(live.decisions()) == 50, timeout=60)
    elapsed = time.monotonic() - started
    decisions = live.decisions()
    assert {d.action for d in decisions} == {"approve"}
    assert len({d.comment_id for d in decisions}) == 50
    assert live.open_items() == 10
    wait_for(lambda: page.locator("#cards .card").count() == 10)
    wait_for_count(page, "all", 10)
    assert not watched.errors and not watched.dialogs
    # 50 key presses, nothing else; the time is reported, not asserted (a test is not a benchmark).
    print(f"cleared 50 items with 50 key presses in {elapsed:.1f} s")


def test_why_highlights_words_in_place_and_keeps_the_text(live: LiveUi, watched: Watched) -> None:
    text = "you stupid idiot loser, where is my refund?"
    (comment_id,) = live.ingest([{"author": "troll", "text": text}])
    page = watched.page
    sign_in(page, live)
    page.keyboard.press("w")
    explained = page.wait_for_selector(f"#c{comment_id} .text.explained")
    assert explained is not None and explained.inner_text() == text, "nothing lost or added"
    marks = page.locator(f"#c{comment_id} .explained mark")
    for i in range(marks.count()):
        assert marks.nth(i).inner_text() in text
        assert "+" in (marks.nth(i).get_attribute("title") or "")
    assert (
        "words" in page.locator("#toast").inner_text()
        or "stands out" in page.locator("#toast").inner_text()
    )
    assert not watched.errors and not watched.dialogs


def test_new_items_appear_without_a_reload(live: LiveUi, watched: Watched) -> None:
    live.ingest([{"author": "jo", "text": COMMENTS[2][1]}])
    page = watched.page
    sign_in(page, live)
    assert len(card_ids(page)) == 1
    page.evaluate("window.__marker = 'same page'")
    (new_id,) = live.ingest([{"author": "sam_r", "text": COMMENTS[3][1]}])
    page.wait_for_selector(f"#c{new_id}")
    assert page.evaluate("window.__marker") == "same page"
    wait_for_count(page, "all", 2)


def test_untrusted_text_never_executes(live: LiveUi, watched: Watched) -> None:
    ids = live.ingest(
        [{"author": payload, "text": f"Hello {payload}"} for payload in XSS]
        + [{"author": "linker", "text": "see link", "url": "javascript:alert(5)"}]
    )
    page = watched.page
    sign_in(page, live)
    response = page.goto(f"{live.url}/ui/queue?view=all")
    assert response is not None
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp

    def assert_inert() -> None:
        assert page.evaluate("window.__xss") is None
        assert page.locator("svg, img, iframe, object, embed").count() == 0
        assert page.locator('a[href^="javascript:" i]').count() == 0
        scripts = page.locator("script").evaluate_all(
            "all => all.map(s => [s.getAttribute('src'), s.textContent])"
        )
        assert scripts == [["/ui/static/ui.js", ""]], "no inline script in any page"
        handlers = page.evaluate(
            "[...document.querySelectorAll('*')]"
            ".flatMap(e => [...e.attributes].map(a => a.name)).filter(n => n.startsWith('on'))"
        )
        assert handlers == []

    assert_inert()
    shown = page.locator(".card .text").all_inner_texts()
    for payload in XSS:
        assert f"Hello {payload}" in shown, "the payload is shown as text, not dropped"
    for comment_id in ids[: len(XSS)]:  # the suggestions are rendered with the author's name
        page.locator(f"#c{comment_id}").click(position={"x": 5, "y": 5})
        page.keyboard.press("r")
        assert page.locator(f"#c{comment_id} textarea").is_visible()
        page.keyboard.press("Escape")
        page.keyboard.press("w")  # the highlighted text is server-escaped too
        page.wait_for_selector(f"#c{comment_id} .text.explained")
    assert_inert()
    for comment_id in ids:
        page.goto(f"{live.url}/ui/comments/{comment_id}")
        assert_inert()
    assert watched.dialogs == []
    assert watched.errors == []


SCREENSHOT_COMMENTS = [
    ("rita_b", "@AcmeHelp you charged me twice for the same order, fix it or I'm calling my bank"),
    ("troll_9000", "acme support are a bunch of lazy idiots"),
    ("kev", "does the acme app work offline? going on a flight tomorrow"),
]


def test_main_views_render_on_laptop_and_phone_screenshots(live: LiveUi, browser: Browser) -> None:
    """Laptop and phone widths; with UPDATE_SCREENSHOTS=1 the views are saved as PNG."""
    extra = SCREENSHOT_COMMENTS if SCREENSHOT_RUN else []
    ids = live.ingest([{"author": a, "text": t} for a, t in [*COMMENTS, *extra]])
    out = SCREENSHOTS if SCREENSHOT_RUN else None
    for name, viewport in {
        "laptop": {"width": 1280, "height": 900},
        "phone": {"width": 390, "height": 844},
    }.items():
        context = browser.new_context(viewport=viewport)  # type: ignore[arg-type]
        page = context.new_page()
        sign_in(page, live)
        # Nothing overflows sideways: the page is readable without horizontal scrolling.
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        if out is not None:
            page.screenshot(path=out / f"queue-{name}.png")
            if name == "laptop":
                page.keyboard.press("r")
                page.screenshot(path=out / "reply.png")
                page.keyboard.press("Escape")
                first = card_ids(page)[0]
                page.keyboard.press("e")
                wait_for(lambda: len(live.decisions()) == 1)
                page.keyboard.press("k")
                page.keyboard.press("r")
                page.keyboard.press("Control+Enter")
                wait_for(lambda: len(live.decisions()) == 2)
                page.goto(f"{live.url}/ui/comments/{first}")
                page.screenshot(path=out / "history.png")
        context.close()
    assert len(ids) == len(COMMENTS) + len(extra)
