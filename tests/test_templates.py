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


def _labels(
    question: bool = False, sentiment: str = "neutral", offensive: bool = False
) -> tuple[dict[str, str], dict[str, dict[str, float]]]:
    labels = {"question": "question" if question else "not-question", "sentiment": sentiment,
              "offensive": "offensive" if offensive else "not-offensive", "hate": "not-hate"}  # fmt: skip
    scores = {"question": {"question": 0.9 if question else 0.1}, "sentiment": {sentiment: 0.8},
              "offensive": {"offensive": 0.9 if offensive else 0.1}, "hate": {"hate": 0.0}}  # fmt: skip
    return labels, scores


def test_intents_follow_the_labels() -> None:
    assert intents_of(*_labels(question=True))[0][0] is Intent.QUESTION
    assert intents_of(*_labels(sentiment="negative"))[0][0] is Intent.COMPLAINT
    assert intents_of(*_labels(sentiment="positive"))[0][0] is Intent.PRAISE
    assert [i for i, _ in intents_of(*_labels(offensive=True, sentiment="negative"))][:2] == [
        Intent.ABUSE,
        Intent.COMPLAINT,
    ]
    assert intents_of(*_labels())[-1][0] is Intent.GENERIC


def test_rank_prefers_intent_then_similarity_then_usage() -> None:
    templates = [
        TemplateData(1, "thanks", ["praise"], "Thanks {author|there}!"),
        TemplateData(2, "answer", ["question"], "Here is how"),
        TemplateData(3, "answer 2", ["question"], "Another answer", usage=30),
    ]
    intents = intents_of(*_labels(question=True))
    top = rank(templates, intents, np.array([0.9, 0.1, 0.1]), {}, k=3)
    assert [s.template.id for s in top][:2] == [3, 2]  # usage breaks the tie between answers
    assert any("intent question" in r for r in top[0].reasons)
    similar = rank(templates, intents, np.array([0.0, 0.9, 0.1]), {}, k=1)
    assert similar[0].template.id == 2


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
