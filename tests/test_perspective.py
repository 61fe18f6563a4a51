"""The Perspective-compatible endpoint: same scores as /v1/score, Perspective's shapes and errors,
doNotStore, suggestscore as feedback, and Google's own discovery-based client against a server."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import inspect, select, text

from service.auth import Role
from service.db.tables import ScoreSuggestion
from service.feedback import feedback_rows
from service.perspective import MAX_COMMENT_BYTES, sentences
from tests.conftest import Api, running_api
from tests.server import Server, create_keys

ANALYZE = "/v1alpha1/comments:analyze"
SUGGEST = "/v1alpha1/comments:suggestscore"
TEXT = "What kind of idiot name is foo? Sorry, I like your name."


@pytest.fixture()
def live(tiny_model_dir: Path, tmp_path: Path) -> Iterator[Api]:
    with running_api(tiny_model_dir, f"sqlite:///{tmp_path / 'app.db'}", tmp_path) as running:
        yield running


def analyze(live: Api, body: dict[str, Any], role: Role = Role.SCORER) -> Any:
    return live.client.post(ANALYZE, params={"key": live.keys[role]}, json=body)


def assert_google_error(response: Any, code: int, status: str, error_type: str | None) -> str:
    assert response.status_code == code, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["status"] == status and error["message"]
    if error_type is not None:
        assert error["details"][0]["errorType"] == error_type
    return str(error["message"])


def test_analyze_answers_perspectives_shape_with_the_scores_of_v1_score(live: Api) -> None:
    body = {
        "comment": {"text": TEXT},
        "requestedAttributes": {"TOXICITY": {}, "IDENTITY_ATTACK": {}, "NEEDS_REPLY": {}},
        "languages": ["en"],
        "clientToken": "comment-53922",
    }
    response = analyze(live, body)
    assert response.status_code == 200, response.text
    answer = response.json()
    own = live.client.post("/v1/score", json={"text": TEXT}, headers=live.auth(Role.SCORER)).json()[
        "results"
    ][0]["scores"]
    expected = {
        "TOXICITY": own["offensive"]["offensive"],
        "IDENTITY_ATTACK": own["hate"]["hate"],
        "NEEDS_REPLY": own["question"]["question"],
    }
    assert answer["attributeScores"] == {
        name: {"summaryScore": {"value": value, "type": "PROBABILITY"}}
        for name, value in expected.items()
    }
    assert answer["languages"] == ["en"] and answer["clientToken"] == "comment-53922"


def test_span_annotations_score_each_sentence(live: Api) -> None:
    body = {
        "comment": {"text": TEXT},
        "requestedAttributes": {"TOXICITY": {}},
        "spanAnnotations": True,
    }
    toxicity = analyze(live, body).json()["attributeScores"]["TOXICITY"]
    spans = [(s["begin"], s["end"]) for s in toxicity["spanScores"]]
    assert spans == [(0, 31), (32, 56)]  # Perspective's own example splits the same way
    alone = analyze(
        live, {"comment": {"text": TEXT[32:56]}, "requestedAttributes": {"TOXICITY": {}}}
    )
    assert toxicity["spanScores"][1]["score"]["value"] == pytest.approx(
        alone.json()["attributeScores"]["TOXICITY"]["summaryScore"]["value"], abs=1e-6
    )


def test_sentence_spans() -> None:
    text = 'He said "stop!" Then left.\nNew line here\n\n  ok?   '
    assert [text[b:e] for b, e in sentences(text)] == [
        'He said "stop!"', "Then left.", "New line here", "ok?",
    ]  # fmt: skip
    assert sentences("no end mark") == [(0, 11)]


def test_score_threshold_leaves_out_low_scores(live: Api) -> None:
    body = {"comment": {"text": TEXT}, "requestedAttributes": {"TOXICITY": {}}}
    value = analyze(live, body).json()["attributeScores"]["TOXICITY"]["summaryScore"]["value"]
    above = {"TOXICITY": {"scoreThreshold": min(1.0, value + 0.01)}}
    below = {"TOXICITY": {"scoreThreshold": max(0.0, value - 0.01)}}
    assert analyze(live, {**body, "requestedAttributes": above}).json()["attributeScores"] == {}
    assert (
        "TOXICITY"
        in analyze(live, {**body, "requestedAttributes": below}).json()["attributeScores"]
    )


def test_the_language_is_detected_when_not_given(live: Api) -> None:
    english = analyze(live, {"comment": {"text": TEXT}, "requestedAttributes": {"TOXICITY": {}}})
    assert english.json()["languages"] == ["en"]
    assert english.json()["detectedLanguages"] == ["en"]
    german = "Das ist der schlechteste Kundendienst, den ich je erlebt habe. Ich will mein Geld!"
    response = analyze(live, {"comment": {"text": german}, "requestedAttributes": {"TOXICITY": {}}})
    message = assert_google_error(
        response, 400, "INVALID_ARGUMENT", "LANGUAGE_NOT_SUPPORTED_BY_ATTRIBUTE"
    )
    assert message == "Attribute TOXICITY does not support request languages: de"


@pytest.mark.parametrize(
    ("body", "error_type", "needle"),
    [
        ({"requestedAttributes": {"TOXICITY": {}}}, "COMMENT_EMPTY", "non-empty"),
        ({"comment": {}, "requestedAttributes": {"TOXICITY": {}}}, "COMMENT_EMPTY", "non-empty"),
        ({"comment": {"text": " \n"}, "requestedAttributes": {"TOXICITY": {}}}, "COMMENT_EMPTY", ""),
        ({"comment": {"text": "x" * (MAX_COMMENT_BYTES + 1)}, "requestedAttributes": {"TOXICITY": {}}},
         "COMMENT_TOO_LONG", "20480"),
        ({"comment": {"text": "é" * (MAX_COMMENT_BYTES // 2 + 1)}, "requestedAttributes": {"TOXICITY": {}}},
         "COMMENT_TOO_LONG", "bytes"),
        ({"comment": {"text": "hi"}, "requestedAttributes": {"SEVERE_TOXICITY": {}}},
         "UNKNOWN_ATTRIBUTE", "SEVERE_TOXICITY"),
        ({"comment": {"text": "hi"}, "requestedAttributes": {"TOXICITY": {}}, "languages": ["de"]},
         "LANGUAGE_NOT_SUPPORTED_BY_ATTRIBUTE", "does not support request languages: de"),
        ({"comment": {"text": "hi"}, "requestedAttributes": {}}, None, "at least one attribute"),
        ({"comment": {"text": "hi"}}, None, "at least one attribute"),
        ({"comment": {"text": "hi"}, "requestedAttributes": {"TOXICITY": {"scoreType": "RAW"}}},
         None, "scoreType"),
        ({"comment": {"text": "hi"}, "requestedAttributes": {"TOXICITY": {"scoreThreshold": 2}}},
         None, "scoreThreshold"),
        ({"comment": {"text": "hi", "type": "HTML"}, "requestedAttributes": {"TOXICITY": {}}},
         None, "comment.type"),
        ({"comment": {"text": 5}, "requestedAttributes": {"TOXICITY": {}}}, None, "comment.text"),
        ({"comment": {"text": "hi"}, "requestedAttributes": {"TOXICITY": {}}, "bogus": 1},
         None, "bogus"),
    ],
)  # fmt: skip
def test_bad_requests_get_perspective_errors(
    live: Api, body: dict[str, Any], error_type: str | None, needle: str
) -> None:
    message = assert_google_error(analyze(live, body), 400, "INVALID_ARGUMENT", error_type)
    assert needle in message


def test_malformed_bodies_and_keys(live: Api) -> None:
    key = live.keys[Role.SCORER]
    for raw in (b"", b"{not json", b"[]", '{"comment": {"text": "caf\xe9"}}'.encode("latin-1")):
        response = live.client.post(ANALYZE, params={"key": key}, content=raw)
        assert_google_error(response, 400, "INVALID_ARGUMENT", None)
    body = {"comment": {"text": "hi"}, "requestedAttributes": {"TOXICITY": {}}}
    assert_google_error(live.client.post(ANALYZE, json=body), 403, "PERMISSION_DENIED", None)
    bad_key = live.client.post(ANALYZE, params={"key": "cdk_nope_nope"}, json=body)
    assert "API key not valid" in assert_google_error(bad_key, 400, "INVALID_ARGUMENT", None)
    assert_google_error(analyze(live, body, Role.VIEWER), 403, "PERMISSION_DENIED", None)
    for headers in ({"X-Goog-Api-Key": key}, {"Authorization": f"Bearer {key}"}):
        assert live.client.post(ANALYZE, json=body, headers=headers).status_code == 200


def test_hostile_requests_are_answered_and_change_nothing(live: Api) -> None:
    attributes = {f"ATTR_{i}": {} for i in range(5000)}
    many = analyze(live, {"comment": {"text": "hi"}, "requestedAttributes": attributes})
    assert_google_error(many, 400, "INVALID_ARGUMENT", "UNKNOWN_ATTRIBUTE")
    injection = "'; DROP TABLE comments; -- <script>alert(1)</script> \u0000 ‮"
    response = analyze(live, {"comment": {"text": injection}, "requestedAttributes": {"TOXICITY": {}},
                              "languages": ["en"], "clientToken": injection})  # fmt: skip
    assert response.status_code == 200 and response.json()["clientToken"] == injection
    assert response.headers["content-type"] == "application/json"
    deep = b'{"comment": ' * 2000 + b"{}" + b"}" * 2000
    response = live.client.post(ANALYZE, params={"key": live.keys[Role.SCORER]}, content=deep)
    assert_google_error(response, 400, "INVALID_ARGUMENT", None)
    huge = live.client.post(
        ANALYZE, params={"key": live.keys[Role.SCORER]}, content=b"x" * 9_000_000
    )
    assert huge.status_code == 413
    engine = live.app.state.sessions.kw["bind"]
    assert "comments" in inspect(engine).get_table_names()


def test_do_not_store_keeps_the_comment_out_of_every_table_and_log(
    live: Api, caplog: pytest.LogCaptureFixture
) -> None:
    canary = "zebra-canary-7731 you are all idiots"
    caplog.set_level(logging.DEBUG)
    for body in (
        {"comment": {"text": canary}, "requestedAttributes": {"TOXICITY": {}}},
        {
            "comment": {"text": canary},
            "requestedAttributes": {"TOXICITY": {}},
            "spanAnnotations": True,
        },
        {"comment": {"text": canary}, "requestedAttributes": {"NOPE": {}}},
        {"comment": {"text": canary}, "requestedAttributes": {"TOXICITY": {}}, "languages": ["fr"]},
    ):
        analyze(live, {**body, "doNotStore": True})
    assert "zebra-canary" not in caplog.text
    engine = live.app.state.sessions.kw["bind"]
    with engine.connect() as connection:
        for table in inspect(engine).get_table_names():
            for row in connection.execute(text(f'SELECT * FROM "{table}"')):
                assert "zebra-canary" not in repr(row), table


def test_suggestscore_is_kept_as_moderator_feedback(live: Api) -> None:
    body = {
        "comment": {
            "text": "I guess it comes down a simple choice: get busy living or get busy dying."
        },
        "attributeScores": {
            "TOXICITY": {"summaryScore": {"value": 0}},
            "NEEDS_REPLY": {"summaryScore": {"value": 0.9}},
            "NEGATIVE_SENTIMENT": {"summaryScore": {"value": 0.2}},
        },
        "communityId": "/forum/movies",
        "clientToken": "comment-53922",
    }
    response = live.client.post(SUGGEST, params={"key": live.keys[Role.SCORER]}, json=body)
    assert response.status_code == 200, response.text
    assert response.json()["clientToken"] == "comment-53922"
    with live.app.state.sessions() as session:
        stored = list(session.scalars(select(ScoreSuggestion).order_by(ScoreSuggestion.id)))
        rows = list(feedback_rows(session))
    assert [(s.attribute, s.label, s.community_id) for s in stored] == [
        ("TOXICITY", "not-offensive", "/forum/movies"),
        ("NEEDS_REPLY", "question", "/forum/movies"),
        ("NEGATIVE_SENTIMENT", None, "/forum/movies"),  # "not negative" names no one label
    ]
    assert [(r["task"], r["label"], r["source"]) for r in rows] == [
        ("offensive", "not-offensive", "suggestscore:scorer-1"),
        ("question", "question", "suggestscore:scorer-1"),
    ]
    bad = {**body, "attributeScores": {"TOXICITY": {"summaryScore": {"value": 1.5}}}}
    response = live.client.post(SUGGEST, params={"key": live.keys[Role.SCORER]}, json=bad)
    assert_google_error(response, 400, "INVALID_ARGUMENT", None)
    spans_only = {**body, "attributeScores": {"TOXICITY": {"spanScores": []}}}
    response = live.client.post(SUGGEST, params={"key": live.keys[Role.SCORER]}, json=spans_only)
    assert "summaryScore" in assert_google_error(response, 400, "INVALID_ARGUMENT", None)


@pytest.mark.parametrize(
    "change",
    [
        {"comment": {"text": "you are an idiot\x00"}},
        {"communityId": "/forum\x00"},
        {"clientToken": "\x00"},
    ],
)
def test_suggestscore_refuses_what_the_database_cannot_store(
    tiny_model_dir: Path, db_url: str, tmp_path: Path, change: dict[str, Any]
) -> None:
    """A NUL character in a stored field was a 500 on PostgreSQL; analyze, which stores
    nothing, still scores such a comment."""
    body = {
        "comment": {"text": "you are an idiot"},
        "attributeScores": {"TOXICITY": {"summaryScore": {"value": 0.9}}},
        "languages": ["en"],
        **change,
    }
    with running_api(tiny_model_dir, db_url, tmp_path) as api:
        response = api.client.post(SUGGEST, params={"key": api.keys[Role.SCORER]}, json=body)
        assert "NUL character" in assert_google_error(response, 400, "INVALID_ARGUMENT", None)
        with api.app.state.sessions() as session:
            assert not list(session.scalars(select(ScoreSuggestion)))
        scored = analyze(
            api, {"comment": {"text": "hi\x00"}, "requestedAttributes": {"TOXICITY": {}}}
        )
        assert scored.status_code == 200, scored.text


def test_discovery_document_is_served_without_a_key(client: TestClient) -> None:
    document = client.get("/$discovery/rest", params={"version": "v1alpha1"}).json()
    assert document["rootUrl"] == "http://testserver/"
    methods = document["resources"]["comments"]["methods"]
    assert methods["analyze"]["path"] == "v1alpha1/comments:analyze"
    missing = client.get("/$discovery/rest", params={"version": "v2"})
    assert_google_error(missing, 404, "NOT_FOUND", None)


def test_googles_discovery_client_works_against_a_running_server(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from googleapiclient import discovery
    from googleapiclient.errors import HttpError

    db_url = f"sqlite:///{tmp_path / 'perspective.db'}"
    key, admin = create_keys(db_url, [Role.SCORER, Role.ADMIN])
    server = Server(tiny_model_dir, db_url, tmp_path)
    server.start()
    try:
        service = discovery.build(
            "commentanalyzer",
            "v1alpha1",
            developerKey=key,
            discoveryServiceUrl=f"{server.url}/$discovery/rest?version=v1alpha1",
            static_discovery=False,
            cache_discovery=False,
        )
        request = {
            "comment": {"text": TEXT},
            "requestedAttributes": {"TOXICITY": {}, "POSITIVE_SENTIMENT": {}},
            "languages": ["en"],
        }
        answer = service.comments().analyze(body=request).execute()
        own = httpx.post(
            f"{server.url}/v1/score",
            json={"text": TEXT},
            headers={"Authorization": f"Bearer {key}"},
        ).json()["results"][0]["scores"]
        assert answer["attributeScores"]["TOXICITY"]["summaryScore"]["value"] == pytest.approx(
            own["offensive"]["offensive"], abs=1e-9
        )
        assert answer["attributeScores"]["POSITIVE_SENTIMENT"]["summaryScore"][
            "value"
        ] == pytest.approx(own["sentiment"]["positive"], abs=1e-9)
        suggestion = {
            "comment": {"text": TEXT},
            "attributeScores": {"TOXICITY": {"summaryScore": {"value": 0.05}}},
            "clientToken": "t-1",
        }
        assert service.comments().suggestscore(body=suggestion).execute()["clientToken"] == "t-1"
        with pytest.raises(HttpError) as failed:
            service.comments().analyze(
                body={"comment": {"text": ""}, "requestedAttributes": {"TOXICITY": {}}}
            ).execute()
        assert failed.value.resp.status == 400
        assert failed.value.error_details[0]["errorType"] == "COMMENT_EMPTY"
    finally:
        server.stop()
    log = (tmp_path / "server.log").read_text()
    assert "analyze?key=<redacted>" in log, "the access log has the request line, key redacted"
    # The secret is everything after the second "_" (it may hold "_" itself, or start with one).
    assert key not in log and key.split("_", 2)[2] not in log, "the key is redacted from the log"
    assert admin not in log
