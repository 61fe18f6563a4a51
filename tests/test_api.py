from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from commentdesk.settings import Settings
from model.tasks import LABELS, Task
from service.app import ModelNotServable, create_app
from service.auth import Role, create_key
from tests.conftest import running_api


def test_single_text_scores_every_task(client: TestClient) -> None:
    response = client.post("/v1/score", json={"text": "I love this, thanks!"})
    assert response.status_code == 200
    body = response.json()
    assert body["model"]["name"] == "commentdesk-baseline"
    assert body["model"]["version"]
    [result] = body["results"]
    assert result["id"] is None
    assert set(result["labels"]) == {t.value for t in Task}
    for task in Task:
        scores = result["scores"][task.value]
        assert list(scores) == list(LABELS[task])
        assert sum(scores.values()) == pytest.approx(1.0, abs=1e-6)
        assert result["labels"][task.value] in LABELS[task]


def test_batch_keeps_ids_and_order(client: TestClient) -> None:
    comments = [{"id": f"c{i}", "text": f"comment number {i}"} for i in range(5)]
    response = client.post("/v1/score", json={"comments": comments})
    assert response.status_code == 200
    assert [r["id"] for r in response.json()["results"]] == [c["id"] for c in comments]


@pytest.mark.parametrize(
    "text",
    [
        "😀😀 great 👍",
        "هذا رائع جدا",
        "שלום עולם",
        "zero\u200bwidth\u200d join",
        "a",
        "\u202eevil rtl",
    ],
)
def test_unusual_but_valid_text_scores_normally(client: TestClient, text: str) -> None:
    response = client.post("/v1/score", json={"text": text})
    assert response.status_code == 200, response.text


def test_limit_sized_batch_is_accepted(client: TestClient) -> None:
    comments = [{"id": str(i), "text": "ok"} for i in range(256)]
    assert client.post("/v1/score", json={"comments": comments}).status_code == 200


@pytest.mark.parametrize(
    ("payload", "status", "fragment"),
    [
        ({"text": ""}, 422, "empty"),
        ({"text": "   \n\t "}, 422, "empty"),
        ({"text": "x" * 5001}, 422, "5001 characters; the limit is 5000"),
        ({"comments": [{"id": str(i), "text": "hi"} for i in range(257)]}, 413, "257 comments"),
        ({"comments": [{"id": "a", "text": "fine"}, {"id": "b", "text": " "}]}, 422, "comment 1"),
        ({"text": 42}, 422, "string"),
        ({"text": ["a"]}, 422, "string"),
        ({"comments": "text"}, 422, "list"),
        ({"comments": [{"id": 5, "text": "x"}]}, 422, "string"),
        ({"comments": []}, 422, "empty"),
        ({}, 422, "either 'text' or 'comments'"),
        ({"text": "a", "comments": [{"text": "b"}]}, 422, "not both"),
        ({"text": "a", "threshold": 0.1}, 422, "Extra inputs"),
    ],
)
def test_bad_requests_get_clear_errors(
    client: TestClient, payload: object, status: int, fragment: str
) -> None:
    response = client.post("/v1/score", json=payload)
    assert response.status_code == status
    assert fragment in response.text


def test_invalid_json_is_a_clear_error(client: TestClient) -> None:
    response = client.post(
        "/v1/score", content=b'{"text": "unterminated', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert "JSON" in response.text


def test_invalid_utf8_body_is_rejected(client: TestClient) -> None:
    response = client.post(
        "/v1/score", content=b'{"text": "\xff\xfe"}', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert "error parsing the body" in response.text


def test_an_unpaired_surrogate_is_a_clear_error_not_a_crash(client: TestClient) -> None:
    """JSON can spell half an emoji (\\ud83d alone); no tokenizer or database takes it."""
    for body in (b'{"text": "cut emoji \\ud83d here"}', b'{"comments": [{"text": "\\udc00"}]}'):
        response = client.post(
            "/v1/score", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 422, response.text
        assert "unpaired surrogate" in response.json()["error"]["message"]
    ingest = b'{"comments": [{"source": "s", "external_id": "1", "text": "x \\ud83d"}]}'
    response = client.post(
        "/v1/comments", content=ingest, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422 and "unpaired surrogate" in response.text
    whole = b'{"text": "a whole emoji \\ud83d\\ude00"}'
    response = client.post("/v1/score", content=whole, headers={"content-type": "application/json"})
    assert response.status_code == 200


def test_huge_body_is_rejected_before_parsing(client: TestClient) -> None:
    comments = [{"id": str(i), "text": "y" * 5000} for i in range(2000)]
    response = client.post("/v1/score", json={"comments": comments})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"


def test_streamed_body_without_length_is_counted(client: TestClient) -> None:
    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(100):
            yield b"x" * 100_000

    response = client.post(
        "/v1/score", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "detail": {}}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["detail"]["model"] == "commentdesk-baseline"


def test_missing_model_refuses_to_start_unless_asked_to_stay_up_not_ready(tmp_path: Path) -> None:
    settings = Settings(model_dir=tmp_path / "nothing", data_dir=None, state_dir=tmp_path)
    with pytest.raises(ModelNotServable, match="does not exist"), TestClient(create_app(settings)):
        pass
    settings.server.require_model = False
    app = create_app(settings)
    with TestClient(app) as client, app.state.sessions() as session:
        client.headers["Authorization"] = f"Bearer {create_key(session, 'x', Role.SCORER)[1]}"
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert "does not exist" in ready.json()["detail"]["error"]
        response = client.post("/v1/score", json={"text": "hello"})
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "model_not_ready"


def test_limits_come_from_settings(tiny_model_dir: Path, tmp_path: Path) -> None:
    limits = {"max_comments": 2, "max_chars": 10}
    with running_api(tiny_model_dir, f"sqlite:///{tmp_path / 'db'}", tmp_path, api=limits) as api:
        client = api.client
        client.headers.update(api.auth(Role.SCORER))
        assert client.post("/v1/score", json={"text": "x" * 11}).status_code == 422
        three = {"comments": [{"text": "a"}, {"text": "b"}, {"text": "c"}]}
        assert client.post("/v1/score", json=three).status_code == 413


def test_openapi_documents_fields_and_examples(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    assert components["CommentScore"]["properties"]["scores"]["description"]
    assert components["ScoreRequest"]["examples"]
    assert "/v1/score" in schema["paths"]
    assert client.get("/docs").status_code == 200
