"""Batch jobs over HTTP: upload, progress, result, bad uploads, restart of the server."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from model.scorer import Scorer
from service.auth import Role
from service.batch import score_file
from service.db.tables import BatchJob
from tests.conftest import Api, running_api


def upload(api: Api, name: str, content: bytes, **form: str) -> Any:
    return api.client.post(
        "/v1/batches",
        files={"file": (name, content)},
        data=form,
        headers=api.auth(Role.SCORER),
    )


def wait_done(api: Api, job_id: int, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = api.client.get(
            f"/v1/batches/{job_id}", headers=api.auth(Role.SCORER)
        ).json()
        if job["status"] in ("done", "failed"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


def comments_csv(rows: int) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["comment_id", "message", "likes"])
    for i in range(rows):
        writer.writerow([f"c{i}", f"comment {i}: is order {i % 31} shipped?", i % 7])
    writer.writerow(["c-empty", "", 0])
    return buffer.getvalue().encode()


@pytest.fixture()
def api(tiny_model_dir: Path, tmp_path: Path) -> Any:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    with running_api(tiny_model_dir, url, tmp_path, batch={"chunk_rows": 100}) as running:
        yield running


def test_upload_score_and_download(api: Api, tiny_scorer: Scorer, tmp_path: Path) -> None:
    content = comments_csv(1000)
    created = upload(api, "export.csv", content, output_format="jsonl")
    assert created.status_code == 202, created.text
    job = wait_done(api, created.json()["id"])
    assert job["status"] == "done", job
    assert (job["rows_total"], job["rows_done"], job["rows_failed"]) == (1001, 1001, 1)
    assert job["text_column"] == "message"
    result = api.client.get(job["result_url"], headers=api.auth(Role.SCORER))
    assert result.status_code == 200
    assert "export.scored.jsonl" in result.headers["content-disposition"]
    # The same bytes as the CLI's batch scoring of the same file.
    local = tmp_path / "local.csv"
    local.write_bytes(content)
    score_file(tiny_scorer, local, tmp_path / "local.jsonl", chunk_rows=100)
    assert result.content == (tmp_path / "local.jsonl").read_bytes()
    errors = api.client.get(job["errors_url"], headers=api.auth(Role.SCORER))
    assert b'"id": "c-empty"' in errors.content and b"text is empty" in errors.content


def test_jobs_need_a_scoring_key(api: Api) -> None:
    anonymous = api.client.post("/v1/batches", files={"file": ("a.csv", b"text\nhi\n")})
    assert anonymous.status_code == 401
    viewer = api.client.get("/v1/batches/1", headers=api.auth(Role.VIEWER))
    assert viewer.status_code == 403


@pytest.mark.parametrize(
    ("name", "content", "form", "status", "message"),
    [
        ("notes.txt", b"text\nhi\n", {}, 422, "unknown file type"),
        ("a.csv", b"text\nhi\n", {"output_format": "xlsx"}, 422, "unknown file type"),
        ("a.csv", b"x" * 3000, {}, 413, "over 2048 bytes"),
    ],
)
def test_bad_uploads_are_refused_with_a_reason(
    tiny_model_dir: Path,
    tmp_path: Path,
    name: str,
    content: bytes,
    form: dict[str, str],
    status: int,
    message: str,
) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    with running_api(tiny_model_dir, url, tmp_path, batch={"max_upload_bytes": 2048}) as api:
        response = upload(api, name, content, **form)
        assert response.status_code == status
        assert message in response.json()["error"]["message"]
        assert not list((tmp_path / "batches").glob("*/*")), "nothing of a refused upload is kept"


def upload_raw(api: Api, name: str, content: bytes) -> Any:
    """An upload whose file name goes on the wire as is (httpx would escape a NUL as %00)."""
    body = (
        b"--b0undary\r\n"
        b'Content-Disposition: form-data; name="file"; filename="' + name.encode() + b'"\r\n'
        b"Content-Type: text/csv\r\n\r\n" + content + b"\r\n--b0undary--\r\n"
    )
    headers = {**api.auth(Role.SCORER), "Content-Type": "multipart/form-data; boundary=b0undary"}
    return api.client.post("/v1/batches", content=body, headers=headers)


@pytest.mark.parametrize(
    ("name", "form", "message"),
    [
        ("x" * 300 + ".csv", {}, "the limit is 300"),
        ("a\x00b.csv", {}, "NUL character"),
        ("a.csv", {"text_column": "te\x00xt"}, "NUL character"),
    ],
)
def test_names_the_database_cannot_store_are_refused(
    tiny_model_dir: Path, db_url: str, tmp_path: Path, name: str, form: dict[str, str], message: str
) -> None:
    """The job row keeps the file name (300 characters) and the text column: a longer name or a
    NUL character was a 500 on PostgreSQL."""
    with running_api(tiny_model_dir, db_url, tmp_path) as api:
        if form:
            response = upload(api, name, b"text\nhi\n", **form)
        else:
            response = upload_raw(api, name, b"text\nhi\n")
        assert response.status_code == 422, response.text
        assert message in response.json()["error"]["message"]
        assert not list((tmp_path / "batches").glob("*/*")), "nothing of a refused upload is kept"


@pytest.mark.parametrize(
    "path", ["/v1/batches/{}", "/v1/batches/{}/result", "/v1/batches/{}/errors"]
)
def test_ids_beyond_the_databases_integers_are_a_422(api: Api, path: str) -> None:
    for job_id in (0, 2**31, 2**63):  # 2**63 overflowed SQLite: a 500
        response = api.client.get(path.format(job_id), headers=api.auth(Role.SCORER))
        assert response.status_code == 422, response.text


def test_a_request_without_a_file_is_refused(api: Api) -> None:
    response = api.client.post("/v1/batches", data={"x": "1"}, headers=api.auth(Role.SCORER))
    assert response.status_code == 422


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty: no header row"),
        (b"id;text\n1;hello\n", "is the delimiter right"),
        (b"a,b\n1,2\n", "no text column found"),
    ],
)
def test_unreadable_files_fail_the_job_with_a_clear_error(
    api: Api, content: bytes, message: str
) -> None:
    created = upload(api, "export.csv", content)
    job = wait_done(api, created.json()["id"])
    assert job["status"] == "failed" and message in job["error"]
    result = api.client.get(f"/v1/batches/{job['id']}/result", headers=api.auth(Role.SCORER))
    assert result.status_code == 409


def test_unknown_job_is_a_404(api: Api) -> None:
    response = api.client.get("/v1/batches/999", headers=api.auth(Role.SCORER))
    assert response.status_code == 404


def test_jobs_survive_a_restart(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Queued and interrupted jobs are kept in the database and finish after a restart."""
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    content = comments_csv(500)
    with running_api(tiny_model_dir, url, tmp_path, batch={"worker": False}) as api:
        queued = upload(api, "a.csv", content).json()["id"]
        interrupted = upload(api, "b.csv", content).json()["id"]
        # As if a server had been killed while running the second one.
        with api.app.state.sessions() as session:
            session.execute(
                update(BatchJob).where(BatchJob.id == interrupted).values(status="running")
            )
            session.commit()
        assert (
            api.client.get(f"/v1/batches/{queued}", headers=api.auth(Role.SCORER)).json()["status"]
            == "queued"
        )
    with running_api(tiny_model_dir, url, tmp_path, batch={"chunk_rows": 100}) as api:
        for job_id in (queued, interrupted):
            job = wait_done(api, job_id)
            assert (job["status"], job["rows_done"], job["rows_failed"]) == ("done", 501, 1)
