"""Fault tests: kill -9 during a batch job, the database going away, a broken model, a full disk.

The service runs for real in a subprocess (``tests.server``), the CLI too where a process dies
or its limits are set; every test that involves a database runs on SQLite and on PostgreSQL (a
database of the test's own, created and dropped on the shared cluster, which stays up). Kill -9
during ingest is ``tests/test_queue_server.py``; kill -9 of ``commentdesk score`` mid-run is
``tests/test_batch_resume.py``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, make_url, select
from sqlalchemy.exc import OperationalError
from typer.testing import CliRunner, Result

from commentdesk.cli import app as cli
from commentdesk.settings import DEFAULT_MODEL_DIR
from model.artifact import MANIFEST
from model.scorer import Scorer
from service.auth import Role
from service.batch import score_file
from service.db.engine import make_engine
from service.db.tables import Comment
from tests.conftest import POSTGRES_URL, running_api
from tests.server import Server, create_keys


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _export(rows: int, bad: bool = True) -> bytes:
    """A CSV export like the networks give; with ``bad``, one row at the end has no text."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["comment_id", "message", "likes"])
    for i in range(rows):
        writer.writerow([f"c{i}", f"comment {i}: is order {i % 31} shipped? day {i % 7}", i % 7])
    if bad:
        writer.writerow(["c-empty", "", 0])
    return buffer.getvalue().encode()


def _wait(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``check`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _finished(
    client: httpx.Client | TestClient, job_id: int, headers: dict[str, str] | None = None
) -> dict[str, Any] | None:
    job: dict[str, Any] = client.get(f"/v1/batches/{job_id}", headers=headers).json()
    return job if job["status"] in ("done", "failed") else None


@contextmanager
def _private_postgres() -> Iterator[tuple[Engine, str]]:
    """A database of its own on the shared cluster (an engine on the cluster, its name): the
    cluster stays up for the other tests, and their resets of ``test`` cannot touch it."""
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    name = f"fault_{secrets.token_hex(6)}"
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except OperationalError as exc:
        admin.dispose()
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true: PostgreSQL at {POSTGRES_URL} is not reachable: {exc}")
        pytest.skip(f"PostgreSQL at {POSTGRES_URL} is not reachable")
    try:
        yield admin, name
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def _database_url(name: str) -> str:
    return make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh SQLite file or a fresh PostgreSQL database of this test's own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'queue.db'}"
        return
    with _private_postgres() as (_, name):
        yield _database_url(name)


# ---------------------------------------------------------------------------------------------
# Fault 2: kill -9 of the serving process during an HTTP batch job


@pytest.mark.slow
def test_kill_9_during_a_batch_job_then_restart_completes_it_without_loss_or_duplicates(
    tiny_model_dir: Path, tiny_scorer: Scorer, database: str, tmp_path: Path
) -> None:
    chunk_rows, rows = 100, 12_000
    (key,) = create_keys(database, [Role.SCORER])
    settings = {"COMMENTDESK_BATCH__CHUNK_ROWS": str(chunk_rows)}
    content = _export(rows)
    first = Server(tiny_model_dir, database, tmp_path, env=settings)
    second = Server(tiny_model_dir, database, tmp_path, env=settings)
    try:
        first.start()
        with httpx.Client(base_url=first.url, headers=_auth(key), timeout=60) as client:
            created = client.post(
                "/v1/batches",
                files={"file": ("export.csv", content)},
                data={"output_format": "jsonl"},
            )
            assert created.status_code == 202, created.text
            job_id = created.json()["id"]

            def some_chunks_done() -> bool:
                job = client.get(f"/v1/batches/{job_id}").json()
                assert job["status"] in ("queued", "running"), job
                return bool(job["rows_done"] and job["rows_done"] >= 3 * chunk_rows)

            _wait(some_chunks_done, 60, "the job to get going")
        first.kill()
        (folder,) = (tmp_path / "batches").iterdir()
        parts = folder / "result.jsonl.parts"
        killed_at = len(list(parts.glob("part-*.json")))
        assert 3 <= killed_at < rows // chunk_rows, "the kill did not land mid-job"
        assert not (folder / "result.jsonl").exists()

        second.start()
        with httpx.Client(base_url=second.url, headers=_auth(key), timeout=60) as client:
            job = _wait(lambda: _finished(client, job_id), 120, "the job after the restart")
            assert job["status"] == "done", job
            assert (job["rows_total"], job["rows_done"], job["rows_failed"]) == (
                rows + 1,
                rows + 1,
                1,
            )
            result = client.get(job["result_url"])
            errors = client.get(job["errors_url"])
        assert result.status_code == errors.status_code == 200
    finally:
        first.stop()
        second.stop()
    assert "resuming after" in (tmp_path / "server.log").read_text(), "it started over"
    assert not parts.exists()
    # Every row once, in input order: byte for byte what an uninterrupted run writes.
    local = tmp_path / "local.csv"
    local.write_bytes(content)
    score_file(tiny_scorer, local, tmp_path / "local.jsonl", chunk_rows=chunk_rows)
    ids = [json.loads(line)["comment_id"] for line in result.content.splitlines()]
    assert ids == [f"c{i}" for i in range(rows)]
    assert result.content == (tmp_path / "local.jsonl").read_bytes()
    assert errors.content == (tmp_path / "local.jsonl.errors.jsonl").read_bytes()


# ---------------------------------------------------------------------------------------------
# Fault 3: the database goes away under a running server, and comes back


@dataclass
class Outage:
    """A database of its own that a test can take away and give back."""

    url: str
    down: Callable[[], None]
    up: Callable[[], None]


@pytest.fixture(params=["sqlite", "postgresql"])
def outage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Outage]:
    if request.param == "sqlite":
        # The file's directory moves away (an unmounted volume): it cannot be opened any more.
        folder, away = tmp_path / "db", tmp_path / "db-away"
        folder.mkdir()

        def move_away() -> None:
            folder.rename(away)

        def move_back() -> None:
            away.rename(folder)

        yield Outage(f"sqlite:///{folder / 'queue.db'}", move_away, move_back)
        return
    with _private_postgres() as (admin, name):
        # It refuses connections and its open ones are terminated, as when a server goes down.

        def down() -> None:
            with admin.connect() as connection:
                connection.exec_driver_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
                connection.exec_driver_sql(  # and waits (up to 10 s) until they are gone
                    "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
                    "WHERE datname = %s",
                    (name,),
                )

        def up() -> None:
            with admin.connect() as connection:
                connection.exec_driver_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')

        yield Outage(_database_url(name), down, up)


def _comments(prefix: str, n: int) -> list[dict[str, str]]:
    return [
        {"source": "outage", "external_id": f"{prefix}-{i}", "text": f"refund for order {i}?"}
        for i in range(n)
    ]


@pytest.mark.slow
def test_database_outage_answers_503_writes_nothing_half_and_recovers_without_restart(
    tiny_model_dir: Path, tiny_scorer: Scorer, outage: Outage, tmp_path: Path
) -> None:
    scorer, streamer, moderator, unused = create_keys(
        outage.url, [Role.SCORER, Role.SCORER, Role.MODERATOR, Role.VIEWER]
    )
    chunk_rows, job_rows = 50, 10_000
    settings = {
        "COMMENTDESK_API__KEY_CACHE_SECONDS": "600",  # the keys used before stay verified
        "COMMENTDESK_BATCH__CHUNK_ROWS": str(chunk_rows),
        "COMMENTDESK_BATCH__POLL_SECONDS": "0.2",
    }
    server = Server(tiny_model_dir, outage.url, tmp_path, env=settings)
    sent: list[tuple[str, int | None]] = []  # (batch prefix, status) of a steady ingest stream
    stop = threading.Event()

    def stream() -> None:
        with httpx.Client(base_url=server.url, headers=_auth(streamer), timeout=30) as client:
            while not stop.is_set():
                prefix = f"s{len(sent)}"
                try:
                    status: int | None = client.post(
                        "/v1/comments", json={"comments": _comments(prefix, 20)}
                    ).status_code
                except httpx.TransportError:
                    status = None
                sent.append((prefix, status))
                time.sleep(0.03)

    def expect_unavailable(response: httpx.Response) -> None:
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "database_unavailable"
        assert int(response.headers["Retry-After"]) > 0

    content = _export(job_rows)
    thread = threading.Thread(target=stream)
    try:
        server.start()
        with httpx.Client(base_url=server.url, timeout=30) as client:
            before = client.post(
                "/v1/comments", json={"comments": _comments("before", 10)}, headers=_auth(scorer)
            )
            assert before.status_code == 200 and before.json()["created"] == 10
            queue = client.get("/v1/queue", params={"view": "all"}, headers=_auth(moderator))
            assert queue.status_code == 200
            created = client.post(
                "/v1/batches", files={"file": ("export.csv", content)}, headers=_auth(scorer)
            )
            assert created.status_code == 202, created.text
            job_id = created.json()["id"]
            thread.start()
            _wait(
                lambda: client.get(f"/v1/batches/{job_id}", headers=_auth(scorer)).json()[
                    "rows_done"
                ],
                60,
                "the batch job to get going",
            )
            _wait(lambda: sum(status == 200 for _, status in sent) >= 3, 30, "the stream")
            outage.down()
            try:
                during = _comments("during", 10)
                # The key is verified (cached), the write fails.
                expect_unavailable(
                    client.post("/v1/comments", json={"comments": during}, headers=_auth(scorer))
                )
                expect_unavailable(
                    client.get("/v1/queue", params={"view": "all"}, headers=_auth(moderator))
                )
                # A key not yet verified: its lookup fails; a 503, never a 401.
                expect_unavailable(client.get("/v1/stats", headers=_auth(unused)))
                expect_unavailable(client.get(f"/v1/batches/{job_id}", headers=_auth(scorer)))
                # What needs no database still answers.
                scored = client.post(
                    "/v1/score", json={"text": "where is my parcel?"}, headers=_auth(scorer)
                )
                assert scored.status_code == 200, scored.text
                assert client.get("/healthz").status_code == 200
                time.sleep(1)  # the batch job and the stream run into the outage
            finally:
                outage.up()

            # The same process, not restarted, answers again by itself.
            def recovered() -> httpx.Response | None:
                response = client.post(
                    "/v1/comments", json={"comments": during}, headers=_auth(scorer)
                )
                return response if response.status_code == 200 else None

            again = _wait(recovered, 10, "the server to answer again")
            assert again.json()["created"] == 10, "the failed ingest left something behind"
            assert client.get("/v1/stats", headers=_auth(unused)).status_code == 200
            queue = client.get("/v1/queue", params={"view": "all"}, headers=_auth(moderator))
            assert queue.status_code == 200
            _wait(lambda: sum(status == 200 for _, status in sent[-5:]) == 5, 30, "the stream back")
            stop.set()
            thread.join(timeout=30)
            job = _wait(
                lambda: _finished(client, job_id, _auth(scorer)),
                120,
                "the batch job after the outage",
            )
            assert (job["status"], job["rows_done"], job["rows_failed"]) == (
                "done",
                job_rows + 1,
                1,
            ), job
            result = client.get(job["result_url"], headers=_auth(scorer))
        assert server.process is not None and server.process.poll() is None
    finally:
        stop.set()
        if thread.is_alive():
            thread.join(timeout=30)
        server.stop()

    log = (tmp_path / "server.log").read_text()
    assert "database unavailable" in log
    assert f"batch job {job_id} interrupted" in log, "the batch job never ran into the outage"
    assert any(status == 503 for _, status in sent), "the stream never ran into the outage"
    # Every ingest is all or nothing, and every acknowledged one is stored.
    engine = make_engine(outage.url)
    try:
        with engine.connect() as connection:
            stored = connection.scalars(
                select(Comment.external_id).where(Comment.source == "outage")
            ).all()
    finally:
        engine.dispose()
    per_batch: dict[str, int] = {}
    for external_id in stored:
        prefix = external_id.rsplit("-", 1)[0]
        per_batch[prefix] = per_batch.get(prefix, 0) + 1
    assert per_batch.pop("before") == per_batch.pop("during") == 10
    assert set(per_batch) <= {prefix for prefix, _ in sent}
    for prefix, status in sent:
        assert per_batch.get(prefix, 0) in ((20,) if status == 200 else (0, 20)), prefix
    # The batch job, paused by the outage, finished with every row once.
    local = tmp_path / "local.csv"
    local.write_bytes(content)
    score_file(tiny_scorer, local, tmp_path / "local.scored.csv", chunk_rows=chunk_rows)
    assert result.content == (tmp_path / "local.scored.csv").read_bytes()


# ---------------------------------------------------------------------------------------------
# Fault 4: a corrupted, malformed or mismatched model


def _model_copy(source: Path, target: Path) -> Path:
    """A model directory whose weight files link to ``source``'s (read only here)."""
    target.mkdir()
    for file in source.iterdir():
        if file.name == MANIFEST:
            shutil.copy(file, target / MANIFEST)
        else:
            (target / file.name).symlink_to(file)
    return target


def _edit_manifest(directory: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    manifest = json.loads((directory / MANIFEST).read_text())
    edit(manifest)
    (directory / MANIFEST).write_text(json.dumps(manifest))


def _corrupt_weights(tiny_model_dir: Path, target: Path) -> tuple[Path, dict[str, str]]:
    shutil.copytree(tiny_model_dir, target)
    weights = bytearray((target / "weights.npz").read_bytes())
    weights[len(weights) // 2] ^= 0xFF  # one flipped byte, same size
    (target / "weights.npz").write_bytes(weights)
    return target, {}


def _malformed_manifest(tiny_model_dir: Path, target: Path) -> tuple[Path, dict[str, str]]:
    shutil.copytree(tiny_model_dir, target)
    text = (target / MANIFEST).read_text()
    (target / MANIFEST).write_text(text[: len(text) // 2])  # cut off mid-way
    return target, {}


def _other_base_encoder(_: Path, target: Path) -> tuple[Path, dict[str, str]]:
    """The committed MiniLM model's manifest naming another encoder, served by PyTorch (the
    ONNX export carries its whole network and is checked against its tokenizer instead)."""
    directory = _model_copy(DEFAULT_MODEL_DIR, target)
    _edit_manifest(
        directory,
        lambda m: m.update(
            base_encoder={"name": "sentence-transformers/all-mpnet-base-v2", "sha256": "ab" * 32}
        ),
    )
    return directory, {"COMMENTDESK_SCORING__RUNTIME": "torch"}


def _other_tokenizer(_: Path, target: Path) -> tuple[Path, dict[str, str]]:
    """The committed model's ONNX export, its manifest naming another tokenizer."""
    directory = _model_copy(DEFAULT_MODEL_DIR, target)
    _edit_manifest(directory, lambda m: m["onnx"].update(tokenizer_sha256="cd" * 32))
    return directory, {"COMMENTDESK_SCORING__RUNTIME": "onnx"}


BROKEN_MODELS = {
    "corrupted-weights": (_corrupt_weights, r"weights\.npz does not match the sha256"),
    "malformed-manifest": (_malformed_manifest, r"manifest\.json is not valid JSON"),
    "other-base-encoder": (_other_base_encoder, "trained on another base encoder"),
    "other-tokenizer": (_other_tokenizer, "not the tokenizer the model was built on"),
}


def _serve(
    model_dir: Path, state_dir: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "commentdesk.cli", "serve", "--port", "0"]
    return subprocess.run(
        [*command, "--model-dir", str(model_dir)],
        env={**os.environ, "HF_HUB_OFFLINE": "1", "COMMENTDESK_STATE_DIR": str(state_dir), **env},
        capture_output=True,
        text=True,
        timeout=90,  # a server that does start never exits by itself: the test fails here
        check=False,
    )


@pytest.mark.slow
@pytest.mark.parametrize("broken", list(BROKEN_MODELS))
def test_serve_and_score_refuse_a_broken_model_and_say_why(
    tiny_model_dir: Path, tmp_path: Path, broken: str
) -> None:
    make, reason = BROKEN_MODELS[broken]
    model_dir, env = make(tiny_model_dir, tmp_path / "model")
    served = _serve(model_dir, tmp_path, env)
    assert served.returncode == 2, served.stderr[-3000:]
    last = served.stderr.strip().splitlines()[-1]
    assert last.startswith("error: not serving: the model in"), last
    assert re.search(reason, last), last

    source = tmp_path / "in.csv"
    source.write_bytes(_export(5))
    output = tmp_path / "out.csv"
    args = ["score", str(source), "-o", str(output), "--model-dir", str(model_dir)]
    result = CliRunner().invoke(cli, [*args, "--no-progress"], env=env)
    assert result.exit_code == 2, result.output
    assert re.search(reason, result.output), result.output
    assert not output.exists() and not list(tmp_path.glob("out.csv*"))


@pytest.mark.slow
def test_serve_stays_up_not_ready_without_a_model_only_when_asked(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    model_dir, _ = _corrupt_weights(tiny_model_dir, tmp_path / "model")
    env = {"COMMENTDESK_SERVER__REQUIRE_MODEL": "false"}
    server = Server(model_dir, f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path, env=env)
    try:
        server.start(ready_path="/healthz")
        ready = httpx.get(f"{server.url}/readyz", timeout=10)
        assert ready.status_code == 503
        assert "weights.npz does not match the sha256" in ready.json()["detail"]["error"]
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------------
# Fault 5: the disk fills up under a batch run


def _score_limited(
    source: Path, output: Path, model_dir: Path, chunk_rows: int, file_size_limit: int
) -> subprocess.CompletedProcess[str]:
    """``commentdesk score`` in a subprocess under RLIMIT_FSIZE: a write past the limit fails
    with EFBIG (SIGXFSZ, which would kill the process, is ignored)."""
    launcher = (
        "import resource, runpy, signal, sys; "
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({file_size_limit}, {file_size_limit})); "
        "sys.argv[0] = 'commentdesk'; runpy.run_module('commentdesk.cli', run_name='__main__')"
    )
    options = ["-o", str(output), "--chunk-rows", str(chunk_rows), "--no-progress"]
    return subprocess.run(
        [
            sys.executable,
            "-c",
            launcher,
            "score",
            str(source),
            *options,
            "--model-dir",
            str(model_dir),
        ],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _score(source: Path, output: Path, model_dir: Path, chunk_rows: int) -> Result:
    """``commentdesk score`` in this process."""
    options = ["-o", str(output), "--chunk-rows", str(chunk_rows), "--no-progress"]
    return CliRunner().invoke(cli, ["score", str(source), *options, "--model-dir", str(model_dir)])


def _leftovers(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*.tmp"))


@pytest.mark.slow
def test_score_fails_clearly_when_the_output_outgrows_the_file_size_limit_then_resumes(
    tiny_model_dir: Path, tiny_scorer: Scorer, tmp_path: Path
) -> None:
    """Works without privileges (CI): the parts fit under RLIMIT_FSIZE, the joined output not."""
    source = tmp_path / "in.csv"
    source.write_bytes(_export(6_000, bad=False))  # ~4.8 MB scored, in parts of ~400 kB
    digest = _sha256(source)
    output = tmp_path / "out" / "scored.jsonl"
    output.parent.mkdir()
    failed = _score_limited(source, output, tiny_model_dir, 500, file_size_limit=1_500_000)
    assert failed.returncode == 2, failed.stderr[-3000:]
    message = failed.stderr.strip().splitlines()[-1]
    assert f"cannot write {output}: File too large" in message, message
    assert f"{source} is untouched" in message and "run the same command" in message
    assert _sha256(source) == digest
    assert sorted(p.name for p in output.parent.iterdir()) == ["scored.jsonl.parts"]
    assert _leftovers(output.parent) == []

    rerun = _score(source, output, tiny_model_dir, 500)
    assert rerun.exit_code == 0, rerun.output
    assert "12 chunks kept from an earlier run" in rerun.output
    score_file(tiny_scorer, source, tmp_path / "whole.jsonl", chunk_rows=500)
    assert output.read_bytes() == (tmp_path / "whole.jsonl").read_bytes()


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: a disk that really fills up (needs the right to mount)."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}); the file size "
                    "limit test covers a failing write")  # fmt: skip
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.mark.slow
def test_score_fails_clearly_on_a_full_disk_then_resumes_once_there_is_room(
    tiny_model_dir: Path, tiny_scorer: Scorer, tmp_path: Path, small_disk: Path
) -> None:
    source = tmp_path / "in.csv"
    source.write_bytes(_export(6_000, bad=False))  # ~4.8 MB scored, in parts of ~400 kB
    digest = _sha256(source)
    output = small_disk / "scored.jsonl"
    failed = _score(source, output, tiny_model_dir, 500)
    assert failed.exit_code == 2, failed.output
    message = failed.output.strip().splitlines()[-1]
    assert f"cannot write {small_disk}/" in message and "No space left on device" in message
    assert f"{source} is untouched" in message
    assert _sha256(source) == digest
    assert not output.exists() and _leftovers(small_disk) == []
    kept = len(list((small_disk / "scored.jsonl.parts").glob("part-*.json")))
    assert 0 < kept < 12

    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    rerun = _score(source, output, tiny_model_dir, 500)
    assert rerun.exit_code == 0, rerun.output
    assert f"{kept} chunks kept from an earlier run" in rerun.output
    score_file(tiny_scorer, source, tmp_path / "whole.jsonl", chunk_rows=500)
    assert output.read_bytes() == (tmp_path / "whole.jsonl").read_bytes()


def test_a_full_disk_fails_the_batch_job_clearly_and_leaves_no_partial_result(
    tiny_model_dir: Path, database: str, tmp_path: Path
) -> None:
    """The job's output is joined in ``result.jsonl.tmp``: made a link to /dev/full, every write
    to it fails with ENOSPC, as on a full disk (no privileges needed)."""
    with running_api(tiny_model_dir, database, tmp_path, batch={"worker": False}) as api:
        created = api.client.post(
            "/v1/batches",
            files={"file": ("export.csv", _export(500))},
            data={"output_format": "jsonl"},
            headers=api.auth(Role.SCORER),
        )
        assert created.status_code == 202, created.text
        job_id = created.json()["id"]
    (folder,) = (tmp_path / "batches").iterdir()
    digest = _sha256(folder / "input.csv")
    (folder / "result.jsonl.tmp").symlink_to("/dev/full")
    with running_api(tiny_model_dir, database, tmp_path, batch={"chunk_rows": 100}) as api:
        api.client.headers.update(api.auth(Role.SCORER))
        job = _wait(lambda: _finished(api.client, job_id), 60, "the job")
        assert job["status"] == "failed", job
        assert job["error"] == (
            "the server cannot write the result (result.jsonl): No space left on device"
        )
        assert job["result_url"] is None
        result = api.client.get(f"/v1/batches/{job_id}/result")
        assert result.status_code == 409
    assert _sha256(folder / "input.csv") == digest
    assert sorted(p.name for p in folder.iterdir()) == ["input.csv"]  # no partial result, no parts


def test_an_upload_to_a_full_disk_is_a_clear_507_and_queues_nothing(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Storing the upload hits a full disk. The upload's folder name is random, so the write is
    made to fail at the one call that copies it (the edge this test cannot fill for real)."""
    import errno

    from service import batch_jobs
    from service.db.tables import BatchJob

    def full(*_: object, **__: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(batch_jobs.shutil, "copyfileobj", full)
    url = f"sqlite:///{tmp_path / 'upload.db'}"
    with running_api(tiny_model_dir, url, tmp_path, batch={"worker": False}) as api:
        answer = api.client.post(
            "/v1/batches",
            files={"file": ("export.csv", _export(50))},
            headers=api.auth(Role.SCORER),
        )
        assert answer.status_code == 507, answer.text
        error = answer.json()["error"]
        assert error["code"] == "insufficient_storage"
        assert "No space left on device" in error["message"]
        with api.app.state.sessions() as session:
            assert session.scalars(select(BatchJob)).all() == []
    assert list((tmp_path / "batches").iterdir()) == [], "the partial upload was removed"
