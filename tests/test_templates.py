"""Reply templates: safe rendering, intents, ranking, and the API (on both databases)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.auth import Role
from service.templates import Intent, TemplateData, intents_of, load_library, rank, render
from tests.conftest import Api, running_api


@pytest.mark.parametrize(
    ("body", "variables", "expected", "missing"),
    [
        ("Hi {author}!", {"author": "@ann"}, "Hi @ann!", []),
        ("Hi {author|there}!", {}, "Hi there!", []),
        ("Hi {author|there}!", {"author": "   "}, "Hi there!", []),
        ("Hi {author}, {brand}", {"author": "Bo"}, "Hi Bo, {brand}", ["brand"]),
        ("{{ ''.__class__ }}", {"author": "x"}, "{{ ''.__class__ }}", []),
        ("{author.__class__}", {"author": "x"}, "{author.__class__}", []),
        ("{author!r} {0} {}", {"author": "x"}, "{author!r} {0} {}", []),
        ("{author:>999999}", {"author": "x"}, "{author:>999999}", []),
        (
            "Hi {author}",
            {"author": "<script>alert(1)</script>"},
            "Hi <script>alert(1)</script>",
            [],
        ),
        ("{author}", {"author": "{brand}"}, "{brand}", []),
        ("{author}", {"author": "a\x00b\u202ec"}, "abc", []),
    ],
)
def test_render_is_plain_substitution(
    body: str, variables: dict[str, Any], expected: str, missing: list[str]
) -> None:
    rendered = render(body, variables)
    assert rendered.text == expected
    assert rendered.missing == missing


def test_render_caps_huge_values_and_never_raises() -> None:
    assert len(render("{author}", {"author": "x" * 1_000_000}).text) == 200
    assert render("{author}", {"author": None}).missing == ["author"]
    assert render("{" * 10_000 + "author}", {"author": "a"}).text.endswith("a")


def test_default_library_is_large_and_renders_without_variables() -> None:
    library = load_library()
    assert len(library) >= 25
    assert {intent for entry in library for intent in entry["intents"]} == {i.value for i in Intent}
    for entry in library:
        assert render(entry["body"], {}).missing == [], entry["name"]
        assert entry["examples"]


def _scores(
    question: bool = False, sentiment: str = "neutral", offensive: bool = False
) -> dict[str, dict[str, float]]:
    return {"question": {"question": 0.9 if question else 0.1}, "sentiment": {sentiment: 0.8},
            "offensive": {"offensive": 0.9 if offensive else 0.1}, "hate": {"hate": 0.0}}  # fmt: skip


def test_intents_follow_the_probabilities() -> None:
    assert intents_of(_scores(question=True))[0][0] is Intent.QUESTION
    assert intents_of(_scores(sentiment="negative"))[0][0] is Intent.COMPLAINT
    assert intents_of(_scores(sentiment="positive"))[0][0] is Intent.PRAISE
    assert intents_of(_scores())[0][0] is Intent.GENERIC
    assert [i for i, _ in intents_of(_scores(offensive=True, sentiment="negative"))][:2] == [
        Intent.ABUSE,
        Intent.COMPLAINT,
    ]
    # Question, complaint, praise and generic share one probability mass.
    shared = dict(intents_of(_scores(question=True, sentiment="negative")))
    assert shared[Intent.QUESTION] == pytest.approx(0.9)
    assert shared[Intent.COMPLAINT] == pytest.approx(0.1 * 0.8)


def test_rank_prefers_intent_then_similarity_then_usage() -> None:
    templates = [
        TemplateData(1, "thanks", ["praise"], "Thanks {author|there}!"),
        TemplateData(2, "answer", ["question"], "Here is how"),
        TemplateData(3, "answer 2", ["question"], "Another answer", usage=30),
    ]
    intents = intents_of(_scores(question=True))
    top = rank(templates, intents, np.array([0.9, 0.1, 0.1]), {}, k=3)
    assert [s.template.id for s in top][:2] == [3, 2]  # usage breaks the tie between answers
    assert any("question (p=0.90)" in r for r in top[0].reasons)
    similar = rank(templates, intents, np.array([0.0, 0.9, 0.1]), {}, k=1)
    assert similar[0].template.id == 2


def test_rank_covers_several_intents_and_keeps_abuse_templates_for_abuse() -> None:
    templates = [
        TemplateData(1, "answer", ["question"], "Here is how"),
        TemplateData(2, "apology and answer", ["complaint", "question"], "Sorry, here is how"),
        TemplateData(3, "calm down, then help", ["abuse", "complaint"], "Please stay civil"),
        TemplateData(4, "apology", ["complaint"], "Sorry"),
    ]
    flat = np.zeros(len(templates))
    angry_question = intents_of(_scores(question=True, sentiment="negative"))
    assert rank(templates, angry_question, flat, {}, k=1)[0].template.id == 2
    complaint = intents_of(_scores(sentiment="negative"))
    assert [s.template.id for s in rank(templates, complaint, flat, {}, k=4)][-1] == 3
    assert rank(templates, complaint, flat, {}, k=1)[0].template.id in {2, 4}
    abusive = intents_of(_scores(sentiment="negative", offensive=True))
    assert rank(templates, abusive, flat, {}, k=1)[0].template.id in {2, 3, 4}
    scores = {s.template.id: s.score for s in rank(templates, abusive, flat, {}, k=4)}
    assert scores[3] > scores[1]  # the abuse template only rises when the comment is abusive
    assert scores[3] == pytest.approx(0.9 * 0.72)


@pytest.fixture()
def replies_api(
    tiny_model_dir: Path, db_url: str, tmp_path: Path, tiny_replies: dict[str, object]
) -> Any:
    with running_api(
        tiny_model_dir, db_url, tmp_path, replies={**tiny_replies, "queue_suggestions": 2}
    ) as api:
        from service.replies import load_defaults

        with api.app.state.sessions() as session:
            load_defaults(session)
        yield api


def test_template_crud(replies_api: Api) -> None:
    admin = replies_api.auth(Role.ADMIN)
    client = replies_api.client
    created = client.post(
        "/v1/templates",
        json={"name": "Custom", "intents": ["question"], "body": "Hi {author}"},
        headers=admin,
    )
    assert created.status_code == 201
    template_id = created.json()["id"]
    assert client.get(f"/v1/templates/{template_id}", headers=admin).json()["body"] == "Hi {author}"
    updated = client.put(
        f"/v1/templates/{template_id}",
        json={"name": "Custom", "intents": ["praise"], "body": "Yay", "enabled": False},
        headers=admin,
    )
    assert updated.status_code == 200 and updated.json()["enabled"] is False
    assert len(client.get("/v1/templates", headers=admin).json()) == len(load_library()) + 1
    assert (
        client.post(
            "/v1/templates", json={"name": "x", "intents": ["gossip"], "body": "b"}, headers=admin
        ).status_code
        == 422
    )
    assert client.delete(f"/v1/templates/{template_id}", headers=admin).status_code == 204
    assert client.get(f"/v1/templates/{template_id}", headers=admin).status_code == 404


def test_a_name_another_template_has_is_a_409_not_a_crash(replies_api: Api) -> None:
    """Names are unique in the database; a clash was an IntegrityError (500)."""
    admin, client = replies_api.auth(Role.ADMIN), replies_api.client
    body = {"name": "Refund status", "intents": ["question"], "body": "On its way, {author}!"}
    assert client.post("/v1/templates", json=body, headers=admin).status_code == 201
    again = client.post("/v1/templates", json=body, headers=admin)
    assert again.status_code == 409, again.text
    assert again.json()["error"]["code"] == "duplicate_name"
    other = client.post("/v1/templates", json={**body, "name": "Other"}, headers=admin).json()
    renamed = client.put(f"/v1/templates/{other['id']}", json=body, headers=admin)
    assert renamed.status_code == 409 and "Refund status" in renamed.json()["error"]["message"]
    assert client.get(f"/v1/templates/{other['id']}", headers=admin).json()["name"] == "Other"
    names = [t["name"] for t in client.get("/v1/templates", headers=admin).json()]
    assert names.count("Refund status") == 1


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/templates", {"name": "a\x00b", "intents": ["generic"], "body": "b"}),
        ("POST", "/v1/templates", {"name": "n", "intents": ["generic"], "body": "b\x00"}),
        ("POST", "/v1/templates", {"name": "n", "intents": ["generic"], "body": "b", "examples": ["\x00"]}),
        ("GET", f"/v1/templates/{2**63}", None),
        ("PUT", f"/v1/templates/{2**31}", {"name": "n", "intents": ["generic"], "body": "b"}),
        ("DELETE", f"/v1/templates/{2**63}", None),
        ("POST", "/v1/replies/suggest", {"comment_id": 2**63}),
    ],
)  # fmt: skip
def test_what_the_database_cannot_store_is_a_clear_422(
    replies_api: Api, method: str, path: str, body: Any
) -> None:
    """NUL characters (PostgreSQL) and ids beyond 32 bits (SQLite overflowed) were 500s."""
    response = replies_api.client.request(
        method, path, json=body, headers=replies_api.auth(Role.ADMIN)
    )
    assert response.status_code == 422, response.text
    assert "NUL character" in response.text or "2147483647" in response.text


def test_suggestions_by_text_comment_score_and_queue(replies_api: Api) -> None:
    client = replies_api.client
    moderator = replies_api.auth(Role.MODERATOR)
    response = client.post(
        "/v1/replies/suggest",
        json={"text": "where is my order?", "k": 3, "variables": {"author": "@ann"}},
        headers=moderator,
    )
    assert response.status_code == 200, response.text
    suggestions = response.json()
    assert len(suggestions) == 3 and suggestions[0]["score"] >= suggestions[-1]["score"]
    assert all(s["reasons"] and "{author" not in s["text"] for s in suggestions)
    assert (
        client.post("/v1/replies/suggest", json={"text": "  "}, headers=moderator).status_code
        == 422
    )
    assert client.post("/v1/replies/suggest", json={"k": 3}, headers=moderator).status_code == 422
    scored = client.post(
        "/v1/score",
        json={"text": "thanks!", "suggest_replies": 2},
        headers=replies_api.auth(Role.SCORER),
    )
    assert len(scored.json()["results"][0]["suggestions"]) == 2
    ingested = client.post(
        "/v1/comments",
        json={
            "comments": [
                {"source": "t", "external_id": "1", "text": "is this a scam?", "author": "@bob"}
            ]
        },
        headers=replies_api.auth(Role.SCORER),
    ).json()
    comment_id = ingested["results"][0]["id"]
    by_id = client.post(
        "/v1/replies/suggest", json={"comment_id": comment_id, "k": 1}, headers=moderator
    ).json()
    assert len(by_id) == 1
    [item] = client.get("/v1/queue", headers=replies_api.auth(Role.VIEWER)).json()["items"]
    assert len(item["suggestions"]) == 2
    template_id = by_id[0]["template_id"]
    decided = client.post(
        f"/v1/queue/{comment_id}/decision",
        json={"action": "reply", "reply_text": by_id[0]["text"], "template_id": template_id},
        headers=moderator,
    )
    assert decided.status_code == 200
    template = client.get(
        f"/v1/templates/{template_id}", headers=replies_api.auth(Role.ADMIN)
    ).json()
    assert template["usage_count"] == 1
    bad = client.post(
        f"/v1/queue/{comment_id}/decision",
        json={"action": "approve", "template_id": template_id},
        headers=moderator,
    )
    assert bad.status_code == 422
    assert "only goes with the reply action" in bad.text


def test_suggestions_follow_template_edits_and_new_decisions(replies_api: Api) -> None:
    """Templates, embeddings and usage are cached in memory; every write must show at once."""
    client = replies_api.client
    admin, moderator = replies_api.auth(Role.ADMIN), replies_api.auth(Role.MODERATOR)
    text = "zebra crossing parade tomorrow"

    def top_ids() -> list[int]:
        found = client.post("/v1/replies/suggest", json={"text": text, "k": 20}, headers=moderator)
        return [s["template_id"] for s in found.json()]

    # Every non-abuse intent and the comment itself as an example: the highest possible score.
    intents = ["question", "complaint", "praise", "generic"]
    body = {"name": "Zebra", "intents": intents, "body": "Zebra!", "examples": [text]}
    template_id = client.post("/v1/templates", json=body, headers=admin).json()["id"]
    assert top_ids()[0] == template_id
    client.put(f"/v1/templates/{template_id}", json={**body, "enabled": False}, headers=admin)
    assert template_id not in top_ids()
    client.put(f"/v1/templates/{template_id}", json=body, headers=admin)
    assert top_ids()[0] == template_id

    ingested = client.post(
        "/v1/comments",
        json={"comments": [{"source": "t", "external_id": "z", "text": text}]},
        headers=replies_api.auth(Role.SCORER),
    ).json()
    comment_id = ingested["results"][0]["id"]
    client.post(
        f"/v1/queue/{comment_id}/decision",
        json={"action": "reply", "reply_text": "Zebra!", "template_id": template_id},
        headers=moderator,
    )
    found = client.post("/v1/replies/suggest", json={"text": text, "k": 1}, headers=moderator)
    assert "sent 1 times by moderators for this intent" in found.json()[0]["reasons"]

    assert client.delete(f"/v1/templates/{template_id}", headers=admin).status_code == 204
    assert template_id not in top_ids()
