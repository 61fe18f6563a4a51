"""The review queue over HTTP, on SQLite and on PostgreSQL (the `api` fixture runs both)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from service.auth import Role
from service.db.tables import Comment, Decision, QueueItem
from tests.conftest import Api

MOD = Role.MODERATOR


def comments(
    n: int, start: int = 0, text: str = "is this a scam? order {i}", source: str = "twitter"
) -> list[dict[str, Any]]:
    return [
        {"source": source, "external_id": str(i), "text": text.format(i=i), "author": f"@a{i}"}
        for i in range(start, start + n)
    ]


def cursor_of(position: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode()


def ingest(api: Api, items: list[dict[str, Any]]) -> dict[str, Any]:
    response = api.client.post(
        "/v1/comments", json={"comments": items}, headers=api.auth(Role.SCORER)
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def count(api: Api, model: type) -> int:
    with api.app.state.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def decide(api: Api, comment_id: int, role: Role = MOD, **body: Any) -> Any:
    return api.client.post(f"/v1/queue/{comment_id}/decision", json=body, headers=api.auth(role))


def test_ingest_scores_routes_and_is_idempotent(api: Api) -> None:
    body = ingest(api, [*comments(3), {"source": "ig", "external_id": "0", "text": "lovely photo"}])
    assert body["created"] == 4 and body["duplicates"] == 0
    assert [r["action"] for r in body["results"][:3]] == ["review"] * 3  # "scam" is a suspect word
    assert body["results"][0]["view"] == "flagged"
    again = ingest(api, comments(3))
    assert again["created"] == 0 and again["duplicates"] == 3
    assert [r["id"] for r in again["results"]] == [r["id"] for r in body["results"][:3]]
    assert count(api, Comment) == 4 and count(api, QueueItem) == 4


def test_duplicates_inside_one_request_are_stored_once(api: Api) -> None:
    body = ingest(api, comments(2) + comments(1))
    assert [r["status"] for r in body["results"]] == ["created", "created", "duplicate"]
    assert body["results"][2]["id"] == body["results"][0]["id"]
    assert count(api, Comment) == 2


def test_banned_words_hide_and_scunthorpe_is_safe(api: Api) -> None:
    body = ingest(
        api,
        [
            {"source": "t", "external_id": "1", "text": "fuuuck youuu"},
            {"source": "t", "external_id": "2", "text": "K Y S"},
            {"source": "t", "external_id": "3", "text": "greetings from Scunthorpe"},
        ],
    )
    actions = [r["action"] for r in body["results"]]
    assert actions[0] == "hide"
    assert actions[2] != "hide"
    detail = api.client.get(
        f"/v1/comments/{body['results'][0]['id']}", headers=api.auth(Role.VIEWER)
    ).json()
    assert detail["item"]["visibility"] == "hidden"
    assert "banned word 'fuck you'" in " ".join(detail["item"]["reasons"])


@pytest.mark.parametrize(
    ("payload", "status", "fragment"),
    [
        ({"comments": [{"source": "t", "external_id": "1"}]}, 422, "text"),
        ({"comments": [{"source": "t", "text": "hi"}]}, 422, "external_id"),
        (
            {
                "comments": [
                    {"source": "t", "external_id": "1", "text": "ok"},
                    {"source": "t", "external_id": "2", "text": "  "},
                ]
            },
            422,
            "comment 1",
        ),
        (
            {"comments": [{"source": "t", "external_id": "1", "text": "x" * 5001}]},
            422,
            "limit is 5000",
        ),
        (
            {
                "comments": [
                    {
                        "source": "t",
                        "external_id": "1",
                        "text": "ok",
                        "created_at": "2026-01-01T10:00:00",
                    }
                ]
            },
            422,
            "timezone",
        ),
        ({"comments": [{"source": "t", "external_id": 1, "text": "ok"}]}, 422, "string"),
        ({"comments": []}, 422, "at least 1"),
        (
            {
                "comments": [
                    {"source": "t", "external_id": str(i), "text": "ok"} for i in range(1001)
                ]
            },
            413,
            "limit is 1000",
        ),
    ],
)
def test_bad_ingest_writes_nothing(api: Api, payload: Any, status: int, fragment: str) -> None:
    response = api.client.post("/v1/comments", json=payload, headers=api.auth(Role.SCORER))
    assert response.status_code == status
    assert fragment in response.text
    assert count(api, Comment) == 0


@pytest.mark.parametrize("field", ["source", "external_id", "text", "author", "url", "parent_id"])
def test_nul_characters_are_refused_before_the_database(api: Api, field: str) -> None:
    """PostgreSQL cannot store U+0000: it was a 500 there, now a 422 naming the field."""
    comment = {"source": "t", "external_id": "1", "text": "ok", field: "a\x00b"}
    response = api.client.post(
        "/v1/comments", json={"comments": [comment]}, headers=api.auth(Role.SCORER)
    )
    assert response.status_code == 422, response.text
    assert "NUL character" in response.text and (
        field in response.text or "comment 0" in response.text
    )
    assert count(api, Comment) == 0
    key = api.client.post(
        "/v1/keys", json={"name": "bot\x00", "role": "viewer"}, headers=api.auth(Role.ADMIN)
    )
    assert key.status_code == 422 and "NUL character" in key.text


@pytest.mark.parametrize(
    ("method", "path", "body", "role"),
    [
        ("GET", f"/v1/comments/{2**31}", None, Role.VIEWER),
        ("GET", f"/v1/comments/{2**63}", None, Role.VIEWER),
        ("POST", f"/v1/queue/{2**63}/decision", {"action": "approve"}, MOD),
        ("POST", "/v1/queue/decisions", {"decisions": [{"id": 2**63, "action": "approve"}]}, MOD),
        ("DELETE", f"/v1/keys/{2**63}", None, Role.ADMIN),
    ],
)
def test_ids_beyond_the_databases_integers_are_a_clear_422(
    api: Api, method: str, path: str, body: Any, role: Role
) -> None:
    """Ids are 32-bit in PostgreSQL; a larger one was a 500 (SQLite overflowed on 2**63)."""
    response = api.client.request(method, path, json=body, headers=api.auth(role))
    assert response.status_code == 422, response.text
    assert "less than or equal to 2147483647" in response.text
    for zero in ("/v1/comments/0", "/v1/comments/-1"):
        assert api.client.get(zero, headers=api.auth(Role.VIEWER)).status_code == 422


def test_queue_views_order_and_cursor_pagination(api: Api) -> None:
    ingest(api, [*comments(7), {"source": "t", "external_id": "x", "text": "thanks, all good"}])
    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"view": "flagged", "limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = api.client.get("/v1/queue", params=params, headers=api.auth(Role.VIEWER)).json()
        priorities = [item["priority"] for item in page["items"]]
        assert priorities == sorted(priorities, reverse=True)
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 7
    everything = api.client.get(
        "/v1/queue", params={"view": "all", "limit": 100}, headers=api.auth(Role.VIEWER)
    ).json()
    assert len(everything["items"]) == 8


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"view": "spam"}, "needs_reply"),
        ({"status": "gone"}, "open"),
        ({"cursor": "!!not-a-cursor"}, "invalid cursor"),
        ({"limit": 0}, "greater than"),
        # Well-formed cursors with values a database cannot take (each was a 500 on one or both).
        ({"cursor": cursor_of([1, "2026-01-01T00:00:00+00:00", 2**63])}, "invalid cursor"),
        ({"cursor": cursor_of([2**40, "2026-01-01T00:00:00+00:00", 1])}, "invalid cursor"),
        ({"cursor": cursor_of([1, "2026-01-01T00:00:00", 1])}, "invalid cursor"),
        ({"cursor": cursor_of([1e400, "2026-01-01T00:00:00+00:00", 1])}, "invalid cursor"),
        ({"cursor": cursor_of([1, "0001-01-01T00:00:00+14:00", 1])}, "invalid cursor"),
    ],
)
def test_bad_queue_queries(api: Api, params: dict[str, Any], fragment: str) -> None:
    response = api.client.get("/v1/queue", params=params, headers=api.auth(Role.VIEWER))
    assert response.status_code == 422
    assert fragment in response.text


def test_claims_never_overlap_and_expired_leases_return(api: Api) -> None:
    ingest(api, comments(6))
    second = api.keys[Role.ADMIN]  # admins may moderate too
    first_claim = api.client.post(
        "/v1/queue/claim", json={"count": 4}, headers=api.auth(MOD)
    ).json()
    second_claim = api.client.post(
        "/v1/queue/claim", json={"count": 4}, headers={"Authorization": f"Bearer {second}"}
    ).json()
    first_ids, second_ids = {i["id"] for i in first_claim}, {i["id"] for i in second_claim}
    assert len(first_ids) == 4 and len(second_ids) == 2 and not first_ids & second_ids
    assert all(i["status"] == "claimed" for i in first_claim)
    assert api.client.post("/v1/queue/claim", json={"count": 4}, headers=api.auth(MOD)).json() == []
    with api.app.state.sessions() as session:
        session.execute(
            update(QueueItem)
            .where(QueueItem.comment_id.in_(first_ids))
            .values(lease_expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
        session.commit()
    reclaimed = api.client.post(
        "/v1/queue/claim", json={"count": 10}, headers={"Authorization": f"Bearer {second}"}
    ).json()
    assert {i["id"] for i in reclaimed} == first_ids


def test_every_action_and_the_history(api: Api) -> None:
    ids = [r["id"] for r in ingest(api, comments(6))["results"]]
    api.client.post("/v1/queue/claim", json={"count": 6}, headers=api.auth(MOD))
    assert decide(api, ids[0], action="approve", note="fine").status_code == 200
    assert decide(api, ids[1], action="hide").status_code == 200
    assert decide(api, ids[2], action="reject").status_code == 200
    assert decide(api, ids[3], action="reply", reply_text="We sent you a DM").status_code == 200
    assert (
        decide(
            api,
            ids[4],
            action="relabel",
            labels={"sentiment": "negative", "offensive": "not-offensive"},
        ).status_code
        == 200
    )
    assert decide(api, ids[4], action="escalate", note="legal").status_code == 200
    detail = api.client.get(f"/v1/comments/{ids[4]}", headers=api.auth(Role.VIEWER)).json()
    assert [d["action"] for d in detail["history"]] == ["relabel", "escalate"]
    relabel = detail["history"][0]
    assert relabel["actor"] == "moderator-1" and relabel["labels"]["sentiment"] == "negative"
    assert relabel["model"]["name"] == "commentdesk-baseline"
    assert set(relabel["scores"]) == {
        "sentiment",
        "offensive",
        "hate",
        "question",
        "emotion",
        "irony",
    }
    assert detail["item"]["escalated"] and detail["item"]["status"] == "open"
    assert detail["item"]["priority"] >= 1000
    statuses = {
        i: api.client.get(f"/v1/comments/{i}", headers=api.auth(Role.VIEWER)).json()["item"]
        for i in ids[:4]
    }
    assert [statuses[i]["visibility"] for i in ids[:4]] == [
        "visible",
        "hidden",
        "rejected",
        "visible",
    ]
    assert all(statuses[i]["status"] == "resolved" for i in ids[:4])
    reply = api.client.get(f"/v1/comments/{ids[3]}", headers=api.auth(Role.VIEWER)).json()[
        "history"
    ][0]
    assert reply["reply_text"] == "We sent you a DM"


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"action": "delete"}, 422, "approve"),
        ({"action": "reply"}, 422, "reply_text"),
        ({"action": "reply", "reply_text": "   "}, 422, "reply_text"),
        ({"action": "approve", "reply_text": "hi"}, 422, "only goes with the reply"),
        ({"action": "relabel"}, 422, "labels"),
        ({"action": "relabel", "labels": {"toxicity": "high"}}, 422, "unknown task"),
        ({"action": "relabel", "labels": {"sentiment": "furious"}}, 422, "unknown label"),
        ({"action": "approve", "colour": "red"}, 422, "Extra inputs"),
        # PostgreSQL cannot store a NUL character (it was a 500 there).
        ({"action": "approve", "note": "a\x00b"}, 422, "NUL character"),
        ({"action": "reply", "reply_text": "hi\x00"}, 422, "NUL character"),
        # Nor an id beyond its 32-bit integers (SQLite's overflowed too: a 500 on both).
        ({"action": "reply", "reply_text": "hi", "template_id": 2**63}, 422, "2147483647"),
    ],
)
def test_bad_decisions_are_clear_and_write_nothing(
    api: Api, body: dict[str, Any], status: int, fragment: str
) -> None:
    [result] = ingest(api, comments(1))["results"]
    response = decide(api, result["id"], **body)
    assert response.status_code == status
    assert fragment in response.text
    assert count(api, Decision) == 0


def test_conflicts_and_missing_items(api: Api) -> None:
    ids = [r["id"] for r in ingest(api, comments(2))["results"]]
    api.client.post("/v1/queue/claim", json={"count": 1}, headers=api.auth(MOD))
    other = decide(api, ids[0], role=Role.ADMIN, action="approve")
    assert other.status_code == 409 and other.json()["error"]["code"] == "claimed_by_other"
    assert decide(api, ids[0], action="hide").status_code == 200
    twice = decide(api, ids[0], action="approve")
    assert twice.status_code == 409 and twice.json()["error"]["code"] == "already_decided"
    assert decide(api, 999_999, action="approve").status_code == 404
    assert api.client.get("/v1/comments/999999", headers=api.auth(Role.VIEWER)).status_code == 404
    assert count(api, Decision) == 1


def test_bulk_decisions_are_all_or_nothing(api: Api) -> None:
    ids = [r["id"] for r in ingest(api, comments(4))["results"]]
    bad = [
        {"id": ids[0], "action": "approve"},
        {"id": ids[1], "action": "reply"},
        {"id": ids[2], "action": "hide"},
    ]
    response = api.client.post(
        "/v1/queue/decisions", json={"decisions": bad}, headers=api.auth(MOD)
    )
    assert response.status_code == 422
    assert response.json()["error"]["index"] == 1 and "nothing was written" in response.text
    assert count(api, Decision) == 0
    twice = [{"id": ids[0], "action": "approve"}, {"id": ids[0], "action": "hide"}]
    assert (
        api.client.post(
            "/v1/queue/decisions", json={"decisions": twice}, headers=api.auth(MOD)
        ).status_code
        == 422
    )
    good = [{"id": i, "action": "approve"} for i in ids]
    response = api.client.post(
        "/v1/queue/decisions", json={"decisions": good}, headers=api.auth(MOD)
    )
    assert response.status_code == 200 and len(response.json()) == 4
    assert count(api, Decision) == 4
    oversized = {"decisions": [{"id": 1, "action": "approve"}] * 501}
    assert (
        api.client.post("/v1/queue/decisions", json=oversized, headers=api.auth(MOD)).status_code
        == 413
    )


def test_stats(api: Api) -> None:
    ids = [
        r["id"]
        for r in ingest(
            api, [*comments(3), {"source": "t", "external_id": "q", "text": "thanks a lot"}]
        )["results"]
    ]
    decide(api, ids[0], action="approve")
    decide(api, ids[1], action="hide")
    body = api.client.get("/v1/stats", headers=api.auth(Role.VIEWER)).json()
    assert body["views"]["all"]["resolved"] == 2
    assert body["views"]["flagged"]["open"] == 1
    assert body["decisions"] == {"approve": 1, "hide": 1}
    assert body["median_seconds_to_first_decision"] >= 0
    [today] = body["daily"]
    assert today["comments"] == 4 and 0 <= today["negative_share"] <= 1


def test_end_to_end_thousand_comments(api: Api) -> None:
    batch = comments(1000, text="order {i}: is this a scam? can you help")
    body = ingest(api, batch)
    assert body["created"] == 1000
    claimed: list[dict[str, Any]] = []
    while page := api.client.post(
        "/v1/queue/claim", json={"count": 100}, headers=api.auth(MOD)
    ).json():
        claimed += page
    assert len(claimed) == len({c["id"] for c in claimed}) == 1000
    actions = ["approve", "hide", "reject", "reply", "escalate", "relabel"]
    decisions = []
    for n, item in enumerate(claimed):
        action = actions[n % len(actions)]
        decision: dict[str, Any] = {"id": item["id"], "action": action}
        if action == "reply":
            decision["reply_text"] = "Sorry about that, check your DMs"
        if action == "relabel":
            decision["labels"] = {"question": "question"}
        decisions.append(decision)
    for start in range(0, 1000, 250):
        response = api.client.post(
            "/v1/queue/decisions",
            json={"decisions": decisions[start : start + 250]},
            headers=api.auth(MOD),
        )
        assert response.status_code == 200, response.text
    history = api.client.get(
        f"/v1/comments/{claimed[5]['id']}", headers=api.auth(Role.VIEWER)
    ).json()["history"]
    assert [h["action"] for h in history] == ["relabel"]
    assert ingest(api, batch)["created"] == 0
    assert count(api, Comment) == 1000 and count(api, Decision) == 1000


# Every /v1 route and the permission it needs; a new route without an entry fails the test.
ROUTES = {
    ("POST", "/v1/score"): "score",
    ("POST", "/v1/comments"): "score",
    ("GET", "/v1/comments/{comment_id}"): "read",
    ("GET", "/v1/queue"): "read",
    ("POST", "/v1/queue/claim"): "moderate",
    ("POST", "/v1/queue/{comment_id}/decision"): "moderate",
    ("POST", "/v1/queue/decisions"): "moderate",
    ("GET", "/v1/stats"): "read",
    ("GET", "/v1/keys"): "admin",
    ("POST", "/v1/keys"): "admin",
    ("DELETE", "/v1/keys/{key_id}"): "admin",
    ("GET", "/v1/policy"): "admin",
    ("GET", "/v1/templates"): "admin",
    ("POST", "/v1/templates"): "admin",
    ("GET", "/v1/templates/{template_id}"): "admin",
    ("PUT", "/v1/templates/{template_id}"): "admin",
    ("DELETE", "/v1/templates/{template_id}"): "admin",
    ("POST", "/v1/replies/suggest"): "moderate",
    ("POST", "/v1/batches"): "score",
    ("GET", "/v1/batches/{job_id}"): "score",
    ("GET", "/v1/batches/{job_id}/result"): "score",
    ("GET", "/v1/batches/{job_id}/errors"): "score",
}


def test_every_route_refuses_missing_keys_and_wrong_roles(api: Api) -> None:
    from service.auth import GRANTS, Permission

    paths = api.app.openapi()["paths"]
    routes = {
        (method.upper(), path)
        for path, ops in paths.items()
        if path.startswith("/v1/")  # /v1alpha1 speaks Perspective's dialect: test_perspective.py
        for method in ops
    }
    assert routes == set(ROUTES)
    for (method, path), permission in ROUTES.items():
        url = (
            path.replace("{comment_id}", "1").replace("{key_id}", "1").replace("{template_id}", "1")
        )
        missing = api.client.request(method, url, json={})
        assert missing.status_code == 401, (method, path)
        assert missing.headers["www-authenticate"] == "Bearer"
        bogus = api.client.request(
            method, url, json={}, headers={"Authorization": "Bearer cdk_nope_nope"}
        )
        assert bogus.status_code == 401
        for role in Role:
            if Permission(permission) not in GRANTS[role]:
                wrong = api.client.request(method, url, json={}, headers=api.auth(role))
                assert wrong.status_code == 403, (method, path, role)


def test_admin_manages_keys_and_revoked_keys_stop_working(api: Api) -> None:
    created = api.client.post(
        "/v1/keys", json={"name": "bot", "role": "scorer"}, headers=api.auth(Role.ADMIN)
    )
    assert created.status_code == 201
    secret, key_id = created.json()["key"], created.json()["id"]
    listed = api.client.get("/v1/keys", headers=api.auth(Role.ADMIN)).json()
    assert "key" not in listed[0] and any(k["id"] == key_id for k in listed)
    header = {"Authorization": f"Bearer {secret}"}
    assert api.client.post("/v1/score", json={"text": "hi"}, headers=header).status_code == 200
    assert api.client.delete(f"/v1/keys/{key_id}", headers=api.auth(Role.ADMIN)).status_code == 204
    assert api.client.post("/v1/score", json={"text": "hi"}, headers=header).status_code == 401
    assert (
        api.client.post(
            "/v1/keys", json={"name": "x", "role": "god"}, headers=api.auth(Role.ADMIN)
        ).status_code
        == 422
    )
    policy = api.client.get("/v1/policy", headers=api.auth(Role.ADMIN)).json()
    assert policy["rules"] and "kys" in policy["banned"]


def test_sqlite_runs_in_wal_mode(tiny_model_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import running_api

    with (
        running_api(tiny_model_dir, f"sqlite:///{tmp_path / 'wal.db'}", tmp_path) as api,
        api.app.state.sessions() as session,
    ):
        assert session.connection().exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert session.connection().exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_default_database_is_a_file_in_the_state_directory(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from commentdesk.settings import Settings

    settings = Settings(data_dir=None, state_dir=tmp_path)
    assert settings.database_url() == f"sqlite:///{tmp_path / 'commentdesk.db'}"
