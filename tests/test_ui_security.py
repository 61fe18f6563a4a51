"""Sessions, CSRF, roles and headers of the moderator web page, checked over HTTP (no browser)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.auth import Role, revoke_key
from service.db.tables import ApiKey, Decision
from tests.conftest import Api, running_api


@pytest.fixture()
def ui(tiny_model_dir: Path, tiny_replies: dict[str, object], tmp_path: Path) -> Iterator[Api]:
    url = f"sqlite:///{tmp_path / 'ui.db'}"
    with running_api(tiny_model_dir, url, tmp_path, replies=tiny_replies) as running:
        yield running


def login_token(client: TestClient) -> str:
    page = client.get("/ui/login")
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match, "the sign-in form carries a CSRF token"
    return match.group(1)


def sign_in(ui: Api, role: Role = Role.MODERATOR) -> str:
    """Sign in through the form; returns the session's CSRF token from the queue page."""
    response = ui.client.post(
        "/ui/login",
        data={"api_key": ui.keys[role], "csrf_token": login_token(ui.client)},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    page = ui.client.get("/ui/queue")
    match = re.search(r'<meta name="csrf-token" content="([^"]+)">', page.text)
    assert match
    return match.group(1)


def ingest_one(ui: Api, text: str = "Where is my order?") -> int:
    response = ui.client.post(
        "/v1/comments",
        json={"comments": [{"source": "s", "external_id": "1", "text": text}]},
        headers=ui.auth(Role.SCORER),
    )
    assert response.status_code == 200
    comment_id: int = response.json()["results"][0]["id"]
    return comment_id


def decisions(ui: Api) -> int:
    with ui.app.state.sessions() as session:
        return session.query(Decision).count()


def test_anonymous_pages_redirect_and_requests_are_refused(ui: Api) -> None:
    response = ui.client.get("/ui/queue", headers={"Accept": "text/html"}, follow_redirects=False)
    assert (response.status_code, response.headers["location"]) == (303, "/ui/login")
    assert ui.client.get("/ui/queue/cards").status_code == 401
    assert ui.client.post("/ui/decisions", json={"decisions": []}).status_code == 401
    # An API key in the Authorization header is not a web session.
    refused = ui.client.get("/ui/queue/cards", headers=ui.auth(Role.ADMIN))
    assert refused.status_code == 401


def test_sign_in_needs_the_form_token_and_a_valid_key(ui: Api) -> None:
    token = login_token(ui.client)
    stolen = TestClient(ui.app)  # a cross-site form post carries no login cookie
    forged = stolen.post(
        "/ui/login", data={"api_key": ui.keys[Role.MODERATOR], "csrf_token": token}
    )
    assert forged.status_code == 403 and "cd_session" not in forged.cookies
    wrong = ui.client.post("/ui/login", data={"api_key": "cdk_x_y", "csrf_token": token})
    assert wrong.status_code == 401 and "Sign-in failed" in wrong.text
    scorer = ui.client.post(
        "/ui/login", data={"api_key": ui.keys[Role.SCORER], "csrf_token": login_token(ui.client)}
    )
    assert scorer.status_code == 403 and "cannot read the queue" in scorer.text
    huge = ui.client.post(
        "/ui/login", data={"api_key": "x" * 100_000, "csrf_token": login_token(ui.client)}
    )
    assert huge.status_code == 422


def test_session_cookie_flags(ui: Api) -> None:
    secure = TestClient(ui.app, base_url="https://testserver")
    response = secure.post(
        "/ui/login",
        data={"api_key": ui.keys[Role.MODERATOR], "csrf_token": login_token(secure)},
        follow_redirects=False,
    )
    cookie = response.headers["set-cookie"]
    assert response.status_code == 303
    for flag in ("HttpOnly", "SameSite=strict", "Secure", "Path=/ui"):
        assert flag.lower() in cookie.lower()
    plain = ui.client.post(
        "/ui/login",
        data={"api_key": ui.keys[Role.MODERATOR], "csrf_token": login_token(ui.client)},
        follow_redirects=False,
    )
    assert "secure" not in plain.headers["set-cookie"].lower()


def test_decisions_need_the_session_csrf_token(ui: Api) -> None:
    comment_id = ingest_one(ui)
    csrf = sign_in(ui)
    body = {"decisions": [{"id": comment_id, "action": "approve"}]}
    for headers in ({}, {"X-CSRF-Token": "wrong"}, {"X-CSRF-Token": ""}):
        refused = ui.client.post("/ui/decisions", json=body, headers=headers)
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "csrf_rejected"
    assert decisions(ui) == 0
    accepted = ui.client.post("/ui/decisions", json=body, headers={"X-CSRF-Token": csrf})
    assert accepted.status_code == 200
    assert accepted.json()["decided"] == [comment_id]
    assert decisions(ui) == 1
    again = ui.client.post("/ui/decisions", json=body, headers={"X-CSRF-Token": csrf})
    assert again.status_code == 409 and "nothing was written" in again.json()["error"]["message"]


def test_malformed_decisions_are_refused_whole(ui: Api) -> None:
    comment_id = ingest_one(ui)
    csrf = sign_in(ui)
    headers = {"X-CSRF-Token": csrf, "Content-Type": "application/json"}
    for content, status in (
        (b"", 422),
        (b"{not json", 422),
        (b'{"decisions": []}', 422),
        (b'{"decisions": [{"id": 1, "action": "delete-everything"}]}', 422),
        (b'{"decisions": [{"id": 1, "action": "approve", "note": "caf\xe9"}]}', 400),  # not UTF-8
    ):
        response = ui.client.post("/ui/decisions", content=content, headers=headers)
        assert response.status_code == status, content
    mixed = {
        "decisions": [
            {"id": comment_id, "action": "approve"},
            {"id": 999_999, "action": "approve"},
        ]
    }
    response = ui.client.post("/ui/decisions", json=mixed, headers=headers)
    assert response.status_code == 404 and response.json()["error"]["index"] == 1
    assert decisions(ui) == 0


def test_viewers_see_the_queue_but_cannot_decide(ui: Api) -> None:
    comment_id = ingest_one(ui, "Why is the app down again?")
    csrf = sign_in(ui, Role.VIEWER)
    page = ui.client.get("/ui/queue?view=all")
    assert page.status_code == 200 and "Why is the app down again?" in page.text
    assert 'data-action="approve"' not in page.text
    response = ui.client.post(
        "/ui/decisions",
        json={"decisions": [{"id": comment_id, "action": "approve"}]},
        headers={"X-CSRF-Token": csrf},
    )
    assert response.status_code == 403
    assert decisions(ui) == 0


def test_logout_needs_the_token_and_revoking_the_key_ends_the_session(ui: Api) -> None:
    csrf = sign_in(ui)
    refused = ui.client.post("/ui/logout", data={"csrf_token": "wrong"}, follow_redirects=False)
    assert refused.status_code == 403
    assert ui.client.get("/ui/queue/cards").status_code == 200
    out = ui.client.post("/ui/logout", data={"csrf_token": csrf}, follow_redirects=False)
    assert out.status_code == 303
    assert ui.client.get("/ui/queue/cards").status_code == 401

    sign_in(ui)
    assert ui.client.get("/ui/queue/cards").status_code == 200
    with ui.app.state.sessions() as session:
        key = session.query(ApiKey).filter_by(name="moderator-1").one()
        assert revoke_key(session, key.id)
    assert ui.client.get("/ui/queue/cards").status_code == 401


def test_security_headers(ui: Api) -> None:
    sign_in(ui)
    page = ui.client.get("/ui/queue")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert page.headers["cache-control"] == "no-store"
    for response in (page, ui.client.get("/healthz"), ui.client.get("/ui/static/ui.js")):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"
    assert re.findall(r"<script[^>]*>", page.text) == ['<script src="/ui/static/ui.js" defer>']


def test_history_of_an_unknown_comment_is_a_clear_404(ui: Api) -> None:
    sign_in(ui)
    response = ui.client.get("/ui/comments/424242")
    assert response.status_code == 404
    assert "424242" in response.json()["error"]["message"]


def test_explanations_need_a_session_and_escape_the_text(ui: Api) -> None:
    payload = '<img src=x onerror="alert(1)"> you idiots & "friends"'
    comment_id = ingest_one(ui, payload)
    assert ui.client.get(f"/ui/comments/{comment_id}/explain").status_code == 401
    sign_in(ui, Role.VIEWER)  # reading is enough: an explanation changes nothing
    response = ui.client.get(f"/ui/comments/{comment_id}/explain")
    assert response.status_code == 200
    html = response.json()["html"]
    assert "<img" not in html and "&lt;img" in html and "&amp;" in html
    assert (
        re.sub(r"<[^>]+>", "", html)
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#34;", '"')
        .replace("&amp;", "&")
        .strip()
        == payload
    )
    missing = ui.client.get("/ui/comments/424242/explain")
    assert missing.status_code == 404 and "424242" in missing.json()["error"]["message"]
