"""API fuzzing (schemathesis): every operation of the OpenAPI document, once per role, with
generated valid and invalid requests (schemathesis' examples, coverage and fuzzing phases: the
coverage phase also sends requests without a key and with unsupported methods). The bar: no server
error (a 5xx other than the intended overload 503s), no status code the document does not declare,
and every answer matches the content type and schema declared for its status code.

The app runs in-process on the tiny model and a SQLite file, seeded with comments, reply templates
and a finished batch job so that small generated ids also reach existing rows.

Not in the document, so not fuzzed here (``test_every_api_route_is_in_the_fuzzed_document``
keeps this list honest): the moderator web page under ``/ui`` (HTML pages and form posts behind a
session cookie and a CSRF token; tests/test_ui.py and tests/test_ui_security.py cover it),
its static files, and FastAPI's own ``/openapi.json``, ``/docs`` and ``/redoc``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from fastapi import APIRouter
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import update

from commentdesk.settings import Settings
from service.app import create_app
from service.auth import Role
from service.db.tables import ApiKey
from service.replies import load_defaults
from service.routes import admin, batches, comments, health, perspective, queue, score, templates
from service.ui import routes as ui
from tests.conftest import Api, running_api
from tests.test_batch_jobs import comments_csv, upload, wait_done

# The document the app serves; the app it describes runs in the ``fuzzed`` fixture.
schema = schemathesis.openapi.from_dict(create_app(Settings(data_dir=None)).openapi())

# Random examples locally (to keep finding new cases); a fixed sequence in CI, so that a run
# reproduces and a red CI is never a coin toss.
FUZZ = settings(
    max_examples=25,
    deadline=None,
    derandomize=os.environ.get("CI") == "true",
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)

# Answers the API gives on purpose when it is overloaded or its database is away.
INTENDED_503 = {"scoring_timeout", "database_unavailable"}


def no_unintended_server_error(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case[Any]
) -> bool | None:
    """``not_a_server_error``, except for the 503s the API is designed to give (they carry
    Retry-After and say why); any other 5xx fails."""
    if response.status_code == 503:
        try:
            code = response.json()["error"]["code"]
        except (ValueError, KeyError, TypeError):
            code = None
        if code in INTENDED_503 and "retry-after" in response.headers:
            return None
    result: bool | None = not_a_server_error(ctx, response, case)
    return result


CHECKS = [
    no_unintended_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def fuzzed(
    tiny_model_dir: Path,
    tiny_replies: dict[str, object],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Api]:
    """One running app for the whole module, with data behind small ids; reply suggestions (on
    queue items too) embed with the tiny encoder. Keys stay cached and are not rate limited: the
    fuzzer sends far more requests a second than a client would."""
    tmp_path = tmp_path_factory.mktemp("fuzz")
    url = f"sqlite:///{tmp_path / 'fuzz.db'}"
    with running_api(
        tiny_model_dir,
        url,
        tmp_path,
        api={"key_cache_seconds": 3600, "rate_limit_per_second": 0},
        replies={**tiny_replies, "queue_suggestions": 2},
    ) as api:
        with api.app.state.sessions() as session:
            load_defaults(session)
        comments = [
            {"source": "twitter", "external_id": str(i), "text": text, "author": "@ann"}
            for i, text in enumerate(
                [
                    "@brand where is my refund??",
                    "you are all idiots",
                    "Love the new app!",
                    "the parcel never arrived, can you check?",
                    "meh",
                ]
            )
        ]
        ingested = api.client.post(
            "/v1/comments", json={"comments": comments}, headers=api.auth(Role.SCORER)
        )
        assert ingested.status_code == 200, ingested.text
        job = upload(api, "comments.csv", comments_csv(20)).json()
        assert wait_done(api, job["id"])["status"] == "done"
        yield api


def _restore_keys(api: Api) -> None:
    """The fuzzer may revoke the very keys it sends (``DELETE /v1/keys/{id}``): bring them back
    (the route drops a revoked key from the key cache, so the next request looks it up again)."""
    prefixes = [key.split("_")[1] for key in api.keys.values()]
    with api.app.state.sessions() as session:
        session.execute(update(ApiKey).where(ApiKey.prefix.in_(prefixes)).values(revoked_at=None))
        session.commit()


def _send(api: Api, case: schemathesis.Case[Any], role: Role) -> Any:
    """Send the case through the app's own test client (its lifespan runs on that client's event
    loop); schemathesis prepares ``requests`` arguments, so ``requests`` encodes the body."""
    kwargs = case.as_transport_kwargs(base_url=str(api.client.base_url), headers=api.auth(role))
    kwargs.pop("cookies", None)
    files, data = kwargs.pop("files", None), kwargs.pop("data", None)
    if files and case.operation.path == "/v1/batches":
        # OpenAPI cannot describe a file name, and the generated one ("file") has no known
        # extension: name the upload so that generated bodies also reach the job queue.
        files = [
            (field, ("comments.csv", *part[1:]) if field == "file" and part[0] else part)
            for field, part in files
        ]
    if files is not None or data is not None:
        body = requests.PreparedRequest()
        body.prepare_headers(None)
        body.prepare_body(data, files)
        headers = kwargs["headers"]
        content_type = body.headers.get("Content-Type")
        if content_type and (files or not any(k.lower() == "content-type" for k in headers)):
            headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
            kwargs["headers"] = {**headers, "Content-Type": content_type}
        kwargs["content"] = body.body
    return api.client.request(**kwargs)


@pytest.mark.parametrize("role", list(Role), ids=[role.value for role in Role])
@schema.parametrize()
@FUZZ
def test_api(case: schemathesis.Case[Any], role: Role, fuzzed: Api) -> None:
    response = _send(fuzzed, case, role)
    if case.operation.path == "/v1/keys/{key_id}":
        _restore_keys(fuzzed)
    case.validate_response(response, checks=CHECKS)


def test_every_api_route_is_in_the_fuzzed_document() -> None:
    """Every route of the API's routers is an operation of the document fuzzed above; the only
    routes left out of it are the web page's (see the module docstring)."""
    documented = {
        (method.upper(), path)
        for path, item in schema.raw_schema["paths"].items()
        for method in item
    }
    modules = (admin, batches, comments, health, perspective, queue, score, templates)
    routers = [obj for m in modules for obj in vars(m).values() if isinstance(obj, APIRouter)]
    api_routes = {
        (method, route.path)
        for router in routers
        for route in router.routes
        if isinstance(route, APIRoute)
        for method in route.methods or ()
    }
    assert api_routes and api_routes <= documented, api_routes - documented
    assert ("GET", "/$discovery/rest") in documented
    assert ("POST", "/v1alpha1/comments:analyze") in documented
    assert all(
        not route.include_in_schema for route in ui.router.routes if isinstance(route, APIRoute)
    )
