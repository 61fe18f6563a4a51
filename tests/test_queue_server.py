"""Race and crash tests against the real server process, on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.auth import Role
from tests.server import Server, create_keys


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _batch(prefix: str, n: int) -> list[dict[str, Any]]:
    return [
        {"source": "race", "external_id": f"{prefix}-{i}", "text": f"is this a scam? #{i}"}
        for i in range(n)
    ]


@pytest.fixture()
def server_factory(tiny_model_dir: Path, db_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    servers: list[Server] = []

    def start() -> Server:
        server = Server(tiny_model_dir, db_url, tmp_path, port=servers[0].port if servers else 0)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def test_four_moderators_claim_every_item_exactly_once(server_factory, db_url: str) -> None:  # type: ignore[no-untyped-def]
    scorer, *moderators = create_keys(db_url, [Role.SCORER] + [Role.MODERATOR] * 4)
    server = server_factory()
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for start in range(0, 2000, 500):
            response = client.post(
                "/v1/comments",
                json={"comments": _batch("r", 2000)[start : start + 500]},
                headers=_auth(scorer),
            )
            assert response.status_code == 200 and response.json()["created"] == 500
    claimed: list[list[int]] = [[] for _ in moderators]
    errors: list[str] = []

    def work(index: int) -> None:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            while True:
                response = client.post(
                    "/v1/queue/claim", json={"count": 20}, headers=_auth(moderators[index])
                )
                if response.status_code != 200:
                    errors.append(response.text)
                    return
                items = response.json()
                if not items:
                    return
                claimed[index].extend(item["id"] for item in items)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(moderators))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors
    everything = [item for part in claimed for item in part]
    assert len(everything) == 2000
    assert len(set(everything)) == 2000
    assert sum(1 for part in claimed if part) >= 2  # the work really was shared


def test_kill_9_loses_no_acknowledged_write_and_duplicates_nothing(
    server_factory, db_url: str
) -> None:  # type: ignore[no-untyped-def]
    scorer, moderator = create_keys(db_url, [Role.SCORER, Role.MODERATOR])
    server = server_factory()
    acked_comments: dict[str, int] = {}
    acked_decisions: list[int] = []
    sent: list[list[dict[str, Any]]] = []
    stop = threading.Event()

    def stream() -> None:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            round_ = 0
            while not stop.is_set():
                batch = _batch(f"k{round_}", 5)
                sent.append(batch)
                round_ += 1
                try:
                    response = client.post(
                        "/v1/comments", json={"comments": batch}, headers=_auth(scorer)
                    )
                    if response.status_code == 200:
                        for item, result in zip(batch, response.json()["results"], strict=True):
                            acked_comments[item["external_id"]] = result["id"]
                    claim = client.post(
                        "/v1/queue/claim", json={"count": 1}, headers=_auth(moderator)
                    )
                    for item in claim.json():
                        decided = client.post(
                            f"/v1/queue/{item['id']}/decision",
                            json={"action": "approve"},
                            headers=_auth(moderator),
                        )
                        if decided.status_code == 200:
                            acked_decisions.append(item["id"])
                except httpx.TransportError:
                    return

    thread = threading.Thread(target=stream)
    thread.start()
    time.sleep(3)
    server.kill()
    stop.set()
    thread.join(timeout=30)
    assert len(acked_comments) >= 20 and acked_decisions, (
        "the stream did too little before the kill"
    )

    restarted = server_factory()
    with httpx.Client(base_url=restarted.url, timeout=60) as client:
        for external_id, comment_id in acked_comments.items():
            detail = client.get(f"/v1/comments/{comment_id}", headers=_auth(moderator))
            assert detail.status_code == 200 and detail.json()["item"]["external_id"] == external_id
        for comment_id in acked_decisions:
            history = client.get(f"/v1/comments/{comment_id}", headers=_auth(moderator)).json()[
                "history"
            ]
            assert [h["action"] for h in history] == ["approve"]
        # Re-sending everything, the batch in flight at the kill included, stores nothing twice.
        created_again = 0
        for batch in sent:
            body = client.post(
                "/v1/comments", json={"comments": batch}, headers=_auth(scorer)
            ).json()
            created_again += body["created"]
            for item, result in zip(batch, body["results"], strict=True):
                if item["external_id"] in acked_comments:
                    assert result["status"] == "duplicate"
                    assert result["id"] == acked_comments[item["external_id"]]
        assert created_again <= 5  # at most the one batch whose answer the kill swallowed
        stats = client.get("/v1/stats", headers=_auth(moderator)).json()
        total = sum(stats["views"]["all"].values())
        assert total == len({item["external_id"] for batch in sent for item in batch})
