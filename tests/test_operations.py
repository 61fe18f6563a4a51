"""Operational surface: Prometheus metrics, request ids and JSON logs, per-key rate limits,
CORS closed by default, API keys stored with a slow KDF."""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import re
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from service.auth import Role, authenticate, create_key
from service.db.tables import ApiKey, Comment
from service.logs import JsonFormatter, RequestIdFilter, request_id
from service.ratelimit import RateLimited, RateLimiter
from tests.conftest import Api, run_python, running_api


def sample(metrics: str, name: str, **labels: str) -> float | None:
    """The value of one series in the text exposition, or None when it is absent."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in metrics.splitlines():
        series, _, value = line.rpartition(" ")
        head, _, rest = series.partition("{")
        if head == name and ",".join(sorted(rest.rstrip("}").split(","))) == wanted:
            return float(value)
    return None


def test_metrics_count_requests_model_batches_queue_and_decisions(api: Api) -> None:
    scored = api.client.post("/v1/score", json={"text": "hi"}, headers=api.auth(Role.SCORER))
    assert scored.status_code == 200
    comments = [
        {"source": "ig", "external_id": str(i), "text": f"is the shop open on sunday {i}?"}
        for i in range(3)
    ]
    ingested = api.client.post(
        "/v1/comments", json={"comments": comments}, headers=api.auth(Role.SCORER)
    ).json()
    first = ingested["results"][0]["id"]
    decided = api.client.post(
        f"/v1/queue/{first}/decision", json={"action": "approve"}, headers=api.auth(Role.MODERATOR)
    )
    assert decided.status_code == 200
    api.client.get("/no/such/page/123")

    metrics = api.client.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    latency = "commentdesk_http_request_duration_seconds_count"
    assert sample(text, latency, method="POST", route="/v1/score", status="200") == 1
    decision_route = "/v1/queue/{comment_id}/decision"
    assert sample(text, latency, method="POST", route=decision_route, status="200") == 1
    # Unknown paths share one series: a scanner cannot blow up the number of series.
    assert sample(text, latency, method="GET", route="unmatched", status="404") == 1
    assert "/no/such/page" not in text
    assert (sample(text, "commentdesk_model_batch_size_count") or 0) >= 1
    assert (sample(text, "commentdesk_model_batch_size_sum") or 0) >= 1
    assert sample(text, "commentdesk_decisions_total", action="approve") == 1
    queued = [
        float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if line.startswith("commentdesk_queue_items{")
    ]
    assert sum(queued) == 3, "every ingested comment is counted in some view and status"


def test_metrics_token_is_required_when_configured(tiny_model_dir: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    with running_api(tiny_model_dir, url, tmp_path, server={"metrics_token": "s3cret"}) as api:
        assert api.client.get("/metrics").status_code == 401
        wrong = api.client.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        good = api.client.get("/metrics", headers={"Authorization": "Bearer s3cret"})
        assert good.status_code == 200 and "commentdesk_http_request" in good.text
    with running_api(tiny_model_dir, url, tmp_path, server={"metrics": False}) as api:
        assert api.client.get("/metrics").status_code == 404


def test_start_up_objects_are_left_out_of_garbage_collection_while_serving(
    tiny_model_dir: Path, db_url: str, tmp_path: Path
) -> None:
    with running_api(tiny_model_dir, db_url, tmp_path) as api:
        assert gc.get_freeze_count() > 10_000, "modules, routes and the model are frozen"
        assert api.client.get("/healthz").status_code == 200
    assert gc.get_freeze_count() == 0, "given back at shutdown"


def test_opentelemetry_spans_only_when_the_setting_is_on(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """A process-wide tracer provider (as ``opentelemetry-instrument`` installs) gets FastAPI's
    request spans only with ``server.opentelemetry``; a fresh interpreter, because the global
    provider can be set once."""
    script = f"""
from fastapi.testclient import TestClient
from opentelemetry import trace
from commentdesk.settings import Settings
from service.app import create_app

started = []

class Recording(trace.NoOpTracer):
    def start_span(self, name, *args, **kwargs):
        started.append(name)
        return super().start_span(name, *args, **kwargs)

class Provider(trace.TracerProvider):
    def get_tracer(self, *args, **kwargs):
        return Recording()

trace.set_tracer_provider(Provider())
for on in (False, True):
    started.clear()
    settings = Settings(model_dir={str(tiny_model_dir)!r}, data_dir=None,
                        state_dir={str(tmp_path)!r}, server={{"opentelemetry": on}})
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").status_code == 200
    print(on, len(started))
"""
    off, on = (line.split() for line in run_python(script)[-2:])
    assert off == ["False", "0"]
    assert on[0] == "True" and int(on[1]) >= 1


@pytest.mark.parametrize(
    ("presented", "echoed"),
    [("abc-123.def", True), ("x" * 129, False), ("bad id\nInjected: 1", False), ("", False)],
)
def test_every_response_has_a_request_id(client, presented: str, echoed: bool) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/healthz", headers={"X-Request-ID": presented} if presented else {})
    given = response.headers["X-Request-ID"]
    assert (given == presented) is echoed
    assert re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", given)
    assert client.get("/healthz").headers["X-Request-ID"] != given, "a new id per request"


def test_json_log_lines_carry_the_request_id_and_extras() -> None:
    formatter, stamp = JsonFormatter(), RequestIdFilter()
    token = request_id.set("req-42")
    try:
        record = logging.makeLogRecord(
            {"name": "commentdesk.access", "levelno": 20, "levelname": "INFO", "msg": "%s ok"}
        )
        record.args = ("GET",)
        record.status = 200
        stamp.filter(record)
    finally:
        request_id.reset(token)
    line = json.loads(formatter.format(record))
    assert line["message"] == "GET ok" and line["request_id"] == "req-42"
    assert line["status"] == 200 and line["level"] == "INFO"
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        failed = logging.makeLogRecord({"msg": "failed", "exc_info": sys.exc_info()})
    stamp.filter(failed)
    parsed = json.loads(formatter.format(failed))
    assert "ValueError: boom" in parsed["exception"] and "request_id" not in parsed


def test_a_key_over_its_rate_gets_429_and_nothing_is_done(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'rate.db'}"
    limits = {"rate_limit_per_second": 0.5, "rate_limit_burst": 3}
    with running_api(tiny_model_dir, url, tmp_path, api=limits) as api:
        headers = api.auth(Role.SCORER)
        for i in range(3):
            body = {"comments": [{"source": "s", "external_id": str(i), "text": "hello"}]}
            assert api.client.post("/v1/comments", json=body, headers=headers).status_code == 200
        body = {"comments": [{"source": "s", "external_id": "over", "text": "hello"}]}
        refused = api.client.post("/v1/comments", json=body, headers=headers)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(refused.headers["Retry-After"]) <= 2
        with api.app.state.sessions() as session:
            stored = session.scalars(select(Comment.external_id)).all()
        assert sorted(stored) == ["0", "1", "2"], "the refused request wrote nothing"
        # Limits are per key: another key is still served.
        other = api.client.get("/v1/queue", headers=api.auth(Role.VIEWER))
        assert other.status_code == 200


def test_token_bucket_refills_at_its_rate() -> None:
    limiter = RateLimiter(rate=200.0, burst=2)
    limiter.check(1)
    limiter.check(1)
    with pytest.raises(RateLimited) as refused:
        limiter.check(1)
    assert 0 < refused.value.retry_after <= 1 / 200 + 1e-9
    assert refused.value.retry_after_header == "1"
    limiter.check(2)  # another key has its own bucket
    time.sleep(0.02)
    limiter.check(1)
    RateLimiter(rate=0, burst=1).check(1)  # 0 turns limiting off
    for _ in range(5):
        RateLimiter(rate=0, burst=1).check(1)


def test_cors_is_closed_by_default_and_opens_only_to_configured_origins(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    preflight = {
        "Origin": "https://evil.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    url = f"sqlite:///{tmp_path / 'cors.db'}"
    with running_api(tiny_model_dir, url, tmp_path) as api:
        answer = api.client.options("/v1/score", headers=preflight)
        assert "access-control-allow-origin" not in answer.headers
        simple = api.client.get("/healthz", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in simple.headers
    allowed = {"cors_origins": ["https://brand.example"]}
    with running_api(tiny_model_dir, url, tmp_path, api=allowed) as api:
        ok = api.client.options(
            "/v1/score", headers={**preflight, "Origin": allowed["cors_origins"][0]}
        )
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == "https://brand.example"
        assert "access-control-allow-credentials" not in ok.headers
        evil = api.client.options("/v1/score", headers=preflight)
        assert "access-control-allow-origin" not in evil.headers


def test_keys_are_stored_with_scrypt_and_legacy_hashes_upgrade_on_use(api: Api) -> None:
    with api.app.state.sessions() as session:
        key, plaintext = create_key(session, "new", Role.VIEWER)
        assert (
            key.key_hash.startswith("scrypt$14$") and plaintext.split("_", 2)[2] not in key.key_hash
        )
        assert authenticate(session, f"Bearer {plaintext}").key_id == key.id
        # A key made before scrypt: salted SHA-256, as the first versions stored it.
        legacy, legacy_plain = create_key(session, "old", Role.VIEWER)
        secret = legacy_plain.split("_", 2)[2]
        legacy.key_hash = hashlib.sha256(f"{legacy.salt}:{secret}".encode()).hexdigest()
        session.commit()
        with pytest.raises(Exception, match="unknown API key"):
            authenticate(session, f"Bearer {legacy_plain[:-1]}x")
        assert authenticate(session, f"Bearer {legacy_plain}").key_id == legacy.id
        stored = session.scalar(select(ApiKey.key_hash).where(ApiKey.id == legacy.id))
        assert stored is not None and stored.startswith("scrypt$14$")
        assert authenticate(session, f"Bearer {legacy_plain}").key_id == legacy.id


def test_reads_and_key_checks_never_wait_for_the_sqlite_write_lock(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """A writer holding SQLite's lock (here: another process's long transaction) must not stall
    GET requests or key checks: they take no lock. Were they to wait, they would answer 503
    after the 30 s busy timeout (and, under load, fill the thread pool the holder needs)."""
    url = f"sqlite:///{tmp_path / 'lock.db'}"
    with running_api(tiny_model_dir, url, tmp_path) as api:
        holder = api.app.state.sessions.kw["bind"].connect()
        try:
            # The engine begins every transaction IMMEDIATE: from here the lock is held.
            holder.exec_driver_sql("DELETE FROM ui_sessions")
            started = time.perf_counter()
            page = api.client.get("/v1/queue", headers=api.auth(Role.VIEWER))  # key not cached
            metrics = api.client.get("/metrics")
            elapsed = time.perf_counter() - started
        finally:
            holder.rollback()
            holder.close()
        assert page.status_code == 200 and metrics.status_code == 200
        assert elapsed < 10, f"reads waited {elapsed:.1f} s for the write lock"


def test_after_a_commit_a_requests_transactions_take_no_lock(api: Api) -> None:
    from service.db.engine import SQLITE_BEGIN
    from service.deps import get_session

    class FakeRequest:
        method = "POST"
        app = api.app

    async def run() -> tuple[object, object]:
        sessions = get_session(FakeRequest())  # type: ignore[arg-type]
        session = await anext(sessions)
        before = session.execution_options.get(SQLITE_BEGIN)
        session.commit()
        after = session.execution_options.get(SQLITE_BEGIN)
        await sessions.aclose()
        return before, after

    import asyncio

    assert asyncio.run(run()) == (None, "DEFERRED")


def test_a_re_verified_key_skips_the_kdf_but_not_revocation(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service import auth

    with api.app.state.sessions() as session:
        key, plaintext = create_key(session, "cached", Role.VIEWER)
        header = f"Bearer {plaintext}"
        principal, stored = auth.verify_key(session, header)

        def no_kdf(*_: object) -> str:
            raise AssertionError("the slow hash ran again")

        monkeypatch.setattr(auth, "_hash", no_kdf)
        assert auth.verify_key(session, header, trusted_hash=stored)[0] == principal
        with pytest.raises(AssertionError, match="slow hash"):
            auth.verify_key(session, header)  # without the cache's hash, the KDF runs
        # The trusted hash comes from the cache, keyed by the exact token: no other token has one.
        cache = auth.KeyCache(ttl=0.01)
        cache.put(header, principal, stored)
        time.sleep(0.02)
        assert cache.get(header) is None and cache.verified_hash(header) == stored
        assert cache.verified_hash(header[:-2] + "xy") is None
        auth.revoke_key(session, key.id)
        with pytest.raises(auth.Unauthenticated, match="revoked"):
            auth.verify_key(session, header, trusted_hash=stored)
